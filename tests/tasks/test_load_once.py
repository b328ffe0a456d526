"""One load per process and key, even under threads: concurrent suite members once failed with `Cannot copy out of
meta tensor` while two of them loaded the generator at the same time through a bare `lru_cache`."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from instructzero.tasks.load_once import load_once


def test_threads_asking_together_share_one_load_per_key() -> None:
    calls: list[str] = []
    lock = threading.Lock()

    @load_once(maxsize=4)
    def load(name: str) -> object:
        with lock:
            calls.append(name)
        time.sleep(0.2)  # long enough for every thread to miss the cache at once
        return object()

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(load, ["a"] * 8 + ["b"] * 8))
    assert sorted(calls) == ["a", "b"]
    assert len({id(x) for x in got[:8]}) == 1 and len({id(x) for x in got[8:]}) == 1 and got[0] is not got[8]


def test_a_failed_load_is_not_cached_and_the_oldest_result_is_evicted() -> None:
    attempts = {"n": 0}

    @load_once(maxsize=1)
    def flaky(key: int) -> int:
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise OSError("disk hiccup")
        return key * 10

    with pytest.raises(OSError):
        flaky(1)
    assert flaky(1) == 10 and flaky(1) == 10 and attempts["n"] == 2
    assert flaky(2) == 20 and attempts["n"] == 3
    assert flaky(1) == 10 and attempts["n"] == 4  # maxsize 1: key 1 was evicted by key 2


def test_the_real_generator_loads_once_for_concurrent_callers(tiny_generator_dir: Path, tmp_path: Path) -> None:
    from instructzero.tasks.generation.settings import GeneratorSettings
    from instructzero.tasks.prefect_tasks import GeneratorSpec, load_generator

    load_generator.cache_clear()
    settings = GeneratorSettings(
        model=str(tiny_generator_dir), n_soft_tokens=2, intrinsic_dim=4, max_new_tokens=4, device="cpu", batch_size=2
    )
    spec = GeneratorSpec(settings, cache_dir=str(tmp_path), projection_seed=0)
    barrier = threading.Barrier(4)

    def load() -> object:
        barrier.wait()
        return spec.load()

    with ThreadPoolExecutor(4) as pool:
        generators = list(pool.map(lambda _: load(), range(4)))
    assert len({id(g) for g in generators}) == 1
