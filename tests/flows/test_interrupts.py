"""Ctrl-C and SIGTERM stop a CLI run at its next safe point: real processes, real signals, a real pty.

One run goes through every way of stopping it, each a fresh `instructzero` process, against a rule-based black box
that takes LATENCY_S per answer so that requests are in flight when the signal comes:

1. `run`, SIGINT to its process group (what a terminal's ^C does) -> 130, stored 'interrupted'
2. `resume`, SIGTERM to the process -> 143
3. `resume` in a pty, ^C typed into it -> 130, a few lines and the resume hint, no traceback
4. `resume` in a pty, ^C twice -> exits at once, 130
5. `resume` -> completes

1 and 3 start their own ephemeral Prefect API (a child that must outlive the terminal's ^C to its process group,
as a user's would); 2, 4 and 5 use the session's API, sparing a server start each.

After each graceful stop: the Prefect flow run is Cancelled (read from PREFECT_HOME's database), and every answer
the black box delivered is in the store (`llm_calls` rows == the server's delivered completions), so nothing paid is
lost and nothing is paid twice. Durations are printed (run with -s).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from instructzero.servers.faults import FaultConfig
from tests.plugins.prefect import store_integrity_problems, store_rows, tiny_run_args
from tests.storage.test_run_lease import _alive, _descendants, _wait_for

REPO = Path(__file__).resolve().parents[2]
LATENCY_S = 1.0  # each black-box answer; below instructzero.tasks.interrupts.STOP_GRACE_S, so what is in flight lands
EXIT_WITHIN_S = 15.0  # from the signal to the exit, on a loaded 2-core machine


# ------------------------------------------------------------------------------------------------ fast
@pytest.fixture
def stop_cleared():
    from instructzero.tasks import interrupts

    interrupts.clear()
    yield interrupts
    interrupts.clear()


def test_a_stop_sends_nothing_new_and_keeps_the_answers_in_flight(make_server, stop_cleared) -> None:
    """Concurrency 2, six prompts, 0.5 s per answer: a stop while two are in flight lets them land (stored), sends
    none of the other four, and raises RunInterrupted within the grace."""
    from instructzero.tasks.evaluation.blackbox import BlackBoxClient, BlackBoxSettings, InMemoryResponseCache

    interrupts = stop_cleared
    server = make_server("rule", model_name="rule-based", faults=FaultConfig(latency_s=0.5))
    cache = InMemoryResponseCache()
    client = BlackBoxClient(
        BlackBoxSettings.at(server.base_url, model="rule-based", api="completions", max_tokens=8, concurrency=2),
        cache=cache,
    )

    def stop_once_two_are_in_flight() -> None:
        _wait_for("two requests in flight", lambda: server.stats()["in_flight"] == 2, 30)
        stopped.append(time.perf_counter())
        interrupts.request_stop(signal.SIGTERM)

    stopped: list[float] = []
    threading.Thread(target=stop_once_two_are_in_flight, daemon=True).start()
    with pytest.raises(interrupts.RunInterrupted) as raised:
        client.complete_many_sync([f"Input: {i}\nOutput:" for i in range(6)])
    took = time.perf_counter() - stopped[0]
    assert raised.value.exit_code == 143 and "SIGTERM" in str(raised.value)
    assert server.stats()["completion_requests"] == 2 and server.stats()["completions"] == 2
    assert len(cache.data) == 2  # the answers that landed are kept
    assert took < interrupts.STOP_GRACE_S
    print(f"\nstop during a batch: 2 answers in flight kept, 4 never sent, raised after {took:.2f} s")


@pytest.mark.slow
def test_a_stop_ends_a_generation_batch_without_returning_it(
    tiny_generator_dir, antonym_exemplars, stop_cleared
) -> None:
    """The generator stops decoding once a stop is requested and raises instead of returning cut instructions;
    without a stop request its outputs are what they were."""
    import numpy as np

    from instructzero.tasks.generation.generator import InstructionGenerator
    from instructzero.tasks.generation.model_assets import default_cache_dir

    interrupts = stop_cleared
    generator = InstructionGenerator(
        str(tiny_generator_dir), cache_dir=default_cache_dir(), max_new_tokens=8, device="cpu"
    )
    z = np.linspace(-1, 1, 20).reshape(2, 10)
    first = generator.generate(z, antonym_exemplars)
    interrupts.request_stop()
    with pytest.raises(interrupts.RunInterrupted, match="while generating instructions"):
        generator.generate(z, antonym_exemplars)
    interrupts.clear()
    assert generator.generate(z, antonym_exemplars) == first


def test_first_signal_raises_before_the_flow_and_only_asks_while_it_runs(stop_cleared) -> None:
    """In-process, real signals: before the flow the first one stops at once (StopSignal, exit 128 + signal);
    while it runs it only requests a stop; the previous handlers come back after the command."""
    from instructzero.flows import stop_signals

    interrupts = stop_cleared
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(stop_signals.StopSignal) as raised:
        with stop_signals.handled():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs in the main thread at once and raises
    assert raised.value.signum == signal.SIGTERM and isinstance(raised.value, KeyboardInterrupt)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert not interrupts.stop_requested()
    with stop_signals.handled(), stop_signals.deferring():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # what Prefect's flow engine does (its own handler) ...
        stop_signals.reclaim()  # ... and what the flow undoes first thing
        os.kill(os.getpid(), signal.SIGTERM)
        _wait_for("the stop request", interrupts.stop_requested, 5)
        assert interrupts.requested_signal() == signal.SIGTERM
        with pytest.raises(interrupts.RunInterrupted, match="stopped by SIGTERM before iteration 3"):
            interrupts.check("before iteration 3")
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert not interrupts.stop_requested()


# ------------------------------------------------------------------------------------------------ real processes
class _Output:
    """Collects a process's output (a pipe or a pty master) on a thread, with the time each chunk arrived."""

    def __init__(self, read) -> None:
        self.chunks: list[tuple[float, str]] = []
        self._read = read
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            try:
                data = self._read()
            except OSError:  # EIO: the pty's last writer is gone
                return
            if not data:
                return
            self.chunks.append((time.monotonic(), data.decode(errors="replace")))

    def text(self, since: float = 0.0) -> str:
        self._thread.join(timeout=10)
        return "".join(c for t, c in self.chunks if t >= since)


def _spawn(argv: list[str], env: dict[str, str], *, pty: bool = False) -> tuple[subprocess.Popen, _Output, int]:
    """A CLI process in its own session (so signals to its group reach it alone, like a terminal's job); with
    `pty`, the session's controlling terminal is a new pty, whose master fd is returned (else -1)."""
    cmd = [sys.executable, "-m", "instructzero.flows.cli", *argv]
    if not pty:
        proc = subprocess.Popen(
            cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        return proc, _Output(lambda: proc.stdout.read1(65536)), -1  # type: ignore[union-attr]
    import fcntl
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a real window (tqdm sizes to it)
    proc = subprocess.Popen(
        cmd,
        env=dict(env, TERM="xterm"),
        cwd=REPO,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
    )
    os.close(slave)
    return proc, _Output(lambda: os.read(master, 65536)), master


def _llm_calls(url: str) -> int:
    try:
        return store_rows(url, "SELECT count(*) FROM llm_calls")[0][0]
    except Exception:  # noqa: BLE001 - the store may not exist yet
        return 0


def _run_row(url: str) -> tuple[str, str, str | None]:
    ((run_id, status, flow_run_id),) = store_rows(url, "SELECT id, status, prefect_flow_run_id FROM runs")
    return run_id, status, flow_run_id


def _flow_run_state(prefect_home: Path, flow_run_id: str, api: bool = False) -> str:
    """The flow run's state type: from the session's API (`api`), else from the database of the process's own
    ephemeral API (its server is gone with the CLI)."""
    if api:
        from uuid import UUID

        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            return client.read_flow_run(UUID(flow_run_id)).state.type.value
    with sqlite3.connect(prefect_home / "prefect.db") as db:
        rows = db.execute(
            "SELECT state_type FROM flow_run WHERE id = ? OR replace(id, '-', '') = ?",
            (flow_run_id, flow_run_id.replace("-", "")),
        ).fetchall()
    assert rows, f"flow run {flow_run_id} not in {prefect_home / 'prefect.db'}"
    return str(rows[0][0]).rsplit(".", 1)[-1]


def _when_in_flight(server, url: str, calls_before: int, timeout_s: float = 240.0) -> str:
    """Wait until black-box requests of this process are in flight (or, if its proposals all repeat stored
    instructions, until it paid something new); returns what was seen."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.stats()["in_flight"] > 0:
            return f"{server.stats()['in_flight']} requests in flight, {_llm_calls(url)} answers stored"
        if _llm_calls(url) > calls_before:
            return f"{_llm_calls(url)} answers stored, none in flight"
        time.sleep(0.02)
    raise AssertionError(f"no black-box request within {timeout_s}s")


def _no_uvicorn_left(servers: set[int]) -> None:
    _wait_for("the ephemeral Prefect server to exit with the CLI", lambda: not any(_alive(p) for p in servers), 30)


def _uvicorn_children(pid: int) -> set[int]:
    found = set()
    for p in _descendants(pid):
        try:
            if "uvicorn" in Path(f"/proc/{p}/cmdline").read_text():
                found.add(p)
        except OSError:
            pass
    return found


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pty, /proc and PR_SET_PDEATHSIG are Linux")
def test_ctrl_c_and_sigterm_stop_at_a_safe_point_and_the_run_resumes(
    cli_env, prefect_home, prefect_api_url, make_server, tiny_generator_dir, tmp_path
) -> None:
    url = f"sqlite:///{tmp_path / 'interrupts.db'}"
    server = make_server("rule", model_name="rule-based", faults=FaultConfig(latency_s=LATENCY_S))
    env = dict(
        cli_env,
        PYTHONPATH=str(REPO),
        PREFECT_LOCAL_STORAGE_PATH=str(tmp_path / "results"),
        INSTRUCTZERO_BO__NUM_RESTARTS="2",
        INSTRUCTZERO_BO__RAW_SAMPLES="16",
    )
    env.pop("PREFECT_API_URL", None)  # the process starts its own ephemeral Prefect API, as a user's does
    # where the process group's signal does not matter, the session's API (no ~15 s server start per process)
    api_env = dict(env, PREFECT_API_URL=prefect_api_url)
    report: list[str] = []
    t_all = time.perf_counter()

    def graceful(
        label: str, argv: list[str], send, expected_rc: int, *, pty: bool = False, api: bool = False
    ) -> tuple[str, float]:
        """Start, wait for requests in flight, signal, and check the graceful stop; returns (output, exit s)."""
        t0 = time.perf_counter()
        calls_before = _llm_calls(url)
        proc, out, master = _spawn(argv, api_env if api else env, pty=pty)
        try:
            seen = _when_in_flight(server, url, calls_before)
            servers = _uvicorn_children(proc.pid)
            assert servers or api, "no ephemeral Prefect server child found"
            sent = time.monotonic()
            send(proc, master)
            rc = proc.wait(timeout=60)
            took = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
        text = out.text()
        after = out.text(since=sent)
        if master >= 0:
            os.close(master)
        assert rc == expected_rc, f"{label}: exit {rc}\n{text[-4000:]}"
        assert took < EXIT_WITHIN_S, f"{label}: exit took {took:.1f}s\n{text[-4000:]}"
        assert "Traceback" not in text and "ConnectError" not in text and "| ERROR" not in text, text[-4000:]
        hint = [ln for ln in text.replace("\r", "\n").splitlines() if ln.startswith("interrupted: resume with")]
        assert len(hint) == 1, text[-4000:]
        run_id, status, flow_run_id = _run_row(url)
        assert f"instructzero resume {run_id} --store {url}" in hint[0]
        assert status == "interrupted"
        assert _flow_run_state(prefect_home, flow_run_id, api) == "CANCELLED"  # the API lived to record the end
        _wait_for("the black box to finish", lambda: server.stats()["in_flight"] == 0, 30)
        server_answers = server.stats()["completions"]
        assert _llm_calls(url) == server_answers, "an answer the black box delivered is missing from the store"
        assert store_integrity_problems(url) == {}  # an iteration is recorded whole or not at all
        recorded = store_rows(url, "SELECT count(DISTINCT iteration) FROM candidates")[0][0]
        _no_uvicorn_left(servers)
        report.append(
            f"  {label}: signalled at '{seen}', exit {rc} after {took:.1f} s; stored 'interrupted', "
            f"Prefect flow run CANCELLED; {_llm_calls(url)} answers stored = {server_answers} delivered, "
            f"{recorded} iterations recorded; "
            f"{len(after.splitlines())} lines after the signal; phase {time.perf_counter() - t0:.0f} s"
        )
        return after, took

    def to_group(sig):
        return lambda proc, master: os.killpg(proc.pid, sig)

    def type_ctrl_c(proc, master):
        os.write(master, b"\x03")

    # 1. run, ^C to the process group (the terminal's way: the Prefect server child is in a session of its own)
    graceful(
        "run, SIGINT to the process group",
        ["run", *tiny_run_args(url, server.base_url, tiny_generator_dir, name="stoppable", iterations=4)],
        to_group(signal.SIGINT),
        130,
    )
    run_id = _run_row(url)[0]
    resume = ["resume", run_id, "--store", url]
    # 2. resume, SIGTERM to the CLI process (kill PID, a supervisor, docker stop)
    graceful(
        "resume, SIGTERM to the process", resume, lambda proc, master: proc.send_signal(signal.SIGTERM), 143, api=True
    )
    # 3. resume in a terminal, ^C typed
    after, _ = graceful("resume in a pty, ^C typed", resume, type_ctrl_c, 130, pty=True)
    lines = [
        ln
        for ln in after.replace("\r", "\n").splitlines()
        if ln.strip() and "step/s" not in ln and "s/step" not in ln and "?step" not in ln
    ]
    assert len(lines) <= 4, lines  # ^C echo, "stopping at the next safe point", the hint (+ the closed bar)
    assert lines[-1].startswith("interrupted: resume with"), lines

    # 4. ^C twice in a terminal: out at once, the run left as a killed one (its holder is dead: resumable now)
    t0 = time.perf_counter()
    calls_before, answers_before = _llm_calls(url), server.stats()["completions"]
    proc, out, master = _spawn(resume, api_env, pty=True)
    try:
        seen = _when_in_flight(server, url, calls_before)
        servers = _uvicorn_children(proc.pid)
        os.write(master, b"\x03")
        time.sleep(0.3)
        second = time.monotonic()
        os.write(master, b"\x03")
        rc = proc.wait(timeout=30)
        took = time.monotonic() - second
    finally:
        if proc.poll() is None:
            proc.kill()
    text = out.text()
    os.close(master)
    assert rc == 130 and took < 3.0, f"exit {rc} after {took:.1f}s\n{text[-4000:]}"
    assert "Traceback" not in text and "again: exiting now" in text, text[-4000:]
    _no_uvicorn_left(servers)
    _wait_for("the black box to finish the requests of the killed process", lambda: server.stats()["in_flight"] == 0)
    # answers the server sent to the dead process: lost with it (paid again at the resume), at most one iteration's
    lost = server.stats()["completions"] - answers_before - (_llm_calls(url) - calls_before)
    assert 0 <= lost <= 3
    report.append(
        f"  resume in a pty, ^C twice: signalled at '{seen}', exit {rc} {took:.2f} s after the second; "
        f"stored '{_run_row(url)[1]}' (left as killed); {_llm_calls(url) - calls_before} answers stored, "
        f"{lost} delivered to the dead process; phase {time.perf_counter() - t0:.0f} s"
    )

    # 5. resume to the end, fast
    t0 = time.perf_counter()
    server.set_faults(FaultConfig())
    done = subprocess.run(
        [sys.executable, "-m", "instructzero.flows.cli", *resume],
        env=api_env,
        cwd=REPO,
        text=True,
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_id, status, flow_run_id = _run_row(url)
    assert status == "completed" and _flow_run_state(prefect_home, flow_run_id, api=True) == "COMPLETED"
    assert store_rows(url, "SELECT count(DISTINCT iteration) FROM candidates")[0][0] == 5
    assert _llm_calls(url) == server.stats()["completions"] - lost  # every answer stored once, none paid twice
    report.append(
        f"  resume to the end: completed, Prefect flow run COMPLETED, {_llm_calls(url)} answers stored = "
        f"{server.stats()['completions']} delivered; phase {time.perf_counter() - t0:.0f} s"
    )
    print(f"\nCtrl-C / SIGTERM ({time.perf_counter() - t_all:.0f} s in all):\n" + "\n".join(report))
