"""The initial design: a scrambled Sobol design over the box, iteration 0 of every soft-prompt strategy."""

from __future__ import annotations

import numpy as np

from instructzero.tasks.optimisation.acquisition import sobol_design
from instructzero.tasks.optimisation.proposer import Known, Proposal, Proposer, ProposerContext
from instructzero.tasks.optimisation.settings import BOSettings


class SobolDesign(Proposer):
    """`n_init` scrambled Sobol points seeded by the run's seed; the same design whatever the iteration.

    Not a strategy of its own (`registry.PROPOSERS`): every call returns the design again. The strategies start
    with it, so their initial designs (and the black-box answers to them) are shared across strategies.
    Re-proposal: attempt k > 0 takes up to n_init points from block k of the same sequence, disjoint from the
    design and from the other attempts.
    """

    phases = ("init",)

    def __init__(self, context: ProposerContext, settings: BOSettings) -> None:
        self.dim, self.seed, self.n_init = context.dim, context.seed, int(settings.n_init)

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
        drawn = self.n_init * attempt
        count = self.n_init if attempt == 0 else min(n, self.n_init)
        z = sobol_design(drawn + count, self.dim, seed=self.seed).numpy()[drawn:]
        return Proposal(iteration=iteration, phase="init", z=z, acquisition_values=(None,) * len(z))
