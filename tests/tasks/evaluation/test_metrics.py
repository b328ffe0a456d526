"""Metrics: instruction-induction normalisation and the four scores, each the max over accepted answers."""

from __future__ import annotations

import pytest

from instructzero.tasks.errors import ConfigError, TaskDataError
from instructzero.tasks.evaluation.metrics import metric_for_task, normalize_prediction, score_prediction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Positive", "positive"),
        ("  the answer\nsecond line", "the answer"),
        ("Paris. It is the capital.", "paris"),
        ("salt and pepper", "salt pepper"),
        ("Sentence 1: It rained.", "it rained"),
        ("twenty-one", "twenty one"),
        ("Hello, world!", "hello world"),
        ("3.5", "3.5"),
        ("The result is 12.", "the result is 12"),
    ],
)
def test_normalize_prediction(text: str, expected: str) -> None:
    assert normalize_prediction(text).strip() == expected


def test_normalize_keeps_case_when_asked() -> None:
    assert normalize_prediction("Zeit!", lowercase=False) == "Zeit"


def test_normalize_original_cuts_decimals() -> None:
    assert normalize_prediction("3.5", keep_decimals=False) == "3"


def test_decimal_is_not_an_integer_match() -> None:
    assert score_prediction("3.5", ["3"], "exact_match") == 0.0
    assert score_prediction("3.5", ["3.5"], "exact_match") == 1.0


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        ("Positive.", ["positive"], 1.0),
        ("POSITIVE", ["positive"], 1.0),
        ("negative", ["positive"], 0.0),
        ("the sentiment is positive", ["positive"], 0.0),
        ("dig", ["big", "pig", "dig"], 1.0),
        ("nineteen", ["19"], 0.0),
        ("one hundred fifty-two", ["one hundred and fifty-two"], 1.0),
    ],
)
def test_exact_match(prediction: str, answers: list[str], expected: float) -> None:
    assert score_prediction(prediction, answers, "exact_match") == expected


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        ("A synonym would be happy", ["happy"], 1.0),
        ("unhappy", ["happy"], 0.0),
        ("I'd say Glad!", ["joyful", "glad"], 1.0),
        ("the answer is c++", ["c++"], 1.0),
        ("nothing here", ["big"], 0.0),
    ],
)
def test_contains(prediction: str, answers: list[str], expected: float) -> None:
    assert score_prediction(prediction, answers, "contains") == expected


def test_f1_partial_overlap_and_max_over_answers() -> None:
    # "involve oscillations" vs "they involve oscillations": P = 2/3, R = 1 -> F1 = 0.8
    assert score_prediction("they involve oscillations", ["involve oscillations."], "f1") == pytest.approx(0.8)
    assert score_prediction("vibrate", ["involve oscillations.", "vibrate."], "f1") == 1.0
    assert score_prediction("cats", ["dogs"], "f1") == 0.0


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        ("spider, chicken, tortoise", ["chicken, spider, tortoise"], 1.0),
        ("Tortoise chicken spider.", ["chicken, spider, tortoise"], 1.0),
        ("chicken, spider", ["chicken, spider, tortoise"], 0.0),
        ("a", ["b", "a"], 1.0),
    ],
)
def test_exact_set(prediction: str, answers: list[str], expected: float) -> None:
    assert score_prediction(prediction, answers, "exact_set") == expected


def test_unknown_metric_is_named() -> None:
    with pytest.raises(ConfigError, match="'bleu'"):
        score_prediction("a", ["a"], "bleu")  # type: ignore[arg-type]


def test_empty_answers_rejected() -> None:
    with pytest.raises(TaskDataError, match="no accepted answers"):
        score_prediction("a", [], "exact_match")


def test_single_string_answers_rejected() -> None:
    with pytest.raises(TaskDataError, match="single string"):
        score_prediction("a", "a", "exact_match")


@pytest.mark.parametrize(
    ("task", "metric"),
    [
        ("common_concept", "f1"),
        ("informal_to_formal", "f1"),
        ("orthography_starts_with", "exact_set"),
        ("taxonomy_animal", "exact_set"),
        ("synonyms", "contains"),
        ("ii:synonyms", "contains"),
        ("sum", "exact_match"),
        ("navigate", "exact_match"),
    ],
)
def test_metric_for_task(task: str, metric: str) -> None:
    assert metric_for_task(task) == metric
