"""Requests- and tokens-per-minute limits (`--rpm`, `--tpm`) and the server's Retry-After: the limiter's arithmetic
on a fake clock, then the client against a real local server (its 429 faults, real HTTP)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

import instructzero.tasks.evaluation.rate_limit as rate_limit
from instructzero.flows.params import build_config
from instructzero.servers.faults import FaultConfig
from instructzero.servers.openai_compatible import ServerHandle
from instructzero.tasks.errors import ConfigError
from instructzero.tasks.evaluation.blackbox import BlackBoxClient, BlackBoxSettings
from instructzero.tasks.evaluation.rate_limit import RateLimiter
from instructzero.tasks.prompts import render_zero_shot


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_requests_per_minute_on_a_fake_clock() -> None:
    clock = Clock()
    limiter = RateLimiter(3, None, clock=clock)
    assert [limiter.reserve(1) for _ in range(3)] == [0.0, 0.0, 0.0]
    clock.now += 10
    assert limiter.reserve(1) == pytest.approx(50.0)  # the first of the three leaves the window at +60 s
    clock.now += 50
    assert limiter.reserve(1) == 0.0
    assert limiter.reserve(1) == 0.0  # the second and third (sent at +0 s) have left too: 2 in the window


def test_tokens_per_minute_on_a_fake_clock() -> None:
    clock = Clock()
    limiter = RateLimiter(None, 100, clock=clock)
    assert limiter.reserve(60) == 0.0
    clock.now += 5
    assert limiter.reserve(30) == 0.0
    clock.now += 5
    assert limiter.reserve(20) == pytest.approx(50.0)  # 110 > 100 until the 60 leave at +60 s
    clock.now += 50
    assert limiter.reserve(20) == 0.0
    with pytest.raises(ConfigError, match="more than the limit of 100 tokens per minute"):
        limiter.reserve(101)


def test_rate_limits_are_config_fields_with_flags() -> None:
    config = build_config(budget={"requests_per_minute": 60, "tokens_per_minute": 90_000})
    assert (config.budget.requests_per_minute, config.budget.tokens_per_minute) == (60, 90_000)
    with pytest.raises(ConfigError, match="requests_per_minute"):
        build_config(budget={"requests_per_minute": 0})
    from instructzero.flows.cli import _nested_overrides, build_parser

    args = build_parser().parse_args(["run", "--rpm", "30", "--tpm", "1000"])
    assert _nested_overrides(args)["budget"] == {"requests_per_minute": "30", "tokens_per_minute": "1000"}


def _settings(base_url: str, **kw) -> BlackBoxSettings:
    return BlackBoxSettings.at(
        base_url,
        model="rule-based",
        api="completions",
        api_key_env="IZ_TEST_NO_KEY",
        retry_base_delay_s=0.01,
        retry_max_delay_s=0.05,
        timeout_s=5.0,
        **kw,
    )


def test_the_client_keeps_the_requests_per_window(make_server: Callable[..., ServerHandle], monkeypatch) -> None:
    """A 1-second window stands in for the minute: 7 requests at rpm 3 need three windows, whatever the
    concurrency (8 in flight would send them all at once)."""
    monkeypatch.setattr(rate_limit, "WINDOW_S", 1.0)
    server = make_server("rule", model_name="rule-based")
    client = BlackBoxClient(_settings(server.base_url, requests_per_minute=3, concurrency=8))
    start = time.monotonic()
    answers = client.complete_many_sync([render_zero_shot("Add them.", f"{i} 1") for i in range(7)])
    assert [a.text for a in answers] == [str(i + 1) for i in range(7)]
    assert time.monotonic() - start >= 2.0  # requests 4-6 wait for the first window, 7 for the second
    assert server.stats()["completion_requests"] == 7


def test_retry_after_is_waited_out(make_server: Callable[..., ServerHandle]) -> None:
    """The local server's 429 says Retry-After: 1.5; the retry waits that long, not the 0.05 s backoff cap."""
    server = make_server("rule", model_name="rule-based", faults=FaultConfig(script=("429",), retry_after_s=1.5))
    start = time.monotonic()
    [answer] = BlackBoxClient(_settings(server.base_url)).complete_many_sync([render_zero_shot("Add.", "2 2")])
    assert (answer.text, answer.retries) == ("4", 1)
    assert time.monotonic() - start >= 1.5
    assert server.stats()["faults"] == {"429": 1}
