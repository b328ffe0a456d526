"""The GP surrogate over soft prompts: a botorch `SingleTaskGP` with the instruction-coupled or a Matern kernel."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from botorch.exceptions.errors import ModelFittingError
from botorch.exceptions.warnings import OptimizationWarning
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import Normalize
from botorch.models.transforms.outcome import Standardize
from gpytorch.kernels import Kernel, ScaleKernel
from gpytorch.mlls import ExactMarginalLogLikelihood
from torch import Tensor

from instructzero.tasks.errors import ConfigError, NumericalWarning
from instructzero.tasks.optimisation.kernel import (
    CoupledPlusLatentKernel,
    InstructionCoupledKernel,
    latent_matern_kernel,
)
from instructzero.tasks.optimisation.registry import KERNELS, KernelName

__all__ = ["fit_surrogate", "KernelSpec", "COUPLED", "COUPLED_PLUS_MATERN", "MATERN", "BOX_LOWER", "BOX_UPPER"]


@dataclass(frozen=True)
class KernelSpec:
    """A registered kernel (`registry.KERNELS`): `build(anchors, K_S, jitter, latent_weight)` returns the covariance
    that `fit_surrogate` wraps in one `ScaleKernel`. `anchors` are the evaluated soft prompts in the unit cube (the
    inputs the kernel sees after `Normalize`); `needs_similarity`: the kernel couples instructions, so K_S is
    required (and computed by `gp_update`)."""

    build: Callable[[Tensor, Tensor | None, float, float], Kernel]
    needs_similarity: bool


def _coupled(anchors: Tensor, similarity: Tensor | None, jitter: float, latent_weight: float) -> Kernel:
    assert similarity is not None  # fit_surrogate checks it first
    return InstructionCoupledKernel(anchors, similarity, latent_matern_kernel(anchors.shape[-1]), jitter=jitter)


def _coupled_plus_matern(anchors: Tensor, similarity: Tensor | None, jitter: float, latent_weight: float) -> Kernel:
    return CoupledPlusLatentKernel(_coupled(anchors, similarity, jitter, latent_weight), weight=latent_weight)


def _matern(anchors: Tensor, similarity: Tensor | None, jitter: float, latent_weight: float) -> Kernel:
    return latent_matern_kernel(anchors.shape[-1])


COUPLED = KernelSpec(_coupled, needs_similarity=True)
COUPLED_PLUS_MATERN = KernelSpec(_coupled_plus_matern, needs_similarity=True)
MATERN = KernelSpec(_matern, needs_similarity=False)

# The searched box of soft prompts, [-1, 1]^d.
BOX_LOWER = -1.0
BOX_UPPER = 1.0
_BOX_TOL = 1e-9


def fit_surrogate(
    X: Tensor,
    y: Tensor,
    *,
    kernel: KernelName,
    similarity: Tensor | None = None,
    seed: int = 0,
    jitter: float = 1e-4,
    latent_weight: float = 0.25,
) -> SingleTaskGP:
    """Fit a GP to evaluated soft prompts.

    The model standardises the outcome (`Standardize`) and maps the fixed box [-1, 1]^d onto the unit cube
    (`Normalize` with fixed bounds) so botorch's default lengthscale prior applies. Hyperparameters (latent ARD
    lengthscales, output scale, noise) are fitted with `botorch.fit.fit_gpytorch_mll` under a locally seeded
    torch RNG, so the result depends only on the inputs and `seed`. If every fitting attempt fails (e.g. all y
    equal and a degenerate likelihood surface) the model keeps its prior-mode hyperparameters and a
    `NumericalWarning` is issued; it never raises for degenerate y.

    Args:
        X: (n x d) evaluated soft prompts in [-1, 1]^d (converted to float64).
        y: (n,) or (n x 1) dev scores.
        kernel: a key of `registry.KERNELS`: "coupled" for InstructZero's instruction-coupled kernel (anchors
            Z = X, K_S = `similarity`), "coupled+matern" for the coupled kernel plus `latent_weight` of its latent
            Matern (`CoupledPlusLatentKernel`: keeps prior variance away from the data, so EI keeps exploring), or
            "matern" for a ScaleKernel(Matern-5/2 with ARD).
        similarity: (n x n) instruction similarity K_S; required for the coupled kernels, ignored for "matern".
        seed: seeds the fitting's random restarts.
        jitter: jitter of the coupled kernel's K_ZZ solve.
        latent_weight: w of "coupled+matern", the share of prior variance kept far from the data (in (0, 1)).

    Returns:
        The fitted `SingleTaskGP` in eval mode (posterior in the original y units).
    """
    X, Y = _check_data(X, y)
    n, d = X.shape
    spec: KernelSpec = KERNELS.resolve(kernel)
    if spec.needs_similarity:
        if similarity is None:
            raise ConfigError(f"kernel={kernel!r} needs a similarity matrix K_S of shape (n x n), got None")
        if not isinstance(similarity, Tensor):
            similarity = torch.as_tensor(similarity)
        if similarity.shape != (n, n):
            raise ConfigError(
                f"similarity must be ({n} x {n}) to match X of shape {tuple(X.shape)}, got {tuple(similarity.shape)}"
            )
        similarity = similarity.to(torch.float64)
    anchors = (X - BOX_LOWER) / (BOX_UPPER - BOX_LOWER)  # the kernel sees Normalize'd inputs
    covar = ScaleKernel(spec.build(anchors, similarity if spec.needs_similarity else None, jitter, latent_weight))

    bounds = torch.tensor([[BOX_LOWER] * d, [BOX_UPPER] * d], dtype=torch.float64)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = SingleTaskGP(
            X,
            Y,
            covar_module=covar.to(torch.float64),
            input_transform=Normalize(d=d, bounds=bounds),
            outcome_transform=Standardize(m=1),
        )
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        try:
            with warnings.catch_warnings():
                # optimiser restarts are expected on small/degenerate data; a final failure is reported below
                warnings.simplefilter("ignore", OptimizationWarning)
                fit_gpytorch_mll(mll)
        except (ModelFittingError, RuntimeError) as exc:
            model.load_state_dict(initial)
            warnings.warn(
                f"GP hyperparameter fitting failed for n={n} points ({type(exc).__name__}: {exc}); "
                "keeping the prior-mode hyperparameters",
                NumericalWarning,
                stacklevel=2,
            )
    model.eval()
    return model


def _check_data(X: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Validate shapes and values; return float64 X (n x d) and Y (n x 1)."""
    X = torch.as_tensor(X).detach().to(torch.float64)
    y = torch.as_tensor(y).detach().to(torch.float64)
    if X.dim() != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ConfigError(f"X must be an (n x d) matrix with n, d >= 1, got shape {tuple(X.shape)}")
    n = X.shape[0]
    if y.dim() == 2 and y.shape[1] == 1:
        Y = y
    elif y.dim() == 1:
        Y = y.unsqueeze(-1)
    else:
        raise ConfigError(f"y must have shape (n,) or (n x 1), got {tuple(y.shape)}")
    if Y.shape[0] != n:
        raise ConfigError(f"X has {n} rows (shape {tuple(X.shape)}) but y has {Y.shape[0]} (shape {tuple(y.shape)})")
    if not torch.isfinite(X).all():
        raise ConfigError(f"X contains a non-finite value ({X[~torch.isfinite(X)][0].item()})")
    if not torch.isfinite(Y).all():
        raise ConfigError(f"y contains a non-finite value ({Y[~torch.isfinite(Y)][0].item()})")
    lo, hi = float(X.min()), float(X.max())
    if lo < BOX_LOWER - _BOX_TOL or hi > BOX_UPPER + _BOX_TOL:
        bad = lo if lo < BOX_LOWER - _BOX_TOL else hi
        raise ConfigError(f"X must lie in [{BOX_LOWER}, {BOX_UPPER}]^d, found a coordinate {bad}")
    return X.contiguous(), Y.contiguous()
