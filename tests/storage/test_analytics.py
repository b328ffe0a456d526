"""DuckDB analytics over a populated store: views, read-only query guard, Parquet export, table formatting."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sqlalchemy import create_engine, text

from instructzero.storage.analytics import VIEWS, Analytics, check_read_only, format_table
from instructzero.storage.errors import StoreError
from instructzero.storage.records import BlackBoxCall
from instructzero.storage.repository import RunStore
from instructzero.storage.session import normalize_url
from tests.plugins.store import make_candidate, make_evaluation, populate

N_IT, N_CAND = 4, 3


@pytest.fixture(scope="session")
def duckdb_ext_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One private extension directory for the session (INSTALL copies the extension file once)."""
    return tmp_path_factory.mktemp("duckdb_ext")


@pytest.fixture
def populated(store_url: str, duckdb_ext_dir: Path) -> dict:
    with RunStore(store_url) as store:
        a = populate(store, name="run-a", task="sum", n_iterations=N_IT, n_candidates=N_CAND)
        b = populate(store, name="run-b", task="diff", n_iterations=2, n_candidates=2, tag="b:")
        best_a = store.load_candidates(a)[-1].instruction
        store.record_test_evaluation(a, make_evaluation({"t0": 1.0, "t1": 0.0}, instruction=best_a, split="test"))
        for i in range(5):
            store.put_llm_call(BlackBoxCall(f"h{i}", "m", "p", "r", 10, 2, 0.1, 0, cost_usd=0.5, run_id=a))
        store.put_llm_call(BlackBoxCall("unattributed", "m", "p", "r", 10, 2, 0.1, 0, cost_usd=9.0))
    return {"url": store_url, "a": a, "b": b, "best_a": best_a, "ext_dir": duckdb_ext_dir}


@pytest.fixture
def analytics(populated: dict):
    with Analytics(populated["url"], extension_dir=populated["ext_dir"]) as an:
        yield an


def as_dicts(result: tuple[list[str], list[tuple]]) -> list[dict]:
    columns, rows = result
    return [dict(zip(columns, r, strict=True)) for r in rows]


def test_views_on_a_populated_store(analytics: Analytics, populated: dict) -> None:
    assert set(analytics.views()) == set(VIEWS)
    assert {"runs", "candidates", "llm_calls"} <= set(analytics.tables())
    flat = as_dicts(analytics.view("candidates_flat"))
    assert len(flat) == N_IT * N_CAND + 4
    assert {"run_id", "run_name", "task", "iteration", "index", "instruction", "dev_score", "test_score"} <= set(
        flat[0]
    )

    curve = as_dicts(
        analytics.query(f"SELECT * FROM score_by_iteration WHERE run_id = '{populated['a']}' ORDER BY iteration")
    )
    assert [r["iteration"] for r in curve] == list(range(N_IT))
    running = float("-inf")
    for r in curve:
        running = max(running, r["best_dev"])
        assert r["best_so_far"] == running and r["n_candidates"] == N_CAND

    best = {r["run_name"]: r for r in as_dicts(analytics.view("best_instructions"))}
    assert set(best) == {"run-a", "run-b"}
    assert best["run-a"]["instruction"] == populated["best_a"] and best["run-a"]["test_score"] == 0.5
    assert best["run-a"]["iteration"] == N_IT - 1 and best["run-b"]["test_score"] is None

    cost = {r["run_name"]: r for r in as_dicts(analytics.view("cost_per_run"))}
    n_evals_a = N_IT * N_CAND + 1  # distinct instructions' dev evaluations + one test evaluation
    assert cost["run-a"]["n_evaluations"] == n_evals_a
    assert cost["run-a"]["calls"] == N_IT * N_CAND * 2 + 2 and cost["run-a"]["cached_calls"] == 0
    assert cost["run-a"]["tokens_in"] == 10 * 5 and cost["run-a"]["tokens_out"] == 2 * 5  # its 5 llm_calls
    assert cost["run-b"]["tokens_in"] == 0 and cost["run-b"]["paid_calls"] == 0  # no call sent, none paid
    assert cost["run-a"]["paid_calls"] == 5 and cost["run-a"]["cost_usd"] == pytest.approx(2.5)
    assert cost["run-b"]["cost_usd"] == 0.0


def test_read_only_queries_are_allowed(analytics: Analytics) -> None:
    for sql in [
        "SELECT count(*) AS n FROM store.runs",
        "WITH x AS (SELECT 1 AS one) SELECT * FROM x;",
        "FROM store.runs SELECT name",
        "DESCRIBE store.candidates",
        "SHOW TABLES",
        "EXPLAIN SELECT * FROM candidates_flat",
        "SELECT 'DROP TABLE runs; ATTACH' AS harmless_literal -- DELETE in a comment",
        'SELECT 1 AS "set"',
    ]:
        columns, _ = analytics.query(sql)
        assert columns, sql


REFUSED = [
    "INSERT INTO store.runs (id) VALUES ('x')",
    "DELETE FROM store.metrics",
    "UPDATE store.runs SET name = 'x'",
    "DROP TABLE store.metrics",
    "CREATE TABLE t AS SELECT 1",
    "ALTER TABLE store.runs ADD COLUMN x INT",
    "ATTACH '/tmp/other.db' AS other",
    "COPY (SELECT 1) TO '/tmp/iz_leak.csv'",
    "COPY store.runs FROM '/etc/passwd'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "EXPORT DATABASE '/tmp/iz_export'",
    "SET enable_external_access = true",
    "PRAGMA version",
    "CALL postgres_execute('store', 'DROP TABLE runs')",
    "SELECT * FROM postgres_scan('dbname=postgres', 'public', 'runs')",
    "SELECT * FROM sqlite_scan('/tmp/x.db', 'runs')",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM \"read_text\"('/etc/passwd')",
    "SELECT * FROM query('SELECT 1')",
    "SELECT 1; DROP TABLE store.runs",
    "",
]


def test_writes_and_escapes_are_refused(analytics: Analytics, populated: dict) -> None:
    before = _fingerprint(populated["url"])
    for sql in REFUSED:
        with pytest.raises(StoreError) as info:
            analytics.query(sql)
        assert "\n" not in str(info.value), sql
        assert str(info.value).startswith(("query refused", "query failed")), (sql, str(info.value))
    analytics.close()
    assert _fingerprint(populated["url"]) == before
    assert not Path("/tmp/iz_leak.csv").exists() and not Path("/tmp/iz_export").exists()


def test_engine_guards_behind_the_parser(analytics: Analytics) -> None:
    """Even SQL the keyword check would let through cannot touch files or the attached store."""
    con = analytics._con
    with pytest.raises(Exception, match="disabled|Permission"):
        con.execute("SELECT * FROM read_csv('/etc/passwd')")
    with pytest.raises(Exception, match="read-only|read only|READ_ONLY|attached in read-only"):
        con.execute("DELETE FROM store.metrics")
    with pytest.raises(Exception, match="lock|configuration"):
        con.execute("SET enable_external_access = true")
    settings = dict(
        con.execute(
            "SELECT name, value FROM duckdb_settings() WHERE name IN "
            "('autoinstall_known_extensions', 'autoload_known_extensions', 'enable_external_access')"
        ).fetchall()
    )
    assert set(settings.values()) == {"false"}


def _fingerprint(url: str) -> str:
    """Content of the store: file bytes for SQLite (after checkpoint), table row counts for PostgreSQL."""
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        return hashlib.sha256(path.read_bytes()).hexdigest() + str(sorted(p.name for p in path.parent.iterdir()))
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            names = conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"))
            return str([(n, conn.execute(text(f'SELECT count(*) FROM "{n}"')).scalar()) for (n,) in names])
    finally:
        engine.dispose()


def test_a_table_has_one_name_in_sql_and_export(analytics: Analytics) -> None:
    """`sql --help` lists `runs`; `SELECT ... FROM runs` used to fail (only `store.runs` worked), while `export`
    took `runs` and refused `store.runs`."""
    for table in analytics.tables():
        assert analytics.query(f'SELECT * FROM "{table}"') == analytics.query(f'SELECT * FROM store."{table}"')
    assert analytics.query("SELECT count(*) FROM runs")[1] == [(2,)]
    for sql in ("DROP VIEW runs", "CREATE OR REPLACE VIEW runs AS SELECT 1", "INSERT INTO runs (id) VALUES ('x')"):
        with pytest.raises(StoreError, match="refused"):
            analytics.query(sql)


def test_export_parquet(analytics: Analytics, tmp_path: Path) -> None:
    n = analytics.export_parquet("candidates_flat", tmp_path / "out" / "flat.parquet")
    table = pq.read_table(tmp_path / "out" / "flat.parquet")
    assert table.num_rows == n == N_IT * N_CAND + 4
    assert "instruction" in table.column_names
    assert analytics.export_parquet("runs", tmp_path / "runs.parquet") == 2
    assert pq.read_table(tmp_path / "runs.parquet").num_rows == 2
    assert analytics.export_parquet("store.runs", tmp_path / "store-runs.parquet") == 2  # the name `sql` uses
    with pytest.raises(StoreError, match="'runs; DROP'"):
        analytics.export_parquet("runs; DROP", tmp_path / "x.parquet")
    with pytest.raises(StoreError, match="'nope'"):
        analytics.export_parquet("nope", tmp_path / "x.parquet")


def test_extension_installed_in_private_directory(analytics: Analytics, populated: dict) -> None:
    kind = "sqlite" if populated["url"].startswith("sqlite") else "postgres"
    assert list(populated["ext_dir"].rglob(f"{kind}*.duckdb_extension"))


def test_open_errors(tmp_path: Path, sqlite_url: str) -> None:
    with pytest.raises(StoreError, match="no store at .*does not exist"):
        Analytics(f"sqlite:///{tmp_path / 'missing.db'}", extension_dir=tmp_path / "ext")
    with pytest.raises(StoreError, match="supports sqlite and postgresql"):
        Analytics("mysql://u@h/db", extension_dir=tmp_path / "ext")
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(StoreError, match="not an instructzero store"):
        Analytics(f"sqlite:///{empty}", extension_dir=tmp_path / "ext")
    RunStore(sqlite_url).close()
    engine = create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000_old'"))
    engine.dispose()
    with pytest.raises(StoreError, match="'0000_old'.*instructzero db upgrade"):
        Analytics(sqlite_url, extension_dir=tmp_path / "ext")


def test_check_read_only_unit() -> None:
    assert check_read_only("  SELECT 1 ;  ") == "SELECT 1"
    with pytest.raises(StoreError, match="single statement"):
        check_read_only("SELECT 1; SELECT 2")
    assert check_read_only("select 1 /* comment; */, 'x;' AS y") == "select 1 /* comment; */, 'x;' AS y"
    with pytest.raises(StoreError, match="ATTACH is not allowed"):
        check_read_only("WITH a AS (SELECT 1) attach 'x'")


def test_format_table() -> None:
    out = format_table(
        ["name", "score", "n"], [("a", 0.5, 3), ("longer name", None, 12), ("x" * 100, 1e-9, 0)], max_width=20
    )
    lines = out.splitlines()
    assert lines[0].split() == ["name", "score", "n"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert "0.5000" in lines[2] and lines[2].endswith(" 3")
    assert "…" in lines[4] and "1e-09" in lines[4]
    assert lines[-1] == "(3 rows)"
    assert format_table(["a"], []).splitlines()[-1] == "(0 rows)"


def _night(
    store: RunStore, name: str, task: str, dev: dict[str, float], test: float, *, model: str, status: str = "completed"
) -> str:
    """One member run of a nightly suite: one iteration of two candidates, the best one's test score, its status."""
    from instructzero.storage.records import Dataset

    run = store.create_run(
        name=name,
        task=task,
        config={},
        seed=0,
        versions={},
        projection_hash=None,
        splits={"dev": ["d0"], "test": ["t0", "t1"]},
        datasets=[Dataset(task, "dev", "h" * 64, ("d0",))],
    )
    best = f"{name}: best"
    store.record_iteration(
        run.id,
        0,
        [make_candidate(0, f"{name}: worse", {"d0": 0.0}, model=model), make_candidate(1, best, dev, model=model)],
    )
    test_evaluation = make_evaluation({"t0": test, "t1": test}, instruction=best, split="test", model=model)
    store.record_test_evaluation(run.id, test_evaluation)
    store.set_run_status(run.id, status)
    return run.id


def test_nightly_results_show_a_regression_in_one_query(sqlite_url: str, duckdb_ext_dir: Path) -> None:
    """Two nights of `benchmark-nightly`: sentiment tests worse on the second (a new black box), sum better; a
    failed night, an ad-hoc suite and a plain run are not nights. One query names the regression."""
    with RunStore(sqlite_url) as store:
        _night(store, "suite-20260301-sentiment-seed0", "sentiment", {"d0": 1.0}, 0.9, model="qwen-0.5b")
        _night(store, "suite-20260301-sum-seed0", "sum", {"d0": 0.5}, 0.25, model="qwen-0.5b")
        second = _night(store, "suite-20260302-sentiment-seed0", "sentiment", {"d0": 1.0}, 0.5, model="smaller-bb")
        _night(store, "suite-20260302-sum-seed0", "sum", {"d0": 1.0}, 0.75, model="smaller-bb")
        _night(store, "suite-20260303-sentiment-seed0", "sentiment", {"d0": 1.0}, 0.0, model="x", status="failed")
        _night(store, "adhoc-1-sentiment-seed0", "sentiment", {"d0": 1.0}, 0.0, model="x")
        _night(store, "sentiment-seed0-1796170044", "sentiment", {"d0": 1.0}, 0.0, model="x")

    with Analytics(sqlite_url, extension_dir=duckdb_ext_dir) as an:
        regressions = as_dicts(an.query("SELECT * FROM nightly_results WHERE regressed"))
        nights = as_dicts(an.view("nightly_results"))
    assert [(str(r["night"]), r["task"], r["test_score"], r["regressed"]) for r in nights] == [
        ("2026-03-01", "sentiment", 0.9, False),
        ("2026-03-02", "sentiment", 0.5, True),
        ("2026-03-01", "sum", 0.25, False),
        ("2026-03-02", "sum", 0.75, False),
    ]
    [row] = regressions
    assert (row["run_id"], row["task"], row["seed"], str(row["previous_night"])) == (
        second,
        "sentiment",
        0,
        "2026-03-01",
    )
    assert (row["instruction"], row["previous_instruction"]) == (
        "suite-20260302-sentiment-seed0: best",
        "suite-20260301-sentiment-seed0: best",
    )
    assert (row["black_box_model"], row["previous_black_box_model"]) == ("smaller-bb", "qwen-0.5b")
    assert row["previous_test_score"] == 0.9 and row["test_change"] == pytest.approx(-0.4)


def test_best_instructions_follows_the_runs_own_objective(store_url: str, duckdb_ext_dir: Path) -> None:
    """With `--length-penalty` the reported instruction is the best by dev accuracy less the penalty per token: the
    SQL view, the Python rule (`reported_candidate`, what the flow, suite, benchmarks and `runs` use) and the
    candidate table name the same one, on both stores; a run without a penalty keeps the plain dev ranking."""
    from instructzero.storage.records import Dataset
    from instructzero.tasks.optimisation.selection import reported_candidate
    from instructzero.tasks.search_view import candidate_rows

    picks = {}
    with RunStore(store_url) as store:
        for name, penalty in (("penalised", 0.05), ("plain", 0.0)):
            run = store.create_run(
                name=name,
                task="sum",
                config={"bo": {"length_penalty": penalty}},
                seed=0,
                versions={},
                projection_hash=None,
                splits={"dev": ["d0", "d1"]},
                datasets=[Dataset("sum", "dev", "h" * 64, ("d0", "d1"))],
            )
            long = make_candidate(0, "a long and very accurate instruction", {"d0": 1.0, "d1": 1.0}, iteration=0)
            short = make_candidate(1, "add", {"d0": 1.0, "d1": 0.0}, iteration=0)
            store.record_iteration(run.id, 0, [long, short])
            store.record_metrics(run.id, {"instruction_tokens.0": 20.0, "instruction_tokens.1": 1.0}, step=0)
            best = reported_candidate(store, run)
            rows = candidate_rows(store.load_candidates(run.id), length_penalty=penalty, tokens={(0, 0): 20, (0, 1): 1})
            assert best is not None and rows[0]["instruction"] == best.instruction
            picks[name] = best.instruction
    assert picks == {"penalised": "add", "plain": "a long and very accurate instruction"}  # 1 - 1.0 < 0.5 - 0.05
    with Analytics(store_url, extension_dir=duckdb_ext_dir) as an:
        _, rows = an.query("SELECT run_name, instruction FROM best_instructions ORDER BY run_name")
    assert dict(rows) == picks
