"""Reliability on real parts, CI-sized: concurrent writers, a misbehaving or dead black box, kill -9 anywhere in an
iteration, hostile CLI input, and the API key never leaking.

Runs use a tiny real generator (`tiny_generator_dir`) and the rule-based black box of the local OpenAI-compatible
server, so a whole flow takes seconds. Counts are printed (run with -s to see them). `INSTRUCTZERO_CRASH_TRIALS`
(default 3) sets how many kill -9 trials run, `INSTRUCTZERO_CRASH_SEED` makes their timing reproducible.
"""

from __future__ import annotations

import contextvars
import hashlib
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from instructzero.flows.params import build_config, config_from_record
from instructzero.servers.faults import FaultConfig
from instructzero.storage.repository import RunStore
from instructzero.storage.session import downgrade_store, head_revision, upgrade_store
from tests.plugins.prefect import store_integrity_problems, store_rows, tiny_run_args, tiny_run_overrides
from tests.plugins.store import SoftPromptVector

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------------ helpers


def _subprocess_env(cli_env: dict[str, str], api_url: str, results_dir: Path) -> dict[str, str]:
    """CLI subprocess env: the session's Prefect API (no ephemeral server per process), own result storage."""
    env = dict(cli_env)
    env.update(
        PREFECT_API_URL=api_url,
        PREFECT_LOCAL_STORAGE_PATH=str(results_dir),
        PYTHONPATH=str(REPO),
        INSTRUCTZERO_BO__NUM_RESTARTS="2",
        INSTRUCTZERO_BO__RAW_SAMPLES="16",
        PREFECT_LOGGING_LEVEL="INFO",
    )
    return env


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "instructzero.flows.cli", *args],
        env=env,
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _candidates(store_url: str, run_id: str) -> list[tuple]:
    return [
        (
            c.iteration,
            c.index,
            c.phase,
            c.instruction,
            c.dev_score,
            c.test_score,
            SoftPromptVector(c.z or ()),
            tuple(sorted(c.dev_example_scores.items())),
        )
        for c in RunStore(store_url).load_candidates(run_id)
    ]


def _in_process_run(overrides: dict, *, resume_run_id: str | None = None):
    from instructzero.flows.instruction_search import instructzero_flow

    return instructzero_flow(build_config(**overrides), resume_run_id=resume_run_id)


# ------------------------------------------------------------------------------------------------ concurrency
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_two_runs_writing_one_store_at_once_lose_and_mix_nothing(
    backend, request, prefect_harness, prefect_api_url, cli_env, make_server, tiny_generator_dir, tmp_path
) -> None:
    store_url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "postgres_db_url")
    server = make_server("rule", model_name="rule-based", faults=FaultConfig(latency_s=0.02), max_batch=4)
    if backend == "sqlite":
        # Two processes (SQLite locking is per file, across processes) start on a fresh store at the same moment:
        # store creation and migration race too.
        env = _subprocess_env(cli_env, prefect_api_url, tmp_path / "results")
        procs = {
            task: _spawn(
                [
                    "run",
                    *tiny_run_args(
                        store_url, server.base_url, tiny_generator_dir, task=task, name=f"conc-{task}", iterations=2
                    ),
                ],
                env,
            )
            for task in ("sum", "diff")
        }
        outputs = {task: p.communicate(timeout=300)[0] for task, p in procs.items()}
        for task, p in procs.items():
            assert p.returncode == 0, outputs[task][-3000:]
    else:  # PostgreSQL: two flow runs at once in two threads of this process (cheaper; the server does locking)
        request.getfixturevalue("isolated_results")
        RunStore(store_url).close()
        errors: list[BaseException] = []

        def run(task: str) -> None:
            overrides = tiny_run_overrides(store_url, server.base_url, tiny_generator_dir, task=task, iterations=2)
            try:
                _in_process_run({**overrides, "name": f"conc-{task}"})
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)

        threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(run, task)) for task in ("sum", "diff")
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert errors == []

    store = RunStore(store_url)
    runs = {r.name: r for r in store.list_runs()}
    assert set(runs) == {"conc-sum", "conc-diff"}
    for task in ("sum", "diff"):
        run = runs[f"conc-{task}"]
        assert run.status == "completed" and run.task == task
        cands = store.load_candidates(run.id)
        assert [(c.iteration, c.index) for c in cands] == [(0, 0), (0, 1), (1, 0), (2, 0)]
        assert all(len(c.dev_example_scores) == 3 for c in cands)
        # Every example scored belongs to this run's own dev split: rows of the other run never leak in.
        assert all(set(c.dev_example_scores) == set(run.splits["dev"]) for c in cands)
    assert store_integrity_problems(store_url) == {}
    n_calls = store_rows(store_url, "SELECT count(*) FROM llm_calls")[0][0]
    stats = server.stats()
    print(
        f"\nconcurrency/{backend}: 2 runs x 4 candidates, {n_calls} llm_calls rows, "
        f"{stats['completions']} completions served, max in flight {stats['max_in_flight']}"
    )
    assert n_calls == stats["completions"]  # each paid answer stored exactly once


# ------------------------------------------------------------------------------------------------ faults
def test_random_faults_are_retried_bounded_and_counted(
    prefect_harness, isolated_results, make_server, tiny_generator_dir, sqlite_url
) -> None:
    faults = FaultConfig(
        rate_429=0.12,
        rate_500=0.12,
        rate_timeout=0.04,
        rate_malformed=0.06,
        rate_empty=0.06,
        hang_s=3.0,
        seed=7,
        script=("429", "ok", "500", "timeout", "ok", "malformed", "empty"),
    )
    server = make_server("rule", model_name="rule-based", faults=faults)
    max_retries = 8
    overrides = tiny_run_overrides(
        sqlite_url, server.base_url, tiny_generator_dir, iterations=2, max_retries=max_retries, timeout_s=1.0
    )
    summary = _in_process_run(overrides)

    store = RunStore(sqlite_url)
    assert store.get_run(summary.run_id).status == "completed"
    stats = server.stats()
    injected = sum(stats["faults"].values())
    call_retries, max_call_retries, n_calls = store_rows(
        sqlite_url, "SELECT sum(retries), max(retries), count(*) FROM llm_calls"
    )[0]
    print(
        f"\nfaults: injected {dict(stats['faults'])} = {injected} over {stats['completion_requests']} requests; "
        f"{n_calls} answers stored; retries in the ledger: {call_retries} (max {max_call_retries} per call)"
    )
    assert set(stats["faults"]) == {"429", "500", "timeout", "malformed", "empty"}
    assert call_retries == injected  # every injected fault cost exactly one counted retry
    assert max_call_retries <= max_retries
    assert stats["completions"] - stats["faults"]["empty"] == n_calls  # the server counts empty bodies as served
    assert store_integrity_problems(sqlite_url) == {}


def test_dead_endpoint_fails_clearly_and_the_run_resumes_later(
    prefect_harness, isolated_results, make_server, tiny_generator_dir, sqlite_url
) -> None:
    from instructzero.tasks.errors import BlackBoxError

    server = make_server("rule", model_name="rule-based", faults=FaultConfig(latency_s=0.3))
    port = int(server.base_url.rsplit(":", 1)[1].split("/")[0])
    overrides = tiny_run_overrides(
        sqlite_url, server.base_url, tiny_generator_dir, iterations=2, max_retries=2, timeout_s=2.0, n_init=2
    )
    overrides["name"] = "dies"
    store = RunStore(sqlite_url)

    def stop_after_first_iteration() -> None:  # the endpoint dies mid-run, right after iteration 0 is stored
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            run = store.find_run_by_name("dies")
            if run is not None and store.completed_iterations(run.id):
                server.stop()
                return
            time.sleep(0.01)

    killer = threading.Thread(target=stop_after_first_iteration, daemon=True)
    killer.start()
    started = time.monotonic()
    with pytest.raises(BlackBoxError, match=r"127\.0\.0\.1:\d+/v1 .*failed after 3 attempts.*connection error"):
        _in_process_run(overrides)
    failed_after = time.monotonic() - started
    killer.join(timeout=5)

    run = store.find_run_by_name("dies")
    assert run.status == "failed" and run.error.startswith("BlackBoxError: black-box endpoint")
    # The run failed at its first call that needed the dead endpoint (an evaluation served from Prefect's task
    # cache needs none): whatever it recorded before is intact.
    kept_iterations = store.completed_iterations(run.id)
    assert kept_iterations[:1] == [0] and kept_iterations == list(range(len(kept_iterations)))
    kept = _candidates(sqlite_url, run.id)
    assert store_integrity_problems(sqlite_url) == {}

    # The run's rows cross the schema change of 0004 (a store of the version before, upgraded) and still resume.
    store.close()
    assert downgrade_store(sqlite_url, "0003_one_retry_count") == "0003_one_retry_count"
    assert upgrade_store(sqlite_url) == head_revision()
    store = RunStore(sqlite_url)
    assert _candidates(sqlite_url, run.id) == kept

    revived = make_server("rule", model_name="rule-based", port=port)  # the same URL is back
    assert revived.base_url == server.base_url
    summary = _in_process_run(overrides, resume_run_id=run.id)
    assert store.get_run(run.id).status == "completed"
    assert [c[:5] for c in _candidates(sqlite_url, run.id)[: len(kept)]] == [c[:5] for c in kept]
    assert store.completed_iterations(run.id) == [0, 1, 2]
    assert summary.n_candidates == 4 and store_integrity_problems(sqlite_url) == {}
    print(
        f"\ndead endpoint: run failed {failed_after:.1f}s after start with iterations {kept_iterations} kept "
        f"({len(kept)} candidates); resumed to "
        f"{summary.n_candidates} candidates"
    )


# ------------------------------------------------------------------------------------------------ crashes
PHASES = ("generation", "evaluation", "store write")


class _Lines:
    """Reads a subprocess's output on a thread; `wait_for(text, nth)` blocks until the nth line containing it."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            self._q.put(line)
        self._q.put(None)

    def wait_for(self, text: str, nth: int, timeout_s: float = 240) -> bool:
        seen = sum(text in ln for ln in self.lines)
        deadline = time.monotonic() + timeout_s
        while seen < nth:
            try:
                line = self._q.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                return False
            if line is None:
                return False
            self.lines.append(line)
            seen += text in line
        return True

    def drain(self) -> str:
        self._thread.join(timeout=10)
        while not self._q.empty():
            line = self._q.get()
            if line is not None:
                self.lines.append(line)
        return "".join(self.lines)


def _kill_during(proc: subprocess.Popen, lines: _Lines, phase: str, iteration: int, server, rng: random.Random) -> str:
    """Send SIGKILL at `phase` of `iteration`; returns what was observed just before the kill."""
    if phase == "generation":  # the proposal is done; the generate task starts next (tiny model: ~0.1 s)
        assert lines.wait_for("Task run 'propose-prompt", iteration + 1), lines.drain()[-3000:]
        observed = "proposal finished"
    elif phase == "evaluation":  # requests are in flight at the (slowed) black box
        assert lines.wait_for("Task run 'generate-instruction", iteration + 1), lines.drain()[-3000:]
        deadline = time.monotonic() + 60
        while server.stats()["in_flight"] == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        observed = f"{server.stats()['in_flight']} requests in flight"
    else:  # the evaluation just finished: the record-iteration transaction follows within tens of ms
        # iteration 0 evaluates its 2 initial instructions, later iterations 1 each
        assert lines.wait_for("Task run 'zero-shot-evaluate", iteration + 2), lines.drain()[-3000:]
        delay = rng.uniform(0.0, 0.08)
        time.sleep(delay)
        observed = f"evaluation finished + {1000 * delay:.0f} ms"
    os.kill(proc.pid, signal.SIGKILL)
    return observed


def test_kill_9_anywhere_in_an_iteration_then_resume_matches_an_uninterrupted_run(
    prefect_harness, prefect_api_url, cli_env, make_server, tiny_generator_dir, tmp_path
) -> None:
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    trials = int(os.environ.get("INSTRUCTZERO_CRASH_TRIALS", "3"))
    seed = int(os.environ.get("INSTRUCTZERO_CRASH_SEED", str(random.SystemRandom().randrange(10_000))))
    rng = random.Random(seed)
    server = make_server("rule", model_name="rule-based", faults=FaultConfig(latency_s=0.15))

    reference_url = f"sqlite:///{tmp_path / 'reference.db'}"
    reference_overrides = tiny_run_overrides(reference_url, server.base_url, tiny_generator_dir, iterations=2)
    reference_overrides["name"] = "crash"
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: tmp_path / "reference-results"}):
        reference = _in_process_run(reference_overrides)
    expected = _candidates(reference_url, reference.run_id)
    expected_calls = store_rows(reference_url, "SELECT count(*) FROM llm_calls")[0][0]
    assert len(expected) == 4

    report = []
    for trial in range(trials):
        phase = PHASES[trial % len(PHASES)]
        # Only iteration 0 surely pays the black box (later ones may reuse cached answers), so "evaluation" aims
        # there; generation and the store write are aimed at a random iteration.
        iteration = 0 if phase == "evaluation" else rng.choice([0, 1, 2])
        store_url = f"sqlite:///{tmp_path / f'crash-{trial}.db'}"
        results_dir = tmp_path / f"results-{trial}"
        proc = _spawn(
            ["run", *tiny_run_args(store_url, server.base_url, tiny_generator_dir, name="crash", iterations=2)],
            _subprocess_env(cli_env, prefect_api_url, results_dir),
        )
        lines = _Lines(proc)
        observed = _kill_during(proc, lines, phase, iteration, server, rng)
        proc.wait(timeout=30)
        lines.drain()
        assert proc.returncode == -signal.SIGKILL

        store = RunStore(store_url)
        run = store.find_run_by_name("crash")
        assert run is not None and run.status == "running"  # kill -9 left no chance to mark it
        done_at_kill = store.completed_iterations(run.id)
        assert store_integrity_problems(store_url) == {}
        partial = _candidates(store_url, run.id)  # what was recorded is exactly the reference's prefix
        assert [c[:5] + c[6:] for c in partial] == [c[:5] + c[6:] for c in expected if c[0] in done_at_kill]
        calls_at_kill = store_rows(store_url, "SELECT count(*) FROM llm_calls")[0][0]

        config = config_from_record(run.config, store_url=store_url)
        with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: results_dir}):  # what the victim persisted
            from instructzero.flows.instruction_search import instructzero_flow

            summary = instructzero_flow(config, resume_run_id=run.id)
        got = _candidates(store_url, run.id)
        assert [c[:5] + c[6:] for c in got] == [c[:5] + c[6:] for c in expected]
        assert [c[5] for c in got] == [c[5] for c in expected]  # the same test evaluation
        assert (summary.best_instruction, summary.dev_score, summary.test_score) == (
            reference.best_instruction,
            reference.dev_score,
            reference.test_score,
        )
        assert store.get_run(run.id).status == "completed"
        assert store_integrity_problems(store_url) == {}
        calls = store_rows(store_url, "SELECT count(*) FROM llm_calls")[0][0]
        assert calls == expected_calls
        landed = "after" if iteration in done_at_kill else "before"
        report.append(
            f"  trial {trial}: kill aimed at {phase} of iteration {iteration} ({observed}), landed {landed} "
            f"its record; store then held iterations {done_at_kill} and {calls_at_kill} paid answers; "
            f"resumed -> identical "
            f"{len(got)} candidates, {calls} llm_calls (reference {expected_calls})"
        )
    print(f"\ncrash trials (INSTRUCTZERO_CRASH_SEED={seed}):\n" + "\n".join(report))


# ------------------------------------------------------------------------------------------------ bad input
def _files(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _cli_error(capsys, argv: list[str]) -> str:
    from instructzero.flows.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code not in (0, None), f"{argv} succeeded"
    return f"{code}|{err}"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--task", "{malformed}/broken.jsonl"], "broken.jsonl"),
        (["--task", "{malformed}/missing_output.jsonl"], "missing_output.jsonl"),
        (["--task", "{malformed}/missing_column.csv"], "missing_column.csv"),
        (["--task", "empty", "--data-dir", "{malformed}/empty"], "empty"),
        (["--task", "broken", "--data-dir", "{malformed}/broken_json"], "broken"),
        (["--task", "{malformed}/nothing-here.jsonl"], "nothing-here.jsonl"),
        (["--task", "no_such_task_anywhere"], "no_such_task_anywhere"),
        (["--task", "{own}/one_input.jsonl"], "one_input"),  # 3 rows, 1 distinct input: no dev split
        (["--task", "sum", "--store", "notadb://nowhere"], "notadb"),
        (["--task", "sum", "--store", "postgresql+psycopg://u@127.0.0.1:1/db"], "127.0.0.1"),
        (["--task", "sum", "--iterations", "-1"], "bo.iterations"),
        (["--task", "sum", "--iterations", "three"], "--iterations"),
        (["--task", "sum", "--black-box-url", "ftp://example.invalid"], "ftp://example.invalid"),
        (["--task", "sum", "--black-box-url", "http://127.0.0.1:9/v1"], "127.0.0.1:9"),
    ],
)
def test_bad_cli_input_is_one_clear_line_and_writes_nothing(
    argv, expected, capsys, malformed_data_dir, tmp_path_factory, tmp_path
) -> None:
    own = tmp_path_factory.mktemp("own-task")
    (own / "one_input.jsonl").write_text(
        '{"input": "a", "output": "A"}\n{"input": " a", "output": "A"}\n{"input": "A ", "output": "A"}\n'
    )
    store = tmp_path / "untouched.db"
    argv = [a.replace("{malformed}", str(malformed_data_dir)).replace("{own}", str(own)) for a in argv]
    if "--store" not in argv:
        argv += ["--store", f"sqlite:///{store}"]
    result = _cli_error(capsys, ["run", *argv])
    code, _, err = result.partition("|")
    print(f"\n{argv[1]}: exit {code}: {err.splitlines()[-1]}")
    assert int(code) == 2
    last = err.splitlines()[-1]
    assert last.startswith(("error: ", "instructzero run: error: ")), err
    assert expected in last, err
    assert "Traceback" not in err
    if not last.startswith("instructzero run: error"):  # argparse adds a usage line; our errors are one line
        assert len(err.splitlines()) == 1, err
    assert not store.exists() and list(tmp_path.iterdir()) == []


def test_non_numeric_setting_from_the_environment_is_one_line(capsys, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("INSTRUCTZERO_BO__ITERATIONS", "lots")
    code, _, err = _cli_error(capsys, ["run", "--task", "sum", "--store", f"sqlite:///{tmp_path}/s.db"]).partition("|")
    assert int(code) == 2 and err.count("\n") == 0 and "bo.iterations" in err and "'lots'" in err, err
    assert list(tmp_path.iterdir()) == []


HOSTILE_SQL = [
    "DELETE FROM runs",
    "DROP TABLE runs",
    "UPDATE runs SET status = 'x'",
    "INSERT INTO metrics VALUES (1, 'r', 'k', 0, 0.0)",
    "CREATE TABLE evil AS SELECT 1",
    "ATTACH '{tmp}/other.db' AS other",
    "COPY runs TO '{tmp}/leak.csv'",
    "COPY (SELECT * FROM runs) TO '{tmp}/leak.parquet' (FORMAT parquet)",
    "SELECT 1; DELETE FROM runs",
    "SELECT * FROM read_csv('{tmp}/other.db')",
    "SELECT * FROM read_text('/etc/passwd')",
    "INSTALL httpfs",
    "SET enable_external_access = true",
    "PRAGMA journal_mode = DELETE",
    "CALL sqlite_attach('{tmp}/other.db')",
    "EXPORT DATABASE '{tmp}/dump'",
    "WITH x AS (DELETE FROM runs RETURNING *) SELECT * FROM x",
]


def test_hostile_sql_is_refused_and_the_store_is_unchanged(capsys, tmp_path) -> None:
    from tests.plugins.store import populate

    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite:///{data / 'store.db'}"
    with RunStore(url) as store:
        populate(store)
    (tmp_path / "other.db").write_bytes(b"")
    before = _files(tmp_path)
    refused = []
    for sql in HOSTILE_SQL:
        query = sql.replace("{tmp}", str(tmp_path))
        code, _, err = _cli_error(capsys, ["sql", query, "--store", url]).partition("|")
        assert int(code) == 2 and err.startswith("error: ") and err.count("\n") == 0, (query, err)
        refused.append(f"  {sql[:50]!r:54} -> {err[:90]}")
    print("\nhostile SQL refused:\n" + "\n".join(refused))
    after = _files(tmp_path)
    # Reading a WAL-mode SQLite file leaves the -shm index and an empty -wal beside it: not a write of data.
    sidecars = {k: v for k, v in after.items() if k not in before and k.endswith(("-shm", "-wal"))}
    assert all(v == hashlib.sha256(b"").hexdigest() for k, v in sidecars.items() if k.endswith("-wal")), sidecars
    assert {k: v for k, v in after.items() if k not in sidecars} == before  # nothing written, nothing created
    from instructzero.flows.cli import main

    capsys.readouterr()
    assert main(["sql", "SELECT count(*) AS n FROM store.runs", "--store", url, "--format", "csv"]) == 0
    assert capsys.readouterr().out.split() == ["n", "1"]


# ------------------------------------------------------------------------------------------------ secrets
def test_api_key_never_reaches_store_logs_or_artifacts(
    prefect_harness, isolated_results, make_server, tiny_generator_dir, sqlite_url, monkeypatch, capfd, caplog
) -> None:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, LogFilter, LogFilterFlowRunId

    secret = "sk-test-SECRET-" + hashlib.sha256(str(time.time()).encode()).hexdigest()[:24]
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    # This server demands the key: the run can only succeed if the key is really sent with every request.
    server = make_server("rule", model_name="rule-based", api_key=secret)
    caplog.set_level("DEBUG")
    summary = _in_process_run(tiny_run_overrides(sqlite_url, server.base_url, tiny_generator_dir))
    assert RunStore(sqlite_url).get_run(summary.run_id).status == "completed"

    leaks = []
    tables = [r[0] for r in store_rows(sqlite_url, "SELECT name FROM sqlite_master WHERE type = 'table'")]
    n_cells = 0
    for table in tables:
        for row in store_rows(sqlite_url, f'SELECT * FROM "{table}"'):
            n_cells += len(row)
            leaks += [f"store {table}" for cell in row if secret in str(cell)]
    db = Path(sqlite_url.removeprefix("sqlite:///"))
    for path in db.parent.glob(db.name + "*"):
        leaks += [f"file {path.name}"] if secret.encode() in path.read_bytes() else []
    out, err = capfd.readouterr()
    leaks += ["stdout"] if secret in out else []
    leaks += ["stderr"] if secret in err else []
    leaks += ["python logging"] if secret in caplog.text else []

    async def prefect_records() -> tuple[int, int, list[str]]:
        async with get_client() as client:
            run = (await client.read_flow_runs(limit=1, sort="START_TIME_DESC"))[0]
            logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
            artifacts = await client.read_artifacts(flow_run_filter=FlowRunFilter(id={"any_": [run.id]}))
            found = [f"prefect log {log.id}" for log in logs if secret in log.message]
            found += [f"artifact {a.key}" for a in artifacts if secret in str(a.data) + str(a.description)]
            found += ["flow run parameters"] if secret in str(run.parameters) else []
            return len(logs), len(artifacts), found

    n_logs, n_artifacts, found = asyncio.run(prefect_records())
    leaks += found
    for results in isolated_results.rglob("*"):
        if results.is_file() and secret.encode() in results.read_bytes():
            leaks.append(f"persisted result {results.name}")
    print(
        f"\nsecrets: searched {len(tables)} tables ({n_cells} cells), the db files, stdout/stderr, "
        f"{n_logs} Prefect logs, {n_artifacts} artifacts, persisted results: leaks {leaks}"
    )
    assert n_logs > 0 and n_artifacts > 0
    assert leaks == []
