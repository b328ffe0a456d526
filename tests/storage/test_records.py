"""The records of `storage/records.py`: one frozen dataclass per concept, and the import layering they allow."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from instructzero.storage.records import BlackBoxCall, Candidate, Evaluation, Example, ExampleScore, instruction_hash

REPO = Path(__file__).resolve().parents[2]


def _imported(folder: str) -> dict[str, set[str]]:
    """Module file -> the `instructzero.*` modules it imports (at any depth, TYPE_CHECKING blocks included)."""
    out: dict[str, set[str]] = {}
    for path in sorted((REPO / folder).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        out[str(path.relative_to(REPO))] = {n for n in names if n.startswith("instructzero.")}
    return out


def test_storage_imports_neither_tasks_nor_flows_and_evaluation_does_not_import_data() -> None:
    upward = {
        f: sorted(m for m in mods if m.startswith(("instructzero.tasks", "instructzero.flows")))
        for f, mods in _imported("storage").items()
    }
    assert {f: m for f, m in upward.items() if m} == {}
    circle = {
        f: sorted(m for m in mods if m.startswith("instructzero.tasks.data"))
        for f, mods in _imported("tasks/evaluation").items()
    }
    assert {f: m for f, m in circle.items() if m} == {}  # tasks/data -> tasks/evaluation.metrics only


def test_the_records_are_frozen_and_loaded_tasks_hold_the_record() -> None:
    from instructzero.tasks.data import task_data

    assert "Example" not in task_data.__all__  # one import path for the record: storage.records
    assert all(type(e) is Example for e in task_data.load_task("builtin:sentiment", None).examples)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Example("e", "x", ("y",)).input = "z"  # type: ignore[misc]


def test_an_evaluation_counts_its_examples_and_a_candidate_hashes_its_instruction() -> None:
    ev = Evaluation("Add.", "m", 0.5, (ExampleScore("a", "1", 1.0), ExampleScore("b", "2", 0.0)), 3, 1, 0.1, 2, 0)
    assert ev.n_examples == 2 and ev.split is None and ev.created_at is None  # the store's fields, not yet recorded
    c = Candidate(0, 0, "init", (0.1,), None, "Add.", dev=ev)
    assert c.instruction_hash == instruction_hash("Add.") and c.dev_score is None and c.test_score is None


@pytest.mark.parametrize(
    ("usage_reported", "truncated", "status"),
    [
        (True, False, "ok"),
        (False, False, "ok_no_usage"),
        (True, True, "ok_truncated"),
        (False, True, "ok_no_usage_truncated"),
    ],
)
def test_a_black_box_call_status_round_trips(usage_reported: bool, truncated: bool, status: str) -> None:
    made = BlackBoxCall.answer_status(usage_reported=usage_reported, truncated=truncated)
    call = BlackBoxCall("h", "m", "p", "t", 1, 1, 0.1, 0, status=made)
    assert (made, call.usage_reported, call.truncated, call.is_answer) == (status, usage_reported, truncated, True)
    assert not dataclasses.replace(call, status="error").is_answer  # a recorded failure is no cache hit
