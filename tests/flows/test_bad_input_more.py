"""Bad input: one `error:` line, exit status 2, nothing written or created."""

from __future__ import annotations

import hashlib
import socket
import sqlite3
import time
from pathlib import Path

import pytest

from instructzero.flows.cli import main
from instructzero.storage.errors import StoreError
from instructzero.storage.repository import RunStore
from tests.plugins.prefect import tiny_run_args


def _error(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (argv, out, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--seed", "1125899906842624"], "seed=1125899906842624"),
        (["--seed", "-1"], "seed=-1"),
        (["--device", "bogus"], "generator.device='bogus'"),
    ],
)
def test_bad_settings_are_one_line_before_anything_is_written(extra, needle, capsys, tmp_path) -> None:
    err = _error(capsys, ["run", "--task", "sum", "--store", f"sqlite:///{tmp_path}/sub/s.db", *extra])
    assert needle in err
    assert list(tmp_path.iterdir()) == []


def test_bad_json_in_the_environment_is_a_config_error(capsys, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("INSTRUCTZERO_BO", "{bad json")
    err = _error(capsys, ["run", "--task", "sum", "--store", f"sqlite:///{tmp_path}/s.db"])
    assert '"bo"' in err and "environment" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_deeply_nested_json_is_task_data_error(kind, capsys, tmp_path) -> None:
    deep = "[" * 50_000 + "]" * 50_000
    data = tmp_path / "data"
    data.mkdir()
    path = data / f"deep.{kind}"
    rows = [("a", "A"), ("b", "B"), ("c", "C"), ("d", "D")]
    if kind == "jsonl":
        path.write_text(
            "\n".join(
                ['{"input": "x", "output": ' + deep + "}"] + [f'{{"input": "{i}", "output": "{o}"}}' for i, o in rows]
            )
            + "\n"
        )
    else:
        path.write_text("input,output\nx," + deep + "\n" + "".join(f"{i},{o}\n" for i, o in rows))
    err = _error(capsys, ["run", "--task", str(path), "--store", f"sqlite:///{tmp_path}/s.db"])
    assert "nested too deeply" in err and str(path) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_reading_commands_never_create_or_alter_a_database(capsys, tmp_path) -> None:
    other = tmp_path / "other-app.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (t TEXT)")
        conn.execute("INSERT INTO notes VALUES ('mine')")
    conn.close()
    before = hashlib.sha256(other.read_bytes()).hexdigest()
    assert "not an instructzero store" in _error(capsys, ["runs", "--store", f"sqlite:///{other}"])
    assert "not an instructzero store" in _error(capsys, ["resume", "abc", "--store", f"sqlite:///{other}"])
    assert hashlib.sha256(other.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other-app.db"]  # no -wal/-shm either

    assert "does not exist" in _error(capsys, ["runs", "--store", str(tmp_path / "typo.db")])
    assert "does not exist" in _error(capsys, ["resume", "abc", "--store", str(tmp_path / "new" / "dir" / "x.db")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other-app.db"]

    store_url = f"sqlite:///{tmp_path / 'real.db'}"
    RunStore(store_url).close()
    assert "no run with id or name 'abc'" in _error(capsys, ["resume", "abc", "--store", store_url])


def test_postgres_that_accepts_but_never_answers_fails_in_seconds(tmp_path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody ever answers
        port = silent.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(StoreError, match=f"127.0.0.1:{port}"):
            RunStore(f"postgresql+psycopg://u@127.0.0.1:{port}/db?connect_timeout=2")
        elapsed = time.monotonic() - start
    print(f"\nsilent PostgreSQL port: refused after {elapsed:.1f}s (connect_timeout 2 s; default 10 s)")
    assert elapsed < 20


# ------------------------------------------------------------------------------ refused before Prefect starts
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_prefect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad input must be refused before Prefect starts: starting it fails the test."""
    import instructzero.flows.cli as cli

    def refuse() -> None:
        raise AssertionError("Prefect was started")

    monkeypatch.setattr(cli, "_start_prefect", refuse)


def _one_line(err: str) -> str:
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert len(err) < 600, err  # one readable line, whatever the input was
    return err


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--max-cost", "inf"], ["budget.max_cost_usd='inf'", "finite"]),
        (["--max-cost", "nan"], ["budget.max_cost_usd='nan'", "finite"]),
        (["--max-cost", "-1"], ["budget.max_cost_usd='-1'"]),
        (["--soft-scale", "inf"], ["generator.soft_scale", "finite"]),
        (["--length-penalty", "nan"], ["bo.length_penalty", "finite"]),
        (["--meta-prompt", ""], ["generator.template=''", "{demos}"]),
        (["--meta-prompt", "chat-short"], ["generator.template='chat-short'", "instructzero", "chat-minimal"]),
        (["--black-box-url", "http://[::1"], ["black_box.base_url", "'http://[::1'", "cannot be parsed"]),
        (["--black-box-url", "http://me:s3cret@[::1"], ["cannot be parsed", "me:***@"]),
        (["--black-box-url", "http://127.0.0.1:99999/v1"], ["black_box.base_url", "Port out of range"]),
    ],
)
def test_bad_numbers_prompts_and_urls_are_one_line_before_prefect(extra, needles, no_prefect, capsys, tmp_path) -> None:
    err = _error(capsys, ["run", "--task", "sum", "--store", f"sqlite:///{tmp_path}/sub/s.db", *extra])
    assert all(n in _one_line(err) for n in needles) and "s3cret" not in err, err
    assert list(tmp_path.iterdir()) == []


def _deep_object(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


@pytest.mark.parametrize(
    "name, value, needles",
    [
        ("INSTRUCTZERO_BUDGET__MAX_COST_USD", "inf", ["budget.max_cost_usd='inf'", "finite"]),
        ("INSTRUCTZERO_BLACK_BOX__TIMEOUT_S", "nan", ["black_box.timeout_s='nan'", "finite"]),
        ("INSTRUCTZERO_BUDGET", '{"max_cost_usd": "Infinity"}', ["budget.max_cost_usd", "finite"]),
        ("INSTRUCTZERO_LEASE_TIMEOUT_S", "nan", ["INSTRUCTZERO_LEASE_TIMEOUT_S", "'nan'"]),
        ("INSTRUCTZERO_BO", _deep_object(10_000), ["INSTRUCTZERO_BO", "nested too deeply"]),
        ("INSTRUCTZERO_GENERATOR", "[" * 10_000 + "]" * 10_000, ["INSTRUCTZERO_GENERATOR", "nested too deeply"]),
        ("INSTRUCTZERO_BO", _deep_object(300), ["bo.a=", "Extra inputs are not permitted"]),  # parses: shown cut short
        ("INSTRUCTZERO_BO", '{"iterations": ', ['"bo"', "environment"]),
        ("INSTRUCTZERO_CACHE_DIR", "/dev/null/x", ["'/dev/null/x'", "Not a directory"]),
    ],
)
def test_bad_environment_values_are_one_line_before_prefect(
    name, value, needles, no_prefect, capsys, monkeypatch, tmp_path
) -> None:
    monkeypatch.setenv(name, value)
    err = _one_line(_error(capsys, ["run", "--task", "sum", "--store", f"sqlite:///{tmp_path}/s.db"]))
    assert all(n in err for n in needles), err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "name, value, needle",
    [
        ("INSTRUCTZERO_LEASE_TIMEOUT_S", "nan", "INSTRUCTZERO_LEASE_TIMEOUT_S must be positive, got 'nan'"),
        ("INSTRUCTZERO_BUDGET__MAX_COST_USD", "inf", "budget.max_cost_usd='inf': Input should be a finite number"),
    ],
)
def test_bad_environment_values_in_a_real_process(name, value, needle, cli_env, tmp_path) -> None:
    import subprocess
    import sys

    env = dict(cli_env, PYTHONPATH=str(REPO), **{name: value})
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "instructzero.flows.cli",
            "run",
            "--task",
            "sum",
            "--store",
            f"sqlite:///{tmp_path}/s.db",
        ],
        env=env,
        cwd=tmp_path,
        text=True,
        capture_output=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert needle in _one_line(result.stderr) and result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_an_unavailable_device_is_refused_before_anything_loads(no_prefect, capsys, monkeypatch, tmp_path) -> None:
    import torch

    import instructzero.tasks.generation.model_assets as assets

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was resolved before the device was checked")

    monkeypatch.setattr(assets, "resolve_model_path", no_loading)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    err = _one_line(
        _error(capsys, ["run", "--task", "sum", "--store", f"sqlite:///{tmp_path}/s.db", "--device", "cuda"])
    )
    assert "'cuda'" in err and "CUDA is not available" in err
    assert list(tmp_path.iterdir()) == []


READING_COMMANDS = [
    ["runs"],
    ["resume", "abc"],
    ["pareto", "abc"],
    ["sql", "SELECT 1"],
    ["export", "runs", "{tmp}/out.parquet"],
    ["db", "upgrade"],
]


@pytest.mark.parametrize("argv", READING_COMMANDS, ids=lambda a: a[0])
def test_a_mistyped_store_path_is_refused_and_never_created(argv, no_prefect, capsys, tmp_path) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    typo = tmp_path / "sub" / "instructzer.db"
    err = _one_line(_error(capsys, [*argv, "--store", f"sqlite:///{typo}"]))
    assert "no store at" in err and str(typo) in err and "does not exist" in err
    too_long = tmp_path / ("x" * 300 + ".db")
    assert "File name too long" in _one_line(_error(capsys, [*argv, "--store", f"sqlite:///{too_long}"]))
    assert list(tmp_path.iterdir()) == []


def test_db_upgrade_creates_a_store_only_when_asked(capsys, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    assert "--create" in _one_line(_error(capsys, ["db", "upgrade", "--store", url]))
    assert list(tmp_path.iterdir()) == []
    assert main(["db", "upgrade", "--store", url, "--create"]) == 0
    assert "upgraded from an empty database" in capsys.readouterr().out
    assert main(["db", "upgrade", "--store", url]) == 0
    assert "already at the latest schema" in capsys.readouterr().out


@pytest.mark.parametrize("flag", ["--csv", "--png"])
def test_pareto_output_into_a_missing_folder_is_one_line_before_reading(
    flag, populated_store, capsys, tmp_path
) -> None:
    with RunStore(populated_store, read_only=True) as store:
        run_id = store.list_runs()[0].id

    def files() -> list[str]:  # SQLite's -wal/-shm come and go with connections
        return sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(("-wal", "-shm")))

    before = files()
    capsys.readouterr()
    assert main(["pareto", run_id, "--store", populated_store, flag, str(tmp_path / "missing" / "front.out")]) == 2
    out, err = capsys.readouterr()
    assert "does not exist" in _one_line(err) and flag in err and out == ""
    assert main(["pareto", run_id, "--store", populated_store, flag, str(tmp_path)]) == 2
    assert "is a directory" in _one_line(capsys.readouterr().err)
    assert files() == before


def test_pivot_is_a_read_only_query_and_writes_stay_refused(populated_store, capsys, tmp_path) -> None:
    path = Path(populated_store.removeprefix("sqlite:///"))
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    for sql, row in [
        ("PIVOT store.runs ON status USING count(*)", "1"),  # no IN list: DuckDB first makes a temporary ENUM
        ("PIVOT store.candidates ON phase USING count(*) GROUP BY run_id", "4"),
        ("SELECT * FROM (PIVOT store.runs ON status IN ('completed', 'running') USING count(*))", "0"),
        ("WITH p AS (PIVOT store.runs ON status USING count(*)) SELECT * FROM p", "1"),
        ("UNPIVOT (SELECT name, task FROM store.runs) ON name, task INTO NAME k VALUE v", "run-a"),
    ]:
        capsys.readouterr()
        assert main(["sql", sql, "--store", populated_store, "--format", "csv"]) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        assert row in out.splitlines()[1].split(","), (sql, out)
    for sql in [
        "PIVOT store.runs ON status USING count(*); DROP TABLE store.runs",
        "CREATE TYPE e AS ENUM ('a'); PIVOT store.runs ON status USING count(*)",
        "CREATE TABLE t AS PIVOT store.runs ON status USING count(*)",
        "COPY (PIVOT store.runs ON status USING count(*)) TO '{tmp}/leak.csv'",
    ]:
        err = _one_line(_error(capsys, ["sql", sql.replace("{tmp}", str(tmp_path)), "--store", populated_store]))
        assert "query refused" in err, (sql, err)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert not (tmp_path / "leak.csv").exists()


def _ends_in_one_error_line(err: str) -> str:
    """Prefect's own failure records (with their tracebacks) are gone; the last line is ours."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and not any("| ERROR" in line for line in lines), err[-3000:]
    assert lines[-1].startswith("error: ") and sum(line.startswith("error: ") for line in lines) == 1, err[-3000:]
    return lines[-1]


@pytest.mark.slow
@pytest.mark.parametrize(
    "faults, needle, resumable",
    [
        (
            dict(script=("401",) * 100),
            "HTTP 401: Incorrect API key provided",
            True,
        ),  # GET /models passed, calls refused
        (dict(rate_500=1.0), "failed after 2 attempts; last error: HTTP 500", True),
        (dict(script=("400",) * 100), "HTTP 400: Invalid request", False),
    ],
)
def test_a_failing_black_box_ends_the_run_in_one_error_line(
    faults,
    needle,
    resumable,
    prefect_harness,
    isolated_results,
    make_server,
    tiny_generator_dir,
    capsys,
    monkeypatch,
    tmp_path,
) -> None:
    from instructzero.servers.faults import FaultConfig

    server = make_server("rule", model_name="rule-based", faults=FaultConfig(**faults))
    monkeypatch.setenv("INSTRUCTZERO_BLACK_BOX__MAX_RETRIES", "1")
    url = f"sqlite:///{tmp_path / 's.db'}"
    capsys.readouterr()
    code = main(["run", *tiny_run_args(url, server.base_url, tiny_generator_dir)])
    err = capsys.readouterr().err
    last = _ends_in_one_error_line(err)
    assert code == 2 and needle in last, last
    (run,) = RunStore(url, read_only=True).list_runs()
    assert run.status == "failed" and run.error.startswith("BlackBoxError") and run.id in last
    # the hint works when pasted: it names the store the run is in
    assert (f"`instructzero resume {run.id} --store {url}`" in last) == resumable, last
    print(f"\n{needle.split(':')[0]}: exit {code}, stderr {len(err.splitlines())} lines, last: {last[:160]}...")


@pytest.mark.slow
def test_a_lease_refused_inside_the_flow_is_one_line(
    prefect_harness, isolated_results, echo_server_url, tiny_generator_dir, capsys, monkeypatch, tmp_path
) -> None:
    """Another process claimed the run after this one's check (the race `_check_not_held` cannot close): the
    flow's claim refuses it, and that is one line too, not Prefect's ~80 lines of traceback first."""
    import instructzero.flows.cli as cli
    from instructzero.flows.params import build_config
    from tests.plugins.prefect import tiny_run_overrides

    url = f"sqlite:///{tmp_path / 's.db'}"
    config = build_config(**tiny_run_overrides(url, echo_server_url, tiny_generator_dir))
    store = RunStore(url)
    run = store.create_run(
        name="held",
        task="sum",
        config=config.recorded(),
        seed=0,
        versions={},
        projection_hash=None,
        splits={},
        lease_owner="another-host:4242:cafe",
    )
    store.set_run_status(run.id, "interrupted")
    monkeypatch.setattr(cli, "_check_not_held", lambda config, run: None)  # lost the race: the flow finds out
    started = []
    monkeypatch.setattr(cli, "_start_prefect", lambda start=cli._start_prefect: started.append(start()))
    capsys.readouterr()
    code = main(["resume", run.id, "--store", url])
    assert started, "the refusal was meant to come from the flow's own claim"
    err = capsys.readouterr().err
    last = _ends_in_one_error_line(err)
    assert code == 2 and "being run by another process (another-host:4242:cafe" in last, last
    after = store.get_run(run.id)
    assert (after.lease_owner, after.status) == ("another-host:4242:cafe", "interrupted")
    store.close()
