"""One run, one process: a lease with a heartbeat on the runs row (real SQLite/PostgreSQL, real processes)."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from instructzero.servers.faults import FaultConfig
from instructzero.storage.errors import RunExistsError, RunLeasedError
from instructzero.storage.repository import RunStore
from tests.plugins.prefect import store_rows, tiny_run_args

REPO = Path(__file__).resolve().parents[2]


def _new_run(store: RunStore, name: str, owner: str | None):
    return store.create_run(
        name=name,
        task="sum",
        config={},
        seed=0,
        versions={},
        projection_hash=None,
        splits={"dev": ["d0"]},
        lease_owner=owner,
    )


def test_lease_claim_heartbeat_takeover(store_url: str) -> None:
    store = RunStore(store_url)
    run = _new_run(store, "leased", "proc-a")
    assert run.lease_owner == "proc-a" and run.lease_live(datetime.now(UTC), 60)
    with pytest.raises(RunLeasedError, match="being run by another process"):
        store.claim_run(run.id, "proc-b", timeout_s=60)
    assert store.claim_run(run.id, "proc-a", timeout_s=60).lease_owner == "proc-a"
    assert store.heartbeat(run.id, "proc-a") and not store.heartbeat(run.id, "proc-b")
    with pytest.raises(RunExistsError):
        _new_run(store, "leased", "proc-c")
    # proc-a goes silent: its heartbeat is older than the timeout, so the run is stale and may be taken over
    stale = datetime.now(UTC) - timedelta(seconds=120)
    with store._engine.begin() as conn:
        from sqlalchemy import text

        conn.execute(text("UPDATE runs SET heartbeat_at = :t WHERE id = :i"), {"t": stale, "i": run.id})
    assert store.get_run(run.id).shown_status(datetime.now(UTC), 60) == "stale"
    assert store.claim_run(run.id, "proc-b", timeout_s=60).lease_owner == "proc-b"
    assert not store.heartbeat(run.id, "proc-a")  # the old holder learns it lost the run
    store.release_run(run.id, "proc-b")
    assert store.get_run(run.id).lease_owner is None
    store.close()


def test_two_creators_of_one_name_at_once_one_wins(store_url: str) -> None:
    RunStore(store_url).close()
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def create(i: int) -> None:
        store = RunStore(store_url)
        barrier.wait()
        try:
            _new_run(store, "race", f"proc-{i}")
            outcomes.append("created")
        except RunExistsError:
            outcomes.append("refused")
        finally:
            store.close()

    threads = [threading.Thread(target=create, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == ["created", "refused", "refused", "refused"]


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == parent and int(entry.name) not in found:
                found.add(int(entry.name))
                todo.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for(what: str, predicate, timeout_s: float = 120.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and PR_SET_PDEATHSIG are Linux")
def test_second_process_refused_kill_9_leaves_no_server_stale_run_resumed_once(
    prefect_api_url, cli_env, make_server, tiny_generator_dir, tmp_path
) -> None:
    url = f"sqlite:///{tmp_path / 'lease.db'}"
    # Answers take 45 s while the first process lives, so it is surely mid-run when the second one starts.
    server = make_server("rule", model_name="rule-based", faults=FaultConfig(latency_s=45.0))
    env = dict(
        cli_env,
        PYTHONPATH=str(REPO),
        INSTRUCTZERO_LEASE_TIMEOUT_S="3",
        PREFECT_LOCAL_STORAGE_PATH=str(tmp_path / "results"),
        INSTRUCTZERO_BO__NUM_RESTARTS="2",
        INSTRUCTZERO_BO__RAW_SAMPLES="16",
    )
    env.pop("PREFECT_API_URL", None)  # the first process starts its own ephemeral Prefect server
    args = ["run", *tiny_run_args(url, server.base_url, tiny_generator_dir, name="one-owner", iterations=3)]
    first = subprocess.Popen(
        [sys.executable, "-m", "instructzero.flows.cli", *args],
        env=env,
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:

        def held() -> bool:
            if not (tmp_path / "lease.db").exists():
                return False
            try:
                rows = store_rows(url, "SELECT lease_owner FROM runs WHERE name = 'one-owner'")
            except Exception:  # noqa: BLE001 - the store may be mid-creation
                return False
            return bool(rows and rows[0][0])

        _wait_for("the first process to hold the run", held)
        servers = _wait_for(
            "the ephemeral Prefect server",
            lambda: {p for p in _descendants(first.pid) if "uvicorn" in Path(f"/proc/{p}/cmdline").read_text()},
        )
        second = subprocess.run(
            [sys.executable, "-m", "instructzero.flows.cli", *args],
            env=env,
            cwd=REPO,
            text=True,
            capture_output=True,
            timeout=120,
        )
        assert second.returncode == 2, second.stdout + second.stderr
        assert second.stderr.count("\n") == 1 and second.stderr.startswith("error: "), second.stderr
        assert "being run by another process" in second.stderr
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    server.set_faults(FaultConfig())
    _wait_for("the orphaned Prefect server to exit", lambda: not any(_alive(p) for p in servers), 30)
    assert len(store_rows(url, "SELECT id FROM runs")) == 1

    from instructzero.flows.cli import main

    def shown() -> str:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            main(["runs", "--store", url])
        return out.getvalue()

    os.environ["INSTRUCTZERO_LEASE_TIMEOUT_S"] = "3"
    try:
        listing = _wait_for("the killed run to show as stale", lambda: (out := shown()) and "stale" in out and out)
    finally:
        del os.environ["INSTRUCTZERO_LEASE_TIMEOUT_S"]
    run_id = listing.splitlines()[1].split()[0]  # under the header
    resume_env = dict(env, PREFECT_API_URL=prefect_api_url)
    resumed = subprocess.run(
        [sys.executable, "-m", "instructzero.flows.cli", "resume", run_id, "--store", url],
        env=resume_env,
        cwd=REPO,
        text=True,
        capture_output=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    finished = store_rows(url, "SELECT status, finished_at, lease_owner FROM runs")
    assert finished[0][0] == "completed" and finished[0][2] is None
    again = subprocess.run(
        [sys.executable, "-m", "instructzero.flows.cli", "resume", run_id, "--store", url],
        env=resume_env,
        cwd=REPO,
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert again.returncode == 0 and "already complete" in again.stdout, again.stdout + again.stderr
    assert "Starting temporary server" not in again.stdout + again.stderr
    assert store_rows(url, "SELECT status, finished_at, lease_owner FROM runs") == finished
    print(
        f"\nlease: second process refused ({second.stderr.strip()[:80]}...), kill -9 left {len(servers)} Prefect "
        f"server process(es) that exited with it, the stale run was resumed once, a second resume ran nothing"
    )


def test_a_dead_holder_on_this_host_is_taken_over_at_once(sqlite_url: str) -> None:
    import socket

    from instructzero.storage.lease import holder_is_dead

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = f"{socket.gethostname()}:{gone.pid}:deadbeef"
    assert holder_is_dead(dead) and not holder_is_dead(f"{socket.gethostname()}:{os.getpid()}:x")
    assert not holder_is_dead(f"other-host:{gone.pid}:x")
    store = RunStore(sqlite_url)
    run = _new_run(store, "orphan", dead)
    with pytest.raises(RunLeasedError):
        store.claim_run(run.id, "me", timeout_s=60)
    assert store.claim_run(run.id, "me", timeout_s=60, take_over=dead).lease_owner == "me"
    store.close()


_START_API = """
import sys, time
from instructzero.flows.prefect_server import start_ephemeral_api
while time.time() < float(sys.argv[1]):
    time.sleep(0.001)
print("started", start_ephemeral_api(), flush=True)
"""


def _start_apis(home: Path, n: int, cli_env: dict[str, str], delay_s: float) -> list[subprocess.Popen]:
    """`n` processes that start the ephemeral Prefect API on `home` at the same instant, `delay_s` from now."""
    env = dict(
        cli_env, PYTHONPATH=str(REPO), PREFECT_HOME=str(home), PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="240"
    )
    env.pop("PREFECT_API_URL", None)
    at = str(time.time() + delay_s)
    return [
        subprocess.Popen(
            [sys.executable, "-c", _START_API, at],
            env=env,
            cwd=REPO,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(n)
    ]


def test_first_runs_sharing_a_fresh_prefect_home_start_one_at_a_time(cli_env, tmp_path) -> None:
    """Three first starts at the same instant on one fresh PREFECT_HOME: each creates-or-finds Prefect's database
    without a migration traceback (unserialised, one of two printed `NoSuchTableError: block` from a half-migrated
    database in one of two trials on this loaded 2-core machine). And the serialisation is real: while another
    process holds the start lock, a start waits for it."""
    import fcntl

    from instructzero.flows.prefect_server import LOCK_NAME

    starts = _start_apis(tmp_path / "home", 3, cli_env, delay_s=8.0)
    outputs = [p.communicate(timeout=400)[0] for p in starts]
    for process, output in zip(starts, outputs, strict=True):
        assert process.returncode == 0 and "started http://127.0.0.1" in output, output[-3000:]
        assert "Traceback" not in output and "ERROR" not in output, output[-3000:]

    home = tmp_path / "held"
    home.mkdir()
    with open(home / LOCK_NAME, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        (waiting,) = _start_apis(home, 1, cli_env, delay_s=0.0)
        time.sleep(15.0)  # long enough for an unserialised start to have migrated a database
        assert waiting.poll() is None and not (home / "prefect.db").exists()
        fcntl.flock(lock, fcntl.LOCK_UN)
    output = waiting.communicate(timeout=300)[0]
    assert waiting.returncode == 0 and "started http://127.0.0.1" in output, output[-3000:]
    print("\nfresh PREFECT_HOME: 3 simultaneous first starts, no traceback; a start waited 15 s on a held lock")
