"""The no-BO baseline: after the Sobol design, soft prompts drawn uniformly from the box."""

from __future__ import annotations

import numpy as np

from instructzero.tasks.optimisation.proposer import Known, Proposal, Proposer, ProposerContext
from instructzero.tasks.optimisation.settings import BOSettings
from instructzero.tasks.optimisation.sobol import SobolDesign


class UniformProposer(Proposer):
    """Uniform soft prompts, seeded by (seed, iteration) and, re-proposing, (seed, iteration, attempt): as
    reproducible and resumable as BO, with the same budget and initial design, and no GP (nothing to observe)."""

    phases = ("init", "uniform")

    def __init__(self, context: ProposerContext, settings: BOSettings) -> None:
        self.design = SobolDesign(context, settings)
        self.dim, self.seed = context.dim, context.seed

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
        if iteration == 0:
            return self.design.propose(iteration, n, attempt=attempt)
        rng = np.random.default_rng([self.seed, iteration] if attempt == 0 else [self.seed, iteration, attempt])
        z = rng.uniform(-1.0, 1.0, size=(n, self.dim))
        return Proposal(iteration=iteration, phase="uniform", z=z, acquisition_values=(None,) * n)
