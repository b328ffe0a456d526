"""Re-running a stored run by `--name`: a completed one is reported as such and left untouched (nothing sent,
rewritten or counted as paid); one with other settings is refused in one line before Prefect starts."""

from __future__ import annotations

import pytest

import instructzero.flows.cli as cli
from instructzero.flows.params import build_config
from instructzero.storage.repository import RunStore
from instructzero.tasks.data.splits import make_splits
from instructzero.tasks.data.task_data import load_task


def _stored_run(url: str, status: str, **data: object) -> str:
    config = build_config(name="nightly", store_url=url, data=data)
    data = load_task(config.data.task, config.data.data_dir)
    splits = make_splits(
        data, n_exemplars=config.data.n_exemplars, n_dev=config.data.n_dev, n_test=config.data.n_test, seed=config.seed
    )
    store = RunStore(url)
    run = store.create_run(
        name="nightly",
        task=data.name,
        config=config.recorded(),
        seed=config.seed,
        versions={},
        projection_hash=None,
        splits=splits.manifest(),
    )
    store.set_run_status(run.id, status)
    return run.id


@pytest.fixture
def no_prefect(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> None:
        raise AssertionError("Prefect was started")

    monkeypatch.setattr(cli, "_start_prefect", refuse)


def test_a_completed_run_rerun_by_name_is_reported_and_left_untouched(sqlite_url, no_prefect, capsys) -> None:
    run_id = _stored_run(sqlite_url, "completed")
    before = RunStore(sqlite_url).get_run(run_id)

    assert cli.main(["run", "--name", "nightly", "--store", sqlite_url]) == 0

    out = capsys.readouterr().out
    assert f"run 'nightly' ({run_id}) is already complete" in out and "nothing re-run, nothing paid" in out
    assert "paid by this run" not in out
    after = RunStore(sqlite_url).get_run(run_id)
    assert (after.status, after.finished_at, after.lease_owner) == (before.status, before.finished_at, None)


def test_a_same_name_run_with_other_settings_is_refused_before_prefect(sqlite_url, no_prefect, capsys) -> None:
    run_id = _stored_run(sqlite_url, "interrupted")

    assert cli.main(["run", "--name", "nightly", "--store", sqlite_url, "--seed", "7"]) == 2

    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0] and run_id in err[0] and "different settings" in err[0]
    assert RunStore(sqlite_url).get_run(run_id).status == "interrupted"


def test_a_run_rerun_from_another_directory_is_the_same_run(sqlite_url, tmp_path, monkeypatch, no_prefect, capsys):
    """The data folder named relatively where the run was made and absolutely from elsewhere later is one folder:
    the completed run is found, not refused as "different settings" (the benchmarks' resume hit this); the same
    relative name from another directory is another folder, and is refused."""
    (tmp_path / "work" / "data").mkdir(parents=True)
    (tmp_path / "other" / "data").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    run_id = _stored_run(sqlite_url, "completed", data_dir="data")
    monkeypatch.chdir(tmp_path / "other")

    absolute = str(tmp_path / "work" / "data")
    assert cli.main(["run", "--name", "nightly", "--store", sqlite_url, "--data-dir", absolute]) == 0
    assert f"run 'nightly' ({run_id}) is already complete" in capsys.readouterr().out
    assert cli.main(["run", "--name", "nightly", "--store", sqlite_url, "--data-dir", "data"]) == 2
    assert "different settings" in capsys.readouterr().err
