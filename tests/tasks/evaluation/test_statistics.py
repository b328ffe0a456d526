"""tasks/evaluation/statistics.py on hand-made cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from instructzero.tasks.evaluation.statistics import bootstrap_ci, holm, mcnemar_exact, paired_test, sign_flip_p


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


# ---------------------------------------------------------------- paired test (the hand cases)


def test_five_wins_of_five_is_not_significant() -> None:
    # the paired bootstrap gave p = 0.0001 here; the exact answer is 2 / 2**5
    t = paired_test([1] * 5, [0] * 5)
    assert t.p_value == pytest.approx(0.0625, rel=1e-12) and t.test == "exact McNemar" and t.diff == 1.0 and t.n == 5


def test_ten_of_twenty_vs_none_of_twenty() -> None:
    t = paired_test([1] * 10 + [0] * 10, [0] * 20)
    assert t.p_value == pytest.approx(0.001953125, rel=1e-12) and t.diff == pytest.approx(0.5)
    assert paired_test([1] * 7 + [0] * 13, [0] * 20).p_value == pytest.approx(2 / 2**7, rel=1e-12)


def test_all_equal_gives_p_one_and_a_degenerate_interval() -> None:
    t = paired_test([1, 0, 1, 1], [1, 0, 1, 1])
    assert (t.diff, t.low, t.high, t.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert paired_test([0.3, 0.7], [0.3, 0.7]).p_value == 1.0


def test_continuous_scores_match_an_exact_enumeration_by_hand() -> None:
    import itertools

    a = np.array([0.9, 0.5, 0.75, 0.2, 0.6, 0.4, 1.0, 0.35])
    b = np.array([0.4, 0.5, 0.25, 0.3, 0.1, 0.4, 0.5, 0.05])
    d = (a - b)[a != b]  # the two zero differences cannot flip
    observed = abs(d.sum())
    extreme = sum(
        abs(np.dot(signs, np.abs(d))) >= observed - 1e-12 for signs in itertools.product((-1.0, 1.0), repeat=d.size)
    )
    t = paired_test(a, b)
    assert t.test == "sign-flip (exact)"
    assert t.p_value == pytest.approx(extreme / 2**d.size, rel=1e-12)
    # by hand: the non-zero differences are 0.5, 0.5, -0.1, 0.5, 0.5, 0.3 (sum 2.2, |d| sums to 2.4); flipping a
    # set F of them gives |2.4 - 2 F|, which reaches 2.2 only for F = {} or {0.1}: 2 patterns, and their mirrors
    assert t.p_value == pytest.approx(4 / 64, rel=1e-12)
    scipy_p = stats.permutation_test(
        (d,), lambda x, axis: np.sum(x, axis=axis), permutation_type="samples", vectorized=True, n_resamples=np.inf
    ).pvalue
    assert t.p_value == pytest.approx(scipy_p, rel=1e-12)


def test_sign_flip_on_binary_differences_equals_mcnemar() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.integers(0, 2, 24).astype(float), rng.integers(0, 2, 24).astype(float)
    p, test = sign_flip_p(a - b)
    assert test == "sign-flip (exact)" and 0 < np.sum(a != b) <= 16
    assert p == pytest.approx(mcnemar_exact(a, b), rel=1e-9)


def test_monte_carlo_sign_flip_is_close_to_normal_and_never_zero() -> None:
    rng = np.random.default_rng(2)
    d = rng.normal(0.3, 1.0, size=60)  # 60 non-zero differences: too many to enumerate
    p, test = sign_flip_p(d, n_resamples=20_000, seed=1)
    z = d.mean() / (np.sqrt((d**2).mean()) / np.sqrt(d.size))  # the permutation distribution's own variance
    assert test.startswith("sign-flip (Monte Carlo") and p == pytest.approx(_normal_two_sided_p(z), abs=0.01)
    p_big, _ = sign_flip_p(np.full(40, 1.0) + rng.normal(0, 0.01, 40), n_resamples=999)
    assert p_big == pytest.approx(1 / 1000)  # +1 correction: never below 1 / (n + 1)


def test_paired_interval_covers_the_difference_and_keeps_pairs() -> None:
    a = np.array([1, 1, 0, 1, 0, 1, 1, 0, 1, 1] * 3, dtype=float)
    t = paired_test(a, a - np.array([1, 0, 0, 1, 0, 0, 1, 0, 0, 0] * 3) * a)
    assert t.low <= t.diff <= t.high and t.low >= 0.0  # b never beats a on any pair


def test_paired_test_sign_and_bad_input() -> None:
    t = paired_test([0, 0, 0, 1], [1, 1, 1, 1])
    assert t.diff == -0.75 and t.high <= 0.0 and t.p_value == pytest.approx(0.25)
    with pytest.raises(ValueError):
        paired_test([1, 0], [1, 0, 1])


# ---------------------------------------------------------------- Holm


def test_holm_hand_case() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.2]) == [0.2]
    assert holm([0.5, 0.4, 0.001, 0.9]) == pytest.approx([1.0, 1.0, 0.004, 1.0])
    assert holm([]) == []
    with pytest.raises(ValueError):
        holm([0.5, 1.5])
