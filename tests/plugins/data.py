"""Fixtures for data tests (see conftest.py): the shared data root, the hand-made fixture files, tiny tasks."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from instructzero.storage.records import Example
from instructzero.tasks.data.task_data import TaskData

FIXTURE_DATA_DIR = Path(__file__).parents[1] / "fixtures" / "data"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The shared data root (instruction-induction/ and bigbench-ii/); skips the test when it is absent."""
    configured = os.environ.get("INSTRUCTZERO_SHARED_DATA")
    path = Path(configured) if configured else Path(__file__).parents[2].parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set INSTRUCTZERO_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def fixture_data_dir() -> Path:
    """Hand-made valid task files: an II collection, BIG-bench tasks, tiny.jsonl and tiny.csv."""
    return FIXTURE_DATA_DIR / "valid"


@pytest.fixture(scope="session")
def malformed_data_dir() -> Path:
    """Hand-made broken task files, one problem each."""
    return FIXTURE_DATA_DIR / "malformed"


def build_task(
    pairs: Sequence[tuple[str, str]], *, name: str = "tiny", test_pairs: Sequence[tuple[str, str]] = ()
) -> TaskData:
    """A TaskData from (input, output) pairs, for tests that need a task without files."""
    examples = tuple(Example(f"induce-{i}", x, (y,)) for i, (x, y) in enumerate(pairs, start=1))
    test_pool = tuple(Example(f"execute-{i}", x, (y,)) for i, (x, y) in enumerate(test_pairs, start=1))
    return TaskData(name, "file", "exact_match", examples, test_pool, content_hash="test")


@pytest.fixture
def make_task() -> Callable[..., TaskData]:
    """Factory: make_task(pairs, name=..., test_pairs=...) -> TaskData."""
    return build_task
