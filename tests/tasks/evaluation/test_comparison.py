"""The run's closing report: accuracy with bootstrap intervals, valid paired tests against baselines and Holm's
adjustment across them (hand-made cases whose p-values are known exactly)."""

from __future__ import annotations

import pytest

from instructzero.tasks.errors import ConfigError
from instructzero.tasks.evaluation.comparison import (
    ScoredInstruction,
    baseline_labels,
    compare,
    comparison_metrics,
    comparison_table,
    format_comparison,
    scores_in_order,
)


def scored(label: str, scores: list[float], text: str = "") -> ScoredInstruction:
    return ScoredInstruction(label, text or label, tuple(scores))


def test_a_clear_win_on_ten_examples_has_the_exact_mcnemar_p() -> None:
    found = scored("found", [1.0] * 10, "Classify the sentiment.")
    empty = scored("empty", [0.0] * 10, "")
    rows = compare(found, [empty], n_bootstrap=2000)
    assert [r.label for r in rows] == ["found", "empty"]
    assert rows[0].accuracy == 1.0 and rows[0].gain is None and rows[0].p_value is None and rows[0].p_holm is None
    assert rows[1].accuracy == 0.0 and rows[1].gain == 1.0
    assert rows[1].p_value == pytest.approx(2 / 1024)  # 10 discordant pairs, all one way
    assert rows[1].p_holm == rows[1].p_value and rows[1].test == "exact McNemar"  # one comparison: nothing to adjust
    assert rows[1].gain_low == rows[1].gain_high == 1.0


def test_five_wins_of_five_is_not_significant() -> None:
    rows = compare(scored("found", [1.0] * 5), [scored("empty", [0.0] * 5)], n_bootstrap=500)
    assert rows[1].p_value == pytest.approx(0.0625)  # the paired bootstrap said 0.0001 here


def test_several_baselines_are_holm_adjusted() -> None:
    found = [1.0] * 10
    rows = compare(
        scored("found", found),
        [scored("empty", [0.0] * 10), scored("baseline-1", [0.0] * 5 + [1.0] * 5)],
        n_bootstrap=500,
    )
    raw = [r.p_value for r in rows[1:]]
    assert raw == pytest.approx([2 / 1024, 2 / 32])
    assert [r.p_holm for r in rows[1:]] == pytest.approx([2 * 2 / 1024, 2 / 32])  # step-down: 2 p1, max(p1', p2)


def test_identical_scores_are_no_evidence() -> None:
    a = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    rows = compare(scored("found", a), [scored("baseline-1", a)], n_bootstrap=500)
    assert rows[1].gain == 0.0 and rows[1].p_value == 1.0 and rows[1].p_holm == 1.0


def test_mcnemar_counts_only_discordant_pairs() -> None:
    # 6 concordant pairs, then discordant: found wins 5, loses 1 -> p = 2 * P[Bin(6, .5) <= 1] = 14/64.
    found = [1, 1, 1, 0, 0, 0] + [1, 1, 1, 1, 1] + [0]
    other = [1, 1, 1, 0, 0, 0] + [0, 0, 0, 0, 0] + [1]
    rows = compare(scored("found", found), [scored("empty", other)], n_bootstrap=500)
    assert rows[1].p_value == pytest.approx(14 / 64)
    assert rows[1].gain == pytest.approx(4 / 12)


def test_partial_credit_scores_get_the_exact_sign_flip_test() -> None:
    rows = compare(scored("found", [0.5, 1.0, 0.8]), [scored("empty", [0.0, 0.5, 0.8])], n_bootstrap=500)
    # two non-zero differences (+0.5, +0.5): of the 4 sign patterns, 2 reach |sum| = 1
    assert rows[1].test == "sign-flip (exact)" and rows[1].p_value == pytest.approx(0.5)
    assert rows[0].ci_low <= rows[0].accuracy <= rows[0].ci_high


def test_baselines_must_be_scored_on_the_same_examples() -> None:
    with pytest.raises(ConfigError, match="same examples"):
        compare(scored("found", [1.0, 0.0]), [scored("empty", [1.0])])


def test_labels_order_and_scores_in_split_order() -> None:
    assert baseline_labels(("Do X.", "Do Y."), empty=True) == {
        "empty": "",
        "baseline-1": "Do X.",
        "baseline-2": "Do Y.",
    }
    assert baseline_labels((), empty=False) == {}
    assert scores_in_order({"b": 0.0, "a": 1.0}, ["a", "b"]) == (1.0, 0.0)
    with pytest.raises(ConfigError, match="no score"):
        scores_in_order({"a": 1.0}, ["a", "b"])


def test_table_text_metrics_and_artifact_rows_agree() -> None:
    rows = compare(scored("found", [1.0] * 4 + [0.0], "Say it."), [scored("empty", [0.0] * 5, "")], n_bootstrap=500)
    text = format_comparison(rows)
    assert "found" in text and "empty" in text and "'Say it.'" in text and "+0.800" in text
    metrics = comparison_metrics(rows)
    assert metrics["report.found.accuracy"] == 0.8 and metrics["report.empty.gain"] == pytest.approx(0.8)
    assert metrics["report.empty.p_value"] == pytest.approx(2 / 16) and metrics["report.found.n"] == 5
    assert metrics["report.empty.p_holm"] == pytest.approx(2 / 16) and "report.found.p_value" not in metrics
    table = comparison_table(rows)
    assert table[1]["label"] == "empty" and table[1]["p_value"] == pytest.approx(0.125)
    assert table[1]["test"] == "exact McNemar"


# ---------------------------------------------------------------- the constant-answer reference
def test_constant_answer_is_the_majority_label_on_a_skewed_task() -> None:
    from instructzero.storage.records import Example
    from instructzero.tasks.evaluation.constant_answer import best_constant_answer

    examples = [Example(str(i), f"x{i}", (label,)) for i, label in enumerate(["yes"] * 7 + ["no"] * 3)]
    const = best_constant_answer(examples, "exact_match")
    assert const.answer == "yes" and const.rate == pytest.approx(0.7) and const.scores[:8] == (1.0,) * 7 + (0.0,)
    assert const.label == "<always 'yes'>"


def test_constant_answer_counts_every_accepted_answer_and_the_metric() -> None:
    from instructzero.storage.records import Example
    from instructzero.tasks.evaluation.constant_answer import best_constant_answer

    # "cat" is never the canonical answer but is accepted on 3 of 4 examples: it is the best constant
    examples = [
        Example("0", "a", ("dog", "cat")),
        Example("1", "b", ("fox", "cat")),
        Example("2", "c", ("cow", "cat")),
        Example("3", "d", ("dog",)),
    ]
    assert best_constant_answer(examples, "exact_match").answer == "cat"
    # under f1, "the cat" scores 2/3 of an exact "cat"
    f1_examples = [Example("0", "a", ("the cat",)), Example("1", "b", ("cat",))]
    const = best_constant_answer(f1_examples, "f1")
    assert const.rate == pytest.approx((1.0 + 2 / 3) / 2)
