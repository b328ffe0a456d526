"""The `instructzero` command line, in-process: listing, SQL, export, maintenance and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from instructzero.flows.cli import EXIT_USER_ERROR, main
from instructzero.storage.errors import StoreError
from instructzero.storage.repository import RunStore


def test_tasks_lists_builtins_without_data_dir(capsys) -> None:
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for name in ("sum", "diff", "word_sorting", "num_to_verbal"):
        assert name in out


def test_tasks_lists_shared_data(shared_data_dir: Path, capsys) -> None:
    assert main(["tasks", "--data-dir", str(shared_data_dir)]) == 0
    out = capsys.readouterr().out
    assert "translation_en-de" in out and "navigate" in out


def test_sql_answers_on_a_store(populated_store: str, capsys) -> None:
    assert (
        main(["sql", "SELECT task, dev_score FROM best_instructions", "--store", populated_store, "--format", "json"])
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert rows and rows[0]["task"] == "sum"


def test_sql_refuses_writes_and_leaves_the_store_unchanged(populated_store: str, tmp_path: Path, capsys) -> None:
    db = tmp_path / "store.db"
    before = db.read_bytes()
    for hostile in (
        "DELETE FROM store.runs",
        "ATTACH '/tmp/other.db' AS other",
        f"COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'",
        "SELECT 1; DROP TABLE store.runs",
    ):
        assert main(["sql", hostile, "--store", populated_store]) == EXIT_USER_ERROR
        err = capsys.readouterr().err
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert db.read_bytes() == before
    assert not (tmp_path / "x.csv").exists()


def test_export_writes_parquet(populated_store: str, tmp_path: Path) -> None:
    target = tmp_path / "scores.parquet"
    assert main(["export", "score_by_iteration", str(target), "--store", populated_store]) == 0
    assert pq.read_table(target).num_rows == 3


def test_runs_and_db_upgrade(populated_store: str, capsys) -> None:
    assert main(["runs", "--store", populated_store]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["RUN", "STATUS", "TASK", "CAND", "DEV", "TEST", "STARTED", "NAME"]
    # populate's best candidate is the last one: dev 5/6, never tested
    assert row.split()[1:6] == ["stale", "sum", "6", "0.833", "-"] and row.endswith("run-a")
    assert main(["db", "upgrade", "--store", populated_store]) == 0


def test_a_run_is_named_by_id_name_or_id_prefix(populated_store: str, tmp_path: Path, capsys) -> None:
    """Wherever a run is named (resume, pareto): its full id, its name, or a unique start of its id."""
    with RunStore(populated_store) as store:
        [run] = store.list_runs()
        assert store.find_run(run.id) == store.find_run("run-a") == store.find_run(run.id[:6]) == run
        with pytest.raises(StoreError, match=r"no run with id or name 'nope'"):
            store.find_run("nope")
        with pytest.raises(StoreError, match=r"4 characters at least"):
            store.find_run(run.id[:3])
    assert main(["pareto", "run-a", "--store", populated_store]) == 0
    assert f"Pareto front of run 'run-a' ({run.id})" in capsys.readouterr().out
    assert main(["pareto", run.id[:8], "--store", populated_store]) == 0
    assert run.id in capsys.readouterr().out


def test_two_runs_sharing_an_id_prefix_are_not_guessed(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text

    url = f"sqlite:///{tmp_path / 's.db'}"
    RunStore(url).close()
    engine = create_engine(url)
    with engine.begin() as conn:
        for run_id in ("abcd" + "1" * 28, "abcd" + "2" * 28):
            conn.execute(
                text(
                    "INSERT INTO runs (id, name, task, status, config, seed, versions, splits, started_at) "
                    "VALUES (:id, 'r', 'sum', 'completed', '{}', 0, '{}', '{}', '2026-01-01 00:00:00')"
                ),
                {"id": run_id},
            )
    engine.dispose()
    with RunStore(url) as store:
        with pytest.raises(StoreError, match=r"'abcd' is the start of several run ids \(abcd1+, abcd2+\)"):
            store.find_run("abcd")
        assert store.find_run("abcd2").id == "abcd" + "2" * 28


def test_a_listing_cut_short_by_its_reader_ends_quietly(populated_store: str) -> None:
    """`instructzero sql ... | head`: what the reader wanted, then a quiet exit with SIGPIPE's status (141), no
    traceback (the output is far larger than the pipe's buffer, so the write does fail)."""
    import subprocess
    import sys

    command = f'"{sys.executable}" -m instructzero.flows.cli sql --store {populated_store} --format csv'
    out = subprocess.run(
        ["bash", "-c", f'{command} "SELECT range FROM range(300000)" | head -c 6; echo " ${{PIPESTATUS[0]}}"'],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.stdout == "range\n 141\n" and out.stderr == "", out


def test_a_read_only_store_is_refused_before_the_run_starts(tmp_path: Path, capsys) -> None:

    RunStore(f"sqlite:///{tmp_path / 'ro.db'}").close()
    before = (tmp_path / "ro.db").read_bytes()
    url = f"sqlite:///file:{tmp_path / 'ro.db'}?mode=ro&uri=true"
    assert main(["run", "--task", "sum", "--store", url]) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "not writable" in err and len(err.splitlines()) == 1
    assert (tmp_path / "ro.db").read_bytes() == before


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "--task", "no_such_task"], "no_such_task"),
        (["run", "--task", "sum", "--store", "notadb://x"], "notadb://x"),
        (["run", "--task", "sum", "--n-dev", "0"], "n_dev"),
        (["run", "--task", "sum", "--black-box-url", "http://127.0.0.1:9/v1"], "127.0.0.1:9"),
        (["run", "--task", "sum", "--generator", "./no/such/model"], "no/such/model"),
        (["run", "--task", "sum", "--device", "bogus"], "device"),
        (["resume", "0123456789abcdef", "--store", "sqlite:///{tmp}/empty.db"], "0123456789abcdef"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    argv: list[str], needle: str, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "instructzero.db").exists()


@pytest.mark.parametrize("command", ["bench", "serve"])
def test_pass_through_subcommands_take_leading_options(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_bench_reports_bad_options_as_a_user_error(tmp_path: Path, capsys) -> None:
    store = tmp_path / "bench.db"
    code = main(
        [
            "bench",
            "--quality",
            "--tasks",
            "no_such_task",
            "--seeds",
            "0",
            "--endpoint",
            "echo",
            "--store",
            f"sqlite:///{store}",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == EXIT_USER_ERROR
    assert "no_such_task" in capsys.readouterr().err
    assert not store.exists()  # nothing written


def test_every_flag_of_every_command_says_what_it_does() -> None:
    """`--seed`, `--soft-tokens`, `--intrinsic-dim`, `--concurrency`, `--max-tokens` and `--store` had no help."""
    from instructzero.flows.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    silent = {
        name: [a.option_strings[-1] for a in command._actions if a.option_strings and not a.help]
        for name, command in commands.items()
    }
    assert {name: flags for name, flags in silent.items() if flags} == {}


@pytest.mark.parametrize(
    ("label", "gain", "p", "verdict"),
    [
        ("empty", 0.9, 1e-8, "the found instruction is better"),
        ("baseline-1", -0.16, 0.125, "no evidence either way at 0.05"),
        ("baseline-1", -0.30, 0.01, "the found instruction is worse: keep your instruction"),
        ("constant", -0.30, 0.01, "the found instruction is worse: keep the constant instruction"),
    ],
)
def test_each_comparison_ends_in_a_verdict(label: str, gain: float, p: float, verdict: str) -> None:
    """One line per comparison says what to do, from the paired test (not from the bootstrap interval)."""
    from types import SimpleNamespace

    from instructzero.flows.cli import _verdict

    assert _verdict(SimpleNamespace(label=label, gain=gain), p) == verdict


def test_the_summary_lists_distinct_instructions_with_their_counts() -> None:
    """Ten candidates writing three instructions list three lines, best first, each with how many wrote it."""
    from dataclasses import replace

    from instructzero.flows.instruction_search import distinct_top
    from instructzero.tasks.optimisation.selection import ranked
    from tests.plugins.store import make_candidate

    texts = ["a", "b", "a", "c", "a", "b", "a", "c", "a", "b"]
    scores = {"a": 1.0, "b": 0.5, "c": 0.75}
    candidates = [  # dev_score as the store reads it back
        replace(make_candidate(i, t, {"d0": scores[t]}, iteration=i // 2), dev_score=scores[t])
        for i, t in enumerate(texts)
    ]
    assert distinct_top(ranked(candidates)) == (("a", 1.0, 5), ("c", 0.75, 2), ("b", 0.5, 3))
    assert distinct_top(ranked(candidates), n=1) == (("a", 1.0, 5),)
