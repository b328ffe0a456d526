"""Which candidate a run reports: one rule for the flow, the suite, the baselines and the benchmarks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar


class _Scored(Protocol):
    @property
    def dev_score(self) -> float | None: ...
    @property
    def iteration(self) -> int: ...
    @property
    def index(self) -> int: ...


C = TypeVar("C", bound=_Scored)


def best_candidate(candidates: Iterable[C]) -> C:
    """Highest dev score (unscored counts as 0); ties go to the earliest candidate, so the choice is deterministic."""
    return max(candidates, key=lambda c: (c.dev_score or 0.0, -c.iteration, -c.index))
