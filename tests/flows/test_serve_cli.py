"""`instructzero serve`: its help names the command and the rule backend's rules, and at start it says how to
point a run at it (a real server process on 127.0.0.1)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from instructzero.flows.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_serve_help_names_the_command_and_the_rules(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert done.value.code == 0 and out.startswith("usage: instructzero serve")
    assert "sum/add/plus/total" in out and "upper-cased" in out and "echoes the input" in out
    assert "qwen2.5-coder-0.5b-instruct" in out  # the default model is the embedded black box of `run`


def test_serve_says_how_to_use_it_and_answers(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "instructzero.flows.cli",
            "serve",
            "--backend",
            "rule",
            "--port",
            str(port),
            "--served-model-name",
            "rules",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = server.stdout.readline()
        assert first.startswith(f"serving 'rules' (rule) at http://127.0.0.1:{port}/v1")
        assert (
            f"instructzero run --black-box-url http://127.0.0.1:{port}/v1 --black-box-model rules "
            "--black-box-api completions"
        ) in first
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    assert json.load(resp)["model"] == "rules"
                    break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, server.stderr.read()
                time.sleep(0.1)
    finally:
        server.terminate()
        server.wait(timeout=20)
