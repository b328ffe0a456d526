"""The quality benchmark's method list is its registry (benchmarks/quality.py `METHODS`): name -> how it runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from instructzero.benchmarks.quality import (
    DEFAULT_METHODS,
    METHODS,
    FixedMethod,
    FlowMethod,
    QualitySettings,
    check_quality_settings,
    run_quality,
)
from instructzero.flows.params import build_config
from instructzero.storage.repository import RunStore
from instructzero.tasks.errors import ConfigError
from instructzero.tasks.optimisation.registry import PROPOSERS


def test_the_method_list_is_the_registry() -> None:
    assert QualitySettings(tasks=("sum",), seeds=(0,)).methods == DEFAULT_METHODS
    assert DEFAULT_METHODS == (  # report order, as before the registry; the sampled variants are opt-in
        "instructzero",
        "instructzero-explore",
        "instructzero-matern",
        "uniform",
        "ape",
        "manual",
        "empty",
    )
    flow = {name: m for name, m in METHODS.items() if isinstance(m, FlowMethod)}
    assert set(flow) == {"instructzero", "instructzero-explore", "instructzero-matern", "uniform"} | {
        "instructzero-sampled",
        "uniform-sampled",
    }
    assert all(flow[name].generator == {"temperature": 0.9, "top_p": 0.95} for name in flow if "sampled" in name)
    for method in flow.values():
        assert method.bo["strategy"] in PROPOSERS
        build_config(bo=dict(method.bo))  # valid flow settings
    # baselines record the flow's default search settings with their runs, as they always did (reuse compares them)
    assert all(m.bo == {"strategy": "bo", "kernel": "coupled"} for m in METHODS.values() if isinstance(m, FixedMethod))
    assert METHODS["ape"].recorded(3) == {"ape": {"temperature": 0.9, "top_p": 0.95, "seed": 3}}


def test_an_unknown_method_names_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown method\(s\) \['sobol'\]; choose from instructzero, "):
        check_quality_settings(QualitySettings(tasks=("sum",), seeds=(0,), methods=("sobol",)))


def test_a_new_method_is_one_entry(
    monkeypatch: pytest.MonkeyPatch, echo_server_url: str, tiny_generator_dir: Path, tmp_path: Path
) -> None:
    """A fixed-candidate method registered in the test runs like the shipped baselines: an ordinary store run,
    scored on dev, its best instruction on test (the rule-based black box adds when told to)."""
    monkeypatch.setitem(METHODS, "toy", FixedMethod("two instructions", lambda cell, gen: ["Say hi.", "Add them."]))
    store_url = f"sqlite:///{tmp_path / 'bench.db'}"
    settings = QualitySettings(
        tasks=("sum",),
        seeds=(0,),
        budget=2,
        methods=("toy",),
        store_url=store_url,
        base_url=echo_server_url,
        black_box_model="rule-based",
        n_exemplars=2,
        n_dev=2,
        n_test=2,
        generator=str(tiny_generator_dir),
        max_new_tokens=4,
        suite="toy",
    )
    [run, reference] = run_quality(settings, log=lambda line: None).runs  # the constant answer after the methods
    assert reference.method == "constant" and reference.calls == 0
    assert (run.method, run.status, run.best_instruction, run.test_score) == ("toy", "completed", "Add them.", 1.0)
    stored = RunStore(store_url).find_run_by_name("bench-toy-sum-toy-s0")
    assert stored is not None and stored.config["benchmark"] == {"method": "toy", "suite": "toy"}
