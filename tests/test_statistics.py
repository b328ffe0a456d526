"""tasks/evaluation/statistics.py on hand-made cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tasks.evaluation.statistics import bootstrap_ci, mcnemar_exact, paired_bootstrap


def _normal_two_sided_p(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2.0))


# ---------------------------------------------------------------- McNemar


def test_mcnemar_ten_discordant_pairs_all_one_way() -> None:
    a = [1] * 10 + [0] * 5 + [1] * 5
    b = [0] * 10 + [0] * 5 + [1] * 5  # 10 pairs (1, 0), 10 concordant pairs
    assert mcnemar_exact(a, b) == pytest.approx(2 / 1024, rel=1e-12)
    assert mcnemar_exact(b, a) == pytest.approx(2 / 1024, rel=1e-12)  # two-sided: symmetric


def test_mcnemar_four_to_one() -> None:
    # n = 5 discordant, k = 1: p = 2 * (C(5,0) + C(5,1)) / 32 = 12/32.
    a = [1, 1, 1, 1, 0, 1]
    b = [0, 0, 0, 0, 1, 1]
    assert mcnemar_exact(a, b) == pytest.approx(12 / 32, rel=1e-12)


def test_mcnemar_balanced_and_no_discordance_give_one() -> None:
    assert mcnemar_exact([1, 0, 1, 0], [0, 1, 0, 1]) == 1.0
    assert mcnemar_exact([1, 0, 1], [1, 0, 1]) == 1.0
    assert mcnemar_exact(np.array([True, False]), np.array([True, False])) == 1.0


def test_mcnemar_large_imbalance_matches_normal_approximation() -> None:
    # 60 vs 40 discordant pairs: exact p ~ 0.0569 (binomial), continuity-corrected normal ~ 0.0593.
    a = [1] * 60 + [0] * 40
    b = [0] * 60 + [1] * 40
    p = mcnemar_exact(a, b)
    expected = 2 * sum(math.comb(100, i) for i in range(41)) / 2**100
    assert p == pytest.approx(expected, rel=1e-12)
    assert 0.05 < p < 0.06


def test_mcnemar_rejects_non_binary_and_mismatched() -> None:
    with pytest.raises(ValueError):
        mcnemar_exact([0.5, 1.0], [0.0, 1.0])
    with pytest.raises(ValueError):
        mcnemar_exact([1, 0], [1])


# ---------------------------------------------------------------- bootstrap CI


def test_bootstrap_ci_constant_is_degenerate() -> None:
    assert bootstrap_ci([0.4] * 7) == (pytest.approx(0.4), pytest.approx(0.4))
    assert bootstrap_ci([1.0]) == (pytest.approx(1.0), pytest.approx(1.0))


def test_bootstrap_ci_matches_normal_interval_for_bernoulli() -> None:
    # 100 scores with mean 0.5: normal interval 0.5 +- 1.96 * sqrt(0.25 / 100) = [0.402, 0.598].
    scores = [1] * 50 + [0] * 50
    low, high = bootstrap_ci(scores, n_boot=20_000, seed=1)
    assert low == pytest.approx(0.402, abs=0.015)
    assert high == pytest.approx(0.598, abs=0.015)


def test_bootstrap_ci_deterministic_and_level_orders_widths() -> None:
    rng = np.random.default_rng(3)
    scores = rng.normal(size=40)
    assert bootstrap_ci(scores, seed=5) == bootstrap_ci(scores, seed=5)
    lo90, hi90 = bootstrap_ci(scores, level=0.90, n_boot=4000)
    lo99, hi99 = bootstrap_ci(scores, level=0.99, n_boot=4000)
    assert lo99 < lo90 < scores.mean() < hi90 < hi99


def test_bootstrap_ci_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        bootstrap_ci([])
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], level=1.0)


# ---------------------------------------------------------------- paired bootstrap


def test_paired_bootstrap_identical_gives_zero_and_p_one() -> None:
    a = [1, 0, 1, 1, 0]
    assert paired_bootstrap(a, a) == (0.0, 0.0, 0.0, 1.0)


def test_paired_bootstrap_all_one_way_has_smallest_p() -> None:
    n_boot = 999
    diff, low, high, p = paired_bootstrap([1] * 30, [0] * 30, n_boot=n_boot)
    assert (diff, low, high) == (1.0, 1.0, 1.0)
    assert p == pytest.approx(1 / (n_boot + 1))


def test_paired_bootstrap_p_matches_normal_approximation() -> None:
    # Differences with sample z = 2.0 exactly: the two-sided p should be near 2 * (1 - Phi(2)) = 0.0455.
    rng = np.random.default_rng(0)
    n = 400
    noise = rng.normal(size=n)
    noise = (noise - noise.mean()) / noise.std()  # mean 0, population sd 1
    d = noise + 2.0 / math.sqrt(n)  # mean 0.1, sd 1 -> z = 2
    b = rng.normal(size=n)
    a = b + d
    diff, low, high, p = paired_bootstrap(a, b, n_boot=20_000, seed=2)
    assert diff == pytest.approx(0.1, abs=1e-9)
    assert p == pytest.approx(_normal_two_sided_p(2.0), abs=0.01)
    assert low == pytest.approx(0.1 - 1.96 * 0.05, abs=0.01)
    assert high == pytest.approx(0.1 + 1.96 * 0.05, abs=0.01)


def test_paired_bootstrap_pairs_matter() -> None:
    # Same marginal means; paired (consistent +0.05 per example) is significant, unpaired would not be.
    rng = np.random.default_rng(4)
    b = rng.uniform(size=200)
    a = b + 0.05 + rng.normal(scale=0.01, size=200)
    _, low, _, p = paired_bootstrap(a, b, n_boot=2000)
    assert low > 0.0
    assert p < 0.01


def test_paired_bootstrap_sign() -> None:
    diff, low, high, p = paired_bootstrap([0, 0, 0, 1], [1, 1, 1, 1], n_boot=2000)
    assert diff == pytest.approx(-0.75)
    assert low <= diff <= high <= 0.0
    with pytest.raises(ValueError):
        paired_bootstrap([1, 0], [1, 0, 1])
