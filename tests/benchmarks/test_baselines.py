"""Baseline runs (manual, empty, APE) of the benchmark: stored as ordinary runs and resumable (real SQLite store,
real HTTP to the rule-based black box)."""

from __future__ import annotations

import pytest

from instructzero.benchmarks.baselines import run_fixed_candidates
from instructzero.storage.repository import RunStore
from instructzero.tasks.data.splits import make_splits
from instructzero.tasks.data.task_data import load_task
from instructzero.tasks.errors import ConfigError
from instructzero.tasks.evaluation.blackbox import BlackBoxSettings


def _settings(base_url: str) -> BlackBoxSettings:
    return BlackBoxSettings.at(base_url, model="rule-based", api="completions", max_tokens=8)


def _config(base_url: str, n_dev: int = 3) -> dict:
    return {
        "name": "bench-x-sum-manual-s0",
        "store_url": "sqlite:///elsewhere.db",
        "black_box": {"base_url": base_url, "model": "rule-based"},
        "data": {"task": "sum", "n_dev": n_dev},
        "benchmark": {"method": "manual"},
    }


def test_an_interrupted_baseline_resumes_from_a_new_endpoint_port(make_server, sqlite_url: str) -> None:
    """The benchmark's local black box gets a new port each invocation: a baseline run left `running` by a killed
    invocation is completed by the next one (it was refused as "exists with different settings" before), while a
    run whose real settings differ is still refused."""
    data = load_task("sum", None)
    splits = make_splits(data, n_exemplars=2, n_dev=3, n_test=3, seed=0)
    first, second = make_server("rule", model_name="rule-based"), make_server("rule", model_name="rule-based")
    store = RunStore(sqlite_url)
    killed = store.create_run(
        name="bench-x-sum-manual-s0",
        task=data.name,
        config=_config(first.base_url),
        seed=0,
        versions={},
        projection_hash=None,
        splits=splits.manifest(),
    )
    kwargs = dict(
        name="bench-x-sum-manual-s0",
        data=data,
        splits=splits,
        instructions=["Add the two numbers."],
        model_name="rule-based",
        metric=data.metric,
        template="Instruction: {instruction}\n\nInput: {input}\nOutput:",
        versions={},
        seed=0,
    )

    with pytest.raises(ConfigError, match="exists with different settings"):
        run_fixed_candidates(
            store, settings=_settings(second.base_url), config=_config(second.base_url, n_dev=4), **kwargs
        )
    result = run_fixed_candidates(store, settings=_settings(second.base_url), config=_config(second.base_url), **kwargs)
    assert result.run_id == killed.id and store.get_run(killed.id).status == "completed"
    assert result.test_score == 1.0 and second.stats()["completions"] == 6 and first.stats()["completions"] == 0


def test_the_benchmark_s_baselines_are_scored_and_sent_the_run_s_way(
    make_server, tiny_generator_dir, sqlite_url: str, tmp_path, monkeypatch
) -> None:
    """`instructzero bench` takes the run's scoring and zero-shot format from INSTRUCTZERO_SCORING__* and
    INSTRUCTZERO_BLACK_BOX__* as `run` does (its fixed candidates used the task's metric and the fixed template):
    the instruction goes in the system message, `contains` scores, both recorded with the run."""
    from instructzero.benchmarks.cli import main as bench_main

    monkeypatch.setenv("INSTRUCTZERO_BLACK_BOX__INSTRUCTION_ROLE", "system")
    monkeypatch.setenv("INSTRUCTZERO_SCORING__METRIC", "contains")
    server = make_server("rule", model_name="rule-based")
    rc = bench_main(
        [
            "--quality",
            "--methods",
            "manual,empty",
            "--tasks",
            "sum",
            "--seeds",
            "0",
            "--n-dev",
            "3",
            "--n-test",
            "3",
            "--n-exemplars",
            "2",
            "--generator",
            str(tiny_generator_dir),
            "--black-box-url",
            server.base_url,
            "--black-box-model",
            "rule-based",
            "--black-box-api",
            "chat",
            "--store",
            sqlite_url,
            "--out",
            str(tmp_path / "out"),
            "--suite",
            "way",
        ]
    )
    assert rc == 0
    roles = server.stats()["roles"]
    assert roles.get("system", 0) > 0  # the manual instructions went in the system message
    [manual] = [r for r in RunStore(sqlite_url).list_runs() if r.name.endswith("-manual-s0")]
    assert manual.config["scoring"]["metric"] == "contains"
    assert manual.config["black_box"]["instruction_role"] == "system"
