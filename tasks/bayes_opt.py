"""The two BO steps of an InstructZero iteration: GP-update over the run's history, and propose-prompt.

Both are pure functions of the stored history and the seed, so a resumed run re-derives exactly the state an
uninterrupted one had: nothing about the GP is persisted except the evaluated points themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch

from storage.entities import CandidateRecord
from tasks.acquisition import propose_batch, sobol_design
from tasks.errors import ConfigError

Phase = Literal["init", "bo", "uniform"]


@dataclass(frozen=True)
class SurrogateState:
    """A GP fitted to all evaluated soft prompts so far.

    Attributes:
        model: the fitted botorch model.
        X: (n x d) float64 evaluated soft prompts.
        best_f: best dev score observed (the EI incumbent).
    """

    model: object
    X: torch.Tensor
    best_f: float


@dataclass(frozen=True)
class Proposal:
    """Soft prompts to try next. `z`: (b x d) float64 numpy array in [-1, 1]^d."""

    iteration: int
    phase: Phase
    z: np.ndarray
    acquisition_values: tuple[float | None, ...]


def history_arrays(
    history: Sequence[CandidateRecord], dev_ids: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack the history into tensors.

    Returns:
        X: (n x d) soft prompts, y: (n,) dev scores, S: (n x m) per-example dev scores in `dev_ids` order.
    """
    usable = [c for c in history if c.z is not None and c.dev_score is not None]
    if not usable:
        raise ConfigError("no evaluated soft prompts in the history: the GP has nothing to fit")
    X = torch.tensor([list(c.z) for c in usable], dtype=torch.float64)
    y = torch.tensor([c.dev_score for c in usable], dtype=torch.float64)
    S = torch.tensor(
        [[c.dev_example_scores.get(i, 0.0) for i in dev_ids] for c in usable], dtype=torch.float64
    )
    return X, y, S


def gp_update(
    history: Sequence[CandidateRecord],
    dev_ids: Sequence[str],
    *,
    kernel: Literal["coupled", "coupled+matern", "matern"],
    similarity: Literal["scores", "embedding"],
    seed: int,
    latent_weight: float = 0.25,
) -> SurrogateState:
    """Fit the surrogate on every evaluated candidate (the paper's instruction-coupled kernel by default).

    `latent_weight` is the share of prior variance the "coupled+matern" kernel keeps far from the data.
    """
    from tasks.similarity import embedding_similarity, instruction_similarity
    from tasks.surrogate import COUPLED_KERNELS, fit_surrogate

    X, y, S = history_arrays(history, dev_ids)
    K_S = None
    if kernel in COUPLED_KERNELS:
        if similarity == "scores":
            K_S = instruction_similarity(S)
        else:
            texts = [c.instruction for c in history if c.z is not None and c.dev_score is not None]
            K_S = embedding_similarity(texts)
    model = fit_surrogate(X, y, kernel=kernel, similarity=K_S, seed=seed, latent_weight=latent_weight)
    return SurrogateState(model=model, X=X, best_f=float(y.max()))


def propose_prompts(
    state: SurrogateState | None,
    *,
    iteration: int,
    n_init: int,
    batch_size: int,
    dim: int,
    seed: int,
    acquisition: Literal["logei", "ei"],
    optimizer: Literal["optimize_acqf", "cmaes"],
    num_restarts: int = 5,
    raw_samples: int = 128,
    strategy: Literal["bo", "uniform"] = "bo",
) -> Proposal:
    """Iteration 0: a scrambled Sobol design over the searched box. Later: a q-batch maximising (Log)EI.

    With `strategy="uniform"` later iterations draw soft prompts uniformly from the same box instead (the
    no-BO baseline), seeded by (seed, iteration) so the baseline is reproducible and resumable too.
    """
    if iteration == 0 or (state is None and strategy == "bo"):
        z = sobol_design(n_init, dim, seed=seed).numpy()
        return Proposal(iteration=iteration, phase="init", z=z, acquisition_values=(None,) * len(z))
    if strategy == "uniform":
        rng = np.random.default_rng([seed, iteration])
        z = rng.uniform(-1.0, 1.0, size=(batch_size, dim))
        return Proposal(iteration=iteration, phase="uniform", z=z, acquisition_values=(None,) * batch_size)
    candidates, values = propose_batch(
        state.model,
        best_f=state.best_f,
        batch_size=batch_size,
        dim=dim,
        acquisition=acquisition,
        optimizer=optimizer,
        seed=seed * 100_003 + iteration,
        num_restarts=num_restarts,
        raw_samples=raw_samples,
        exclude=state.X,
    )
    return Proposal(
        iteration=iteration,
        phase="bo",
        z=candidates.detach().numpy().astype(np.float64),
        acquisition_values=tuple(float(v) for v in values),
    )
