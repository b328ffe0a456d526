"""The fixed random projection from the BO search space to soft-token embeddings.

InstructZero searches a low-dimensional box z in [-1,1]^d and lifts every z to n soft tokens with one fixed
random matrix A. The lift must land where the model's real token embeddings live: soft tokens far outside that
region are read as noise (or swamp the exemplars), soft tokens far inside it are all alike and every z writes the
same instruction. So A is drawn with a known output variance and the result is rescaled affinely to the statistics
of the embeddings the model actually sees (`EmbeddingStats`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from instructzero.tasks.errors import ConfigError

PROJECTION_VERSION = 1
"""Bumped whenever the map z -> soft tokens changes for the same settings (part of the fingerprint)."""

_BOUND_TOL = 1e-6
"""z may overshoot [-1,1] by this much (float noise from optimisers) and is clamped; more is an error."""


@dataclass(frozen=True)
class EmbeddingStats:
    """Statistics of the input embeddings a model sees for real tokens, over its whole vocabulary.

    Attributes:
        mean: a (hidden,) tensor, the per-coordinate mean embedding.
        std: a (hidden,) tensor, the per-coordinate standard deviation.
        overall_std: std of all (vocab x hidden) entries together (a single number for reports and tests).
        n_tokens: how many token embeddings went into the statistics.
    """

    mean: Tensor
    std: Tensor
    overall_std: float
    n_tokens: int


@torch.no_grad()
def embedding_stats(embedding: torch.nn.Module, vocab_size: int, *, chunk_size: int = 16384) -> EmbeddingStats:
    """Statistics of `embedding(ids)` over all ids in `range(vocab_size)`, in float64.

    The embedding module is called rather than its weight read, so any scaling done inside it is included:
    Gemma-3's `Gemma3TextScaledWordEmbedding` multiplies the table by sqrt(hidden) (about 25.3 for hidden 640)
    in `forward`, and `inputs_embeds` passed to `generate` skip that module, so soft tokens must already be on
    the scaled scale. Chunked so that no (vocab x hidden) copy is materialised.
    """
    weight = next(embedding.parameters())
    device = weight.device
    total = None
    total_sq = None
    for start in range(0, vocab_size, chunk_size):
        ids = torch.arange(start, min(start + chunk_size, vocab_size), device=device)
        rows = embedding(ids).double()  # (chunk x hidden)
        total = rows.sum(0) if total is None else total + rows.sum(0)
        total_sq = (rows**2).sum(0) if total_sq is None else total_sq + (rows**2).sum(0)
    if total is None or total_sq is None:
        raise ConfigError(f"vocab_size must be positive, got {vocab_size}")
    mean = total / vocab_size
    var = (total_sq / vocab_size - mean**2).clamp_min(0.0)
    # Overall variance = mean per-coordinate variance + variance of the per-coordinate means.
    overall_var = var.mean() + ((mean - mean.mean()) ** 2).mean()
    return EmbeddingStats(
        mean=mean.float().cpu(),
        std=var.sqrt().float().cpu(),
        overall_std=float(overall_var.sqrt()),
        n_tokens=vocab_size,
    )


class SoftPromptProjection:
    """Fixed seeded map from z (b x d) in [-1,1]^d to soft tokens (b x n_tokens x hidden).

    How the scale is matched:

    1. A is a (d x n_tokens*hidden) matrix drawn N(0, 1/d) from a `torch.Generator` seeded with `seed` on the
       CPU in float64 (independent of the global RNG and of the device); each column is then rescaled to unit
       norm (for N(0, 1/d) entries the squared norm is 1 on average, so this only removes the chi-square spread).
    2. For z ~ U(-1,1)^d (independent coordinates of variance 1/3) every coordinate of u = z @ A has mean 0 and
       variance (1/3) * |A_col|^2 = 1/3 exactly, so sqrt(3) * u has unit variance.
    3. The soft token is `mean + scale * std * sqrt(3) * u` per coordinate, with `mean` and `std` the
       per-coordinate mean and std of the model's (scaled) token embeddings. So with `scale` = 1, for z drawn
       uniformly from the box, soft tokens have the same per-coordinate mean and std as real tokens, and the same
       overall std. `scale` is the soft prompt's strength, a setting (`generator.soft_scale`): larger moves the
       soft tokens further from the mean embedding (more varied, eventually less fluent instructions).

    At a corner (|z_j| = 1 for all j) the spread is sqrt(3) times the real one; at z = 0 every soft token is
    the mean embedding. `embedding_std` may be a float (one std for all coordinates) or a (hidden,) tensor;
    per-coordinate matters for Gemma-3, whose coordinate stds range from about 0.34 to 5.8.
    """

    def __init__(
        self,
        intrinsic_dim: int,
        n_tokens: int,
        hidden_size: int,
        seed: int,
        embedding_std: float | Tensor,
        embedding_mean: Tensor,
        scale: float = 1.0,
    ) -> None:
        for name, value in (("intrinsic_dim", intrinsic_dim), ("n_tokens", n_tokens), ("hidden_size", hidden_size)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        self.intrinsic_dim = intrinsic_dim
        self.n_tokens = n_tokens
        self.hidden_size = hidden_size
        self.seed = int(seed)
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ConfigError(f"soft-prompt scale must be a positive number, got {scale!r}")
        self.scale = float(scale)
        self.mean = self._as_vector(embedding_mean, "embedding_mean")
        self.std = self._as_vector(embedding_std, "embedding_std")
        if not bool(torch.all(self.std > 0)):
            raise ConfigError(f"embedding_std must be positive, got min {float(self.std.min())}")
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        a = torch.randn(intrinsic_dim, n_tokens * hidden_size, generator=generator, dtype=torch.float64)
        # Unit-norm columns: every output coordinate gets variance exactly 1/3 under z ~ U(-1,1)^d, not just on
        # average over A (with d = 10 the raw column norms^2 ~ chi2_10/10 would spread coordinate stds by ~20%).
        self.A: Tensor = (a / a.norm(dim=0, keepdim=True)).float()  # (d x n_tokens*hidden)

    def _as_vector(self, value: float | Tensor, name: str) -> Tensor:
        """A (hidden,) float32 CPU tensor from a scalar or a (hidden,) tensor."""
        t = torch.as_tensor(value, dtype=torch.float32).detach().cpu()
        if t.dim() == 0:
            t = t.expand(self.hidden_size).clone()
        if tuple(t.shape) != (self.hidden_size,):
            raise ConfigError(f"{name} must be a scalar or have shape ({self.hidden_size},), got {tuple(t.shape)}")
        if not bool(torch.isfinite(t).all()):
            raise ConfigError(f"{name} must be finite")
        return t

    def check_z(self, z: np.ndarray | Tensor) -> Tensor:
        """Validate z and return it as a (b x d) float32 CPU tensor clamped to [-1,1]."""
        t = torch.as_tensor(np.asarray(z) if not isinstance(z, Tensor) else z).detach().cpu()
        if t.dim() != 2 or t.shape[1] != self.intrinsic_dim or t.shape[0] < 1:
            raise ConfigError(f"z must have shape (b, {self.intrinsic_dim}) with b >= 1, got {tuple(t.shape)}")
        t = t.double()
        if not bool(torch.isfinite(t).all()):
            raise ConfigError(f"z of shape {tuple(t.shape)} contains NaN or inf")
        worst = float(t.abs().max())
        if worst > 1.0 + _BOUND_TOL:
            raise ConfigError(f"z of shape {tuple(t.shape)} must lie in [-1, 1], got max |z| = {worst:.6g}")
        return t.clamp(-1.0, 1.0).float()

    def __call__(self, z: np.ndarray | Tensor) -> Tensor:
        """Lift z.

        Args:
            z: a (b x d) array or tensor with values in [-1, 1].

        Returns:
            a (b x n_tokens x hidden) float32 CPU tensor of soft-token embeddings.
        """
        zt = self.check_z(z)
        u = (zt @ self.A).view(zt.shape[0], self.n_tokens, self.hidden_size)  # unit-free, var 1/3 per coordinate
        return self.mean + self.scale * self.std * math.sqrt(3.0) * u

    def settings(self) -> dict[str, int | str | float]:
        """The settings that, with the embedding statistics, determine the map (stored with the run).

        `scale` appears only when it is not 1, so fingerprints of runs made before it existed still match."""
        settings: dict[str, int | str | float] = {
            "version": PROJECTION_VERSION,
            "intrinsic_dim": self.intrinsic_dim,
            "n_tokens": self.n_tokens,
            "hidden_size": self.hidden_size,
            "seed": self.seed,
            "distribution": "normal-unit-columns*sqrt(3)*std+mean",
        }
        if self.scale != 1.0:
            settings["scale"] = self.scale
        return settings

    def fingerprint(self) -> str:
        """sha256 over A's bytes, the mean/std vectors and the settings: equal iff the map z -> soft tokens is."""
        h = hashlib.sha256()
        h.update(json.dumps(self.settings(), sort_keys=True).encode())
        for t in (self.A, self.mean, self.std):
            h.update(t.contiguous().numpy().astype("<f4", copy=False).tobytes())
        return h.hexdigest()
