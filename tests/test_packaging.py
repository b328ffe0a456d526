"""One import name: the project installs under `instructzero.*`, so a user's own tasks.py / flows.py cannot shadow
it."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("flows", "tasks", "storage", "servers", "benchmarks")


def test_every_source_folder_is_an_installed_package() -> None:
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = setuptools["package-dir"]
    assert mapping == {f"instructzero.{folder}": folder for folder in FOLDERS}
    expected = {
        "instructzero." + ".".join(directory.relative_to(REPO).parts)
        for folder in FOLDERS
        for directory in [REPO / folder, *(REPO / folder).rglob("*")]
        if directory.is_dir() and directory.name != "__pycache__" and any(directory.glob("*.py"))
    }
    assert set(setuptools["packages"]) == expected


def test_a_modules_tests_sit_under_its_folders_path() -> None:
    """tests/<folder>/test_<name>.py for a module in <folder>/: a reader finds the tests from the code's path."""
    tests = REPO / "tests"
    misplaced = [
        str(path.relative_to(tests))
        for path in tests.rglob("test_*.py")
        if path.parent != tests and not (REPO / path.parent.relative_to(tests)).is_dir()
    ]
    assert misplaced == []
    assert {p.name for p in tests.glob("test_*.py")} == {"test_packaging.py"}  # only the whole package's own


def _user_project(tmp_path: Path) -> Path:
    """A working directory like many users': its own tasks.py (Prefect, Celery, invoke), flows.py, storage.py ..."""
    for name in FOLDERS:
        (tmp_path / f"{name}.py").write_text(f'raise ImportError("the user\'s own {name}.py was imported")\n')
    return tmp_path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def test_the_cli_works_next_to_a_users_own_tasks_py(tmp_path: Path) -> None:
    cwd = _user_project(tmp_path)
    cli = Path(sys.executable).parent / "instructzero"
    listed = subprocess.run([str(cli), "tasks"], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "word_sorting" in listed.stdout
    # `python -m` puts the working directory first on sys.path: the strongest case for shadowing
    estimate = subprocess.run(
        [
            sys.executable,
            "-m",
            "instructzero.flows.cli",
            "estimate",
            "--task",
            "sum",
            "--store",
            f"sqlite:///{tmp_path / 'store.db'}",
        ],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert estimate.returncode == 0, estimate.stderr
    assert "calls" in estimate.stdout


def test_a_script_importing_the_flow_works_next_to_a_users_own_modules(tmp_path: Path) -> None:
    cwd = _user_project(tmp_path)
    (cwd / "search.py").write_text(
        "from instructzero.flows.instruction_search import instructzero_flow\n"
        "from instructzero.flows.params import RunConfig\n"
        "from instructzero.storage.repository import RunStore\n"
        "from instructzero.tasks.data.task_data import load_task\n"
        "config = RunConfig(data={'task': 'sum'})\n"
        "print(instructzero_flow.name, config.data.task, len(load_task('sum', None).examples) > 0, RunStore.__name__)\n"
    )
    result = subprocess.run(
        [sys.executable, "search.py"], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["instructzero", "sum", "True", "RunStore"]
