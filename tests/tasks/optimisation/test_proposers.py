"""The search's `Proposer` interface (tasks/optimisation/proposer.py): the registries are the config's choices, every
strategy follows the documented call order, and a new strategy is one registry entry."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from typing import Any, get_args

import numpy as np
import pytest
import torch

from instructzero.flows.params import build_config
from instructzero.storage.records import Candidate
from instructzero.tasks.errors import ConfigError
from instructzero.tasks.optimisation.acquisition import AcquisitionSpec, sobol_design
from instructzero.tasks.optimisation.proposer import (
    Known,
    Proposal,
    Proposer,
    ProposerContext,
    make_proposer,
    propose_checked,
)
from instructzero.tasks.optimisation.registry import ACQUISITIONS, KERNELS, OPTIMIZERS, PROPOSERS, SIMILARITIES
from instructzero.tasks.optimisation.reproposal import propose_distinct, proposing
from instructzero.tasks.optimisation.settings import BOSettings
from instructzero.tasks.optimisation.surrogate import KernelSpec
from tests.plugins.gp import toy

pytestmark = pytest.mark.usefixtures("single_torch_thread")

D = 4
CONTEXT = ProposerContext(dim=D, seed=1, dev_ids=("d0", "d1"))
FAST = dict(n_init=4, batch_size=2, num_restarts=2, raw_samples=16)
CHOICES = {
    "strategy": PROPOSERS,
    "kernel": KERNELS,
    "similarity": SIMILARITIES,
    "acquisition": ACQUISITIONS,
    "optimizer": OPTIMIZERS,
}


def records(z: np.ndarray, iteration: int = 0) -> list[Candidate]:
    """z's rows as scored candidates (the toy objective, split into two per-example scores)."""
    y = toy(torch.as_tensor(z)).tolist()
    return [
        Candidate(
            iteration=iteration,
            index=i,
            phase="init",
            z=tuple(float(v) for v in row),
            acquisition_value=None,
            instruction=f"instruction {iteration}.{i}",
            dev_score=y[i],
            dev_example_scores={"d0": y[i], "d1": 0.5 * y[i]},
        )
        for i, row in enumerate(z)
    ]


def test_the_config_choices_are_the_registry_keys() -> None:
    for name, registry in CHOICES.items():
        field = BOSettings.model_fields[name]
        assert get_args(field.annotation) == registry.names(), name
        assert field.default in registry
    assert all(isinstance(KERNELS[k], KernelSpec) for k in KERNELS)
    assert all(isinstance(ACQUISITIONS[k], AcquisitionSpec) for k in ACQUISITIONS)
    assert all(callable(OPTIMIZERS[k]) for k in OPTIMIZERS) and all(callable(SIMILARITIES[k]) for k in SIMILARITIES)
    for strategy in PROPOSERS:
        assert isinstance(make_proposer(strategy, CONTEXT, BOSettings(strategy=strategy)), Proposer)


def test_unknown_names_are_refused_with_the_choices() -> None:
    with pytest.raises(ConfigError, match="strategy must be one of 'bo', 'uniform', got 'sobol'"):
        make_proposer("sobol", CONTEXT, BOSettings())
    with pytest.raises(ConfigError, match=r"bo\.strategy='sobol': Input should be 'bo' or 'uniform'"):
        build_config(bo={"strategy": "sobol"})
    with pytest.raises(ConfigError, match=r"bo\.optimizer='adam'"):
        build_config(bo={"optimizer": "adam"})
    with pytest.raises(ConfigError, match="similarity must be one of 'scores', 'embedding', got 'bm25'"):
        SIMILARITIES.resolve("bm25")


def test_the_config_checks_names_without_importing_torch() -> None:
    """Why the registries hold "module:attribute" strings: `instructzero --help` and reading a stored config stay
    light (torch and botorch take seconds to import)."""
    code = (
        "import sys; from instructzero.flows.params import build_config; "
        "build_config(bo={'strategy': 'uniform', 'kernel': 'matern', 'optimizer': 'optimize_acqf'}); "
        "print(sorted({'torch', 'botorch', 'gpytorch'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("strategy", list(PROPOSERS))
def test_every_strategy_follows_the_call_order(strategy: str) -> None:
    """Iteration 0 is the Sobol design; then observe(history), propose, re-propose; a fresh proposer given the same
    history (a resumed run) proposes the same soft prompts."""
    settings = BOSettings(strategy=strategy, **FAST)
    proposer = make_proposer(strategy, CONTEXT, settings)
    design = proposer.propose(0, 4)
    assert design.phase == "init" and design.acquisition_values == (None,) * 4
    np.testing.assert_array_equal(design.z, sobol_design(4, D, seed=1).numpy())

    history = records(design.z)
    proposer.observe(history)
    batch = proposer.propose(1, 2)
    assert batch.phase == strategy and batch.iteration == 1 and batch.z.shape == (2, D)  # phase: the strategy's
    assert np.abs(batch.z).max() <= 1.0 and len(batch.acquisition_values) == 2
    known: Known = ((tuple(batch.z[0]), -0.5),)
    again = proposer.propose(1, 1, attempt=1, known=known, pending=batch.z[1:], exclude=batch.z)
    assert again.z.shape == (1, D) and not np.isclose(again.z, batch.z).all(-1).any()

    resumed = make_proposer(strategy, CONTEXT, settings)
    resumed.observe(history)
    np.testing.assert_array_equal(resumed.propose(1, 2).z, batch.z)
    repeat = resumed.propose(1, 1, attempt=1, known=known, pending=batch.z[1:], exclude=batch.z)
    np.testing.assert_array_equal(repeat.z, again.z)


def test_only_gp_bo_learns_and_it_needs_data_first() -> None:
    gp = make_proposer("bo", CONTEXT, BOSettings(**FAST))
    assert gp.learns and not make_proposer("uniform", CONTEXT, BOSettings(**FAST)).learns
    assert gp.propose(1, 2).phase == "init"  # nothing observed yet (the flow always observes first)
    gp.observe(records(sobol_design(4, D, seed=1).numpy()))
    assert gp.propose(1, 2).phase == "bo"


class Toy(Proposer):
    """A strategy written in a test, with a phase of its own: grid points, and a log of how it was called."""

    phases = ("toy",)
    learns = True

    def __init__(self, context: ProposerContext, settings: Any) -> None:
        self.dim = context.dim
        self.calls: list[tuple] = []

    def observe(self, history) -> None:
        self.calls.append(("observe", len(history)))

    def propose(self, iteration, n, *, attempt=0, known=(), pending=None, exclude=None) -> Proposal:
        self.calls.append(("propose", iteration, n, attempt, len(known)))
        z = np.array([[0.9 - 0.1 * (i + 2 * attempt + 3 * iteration)] * self.dim for i in range(n)])
        return Proposal(iteration=iteration, phase="toy", z=z, acquisition_values=(None,) * n)


def test_a_new_strategy_is_one_registry_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registered, the toy is found by name and re-proposed by `propose_distinct` like the built-in ones."""
    monkeypatch.setitem(PROPOSERS, "toy", Toy)
    proposer = make_proposer("toy", CONTEXT, BOSettings())
    assert isinstance(proposer, Toy)
    proposer.observe(records(sobol_design(2, D, seed=0).numpy()))
    decode = lambda z: ["same" if row[0] > 0.55 else f"new {row[0]:.1f}" for row in z]  # noqa: E731
    out = propose_distinct(proposing(proposer, 1), decode, {"same": 0.1}, batch_size=2)
    assert proposer.calls == [("observe", 2), ("propose", 1, 2, 0, 0), ("propose", 1, 1, 1, 1)]
    assert out.instructions == ["new 0.4", "new 0.5"] and (out.attempts, out.rejected) == (2, 1)


@pytest.mark.slow
def test_the_flow_runs_a_registered_strategy_in_call_order(
    prefect_harness, isolated_results, echo_server_url, tiny_generator_dir, tmp_path, monkeypatch
) -> None:
    """The flow's loop with the toy: observe (as the gp-update task) before every proposal but the first, with the
    whole recorded history; the toy's soft prompts are what the store records."""
    from instructzero.flows.instruction_search import instructzero_flow
    from instructzero.storage.repository import RunStore
    from tests.plugins.prefect import tiny_run_overrides

    made: list[Toy] = []
    monkeypatch.setitem(PROPOSERS, "toy", lambda context, settings: made.append(Toy(context, settings)) or made[-1])
    url = f"sqlite:///{tmp_path / 'toy.db'}"
    config = build_config(**tiny_run_overrides(url, echo_server_url, tiny_generator_dir, n_init=2, iterations=2))
    # BOSettings' choices are the registry's keys at import; the toy came later, so the config is copied past them
    config = config.model_copy(update={"bo": config.bo.model_copy(update={"strategy": "toy"})})
    summary = instructzero_flow(config)

    store = RunStore(url)
    assert store.get_run(summary.run_id).config["bo"]["strategy"] == "toy"
    [toy] = made
    firsts = [c for c in toy.calls if c[0] == "observe" or c[3] == 0]  # re-proposals (attempt > 0) aside
    assert firsts == [("propose", 0, 2, 0, 0), ("observe", 2), ("propose", 1, 1, 0, 0), ("observe", 3)] + [
        ("propose", 2, 1, 0, 0)
    ]
    candidates = store.load_candidates(summary.run_id)
    assert [(c.iteration, c.phase) for c in candidates] == [(0, "toy"), (0, "toy"), (1, "toy"), (2, "toy")]
    assert all(len(set(c.z)) == 1 and -1.0 <= c.z[0] <= 1.0 for c in candidates)  # the toy's diagonal points


class Undeclared(Toy):
    """The toy, writing a phase it does not declare."""

    def propose(self, iteration, n, *, attempt=0, known=(), pending=None, exclude=None) -> Proposal:
        return replace(super().propose(iteration, n, attempt=attempt), phase="bo")


class OutOfBox(Toy):
    """The toy, proposing outside [-1, 1]."""

    def propose(self, iteration, n, *, attempt=0, known=(), pending=None, exclude=None) -> Proposal:
        proposal = super().propose(iteration, n, attempt=attempt)
        return replace(proposal, z=proposal.z * 10)


@pytest.mark.parametrize(
    ("strategy", "message"),
    [
        (Undeclared, r"strategy Undeclared \(iteration 1, attempt 0\) proposed phase 'bo'; it declares 'toy'"),
        (OutOfBox, r"strategy OutOfBox .* outside \[-1, 1\]"),
    ],
)
def test_a_proposal_the_strategy_did_not_declare_is_refused(strategy: type[Toy], message: str) -> None:
    """Checked where the pipeline asks for proposals, before anything is generated or paid for."""
    with pytest.raises(ConfigError, match=message):
        propose_checked(strategy(CONTEXT, None), 1, 2)
    assert propose_checked(Toy(CONTEXT, None), 1, 2).phase == "toy"
