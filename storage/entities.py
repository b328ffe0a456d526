"""Plain frozen dataclasses that go in and out of the store.

`RunStore` takes the `*In` classes and returns the `*Record` classes; ORM rows never leave `storage/`.
Nothing here imports `tasks/`: the flow converts its own result types into these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Split = Literal["dev", "test"]
Phase = Literal["init", "bo", "uniform", "baseline"]
RunStatus = Literal["running", "completed", "failed", "interrupted"]

SPLITS: tuple[str, ...] = ("dev", "test")
PHASES: tuple[str, ...] = ("init", "bo", "uniform", "baseline")
RUN_STATUSES: tuple[str, ...] = ("running", "completed", "failed", "interrupted")


@dataclass(frozen=True)
class ExampleScore:
    """The black box's answer to one example under one instruction, and its score in [0, 1]."""

    example_id: str
    prediction: str
    score: float


@dataclass(frozen=True)
class EvaluationIn:
    """One instruction scored on one split by one black-box model.

    `n_calls`/`n_cached`: the answers it used and how many of them the response cache gave. Retries are counted
    once, in the ledger (`LLMCall.retries`), not here.
    """

    split: Split
    model: str
    mean_score: float
    n_examples: int
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    n_calls: int
    n_cached: int
    examples: tuple[ExampleScore, ...]


@dataclass(frozen=True)
class CandidateIn:
    """One proposal of an iteration: the soft prompt z (None for baselines), the instruction it produced, and the
    instruction's dev evaluation."""

    index: int
    phase: Phase
    z: tuple[float, ...] | None
    acquisition_value: float | None
    instruction: str
    dev: EvaluationIn


@dataclass(frozen=True)
class DatasetIn:
    """The example ids of one split of a run (with the hash of the task data they were drawn from)."""

    task: str
    split: str
    content_hash: str
    example_ids: tuple[str, ...]


@dataclass(frozen=True)
class DatasetRecord:
    run_id: str
    task: str
    split: str
    content_hash: str
    example_ids: tuple[str, ...]


@dataclass(frozen=True)
class RunRecord:
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
class CandidateRecord:
    run_id: str
    iteration: int
    index: int
    phase: str
    z: tuple[float, ...] | None
    acquisition_value: float | None
    instruction: str
    instruction_hash: str
    dev_score: float | None
    test_score: float | None
    dev_example_scores: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluationRecord:
    """A stored evaluation (used by `RunStore.load_evaluations`)."""

    run_id: str
    instruction: str
    instruction_hash: str
    split: str
    model: str
    mean_score: float
    n_examples: int
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    n_calls: int
    n_cached: int
    created_at: datetime
    examples: tuple[ExampleScore, ...]


@dataclass(frozen=True)
class LLMCall:
    """One black-box request/response, keyed by `request_hash` (the persistent response cache).

    `run_id` is an optional extension to the contract: the run that first paid for the call (used by the
    `cost_per_run` analytics view). It is not a foreign key; the cache outlives runs.
    """

    request_hash: str
    model: str
    prompt: str
    response_text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    retries: int
    status: str = "ok"
    cost_usd: float | None = None
    run_id: str | None = None


@dataclass(frozen=True)
class MetricRecord:
    run_id: str
    key: str
    step: int
    value: float
