"""GP-BO, InstructZero's strategy: after the Sobol design, a GP over every evaluated soft prompt (`observe`) and a
q-batch maximising its (Log)EI (`propose`). Kernel, instruction similarity, acquisition and optimiser are
looked up by name in `registry`.

`gp_update` and `propose_bo` are pure functions of the stored history and the seed, so a resumed run re-derives
exactly the state an uninterrupted one had: nothing about the GP is persisted except the evaluated points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from instructzero.tasks.errors import ConfigError
from instructzero.tasks.optimisation.acquisition import propose_batch
from instructzero.tasks.optimisation.proposer import History, Known, Proposal, Proposer, ProposerContext
from instructzero.tasks.optimisation.registry import (
    KERNELS,
    SIMILARITIES,
    AcquisitionName,
    KernelName,
    OptimizerName,
    SimilarityName,
)
from instructzero.tasks.optimisation.settings import BOSettings
from instructzero.tasks.optimisation.sobol import SobolDesign

if TYPE_CHECKING:
    from botorch.models.model import Model

__all__ = ["SurrogateState", "GpBoProposer", "history_arrays", "gp_update", "propose_bo"]


@dataclass(frozen=True)
class SurrogateState:
    """A GP fitted to all evaluated soft prompts so far.

    Attributes:
        model: the fitted botorch model.
        X: (n x d) float64 evaluated soft prompts.
        best_f: best dev score observed (the EI incumbent).
    """

    model: Model
    X: torch.Tensor
    best_f: float


class GpBoProposer(Proposer):
    """`registry.PROPOSERS["bo"]`: the Sobol design, then (Log)EI batches of the GP fitted in `observe`."""

    phases = ("init", "bo")
    learns = True

    def __init__(self, context: ProposerContext, settings: BOSettings) -> None:
        self.design = SobolDesign(context, settings)
        self.context, self.settings = context, settings
        self.state: SurrogateState | None = None

    def observe(self, history: History) -> None:
        s = self.settings
        self.state = (
            gp_update(
                history,
                self.context.dev_ids,
                kernel=s.kernel,
                similarity=s.similarity,
                seed=self.context.seed,
                latent_weight=s.latent_weight,
            )
            if history
            else None
        )

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
        if iteration == 0 or self.state is None:  # nothing observed yet: the design
            return self.design.propose(iteration, n, attempt=attempt)
        s = self.settings
        return propose_bo(
            self.state,
            iteration=iteration,
            batch_size=n,
            dim=self.context.dim,
            seed=self.context.seed,
            acquisition=s.acquisition,
            optimizer=s.optimizer,
            num_restarts=s.num_restarts,
            raw_samples=s.raw_samples,
            attempt=attempt,
            known=known,
            pending=pending,
            exclude=exclude,
        )


def history_arrays(history: History, dev_ids: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack the history into tensors.

    Returns:
        X: (n x d) soft prompts, y: (n,) dev scores, S: (n x m) per-example dev scores in `dev_ids` order.
    """
    usable = [c for c in history if c.z is not None and c.dev_score is not None]
    if not usable:
        raise ConfigError("no evaluated soft prompts in the history: the GP has nothing to fit")
    X = torch.tensor([list(c.z or ()) for c in usable], dtype=torch.float64)  # z is not None (usable)
    y = torch.tensor([c.dev_score for c in usable], dtype=torch.float64)
    S = torch.tensor([[c.dev_example_scores.get(i, 0.0) for i in dev_ids] for c in usable], dtype=torch.float64)
    return X, y, S


def gp_update(
    history: History,
    dev_ids: Sequence[str],
    *,
    kernel: KernelName,
    similarity: SimilarityName,
    seed: int,
    latent_weight: float = 0.25,
) -> SurrogateState:
    """Fit the surrogate on every evaluated candidate (the paper's instruction-coupled kernel by default).

    `latent_weight` is the share of prior variance the "coupled+matern" kernel keeps far from the data.
    """
    from instructzero.tasks.optimisation.surrogate import fit_surrogate

    X, y, S = history_arrays(history, dev_ids)
    K_S = None
    if KERNELS.resolve(kernel).needs_similarity:
        texts = [c.instruction for c in history if c.z is not None and c.dev_score is not None]
        K_S = SIMILARITIES.resolve(similarity)(S, texts)
    model = fit_surrogate(X, y, kernel=kernel, similarity=K_S, seed=seed, latent_weight=latent_weight)
    return SurrogateState(model=model, X=X, best_f=float(y.max()))


def propose_bo(
    state: SurrogateState,
    *,
    iteration: int,
    batch_size: int,
    dim: int,
    seed: int,
    acquisition: AcquisitionName,
    optimizer: OptimizerName,
    num_restarts: int = 5,
    raw_samples: int = 128,
    attempt: int = 0,
    known: Known = (),
    pending: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
) -> Proposal:
    """A q-batch maximising the acquisition, away from the evaluated soft prompts.

    Re-proposal (attempt > 0) conditions the GP on `known` (their score is known, so they are data), chooses the
    batch jointly with `pending` and away from `exclude`, with a seed that differs per attempt.
    """
    model = state.model
    best_f = state.best_f
    taken = state.X
    if known:
        Xk = torch.tensor([list(z) for z, _ in known], dtype=torch.float64)
        yk = torch.tensor([[float(y)] for _, y in known], dtype=torch.float64)
        with torch.no_grad():
            model.posterior(Xk)  # fills the prediction caches that conditioning extends
        model = model.condition_on_observations(X=Xk, Y=yk)  # real observations: the fitted noise applies
        best_f = max(best_f, float(yk.max()))
        taken = torch.cat([taken, Xk])
    if exclude is not None and len(exclude):
        taken = torch.cat([taken, torch.as_tensor(np.asarray(exclude), dtype=torch.float64)])
    candidates, values = propose_batch(
        model,
        best_f=best_f,
        batch_size=batch_size,
        dim=dim,
        acquisition=acquisition,
        optimizer=optimizer,
        seed=seed * 100_003 + iteration + 7_919 * attempt,
        num_restarts=num_restarts,
        raw_samples=raw_samples,
        exclude=taken,
        pending=None if pending is None or not len(pending) else torch.as_tensor(pending, dtype=torch.float64),
    )
    return Proposal(
        iteration=iteration,
        phase="bo",
        z=candidates.detach().numpy().astype(np.float64),
        acquisition_values=tuple(float(v) for v in values),
    )
