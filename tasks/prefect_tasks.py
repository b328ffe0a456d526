"""Thin Prefect tasks over the plain functions of `tasks/`: one unit of work each, with retry and cache policy.

The domain logic lives in the modules these wrappers call; tests exercise those directly. Heavy objects (the
generator model, store engines) are cached per process and are never task inputs, so Prefect never hashes or
pickles them: tasks take settings and plain data, and cache keys are built from exactly what determines a result.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task, unmapped
from prefect.cache_policies import NONE as NO_CACHE
from prefect.context import TaskRunContext
from prefect.states import Cancelled

from instructzero.storage.records import Candidate, Dataset, Evaluation, Example, Run
from instructzero.storage.repository import RunStore
from instructzero.tasks.data.settings import DataSettings
from instructzero.tasks.data.splits import Splits, make_splits
from instructzero.tasks.data.task_data import TaskData, load_task
from instructzero.tasks.errors import BlackBoxError, ConfigError
from instructzero.tasks.evaluation.blackbox import (
    BlackBoxClient,
    BlackBoxSettings,
    StoreResponseCache,
    evaluate_instructions,
)
from instructzero.tasks.evaluation.metrics import MetricName, Scorer
from instructzero.tasks.generation.generator import CLEANING_VERSION, InstructionGenerator
from instructzero.tasks.generation.settings import GeneratorSettings
from instructzero.tasks.interrupts import RunInterrupted
from instructzero.tasks.load_once import load_once
from instructzero.tasks.optimisation.proposer import History, Known, Proposal, Proposer, propose_checked
from instructzero.tasks.prompts import ZeroShotFormat


@lru_cache(maxsize=8)
def open_store(url: str) -> RunStore:
    """One `RunStore` (engine + pool) per URL and process."""
    return RunStore(url)


@load_once(maxsize=2)
def load_generator(spec: GeneratorSpec) -> InstructionGenerator:
    """Load the generator once per process (a reload of the packaged model costs seconds), one load at a time.
    Every `GeneratorSettings` field but the batch size is a constructor argument, so a new knob is its field and
    its use in the generator."""
    g = spec.settings
    return InstructionGenerator(
        g.model,
        cache_dir=Path(spec.cache_dir),
        projection_seed=spec.projection_seed,
        **g.model_dump(exclude={"model", "batch_size"}),
    )


@dataclass(frozen=True)
class GeneratorSpec:
    """The generator a run loads: its settings (the config's own section, not a copy) plus what the run decides,
    the model cache folder and the projection's seed. Hashable; what `load_generator` takes."""

    settings: GeneratorSettings
    cache_dir: str
    projection_seed: int

    @property
    def model(self) -> str:
        return self.settings.model

    @property
    def batch_size(self) -> int:
        return self.settings.batch_size

    def load(self) -> InstructionGenerator:
        return load_generator(self)


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _only_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry the black-box task only for failures that may pass (429/5xx/timeouts), never for 401/404."""
    try:
        state.result()
    except BlackBoxError as exc:
        return exc.transient
    except Exception:  # noqa: BLE001 - anything else is a bug or bad input: do not retry
        return False
    return False


@task(name="load-task-data", cache_policy=NO_CACHE)
def load_task_data(settings: DataSettings, seed: int) -> tuple[TaskData, Splits]:
    """Read the task and draw its seeded exemplar/dev/test splits (fixed for the whole run)."""
    data = load_task(settings.task, settings.data_dir)
    splits = make_splits(
        data, n_exemplars=settings.n_exemplars, n_dev=settings.n_dev, n_test=settings.n_test, seed=seed
    )
    return data, splits


@task(name="start-run", cache_policy=NO_CACHE)
def start_run(
    store_url: str,
    *,
    name: str,
    task_name: str,
    config: dict[str, Any],
    seed: int,
    versions: dict[str, str],
    projection_hash: str | None,
    data: TaskData,
    splits: Splits,
    lease_owner: str | None = None,
) -> Run:
    """Create the run row with its config, versions and split manifest (claimed by `lease_owner`)."""
    manifest = splits.manifest()
    datasets = [
        Dataset(task=data.name, split=split, content_hash=data.content_hash, example_ids=tuple(ids))
        for split, ids in manifest.items()
    ]
    return open_store(store_url).create_run(
        name=name,
        task=task_name,
        config=config,
        seed=seed,
        versions=versions,
        projection_hash=projection_hash,
        splits=manifest,
        datasets=datasets,
        lease_owner=lease_owner,
    )


@task(name="gp-update", cache_policy=NO_CACHE)
def gp_update_task(proposer: Proposer, history: History) -> None:
    """Step 1 of the proposer's call order: re-fit on every candidate of the run (the GP, for GP-BO)."""
    proposer.observe(history)


def observe(proposer: Proposer, history: History) -> None:
    """`gp_update_task` for a proposer that learns from a non-empty history; nothing to do (no task) otherwise."""
    if proposer.learns and history:
        gp_update_task(proposer, history)


@task(name="propose-prompt", cache_policy=NO_CACHE)
def propose_prompt(
    proposer: Proposer,
    iteration: int,
    n: int,
    *,
    attempt: int = 0,
    known: Known = (),
    pending: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
) -> Proposal:
    """Steps 2 and 3 of the call order: the iteration's soft prompts, or (attempt > 0) replacements."""
    return propose_checked(proposer, iteration, n, attempt=attempt, known=known, pending=pending, exclude=exclude)


def generation_key(z: np.ndarray, exemplars: Sequence[Example], spec: GeneratorSpec) -> str:
    """Everything that changes the instructions written for z: the weights, the projection (its fingerprint
    covers its version, seed, scale and the embedding statistics), the full prompt text the exemplars fill in,
    the demo format, decoding settings and the cleaning code's version. The device is left out on purpose:
    greedy decoding gives the same text on CPU and GPU up to float round-off."""
    generator = spec.load()
    z = np.ascontiguousarray(z, dtype=np.float64)
    exemplars_key = [(e.input, e.answers[0]) for e in exemplars]
    # sampling (temperature > 0) keys on its settings and seed; greedy keys stay as they were
    sampling = (
        [("sampling", generator.temperature, generator.top_p, generator.sampling_seed)]
        if generator.temperature > 0
        else []
    )
    return "generate-" + _digest(
        hashlib.sha256(z.tobytes()).hexdigest(),
        z.shape,
        generator.model_revision,
        generator.projection.fingerprint(),
        generator.template,
        generator.demo_template,
        generator.max_new_tokens,
        generator.stop_at_first_line,
        CLEANING_VERSION,
        spec.model,
        exemplars_key,
        *sampling,
    )


def _generation_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return generation_key(parameters["z"], parameters["exemplars"], parameters["spec"])


@task(name="generate-instruction", cache_key_fn=_generation_key, persist_result=True)
def generate_instruction(z: np.ndarray, exemplars: Sequence[Example], spec: GeneratorSpec) -> list[str]:
    """Soft prompts (b x d) -> b instructions, in padded batches, on CUDA when present."""
    return spec.load().generate(z, exemplars, batch_size=spec.batch_size)


@task(
    name="zero-shot-evaluate",
    cache_policy=NO_CACHE,  # the store's llm_calls table is the only cache of black-box answers (the ledger)
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_only_transient,
)
def zero_shot_evaluate(
    instruction: str,
    examples: Sequence[Example],
    metric: MetricName | Scorer,
    template: str | ZeroShotFormat,
    settings: BlackBoxSettings,
    store_url: str,
    run_id: str | None = None,
) -> Evaluation:
    """Score one instruction zero-shot on `examples` through the black box (responses cached in the store).

    One task per instruction, so a batch fans out over the flow's task runner (threads, or Dask workers).
    """
    client = BlackBoxClient(settings, cache=StoreResponseCache(open_store(store_url), run_id=run_id))
    try:
        return evaluate_instructions(client, [instruction], examples, metric, template=template)[0]
    except RunInterrupted as exc:  # Ctrl-C: the task run ends Cancelled, and its future's result() raises exc
        return Cancelled(message=str(exc), data=exc)  # type: ignore[return-value]


def evaluate_batch(
    instructions: Sequence[str],
    examples: Sequence[Example],
    metric: MetricName | Scorer,
    template: str | ZeroShotFormat,
    settings: BlackBoxSettings,
    store_url: str,
    run_id: str | None = None,
) -> list[Evaluation]:
    """Fan `zero_shot_evaluate` out over the task runner; identical instructions are scored once."""
    unique = list(dict.fromkeys(instructions))
    futures = zero_shot_evaluate.map(
        unique,
        unmapped(examples),
        unmapped(metric),
        unmapped(template),
        unmapped(settings),
        unmapped(store_url),
        unmapped(run_id),
    )
    by_text = dict(zip(unique, futures.result()))
    return [by_text[text] for text in instructions]


@task(name="record-iteration", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 3])
def record_iteration(
    store_url: str,
    run_id: str,
    proposal: Proposal,
    instructions: Sequence[str],
    evaluations: Sequence[Evaluation],
    model: str | None = None,
) -> list[Candidate]:
    """Write one whole iteration in one transaction, then return the run's full history.

    Each evaluation names the model that answered it; `model`, when given, is the run's and must be that one."""
    if model is not None and any(ev.model != model for ev in evaluations):
        raise ConfigError(f"iteration {proposal.iteration}: an evaluation was not answered by model {model!r}")
    candidates = [
        Candidate(
            iteration=proposal.iteration,
            index=i,
            phase=proposal.phase,
            z=tuple(float(v) for v in proposal.z[i]),
            acquisition_value=proposal.acquisition_values[i],
            instruction=instructions[i],
            dev=evaluations[i],
        )
        for i in range(len(instructions))
    ]
    store = open_store(store_url)
    store.record_iteration(run_id, proposal.iteration, candidates)
    return store.load_candidates(run_id)


@task(name="record-test-evaluation", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 3])
def record_test_evaluation(store_url: str, run_id: str, evaluation: Evaluation) -> None:
    """Store a test-split evaluation of the final report (the best dev instruction's, or a baseline's)."""
    open_store(store_url).record_test_evaluation(run_id, evaluation)
