"""Benchmark suites and resumes as Prefect flows over `instructzero_flow`.

    benchmark-suite: validate every member config -> open the shared store once -> (serve one shared black box when
    none is configured) -> one `instructzero_flow` per task, in parallel (threads, as subflows; or one flow run per
    task through a deployment, e.g. on the GPU work pool) -> a summary row per task

    resume-run: load the config stored with a run -> `instructzero_flow(config, resume_run_id=run_id)`

Members are named `<name_prefix>-<task>-seed<seed>`, so re-running a suite with the same prefix resumes its
unfinished members (the name-based resume of `instructzero_flow`) instead of starting them again. A scheduled run
without a prefix uses its scheduled date, so every night gets its own runs and a retried night resumes its own.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, cast

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from instructzero.flows.instruction_search import RunSummary, black_box_endpoint, instructzero_flow
from instructzero.flows.params import (
    DEFAULT_STORE_URL,
    RunConfig,
    build_config,
    config_from_record,
    resolve_store_url,
)
from instructzero.tasks.errors import ConfigError, InstructZeroError
from instructzero.tasks.evaluation.blackbox_settings import BlackBoxConfig
from instructzero.tasks.optimisation.selection import reported_candidate
from instructzero.tasks.prefect_tasks import open_store


class SuiteError(InstructZeroError):
    """At least one member of a suite failed; the others finished and every member run is resumable."""


@dataclass(frozen=True)
class SuiteMemberResult:
    """One task of a suite: its run in the store and how it ended."""

    task: str
    name: str
    status: str  # "completed" or "failed"
    run_id: str | None = None
    best_instruction: str | None = None
    dev_score: float | None = None
    test_score: float | None = None
    error: str | None = None


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` on top of `base`, merging nested dicts (neither input is modified)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "task"


def _default_prefix() -> str:
    scheduled = flow_run.get_scheduled_start_time()
    return f"suite-{scheduled:%Y%m%d}" if scheduled is not None else "suite"


def member_configs(tasks: list[str], config: dict[str, Any], name_prefix: str) -> list[RunConfig]:
    """One validated `RunConfig` per task: `config` (nested overrides, env fills the rest) + task + name."""
    if not tasks:
        raise ConfigError("a suite needs at least one task, got an empty list")
    if len(set(tasks)) != len(tasks):
        raise ConfigError(f"duplicate tasks in suite: {tasks}")
    configs = []
    for task in tasks:
        member = build_config(**deep_merge(config, {"data": {"task": task}}))
        configs.append(member.model_copy(update={"name": f"{name_prefix}-{_slug(task)}-seed{member.seed}"}))
    return configs


def _run_member(config: RunConfig, deployment: str | None) -> SuiteMemberResult:
    """Run one member to its end, as a subflow or a deployment run; failures become a failed result."""
    task, name = config.data.task, config.name or ""
    try:
        if deployment is None:
            summary = instructzero_flow(config)
            return SuiteMemberResult(
                task, name, "completed", summary.run_id, summary.best_instruction, summary.dev_score, summary.test_score
            )
        from prefect.client.schemas.objects import FlowRun
        from prefect.deployments import run_deployment

        parameters = {"config": config.model_dump(mode="json", exclude={"cache_dir"})}
        # called from sync code, Prefect's sync-compatible function returns the FlowRun itself
        remote = cast(FlowRun, run_deployment(name=deployment, parameters=parameters, timeout=None))
        run = open_store(config.store_url).find_run_by_name(name)
        if remote.state is None or not remote.state.is_completed():
            state = remote.state.name if remote.state is not None else "unknown"
            return SuiteMemberResult(
                task, name, "failed", run.id if run else None, error=f"flow run {remote.id} ended {state}"
            )
        best = _best_of(config.store_url, run.id) if run else None
        return SuiteMemberResult(task, name, "completed", run.id if run else None, *(best or (None, None, None)))
    except Exception as exc:  # noqa: BLE001 - one failing task must not stop the others; reported below
        run_id = _find(config)
        return SuiteMemberResult(task, name, "failed", run_id, error=f"{type(exc).__name__}: {exc}")


def _find(config: RunConfig) -> str | None:
    try:
        run = open_store(config.store_url).find_run_by_name(config.name or "")
    except Exception:  # noqa: BLE001 - the store itself may be what failed
        return None
    return run.id if run else None


def _best_of(store_url: str, run_id: str) -> tuple[str, float, float | None] | None:
    store = open_store(store_url)
    best = reported_candidate(store, store.get_run(run_id))  # the one rule, by the run's own objective
    if best is None:
        return None
    return best.instruction, float(best.dev_score or 0.0), best.test_score


@flow(name="instructzero-suite", log_prints=True)
def benchmark_suite(
    tasks: list[str],
    config: dict[str, Any] | None = None,
    name_prefix: str | None = None,
    max_parallel: int = 2,
    deployment: str | None = None,
) -> list[dict[str, Any]]:
    """Run InstructZero on every task of a suite in parallel, all writing to one shared store.

    Args:
        tasks: task names (see `instructzero tasks`) or task files.
        config: nested `RunConfig` overrides shared by every member (e.g. {"bo": {"iterations": 5}}); settings not
            given come from `INSTRUCTZERO_*` environment variables (work-pool job variables), then defaults.
        name_prefix: members are named `<prefix>-<task>-seed<seed>`; default `suite-<scheduled date>`.
        max_parallel: members running at once (threads in this process, or deployment runs in flight).
        deployment: run each member as a flow run of this deployment (e.g. "instructzero/run-task-gpu") instead of
            a subflow here, so a GPU work pool's workers do the generation.

    Returns:
        one `SuiteMemberResult` (as a dict) per task, in the order given.

    Raises:
        SuiteError: after every member has ended, when at least one failed (each stays resumable).
    """
    logger = get_run_logger()
    if max_parallel < 1:
        raise ConfigError(f"max_parallel must be >= 1, got {max_parallel}")
    configs = [
        c.with_store_secret() for c in member_configs(list(tasks), dict(config or {}), name_prefix or _default_prefix())
    ]
    store_urls = {c.store_url for c in configs}
    for url in store_urls:  # create / migrate the shared store once, before the members race for it
        open_store(url)
    with _shared_endpoint(deployment, configs[0].black_box) as base_url:
        if base_url is not None:
            configs = [
                c.model_copy(update={"black_box": c.black_box.model_copy(update={"base_url": base_url})})
                for c in configs
            ]
        with ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="suite") as pool:
            futures = [pool.submit(contextvars.copy_context().run, _run_member, c, deployment) for c in configs]
            results = [f.result() for f in futures]
    for r in results:
        logger.info(
            "%-24s %-9s run %s dev %s test %s %r",
            r.task,
            r.status,
            r.run_id,
            r.dev_score,
            r.test_score,
            r.best_instruction if r.error is None else r.error,
        )
    failed = [r for r in results if r.status != "completed"]
    if failed:
        raise SuiteError(
            f"{len(failed)} of {len(results)} suite tasks failed: "
            + "; ".join(f"{r.task} ({r.run_id}): {r.error}" for r in failed)
        )
    return [asdict(r) for r in results]


def _shared_endpoint(deployment: str | None, settings: BlackBoxConfig) -> contextlib.AbstractContextManager[str | None]:
    """In-process members without a black-box URL share one served model; otherwise nothing changes (None)."""
    if deployment is not None or settings.base_url:
        return contextlib.nullcontext(None)
    return black_box_endpoint(settings)


@flow(name="instructzero-resume", log_prints=True)
def resume_run(run_id: str, store_url: str | None = None, black_box_url: str | None = None) -> RunSummary:
    """Continue a stored run with the exact config it was started with.

    Args:
        run_id: the run's id in the store (`instructzero runs`).
        store_url: the store (default `$INSTRUCTZERO_STORE_URL`, else `sqlite:///instructzero.db`).
        black_box_url: only when the endpoint moved; answers already paid for are reused (the response cache is
            keyed by model, prompt and generation settings, not by URL).
    """
    url = resolve_store_url(store_url or os.environ.get("INSTRUCTZERO_STORE_URL", DEFAULT_STORE_URL))
    run = open_store(url).get_run(run_id)
    overrides: dict[str, Any] = {"store_url": url}
    if black_box_url:
        overrides["black_box"] = {**run.config.get("black_box", {}), "base_url": black_box_url}
    config = config_from_record(run.config, **overrides)
    return instructzero_flow(config, resume_run_id=run.id)


if __name__ == "__main__":
    print(benchmark_suite(["sum", "diff"], {"bo": {"iterations": 1}}))
