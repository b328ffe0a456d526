"""SoftPromptProjection: shape, determinism, seed sensitivity, scale matching, input checks; embedding_stats."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from instructzero.tasks.errors import ConfigError
from instructzero.tasks.generation.projection import SoftPromptProjection, embedding_stats

D, N, H = 10, 5, 64


def _stats(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A made-up per-coordinate mean and std, spread over a wide range like Gemma's (0.3 .. 6)."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(H, generator=g)
    std = torch.exp(torch.empty(H).uniform_(math.log(0.3), math.log(6.0), generator=g))
    return mean, std


def _projection(seed: int = 0, **overrides) -> SoftPromptProjection:
    mean, std = _stats()
    kwargs = dict(embedding_std=std, embedding_mean=mean) | overrides
    return SoftPromptProjection(D, N, H, seed, **kwargs)


def test_shape_and_dtype() -> None:
    out = _projection()(torch.rand(3, D) * 2 - 1)
    assert out.shape == (3, N, H)
    assert out.dtype == torch.float32


def test_accepts_float64_numpy() -> None:
    z = np.linspace(-1, 1, 2 * D).reshape(2, D)
    proj = _projection()
    assert torch.equal(proj(z), proj(torch.from_numpy(z)))


def test_deterministic_and_independent_of_global_rng() -> None:
    torch.manual_seed(123)
    a = _projection(seed=7)
    torch.manual_seed(999)
    torch.rand(1000)
    b = _projection(seed=7)
    assert torch.equal(a.A, b.A)
    assert a.fingerprint() == b.fingerprint()
    z = torch.rand(4, D) * 2 - 1
    assert torch.equal(a(z), b(z))


def test_seed_sensitivity() -> None:
    a, b = _projection(seed=0), _projection(seed=1)
    assert not torch.equal(a.A, b.A)
    assert a.fingerprint() != b.fingerprint()


def test_fingerprint_covers_statistics() -> None:
    mean, std = _stats()
    base = SoftPromptProjection(D, N, H, 0, embedding_std=std, embedding_mean=mean)
    shifted = SoftPromptProjection(D, N, H, 0, embedding_std=std, embedding_mean=mean + 1)
    assert base.fingerprint() != shifted.fingerprint()
    assert len(base.fingerprint()) == 64


def test_zero_maps_to_mean_embedding() -> None:
    mean, _ = _stats()
    out = _projection()(torch.zeros(1, D))
    assert torch.allclose(out[0], mean.expand(N, H))


def test_uniform_z_matches_per_coordinate_statistics() -> None:
    """For z ~ U(-1,1)^d the soft tokens have the target mean and std per coordinate (and overall)."""
    mean, std = _stats()
    proj = _projection()
    z = torch.rand(4000, D, generator=torch.Generator().manual_seed(3)) * 2 - 1
    soft = proj(z).reshape(-1, H)  # (4000*N x H)
    assert torch.allclose(soft.mean(0), mean, atol=0.1 * float(std.max()))
    ratio = soft.std(0) / std
    assert float(ratio.min()) > 0.8 and float(ratio.max()) < 1.2, ratio
    target_overall = math.sqrt(float((std**2).mean() + ((mean - mean.mean()) ** 2).mean()))
    assert abs(float(soft.std()) / target_overall - 1) < 0.2


def test_scalar_std_is_broadcast() -> None:
    proj = SoftPromptProjection(D, N, H, 0, embedding_std=2.0, embedding_mean=torch.zeros(H))
    assert torch.equal(proj.std, torch.full((H,), 2.0))


@pytest.mark.parametrize("shape", [(D,), (2, D + 1), (0, D), (1, 2, D)])
def test_bad_shape_names_the_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError, match=str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")):
        _projection()(torch.zeros(shape))


def test_values_outside_box_rejected() -> None:
    z = torch.zeros(2, D)
    z[1, 3] = 1.5
    with pytest.raises(ConfigError, match=r"\(2, 10\).*1\.5"):
        _projection()(z)
    z[1, 3] = float("nan")
    with pytest.raises(ConfigError, match="NaN"):
        _projection()(z)


def test_float_noise_overshoot_is_clamped() -> None:
    proj = _projection()
    z = torch.ones(1, D, dtype=torch.float64) + 1e-9
    assert torch.equal(proj(z), proj(torch.ones(1, D)))


def test_bad_settings_rejected() -> None:
    mean, std = _stats()
    with pytest.raises(ConfigError, match=r"embedding_std .*\(3,\)"):
        SoftPromptProjection(D, N, H, 0, embedding_std=torch.ones(3), embedding_mean=mean)
    with pytest.raises(ConfigError, match="n_tokens .* 0"):
        SoftPromptProjection(D, 0, H, 0, embedding_std=std, embedding_mean=mean)
    with pytest.raises(ConfigError, match="positive"):
        SoftPromptProjection(D, N, H, 0, embedding_std=0.0, embedding_mean=mean)


class _ScaledEmbedding(torch.nn.Embedding):
    """Like Gemma3TextScaledWordEmbedding: the scale is applied in forward, not stored in the weight."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids) * 8.0


def test_embedding_stats_include_forward_scaling_and_chunking() -> None:
    torch.manual_seed(0)
    emb = _ScaledEmbedding(1000, 16)
    stats = embedding_stats(emb, 1000, chunk_size=64)  # 1000 is not a multiple of 64
    table = emb.weight.detach().double() * 8.0
    assert torch.allclose(stats.mean.double(), table.mean(0), atol=1e-5)
    assert torch.allclose(stats.std.double(), table.std(0, unbiased=False), atol=1e-5)
    assert stats.overall_std == pytest.approx(float(table.std(unbiased=False)), rel=1e-5)
    assert stats.n_tokens == 1000
