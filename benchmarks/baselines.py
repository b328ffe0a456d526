"""Baselines without a soft prompt, recorded in the store as ordinary runs (candidates with z=None, phase "baseline").

* **APE-style** (Zhou et al., 2023, forward mode): the generator reads the same exemplar prompt the InstructZero
  generator reads, without soft tokens, and *samples* `budget` instructions (temperature ~0.9, seeded); the best on
  dev wins and is scored on test.
* **Manual**: the human-written instructions of the task (instruction-induction annotations,
  `TaskData.human_instructions`); the best on dev is scored on test. Tasks without annotations are skipped.
* **Empty**: the empty instruction (the zero-shot prompt with "Instruction: " left blank).

All of them use the run's seeded splits and the same black box, template and settings as the flow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from instructzero.flows.params import same_settings, with_recorded_defaults
from instructzero.storage.records import BASELINE_PHASE, Candidate, Dataset, Example, Run
from instructzero.storage.repository import RunStore
from instructzero.tasks.data.splits import Splits
from instructzero.tasks.data.task_data import TaskData
from instructzero.tasks.evaluation.blackbox import (
    BlackBoxClient,
    BlackBoxSettings,
    StoreResponseCache,
    evaluate_instructions,
)
from instructzero.tasks.generation.generator import InstructionGenerator, clean_instruction
from instructzero.tasks.optimisation.selection import best_candidate

APE_TEMPERATURE = 0.9
APE_TOP_P = 0.95


@dataclass(frozen=True)
class BaselineResult:
    run_id: str
    best_instruction: str
    dev_score: float
    test_score: float
    n_candidates: int


def sample_instructions(
    generator: InstructionGenerator,
    exemplars: Sequence[Example],
    n: int,
    *,
    seed: int,
    temperature: float = APE_TEMPERATURE,
    top_p: float = APE_TOP_P,
    batch_size: int = 8,
) -> list[str]:
    """APE-style proposals: n sampled continuations of the generator's exemplar prompt, no soft tokens.

    Uses the generator's own model, tokenizer, template and cleaning (`clean_instruction`), so the only difference
    to InstructZero's proposals is sampling instead of soft prompts. Seeded: the same seed gives the same list.

    Note: reads the generator's private `_model`/`_tokenizer` (tasks/generation/generator.py has no public
    sampling hook).
    """
    from transformers import GenerationConfig, StoppingCriteriaList

    from instructzero.tasks.generation.generator import _FirstLineDone

    model, tok = generator._model, generator._tokenizer
    ids = generator.prompt_ids(exemplars)
    input_ids = torch.tensor([ids], device=generator.device)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    texts: list[str] = []
    torch_rng_state = torch.get_rng_state()
    try:
        torch.manual_seed(seed)
        if str(generator.device).startswith("cuda"):
            torch.cuda.manual_seed_all(seed)
        while len(texts) < n:
            k = min(batch_size, n - len(texts))
            config = GenerationConfig(
                max_new_tokens=generator.max_new_tokens,
                do_sample=True,
                temperature=temperature,
                top_p=top_p,
                top_k=0,
                num_return_sequences=k,
                pad_token_id=pad_id,
                eos_token_id=tok.eos_token_id,
                bos_token_id=tok.bos_token_id,
            )
            with torch.inference_mode():
                out = model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    generation_config=config,
                    stopping_criteria=StoppingCriteriaList([_FirstLineDone(tok, prompt_length=len(ids))]),
                )
            texts.extend(tok.batch_decode(out[:, len(ids) :], skip_special_tokens=True))
    finally:
        torch.set_rng_state(torch_rng_state)
    return [clean_instruction(t) for t in texts[:n]]


INVOCATION_FIELDS = ("name", "store_url", "black_box.base_url")
"""What differs between invocations of the same benchmark cell: the run name, the store URL and the black box's URL
(a local endpoint gets a new port each time; its `endpoint_id` names it)."""


def existing_run(store: RunStore, name: str, config: dict[str, Any]) -> Run | None:
    """The stored run of a benchmark cell (any status), None when there is none; ConfigError when the run of
    that name was made with other settings (the suite label must then change)."""
    run = store.find_run_by_name(name)
    if run is None:
        return None
    ignored: tuple[str, ...] = INVOCATION_FIELDS
    if "endpoint_id" not in run.config.get("black_box", {}):
        # runs recorded before black_box.endpoint_id existed have none: their endpoint was their (changing) URL
        ignored = (*INVOCATION_FIELDS, "black_box.endpoint_id")
    # a run stored before a setting existed ran at its default (e.g. generator.temperature: greedy)
    if not same_settings(with_recorded_defaults(run.config), with_recorded_defaults(config), ignore=ignored):
        from instructzero.tasks.errors import ConfigError

        raise ConfigError(f"a run named {name!r} exists with different settings; use another --suite")
    return run


def run_fixed_candidates(
    store: RunStore,
    *,
    name: str,
    data: TaskData,
    splits: Splits,
    instructions: Sequence[str],
    settings: BlackBoxSettings,
    model_name: str,
    metric: Any,  # a metric name or a Scorer
    template: Any,  # a template string or a ZeroShotFormat
    config: dict[str, Any],
    versions: dict[str, Any],
    seed: int,
) -> BaselineResult:
    """Score `instructions` on dev as one baseline iteration, the best (earliest on ties) on test; store it all.

    A completed run with the same name and settings is reused as is (re-running a benchmark costs nothing), an
    interrupted one is completed; one made with other settings is refused (`existing_run`). `model_name` is the
    black box's model (`settings.model`), which the evaluations are recorded under.
    """
    if model_name != settings.model:
        from instructzero.tasks.errors import ConfigError

        raise ConfigError(f"baseline run {name!r}: model {model_name!r} is not the black box's {settings.model!r}")
    run = existing_run(store, name, config)
    if run is None or run.status != "completed":
        manifest = splits.manifest()
        run = run or store.create_run(
            name=name,
            task=data.name,
            config=config,
            seed=seed,
            versions=versions,
            projection_hash=None,
            splits=manifest,
            datasets=[
                Dataset(task=data.name, split=s, content_hash=data.content_hash, example_ids=tuple(ids))
                for s, ids in manifest.items()
            ],
        )
        store.set_run_status(run.id, "running")
        client = BlackBoxClient(settings, cache=StoreResponseCache(store, run_id=run.id))
        try:
            dev = evaluate_instructions(client, list(instructions), splits.dev, metric, template=template)
            store.record_iteration(
                run.id,
                0,
                [
                    Candidate(
                        iteration=0,
                        index=i,
                        phase=BASELINE_PHASE,
                        z=None,
                        acquisition_value=None,
                        instruction=text,
                        dev=ev,
                    )
                    for i, (text, ev) in enumerate(zip(instructions, dev))
                ],
            )
            best_i = max(range(len(dev)), key=lambda i: (dev[i].mean_score, -i))
            test = evaluate_instructions(client, [instructions[best_i]], splits.test, metric, template=template)[0]
            store.record_test_evaluation(run.id, test)
        except BaseException as exc:
            store.set_run_status(run.id, "failed", error=f"{type(exc).__name__}: {exc}")
            raise
        store.set_run_status(run.id, "completed")
    candidates = store.load_candidates(run.id)
    best = best_candidate(candidates)
    return BaselineResult(
        run.id, best.instruction, float(best.dev_score or 0.0), float(best.test_score or 0.0), len(candidates)
    )
