"""The instruction-coupled kernel of InstructZero (Chen et al. 2023, Sec. 3.3).

A soft prompt z only matters through the instruction it makes the open LLM write, so InstructZero couples a latent
kernel on soft prompts with a fixed similarity matrix between the instructions already evaluated:

    K(z, z') = k(z, Z) (K_ZZ + jitter I)^-1 K_S (K_ZZ + jitter I)^-1 k(Z, z')

with Z (n x d) the anchors (the evaluated soft prompts), K_ZZ = k(Z, Z), K_S (n x n) the PSD instruction similarity
and k a learnable latent kernel (Matern-5/2 with ARD lengthscales by default).

Computation. K_S is projected onto the PSD cone once and factored as K_S = R R^T (R: n x r, r = numerical rank).
Per hyperparameter setting the kernel needs the Cholesky factor L of K_ZZ + jitter I and
C = (K_ZZ + jitter I)^-1 R (n x r). Then

    K(x, x) = F F^T,   F = k(x, Z) C   (... x m x r),          symmetric PSD to rounding;
    K(x1, x2) = F1 F2^T  or  k(x1, Z) M k(Z, x2),  M = C C^T (n x n),  whichever needs fewer flops,

with no explicit inverse anywhere. `diag=True` is the matching row-wise inner product, i.e. exactly the diagonal
of the full matrix. Inputs that repeat one matrix along their batch dims (gpytorch's exact prediction hands the
kernel a copy of the training inputs per test batch) are evaluated once and broadcast.

Output scale. An output scale inside k cancels (k appears twice in the numerator and twice, inverted, in the
denominator), so wrap the whole kernel in a `gpytorch.kernels.ScaleKernel` to learn one, as the reference
implementation does.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import gpytorch
import torch
from gpytorch.constraints import GreaterThan
from gpytorch.kernels import Kernel, MaternKernel
from gpytorch.priors import LogNormalPrior
from linear_operator.utils.errors import NotPSDError
from torch import Tensor

from instructzero.tasks.errors import ConfigError, NumericalWarning

__all__ = ["InstructionCoupledKernel", "CoupledPlusLatentKernel", "latent_matern_kernel", "psd_root"]

# Each failed Cholesky multiplies the jitter by this factor, at most this many times.
_JITTER_GROWTH = 10.0
_MAX_JITTER_TRIES = 4


def latent_matern_kernel(dim: int, batch_shape: torch.Size | None = None) -> MaternKernel:
    """Matern-5/2 kernel with ARD lengthscales and botorch's dimension-scaled lengthscale prior.

    The prior (Hvarfner et al. 2024, botorch's default for `SingleTaskGP`) assumes inputs in the unit cube.

    Args:
        dim: number of input dimensions d (one lengthscale each).
        batch_shape: batch shape of the hyperparameters (default: none).

    Returns:
        A `MaternKernel(nu=2.5, ard_num_dims=dim)` without output scale.
    """
    if dim < 1:
        raise ConfigError(f"latent kernel needs dim >= 1, got {dim}")
    prior = LogNormalPrior(loc=math.sqrt(2.0) + 0.5 * math.log(dim), scale=math.sqrt(3.0))
    return MaternKernel(
        nu=2.5,
        ard_num_dims=dim,
        batch_shape=torch.Size() if batch_shape is None else batch_shape,
        lengthscale_prior=prior,
        lengthscale_constraint=GreaterThan(2.5e-2, transform=None, initial_value=prior.mode),
    )


def psd_root(similarity: Tensor, *, jitter: float = 1e-8, rank_tol: float = 1e-10) -> Tensor:
    """Project a similarity matrix onto the PSD cone and return a root R with R R^T = K_S.

    The matrix is symmetrised and negative eigenvalues are clipped to zero (with a `NumericalWarning` when any is
    more negative than rounding explains). Eigendirections whose clipped eigenvalue is at most
    `rank_tol * largest eigenvalue` are dropped (K_S built from m-dimensional score vectors or embeddings has
    rank <= m, and a thin R makes every kernel evaluation O(n^2 r) instead of O(n^3)); `jitter * max(1, mean
    diagonal)` is added to the kept eigenvalues. `rank_tol=0` keeps every direction, so that R R^T = K_S + jitter I
    is positive definite.

    Args:
        similarity: (n x n) similarity matrix K_S.
        jitter: relative amount added to the kept eigenvalues.
        rank_tol: relative eigenvalue threshold below which directions are dropped.

    Returns:
        (n x r) tensor R (same dtype as `similarity`, 1 <= r <= n).
    """
    if similarity.dim() != 2 or similarity.shape[0] != similarity.shape[1] or similarity.shape[0] < 1:
        raise ConfigError(f"similarity must be a square (n x n) matrix, got shape {tuple(similarity.shape)}")
    if not torch.isfinite(similarity).all():
        bad = similarity[~torch.isfinite(similarity)][0].item()
        raise ConfigError(f"similarity matrix contains a non-finite value ({bad})")
    sym = 0.5 * (similarity + similarity.transpose(-1, -2))
    eigvals, eigvecs = torch.linalg.eigh(sym)
    scale = max(1.0, float(sym.diagonal().abs().mean()))
    most_negative = float(eigvals.min())
    if most_negative < -1e-8 * scale * sym.shape[0]:
        warnings.warn(
            f"similarity matrix is not PSD (smallest eigenvalue {most_negative:.3g}); negative eigenvalues "
            "were clipped to zero",
            NumericalWarning,
            stacklevel=2,
        )
    eigvals = eigvals.clamp_min(0.0)
    keep = eigvals > rank_tol * float(eigvals.max()) if rank_tol > 0 else torch.ones_like(eigvals, dtype=torch.bool)
    keep[-1] = True  # eigh sorts ascending: always keep the largest (an all-zero K_S keeps one jittered direction)
    return eigvecs[:, keep] * (eigvals[keep] + jitter * scale).sqrt().unsqueeze(-2)


class InstructionCoupledKernel(Kernel):
    r"""InstructZero's instruction-coupled kernel on soft prompts.

    K(z, z') = k(z, Z) (K_ZZ + jitter I)^-1 K_S (K_ZZ + jitter I)^-1 k(Z, z').

    Inputs may carry any batch shape; anchors and similarity are unbatched and broadcast against them (and against
    the latent kernel's hyperparameter batch shape). Not stationary. `last_dim_is_batch` is not supported.

    In eval mode (and with `gpytorch.settings.detach_test_caches` on, the default) the hyperparameter-dependent
    factors C and M = C C^T are cached, detached, until a hyperparameter changes or the kernel is put back into
    train mode, like gpytorch's own prediction caches; in train mode they are recomputed on every call so the
    marginal likelihood is differentiable in the hyperparameters.

    Args:
        anchors: (n x d) anchor points Z, in the space the kernel sees its inputs in (after input transforms).
        similarity: (n x n) instruction similarity K_S between the anchors' instructions (made PSD here).
        base_kernel: latent kernel k on soft prompts; default `latent_matern_kernel(d)`. Give it no output
            scale: one inside k cancels out (see the module docstring).
        jitter: added to the diagonal of K_ZZ before solving (part of the kernel's definition; the reference
            implementation uses 1e-4 for a unit-variance latent kernel). Raised tenfold, with a
            `NumericalWarning`, up to four times when the Cholesky factorisation fails.
        similarity_jitter: relative jitter added to the eigenvalues of K_S.
        similarity_rank_tol: eigendirections of K_S below this fraction of its largest eigenvalue are dropped
            (see `psd_root`); 0 keeps all of them.

    Example:
        >>> covar = ScaleKernel(InstructionCoupledKernel(train_X, K_S))
        >>> model = SingleTaskGP(train_X, train_Y, covar_module=covar)
    """

    has_lengthscale = False
    is_stationary = False

    def __init__(
        self,
        anchors: Tensor,
        similarity: Tensor,
        base_kernel: Kernel | None = None,
        *,
        jitter: float = 1e-4,
        similarity_jitter: float = 1e-8,
        similarity_rank_tol: float = 1e-10,
        **kwargs: Any,
    ) -> None:
        if anchors.dim() != 2:
            raise ConfigError(f"anchors must be an (n x d) matrix, got shape {tuple(anchors.shape)}")
        n = anchors.shape[0]
        if n < 1:
            raise ConfigError("the instruction-coupled kernel needs at least one anchor, got 0")
        if similarity.shape != (n, n):
            raise ConfigError(
                f"similarity must be ({n} x {n}) to match anchors of shape {tuple(anchors.shape)}, "
                f"got shape {tuple(similarity.shape)}"
            )
        if not torch.isfinite(anchors).all():
            raise ConfigError("anchors contain a non-finite value")
        if not jitter > 0:
            raise ConfigError(f"jitter must be > 0, got {jitter}")
        if base_kernel is None:
            base_kernel = latent_matern_kernel(anchors.shape[-1])
        super().__init__(batch_shape=base_kernel.batch_shape, **kwargs)
        self.base_kernel = base_kernel.to(dtype=anchors.dtype, device=anchors.device)
        self.jitter = float(jitter)
        self.register_buffer("anchors", anchors.detach().clone())
        self.register_buffer(
            "similarity_root",
            psd_root(similarity.detach().to(anchors), jitter=similarity_jitter, rank_tol=similarity_rank_tol),
        )
        self._cache: tuple[tuple, Tensor, Tensor | None] | None = None

    @property
    def similarity(self) -> Tensor:
        """(n x n) the PSD-projected instruction similarity K_S actually used."""
        return self.similarity_root @ self.similarity_root.transpose(-1, -2)

    def train(self, mode: bool = True) -> InstructionCoupledKernel:
        self._cache = None
        return super().train(mode)

    def _hyper_key(self) -> tuple:
        return tuple((p.data_ptr(), p._version) for p in self.base_kernel.parameters()) + (
            self.anchors._version,
            self.similarity_root._version,
            self.jitter,
        )

    def _use_cache(self) -> bool:
        return not self.training and gpytorch.settings.detach_test_caches.on()

    def _factors(self, need_middle: bool) -> tuple[Tensor, Tensor | None]:
        """C = (K_ZZ + jitter I)^-1 R (*kernel_batch x n x r) and, if asked, M = C C^T (... x n x n)."""
        use_cache = self._use_cache()
        key = self._hyper_key()
        if use_cache and self._cache is not None and self._cache[0] == key:
            C, M = self._cache[1], self._cache[2]
            if M is None and need_middle:
                M = C @ C.transpose(-1, -2)
                self._cache = (key, C, M)
            return C, M
        Z = self.anchors
        K_zz = self.base_kernel.forward(Z, Z)
        K_zz = K_zz if isinstance(K_zz, Tensor) else K_zz.to_dense()
        eye = torch.eye(Z.shape[-2], dtype=Z.dtype, device=Z.device)
        jitter = self.jitter
        for attempt in range(_MAX_JITTER_TRIES + 1):
            L, info = torch.linalg.cholesky_ex(K_zz + jitter * eye)
            if not bool((info > 0).any()):
                break
            if attempt == _MAX_JITTER_TRIES:
                raise NotPSDError(
                    f"latent kernel matrix K_ZZ is not positive definite even with jitter {jitter:.1e} "
                    f"(n={Z.shape[-2]} anchors)"
                )
            jitter *= _JITTER_GROWTH
        if jitter != self.jitter:
            warnings.warn(
                f"Cholesky of K_ZZ + jitter I failed with jitter {self.jitter:.1e}; used jitter {jitter:.1e} "
                f"(n={Z.shape[-2]} anchors)",
                NumericalWarning,
                stacklevel=2,
            )
        C = torch.cholesky_solve(self.similarity_root.expand(*L.shape[:-2], -1, -1), L)
        M = C @ C.transpose(-1, -2) if need_middle else None
        if use_cache:
            C = C.detach()
            M = M.detach() if M is not None else None
            self._cache = (key, C, M)
        return C, M

    def _cross(self, x: Tensor) -> Tensor:
        """k(x, Z): (... x m x n) for x of shape (... x m x d).

        gpytorch's exact prediction concatenates a copy of the training inputs to every batch of test inputs, so
        the cross-covariance is asked for with x2 = (b x n_train x d) copies of one matrix. Such an x (identical
        along its batch dims, and not a leaf that requires grad) is collapsed to one (m x d) slice, which turns
        O(b n^2) work into O(n^2); gradients reach the upstream tensor unchanged (their sum over the copies).
        """
        if x.dim() > 2 and not (x.requires_grad and x.grad_fn is None):
            first = x[(0,) * (x.dim() - 2)]
            if torch.equal(x.detach(), first.detach().expand_as(x)):
                x = first
        Z = self.anchors
        batch = torch.broadcast_shapes(x.shape[:-2], self.batch_shape)
        k = self.base_kernel.forward(x.expand(*batch, *x.shape[-2:]), Z.expand(*batch, *Z.shape))
        return k if isinstance(k, Tensor) else k.to_dense()

    def forward(
        self, x1: Tensor, x2: Tensor, diag: bool = False, last_dim_is_batch: bool = False, **params: Any
    ) -> Tensor:
        """Evaluate the coupled kernel.

        For x1 == x2 the result is F F^T with F = k(x1, Z) C (symmetric PSD to rounding); otherwise F1 F2^T or
        k(x1, Z) M k(Z, x2) with M = C C^T, whichever needs fewer flops.

        Args:
            x1: (batch1 x n1 x d) inputs.
            x2: (batch2 x n2 x d) inputs; batch1 and batch2 broadcast.
            diag: return only the diagonal (then n1 must equal n2).
            last_dim_is_batch: not supported; must be False.

        Returns:
            (batch x n1 x n2) covariance, or (batch x n1) when `diag`.
        """
        if last_dim_is_batch:
            raise NotImplementedError("InstructionCoupledKernel does not support last_dim_is_batch=True")
        d = self.anchors.shape[-1]
        for name, x in (("x1", x1), ("x2", x2)):
            if x.shape[-1] != d:
                raise ConfigError(f"{name} has {x.shape[-1]} features (shape {tuple(x.shape)}); anchors have {d}")
        n1, n2 = x1.shape[-2], x2.shape[-2]
        if diag and n1 != n2:
            raise ConfigError(f"diag=True needs n1 == n2, got x1 {tuple(x1.shape)} and x2 {tuple(x2.shape)}")
        batch = torch.broadcast_shapes(x1.shape[:-2], x2.shape[:-2], self.batch_shape)
        same = x2 is x1 or (not (x1.requires_grad or x2.requires_grad) and x1.shape == x2.shape and torch.equal(x1, x2))
        C, _ = self._factors(need_middle=False)
        n, r = C.shape[-2], C.shape[-1]
        if same:
            F = self._cross(x1) @ C
            out = (F * F).sum(-1) if diag else F @ F.transpose(-1, -2)
        elif r * (n * (n1 + n2) + n1 * n2) <= n * min(n1 * (n + n2), n2 * (n + n1)):  # thin R: F1 F2^T is cheaper
            F1, F2 = self._cross(x1) @ C, self._cross(x2) @ C
            out = (F1 * F2).sum(-1) if diag else F1 @ F2.transpose(-1, -2)
        else:
            _, M = self._factors(need_middle=True)
            assert M is not None  # need_middle=True computes it
            k1, k2 = self._cross(x1), self._cross(x2)
            if diag:
                out = ((k1 @ M) * k2).sum(-1)
            elif n1 <= n2:
                out = (k1 @ M) @ k2.transpose(-1, -2)
            else:
                out = k1 @ (M @ k2.transpose(-1, -2))
        return out.expand(*batch, n1) if diag else out.expand(*batch, n1, n2)


class CoupledPlusLatentKernel(Kernel):
    r"""The instruction-coupled kernel plus a fixed share of its own latent kernel: prior variance everywhere.

    K(z, z') = (1 - w) K_coupled(z, z') + w k(z, z'),   K_coupled = k(z, Z) (K_ZZ + jI)^-1 K_S (K_ZZ + jI)^-1 k(Z, z')

    with the *same* latent kernel k (Matern-5/2, ARD, unit variance) inside the coupled term and as the added term,
    so the fit learns one set of lengthscales. Why: k(z, Z) -> 0 away from the anchors, so the coupled kernel's
    prior (and posterior) variance vanishes there and Expected Improvement only ever looks near the data. The added
    w k(z, z') keeps a prior variance of w (times the output scale) at every z; near the anchors, where
    K_coupled(z_i, z_i) ~ (K_S)_ii = 1 for the unit-diagonal similarities of tasks/optimisation/similarity.py, the
    prior variance
    stays ~1, so w is the share of prior variance kept far from the data. The weight is fixed, not learned: the
    marginal likelihood would happily drive it to 0 on a history that the coupled term explains, which is exactly
    the collapse of exploration this kernel exists to avoid. Wrap it in a `ScaleKernel` for an output scale.

    Args:
        coupled: the `InstructionCoupledKernel`; its `base_kernel` is the latent kernel that is added.
        weight: w in (0, 1).

    Shapes are those of `InstructionCoupledKernel.forward`.
    """

    has_lengthscale = False
    is_stationary = False

    def __init__(self, coupled: InstructionCoupledKernel, *, weight: float = 0.25, **kwargs: Any) -> None:
        if not 0.0 < weight < 1.0:
            raise ConfigError(f"latent kernel weight must be in (0, 1), got {weight}")
        super().__init__(batch_shape=coupled.batch_shape, **kwargs)
        self.coupled = coupled
        self.weight = float(weight)

    @property
    def base_kernel(self) -> Kernel:
        """The shared latent kernel k."""
        return self.coupled.base_kernel

    def forward(
        self, x1: Tensor, x2: Tensor, diag: bool = False, last_dim_is_batch: bool = False, **params: Any
    ) -> Tensor:
        """(1 - w) K_coupled + w k: (batch x n1 x n2), or (batch x n1) when `diag`."""
        coupled = self.coupled.forward(x1, x2, diag=diag, last_dim_is_batch=last_dim_is_batch)
        latent = self.coupled.base_kernel.forward(x1, x2, diag=diag)
        latent = latent if isinstance(latent, Tensor) else latent.to_dense()
        return (1.0 - self.weight) * coupled + self.weight * latent.expand_as(coupled)
