"""Fixtures for server tests (see conftest.py).

* `echo_server` / `echo_server_url` (session): the rule-based test backend (see
`instructzero.servers.openai_compatible`),
  model id "rule-based", no faults. Tests that inject faults or count requests start their own with `make_server`.
* `gemma_server` / `gemma_server_url` (session): the transformers backend serving the packaged Gemma-3 270M, model id
  "gemma3-270m"; the model is loaded once per session.
* `smollm2_server` / `smollm2_server_url` (session): the transformers backend serving the packaged chat model
  SmolLM2-135M-Instruct (the default black box) with its own chat template, model id "smollm2-135m-instruct".
* `make_server`: factory `make_server(backend="rule", **kwargs) -> ServerHandle`; every server it starts is stopped
  after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from instructzero.servers.openai_compatible import ServerHandle, start_server_in_thread


@pytest.fixture(scope="session")
def echo_server() -> Iterator[ServerHandle]:
    handle = start_server_in_thread("rule", model_name="rule-based")
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def echo_server_url(echo_server: ServerHandle) -> str:
    return echo_server.base_url


@pytest.fixture(scope="session")
def gemma_server() -> Iterator[ServerHandle]:
    # one generation thread: CI boxes are small and shared, where oversubscribed OpenMP threads crawl
    from instructzero.tasks.generation.model_assets import PACKAGED_GEMMA

    handle = start_server_in_thread(
        "transformers", model=PACKAGED_GEMMA, model_name="gemma3-270m", torch_threads=1, startup_timeout_s=300
    )
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def gemma_server_url(gemma_server: ServerHandle) -> str:
    return gemma_server.base_url


def _packaged_chat_server(model: str) -> Iterator[ServerHandle]:
    """A packaged chat model behind the project's server, served under its own name (one generation thread)."""
    handle = start_server_in_thread(
        "transformers", model=model, model_name=model, torch_threads=1, max_batch=4, startup_timeout_s=600
    )
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def smollm2_server() -> Iterator[ServerHandle]:
    from instructzero.tasks.generation.model_assets import PACKAGED_SMOLLM2

    yield from _packaged_chat_server(PACKAGED_SMOLLM2)


@pytest.fixture(scope="session")
def smollm2_server_url(smollm2_server: ServerHandle) -> str:
    return smollm2_server.base_url


@pytest.fixture(scope="session")
def default_black_box_server() -> Iterator[ServerHandle]:
    """The embedded black box of `instructzero run` (packaged Qwen2.5-Coder-0.5B-Instruct) behind real HTTP."""
    from instructzero.tasks.generation.model_assets import DEFAULT_BLACK_BOX

    yield from _packaged_chat_server(DEFAULT_BLACK_BOX)


@pytest.fixture(scope="session")
def default_black_box_url(default_black_box_server: ServerHandle) -> str:
    return default_black_box_server.base_url


@pytest.fixture
def make_server() -> Iterator[Callable[..., ServerHandle]]:
    started: list[ServerHandle] = []

    def start(backend: str = "rule", **kwargs: Any) -> ServerHandle:
        handle = start_server_in_thread(backend, **kwargs)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.stop()
