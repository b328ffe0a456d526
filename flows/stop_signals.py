"""Ctrl-C and SIGTERM for a CLI run: the first signal stops the run at its next safe point, a second exits at once.

`handled()` (the CLI's run and resume) installs the handlers for the command and restores the previous ones after.
Before `deferring()` is entered, right before the flow starts, nothing is running that a graceful stop could
save, so the first signal raises KeyboardInterrupt at once. Inside it the first signal only requests a stop
(`instructzero.tasks.interrupts`): the flow checks between its steps, black-box requests in flight get a moment to land,
and
the flow raises `RunInterrupted`, which stores the run as `interrupted`, ends the Prefect flow run Cancelled and
makes the CLI print the resume hint and exit 128 + the signal (130, 143). A second signal exits at once with the
same status, the run left as a killed one (resumable: its holder is dead).

Prefect's flow engine installs its own SIGTERM handler for the flow (`capture_sigterm`, which raises
TerminationSignal wherever the main thread is and marks the flow run crashed); the flow calls `reclaim()` first
thing to put ours back for its body, and Prefect restores ours when the flow ends. Without `handled()` (a
deployment run by a Prefect worker, the test suite) `reclaim()` does nothing: Prefect's own handling, cancellation
from the UI included, is untouched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

from instructzero.tasks import interrupts

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PREFECT_RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs")

_active = False  # handled() is in effect in this process
_deferring = False  # a flow is running: the first signal only requests a stop


def _say(text: str) -> None:
    """Write to stderr from a signal handler (os.write: no buffered stream to re-enter)."""
    with contextlib.suppress(OSError):
        os.write(2, text.encode())


class StopSignal(KeyboardInterrupt):
    """The first signal before a flow runs (nothing to save): stop at once, exiting 128 + `signum`."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _handler(signum: int, frame: Any) -> None:
    name = signal.Signals(signum).name
    if interrupts.stop_requested():  # the second signal: stop now
        _say(f"\n{name} again: exiting now; the run resumes from its last recorded iteration\n")
        os._exit(128 + signum)
    interrupts.request_stop(signum)
    if not _deferring:
        raise StopSignal(signum)
    _say(
        f"\n{name}: stopping at the next safe point (black-box requests in flight get "
        f"{interrupts.STOP_GRACE_S:.0f} s); {'Ctrl-C' if signum == signal.SIGINT else name} again exits at once\n"
    )


class _QuietInterruptedRuns(logging.Filter):
    """Once a stop is requested, Prefect's ERROR records about the runs it ends ("Finished in state Cancelled",
    "Task run failed with exception: RunInterrupted" with its traceback) are expected news, not errors: demoted to
    INFO, and so kept only where INFO is asked for (PREFECT_LOGGING_LEVEL=INFO); by default the console shows the
    resume hint alone. (Prefect's handlers take every level: the logger's level decides, hence the re-check.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO and interrupts.stop_requested() and _about_the_stop(record):
            record.levelno, record.levelname, record.exc_info, record.exc_text = logging.INFO, "INFO", None, None
            return logging.getLogger("prefect").isEnabledFor(logging.INFO)
        return True


def _about_the_stop(record: logging.LogRecord) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, (interrupts.RunInterrupted, KeyboardInterrupt)):
        return True
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed record is not ours to judge
        return False
    return any(text in message for text in ("RunInterrupted", "stopped by SIG", "Cancelled(", "Crash detected"))


_FILTER = _QuietInterruptedRuns()


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Install the stop handlers for one CLI command (main thread only; elsewhere a no-op), then restore."""
    global _active
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _handler) for sig in SIGNALS}
    loggers = [logging.getLogger(name) for name in _PREFECT_RUN_LOGGERS]
    for logger in loggers:
        logger.addFilter(_FILTER)
    _active = True
    try:
        yield
    finally:
        _active = False
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for logger in loggers:
            logger.removeFilter(_FILTER)
        interrupts.clear()


@contextlib.contextmanager
def deferring() -> Iterator[None]:
    """While a flow runs: the first signal requests a stop at the next safe point instead of raising."""
    global _deferring
    _deferring = True
    try:
        yield
    finally:
        _deferring = False


def reclaim() -> None:
    """In the flow, first thing: put the stop handlers back in front of Prefect's SIGTERM handler (CLI only)."""
    if _active and threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            signal.signal(sig, _handler)
