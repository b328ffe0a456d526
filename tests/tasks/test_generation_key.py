"""The generation cache key covers every input that changes the written instructions, and nothing else."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import instructzero.tasks.prefect_tasks as pt
from instructzero.storage.records import Example
from instructzero.tasks.generation.settings import GeneratorSettings

EXEMPLARS = (Example("e0", "hot", ("cold",)), Example("e1", "big", ("small",)))


@pytest.fixture(scope="module")
def spec(tiny_generator_dir: Path) -> pt.GeneratorSpec:
    settings = GeneratorSettings(
        model=str(tiny_generator_dir), n_soft_tokens=2, intrinsic_dim=3, max_new_tokens=4, device="cpu", batch_size=2
    )
    return pt.GeneratorSpec(settings, cache_dir=str(tiny_generator_dir), projection_seed=0)


def _changed(spec: pt.GeneratorSpec, **change: object) -> pt.GeneratorSpec:
    """`spec` with one setting changed: the run's own (the seed) or the generator section's."""
    if "projection_seed" in change:
        return dataclasses.replace(spec, **change)  # type: ignore[arg-type]
    return dataclasses.replace(spec, settings=spec.settings.model_copy(update=change))


Z = np.array([[0.1, -0.2, 0.3]])


@pytest.mark.parametrize(
    "change",
    [
        dict(projection_seed=1),
        dict(max_new_tokens=5),
        dict(soft_scale=2.0),
        dict(template="ape"),
        dict(temperature=0.7),
    ],
    ids=lambda c: f"{next(iter(c))}={next(iter(c.values()))!r}",
)
def test_each_generator_setting_flips_the_key(spec: pt.GeneratorSpec, change: dict) -> None:
    assert pt.generation_key(Z, EXEMPLARS, _changed(spec, **change)) != pt.generation_key(Z, EXEMPLARS, spec)


def test_inputs_and_code_version_flip_the_key(spec: pt.GeneratorSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    key = pt.generation_key(Z, EXEMPLARS, spec)
    assert pt.generation_key(Z + 0.01, EXEMPLARS, spec) != key
    assert pt.generation_key(Z, EXEMPLARS[:1], spec) != key
    assert pt.generation_key(Z, (Example("e0", "hot", ("warm",)), EXEMPLARS[1]), spec) != key
    monkeypatch.setattr(pt, "CLEANING_VERSION", pt.CLEANING_VERSION + 1)
    assert pt.generation_key(Z, EXEMPLARS, spec) != key


def test_the_batch_size_and_example_ids_do_not_change_the_key(spec: pt.GeneratorSpec) -> None:
    """Outputs do not depend on how soft prompts are batched, nor on the exemplars' ids."""
    key = pt.generation_key(Z, EXEMPLARS, spec)
    assert pt.generation_key(Z, EXEMPLARS, _changed(spec, batch_size=7)) == key
    assert pt.generation_key(Z, tuple(dataclasses.replace(e, id=e.id + "x") for e in EXEMPLARS), spec) == key


def test_top_p_keys_sampling_only(spec: pt.GeneratorSpec) -> None:
    """Greedy decoding ignores top-p (its key stays what it was before sampling existed); sampling does not."""
    assert pt.generation_key(Z, EXEMPLARS, _changed(spec, top_p=0.5)) == pt.generation_key(Z, EXEMPLARS, spec)
    sampling = _changed(spec, temperature=0.7)
    assert pt.generation_key(Z, EXEMPLARS, _changed(sampling, top_p=0.5)) != pt.generation_key(Z, EXEMPLARS, sampling)
    seeded = dataclasses.replace(sampling, projection_seed=1)
    assert pt.generation_key(Z, EXEMPLARS, seeded) != pt.generation_key(Z, EXEMPLARS, sampling)
