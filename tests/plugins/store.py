"""Fixtures for store tests (see conftest.py).

* `sqlite_url`: a fresh SQLite file under tmp_path.
* `postgres_url` (session): a PostgreSQL server URL: $INSTRUCTZERO_TEST_POSTGRES_URL if set, else a throwaway
  server started with initdb/pg_ctl (as the `postgres` user when running as root), else the test is skipped.
* `postgres_db_url`: a fresh database on that server per test (dropped afterwards).
* `store_url`: parametrised over sqlite and postgres, for tests that must pass on both.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ENV_URL = "INSTRUCTZERO_TEST_POSTGRES_URL"


def _pg_bin_dir() -> Path | None:
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    for d in candidates:
        if (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists():
            return Path(d)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _ThrowawayPostgres:
    """initdb + pg_ctl start on 127.0.0.1:<free port>, trust auth, no fsync; `stop()` removes everything."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.as_root = os.geteuid() == 0
        if self.as_root:
            try:
                self.pw = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root and there is no 'postgres' user to run the server") from None
            if not shutil.which("runuser"):
                raise RuntimeError("running as root and `runuser` is missing")
        self.base = Path(tempfile.mkdtemp(prefix="iz-pg-"))
        self.data = self.base / "data"
        self.port = _free_port()
        if self.as_root:
            os.chown(self.base, self.pw.pw_uid, self.pw.pw_gid)

    def _cmd(self, *args: str) -> list[str]:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        return ["runuser", "-u", "postgres", "--", *cmd] if self.as_root else cmd

    def start(self) -> str:
        run = dict(check=True, capture_output=True, text=True, timeout=120)
        subprocess.run(
            self._cmd("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync"),
            **run,
        )
        opts = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        subprocess.run(
            self._cmd(
                "pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.base / "log"), "-w", "-t", "60", "start"
            ),
            **run,
        )
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        try:
            subprocess.run(
                self._cmd("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"),
                capture_output=True,
                timeout=60,
            )
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL server's maintenance database (tests create their own databases on it)."""
    env = os.environ.get(ENV_URL)
    if env:
        yield env
        return
    bin_dir = _pg_bin_dir()
    if bin_dir is None:
        pytest.skip(f"no PostgreSQL: set {ENV_URL} or install postgresql (initdb/pg_ctl not found)")
    try:
        server = _ThrowawayPostgres(bin_dir)
        url = server.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or exc
        pytest.skip(f"could not start a throwaway PostgreSQL from {bin_dir}: {str(detail).strip()[:300]}")
    try:
        _wait_ready(url)
        yield url
    finally:
        server.stop()


def _wait_ready(url: str, timeout_s: float = 30.0) -> None:
    import psycopg

    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            psycopg.connect(conninfo, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _with_database(url: str, dbname: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=dbname).render_as_string(hide_password=False)


@pytest.fixture
def postgres_db_url(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database on the test server (dropped at teardown)."""
    import psycopg

    admin = _with_database(postgres_url, "postgres").replace("postgresql+psycopg://", "postgresql://")
    dbname = f"iz_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    url = _with_database(postgres_url, dbname)
    if not url.startswith("postgresql+psycopg://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    try:
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def populated_store(tmp_path: Path) -> str:
    """URL of a SQLite store holding one populated run ("run-a", see `populate`)."""
    from instructzero.storage.repository import RunStore

    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = RunStore(url)
    populate(store, name="run-a")
    store.close()
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest) -> str:
    """A fresh store URL on each backend."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_db_url")


# ------------------------------------------------------------------------------------------- data builders


def make_evaluation(
    scores: dict[str, float],
    *,
    instruction: str = "an instruction",
    split: str | None = "dev",
    model: str = "fake-model",
    prefix: str = "pred",
):
    """An Evaluation of `instruction` whose mean is the mean of `scores` (example id -> score)."""
    from instructzero.storage.records import Evaluation, ExampleScore

    examples = tuple(ExampleScore(example_id=k, prediction=f"{prefix}-{k}", score=v) for k, v in scores.items())
    mean = sum(scores.values()) / len(scores) if scores else 0.0
    return Evaluation(
        instruction=instruction,
        model=model,
        mean_score=mean,
        examples=examples,
        prompt_tokens=10 * len(examples),
        completion_tokens=2 * len(examples),
        latency_s=0.01 * len(examples),
        n_calls=len(examples),
        n_cached=0,
        split=split,
    )


def make_candidate(
    index: int,
    instruction: str,
    scores: dict[str, float],
    *,
    phase: str = "bo",
    z: tuple[float, ...] | None = (0.1, -0.2, 1.0 / 3.0),
    acquisition_value: float | None = 0.5,
    model: str = "fake-model",
    iteration: int = 0,
):
    from instructzero.storage.records import Candidate

    return Candidate(
        iteration=iteration,
        index=index,
        phase=phase,
        z=z,
        acquisition_value=acquisition_value,
        instruction=instruction,
        dev=make_evaluation(scores, instruction=instruction, model=model),
    )


def populate(
    store, *, name: str = "run-a", task: str = "sum", n_iterations: int = 3, n_candidates: int = 2, tag: str = ""
) -> str:
    """Create one run with `n_iterations` iterations of `n_candidates` candidates; returns the run id.
    Scores rise with the iteration so the best instruction is the last iteration's last candidate."""
    from instructzero.storage.records import Dataset

    run = store.create_run(
        name=name,
        task=task,
        config={"n_iterations": n_iterations},
        seed=0,
        versions={"instructzero": "test"},
        projection_hash="p" * 64,
        splits={"dev": ["d0", "d1"], "test": ["t0"]},
        datasets=[Dataset(task, "dev", "h" * 64, ("d0", "d1")), Dataset(task, "test", "h" * 64, ("t0",))],
    )
    for it in range(n_iterations):
        cands = []
        for j in range(n_candidates):
            s = (it * n_candidates + j) / (n_iterations * n_candidates)
            cands.append(
                make_candidate(
                    j,
                    f"{tag}instruction {it}.{j}",
                    {"d0": s, "d1": s},
                    phase="init" if it == 0 else "bo",
                    z=(it + j / 10.0, 0.1 + it, -1.0 / 3.0),
                    iteration=it,
                )
            )
        store.record_iteration(run.id, it, cands)
    return run.id


class SoftPromptVector(tuple):
    """A stored soft prompt z that compares equal to another within 1e-8 per coordinate.

    BO proposals come out of L-BFGS on a GP fit; BLAS may sum in a different order in another process (thread
    scheduling, memory alignment), which moves z by ~1e-11 while the instruction, scores and everything else stay
    identical. Resume and reproducibility tests compare z with this tolerance and everything else exactly.
    """

    TOLERANCE = 1e-8

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, tuple) or len(other) != len(self):
            return False
        return all(abs(a - b) <= self.TOLERANCE for a, b in zip(self, other))

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = tuple.__hash__
