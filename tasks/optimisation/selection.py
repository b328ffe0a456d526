"""Which candidate a run reports: one rule for the flow, the suite, the baselines, the benchmarks, the CLI and the
store's `best_instructions` view (storage/analytics.py computes the same in SQL).

The rule is the run's objective: dev accuracy less `bo.length_penalty` per instruction token (0: accuracy alone),
the highest first; ties go to the earliest candidate, so the choice is deterministic. The token counts are the
ones the flow recorded as metrics (`instruction_tokens.<index>` at step = iteration), so a stored run is ranked
later exactly as the flow ranked it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from instructzero.storage.records import Candidate, Run
    from instructzero.storage.repository import RunStore

__all__ = [
    "best_candidate",
    "instruction_token_counts",
    "length_penalty",
    "ranked",
    "reported_candidate",
    "stored_objective",
]


class _Scored(Protocol):
    @property
    def dev_score(self) -> float | None: ...
    @property
    def iteration(self) -> int: ...
    @property
    def index(self) -> int: ...


C = TypeVar("C", bound=_Scored)


def _key(c: _Scored, length_penalty: float, tokens: Mapping[tuple[int, int], int]) -> tuple[float, int, int]:
    objective = (c.dev_score or 0.0) - length_penalty * tokens.get((c.iteration, c.index), 0)
    return (-objective, c.iteration, c.index)


def ranked(
    candidates: Iterable[C], *, length_penalty: float = 0.0, tokens: Mapping[tuple[int, int], int] | None = None
) -> list[C]:
    """Best first by the objective (unscored counts as 0), ties in recording order. `tokens`: (iteration, index)
    -> instruction tokens (needed only with a length penalty)."""
    return sorted(candidates, key=lambda c: _key(c, length_penalty, tokens or {}))


def best_candidate(
    candidates: Iterable[C], *, length_penalty: float = 0.0, tokens: Mapping[tuple[int, int], int] | None = None
) -> C:
    """The first of `ranked`: the candidate a run reports."""
    return min(candidates, key=lambda c: _key(c, length_penalty, tokens or {}))


def length_penalty(run: Run) -> float:
    """A stored run's recorded `bo.length_penalty` (0 for a run recorded without one)."""
    return float((run.config.get("bo") or {}).get("length_penalty") or 0.0)


def instruction_token_counts(store: RunStore, run_id: str) -> dict[tuple[int, int], int]:
    """(iteration, index) -> instruction tokens, as the flow recorded them (`instruction_tokens.<index>`)."""
    return {
        (m.step, int(m.key.rsplit(".", 1)[1])): int(m.value)
        for m in store.load_metrics(run_id)
        if m.key.startswith("instruction_tokens.")
    }


def stored_objective(store: RunStore, run: Run) -> tuple[float, dict[tuple[int, int], int]]:
    """A stored run's length penalty and its candidates' token counts (none needed, none read, without one)."""
    penalty = length_penalty(run)
    if penalty == 0:
        return 0.0, {}
    return penalty, instruction_token_counts(store, run.id)


def reported_candidate(store: RunStore, run: Run, candidates: Sequence[Candidate] | None = None) -> Candidate | None:
    """The candidate `run` reports, by its own objective (None: nothing recorded yet)."""
    candidates = store.load_candidates(run.id) if candidates is None else candidates
    if not candidates:
        return None
    penalty, tokens = stored_objective(store, run)
    return best_candidate(candidates, length_penalty=penalty, tokens=tokens)
