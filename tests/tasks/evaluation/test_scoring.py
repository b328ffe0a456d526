"""A run's own scoring: each metric, each normalisation step, `python:` metrics and the `scoring` settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from instructzero.flows.cli import EXIT_USER_ERROR, main
from instructzero.flows.params import build_config, config_from_record
from instructzero.tasks.errors import ConfigError
from instructzero.tasks.evaluation.custom_metric import load_metric_function
from instructzero.tasks.evaluation.metrics import Scorer, normalize_prediction, score_prediction
from instructzero.tasks.evaluation.normalization import AUTO, NONE, Normalization, normalize, parse_normalization

CUSTOM = "python:tests.custom_metric"


# ---------------------------------------------------------------------------------------------- metrics
@pytest.mark.parametrize(
    ("metric", "prediction", "answers", "expected"),
    [
        ("exact_match", "Paris.", ["paris"], 1.0),
        ("exact_match", "Paris is the capital", ["paris"], 0.0),
        ("contains", "The answer is Paris.", ["paris"], 1.0),
        ("contains", "Parisian", ["paris"], 0.0),
        ("f1", "the big cat", ["a big cat"], 2 / 3),
        ("exact_set", "b, a, c", ["a b c"], 1.0),
        ("exact_set", "a, b", ["a b c"], 0.0),
        (f"{CUSTOM}:shared_characters", "ABD", ["abc"], 2 / 3),  # after the default lower-casing
    ],
)
def test_each_metric_scores_as_documented(metric: str, prediction: str, answers: list[str], expected: float) -> None:
    assert Scorer(metric)(prediction, answers) == pytest.approx(expected)
    assert score_prediction(prediction, answers, Scorer(metric)) == pytest.approx(expected)


def test_a_python_metric_gets_a_list_when_there_are_several_answers() -> None:
    scorer = Scorer(f"{CUSTOM}:seen_target")
    assert (scorer("x", ["a"]), scorer("x", ["a", "b"])) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("python:no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        (f"{CUSTOM}:missing", "has no function 'missing'"),
        (f"{CUSTOM}:NOT_A_FUNCTION", "has no function 'NOT_A_FUNCTION'"),
        ("python:tests.custom_metric", "python:module:function"),
        ("bleu", "unknown metric 'bleu'"),
    ],
)
def test_a_bad_metric_is_refused_when_the_config_is_built(spec: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        build_config(scoring={"metric": spec})


@pytest.mark.parametrize(("name", "needle"), [("out_of_range", "returned 1.5"), ("raises", "raised ValueError")])
def test_a_misbehaving_python_metric_is_one_error_naming_it(name: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as info:
        Scorer(f"{CUSTOM}:{name}")("x", ["y"])
    assert f"{CUSTOM}:{name}" in str(info.value) and "\n" not in str(info.value)


def test_a_python_metric_is_imported_from_the_working_directory(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "my_iz_metric.py").write_text("def score(p, t):\n    return float(p == t)\n")
    monkeypatch.chdir(tmp_path)
    assert load_metric_function("python:my_iz_metric:score")("a", "a") == 1.0


# ------------------------------------------------------------------------------------------ normalisation
@pytest.mark.parametrize(
    ("step", "prediction", "answer"),
    [
        ("fillers", "salt and pepper", "salt pepper"),
        ("first-line", "yes\nbecause it is", "yes"),
        ("first-period", "Paris. It is big", "paris"),
        ("lowercase", "PARIS", "paris"),
        ("punctuation", "paris!", "paris"),
    ],
)
def test_each_default_step_can_be_switched_off(step: str, prediction: str, answer: str) -> None:
    assert Scorer("exact_match", AUTO)(prediction, [answer]) == 1.0
    assert Scorer("exact_match", parse_normalization(f"no-{step}"))(prediction, [answer]) == 0.0


def test_whitespace_collapsing_is_off_by_default_and_can_be_switched_on() -> None:
    assert Scorer("exact_match", AUTO)("new   york", ["new york"]) == 0.0
    assert Scorer("exact_match", parse_normalization("whitespace"))("new   york", ["new york"]) == 1.0


@pytest.mark.parametrize(
    "text",
    [
        "Positive",
        "  the answer\nsecond line",
        "Paris. It is the capital.",
        "salt and pepper",
        "Sentence 1: It rained.",
        "twenty-one",
        "Hello, world!",
        "3.5",
        "The result is 12.",
        "a - b ..c",
    ],
)
def test_auto_is_exactly_the_instruction_induction_normalisation(text: str) -> None:
    assert normalize(text, AUTO) == normalize_prediction(text)
    assert normalize(text, parse_normalization("no-lowercase")) == normalize_prediction(text, lowercase=False)


def test_none_keeps_the_text_as_written_but_for_surrounding_whitespace() -> None:
    assert normalize("  Paris. And-so on!\nMore ", NONE) == "Paris. And-so on!\nMore"
    assert normalize("3.5 apples, e.g.!", parse_normalization("none,punctuation")) == "3.5 apples eg"  # decimals kept


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("auto", AUTO),
        ("none", NONE),
        ("no-lowercase", Normalization(lowercase=False)),
        (" AUTO , no-punctuation ", Normalization(punctuation=False)),
        ("none,whitespace", Normalization(**{**vars(NONE), "whitespace": True})),
    ],
)
def test_normalize_specs(spec: str, expected: Normalization) -> None:
    assert parse_normalization(spec) == expected
    assert parse_normalization(expected.spec()) == expected


@pytest.mark.parametrize("spec", ["", "no-case", "lowercase,shout"])
def test_a_bad_normalize_spec_names_the_step(spec: str) -> None:
    with pytest.raises(ConfigError, match="normalisation"):
        build_config(scoring={"normalize": spec})


# ------------------------------------------------------------------------------------ the run's settings
def test_auto_scores_like_every_stored_run_and_is_recorded() -> None:
    config = build_config()
    assert config.scoring.scorer("f1") == Scorer("f1", AUTO)  # auto: the task's own metric, today's steps
    recorded = config.recorded()["scoring"]
    assert recorded == {
        "metric": "auto",
        "normalize": {
            "fillers": True,
            "first_line": True,
            "first_period": True,
            "lowercase": True,
            "punctuation": True,
            "whitespace": False,
        },
    }
    custom = build_config(scoring={"metric": "contains", "normalize": "no-lowercase"})
    assert custom.scoring.scorer("exact_match") == Scorer("contains", Normalization(lowercase=False))
    assert config_from_record(custom.recorded()).scoring == custom.scoring


def test_scoring_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("INSTRUCTZERO_SCORING__METRIC", "f1")
    monkeypatch.setenv("INSTRUCTZERO_SCORING__NORMALIZE__LOWERCASE", "false")
    config = build_config()
    assert config.scoring.scorer("exact_match") == Scorer("f1", Normalization(lowercase=False))


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--metric", "python:no_such_module_xyz:f"], "no_such_module_xyz"),
        (["--metric", "rouge"], "rouge"),
        (["--normalize", "no-shouting"], "no-shouting"),
    ],
)
def test_a_bad_metric_flag_is_one_line_exit_2_before_anything_runs(
    flags: list[str], needle: str, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--task", "sum", *flags]) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "instructzero.db").exists()
