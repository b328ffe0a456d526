"""The InstructZero loop as a Prefect flow.

    load-task-data -> [GP-update -> propose-prompt -> generate-instruction -> zero-shot-evaluate -> record] x N
    -> test evaluation of the best dev instruction and of the baselines on the same examples -> paired report

Every iteration is written to the store in one transaction before the next starts, and every black-box response is
cached in the store as it arrives, so a run interrupted anywhere (even by kill -9) resumes at the next unrecorded
iteration and pays for no black-box call twice. The GP state is never stored: it is re-fitted from the history.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Cancelled
from prefect.task_runners import ThreadPoolTaskRunner
from tqdm.auto import tqdm

from instructzero.flows import stop_signals
from instructzero.flows.console import resume_command
from instructzero.flows.params import (
    RESUME_IGNORED,
    RunConfig,
    package_versions,
    same_settings,
    with_recorded_defaults,
)
from instructzero.flows.search_artifacts import SearchArtifacts, publish_table
from instructzero.flows.spend import make_budget, prompts_for, usd_per_1k_calls
from instructzero.storage.errors import RunExistsError
from instructzero.storage.lease import RunLease
from instructzero.storage.records import Candidate, Evaluation, Run
from instructzero.storage.redaction import redact_secrets
from instructzero.storage.repository import RunStore
from instructzero.tasks import interrupts
from instructzero.tasks.data.splits import Splits
from instructzero.tasks.errors import BlackBoxError, ConfigError
from instructzero.tasks.evaluation.blackbox import BlackBoxSettings
from instructzero.tasks.evaluation.blackbox_settings import BlackBoxConfig
from instructzero.tasks.evaluation.budget import Budget, Usage
from instructzero.tasks.evaluation.comparison import (
    CONSTANT,
    FOUND,
    ComparisonRow,
    ScoredInstruction,
    compare,
    comparison_metrics,
    comparison_table,
    scores_in_order,
)
from instructzero.tasks.evaluation.constant_answer import best_constant_answer
from instructzero.tasks.evaluation.metrics import Scorer
from instructzero.tasks.evaluation.objective import instruction_tokens, penalised
from instructzero.tasks.interrupts import RunInterrupted
from instructzero.tasks.optimisation.proposer import Known, Proposal, Proposer, ProposerContext, make_proposer
from instructzero.tasks.optimisation.reproposal import ProposeFn, propose_distinct
from instructzero.tasks.optimisation.selection import best_candidate, ranked, stored_objective
from instructzero.tasks.prefect_tasks import (
    GeneratorSpec,
    evaluate_batch,
    generate_instruction,
    load_task_data,
    observe,
    open_store,
    propose_prompt,
    record_iteration,
    record_test_evaluation,
    start_run,
)


@dataclass(frozen=True)
class RunSummary:
    """What a finished run reports: its best dev instruction and that instruction's test score."""

    run_id: str
    name: str
    task: str
    best_instruction: str
    dev_score: float
    test_score: float
    n_candidates: int
    top: tuple[tuple[str, float, int], ...]  # distinct instructions, best first: (text, dev score, candidates)
    n_distinct: int = 0  # distinct instructions among the candidates
    strategy: str = ""  # the search strategy that ran (bo.strategy)
    comparison: tuple[ComparisonRow, ...] = ()  # found instruction vs baselines on the same test examples
    confidence: float = 0.95
    black_box: str = ""  # what answered, for the report
    answered_calls: int = 0  # distinct prompts answered over the run's evaluations, cache hits included
    stopped: str | None = None  # why the search stopped early (the budget), None when it ran to the end
    test_note: str = ""  # what was (not) scored on test when the budget stopped the run
    spent: Usage = Usage()  # what this run paid for, from its llm_calls rows
    limits: str = ""  # the budget and what is left of it, for the report
    usd_per_1k_calls: tuple[float, ...] = ()  # per comparison row: what 1,000 calls with its instruction cost

    @property
    def paid_calls(self) -> int:
        """Black-box requests this run paid for (its llm_calls rows)."""
        return self.spent.calls


@contextlib.contextmanager
def black_box_endpoint(settings: BlackBoxConfig) -> Iterator[str]:
    """Yield the black-box base URL; with none configured, serve the packaged model on 127.0.0.1 for the run."""
    if settings.base_url:
        yield settings.base_url
        return
    from instructzero.servers.local_endpoint import local_endpoint

    # Micro-batching the concurrent evaluation requests is several times faster on a CPU than one at a time.
    with local_endpoint(
        settings.engine, model=settings.model, api=settings.api, max_batch=settings.concurrency
    ) as endpoint:
        yield endpoint.base_url


def _resolve_run(config: RunConfig, store: RunStore, resume_run_id: str | None) -> Run | None:
    """The run to continue, if any: an explicit id, or an unfinished run with the same name and settings."""
    if resume_run_id:
        return store.get_run(resume_run_id)
    return same_name_run(config)


def same_name_run(config: RunConfig) -> Run | None:
    """The stored run named `config.name` (None without a name or such a run); ConfigError when its settings differ.

    The CLI calls it before Prefect starts, so a clash is one line and costs nothing."""
    if not config.name:
        return None
    existing = open_store(config.store_url).find_run_by_name(config.name)
    if existing is None:
        return None
    stored = with_recorded_defaults(existing.config)  # a run stored before a setting existed ran at its default
    if not same_settings(stored, config.reproducibility_key(), ignore=RESUME_IGNORED):
        raise ConfigError(
            f"a run named {config.name!r} already exists ({existing.id}) with different settings; "
            "use another --name or `instructzero resume` it"
        )
    return existing


@flow(name="instructzero", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=8))  # type: ignore[arg-type]
def instructzero_flow(config: RunConfig, resume_run_id: str | None = None) -> RunSummary:
    """Search for the best instruction for the black box on `config.data.task`, resuming a stored run if asked.

    The run is held by this call alone (a lease with a heartbeat on its row): another process running it at the
    same time is refused with RunLeasedError, and a killed holder's run can be taken over once it is stale.

    Stopped by Ctrl-C/SIGTERM in the CLI (`flows/stop_signals.py`), it stops at its next safe point, stores the
    run as 'interrupted' and ends the Prefect flow run Cancelled; calling it then raises RunInterrupted."""
    stop_signals.reclaim()  # the CLI's Ctrl-C/SIGTERM handling, in front of Prefect's SIGTERM handler
    config = config.with_store_secret()  # a config from JSON (deployment parameters) names the store redacted
    lease = RunLease(open_store(config.store_url))
    try:
        return _instructzero(config, resume_run_id, lease)
    except RunInterrupted as exc:  # not a failure: Cancelled in Prefect (no traceback logged), exc raised to the caller
        return Cancelled(  # type: ignore[return-value]  # Prefect ends the flow run with the returned state
            message=f"{exc}; resume run {exc.run_id}" if exc.run_id else str(exc), data=exc
        )
    finally:
        lease.release()


def _instructzero(config: RunConfig, resume_run_id: str | None, lease: RunLease) -> RunSummary:
    logger = get_run_logger()
    store = lease.store  # the run's one store handle, from here down
    existing = _resolve_run(config, store, resume_run_id)
    if existing is not None and existing.status == "completed":  # nothing to do: re-running must not rewrite it
        logger.info("run %s (%s) is already complete: nothing re-run", existing.name, existing.id)
        return stored_summary(config, store, existing)
    if existing is not None:  # fail fast, before loading anything, while another process holds it
        existing = lease.claim(existing.id)
    data, splits = load_task_data(config.data, config.seed)
    spec = config.generator_spec()
    generator = spec.load()
    # a safe point: nothing new written yet (a resumed run keeps its stored status)
    interrupts.check(
        "before the search started",
        run_id=existing.id if existing else None,
        run_name=existing.name if existing else None,
    )
    if existing is None:
        try:
            run = lease.created(
                start_run(
                    config.store_url,
                    name=config.name or f"{data.name}-seed{config.seed}-{int(time.time())}",
                    task_name=data.name,
                    config=config.recorded(),
                    seed=config.seed,
                    versions={**package_versions(), "generator_revision": generator.model_revision},
                    projection_hash=generator.projection.fingerprint(),
                    data=data,
                    splits=splits,
                    lease_owner=lease.owner,
                )
            )
        except RunExistsError:  # another process created it a moment ago: it holds it, or it went stale
            found = _resolve_run(config, store, None)
            if found is None:
                raise
            existing = lease.claim(found.id)
    if existing is not None:
        run = existing
        if run.splits != splits.manifest():
            raise ConfigError(f"task data of run {run.id} changed since it started: its splits no longer match")
        if run.projection_hash != generator.projection.fingerprint():
            raise ConfigError(f"generator projection of run {run.id} differs from the stored one: cannot resume")
    store.set_run_status(run.id, "running", prefect_flow_run_id=flow_run.get_id())
    try:
        summary = _search(config, store, run, config.scoring.scorer(data.metric), splits, spec)
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, (KeyboardInterrupt, RunInterrupted)) else "failed"
        store.set_run_status(run.id, status, error=f"{type(exc).__name__}: {exc}")
        if isinstance(exc, RunInterrupted):  # for the CLI's resume hint
            exc.run_id, exc.run_name = run.id, run.name
            recorded = len(store.completed_iterations(run.id))
            exc.recorded = f"{recorded} of {config.bo.iterations + 1} iterations recorded"
        if isinstance(exc, BlackBoxError):  # the CLI's `error:` line ends with this note
            exc.add_note(_failed_note(exc, run, store.url))
        raise
    if summary.stopped:  # status "interrupted" (resumable) with the reason; no schema change for a new status
        store.set_run_status(run.id, "interrupted", error=f"budget_exhausted: {summary.stopped}")
        logger.warning("run %s stopped: %s; %s", run.id, summary.stopped, summary.test_note)
        return summary
    store.set_run_status(run.id, "completed")
    logger.info(
        "best instruction %r: dev %.3f, test %.3f", summary.best_instruction, summary.dev_score, summary.test_score
    )
    return summary


def distinct_top(ranked: Sequence[Candidate], n: int = 5) -> tuple[tuple[str, float, int], ...]:
    """The first `n` distinct instructions of a ranking, each with its best candidate's dev score and how many
    candidates wrote it (a repeated instruction is listed once: it was scored once)."""
    counts = Counter(c.instruction for c in ranked)
    firsts: dict[str, Candidate] = {}
    for c in ranked:  # in rank order: the first candidate of each instruction is its best
        firsts.setdefault(c.instruction, c)
    return tuple((text, float(c.dev_score or 0.0), counts[text]) for text, c in list(firsts.items())[:n])


def _where(settings: BlackBoxSettings) -> str:
    """Where the black box answered, as the summary prints it: its URL without credentials, or the embedded one."""
    url = settings.config.base_url
    return redact_secrets(url) if url else f"embedded {settings.endpoint_id}"


def _failed_note(exc: BlackBoxError, run: Run, store_url: str) -> str:
    """What to do about a run the black box failed: resume it when the cause lies outside the run's settings (the
    endpoint was down or kept failing, the key was wrong), else start anew (the model or request is recorded)."""
    if exc.status is None or exc.status in (401, 403, 408, 409, 429) or exc.status >= 500:
        return (
            f"run {run.id} stored as failed; once that is fixed, continue it with `{resume_command(run.id, store_url)}`"
        )
    return f"run {run.id} stored as failed; the model and request settings are part of it: start a new run"


def _search(
    config: RunConfig, store: RunStore, run: Run, metric: Scorer, splits: Splits, spec: GeneratorSpec
) -> RunSummary:
    """The iterations, then the final test evaluation. Reads top to bottom like the algorithm."""
    bo = config.bo
    dev_ids = tuple(e.id for e in splits.dev)
    history = store.load_candidates(run.id)
    done = set(store.completed_iterations(run.id))
    tokenizer = spec.load().tokenizer  # instruction lengths in the generator's tokens
    lengths: dict[str, int] = {}

    def tokens(text: str) -> int:
        if text not in lengths:
            lengths[text] = instruction_tokens(tokenizer, text)
        return lengths[text]

    def objective(candidates):  # what BO maximises: dev accuracy - length_penalty x instruction tokens
        for c in candidates:
            tokens(c.instruction)
        return penalised(candidates, lengths, bo.length_penalty)

    n_steps = bo.iterations + 2  # initial design, BO iterations, test evaluation
    # the Prefect UI's view of the search: progress, best-so-far curve, candidate table, store queries
    artifacts = SearchArtifacts(
        run, config.store_url, last_iteration=bo.iterations, n_steps=n_steps, recorded=len(done)
    )
    artifacts.search(history)  # a resumed run: what is recorded so far
    bar = tqdm(total=n_steps, initial=len(done), desc=f"instructzero {run.name}", unit="step")
    with _closed_on_error(bar), black_box_endpoint(config.black_box) as base_url:
        settings = config.black_box_settings(base_url, splits)
        budget = make_budget(config, store, run.id, settings, settings.max_tokens)
        stopped: str | None = None
        if budget.limits.any:
            bar.set_postfix_str(budget.describe())
        proposer = make_proposer(bo.strategy, ProposerContext(config.generator.intrinsic_dim, config.seed, dev_ids), bo)
        for iteration in range(bo.iterations + 1):
            if iteration in done:
                continue
            # Safe points (a Ctrl-C stops here, nothing of the iteration recorded): before each proposal and
            # generation task, before the evaluation (which itself lets requests in flight land), after the record.
            interrupts.check(f"before iteration {iteration}")
            scored = objective(history)
            observe(proposer, scored)  # the gp-update task (GP-BO); the GP of a resumed run is re-fitted here
            # Slots whose soft prompt decodes to an already scored instruction are proposed again (up to
            # bo.propose_attempts rounds), so a batch of b soft prompts yields b new instructions where possible.
            distinct = propose_distinct(
                _propose_task(proposer, iteration),
                _generate_task(splits, spec, iteration),
                {c.instruction: float(c.dev_score or 0.0) for c in scored},
                batch_size=bo.batch_size if iteration else bo.n_init,
                max_attempts=bo.propose_attempts,
            )
            proposal, instructions = distinct.proposal, distinct.instructions
            spent, need, crossed = budget.check(prompts_for(instructions, splits.dev, config.black_box.zero_shot))
            if crossed:  # stop at the iteration boundary: nothing of this iteration is sent or recorded
                stopped = (
                    f"budget exhausted before iteration {iteration}: spent {spent.describe()}; "
                    f"its worst case {need.describe()} could cross {crossed}"
                )
                store.record_metric(run.id, "budget.stopped_before_iteration", 0, float(iteration))
                break
            interrupts.check(f"in iteration {iteration}")
            evaluations = evaluate_batch(
                instructions, splits.dev, metric, config.black_box.zero_shot, settings, config.store_url, run.id
            )
            history = record_iteration(config.store_url, run.id, proposal, instructions, evaluations, settings.model)
            store.record_metrics(
                run.id,
                {  # the iteration's metrics, in one transaction
                    "bo.unique_instructions": float(distinct.unique_new),
                    "bo.rejected_proposals": float(distinct.rejected),
                    **{f"instruction_tokens.{i}": float(tokens(text)) for i, text in enumerate(instructions)},
                    **_spend_metrics(budget.spent()),
                },
                step=iteration,
            )
            if interrupts.stop_requested():  # the iteration is recorded: show it, then stop before the GP update
                bar.update(1)
                interrupts.check(f"after iteration {iteration} was recorded")
            bar.update(1)
            if budget.limits.any:
                bar.set_postfix_str(budget.describe())
            artifacts.recorded(history, progress=100.0 * (iteration + 1) / n_steps)
        if not history:
            raise ConfigError(f"run {run.id}: {stopped}; nothing was evaluated, raise the limit")
        counts = {(c.iteration, c.index): tokens(c.instruction) for c in history}  # = the recorded metrics
        best = best_candidate(history, length_penalty=bo.length_penalty, tokens=counts)  # the one rule
        interrupts.check("before the test report")
        rows, test, test_note = _budgeted_test_report(
            config, store, run, best.instruction, metric, splits, settings, budget, stopped is not None
        )
        store.record_metrics(run.id, _spend_metrics(budget.spent()), step=-1)
    if stopped is None and test_note:  # the search finished, the full test report did not fit
        stopped = "budget exhausted before the full test report"
    bar.update(1)
    bar.close()
    artifacts.finished(history, rows, test_note)  # the curve gets the report's test scores as reference lines
    top = ranked(history, length_penalty=bo.length_penalty, tokens=counts)
    return RunSummary(
        run_id=run.id,
        name=run.name,
        task=run.task,
        best_instruction=best.instruction,
        dev_score=float(best.dev_score or 0.0),
        test_score=float("nan") if test is None else test.mean_score,
        n_candidates=len(history),
        top=distinct_top(top),
        n_distinct=len({c.instruction for c in history}),
        strategy=str((run.config.get("bo") or {}).get("strategy", "")),
        comparison=tuple(rows),
        confidence=config.report.confidence,
        black_box=f"{settings.model} at {_where(settings)}",
        answered_calls=sum(e.n_calls for e in store.load_evaluations(run.id)),
        stopped=stopped,
        test_note=test_note,
        spent=budget.spent(),
        limits=budget.describe() if budget.limits.any else "",
        usd_per_1k_calls=tuple(_per_1k(store, run.id, rows)),
    )


def _propose_task(proposer: Proposer, iteration: int) -> ProposeFn:
    """The `propose-prompt` task as `propose_distinct` calls it, each call after a stop check (a safe point)."""

    def propose(n: int, attempt: int, known: Known, pending: np.ndarray, tried: np.ndarray) -> Proposal:
        interrupts.check(f"in iteration {iteration}")
        return propose_prompt(proposer, iteration, n, attempt=attempt, known=known, pending=pending, exclude=tried)

    return propose


def _generate_task(splits: Splits, spec: GeneratorSpec, iteration: int) -> Callable[[np.ndarray], list[str]]:
    """The `generate-instruction` task on the run's exemplars, each call after a stop check (a safe point)."""

    def generate(z: np.ndarray) -> list[str]:
        interrupts.check(f"in iteration {iteration}")
        return generate_instruction(z, splits.exemplars, spec)

    return generate


def stored_summary(config: RunConfig, store: RunStore, run: Run) -> RunSummary:
    """A completed run's summary read back from the store (nothing sent, nothing written, nothing paid by this call).

    The best is the candidate the run reported (`selection.ranked` by its own objective); the paired rows stay in
    the store."""
    history = store.load_candidates(run.id)
    penalty, tokens = stored_objective(store, run)  # the run's own objective: the one rule for "best"
    top = ranked(history, length_penalty=penalty, tokens=tokens)
    best = top[0]
    return RunSummary(
        run_id=run.id,
        name=run.name,
        task=run.task,
        best_instruction=best.instruction,
        dev_score=float(best.dev_score or 0.0),
        test_score=float("nan") if best.test_score is None else float(best.test_score),
        n_candidates=len(history),
        top=distinct_top(top),
        n_distinct=len({c.instruction for c in history}),
        strategy=str((run.config.get("bo") or {}).get("strategy", "")),
        confidence=config.report.confidence,
        black_box=config.black_box.model,
        test_note="already complete: read back from the store, nothing re-run",
    )


@contextlib.contextmanager
def _closed_on_error(bar: tqdm) -> Iterator[None]:
    """Close the progress bar when the search stops early (Ctrl-C), so what follows starts on a line of its own."""
    try:
        yield
    except BaseException:
        bar.close()
        raise


def _per_1k(store: RunStore, run_id: str, rows: Sequence[ComparisonRow]) -> list[float]:
    values = {m.key: m.value for m in store.load_metrics(run_id)}
    return [values.get(f"report.{r.label}.usd_per_1k_calls", 0.0) for r in rows]


def _spend_metrics(spent: Usage) -> dict[str, float]:
    """The run's cumulative spend as metrics (step = iteration, -1 after the test report), for `cost_by_iteration`."""
    return {
        "spend.calls": float(spent.calls),
        "spend.prompt_tokens": float(spent.prompt_tokens),
        "spend.completion_tokens": float(spent.completion_tokens),
        "spend.cost_usd": spent.cost_usd,
    }


def _budgeted_test_report(
    config: RunConfig,
    store: RunStore,
    run: Run,
    found: str,
    metric: Scorer,
    splits: Splits,
    settings: BlackBoxSettings,
    budget: Budget,
    stopped: bool,
) -> tuple[list[ComparisonRow], Evaluation | None, str]:
    """The test report if the remaining budget allows it; else the found instruction alone; else nothing.

    Returns (rows, the found instruction's test evaluation or None, a note saying which)."""
    baselines = config.report.labelled_baselines()
    template = settings.config.zero_shot
    spent, need, crossed = budget.check(prompts_for([found, *baselines.values()], splits.test, template))
    if not crossed:
        rows, test = _test_report(config, store, run, found, metric, splits, settings)
        note = "best-so-far instruction and baselines scored on test (the budget allowed it)" if stopped else ""
        return rows, test, note
    alone_spent, alone, alone_crossed = budget.check(prompts_for([found], splits.test, template))
    if baselines and not alone_crossed:
        rows, test = _test_report(config, store, run, found, metric, splits, settings, with_baselines=False)
        return (
            rows,
            test,
            (
                f"best-so-far instruction scored on test without baselines: the full report's worst case "
                f"{need.describe()} could cross {crossed}"
            ),
        )
    return (
        [],
        None,
        (f"test report skipped: its worst case {need.describe()} could cross {crossed} (spent {spent.describe()})"),
    )


def _test_report(
    config: RunConfig,
    store: RunStore,
    run: Run,
    found: str,
    metric: Scorer,
    splits: Splits,
    settings: BlackBoxSettings,
    *,
    with_baselines: bool = True,
) -> tuple[list[ComparisonRow], Evaluation]:
    """Score the found instruction and the baselines on the same test examples; store and show the paired table.

    Returns the report's rows and the found instruction's test evaluation.
    """
    baselines = config.report.labelled_baselines() if with_baselines else {}
    texts = [found, *baselines.values()]
    zero_shot = settings.config.zero_shot
    results = evaluate_batch(texts, splits.test, metric, zero_shot, settings, config.store_url, run.id)
    for result in dict(zip(texts, results)).values():
        record_test_evaluation(config.store_url, run.id, result)
    test_ids = [e.id for e in splits.test]
    scored = [
        ScoredInstruction(label, text, scores_in_order({r.example_id: r.score for r in result.examples}, test_ids))
        for label, text, result in zip([FOUND, *baselines], texts, results)
    ]
    if with_baselines:  # the reference line: what always giving one answer scores (no black-box call)
        constant = best_constant_answer(splits.test, metric)
        scored.append(ScoredInstruction(CONSTANT, constant.label, constant.scores))
    rows = compare(
        scored[0],
        scored[1:],
        n_bootstrap=config.report.n_bootstrap,
        confidence=config.report.confidence,
        seed=config.seed,
    )
    prices = settings.config.prices()
    per_1k = {
        f"report.{label}.usd_per_1k_calls": usd_per_1k_calls(store, settings, text, splits.test, zero_shot, prices)
        for label, text in zip([FOUND, *baselines], texts)
    }
    store.record_metrics(run.id, {**comparison_metrics(rows), **per_1k})
    publish_table(
        key=f"test-report-{run.id[:12]}",
        table=comparison_table(rows),
        description=f"Run {run.name}: found instruction vs baselines on the same {len(test_ids)} test examples "
        f"({config.report.confidence:.0%} BCa bootstrap intervals; exact paired tests, Holm-adjusted; "
        f"`constant`: the best single fixed answer)",
    )
    return rows, results[0]


if __name__ == "__main__":
    print(instructzero_flow(RunConfig()))
