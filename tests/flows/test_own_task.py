"""A user's own task file scored the user's way: an upper-case task that the default (lower-casing) normalisation
cannot score, the short-test-size line, and one real run with a case-sensitive metric and the instruction as the
system message (tiny generator, the rule-based black box over real HTTP, real SQLite)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from instructzero.flows.cli import main
from instructzero.flows.params import build_config
from instructzero.servers.openai_compatible import ServerHandle
from instructzero.tasks.data.splits import make_splits
from instructzero.tasks.data.task_data import load_task
from instructzero.tasks.evaluation.blackbox import BlackBoxClient, BlackBoxSettings, evaluate_instructions
from tests.plugins.prefect import store_rows, tiny_run_overrides

UPPER = "Convert the input to upper case."
WORDS = [
    "apple",
    "blue sky",
    "cat",
    "dog house",
    "eel",
    "fig tree",
    "goat",
    "hat",
    "ink well",
    "jar",
    "kite",
    "lamp post",
    "moon",
    "nut",
    "owl",
    "pen",
    "quilt",
    "rose",
    "sun",
    "tea",
    "urn",
    "vase",
    "wolf",
    "yak",
    "zebra",
    "ant hill",
    "bee",
    "cow",
    "duck pond",
    "elk",
    "fox",
    "gnu",
    "hen",
    "ivy",
    "jay",
    "koi",
    "lynx",
    "mole",
    "newt",
    "oak",
]


@pytest.fixture
def upper_task(tmp_path: Path) -> Path:
    """40 examples of `upper`: the output is the input in capitals."""
    path = tmp_path / "upper.jsonl"
    path.write_text("".join(json.dumps({"input": w, "output": w.upper()}) + "\n" for w in WORDS))
    return path


def _scores(base_url: str, path: Path, scoring: dict) -> tuple[float, float]:
    config = build_config(data={"task": str(path)}, scoring=scoring)
    data = load_task(str(path), None)
    splits = make_splits(data, n_exemplars=5, n_dev=10, n_test=10, seed=0)
    client = BlackBoxClient(BlackBoxSettings.at(base_url, model="rule-based", timeout_s=5.0))
    empty, upper = evaluate_instructions(client, ["", UPPER], splits.dev, config.scoring.scorer(data.metric))
    return empty.mean_score, upper.mean_score


def test_case_sensitive_normalisation_makes_an_upper_case_task_scorable(echo_server_url: str, upper_task: Path) -> None:
    # the default lower-cases both sides: the black box's echo of the input already "matches"
    assert _scores(echo_server_url, upper_task, {}) == (1.0, 1.0)
    assert _scores(echo_server_url, upper_task, {"normalize": "no-lowercase"}) == (0.0, 1.0)


def test_a_task_too_small_for_the_test_size_says_so_in_one_line(upper_task: Path, capsys) -> None:
    argv = [
        "estimate",
        "--task",
        str(upper_task),
        "--black-box-url",
        "http://127.0.0.1:9/v1",
        "--black-box-model",
        "rule-based",
    ]
    assert main(argv) == 0  # default sizes: 5 exemplars, 10 dev, 30 test of 40 examples
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert notes == [
        "note: task 'upper' has 40 distinct inputs: test gets 25 of the 30 requested (exemplars, then "
        "dev, then test are drawn, never sharing an input)"
    ]
    assert main([*argv, "--n-test", "25"]) == 0
    assert "note:" not in capsys.readouterr().err


def test_a_run_scores_its_own_way_and_records_it(
    prefect_harness,
    isolated_results,
    tiny_generator_dir,
    make_server: Callable[..., ServerHandle],
    upper_task: Path,
    tmp_path: Path,
) -> None:
    from instructzero.flows.instruction_search import instructzero_flow
    from instructzero.storage.repository import RunStore

    server = make_server("rule", model_name="rule-based")
    url = f"sqlite:///{tmp_path / 'own.db'}"
    overrides = tiny_run_overrides(url, server.base_url, tiny_generator_dir, task=str(upper_task), iterations=0)
    overrides["black_box"].update(api="chat", instruction_role="system")
    overrides.update(
        scoring={"metric": "exact_match", "normalize": "no-lowercase"},
        report={"baselines": [UPPER], "n_bootstrap": 200},
    )
    summary = instructzero_flow(build_config(**overrides))

    rows = {r.label: r.accuracy for r in summary.comparison}
    assert rows["empty"] == 0.0 and rows["baseline-1"] == 1.0  # the echo no longer passes for an answer
    assert server.stats()["roles"]["system"] > 0  # the instructions went as system messages
    recorded = RunStore(url).get_run(summary.run_id).config
    assert recorded["scoring"]["normalize"]["lowercase"] is False and recorded["scoring"]["metric"] == "exact_match"
    assert recorded["black_box"]["instruction_role"] == "system"
    prompts = [p for (p,) in store_rows(url, "SELECT prompt FROM llm_calls")]
    assert any(p.startswith(f"[system]\n{UPPER}\n[user]\nInput: ") for p in prompts)
