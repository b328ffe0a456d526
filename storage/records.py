"""The records of a run: one frozen dataclass per concept, the same on both sides of the store.

`tasks/` produces these (an `Example` is read from task data, an `Evaluation` comes out of the black box, a
`Candidate` carries one proposal with its dev `Evaluation`, a `BlackBoxCall` is one answer), `RunStore` maps them to
and from SQL rows, and everything above reads them back; ORM rows never leave `storage/`. As in Optuna's
`FrozenTrial`, the fields only the store fills in (an evaluation's `split` and `created_at`, a candidate's scores)
are None until it has recorded the record. This is the lowest module of the project: it imports nothing of it, so
every layer can.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

__all__ = [
    "BASELINE_PHASE",
    "PHASE_MAX_LEN",
    "RUN_STATUSES",
    "SPLITS",
    "BlackBoxCall",
    "Candidate",
    "Dataset",
    "Evaluation",
    "Example",
    "ExampleScore",
    "Metric",
    "Run",
    "RunStatus",
    "Split",
    "check_phase",
    "instruction_hash",
]

Split = Literal["dev", "test"]
RunStatus = Literal["running", "completed", "failed", "interrupted"]

SPLITS: tuple[str, ...] = ("dev", "test")
PHASE_MAX_LEN = 32
BASELINE_PHASE = "baseline"
"""The phase of a fixed instruction scored beside a search (no soft prompt): the benchmarks' baselines."""
_PHASE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+-]*")
RUN_STATUSES: tuple[str, ...] = ("running", "completed", "failed", "interrupted")

_TRUNCATED = "_truncated"
_ANSWER_STATUSES = frozenset({"ok", "ok_no_usage", "ok" + _TRUNCATED, "ok_no_usage" + _TRUNCATED})


def check_phase(phase: object) -> str | None:
    """Why `phase` cannot be stored as a candidate's phase (None: it can).

    The store knows no strategy: a phase is any short name (letters, digits, `_.:+-`, at most PHASE_MAX_LEN
    characters). Which phases a strategy writes is its own declaration (`Proposer.phases`), checked where it
    proposes, so a new strategy needs no migration."""
    if not isinstance(phase, str) or not _PHASE_NAME.fullmatch(phase):
        return f"phase must be a name of letters, digits and _.:+- (starting with a letter or digit), got {phase!r}"
    if len(phase) > PHASE_MAX_LEN:
        return f"phase must be at most {PHASE_MAX_LEN} characters, got {len(phase)}"
    return None


def instruction_hash(text: str) -> str:
    """sha256 hex of the instruction text (UTF-8); the per-run identity of an instruction."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Example:
    """One task example; `answers[0]` is the canonical output shown in exemplars. A run stores its examples' ids
    (`Dataset.example_ids`), the task data holds the rest."""

    id: str
    input: str
    answers: tuple[str, ...]


@dataclass(frozen=True)
class ExampleScore:
    """The black box's answer to one example under one instruction, and its score in [0, 1]."""

    example_id: str
    prediction: str
    score: float


@dataclass(frozen=True)
class Evaluation:
    """One instruction scored zero-shot on a set of examples by one black-box model.

    `evaluate_instructions` returns it, `RunStore.record_iteration` (as a candidate's `dev`) and
    `RunStore.record_test_evaluation` write it, `RunStore.load_evaluations` reads it back. `n_calls` counts distinct
    prompts (cache hits included), `n_cached` those the response cache served; the tokens and `latency_s` (summed
    per-call latency) count only the calls sent for it, i.e. what was paid. Retries are counted once, in the ledger
    (`BlackBoxCall.retries`), not here. `split` and `created_at` are the store's: None until it is recorded (a
    candidate's evaluation is recorded as "dev", a test evaluation as "test").
    """

    instruction: str
    model: str
    mean_score: float
    examples: tuple[ExampleScore, ...]
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    n_calls: int
    n_cached: int
    split: str | None = None  # "dev" or "test" once recorded
    created_at: datetime | None = None

    @property
    def n_examples(self) -> int:
        return len(self.examples)


@dataclass(frozen=True)
class Candidate:
    """One proposal of an iteration: its soft prompt z (None for baselines), the instruction it decoded to and that
    instruction's dev scores.

    The tasks build it with its `dev` evaluation (of `instruction`), which `RunStore.record_iteration` writes along.
    `RunStore.load_candidates` reads back the scores instead, without `dev`: `dev_score` (the score the optimiser
    observed: `dev.mean_score`), `dev_example_scores` (example id -> score) and the instruction's latest
    `test_score`. Those are None (empty) on a candidate not recorded yet.
    """

    iteration: int
    index: int
    phase: str  # how it was proposed: a phase its strategy declares (`Proposer.phases`) or BASELINE_PHASE
    z: tuple[float, ...] | None
    acquisition_value: float | None
    instruction: str
    dev: Evaluation | None = None
    dev_score: float | None = None
    dev_example_scores: dict[str, float] = field(default_factory=dict)
    test_score: float | None = None

    @property
    def instruction_hash(self) -> str:
        return instruction_hash(self.instruction)


@dataclass(frozen=True)
class BlackBoxCall:
    """One black-box request and its answer, keyed by `request_hash`: what the client returns, and a row of the
    ledger (the llm_calls table, the persistent response cache that spend limits sum).

    `latency_s` is the successful attempt's round trip (backoff sleeps excluded). `status` is "ok", or
    "ok_no_usage" when the server reported no usable usage (the token counts are then the client's bound, never 0
    or negative), with "_truncated" appended when `text` is only the start of a longer answer (cut at
    `max_answer_chars`); a row with any other status is not a cache hit. `run_id` is the run that first paid for
    the call (not a foreign key: the cache outlives runs). `cached` is not stored: whether this answer was served by
    the response cache now rather than paid for.
    """

    request_hash: str
    model: str
    prompt: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    retries: int
    status: str = "ok"
    cost_usd: float | None = None  # what this call cost when it was paid (None: unknown)
    run_id: str | None = None
    cached: bool = False

    @property
    def is_answer(self) -> bool:
        """Whether it is an answer that was paid for (an "ok..." status), so a cache hit; not a recorded failure."""
        return self.status in _ANSWER_STATUSES

    @property
    def usage_reported(self) -> bool:
        """Whether the token counts are the server's (False: the client's bound)."""
        return self.status.removesuffix(_TRUNCATED) == "ok"

    @property
    def truncated(self) -> bool:
        """Whether the answer was longer than `max_answer_chars` and `text` is its start."""
        return self.status.endswith(_TRUNCATED)

    @staticmethod
    def answer_status(*, usage_reported: bool, truncated: bool) -> str:
        """The `status` of a paid answer."""
        status = "ok" if usage_reported else "ok_no_usage"
        return status + _TRUNCATED if truncated else status


@dataclass(frozen=True)
class Dataset:
    """The example ids of one split of a run (with the hash of the task data they were drawn from)."""

    task: str
    split: str
    content_hash: str
    example_ids: tuple[str, ...]


@dataclass(frozen=True)
class Run:
    id: str
    name: str
    task: str
    status: str
    config: dict[str, Any]
    seed: int
    projection_hash: str | None
    versions: dict[str, Any]
    splits: dict[str, list[str]]
    prefect_flow_run_id: str | None
    error: str | None
    started_at: datetime
    finished_at: datetime | None
    lease_owner: str | None = None  # the process holding the run (None: free)
    heartbeat_at: datetime | None = None  # that process's last heartbeat

    def lease_live(self, now: datetime, timeout_s: float) -> bool:
        """Whether a process holds the run: a lease whose heartbeat is younger than `timeout_s`."""
        return (
            self.lease_owner is not None
            and self.heartbeat_at is not None
            and (now - self.heartbeat_at).total_seconds() < timeout_s
        )

    def shown_status(self, now: datetime, timeout_s: float) -> str:
        """The status as `instructzero runs` shows it: "stale" for a "running" run nobody holds any more."""
        if self.status == "running" and not self.lease_live(now, timeout_s):
            return "stale"
        return self.status


@dataclass(frozen=True)
class Metric:
    """One value of a run's metric `key` at `step`."""

    key: str
    step: int
    value: float
