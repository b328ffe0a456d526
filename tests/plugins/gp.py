"""Shared pieces of the GP tests (kernel, surrogate, acquisition).

* `single_torch_thread` (module): small GP linear algebra runs faster on one thread, and far faster on a shared,
  oversubscribed CPU; the previous thread count is restored afterwards.
* `CENTRE`, `toy`: a smooth 4-d objective with its maximum at CENTRE, for fitting and proposal tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

CENTRE = torch.tensor([0.3, -0.2, 0.5, 0.1], dtype=torch.float64)


def toy(X: torch.Tensor) -> torch.Tensor:
    return -((X - CENTRE) ** 2).sum(-1)


@pytest.fixture(scope="module")
def single_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
