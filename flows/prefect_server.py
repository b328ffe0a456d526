"""Prefect's ephemeral API for a CLI run: started up front, in the main thread, and dying with this process.

Without `PREFECT_API_URL`, Prefect 3 starts `python -m uvicorn ... prefect.server.api.server:create_app` as a
child process (`prefect.server.api.server.SubprocessASGIServer`) and stops it at exit (atexit). A `kill -9` of
the CLI skips atexit, so the ~260 MB server would live on, parented to init. Here the server is started before
the flow, from the main thread, with a `preexec_fn` that asks the kernel for SIGTERM when its parent dies
(`prctl(PR_SET_PDEATHSIG)`, Linux; the signal is tied to the creating thread, hence the main thread), in a
session of its own, so that a terminal's Ctrl-C (SIGINT to the foreground process group) reaches only the CLI,
which stops the run and records its end through this server before exiting. Prefect then reuses that running
server (a per-process singleton) for the flow.

The first start on a fresh PREFECT_HOME creates and migrates Prefect's SQLite database; two processes doing it at
once make one of them print a migration traceback. Starts are therefore serialised per PREFECT_HOME by a file
lock, held until the server answers its health check (migrations done).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1
LOCK_NAME = ".instructzero-server-start.lock"


def _die_with_parent(parent_pid: int) -> None:
    """In the child between fork and exec: SIGTERM when the parent (thread) dies; exit if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


class _SubprocessDyingWithUs:
    """Stands in for the `subprocess` module inside `prefect.server.api.server` only."""

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)

    @staticmethod
    def Popen(*args: Any, **kwargs: Any) -> subprocess.Popen:
        parent = os.getpid()
        kwargs.setdefault("preexec_fn", lambda: _die_with_parent(parent))
        # A session of its own: a terminal's ^C goes to the CLI's process group, and a server dying of it would
        # leave the flow unable to record its end (flows/stop_signals.py stops the run; the server goes at exit).
        kwargs.setdefault("start_new_session", True)
        return subprocess.Popen(*args, **kwargs)


@contextlib.contextmanager
def _start_lock(home: Path) -> Iterator[None]:
    import fcntl

    home.mkdir(parents=True, exist_ok=True)
    with open(home / LOCK_NAME, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def start_ephemeral_api() -> str | None:
    """Start the ephemeral API now (when no PREFECT_API_URL is set); returns its URL, or None when not needed."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME

    if PREFECT_API_URL.value() or not sys.platform.startswith("linux"):
        return None
    import prefect.server.api.server as server_module

    server_module.subprocess = _SubprocessDyingWithUs()  # type: ignore[assignment]
    server = server_module.SubprocessASGIServer()
    with _start_lock(Path(PREFECT_HOME.value()).expanduser()):
        server.start()
    return server.api_url
