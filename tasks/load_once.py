"""Load each heavy object (a model, a sentence encoder) once per process, even when threads ask at the same time.

`functools.lru_cache` alone lets two threads that miss together both load: two copies of a 2.4 GB model, and
transformers' meta-device initialisation raced into `Cannot copy out of meta tensor` (seen with concurrent suite
members). Here the first caller of a key loads under that key's lock; the others wait for its result. A failed
load is not cached, so the next call tries again.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def load_once(maxsize: int) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: memoise by the call's arguments (at most `maxsize` results, least recently used evicted) with one
    load per key at a time. `.cache_clear()` empties it."""

    def decorate(load: Callable[P, R]) -> Callable[P, R]:
        results: OrderedDict[Hashable, Any] = OrderedDict()
        locks: dict[Hashable, threading.Lock] = {}
        guard = threading.Lock()  # protects `results` and `locks`, never held while loading

        @functools.wraps(load)
        def cached(*args: P.args, **kwargs: P.kwargs) -> R:
            key = (args, tuple(sorted(kwargs.items())))
            with guard:
                if key in results:
                    results.move_to_end(key)
                    return results[key]
                lock = locks.setdefault(key, threading.Lock())
            with lock:
                with guard:
                    if key in results:  # loaded by the thread we waited for
                        return results[key]
                value = load(*args, **kwargs)
                with guard:
                    results[key] = value
                    while len(results) > maxsize:
                        results.popitem(last=False)
                    locks.pop(key, None)
                return value

        def cache_clear() -> None:
            with guard:
                results.clear()

        cached.cache_clear = cache_clear  # type: ignore[attr-defined]
        return cached

    return decorate
