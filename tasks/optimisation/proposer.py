"""The search strategy's interface: a `Proposer` chooses the soft prompts of every iteration.

Call order, per iteration (like Optuna's `samplers/_base.py`, the interface documents when it is called):

1. `observe(history)`: every candidate recorded so far in the run (after a resume too). A proposer that learns
   from the data re-fits here (GP-BO fits its GP); the others have nothing to do. The flow runs it as the
   `gp-update` task, and only for proposers with `learns = True`.
2. `propose(iteration, n)`: the iteration's batch (attempt 0). The flow runs it as the `propose-prompt` task.
3. `propose(iteration, n, attempt=k, known=..., pending=..., exclude=...)`, k = 1, 2, ...: replacements for the
   slots whose soft prompt decoded to an already scored instruction (`reproposal.propose_distinct`), at most
   `bo.propose_attempts - 1` rounds. `known`: (z, dev score) pairs of such rejected soft prompts (data at no
   black-box cost); `pending`: (p x d) the batch's kept soft prompts; `exclude`: (t x d) all tried so far.

A proposal must be a function of (history, settings, seed, iteration, attempt) only: nothing of a proposer is
stored, so a resumed run re-derives exactly the state and the proposals an uninterrupted run had.

Strategies are looked up by name in `registry.PROPOSERS` (`bo.strategy`); a new one is a module with its
`Proposer` and one entry there. Its candidates are stored with the phase its proposals carry, any of the names it
declares in `phases` (the store knows no strategy names: no migration for a new one). The pipeline calls
`propose` through `propose_checked`, which refuses an undeclared phase or a malformed batch with the strategy's
name, before anything is generated or paid for.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from instructzero.storage.records import check_phase
from instructzero.tasks.errors import ConfigError

if TYPE_CHECKING:
    from instructzero.storage.records import Candidate
    from instructzero.tasks.optimisation.settings import BOSettings

__all__ = [
    "Phase",
    "Known",
    "History",
    "Proposal",
    "ProposerContext",
    "Proposer",
    "ProposerFactory",
    "make_proposer",
    "propose_checked",
]

Phase = str
"""How a candidate was proposed: one of its strategy's `Proposer.phases` (stored with the candidate as is)."""

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

    phases: ClassVar[tuple[Phase, ...]] = ()
    """The phases this strategy's proposals may carry (e.g. "init" for its initial design, "bo" for the GP's
    picks): what its candidates are stored and analysed by. `propose_checked` refuses any other."""

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


ProposerFactory = Callable[[ProposerContext, "BOSettings"], Proposer]
"""(context, the run's `BOSettings`) -> the run's proposer: what `registry.PROPOSERS` maps a strategy name to."""


def make_proposer(strategy: str, context: ProposerContext, settings: BOSettings) -> Proposer:
    """The proposer of `strategy` (a key of `registry.PROPOSERS`) for one run; ConfigError for an unknown name."""
    from instructzero.tasks.optimisation.registry import PROPOSERS

    factory: ProposerFactory = PROPOSERS.resolve(strategy)
    return factory(context, settings)


def propose_checked(
    proposer: Proposer,
    iteration: int,
    n: int,
    *,
    attempt: int = 0,
    known: Known = (),
    pending: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
) -> Proposal:
    """`proposer.propose(...)`, refused (ConfigError naming the strategy's class) when the proposal is not one the
    pipeline can record: a phase the proposer does not declare or the store cannot take, another iteration, no
    soft prompt, or soft prompts outside [-1, 1] or without one acquisition value each."""
    proposal = proposer.propose(iteration, n, attempt=attempt, known=known, pending=pending, exclude=exclude)
    who = f"strategy {type(proposer).__name__} (iteration {iteration}, attempt {attempt})"
    if proposal.phase not in proposer.phases:
        declared = ", ".join(map(repr, proposer.phases)) or "none: set its class attribute `phases`"
        raise ConfigError(f"{who} proposed phase {proposal.phase!r}; it declares {declared}")
    if (why := check_phase(proposal.phase)) is not None:
        raise ConfigError(f"{who}: {why}")
    if proposal.iteration != iteration:
        raise ConfigError(f"{who} proposed for iteration {proposal.iteration}")
    z = np.asarray(proposal.z, dtype=np.float64)
    if z.ndim != 2 or len(z) == 0 or len(z) != len(proposal.acquisition_values):
        raise ConfigError(
            f"{who} proposed z of shape {z.shape} with {len(proposal.acquisition_values)} acquisition values; "
            "expected (b x d), b >= 1, one value (or None) per row"
        )
    if not np.isfinite(z).all() or np.abs(z).max() > 1.0:
        raise ConfigError(f"{who} proposed soft prompts outside [-1, 1]")
    return proposal
