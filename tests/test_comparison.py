"""The run's closing report: accuracy with bootstrap intervals and paired tests against baselines (hand-made
cases whose p-values are known exactly)."""

from __future__ import annotations

import pytest

from tasks.evaluation.comparison import (
    ScoredInstruction, baseline_labels, compare, comparison_metrics, comparison_table, format_comparison,
    scores_in_order,
)
from tasks.errors import ConfigError


def scored(label: str, scores: list[float], text: str = "") -> ScoredInstruction:
    return ScoredInstruction(label, text or label, tuple(scores))


def test_a_clear_win_on_ten_examples_has_the_exact_mcnemar_p() -> None:
    found = scored("found", [1.0] * 10, "Classify the sentiment.")
    empty = scored("empty", [0.0] * 10, "")
    rows = compare(found, [empty], n_bootstrap=2000)
    assert [r.label for r in rows] == ["found", "empty"]
    assert rows[0].accuracy == 1.0 and rows[0].gain is None and rows[0].p_mcnemar is None
    assert rows[1].accuracy == 0.0 and rows[1].gain == 1.0
    assert rows[1].p_mcnemar == pytest.approx(2 / 1024)  # 10 discordant pairs, all one way
    assert rows[1].p_bootstrap == pytest.approx(1 / 2001)  # no resample reaches a zero difference
    assert rows[1].gain_low == rows[1].gain_high == 1.0


def test_identical_scores_are_no_evidence() -> None:
    a = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    rows = compare(scored("found", a), [scored("baseline-1", a)], n_bootstrap=500)
    assert rows[1].gain == 0.0 and rows[1].p_bootstrap == 1.0 and rows[1].p_mcnemar == 1.0


def test_mcnemar_counts_only_discordant_pairs() -> None:
    # 6 concordant pairs, then discordant: found wins 5, loses 1 -> p = 2 * P[Bin(6, .5) <= 1] = 14/64.
    found = [1, 1, 1, 0, 0, 0] + [1, 1, 1, 1, 1] + [0]
    other = [1, 1, 1, 0, 0, 0] + [0, 0, 0, 0, 0] + [1]
    rows = compare(scored("found", found), [scored("empty", other)], n_bootstrap=500)
    assert rows[1].p_mcnemar == pytest.approx(14 / 64)
    assert rows[1].gain == pytest.approx(4 / 12)


def test_partial_credit_scores_get_no_mcnemar_but_a_bootstrap_test() -> None:
    rows = compare(scored("found", [0.5, 1.0, 0.8]), [scored("empty", [0.0, 0.5, 0.8])], n_bootstrap=500)
    assert rows[1].p_mcnemar is None and 0.0 < rows[1].p_bootstrap <= 1.0
    assert rows[0].ci_low <= rows[0].accuracy <= rows[0].ci_high


def test_baselines_must_be_scored_on_the_same_examples() -> None:
    with pytest.raises(ConfigError, match="same examples"):
        compare(scored("found", [1.0, 0.0]), [scored("empty", [1.0])])


def test_labels_order_and_scores_in_split_order() -> None:
    assert baseline_labels(("Do X.", "Do Y."), empty=True) == {"empty": "", "baseline-1": "Do X.",
                                                                "baseline-2": "Do Y."}
    assert baseline_labels((), empty=False) == {}
    assert scores_in_order({"b": 0.0, "a": 1.0}, ["a", "b"]) == (1.0, 0.0)
    with pytest.raises(ConfigError, match="no score"):
        scores_in_order({"a": 1.0}, ["a", "b"])


def test_table_text_metrics_and_artifact_rows_agree() -> None:
    rows = compare(scored("found", [1.0] * 4 + [0.0], "Say it."), [scored("empty", [0.0] * 5, "")],
                   n_bootstrap=500)
    text = format_comparison(rows)
    assert "found" in text and "empty" in text and "'Say it.'" in text and "+0.800" in text
    metrics = comparison_metrics(rows)
    assert metrics["report.found.accuracy"] == 0.8 and metrics["report.empty.gain"] == pytest.approx(0.8)
    assert metrics["report.empty.p_mcnemar"] == pytest.approx(2 / 16) and metrics["report.found.n"] == 5
    table = comparison_table(rows)
    assert table[1]["label"] == "empty" and table[1]["p_mcnemar"] == pytest.approx(0.125)
