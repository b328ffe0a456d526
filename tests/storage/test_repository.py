"""RunStore against real databases: SQLite files (always) and PostgreSQL (when a server can be had)."""

from __future__ import annotations

import math
import multiprocessing as mp
import threading
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from instructzero.storage.errors import RunNotFoundError, StoreError
from instructzero.storage.records import BlackBoxCall, Candidate, Dataset, Run, instruction_hash
from instructzero.storage.repository import RunStore
from instructzero.storage.session import normalize_url
from tests.plugins.store import make_candidate, make_evaluation, populate

TABLES = ("runs", "datasets", "instructions", "candidates", "evaluations", "example_scores", "llm_calls", "metrics")


def counts(url: str) -> dict[str, int]:
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}
    finally:
        engine.dispose()


@pytest.fixture
def store(store_url: str):
    with RunStore(store_url) as s:
        yield s


def new_run(store: RunStore, name: str = "run") -> Run:
    return store.create_run(
        name=name,
        task="sum",
        config={"lr": 0.1, "nested": {"k": [1, 2]}},
        seed=7,
        versions={"torch": "2.13.0"},
        projection_hash="a" * 64,
        splits={"dev": ["d0", "d1"], "test": ["t0"]},
        datasets=[Dataset("sum", "dev", "c" * 64, ("d0", "d1"))],
    )


EXACT_Z = (0.1, 1.0 / 3.0, -math.pi, 1e-300, -2.5e-17, math.nextafter(1.0, 2.0), 5e-324, -0.0, 123456789.123456789)


def test_create_record_load_round_trip(store: RunStore) -> None:
    run = new_run(store)
    got = store.get_run(run.id)
    assert got == run
    assert got.status == "running" and got.finished_at is None and got.started_at.tzinfo is not None
    assert got.config == {"lr": 0.1, "nested": {"k": [1, 2]}} and got.splits["test"] == ["t0"]
    assert store.load_datasets(run.id)[0].example_ids == ("d0", "d1")

    store.record_iteration(
        run.id,
        0,
        [
            make_candidate(
                0, "Add the numbers.", {"d0": 1.0, "d1": 0.0}, phase="init", z=EXACT_Z, acquisition_value=None
            ),
            make_candidate(1, "Sum them.", {"d0": 1.0, "d1": 1.0}, phase="init", z=EXACT_Z[::-1]),
        ],
    )
    store.record_iteration(
        run.id,
        1,
        [
            make_candidate(
                0, "Baseline", {"d0": 0.0, "d1": 0.0}, phase="baseline", z=None, acquisition_value=None, iteration=1
            ),
        ],
    )
    cands = store.load_candidates(run.id)
    assert [(c.iteration, c.index) for c in cands] == [(0, 0), (0, 1), (1, 0)]
    first = cands[0]
    assert isinstance(first, Candidate) and first.dev is None  # read back: its scores, not its whole evaluation
    assert first.z == EXACT_Z and all(a.hex() == b.hex() for a, b in zip(first.z, EXACT_Z, strict=True))
    assert cands[1].z == EXACT_Z[::-1] and cands[2].z is None
    assert first.instruction == "Add the numbers." and first.instruction_hash == instruction_hash("Add the numbers.")
    assert first.dev_score == 0.5 and first.dev_example_scores == {"d0": 1.0, "d1": 0.0}
    assert first.acquisition_value is None and cands[1].acquisition_value == 0.5
    assert first.test_score is None and cands[2].phase == "baseline"
    assert store.completed_iterations(run.id) == [0, 1]

    store.record_test_evaluation(run.id, make_evaluation({"t0": 1.0}, instruction="Sum them.", split="test"))
    assert [c.test_score for c in store.load_candidates(run.id)] == [None, 1.0, None]
    # a second test evaluation with the same model replaces the first
    store.record_test_evaluation(run.id, make_evaluation({"t0": 0.0}, instruction="Sum them.", split="test"))
    assert store.load_candidates(run.id)[1].test_score == 0.0
    tests = store.load_evaluations(run.id, split="test")
    assert len(tests) == 1 and tests[0].examples[0].score == 0.0
    # a baseline that is not a candidate gets its own instruction row
    manual = make_evaluation({"t0": 1.0}, instruction="Manual instruction", split=None)  # as the black box gives it
    store.record_test_evaluation(run.id, manual)
    assert len(store.load_evaluations(run.id, split="test")) == 2
    # one record both ways: what was recorded is read back, with the store's split and time filled in
    [back] = [e for e in store.load_evaluations(run.id, "test") if e.instruction == "Manual instruction"]
    assert back.split == "test" and back.created_at is not None and back.n_examples == 1
    assert replace(back, split=None, created_at=None) == manual

    store.set_run_status(run.id, "completed", prefect_flow_run_id="flow-1")
    done = store.get_run(run.id)
    assert done.status == "completed" and done.finished_at is not None and done.prefect_flow_run_id == "flow-1"
    store.set_run_status(run.id, "failed", error="boom")
    assert store.get_run(run.id).error == "boom"


def test_find_and_list_runs(store: RunStore) -> None:
    a = new_run(store, "same")
    b = new_run(store, "same")
    new_run(store, "other")
    assert store.find_run_by_name("same").id == b.id != a.id  # newest
    assert store.find_run_by_name("missing") is None
    assert [r.id for r in store.list_runs()][:2] == [a.id, b.id]
    with pytest.raises(RunNotFoundError, match="'nope'"):
        store.get_run("nope")
    with pytest.raises(RunNotFoundError):
        store.record_iteration("nope", 0, [make_candidate(0, "x", {"d0": 1.0})])
    with pytest.raises(StoreError, match="'paused'"):
        store.set_run_status(a.id, "paused")  # type: ignore[arg-type]


def test_iteration_is_atomic(store: RunStore, store_url: str) -> None:
    run = new_run(store)
    store.record_iteration(run.id, 0, [make_candidate(0, "ok", {"d0": 1.0})])
    before = counts(store_url)
    bad_dev = make_evaluation({"d0": 1.0})
    bad_dev = replace(bad_dev, examples=bad_dev.examples * 2)  # duplicate example id: violates a unique constraint
    good = [make_candidate(i, f"fresh {i}", {"d0": 0.5, "d1": 0.5}, iteration=1) for i in range(3)]
    bad = replace(make_candidate(3, "fails on write", {"d0": 1.0}, iteration=1), dev=bad_dev)
    with pytest.raises(StoreError, match="record_iteration") as info:
        store.record_iteration(run.id, 1, [*good, bad])
    assert "\n" not in str(info.value)
    assert counts(store_url) == before
    assert store.completed_iterations(run.id) == [0]
    store.record_iteration(run.id, 1, good)  # the same iteration written correctly afterwards
    assert store.completed_iterations(run.id) == [0, 1]


def test_replay_is_idempotent_and_conflicts_are_refused(store: RunStore, store_url: str) -> None:
    run = new_run(store)
    cands = [make_candidate(i, f"instr {i}", {"d0": i / 2}, z=(i / 3.0, 0.1)) for i in range(2)]
    store.record_iteration(run.id, 0, cands)
    before = counts(store_url)
    store.record_iteration(run.id, 0, list(reversed(cands)))  # exact replay (any order): no-op
    # a replay served from the cache has different cost bookkeeping but is the same iteration
    cached = [replace(c, dev=replace(c.dev, n_cached=c.dev.n_calls, latency_s=0.0)) for c in cands]
    store.record_iteration(run.id, 0, cached)
    assert counts(store_url) == before
    conflicts = [
        [cands[0]],  # fewer candidates
        [cands[0], replace(cands[1], instruction="other text")],
        [cands[0], replace(cands[1], z=(1 / 3.0, 0.1 + 1e-16))],
        [cands[0], replace(cands[1], dev=make_evaluation({"d0": 0.25}))],
        [cands[0], replace(cands[1], phase="init")],
    ]
    for conflict in conflicts:
        with pytest.raises(StoreError, match="iteration 0 of run .* already recorded with different"):
            store.record_iteration(run.id, 0, conflict)
    assert counts(store_url) == before


def test_identical_instructions_share_one_row(store: RunStore, store_url: str) -> None:
    run = new_run(store)
    store.record_iteration(
        run.id,
        0,
        [
            make_candidate(0, "Same.", {"d0": 1.0, "d1": 0.0}, z=(0.1,)),
            make_candidate(1, "Same.", {"d0": 1.0, "d1": 0.0}, z=(0.2,)),
        ],
    )
    store.record_iteration(
        run.id,
        1,
        [
            make_candidate(0, "Same.", {"d0": 1.0, "d1": 0.0}, z=(0.3,), iteration=1),
            make_candidate(1, "Different.", {"d0": 0.0, "d1": 0.0}, z=(0.4,), iteration=1),
        ],
    )
    c = counts(store_url)
    assert (c["instructions"], c["evaluations"], c["candidates"], c["example_scores"]) == (2, 2, 4, 4)
    cands = store.load_candidates(run.id)
    assert [x.instruction for x in cands] == ["Same.", "Same.", "Same.", "Different."]
    assert all(x.dev_example_scores == {"d0": 1.0, "d1": 0.0} for x in cands[:3])
    assert len({x.instruction_hash for x in cands}) == 2


def test_a_phase_no_strategy_of_ours_writes_is_stored(store: RunStore, store_url: str) -> None:
    """The store knows no strategy names: a new strategy's phases (any short name, up to 32 characters, as long
    as a built-in one was not) are recorded and read back as given, on both backends."""
    run = new_run(store)
    phases = ["explore", "pool-bo:" + "x" * 24]
    store.record_iteration(
        run.id, 0, [make_candidate(i, f"instruction {i}", {"d0": 1.0}, phase=p) for i, p in enumerate(phases)]
    )
    assert [c.phase for c in store.load_candidates(run.id)] == phases


def test_input_validation(store: RunStore) -> None:
    run = new_run(store)
    with pytest.raises(StoreError, match="index 0 given twice"):
        store.record_iteration(run.id, 0, [make_candidate(0, "a", {"d0": 1}), make_candidate(0, "b", {"d0": 1})])
    with pytest.raises(StoreError, match="candidate 0: phase must be a name .* got 'two words'"):
        store.record_iteration(run.id, 0, [make_candidate(0, "a", {"d0": 1}, phase="two words")])
    with pytest.raises(StoreError, match="phase must be at most 32 characters, got 33"):
        store.record_iteration(run.id, 0, [make_candidate(0, "a", {"d0": 1}, phase="x" * 33)])
    with pytest.raises(StoreError, match="nan"):
        store.record_iteration(run.id, 0, [make_candidate(0, "a", {"d0": 1}, z=(0.1, math.nan))])
    with pytest.raises(StoreError, match="no candidates"):
        store.record_iteration(run.id, 0, [])
    with pytest.raises(StoreError, match="'dev'"):
        store.record_test_evaluation(run.id, make_evaluation({"d0": 1.0}, instruction="a", split="dev"))
    with pytest.raises(StoreError, match="'test' evaluation"):
        store.record_iteration(
            run.id, 0, [replace(make_candidate(0, "a", {"d0": 1}), dev=make_evaluation({"t0": 1}, split="test"))]
        )
    with pytest.raises(StoreError, match="candidate 0 is of iteration 1"):
        store.record_iteration(run.id, 0, [make_candidate(0, "a", {"d0": 1}, iteration=1)])
    with pytest.raises(StoreError, match="no dev evaluation"):
        store.record_iteration(run.id, 0, [replace(make_candidate(0, "a", {"d0": 1}), dev=None)])
    assert store.completed_iterations(run.id) == []


def _call(h: str, text_: str = "42", run_id: str | None = None) -> BlackBoxCall:
    return BlackBoxCall(
        request_hash=h,
        model="m",
        prompt=f"prompt {h}",
        text=text_,
        prompt_tokens=5,
        completion_tokens=1,
        latency_s=0.25,
        retries=1,
        cost_usd=0.001,
        run_id=run_id,
    )


def test_llm_call_cache(store: RunStore) -> None:
    assert store.get_llm_call("h1") is None
    store.put_llm_call(_call("h1", "first"))
    store.put_llm_call(_call("h1", "second"))  # insert-or-ignore: first writer wins, no error
    assert store.get_llm_call("h1") == _call("h1", "first")

    assert store.get_llm_call("h1").run_id is None


def test_llm_call_put_from_many_threads(store: RunStore) -> None:
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(20):
                store.put_llm_call(_call(f"shared-{i}", f"thread {k}"))
                store.get_llm_call(f"shared-{(i * 7) % 20}")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(store.get_llm_call(f"shared-{i}") is not None for i in range(20))


def test_metrics_upsert(store: RunStore) -> None:
    run = new_run(store)
    store.record_metric(run.id, "best_dev", 0, 0.5)
    store.record_metric(run.id, "best_dev", 1, 0.75)
    store.record_metric(run.id, "best_dev", 1, 0.8)
    assert [(m.step, m.value) for m in store.load_metrics(run.id, "best_dev")] == [(0, 0.5), (1, 0.8)]
    with pytest.raises(StoreError, match="inf"):
        store.record_metric(run.id, "x", 0, math.inf)


def _writer(url: str, tag: str, n_iterations: int, queue: mp.Queue) -> None:
    try:
        with RunStore(url) as s:
            run_id = populate(s, name=f"run-{tag}", n_iterations=n_iterations, n_candidates=3, tag=f"{tag}:")
            for i in range(30):
                s.put_llm_call(_call(f"overlap-{i}", f"from {tag}", run_id=run_id))
                s.record_metric(run_id, "best", i, float(i))
            s.set_run_status(run_id, "completed")
        queue.put((tag, run_id, None))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        queue.put((tag, None, f"{type(exc).__name__}: {exc}"))


def test_two_processes_write_two_runs_concurrently(store_url: str) -> None:
    RunStore(store_url).close()  # schema exists before the race (a concurrent first open is tested below)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    n_iterations = 12
    procs = [ctx.Process(target=_writer, args=(store_url, tag, n_iterations, queue)) for tag in ("A", "B")]
    for p in procs:
        p.start()
    results = [queue.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [r[2] for r in results] == [None, None], results
    with RunStore(store_url) as store:
        for tag, run_id, _ in results:
            cands = store.load_candidates(run_id)
            assert len(cands) == n_iterations * 3
            assert all(c.instruction.startswith(f"{tag}:") for c in cands)  # nothing from the other writer
            assert store.completed_iterations(run_id) == list(range(n_iterations))
            assert store.get_run(run_id).status == "completed"
            assert len(store.load_metrics(run_id)) == 30
        c = counts(store_url)
        assert c["runs"] == 2 and c["candidates"] == 2 * n_iterations * 3 and c["llm_calls"] == 30


def _opener(url: str, queue: mp.Queue) -> None:
    try:
        RunStore(url).close()
        queue.put(None)
    except BaseException as exc:  # noqa: BLE001
        queue.put(f"{type(exc).__name__}: {exc}")


def test_concurrent_first_open_initialises_once(store_url: str) -> None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_opener, args=(store_url, queue)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert results == [None, None, None]


def test_sqlite_connection_settings(sqlite_url: str) -> None:
    with RunStore(sqlite_url) as store:
        engine = store._engine
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("foo://x", "cannot open store 'foo://x'"),
        ("sqlite:////proc/definitely/not/here.db", "cannot open store 'sqlite:////proc/definitely/not/here.db'"),
        (
            "postgresql://nobody:secret@127.0.0.1:1/db",
            "cannot open store 'postgresql+psycopg://nobody:***@127.0.0.1:1/db'",
        ),
    ],
)
def test_bad_url_message(url: str, fragment: str) -> None:
    with pytest.raises(StoreError) as info:
        RunStore(url)
    message = str(info.value)
    assert fragment in message and "\n" not in message and "secret" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_url_normalisation(tmp_path: Path) -> None:
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url(str(tmp_path / "a.db")) == f"sqlite:///{tmp_path / 'a.db'}"
    with RunStore(str(tmp_path / "sub" / "plain.db")) as store:  # a bare path is a SQLite file, dirs created
        assert store.dialect == "sqlite"
    assert (tmp_path / "sub" / "plain.db").is_file()


def test_timestamps_are_utc(store: RunStore) -> None:
    run = new_run(store)
    assert run.started_at.utcoffset().total_seconds() == 0
    assert abs((datetime.now(run.started_at.tzinfo) - store.get_run(run.id).started_at).total_seconds()) < 60
