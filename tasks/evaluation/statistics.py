"""Statistics for comparing instructions on per-example scores: valid paired tests, intervals, Holm's correction.

Scores are 1-d sequences of per-example test scores (0/1 for exact match, any float for f1-like metrics). Paired
functions take two equally long sequences whose i-th entries score the *same* example under two methods; pool
seeds by concatenating their per-example scores.

* `paired_test`: the mean difference a - b, a paired BCa bootstrap interval of it, and the p-value of a test that
  is valid under the null "the two methods are exchangeable on every example": the sign-flip permutation test on
  the per-example differences (exact enumeration when the non-zero differences are few, Monte Carlo with the +1
  correction otherwise). For 0/1 scores it is the exact McNemar test (a binomial test on the discordant pairs),
  which it equals.
* `mcnemar_exact`: that binomial test on its own.
* `bootstrap_ci`: BCa bootstrap interval of a mean.
* `holm`: Holm's step-down adjustment when one report makes several comparisons.

A percentile bootstrap of the mean difference is an interval, not a test: its "p-value" (the share of resamples
beyond 0) is far too small on few examples (5 wins of 5 gave 0.0001, the exact answer is 0.0625), so none is made.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

ArrayLike = Sequence[float] | Sequence[int] | npt.NDArray[np.floating] | npt.NDArray[np.integer] | npt.NDArray[np.bool_]

EXACT_MAX_NONZERO = 16
"""Up to this many non-zero differences the sign-flip test enumerates all 2^k sign patterns (65,536 at most)."""

_CHUNK_ELEMENTS = 4_000_000  # Monte Carlo sign patterns are drawn in chunks of about this many entries


@dataclass(frozen=True)
class PairedTest:
    """The paired comparison of two methods on the same examples."""

    diff: float  # mean of a - b
    low: float  # paired bootstrap interval of diff (BCa)
    high: float
    p_value: float  # two-sided
    test: str  # which test gave p_value: "exact McNemar", "sign-flip (exact)", "sign-flip (Monte Carlo, N)"
    n: int  # number of pairs


def _as_vector(scores: ArrayLike, name: str) -> npt.NDArray[np.float64]:
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-d, got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains non-finite values")
    return x


def _pair(a: ArrayLike, b: ArrayLike) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    xa, xb = _as_vector(a, "a"), _as_vector(b, "b")
    if xa.shape != xb.shape:
        raise ValueError(f"a and b must have the same length, got {xa.size} and {xb.size}")
    return xa, xb


def _is_binary(*xs: npt.NDArray[np.float64]) -> bool:
    return all(bool(np.all((x == 0.0) | (x == 1.0))) for x in xs)


def bootstrap_ci(scores: ArrayLike, *, n_boot: int = 10_000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """BCa bootstrap interval of the mean of `scores` (`scipy.stats.bootstrap`).

    Args:
        scores: shape (n,), per-example scores (for a paired interval: the differences a - b).
        n_boot: number of bootstrap resamples.
        level: coverage of the interval, in (0, 1).
        seed: seed of the resampling generator (results are deterministic given the seed).

    Returns:
        (low, high). Constant scores (one score, all equal) give the degenerate interval (mean, mean); where BCa is
        undefined (every resample on one side of the estimate) the percentile interval is returned.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    x = _as_vector(scores, "scores")
    if np.ptp(x) == 0.0:
        return float(x[0]), float(x[0])
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DegenerateDataWarning / runtime warnings: NaN is checked below
            ci = stats.bootstrap(
                (x,),
                np.mean,
                n_resamples=n_boot,
                confidence_level=level,
                method=method,
                vectorized=True,
                rng=np.random.default_rng(seed),
            ).confidence_interval
        if np.isfinite(ci.low) and np.isfinite(ci.high):
            break
    return float(ci.low), float(ci.high)


def mcnemar_exact(a: ArrayLike, b: ArrayLike) -> float:
    """Exact two-sided McNemar test for paired 0/1 scores (`scipy.stats.binomtest` on the discordant pairs).

    Under the null each discordant pair (one method right, the other wrong) goes either way with probability 1/2.
    No discordant pair gives 1. Example: 10 discordant pairs all one way gives 2 / 2**10 = 0.001953125.
    """
    xa, xb = _pair(a, b)
    if not _is_binary(xa):
        raise ValueError("a must contain only 0/1 scores")
    if not _is_binary(xb):
        raise ValueError("b must contain only 0/1 scores")
    n10 = int(np.sum((xa == 1.0) & (xb == 0.0)))
    n01 = int(np.sum((xa == 0.0) & (xb == 1.0)))
    if n10 + n01 == 0:
        return 1.0
    return float(stats.binomtest(n10, n10 + n01, 0.5).pvalue)


def sign_flip_p(differences: ArrayLike, *, n_resamples: int = 10_000, seed: int = 0) -> tuple[float, str]:
    """Two-sided sign-flip permutation test of "the differences are symmetric about 0".

    Only non-zero differences carry information (a zero keeps its value under a flip), so the k non-zero ones are
    permuted: all 2^k sign patterns when k <= `EXACT_MAX_NONZERO`, else `n_resamples` random ones with the +1
    correction (p = (1 + #{|T*| >= |T|}) / (n_resamples + 1)), so a Monte Carlo p is never 0.

    Returns:
        (p_value, description of the test).
    """
    d = _as_vector(differences, "differences")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    nonzero = d[d != 0.0]
    k = nonzero.size
    observed = abs(float(nonzero.sum()))
    threshold = observed - 1e-9 * max(1.0, observed)  # a sum equal to the observed one up to rounding is extreme
    if k <= EXACT_MAX_NONZERO:
        signs = ((np.arange(2**k)[:, None] >> np.arange(k)) & 1) * 2.0 - 1.0  # every pattern, (2^k x k)
        return float(np.mean(np.abs(signs @ nonzero) >= threshold)), "sign-flip (exact)"
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_ELEMENTS // k)
    extreme = 0
    for start in range(0, n_resamples, rows):
        signs = rng.choice((-1.0, 1.0), size=(min(rows, n_resamples - start), k))
        extreme += int(np.sum(np.abs(signs @ nonzero) >= threshold))
    return (1 + extreme) / (n_resamples + 1), f"sign-flip (Monte Carlo, {n_resamples})"


def paired_test(a: ArrayLike, b: ArrayLike, *, n_boot: int = 10_000, level: float = 0.95, seed: int = 0) -> PairedTest:
    """Mean difference a - b on the same examples, its paired BCa interval and a valid two-sided p-value.

    0/1 scores: exact McNemar. Other scores: the sign-flip permutation test (`sign_flip_p`, `n_boot` resamples
    when it cannot enumerate). Both are the same test for 0/1 scores.

    Args:
        a, b: shape (n,) each; a[i] and b[i] score the same example under two methods.
    """
    xa, xb = _pair(a, b)
    d = xa - xb
    low, high = bootstrap_ci(d, n_boot=n_boot, level=level, seed=seed)
    if _is_binary(xa, xb):
        p, test = mcnemar_exact(xa, xb), "exact McNemar"
    else:
        p, test = sign_flip_p(d, n_resamples=n_boot, seed=seed)
    return PairedTest(diff=float(d.mean()), low=low, high=high, p_value=p, test=test, n=int(d.size))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control across several comparisons), in input order.

    Sorted ascending, p_(i) becomes max_{j <= i} min(1, (m - j + 1) * p_(j)). Example: (0.01, 0.04, 0.03) ->
    (0.03, 0.06, 0.06).
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or np.any((p < 0.0) | (p > 1.0)) or not np.all(np.isfinite(p)):
        raise ValueError(f"p-values must be a 1-d sequence in [0, 1], got {list(p_values)!r}")
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    adjusted = np.empty(m)
    adjusted[order] = stepped
    return [float(x) for x in adjusted]
