"""Instruction-coupled kernel (tasks/optimisation/kernel.py) and the K_S builders (tasks/optimisation/similarity.py)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from gpytorch.kernels import Kernel, ScaleKernel

from instructzero.tasks.errors import ConfigError, NumericalWarning
from instructzero.tasks.optimisation.kernel import InstructionCoupledKernel, latent_matern_kernel, psd_root
from instructzero.tasks.optimisation.similarity import embedding_similarity, instruction_similarity

pytestmark = pytest.mark.usefixtures("single_torch_thread")

D = 3
N_ANCHORS = 7
JITTER = 1e-4


def _make_kernel(seed: int = 0, rank: int | None = None) -> tuple[InstructionCoupledKernel, torch.Tensor, torch.Tensor]:
    """Full-rank K_S by default (kernel uses k M k^T across inputs); rank < n gives a thin root (F1 F2^T)."""
    g = torch.Generator().manual_seed(seed)
    Z = torch.rand(N_ANCHORS, D, generator=g, dtype=torch.float64)
    A = torch.randn(N_ANCHORS, rank or 4, generator=g, dtype=torch.float64)
    S = A @ A.T + (0.0 if rank else 0.1) * torch.eye(N_ANCHORS, dtype=torch.float64)
    kernel = InstructionCoupledKernel(Z, S, jitter=JITTER, similarity_jitter=0.0).double()
    kernel.base_kernel.lengthscale = torch.tensor([[0.3, 0.7, 1.1]], dtype=torch.float64)
    return kernel, Z, S


def _matern52(a: np.ndarray, b: np.ndarray, ls: np.ndarray) -> float:
    r = math.sqrt(float((((a - b) / ls) ** 2).sum()))
    return (1 + math.sqrt(5) * r + 5.0 / 3.0 * r**2) * math.exp(-math.sqrt(5) * r)


def _brute_force(
    x1: torch.Tensor, x2: torch.Tensor, Z: torch.Tensor, S: torch.Tensor, ls: torch.Tensor
) -> torch.Tensor:
    """The paper's formula with explicit pair loops and torch.linalg.inv; x1 (n1 x d), x2 (n2 x d)."""
    x1n, x2n, Zn, lsn = x1.numpy(), x2.numpy(), Z.numpy(), ls.reshape(-1).numpy()
    n = Zn.shape[0]
    K_zz = torch.tensor([[_matern52(Zn[i], Zn[j], lsn) for j in range(n)] for i in range(n)], dtype=torch.float64)
    inv = torch.linalg.inv(K_zz + JITTER * torch.eye(n, dtype=torch.float64))
    M = inv @ S @ inv
    out = torch.empty(x1n.shape[0], x2n.shape[0], dtype=torch.float64)
    for a in range(x1n.shape[0]):
        ka = torch.tensor([_matern52(x1n[a], Zn[i], lsn) for i in range(n)], dtype=torch.float64)
        for b in range(x2n.shape[0]):
            kb = torch.tensor([_matern52(x2n[b], Zn[i], lsn) for i in range(n)], dtype=torch.float64)
            out[a, b] = ka @ M @ kb
    return out


def _assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("rank", [None, 2])
def test_matches_brute_force_unbatched(rank):
    kernel, Z, S = _make_kernel(rank=rank)
    assert kernel.similarity_root.shape[-1] == (rank or N_ANCHORS)
    g = torch.Generator().manual_seed(1)
    x1 = torch.rand(5, D, generator=g, dtype=torch.float64)
    x2 = torch.cat([torch.rand(3, D, generator=g, dtype=torch.float64), Z[:2]])
    ls = kernel.base_kernel.lengthscale.detach()
    with torch.no_grad():
        _assert_close(kernel(x1, x2).to_dense(), _brute_force(x1, x2, Z, S, ls))
        _assert_close(kernel(x1).to_dense(), _brute_force(x1, x1, Z, S, ls))


@pytest.mark.parametrize("rank", [None, 2])
@pytest.mark.parametrize("batch", [(3,), (2, 3)])
def test_matches_brute_force_batched(batch, rank):
    kernel, Z, S = _make_kernel(rank=rank)
    ls = kernel.base_kernel.lengthscale.detach()
    g = torch.Generator().manual_seed(2)
    x1 = torch.rand(*batch, 4, D, generator=g, dtype=torch.float64)
    x2 = torch.rand(*batch, 5, D, generator=g, dtype=torch.float64)
    x2_flat = torch.rand(6, D, generator=g, dtype=torch.float64)
    x2_copies = x2_flat.expand(*batch, 6, D).clone()  # the same matrix per batch, as in gpytorch's prediction
    with torch.no_grad():
        copies = kernel(x1, x2_copies).to_dense()
        full = kernel(x1, x2).to_dense()
        against_flat = kernel(x1, x2_flat).to_dense()
        square = kernel(x1).to_dense()
    assert full.shape == (*batch, 4, 5)
    assert against_flat.shape == (*batch, 4, 6)
    assert copies.shape == (*batch, 4, 6)
    _assert_close(copies, against_flat)
    with torch.no_grad():
        _assert_close(kernel(x2_copies).to_dense(), kernel(x2_flat).to_dense().expand(*batch, 6, 6))
    for idx in np.ndindex(*batch):
        _assert_close(full[idx], _brute_force(x1[idx], x2[idx], Z, S, ls))
        _assert_close(against_flat[idx], _brute_force(x1[idx], x2_flat, Z, S, ls))
        _assert_close(square[idx], _brute_force(x1[idx], x1[idx], Z, S, ls))


@pytest.mark.parametrize("rank", [None, 2])
@pytest.mark.parametrize("shape", [(6, D), (3, 6, D), (2, 3, 6, D)])
def test_diag_equals_diagonal_of_full(shape, rank):
    kernel, _, _ = _make_kernel(rank=rank)
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y = x + 0.05
    with torch.no_grad():
        _assert_close(kernel(x, diag=True), kernel(x).to_dense().diagonal(dim1=-2, dim2=-1))
        _assert_close(kernel(x, y, diag=True), kernel(x, y).to_dense().diagonal(dim1=-2, dim2=-1))
        scaled = ScaleKernel(kernel).double()
        _assert_close(scaled(x, diag=True), scaled(x).to_dense().diagonal(dim1=-2, dim2=-1))


def test_kernel_matrix_is_psd_and_reproduces_similarity_at_anchors():
    kernel, Z, S = _make_kernel()
    x = torch.rand(40, D, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with torch.no_grad():
        K = kernel(torch.cat([x, Z])).to_dense()
        at_anchors = kernel(Z).to_dense()
    torch.testing.assert_close(K, K.T)
    assert torch.linalg.eigvalsh(K).min() >= -1e-8
    # K_ZZ (K_ZZ + jI)^-1 K_S (K_ZZ + jI)^-1 K_ZZ ~ K_S for small jitter
    torch.testing.assert_close(at_anchors, S, rtol=0, atol=0.05 * float(S.abs().max()))


def test_hyperparameter_gradients_in_train_mode_and_cache_refresh_in_eval():
    kernel, _, _ = _make_kernel()
    x = torch.rand(5, D, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    kernel.train()
    kernel(x).to_dense().sum().backward()
    grad = kernel.base_kernel.raw_lengthscale.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    kernel.eval()
    with torch.no_grad():
        before = kernel(x).to_dense()
        again = kernel(x).to_dense()
        kernel.base_kernel.lengthscale = torch.tensor([[0.5, 0.5, 0.5]], dtype=torch.float64)
        after = kernel(x).to_dense()
    torch.testing.assert_close(before, again)
    assert not torch.allclose(before, after)


def test_gradient_wrt_inputs_for_acquisition_optimisation():
    kernel, _, _ = _make_kernel()
    kernel.eval()
    x = torch.rand(2, 3, D, generator=torch.Generator().manual_seed(6), dtype=torch.float64, requires_grad=True)
    kernel(x).to_dense().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_non_psd_similarity_is_projected_with_warning():
    Z = torch.rand(3, D, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    S = torch.tensor([[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]], dtype=torch.float64)
    assert torch.linalg.eigvalsh(S).min() < -0.1
    with pytest.warns(NumericalWarning, match="not PSD"):
        kernel = InstructionCoupledKernel(Z, S)
    assert torch.linalg.eigvalsh(kernel.similarity).min() > -1e-12
    with torch.no_grad():
        K = kernel(torch.rand(10, D, dtype=torch.float64)).to_dense()
    assert torch.linalg.eigvalsh(K).min() >= -1e-8


class _IndefiniteKernel(Kernel):
    """x1 x2^T minus 5e-3 on coinciding points: K_ZZ + 1e-4 I and + 1e-3 I are indefinite, + 1e-2 I is not."""

    def forward(self, x1, x2, diag=False, **params):
        K = x1 @ x2.transpose(-1, -2) - 5e-3 * (torch.cdist(x1, x2) < 1e-12).to(x1.dtype)
        return K.diagonal(dim1=-2, dim2=-1) if diag else K


def test_jitter_escalates_with_numerical_warning():
    Z = torch.rand(6, 2, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    kernel = InstructionCoupledKernel(Z, torch.eye(6, dtype=torch.float64), _IndefiniteKernel(), jitter=1e-4)
    with pytest.warns(NumericalWarning, match="used jitter 1.0e-02"):
        K = kernel(torch.rand(4, 2, dtype=torch.float64)).to_dense()
    assert torch.isfinite(K).all()


def test_bad_inputs_raise():
    Z = torch.rand(4, D, dtype=torch.float64)
    with pytest.raises(ConfigError, match=r"\(4 x 4\).*\(3, 3\)"):
        InstructionCoupledKernel(Z, torch.eye(3, dtype=torch.float64))
    with pytest.raises(ConfigError, match="anchors"):
        InstructionCoupledKernel(Z[0], torch.eye(1, dtype=torch.float64))
    kernel = InstructionCoupledKernel(Z, torch.eye(4, dtype=torch.float64))
    with pytest.raises(ConfigError, match="features"):
        kernel(torch.rand(2, D + 1, dtype=torch.float64)).to_dense()
    with pytest.raises(NotImplementedError, match="last_dim_is_batch"):
        kernel.forward(Z, Z, last_dim_is_batch=True)
    with pytest.raises(ConfigError, match="dim >= 1"):
        latent_matern_kernel(0)
    with pytest.raises(ConfigError, match="non-finite"):
        psd_root(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))


# ----------------------------------------------------------------------------------------- similarity (K_S)


def _assert_psd(K: torch.Tensor) -> None:
    assert K.dtype == torch.float64
    torch.testing.assert_close(K, K.T)
    assert torch.linalg.eigvalsh(K).min() >= -1e-10


def test_instruction_similarity_properties():
    scores = torch.tensor(
        [
            [1.0, 0.0, 1.0, 0.5],
            [1.0, 0.0, 1.0, 0.5],  # identical to row 0
            [2.0, 0.0, 2.0, 1.0],  # same direction as row 0
            [0.0, 1.0, 0.0, 0.0],  # disjoint from row 0
            [0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0],
        ]
    )
    K = instruction_similarity(scores)
    _assert_psd(K)
    assert K.shape == (6, 6)
    torch.testing.assert_close(K.diagonal(), torch.ones(6, dtype=torch.float64))
    assert K[0, 1] == pytest.approx(1.0) and K[0, 2] == pytest.approx(1.0)
    assert K[0, 3] == pytest.approx(0.0)
    assert K[4, 5] == pytest.approx(1.0)  # two all-zero rows are identical
    assert (K[4, :4] == 0).all() and (K[5, :4] == 0).all()
    rand = instruction_similarity(torch.rand(30, 8, generator=torch.Generator().manual_seed(0)))
    _assert_psd(rand)
    assert rand.min() >= -1 and rand.max() <= 1


def test_instruction_similarity_rejects_bad_shapes():
    with pytest.raises(ConfigError, match=r"\(5,\)"):
        instruction_similarity(torch.rand(5))
    with pytest.raises(ConfigError, match="non-finite"):
        instruction_similarity(torch.tensor([[1.0, float("inf")]]))


def test_embedding_similarity_minilm():
    texts = ["Add the two numbers.", "Sum the two numbers.", "Translate the word into French.", "Add the two numbers."]
    K = embedding_similarity(texts)
    _assert_psd(K)
    assert K.shape == (4, 4)
    assert K[0, 3] == pytest.approx(1.0)
    assert K[0, 1] > K[0, 2]  # paraphrases read alike
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(embedding_similarity(texts[:2]), K[:2, :2])  # cached model, deterministic
    with pytest.raises(ConfigError, match="at least one"):
        embedding_similarity([])


# ------------------------------------------------------------------------------- coupled + latent (exploring)


def test_coupled_plus_latent_is_the_weighted_sum_and_keeps_prior_variance_far_away():
    from instructzero.tasks.optimisation.kernel import CoupledPlusLatentKernel

    coupled, Z, S = _make_kernel()
    kernel = CoupledPlusLatentKernel(coupled, weight=0.25)
    assert kernel.base_kernel is coupled.base_kernel  # one set of lengthscales
    g = torch.Generator().manual_seed(9)
    x1 = torch.rand(2, 5, D, generator=g, dtype=torch.float64)
    x2 = torch.rand(4, D, generator=g, dtype=torch.float64)
    far = Z.mean(0) + 50.0  # k(far, Z) ~ 0
    with torch.no_grad():
        expected = 0.75 * coupled(x1, x2).to_dense() + 0.25 * coupled.base_kernel(x1, x2).to_dense()
        _assert_close(kernel(x1, x2).to_dense(), expected)
        K = kernel(torch.cat([x2, Z])).to_dense()
        _assert_close(kernel(x1, diag=True), kernel(x1).to_dense().diagonal(dim1=-2, dim2=-1))
        assert float(coupled(far.unsqueeze(0), diag=True)) < 1e-12  # the coupled kernel's prior variance dies
        assert float(kernel(far.unsqueeze(0), diag=True)) == pytest.approx(0.25)  # this one keeps w
    assert torch.linalg.eigvalsh(K).min() >= -1e-8
    with pytest.raises(ConfigError, match=r"\(0, 1\)"):
        CoupledPlusLatentKernel(coupled, weight=1.0)
