"""The benchmark-suite flow: several tasks in parallel (subflows in threads) against one shared store, and the
resume flow that deployments use. Tiny generator + rule-based black box, so the whole flow runs in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from instructzero.flows.suite import SuiteError, benchmark_suite, deep_merge, member_configs, resume_run
from instructzero.storage.repository import RunStore
from instructzero.tasks.errors import ConfigError
from tests.plugins.prefect import store_integrity_problems, store_rows, tiny_run_overrides

pytestmark = pytest.mark.slow


def test_member_configs_name_and_validate_every_task() -> None:
    configs = member_configs(["sum", "diff"], {"seed": 3, "bo": {"iterations": 2}}, "nightly")
    assert [c.name for c in configs] == ["nightly-sum-seed3", "nightly-diff-seed3"]
    assert [c.data.task for c in configs] == ["sum", "diff"]
    assert all(c.bo.iterations == 2 for c in configs)
    with pytest.raises(ConfigError, match="bo.iterations"):
        member_configs(["sum"], {"bo": {"iterations": "many"}}, "x")
    with pytest.raises(ConfigError, match="duplicate"):
        member_configs(["sum", "sum"], {}, "x")
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


def _suite_on(store_url: str, echo_server, tiny_generator_dir: Path) -> None:
    echo_server.reset_stats()
    overrides = tiny_run_overrides(store_url, echo_server.base_url, tiny_generator_dir)
    overrides.pop("data")
    overrides["data"] = dict(n_exemplars=2, n_dev=3, n_test=3)
    results = benchmark_suite(["sum", "diff"], overrides, name_prefix="t", max_parallel=2)

    assert [(r["task"], r["status"], r["name"]) for r in results] == [
        ("sum", "completed", "t-sum-seed0"),
        ("diff", "completed", "t-diff-seed0"),
    ]
    store = RunStore(store_url)
    runs = {r.name: r for r in store.list_runs()}
    assert set(runs) == {"t-sum-seed0", "t-diff-seed0"}
    for r in results:
        run = runs[r["name"]]
        assert run.status == "completed" and run.task == r["task"]
        cands = store.load_candidates(run.id)
        assert [(c.iteration, c.index) for c in cands] == [(0, 0), (0, 1), (1, 0)]
        assert all(len(c.dev_example_scores) == 3 for c in cands)
    assert store_integrity_problems(store_url) == {}
    # The two members' prompts differ (different task inputs), so every paid call is in the shared store once.
    n_calls = store_rows(store_url, "SELECT count(*) FROM llm_calls")[0][0]
    stats = echo_server.stats()
    print(
        f"suite on {store_url.split(':')[0]}: {len(results)} tasks, {n_calls} llm_calls rows, "
        f"{stats['completions']} completions served, max in flight {stats['max_in_flight']}"
    )
    assert n_calls == stats["completions"]

    # Re-running the same suite resumes (here: finds finished) runs by name; nothing is added or duplicated.
    again = benchmark_suite(["sum", "diff"], overrides, name_prefix="t", max_parallel=2)
    assert [r["run_id"] for r in again] == [r["run_id"] for r in results]
    assert len(store.list_runs()) == 2
    assert store_integrity_problems(store_url) == {}


def test_suite_runs_tasks_in_parallel_on_one_sqlite_store(
    prefect_harness, isolated_results, make_server, tiny_generator_dir, sqlite_url
) -> None:
    _suite_on(sqlite_url, make_server("rule", model_name="rule-based", max_batch=1), tiny_generator_dir)
    assert store_rows(sqlite_url, "PRAGMA journal_mode")[0][0] == "wal"


@pytest.mark.postgres
def test_suite_runs_tasks_in_parallel_on_one_postgres_store(
    prefect_harness, isolated_results, make_server, tiny_generator_dir, postgres_db_url
) -> None:
    _suite_on(postgres_db_url, make_server("rule", model_name="rule-based"), tiny_generator_dir)


def test_failed_member_is_reported_and_resumable(
    prefect_harness, isolated_results, make_server, tiny_generator_dir, sqlite_url
) -> None:
    from instructzero.servers.faults import FaultConfig

    good = make_server("rule", model_name="rule-based")
    bad = make_server("rule", model_name="rule-based", faults=FaultConfig(rate_500=1.0))
    overrides = tiny_run_overrides(sqlite_url, bad.base_url, tiny_generator_dir, max_retries=1)
    overrides.pop("data")
    # Every request answers 500: "diff" fails after one bounded retry per request, "sum" too; both are reported.
    with pytest.raises(SuiteError, match=r"2 of 2 suite tasks failed: sum .*BlackBoxError.*; diff"):
        benchmark_suite(["sum", "diff"], overrides, name_prefix="f", max_parallel=2)
    store = RunStore(sqlite_url)
    runs = {r.name: r for r in store.list_runs()}
    assert {r.status for r in runs.values()} == {"failed"}
    assert all("BlackBoxError" in (r.error or "") for r in runs.values())

    # The endpoint is back (here: another URL): the resume flow finishes each failed run from the store.
    for run in runs.values():
        summary = resume_run(run.id, store_url=sqlite_url, black_box_url=good.base_url)
        assert summary.run_id == run.id
        assert store.get_run(run.id).status == "completed"
    assert store_integrity_problems(sqlite_url) == {}


def test_evaluation_fans_out_over_dask_with_the_same_result(
    prefect_harness, isolated_results, make_server, tiny_generator_dir, tmp_path
) -> None:
    """Scale-out: the same flow with a DaskTaskRunner (local in-process cluster) writes the same rows."""
    pytest.importorskip("prefect_dask", reason="install the pinned prefect-dask extra for Dask scale-out")
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect_dask import DaskTaskRunner

    from instructzero.flows.instruction_search import instructzero_flow
    from instructzero.flows.params import build_config

    server = make_server("rule", model_name="rule-based")
    rows, served = {}, {}
    for runner in ("threads", "dask"):
        url = f"sqlite:///{tmp_path / f'{runner}.db'}"
        config = build_config(**tiny_run_overrides(url, server.base_url, tiny_generator_dir, n_init=3))
        flow = instructzero_flow
        if runner == "dask":
            flow = instructzero_flow.with_options(
                task_runner=DaskTaskRunner(
                    cluster_kwargs={
                        "n_workers": 1,
                        "processes": False,
                        "threads_per_worker": 4,
                        "dashboard_address": None,
                    }
                )
            )
        with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: tmp_path / f"results-{runner}"}):
            server.reset_stats()
            summary = flow(config)  # own result storage: nothing is served from the other run's task cache
            served[runner] = server.stats()["completions"]
        rows[runner] = [
            (c.iteration, c.index, c.instruction, c.dev_score, c.test_score)
            for c in RunStore(url).load_candidates(summary.run_id)
        ]
        assert store_integrity_problems(url) == {}
    print(
        f"\ndask: {len(rows['dask'])} candidates, {served['dask']} black-box answers served (threads: "
        f"{served['threads']}), identical to the thread-pool run: {rows['dask'] == rows['threads']}"
    )
    assert served["dask"] == served["threads"] > 0
    assert len(rows["dask"]) == 4
    assert rows["dask"] == rows["threads"]
