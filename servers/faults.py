"""Fault injection and request statistics for the local OpenAI-compatible server.

Reliability tests and benchmarks need an endpoint that misbehaves the way hosted APIs do (rate limits, 5xx, hangs,
garbage bodies) but reproducibly: faults are drawn from a seeded RNG, or taken from an explicit script first so a
test can say "the first two requests fail with 429, the rest succeed".
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

FaultKind = Literal["429", "500", "timeout", "malformed", "empty", "400", "401", "html"]
FAULT_KINDS: tuple[FaultKind, ...] = ("429", "500", "timeout", "malformed", "empty")
"""The kinds drawn at a rate (`rate_<kind>`)."""
SCRIPT_ONLY_KINDS: tuple[FaultKind, ...] = ("400", "401", "html")
"""Kinds a script can ask for: a rejected request (400), a key refused on completions although GET /models passed
(401), a 200 answer whose body is an HTML page (a proxy's or captive portal's)."""


@dataclass(frozen=True)
class FaultConfig:
    """What the server does wrong, per completion request. Rates are independent slices of [0, 1)."""

    latency_s: float = 0.0  # fixed delay added to every completion request (simulates a remote API)
    rate_429: float = 0.0  # share of requests answered 429 Too Many Requests
    rate_500: float = 0.0  # share answered 500 Internal Server Error
    rate_timeout: float = 0.0  # share that hang for `hang_s` before answering (longer than the client timeout)
    rate_malformed: float = 0.0  # share answered 200 with a body that is not JSON
    rate_empty: float = 0.0  # share answered 200 with `choices: []`
    hang_s: float = 10.0  # how long a "timeout" fault hangs
    retry_after_s: float | None = None  # the Retry-After header of a 429 (None: none sent)
    seed: int = 0  # seeds the fault RNG
    script: tuple[FaultKind | Literal["ok"], ...] = ()  # consumed first, one entry per request, before the rates

    def __post_init__(self) -> None:
        rates = (self.rate_429, self.rate_500, self.rate_timeout, self.rate_malformed, self.rate_empty)
        if any(r < 0 for r in rates) or sum(rates) > 1.0 + 1e-9:
            raise ValueError(f"fault rates must be >= 0 and sum to <= 1, got {rates}")
        if self.latency_s < 0 or self.hang_s < 0:
            raise ValueError(f"latency_s and hang_s must be >= 0, got {self.latency_s}, {self.hang_s}")
        known = (*FAULT_KINDS, *SCRIPT_ONLY_KINDS, "ok")
        bad = [s for s in self.script if s not in known]
        if bad:
            raise ValueError(f"unknown fault kinds in script: {bad}; known: {known}")


@dataclass
class ServerStats:
    """Counters exposed at /admin/stats. Mutated only on the server's event loop (no lock needed there)."""

    requests: Counter[str] = field(default_factory=Counter)  # path -> count (every request)
    completions: int = 0  # completion requests answered successfully
    faults: Counter[str] = field(default_factory=Counter)  # fault kind -> count
    in_flight: int = 0  # completion requests being handled now
    max_in_flight: int = 0  # high-water mark of `in_flight`
    prompt_tokens: int = 0
    completion_tokens: int = 0
    roles: Counter[str] = field(default_factory=Counter)  # chat message role -> count (what the requests carried)

    @property
    def completion_requests(self) -> int:
        """Requests to either completion endpoint (answered or not)."""
        return self.requests["/v1/chat/completions"] + self.requests["/v1/completions"]

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": dict(self.requests),
            "completion_requests": self.completion_requests,
            "completions": self.completions,
            "faults": dict(self.faults),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "roles": dict(self.roles),
        }


class FaultInjector:
    """Decides, per request, whether and how to fail. Thread-safe so the config can be swapped from tests."""

    def __init__(self, config: FaultConfig) -> None:
        self._lock = threading.Lock()
        self.configure(config)

    def configure(self, config: FaultConfig) -> None:
        """Replace the fault config and restart its RNG and script."""
        with self._lock:
            self.config = config
            self._rng = random.Random(config.seed)
            self._script = list(config.script)

    def draw(self) -> FaultKind | None:
        """The fault for the next request, or None to answer normally."""
        with self._lock:
            if self._script:
                kind = self._script.pop(0)
                return None if kind == "ok" else kind
            r = self._rng.random()
            c = self.config
            edge = 0.0
            rates = (c.rate_429, c.rate_500, c.rate_timeout, c.rate_malformed, c.rate_empty)
            for kind, rate in zip(FAULT_KINDS, rates):
                edge += rate
                if r < edge:
                    return kind
            return None
