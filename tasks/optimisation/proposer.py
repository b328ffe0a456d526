"""The search strategy's interface: a `Proposer` chooses the soft prompts of every iteration.

Call order, per iteration (like Optuna's `samplers/_base.py`, the interface documents when it is called):

1. `observe(history)`: every candidate recorded so far in the run (after a resume too). A proposer that learns
   from the data re-fits here (GP-BO fits its GP); the others have nothing to do. The flow runs it as the
   `gp-update` task, and only for proposers with `learns = True`.
2. `propose(iteration, n)`: the iteration's batch (attempt 0). The flow runs it as the `propose-prompt` task.
3. `propose(iteration, n, attempt=k, known=..., pending=..., exclude=...)`, k = 1, 2, ...: replacements for the
   slots whose soft prompt decoded to an already scored instruction (`bayes_opt.propose_distinct`), at most
   `bo.propose_attempts - 1` rounds. `known`: (z, dev score) pairs of such rejected soft prompts (data at no
   black-box cost); `pending`: (p x d) the batch's kept soft prompts; `exclude`: (t x d) all tried so far.

A proposal must be a function of (history, settings, seed, iteration, attempt) only: nothing of a proposer is
stored, so a resumed run re-derives exactly the state and the proposals an uninterrupted run had.

Strategies are looked up by name in `registry.PROPOSERS` (`bo.strategy`); a new one is a module with its
`Proposer` and one entry there.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from instructzero.storage.records import ProposalPhase

if TYPE_CHECKING:
    from instructzero.storage.records import Candidate

__all__ = [
    "Phase",
    "Known",
    "History",
    "Proposal",
    "ProposerContext",
    "Proposer",
    "ProposerFactory",
    "make_proposer",
]

Phase = ProposalPhase
"""How a candidate was proposed: the store's own `ProposalPhase` (one definition; candidates store it as is)."""

Known = Sequence[tuple[Sequence[float], float]]
"""(z, dev score) pairs of soft prompts whose instruction is already scored."""

History = Sequence["Candidate"]
"""The run's recorded candidates, in (iteration, index) order, as the objective scores them."""


@dataclass(frozen=True)
class Proposal:
    """Soft prompts to try next. `z`: (b x d) float64 numpy array in [-1, 1]^d."""

    iteration: int
    phase: Phase
    z: np.ndarray
    acquisition_values: tuple[float | None, ...]


@dataclass(frozen=True)
class ProposerContext:
    """What a run fixes for its proposer besides `BOSettings`: the box's dimension d, the run's seed and the dev
    example ids (the order of the per-example scores a GP may use)."""

    dim: int
    seed: int
    dev_ids: tuple[str, ...] = ()


class Proposer(ABC):
    """Chooses soft prompts; see the module docstring for the call order."""

    learns: ClassVar[bool] = False
    """Whether `observe` does any work (the flow skips the `gp-update` task otherwise)."""

    def observe(self, history: History) -> None:  # noqa: B027 - a no-op unless the proposer learns
        """Re-fit on everything recorded so far (the history as the objective scores it)."""

    @abstractmethod
    def propose(
        self,
        iteration: int,
        n: int,
        *,
        attempt: int = 0,
        known: Known = (),
        pending: np.ndarray | None = None,
        exclude: np.ndarray | None = None,
    ) -> Proposal:
        """n soft prompts for `iteration` (n_init at iteration 0); attempt > 0 re-proposes (see the module)."""


ProposerFactory = Callable[[ProposerContext, Any], Proposer]
"""(context, the run's `BOSettings`) -> the run's proposer: what `registry.PROPOSERS` maps a strategy name to."""


def make_proposer(strategy: str, context: ProposerContext, settings: Any) -> Proposer:
    """The proposer of `strategy` (a key of `registry.PROPOSERS`) for one run; ConfigError for an unknown name."""
    from instructzero.tasks.optimisation.registry import PROPOSERS

    factory: ProposerFactory = PROPOSERS.resolve(strategy)
    return factory(context, settings)
