"""Bad input (issue 12, section 5): one `error:` line, exit status 2, nothing written or created."""

from __future__ import annotations

import hashlib
import socket
import sqlite3
import time
from pathlib import Path

import pytest

from flows.cli import main
from storage.errors import StoreError
from storage.repository import RunStore


def _error(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (argv, out, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("extra, needle", [
    (["--seed", "1125899906842624"], "seed=1125899906842624"),
    (["--seed", "-1"], "seed=-1"),
    (["--device", "bogus"], "generator.device='bogus'"),
])
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
        path.write_text("\n".join(['{"input": "x", "output": ' + deep + "}"]
                                  + [f'{{"input": "{i}", "output": "{o}"}}' for i, o in rows]) + "\n")
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
    assert "no run with id 'abc'" in _error(capsys, ["resume", "abc", "--store", store_url])


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
