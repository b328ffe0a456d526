"""The hints the terminal prints (flows/console.py): a resume command works when pasted."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from instructzero.flows.console import resume_command
from instructzero.storage.repository import RunStore
from tests.plugins.store import populate


def test_the_resume_hint_names_any_store_but_the_default() -> None:
    assert resume_command("abc", "sqlite:///instructzero.db") == "instructzero resume abc"
    assert resume_command("abc", "sqlite:///runs.db", "--max-cost USD") == (
        "instructzero resume abc --store sqlite:///runs.db --max-cost USD"
    )
    spaced = resume_command("abc", "sqlite:////tmp/my runs/s.db")
    assert shlex.split(spaced) == ["instructzero", "resume", "abc", "--store", "sqlite:////tmp/my runs/s.db"]
    hidden = resume_command("abc", "postgresql+psycopg://iz:s3cret@db/iz")
    assert "s3cret" not in hidden and hidden.endswith("--store 'postgresql+psycopg://iz:***@db/iz'")


def test_a_pasted_resume_hint_reaches_the_run(tmp_path: Path) -> None:
    """The printed line, run as a shell would split it, from another directory: it finds the run's store (a run
    already completed is reported, not re-run, so this needs no model)."""
    url = f"sqlite:///{tmp_path / 'my runs' / 's.db'}"
    (tmp_path / "my runs").mkdir()
    with RunStore(url) as store:
        run_id = populate(store, name="done")
        store.set_run_status(run_id, "completed")
    args = shlex.split(resume_command(run_id, url))
    assert args[:2] == ["instructzero", "resume"]
    out = subprocess.run(
        [sys.executable, "-m", "instructzero.flows.cli", *args[1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "no store at" not in out.stderr and "no run with id" not in out.stderr, out.stderr
    assert run_id in out.stdout + out.stderr
