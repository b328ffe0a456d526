"""Speed and cost benchmark: every ratio is measured side by side in one process, one run.

1. Black-box throughput: `BlackBoxClient` with bounded async concurrency vs one call at a time, against our local
   server (echo backend, its own process) with injected latency, at each latency in `latencies_s`; speed-up
   compared with the ideal n / ceil(n / concurrency).
2. Instruction generation: one batched `generate` over b soft prompts vs one soft prompt at a time.
3. Orchestration overhead: the Prefect flow vs the same loop as plain calls of the functions its @task wrappers
   wrap (`task.fn`), same config (the default run's shape per iteration), echo backend in its own process with a
   hosted-API-like latency, fresh stores; Prefect's result cache is refreshed, not read.
4. GP update time at 50, 200, 1000 evaluated points (`instructzero.benchmarks.gp_update_speed.measure` when present).
5. Resume: `instructzero run` in a subprocess, killed with SIGKILL once the server has received half the requests of
   an uninterrupted reference run, then resumed from the store; the server's completion requests over both parts
   against the reference: the fraction of black-box calls paid twice (target 0).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SpeedSettings:
    n_requests: int = 48  # black-box throughput: prompts per setting
    concurrency: int = 8
    latencies_s: tuple[float, ...] = (0.1, 0.5)  # injected server latency per request, one measurement each
    gen_prompts: int = 8  # soft prompts for the generation comparison
    gen_max_new_tokens: int = 16
    gen_repeats: int = 1
    gp_sizes: tuple[int, ...] = (50, 200, 1000)
    gp_batch_size: int = 2  # the flow's default q-batch
    gp_num_restarts: int = 5
    gp_raw_samples: int = 128
    overhead_repeats: int = 2  # alternating order; the minimum of each is reported
    overhead_iterations: int = 2  # BO iterations after the initial design
    overhead_realistic: bool = True  # the default run shape (10 dev examples, 32 new tokens, q=2) or a tiny one
    overhead_latency_s: float = 0.3  # of the black box (a hosted API answers short prompts in ~0.3-1 s)
    resume_iterations: int = 3
    generator: str | None = None
    skip: tuple[str, ...] = ()  # any of "throughput", "generation", "overhead", "gp", "resume"


@dataclass
class SpeedResult:
    settings: dict[str, Any]
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    wall_s: float = 0.0


# --------------------------------------------------------------------------------------- 1. black-box throughput
def measure_throughput(n_requests: int, concurrency: int, latency_s: float) -> dict[str, Any]:
    """Wall time of n distinct prompts at `concurrency` vs 1, against an echo server with `latency_s` per request."""
    from instructzero.servers.local_endpoint import start_own_server
    from instructzero.tasks.evaluation.blackbox import BlackBoxClient, BlackBoxSettings

    endpoint = start_own_server("echo", latency_s=latency_s, in_process=False)
    try:

        def timed(c: int, tag: str) -> float:
            client = BlackBoxClient(
                BlackBoxSettings.at(
                    endpoint.base_url, model=endpoint.model, api="completions", concurrency=c, max_tokens=8
                )
            )
            prompts = [f"Instruction: add\n\nInput: {tag} {i} {i + 1}\nOutput:" for i in range(n_requests)]
            t0 = time.perf_counter()
            client.complete_many_sync(prompts)
            return time.perf_counter() - t0

        timed(concurrency, "warmup")  # HTTP stack, event loop, imports
        serial = timed(1, "serial")
        parallel = timed(concurrency, "parallel")
        stats = endpoint.stats() or {}
    finally:
        endpoint.stop()
    ideal = n_requests / math.ceil(n_requests / concurrency)
    speedup = serial / parallel
    return {
        "n_requests": n_requests,
        "concurrency": concurrency,
        "latency_s": latency_s,
        "serial_s": serial,
        "concurrent_s": parallel,
        "speedup": speedup,
        "ideal_speedup": ideal,
        "fraction_of_ideal": speedup / ideal,
        "within_10pct_of_ideal": speedup >= 0.9 * ideal,
        "server_max_in_flight": stats.get("max_in_flight"),
    }


# ------------------------------------------------------------------------------------------ 2. generation
def measure_generation(n: int, max_new_tokens: int, repeats: int, model: str | None = None) -> dict[str, Any]:
    """One batched generate over n soft prompts vs n single-prompt calls (same generator, greedy, same outputs)."""
    from instructzero.benchmarks.generation_speed import time_generation
    from instructzero.tasks.generation.model_assets import PACKAGED_GEMMA, default_cache_dir
    from instructzero.tasks.generation.settings import GeneratorSettings
    from instructzero.tasks.prefect_tasks import GeneratorSpec

    settings = GeneratorSettings(model=model or PACKAGED_GEMMA, max_new_tokens=max_new_tokens, template=None)
    gen = GeneratorSpec(settings, cache_dir=str(default_cache_dir()), projection_seed=0).load()
    result = time_generation(gen, n, repeats)
    del result["instructions"]
    return result


# ------------------------------------------------------------------------------------------- 3. overhead
def _tiny_config(
    store_url: str,
    base_url: str,
    model: str,
    iterations: int,
    seed: int,
    name: str,
    generator: str | None,
    realistic: bool = False,
) -> Any:
    """A small run on the built-in sum task; `realistic`: the default run's shape per iteration (10 dev examples,
    5 exemplars, 32 new tokens, 2 soft prompts per BO iteration, the default acquisition optimisation)."""
    from instructzero.flows.params import build_config

    gen: dict[str, Any] = {"max_new_tokens": 32 if realistic else 8}
    if generator:
        gen["model"] = generator
    data = (
        {"task": "sum", "n_exemplars": 5, "n_dev": 10, "n_test": 10}
        if realistic
        else {"task": "sum", "n_exemplars": 3, "n_dev": 4, "n_test": 4}
    )
    bo = (
        {"n_init": 2, "iterations": iterations, "batch_size": 2}
        if realistic
        else {"n_init": 2, "iterations": iterations, "batch_size": 1, "num_restarts": 2, "raw_samples": 32}
    )
    return build_config(
        name=name,
        seed=seed,
        store_url=store_url,
        data=data,
        generator=gen,
        black_box={"base_url": base_url, "model": model, "api": "completions", "max_tokens": 8},
        bo=bo,
    )


def plain_loop(config: Any) -> float:
    """The flow's loop with the plain functions its @task wrappers wrap (no Prefect); returns the best test score."""
    from instructzero.flows.params import package_versions
    from instructzero.tasks import prefect_tasks as pt
    from instructzero.tasks.optimisation.proposer import ProposerContext, make_proposer
    from instructzero.tasks.optimisation.selection import best_candidate

    data, splits = pt.load_task_data.fn(config.data, config.seed)
    spec = config.generator_spec()  # the flow's own (this copy had lost soft_scale)
    generator = spec.load()
    store = pt.open_store(config.store_url)
    run = pt.start_run.fn(
        config.store_url,
        name=config.name,
        task_name=data.name,
        config=config.recorded(),
        seed=config.seed,
        versions={**package_versions(), "generator_revision": generator.model_revision},
        projection_hash=generator.projection.fingerprint(),
        data=data,
        splits=splits,
    )
    store.set_run_status(run.id, "running")
    bb, bo = config.black_box, config.bo
    settings = bb.client_settings(bb.base_url)
    dev_ids = tuple(e.id for e in splits.dev)
    proposer = make_proposer(bo.strategy, ProposerContext(config.generator.intrinsic_dim, config.seed, dev_ids), bo)
    history: list = []
    with ThreadPoolExecutor(max_workers=8) as pool:  # the flow's ThreadPoolTaskRunner(max_workers=8)
        for iteration in range(bo.iterations + 1):
            if proposer.learns and history:
                pt.gp_update_task.fn(proposer, history)
            proposal = pt.propose_prompt.fn(proposer, iteration, bo.n_init if iteration == 0 else bo.batch_size)
            instructions = pt.generate_instruction.fn(proposal.z, splits.exemplars, spec)
            unique = list(dict.fromkeys(instructions))
            results = list(
                pool.map(
                    lambda text: pt.zero_shot_evaluate.fn(
                        text, splits.dev, data.metric, bb.template, settings, config.store_url
                    ),
                    unique,
                )
            )
            by_text = dict(zip(unique, results))
            history = pt.record_iteration.fn(
                config.store_url, run.id, proposal, instructions, [by_text[t] for t in instructions], bb.model
            )
    best = best_candidate(history)
    test = pt.zero_shot_evaluate.fn(best.instruction, splits.test, data.metric, bb.template, settings, config.store_url)
    pt.record_test_evaluation.fn(config.store_url, run.id, test)
    store.set_run_status(run.id, "completed")
    return test.mean_score


def _refresh_prefect_cache():
    from prefect.settings import PREFECT_TASKS_REFRESH_CACHE, temporary_settings

    return temporary_settings(updates={PREFECT_TASKS_REFRESH_CACHE: True})


def measure_overhead(
    iterations: int,
    repeats: int,
    workdir: Path,
    generator: str | None = None,
    *,
    realistic: bool = True,
    latency_s: float = 0.3,
) -> dict[str, Any]:
    """Wall time of the Prefect flow vs `plain_loop` on the same config (echo backend in its own process with
    `latency_s` per request, fresh stores)."""
    from instructzero.flows.instruction_search import instructzero_flow
    from instructzero.servers.local_endpoint import start_own_server

    endpoint = start_own_server("echo", latency_s=latency_s, in_process=False)
    flow_times, plain_times, same = [], [], True
    try:
        with _refresh_prefect_cache():
            # Warm-up with the same shape (GP fit and acquisition code paths included): starts the Prefect API and
            # loads the generator, neither of which is part of the comparison.
            warm = _tiny_config(
                f"sqlite:///{workdir / 'overhead-warm.db'}",
                endpoint.base_url,
                endpoint.model,
                iterations,
                0,
                "overhead-warm",
                generator,
                realistic,
            )
            instructzero_flow(warm)
            for r in range(max(1, repeats)):
                args = (endpoint.base_url, endpoint.model, iterations, 0)
                plain_cfg = _tiny_config(
                    f"sqlite:///{workdir / f'overhead-plain-{r}.db'}",
                    *args,
                    f"overhead-plain-{r}",
                    generator,
                    realistic,
                )
                flow_cfg = _tiny_config(
                    f"sqlite:///{workdir / f'overhead-flow-{r}.db'}", *args, f"overhead-flow-{r}", generator, realistic
                )
                flow_first = r % 2 == 1  # alternate the order so drift on a shared machine cancels out
                for which in ("flow", "plain") if flow_first else ("plain", "flow"):
                    t0 = time.perf_counter()
                    if which == "plain":
                        plain_score = plain_loop(plain_cfg)
                        plain_times.append(time.perf_counter() - t0)
                    else:
                        summary = instructzero_flow(flow_cfg)
                        flow_times.append(time.perf_counter() - t0)
                same = same and abs(summary.test_score - plain_score) < 1e-12
    finally:
        endpoint.stop()
    flow_s, plain_s = min(flow_times), min(plain_times)
    shape = flow_cfg.data
    return {
        "iterations": iterations + 1,
        "candidates": flow_cfg.total_candidates,
        "n_dev": shape.n_dev,
        "max_new_tokens": flow_cfg.generator.max_new_tokens,
        "latency_s": latency_s,
        "flow_s": flow_s,
        "plain_s": plain_s,
        "overhead_s_per_iteration": (flow_s - plain_s) / (iterations + 1),
        "overhead_s": flow_s - plain_s,
        "overhead_pct_of_flow_wall": 100.0 * (flow_s - plain_s) / flow_s,
        "same_result": same,
        "repeats": len(flow_times),
    }


# ----------------------------------------------------------------------------------------------- 4. GP update
def measure_gp(
    sizes: Sequence[int], *, batch_size: int = 2, num_restarts: int = 5, raw_samples: int = 128
) -> dict[str, Any]:
    """GP update (fit) and proposal time per number of evaluated points, both kernels."""
    from instructzero.benchmarks.gp_update_speed import measure

    return {"points": measure(list(sizes), batch_size=batch_size, num_restarts=num_restarts, raw_samples=raw_samples)}


# ---------------------------------------------------------------------------------------------------- 5. resume
def _completion_requests(endpoint: Any) -> int:
    """Completion requests the server received (read in-process: cheap enough to poll)."""
    return endpoint._handle.app.state.stats.completion_requests


def _cli_run_args(config: Any) -> tuple[list[str], dict[str, str]]:
    """`instructzero run` arguments and environment that rebuild `config` (a `_tiny_config`) in a subprocess."""
    d, g, bb, bo = config.data, config.generator, config.black_box, config.bo
    args = [
        "run",
        "--task",
        d.task,
        "--name",
        config.name,
        "--store",
        config.store_url,
        "--seed",
        str(config.seed),
        "--n-exemplars",
        str(d.n_exemplars),
        "--n-dev",
        str(d.n_dev),
        "--n-test",
        str(d.n_test),
        "--generator",
        g.model,
        "--max-new-tokens",
        str(g.max_new_tokens),
        "--black-box-url",
        bb.base_url,
        "--black-box-model",
        bb.model,
        "--black-box-api",
        bb.api,
        "--max-tokens",
        str(bb.max_tokens),
        "--init",
        str(bo.n_init),
        "--iterations",
        str(bo.iterations),
        "--batch",
        str(bo.batch_size),
    ]
    env = {"INSTRUCTZERO_BO__NUM_RESTARTS": str(bo.num_restarts), "INSTRUCTZERO_BO__RAW_SAMPLES": str(bo.raw_samples)}
    return args, env


def measure_resume(
    iterations: int, workdir: Path, generator: str | None = None, startup_timeout_s: float = 300.0
) -> dict[str, Any]:
    """Black-box requests of kill -9 + resume vs an uninterrupted run (fresh store and echo server each).

    The interrupted run is `instructzero run` in a subprocess, killed with SIGKILL once the server has received half
    the reference run's requests (requests may be in flight: the harshest case); it is then resumed in-process from
    the store, as `instructzero resume` does.
    """
    import os
    import signal
    import subprocess
    import sys

    from instructzero.flows.instruction_search import instructzero_flow
    from instructzero.flows.params import config_from_record
    from instructzero.servers.local_endpoint import start_own_server
    from instructzero.tasks.prefect_tasks import open_store

    with _refresh_prefect_cache():
        ref_ep = start_own_server("echo", latency_s=0.02)
        try:
            ref_cfg = _tiny_config(
                f"sqlite:///{workdir / 'resume-ref.db'}",
                ref_ep.base_url,
                ref_ep.model,
                iterations,
                1,
                "resume-ref",
                generator,
            )
            ref_summary = instructzero_flow(ref_cfg)
            reference = _completion_requests(ref_ep)
        finally:
            ref_ep.stop()

        ep = start_own_server("echo", latency_s=0.02)
        try:
            store_url = f"sqlite:///{workdir / 'resume-int.db'}"
            cfg = _tiny_config(store_url, ep.base_url, ep.model, iterations, 1, "resume-int", generator)
            args, extra_env = _cli_run_args(cfg)
            env = {**os.environ, **extra_env, "PREFECT_TASKS_REFRESH_CACHE": "true", "PYTHONUNBUFFERED": "1"}
            stop_after = max(1, reference // 2)
            child_log = workdir / "resume-child.log"
            log = open(child_log, "wb")
            child = subprocess.Popen(
                [sys.executable, "-m", "instructzero.flows.cli", *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=Path(__file__).resolve().parents[1],
            )
            killed = False
            deadline = time.monotonic() + startup_timeout_s
            try:
                while child.poll() is None:
                    if _completion_requests(ep) >= stop_after:
                        os.kill(child.pid, signal.SIGKILL)  # our own child, by its pid
                        killed = True
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"the run to kill sent fewer than {stop_after} requests in "
                            f"{startup_timeout_s:.0f} s (see {child_log})"
                        )
                    time.sleep(0.002)
            finally:
                if child.poll() is None and not killed:
                    child.kill()
                child.wait(timeout=30)
                log.close()
            time.sleep(0.1)  # let the server finish answering requests the dead client had in flight
            before = _completion_requests(ep)
            store = open_store(store_url)
            run = store.find_run_by_name("resume-int")
            if run is None:
                raise RuntimeError(f"the killed run left no run in the store (see {child_log})")
            recorded_before = len(store.completed_iterations(run.id))
            answers_persisted = store.count_llm_calls()
            status_before = run.status
            summary = instructzero_flow(config_from_record(run.config, store_url=store_url), resume_run_id=run.id)
            total = _completion_requests(ep)
        finally:
            ep.stop()
    repeated = total - reference
    lost_in_flight = before - answers_persisted  # answered by the server after the client died: never stored
    return {
        "reference_requests": reference,
        "killed_at_request": before,
        "killed": killed,
        "status_after_kill": status_before,
        "iterations_recorded_before_resume": recorded_before,
        "answers_persisted_at_kill": answers_persisted,
        "lost_in_flight": lost_in_flight,
        "total_requests_with_resume": total,
        "repeated_requests": repeated,
        "repeated_fraction": repeated / reference if reference else 0.0,
        "persisted_answers_repeated": repeated - lost_in_flight,
        "same_best_instruction": summary.best_instruction == ref_summary.best_instruction,
    }


# --------------------------------------------------------------------------------------------------- driver
def run_speed(s: SpeedSettings, *, workdir: Path | None = None, log: Callable[[str], None] = print) -> SpeedResult:
    """Run every section not in `s.skip`; a failing section is reported, not fatal."""
    result = SpeedResult(settings=asdict(s))
    start = time.perf_counter()
    own_tmp = None
    if workdir is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="instructzero-speed-")
        workdir = Path(own_tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    sections: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        *(
            (f"throughput@{lat:g}s", lambda lat=lat: measure_throughput(s.n_requests, s.concurrency, lat))
            for lat in s.latencies_s
        ),
        ("generation", lambda: measure_generation(s.gen_prompts, s.gen_max_new_tokens, s.gen_repeats, s.generator)),
        (
            "overhead",
            lambda: measure_overhead(
                s.overhead_iterations,
                s.overhead_repeats,
                workdir,
                s.generator,
                realistic=s.overhead_realistic,
                latency_s=s.overhead_latency_s,
            ),
        ),
        (
            "gp",
            lambda: measure_gp(
                s.gp_sizes, batch_size=s.gp_batch_size, num_restarts=s.gp_num_restarts, raw_samples=s.gp_raw_samples
            ),
        ),
        ("resume", lambda: measure_resume(s.resume_iterations, workdir, s.generator)),
    ]
    try:
        for name, fn in sections:
            if name.split("@")[0] in s.skip:
                continue
            log(f"[speed] {name} ...")
            t0 = time.perf_counter()
            try:
                section = fn()
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - report and go on with the other sections
                section = {"error": f"{type(exc).__name__}: {exc}"}
            section["section_wall_s"] = time.perf_counter() - t0
            result.sections[name] = section
            log(f"[speed] {name}: {_short(section)}")
    finally:
        if own_tmp is not None:
            own_tmp.cleanup()
    result.wall_s = time.perf_counter() - start
    return result


def _short(section: dict[str, Any]) -> str:
    items = []
    for k, v in section.items():
        if isinstance(v, float):
            v = f"{v:.3g}"
        elif isinstance(v, list):
            v = f"[{len(v)} rows]"
        items.append(f"{k}={v}")
    return ", ".join(items)


def gp_series(section: dict[str, Any]) -> dict[str, list[tuple[int, float]]]:
    """{"<kernel> fit" | "<kernel> propose": [(n, seconds), ...]} from the GP section's rows (plot and table)."""
    series: dict[str, list[tuple[int, float]]] = {}
    for row in section.get("points", []):
        for key, label in (("fit_s", "fit"), ("propose_s", "propose")):
            series.setdefault(f"{row['kernel']} {label}", []).append((int(row["n"]), float(row[key])))
    return series
