"""Statistics for comparing methods on per-example scores: bootstrap intervals and paired tests (numpy only).

Scores are 1-d sequences of per-example test scores (for exact-match tasks 0/1, but any float works for the
bootstrap functions). Paired functions take two equally long sequences whose i-th entries score the *same* test
example (same task, seed and example) under two methods; pool seeds by concatenating their per-example scores.

* `bootstrap_ci`: percentile bootstrap interval of the mean.
* `paired_bootstrap`: mean difference a - b, its percentile interval and a two-sided bootstrap p-value.
* `mcnemar_exact`: exact two-sided McNemar test (binomial test on the discordant pairs) for 0/1 scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

ArrayLike = Sequence[float] | Sequence[int] | npt.NDArray[np.floating] | npt.NDArray[np.integer] | npt.NDArray[np.bool_]

# Bootstrap resamples are drawn in chunks of this many rows, so memory stays bounded for long score vectors.
_CHUNK_ELEMENTS = 4_000_000


def _as_vector(scores: ArrayLike, name: str) -> npt.NDArray[np.float64]:
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-d, got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains non-finite values")
    return x


def _bootstrap_means(x: npt.NDArray[np.float64], n_boot: int, seed: int) -> npt.NDArray[np.float64]:
    """Means of `n_boot` resamples (with replacement, same size as x) of x; shape (n_boot,)."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    n = x.size
    rows = max(1, _CHUNK_ELEMENTS // n)
    out = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, rows):
        stop = min(n_boot, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = x[idx].mean(axis=1)
    return out


def bootstrap_ci(
    scores: ArrayLike, *, n_boot: int = 10_000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `scores`.

    Args:
        scores: shape (n,), per-example scores.
        n_boot: number of bootstrap resamples.
        level: coverage of the interval, in (0, 1).
        seed: seed of the resampling generator (results are deterministic given the seed).

    Returns:
        (low, high): the (1-level)/2 and (1+level)/2 quantiles of the resampled means. A single score or constant
        scores give a degenerate interval (mean, mean).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x = _as_vector(scores, "scores")
    means = _bootstrap_means(x, n_boot, seed)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def paired_bootstrap(
    a: ArrayLike, b: ArrayLike, *, n_boot: int = 10_000, seed: int = 0
) -> tuple[float, float, float, float]:
    """Paired bootstrap of the mean difference a - b, with a two-sided p-value for "no difference".

    The per-example differences d_i = a_i - b_i are resampled (pairs stay together). The p-value is the share of
    resampled means at least as far from the observed mean as the observed mean is from 0 (the bootstrap
    distribution shifted to the null), with the usual +1 correction: p = (1 + #{|d*_b - d| >= |d|}) / (n_boot + 1).
    It is 1 when the observed difference is 0, and never below 1 / (n_boot + 1).

    Args:
        a, b: shape (n,) each; a[i] and b[i] score the same example under two methods.
        n_boot: number of bootstrap resamples.
        seed: seed of the resampling generator.

    Returns:
        (mean_diff, low, high, p_value): mean of a - b, its 95% percentile interval, two-sided p-value.
    """
    xa = _as_vector(a, "a")
    xb = _as_vector(b, "b")
    if xa.shape != xb.shape:
        raise ValueError(f"a and b must have the same length, got {xa.size} and {xb.size}")
    d = xa - xb
    observed = float(d.mean())
    means = _bootstrap_means(d, n_boot, seed)
    low, high = np.quantile(means, [0.025, 0.975])
    if observed == 0.0:
        p_value = 1.0
    else:
        # Small tolerance so resamples equal to the observed mean up to rounding count as "not more extreme".
        extreme = np.abs(means - observed) >= abs(observed) - 1e-12 * max(1.0, abs(observed))
        p_value = float((1 + int(extreme.sum())) / (n_boot + 1))
    return observed, float(low), float(high), min(1.0, p_value)


def mcnemar_exact(a: ArrayLike, b: ArrayLike) -> float:
    """Exact two-sided McNemar test for paired 0/1 scores.

    With n01 = #{a=0, b=1} and n10 = #{a=1, b=0}, under the null each discordant pair goes either way with
    probability 1/2, so p = min(1, 2 * P[Binomial(n01 + n10, 1/2) <= min(n01, n10)]). No discordant pairs gives 1.

    Args:
        a, b: shape (n,) each, values in {0, 1} (bools accepted); a[i] and b[i] score the same example.

    Returns:
        The two-sided p-value. Example: 10 discordant pairs all one way gives 2 / 1024.
    """
    xa = _as_vector(a, "a")
    xb = _as_vector(b, "b")
    if xa.shape != xb.shape:
        raise ValueError(f"a and b must have the same length, got {xa.size} and {xb.size}")
    for name, x in (("a", xa), ("b", xb)):
        if not np.all((x == 0.0) | (x == 1.0)):
            raise ValueError(f"{name} must contain only 0/1 scores")
    n10 = int(np.sum((xa == 1.0) & (xb == 0.0)))
    n01 = int(np.sum((xa == 0.0) & (xb == 1.0)))
    n = n10 + n01
    if n == 0:
        return 1.0
    k = min(n10, n01)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    # Exact integer arithmetic up to the final division, so small p-values are exact.
    return min(1.0, 2.0 * tail / 2**n)
