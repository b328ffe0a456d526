"""The search's settings: one frozen, typed object, the run config's `bo` section and what every strategy is built
with (`ProposerFactory`: (ProposerContext, BOSettings) -> Proposer).

strategy, kernel, similarity, acquisition and optimizer are names in the registries of
`instructzero.tasks.optimisation.registry` (their choices are its keys, fixed when that module is imported); the
CLI makes its flags from the fields, so a search knob is one field here.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from instructzero.tasks.config_flag import FROZEN, Flag
from instructzero.tasks.optimisation.registry import (
    AcquisitionName,
    KernelName,
    OptimizerName,
    SimilarityName,
    StrategyName,
)

__all__ = ["BOSettings"]


class BOSettings(BaseModel):
    """The search over z in [-1, 1]^d. strategy, kernel, similarity, acquisition and optimizer are names in the
    registries of `instructzero.tasks.optimisation.registry` (their choices are its keys)."""

    model_config = FROZEN
    strategy: Annotated[StrategyName, Flag("--strategy")] = Field(
        "bo", description="search strategy: bo (a GP and its acquisition) or uniform (random soft prompts, no GP)"
    )
    n_init: Annotated[int, Flag("--init", int)] = Field(
        4, ge=2, le=1000, description="Sobol soft prompts of iteration 0 (the initial design)"
    )
    iterations: Annotated[int, Flag("--iterations", int)] = Field(
        3, ge=0, le=1000, description="BO iterations after the initial design"
    )
    batch_size: Annotated[int, Flag("--batch", int)] = Field(
        2, ge=1, le=64, description="soft prompts proposed per BO iteration"
    )
    kernel: Annotated[KernelName, Flag("--kernel")] = Field(
        "coupled",
        description="GP kernel: the paper's instruction-coupled one, it plus latent_weight of its latent Matern "
        "(keeps prior variance far from the data, so EI keeps exploring), or a plain Matern (ablation)",
    )
    latent_weight: float = Field(
        0.25, gt=0.0, lt=1.0, description="coupled+matern: the share of prior variance kept far from the data"
    )
    similarity: Annotated[SimilarityName, Flag("--similarity")] = Field(
        "scores", description="instruction similarity of the coupled kernel: dev score vectors or MiniLM embeddings"
    )
    acquisition: Annotated[AcquisitionName, Flag("--acquisition")] = Field("logei", description="acquisition function")
    # cmaes: CMA-ES on analytic LogEI, batch by noise-free Kriging believer (every pick an acquisition optimum:
    # LogEI within ~0.3 of the first pick; sequential optimize_acqf left picks 2-4 at -5 to -11000)
    optimizer: Annotated[OptimizerName, Flag("--optimizer")] = Field(
        "cmaes", description="how the acquisition is maximised"
    )
    propose_attempts: int = Field(
        3,
        ge=1,
        le=20,
        description="proposal rounds per batch: slots whose soft prompt decodes to an already scored instruction "
        "are proposed again (their known score conditions the GP), so b soft prompts yield b new instructions "
        "where possible",
    )
    num_restarts: int = Field(5, ge=1, le=100, description="starting points of the acquisition optimiser")
    raw_samples: int = Field(
        128, ge=8, le=100_000, description="Sobol points scored to choose the optimiser's starting points"
    )
    length_penalty: Annotated[float, Flag("--length-penalty", metavar="P")] = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="the BO objective is dev accuracy - length_penalty x instruction tokens (0: accuracy alone)",
    )
