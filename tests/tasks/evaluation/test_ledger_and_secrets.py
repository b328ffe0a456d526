"""The store is the one ledger of black-box money, and the store URL's password goes nowhere.

Real flows (tiny generator, rule-based black box over real HTTP), real SQLite and PostgreSQL, Prefect's own API.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from instructzero.flows.params import build_config, resolve_store_url
from instructzero.storage.analytics import Analytics
from instructzero.storage.repository import RunStore
from instructzero.tasks.errors import ConfigError
from tests.plugins.prefect import store_rows, tiny_run_overrides

pytestmark = pytest.mark.slow


def _run(overrides: dict, **kwargs):
    from instructzero.flows.instruction_search import instructzero_flow

    return instructzero_flow(build_config(**overrides), **kwargs)


def _cost(url: str, ext_dir: Path) -> dict[str, dict]:
    with Analytics(url, extension_dir=ext_dir) as analytics:
        columns, rows = analytics.view("cost_per_run")
    return {r[columns.index("run_name")]: dict(zip(columns, r, strict=True)) for r in rows}


def _forget_store(url: str) -> None:
    from instructzero.tasks.prefect_tasks import open_store

    open_store(url).close()
    open_store.cache_clear()


# ------------------------------------------------------------------------------------------------ ledger
def test_cost_per_run_counts_only_what_was_sent(
    prefect_harness, isolated_results, make_server, tiny_generator_dir, tmp_path
) -> None:
    """Same settings, three runs: the first pays, the second is served by the store's cache (0 paid, and 0
    requests reach the server), and after the store is deleted the third really sends everything again: no
    cache outside the store (Prefect's persisted task results) answers an evaluation."""
    db = tmp_path / "ledger.db"
    url = f"sqlite:///{db}"
    server = make_server("rule", model_name="rule-based")
    overrides = tiny_run_overrides(url, server.base_url, tiny_generator_dir)
    ext = tmp_path / "ext"

    _run({**overrides, "name": "first"})
    sent_first = server.stats()["completions"]
    _run({**overrides, "name": "second"})
    sent_second = server.stats()["completions"] - sent_first
    cost = _cost(url, ext)
    first, second = cost["first"], cost["second"]
    n_rows = store_rows(url, "SELECT count(*) FROM llm_calls")[0][0]
    print(
        f"\nledger: first run sent {sent_first} requests (paid_calls {first['paid_calls']}, "
        f"{first['tokens_in']} tokens in); second run sent {sent_second} (paid_calls {second['paid_calls']}, "
        f"cache hits {second['cached_calls']} of {second['calls']})"
    )
    assert sent_first > 0 and first["paid_calls"] == sent_first == n_rows
    assert first["tokens_in"] == store_rows(url, "SELECT sum(prompt_tokens) FROM llm_calls")[0][0] > 0
    assert sent_second == 0
    assert second["paid_calls"] == 0 and second["tokens_in"] == second["tokens_out"] == 0
    assert second["cost_usd"] == 0.0 and second["retries"] == 0
    assert second["calls"] == second["cached_calls"] > 0

    _forget_store(url)
    for path in db.parent.glob(db.name + "*"):
        path.unlink()
    _run({**overrides, "name": "second"})
    sent_again = server.stats()["completions"] - sent_first
    again = _cost(url, ext)["second"]
    print(
        f"ledger: after deleting the store, the rerun sent {sent_again} requests (paid_calls "
        f"{again['paid_calls']}, llm_calls rows {store_rows(url, 'SELECT count(*) FROM llm_calls')[0][0]})"
    )
    assert sent_again == sent_first and again["paid_calls"] == sent_again
    assert again["calls"] > 0 and again["cached_calls"] == 0


def test_retries_have_one_count(prefect_harness, isolated_results, make_server, tiny_generator_dir, tmp_path) -> None:
    """Every transient fault is retried and counted once, in llm_calls.retries, which `cost_per_run` reports."""
    from instructzero.servers.faults import FaultConfig

    url = f"sqlite:///{tmp_path / 'retries.db'}"
    server = make_server(
        "rule", model_name="rule-based", faults=FaultConfig(script=("500", "ok", "429", "ok", "500", "500", "ok"))
    )
    overrides = tiny_run_overrides(url, server.base_url, tiny_generator_dir)
    overrides["black_box"].update(concurrency=1)
    summary = _run({**overrides, "name": "faulty"})
    cost = _cost(url, tmp_path / "ext")["faulty"]
    stored = store_rows(url, "SELECT sum(retries) FROM llm_calls WHERE run_id = :r", r=summary.run_id)[0][0]
    stats = server.stats()
    print(
        f"\nretries: {stats.get('faults', stats)}; llm_calls.retries {stored}; cost_per_run.retries {cost['retries']}"
    )
    assert cost["retries"] == stored == 4


def test_a_retry_paid_by_a_failed_attempt_is_counted_once(make_server, tmp_path) -> None:
    """Prefect retries a failed zero-shot-evaluate task; its first attempt had paid for one answer (after one
    retry) and its second takes that answer from the cache. The retry is in the ledger once, `cost_per_run` says
    so, and no other table keeps a second count (evaluations.retries said 0 here while llm_calls said 1)."""
    from sqlalchemy import create_engine, inspect

    from instructzero.servers.faults import FaultConfig
    from instructzero.storage.records import Example
    from instructzero.tasks.errors import BlackBoxError
    from instructzero.tasks.evaluation.blackbox import BlackBoxSettings
    from instructzero.tasks.prefect_tasks import zero_shot_evaluate
    from tests.plugins.store import make_candidate

    url = f"sqlite:///{tmp_path / 'retried.db'}"
    # One request at a time, no backoff: e1 gets 500, e2 gets 500, e1's retry is answered, e2's retry fails.
    server = make_server("rule", model_name="rule-based", faults=FaultConfig(script=("500", "500", "ok", "500")))
    settings = BlackBoxSettings.at(
        server.base_url,
        model="rule-based",
        api="completions",
        max_tokens=8,
        max_retries=1,
        concurrency=1,
        retry_base_delay_s=0.0,
    )
    examples = [Example("e1", "2 3", ("5",)), Example("e2", "4 4", ("8",))]
    store = RunStore(url)
    run = store.create_run(
        name="retried", task="sum", config={}, seed=0, versions={}, projection_hash=None, splits={"dev": ["e1", "e2"]}
    )
    evaluate = zero_shot_evaluate.fn
    with pytest.raises(BlackBoxError, match="failed after 2 attempts"):
        evaluate("Add the numbers.", examples, "exact_match", "{instruction}\n{input}\n", settings, url, run.id)
    result = evaluate("Add the numbers.", examples, "exact_match", "{instruction}\n{input}\n", settings, url, run.id)
    candidate = make_candidate(0, "Add the numbers.", {"e1": 1.0, "e2": 1.0}, phase="init")
    store.record_iteration(run.id, 0, [dataclasses.replace(candidate, dev=result)])  # what the black box gave
    store.close()

    cost = _cost(url, tmp_path / "ext")["retried"]
    ledger = store_rows(url, "SELECT request_hash, retries FROM llm_calls WHERE run_id = :r", r=run.id)
    engine = create_engine(url)
    try:
        with_retries = {
            t
            for t in inspect(engine).get_table_names()
            if "retries" in {c["name"] for c in inspect(engine).get_columns(t)}
        }
    finally:
        engine.dispose()
    print(
        f"\nretried evaluation: faults {server.stats()['faults']}; ledger rows (retries) "
        f"{sorted(r for _, r in ledger)}; cost_per_run.retries {cost['retries']}; "
        f"tables with a retries column: {sorted(with_retries)}"
    )
    assert server.stats()["faults"] == {"500": 3}
    assert (result.n_calls, result.n_cached) == (2, 1)  # e1 came from the cache on the second attempt
    assert sorted(r for _, r in ledger) == [0, 1] and cost["retries"] == 1 and cost["paid_calls"] == 2
    assert with_retries == {"llm_calls"}


# ------------------------------------------------------------------------------------------------ secrets
def test_redacted_store_url_is_resolved_from_the_environment(monkeypatch) -> None:
    full = "postgresql+psycopg://iz:s3cret@db-host:5432/instructzero"
    config = build_config(store_url=full)
    recorded = config.recorded()["store_url"]
    assert "s3cret" not in recorded and "***" in recorded and config.store_url == full
    monkeypatch.delenv("INSTRUCTZERO_STORE_URL", raising=False)
    with pytest.raises(ConfigError, match="redacted.*INSTRUCTZERO_STORE_URL"):
        resolve_store_url(recorded)
    monkeypatch.setenv("INSTRUCTZERO_STORE_URL", "postgresql://iz:s3cret@db-host:5432/instructzero")
    assert (
        build_config(store_url=recorded).with_store_secret().store_url.endswith("iz:s3cret@db-host:5432/instructzero")
    )
    monkeypatch.setenv("INSTRUCTZERO_STORE_URL", "postgresql://iz:s3cret@other-host/instructzero")
    with pytest.raises(ConfigError, match="redacted"):
        resolve_store_url(recorded)
    assert resolve_store_url("sqlite:///x.db") == "sqlite:///x.db"


@pytest.mark.postgres
def test_store_password_never_reaches_store_prefect_logs_or_artifacts(
    prefect_harness, isolated_results, make_server, tiny_generator_dir, postgres_db_url, monkeypatch, capfd, caplog
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, LogFilter, LogFilterFlowRunId

    password = "pw-" + uuid.uuid4().hex[:16]
    url = make_url(postgres_db_url).set(password=password).render_as_string(hide_password=False)  # trust auth
    server = make_server("rule", model_name="rule-based")
    caplog.set_level("DEBUG")
    # credentials written into the black-box URL must not travel either (nor show in an error, checked below)
    key = "bb-" + uuid.uuid4().hex[:16]
    black_box_url = server.base_url.replace("http://", f"http://iz:{key}@")
    summary = _run({**tiny_run_overrides(url, black_box_url, tiny_generator_dir), "name": "pw-run"})
    run = RunStore(url).get_run(summary.run_id)
    assert run.status == "completed" and "***" in run.config["store_url"]

    leaks = []
    secrets = (password, key)
    tables = [r[0] for r in store_rows(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    for table in tables:
        leaks += [
            f"store {table}"
            for row in store_rows(url, f'SELECT * FROM "{table}"')
            if any(secret in str(row) for secret in secrets)
        ]
    out, err = capfd.readouterr()
    leaks += ["stdout"] if any(secret in out for secret in secrets) else []
    leaks += ["stderr"] if any(secret in err for secret in secrets) else []
    leaks += ["python logging"] if any(secret in caplog.text for secret in secrets) else []

    async def prefect_records() -> tuple[int, list[str]]:
        async with get_client() as client:
            flow_run = await client.read_flow_run(run.prefect_flow_run_id)
            logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id])))
            artifacts = await client.read_artifacts(flow_run_filter=FlowRunFilter(id={"any_": [flow_run.id]}))
            found = [f"prefect log {log.id}" for log in logs if any(x in log.message for x in secrets)]
            found += [
                f"artifact {a.key}" for a in artifacts if any(x in str(a.data) + str(a.description) for x in secrets)
            ]
            found += ["flow run parameters"] if any(x in str(flow_run.parameters) for x in secrets) else []
            assert "***" in str(flow_run.parameters)
            return len(logs), found

    n_logs, found = asyncio.run(prefect_records())
    leaks += found
    for results in isolated_results.rglob("*"):
        if results.is_file() and any(x.encode() in results.read_bytes() for x in secrets):
            leaks.append(f"persisted result {results.name}")
    print(
        f"\nstore password: searched {len(tables)} tables, stdout/stderr, logging, {n_logs} Prefect logs, "
        f"artifacts, flow-run parameters, persisted results: leaks {leaks}"
    )
    assert leaks == []

    # A config that travelled as JSON (a deployment's parameters) names the store redacted; the flow takes the
    # password from the environment.
    monkeypatch.setenv("INSTRUCTZERO_STORE_URL", url)
    redacted = {**tiny_run_overrides(run.config["store_url"], server.base_url, tiny_generator_dir), "name": "pw-run"}
    again = _run(redacted, resume_run_id=run.id)
    assert again.run_id == run.id and RunStore(url).get_run(run.id).status == "completed"


def test_credentials_in_the_black_box_url_never_show_in_its_errors(make_server) -> None:
    """A BlackBoxError (stored as the run's error, logged by Prefect, printed by the CLI) named the URL raw."""
    from instructzero.tasks.errors import BlackBoxError
    from instructzero.tasks.evaluation.blackbox import BlackBoxClient, BlackBoxSettings

    key = "bb-" + uuid.uuid4().hex[:16]
    server = make_server("rule", model_name="rule-based", strict_model=True)  # 404 for another model
    for base_url in (server.base_url.replace("http://", f"http://iz:{key}@"), f"http://iz:{key}@127.0.0.1:9/v1"):
        settings = BlackBoxSettings.at(
            base_url,
            model="not-served",
            api="completions",
            max_retries=0,
            timeout_s=2.0,
            api_key_env="IZ_TEST_NO_KEY",
        )
        client = BlackBoxClient(settings)
        with pytest.raises(BlackBoxError) as info:
            client.complete_many_sync(["Instruction: Add.\n\nInput: 1 2\nOutput:"])
        assert key not in str(info.value) and "iz:***@" in str(info.value)
        assert key not in repr(client)
