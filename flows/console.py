"""What the terminal shows of Prefect's logs when a run fails for a reason the user can act on.

A black box answering 401, 500 or HTML, or a run another process holds, ends the flow with a `BlackBoxError` or a
`StoreError`; the CLI prints that as one `error:` line. Prefect logs the same failure first, once per failed task
and once for the flow, each with a full traceback: about 150 lines in front of the one that matters. Those records
are dropped from the *terminal* only (a filter on Prefect's console handlers): the Prefect API and UI keep them,
tracebacks included, and failures of any other kind (bugs) are shown as before.
"""

from __future__ import annotations

import logging
import re
import shlex

from instructzero.storage.errors import StoreError
from instructzero.tasks.errors import InstructZeroError


def resume_command(run_id: str, store_url: str, *flags: str) -> str:
    """The `instructzero resume` command line for a run, as every hint prints it: with `--store` whenever the store
    is not the default one, so the line works when pasted (a password in the URL shows as *** and must be filled
    in: it is never printed)."""
    from instructzero.flows.params import DEFAULT_STORE_URL
    from instructzero.storage.session import display_url

    store = "" if store_url == DEFAULT_STORE_URL else f" --store {shlex.quote(display_url(store_url))}"
    return f"instructzero resume {run_id}{store}" + "".join(f" {flag}" for flag in flags)


KNOWN_ERRORS: tuple[type[BaseException], ...] = (InstructZeroError, StoreError)
"""The errors the CLI reports itself, in one line (see `instructzero.flows.cli.main`)."""

# How Prefect's state messages name the exception: "Task run encountered an exception BlackBoxError: ...",
# "Flow run encountered an exception: RunLeasedError: ..."
_FAILED_BY = re.compile(r"encountered an exception:? ([A-Za-z_][A-Za-z0-9_]*):")


def _known_names() -> set[str]:
    """Class names of every known error, subclasses included (computed when needed: subclasses may come later)."""
    names: set[str] = set()
    todo: list[type[BaseException]] = list(KNOWN_ERRORS)
    while todo:
        cls = todo.pop()
        if cls.__name__ not in names:
            names.add(cls.__name__)
            todo.extend(cls.__subclasses__())
    return names


class KnownErrorFilter(logging.Filter):
    """Drops ERROR records about a failure caused by a known error: its traceback, and "Finished in state
    Failed(...)" lines that only repeat the message the CLI prints."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        if record.exc_info and isinstance(record.exc_info[1], KNOWN_ERRORS):
            return False
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is Prefect's to show
            return True
        found = _FAILED_BY.search(message)
        return not (found and found.group(1) in _known_names())


def quiet_known_errors() -> None:
    """Attach `KnownErrorFilter` to every Prefect console handler (idempotent). Call once Prefect is imported,
    which configures its logging."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger()] + [
        logging.getLogger(name) for name in list(logging.root.manager.loggerDict) if name.startswith("prefect")
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler) and not any(
                isinstance(f, KnownErrorFilter) for f in handler.filters
            ):
                handler.addFilter(KnownErrorFilter())
