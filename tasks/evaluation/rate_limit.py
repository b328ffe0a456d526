"""Requests- and tokens-per-minute limits of a hosted API, kept by the client instead of learnt from 429s.

A provider's rate limit is a sliding minute of requests and of tokens (prompt + max_tokens, as OpenAI counts it).
Concurrency alone does not keep under it: 8 requests in flight that answer in 0.3 s are 1,600 requests a minute.
`RateLimiter.acquire` waits until the request fits the last 60 s, then records it. One limiter per endpoint and
model is shared by every client of the process (each evaluation batch makes its own client and event loop), so
consecutive batches cannot each start with a fresh minute. A 429 that still happens is retried after the
server's Retry-After (`BlackBoxClient._backoff`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable

from instructzero.tasks.errors import ConfigError

WINDOW_S = 60.0


class RateLimiter:
    """At most `rpm` requests and `tpm` tokens in any 60 s (None: that limit is off). Thread- and loop-safe."""

    def __init__(self, rpm: float | None, tpm: int | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        if rpm is not None and rpm <= 0 or tpm is not None and tpm <= 0:
            raise ConfigError(f"rate limits must be positive, got rpm={rpm!r} tpm={tpm!r}")
        self.rpm, self.tpm, self._clock = rpm, tpm, clock
        self._sent: deque[tuple[float, int]] = deque()  # (time, tokens) of the requests of the last minute
        self._tokens = 0
        self._lock = threading.Lock()

    def _wait_s(self, tokens: int, now: float) -> float:
        """Seconds until a request of `tokens` fits (0: now); the caller holds the lock."""
        while self._sent and self._sent[0][0] <= now - WINDOW_S:
            self._tokens -= self._sent.popleft()[1]
        waits = [0.0]
        if self.rpm is not None and len(self._sent) + 1 > self.rpm:
            k = len(self._sent) + 1 - int(self.rpm)  # that many must leave the window first
            waits.append(self._sent[k - 1][0] + WINDOW_S - now)
        if self.tpm is not None and self._tokens + tokens > self.tpm:
            excess, freed = self._tokens + tokens - self.tpm, 0
            for sent_at, n in self._sent:
                freed += n
                if freed >= excess:
                    waits.append(sent_at + WINDOW_S - now)
                    break
        return max(waits)

    def reserve(self, tokens: int) -> float:
        """Record the request now if it fits and return 0, else return how long to wait before trying again."""
        if self.tpm is not None and tokens > self.tpm:
            raise ConfigError(
                f"one request needs up to {tokens} tokens, more than the limit of {self.tpm} tokens "
                "per minute: raise --tpm or lower max_tokens"
            )
        with self._lock:
            now = self._clock()
            wait = self._wait_s(tokens, now)
            if wait <= 0:
                self._sent.append((now, tokens))
                self._tokens += tokens
            return wait

    async def acquire(self, tokens: int) -> None:
        """Wait (asyncio) until a request of `tokens` fits the limits, and record it."""
        while (wait := self.reserve(tokens)) > 0:
            await asyncio.sleep(wait)


_SHARED: dict[tuple[str, str, float | None, int | None], RateLimiter] = {}
_SHARED_LOCK = threading.Lock()


def shared_limiter(endpoint: str, model: str, rpm: float | None, tpm: int | None) -> RateLimiter | None:
    """The process's one limiter for this endpoint, model and limits; None when both limits are off."""
    if rpm is None and tpm is None:
        return None
    key = (endpoint, model, rpm, tpm)
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = RateLimiter(rpm, tpm)
        return _SHARED[key]
