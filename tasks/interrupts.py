"""Stopping a run at its next safe point (Ctrl-C, SIGTERM): one process-wide request, checked where stopping loses
nothing.

The CLI's signal handlers (`flows/stop_signals.py`) call `request_stop(signum)`. The flow calls `check()` between
its steps; the black-box client sends no new request and gives the ones in flight `STOP_GRACE_S` to land (each
answer is stored as it arrives); the generator ends its batch after the current token. Whatever notices raises
`RunInterrupted`. Nothing partial is recorded, so the run resumes at its first unrecorded iteration and pays for no
stored answer twice. Nothing here touches signals: outside the CLI nobody requests a stop and every check passes.
"""

from __future__ import annotations

import signal
import threading

STOP_GRACE_S = 2.0
"""How long black-box requests already in flight at a stop may take to land (their answers are kept)."""

_requested = threading.Event()
_signum: int = signal.SIGINT


class RunInterrupted(Exception):
    """The run stopped at a safe point because a stop was requested (Ctrl-C or SIGTERM); resumable.

    `run_id`/`run_name`/`recorded` are filled in by the flow once the run is known; `exit_code` is the shell's
    128 + signal number (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(
        self,
        where: str = "",
        *,
        signum: int = signal.SIGINT,
        run_id: str | None = None,
        run_name: str | None = None,
        recorded: str = "",
    ) -> None:
        super().__init__(where)
        self.where = where
        self.signum = int(signum)
        self.run_id = run_id
        self.run_name = run_name
        self.recorded = recorded  # e.g. "2 of 4 iterations recorded"

    def __reduce__(self):  # keyword attributes survive pickling (Prefect may persist the flow's final state)
        return type(self), (self.where,), dict(self.__dict__)

    @property
    def signal_name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        return f"stopped by {self.signal_name}" + (f" {self.where}" if self.where else "")


def request_stop(signum: int = signal.SIGINT) -> None:
    """Ask the run in this process to stop at its next safe point (the first request's signal is kept)."""
    global _signum
    if not _requested.is_set():
        _signum = int(signum)
        _requested.set()


def stop_requested() -> bool:
    return _requested.is_set()


def requested_signal() -> int | None:
    """The signal of the pending stop request, None when there is none."""
    return _signum if _requested.is_set() else None


def check(where: str, *, run_id: str | None = None, run_name: str | None = None) -> None:
    """A safe point: raise RunInterrupted if a stop was requested."""
    if _requested.is_set():
        raise RunInterrupted(where, signum=_signum, run_id=run_id, run_name=run_name)


def interrupted(where: str) -> RunInterrupted:
    """The exception for a stop noticed `where` (a stop must have been requested)."""
    return RunInterrupted(where, signum=_signum)


def clear() -> None:
    """Forget the stop request (the CLI once a command is done; tests)."""
    global _signum
    _requested.clear()
    _signum = signal.SIGINT
