"""Session-wide test setup: offline environment, shared fixtures from tests/plugins/."""

from __future__ import annotations

import os

# Offline and quiet before anything imports prefect or transformers.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = [
    "tests.plugins.data",
    "tests.plugins.store",
    "tests.plugins.server",
    "tests.plugins.generator",
    "tests.plugins.prefect",
    "tests.plugins.gp",
]

import logging  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _prefect_logs_to_current_stderr() -> None:
    """Prefect's console handler keeps the sys.stderr of the moment logging was configured; under pytest that may
    be a test's `capsys` stream, closed once the test ends. Point its console at whatever stderr is current."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger()] + [
        logging.getLogger(name) for name in list(logging.root.manager.loggerDict) if name.startswith("prefect")
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler):
                handler.console.stderr = True
                handler.console.file = None  # rich then resolves sys.stderr at every write


# The files that take minutes (real processes, Prefect servers, the default models), longest first: `make test`
# runs two workers that take whole files (`-n 2 --dist loadfile`), and starting these first keeps one worker from
# being left with a 3-minute file at the end while the other idles.
LONG_FILES = (
    "test_interrupts.py",
    "test_run_lease.py",
    "test_reliability.py",
    "test_deployments.py",
    "test_flow_end_to_end.py",
    "test_benchmarks_smoke.py",
    "test_generator.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))  # stable: order within a file kept
