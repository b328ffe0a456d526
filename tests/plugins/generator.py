"""Fixtures for generator tests (see conftest.py): the packaged Gemma-3 270M generator, loaded once per session."""

from __future__ import annotations

import pytest

from instructzero.storage.records import Example
from instructzero.tasks.generation.generator import InstructionGenerator
from instructzero.tasks.generation.model_assets import PACKAGED_GEMMA, default_cache_dir

GENERATOR_TEST_MAX_NEW_TOKENS = 12
"""Short continuations keep CPU tests fast; generation also stops per sequence after the first line."""


@pytest.fixture(scope="session")
def packaged_generator() -> InstructionGenerator:
    """The real packaged generator on CPU (first run converts the GGUF, ~60 s; later loads ~5-8 s)."""
    return InstructionGenerator(
        PACKAGED_GEMMA,
        cache_dir=default_cache_dir(),
        n_soft_tokens=5,
        intrinsic_dim=10,
        projection_seed=0,
        max_new_tokens=GENERATOR_TEST_MAX_NEW_TOKENS,
        device="cpu",
    )


@pytest.fixture(scope="session")
def antonym_exemplars() -> tuple[Example, ...]:
    """Three tiny exemplars of an obvious task."""
    return (
        Example(id="ex-0", input="hot", answers=("cold",)),
        Example(id="ex-1", input="big", answers=("small",)),
        Example(id="ex-2", input="happy", answers=("sad",)),
    )
