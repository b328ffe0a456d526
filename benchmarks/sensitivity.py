"""Is the black box instruction-sensitive? Empty vs hand-written instruction on every task, same dev examples.

    python -m instructzero.benchmarks.sensitivity [--data-dir ../shared/data] [--n 20] [--tasks a,b,...] [--black-box
    MODEL]

For each task (the built-ins, and every instruction-induction task found under --data-dir) the first human
instruction (instruction-induction `annotations/`, or `instructzero.tasks.data.builtin_tasks.HUMAN_INSTRUCTIONS`) and
the empty
instruction are scored zero-shot on the same n dev examples (seed-0 split of the exemplar/dev pool: tasks are
chosen from this table, so it never reads the test split) by a packaged black box (default: the run's, chat
endpoint, served on 127.0.0.1), with the project's own template, metric and answer cap. Writes a markdown table
(difference with its paired BCa 95% interval, the exact paired p-value, and the constant-answer rate on the same
examples) and JSON.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from instructzero.benchmarks.markdown_results import write_results
from instructzero.flows.offline import offline_defaults
from instructzero.flows.params import RunConfig
from instructzero.servers.local_endpoint import local_endpoint
from instructzero.tasks.data.splits import make_splits
from instructzero.tasks.data.task_data import list_tasks, load_task
from instructzero.tasks.evaluation.blackbox import BlackBoxClient, evaluate_instructions
from instructzero.tasks.evaluation.constant_answer import best_constant_answer
from instructzero.tasks.evaluation.statistics import paired_test


def main(argv: list[str] | None = None) -> int:
    offline_defaults()
    parser = argparse.ArgumentParser(
        prog="python -m instructzero.benchmarks.sensitivity", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--n", type=int, default=20, help="test examples per task")
    parser.add_argument("--tasks", default=None, help="comma-separated subset")
    parser.add_argument("--black-box", default=None, help="packaged model to serve (default: the run's default)")
    parser.add_argument("--out", default="benchmarks/results/sensitivity")
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir) if args.data_dir else None
    infos = [i for i in list_tasks(None) if i.source == "builtin"]
    if data_dir is not None:
        infos += [i for i in list_tasks(data_dir) if i.source == "instruction-induction"]
    wanted = set(args.tasks.split(",")) if args.tasks else None
    config = RunConfig().black_box
    if args.black_box:
        config = config.model_copy(update={"model": args.black_box})
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    with local_endpoint(config.engine, model=config.model, api=config.api, max_batch=config.concurrency) as ep:
        for info in infos:
            if wanted and info.name not in wanted:
                continue
            task = load_task(f"builtin:{info.name}" if info.source == "builtin" else f"ii:{info.name}", data_dir)
            if not task.human_instructions:
                continue
            splits = make_splits(task, n_exemplars=5, n_dev=args.n, n_test=1, seed=0)
            settings = config.client_settings(ep.base_url, answers=splits.answers())
            client = BlackBoxClient(settings)
            human = task.human_instructions[0]
            empty_ev, human_ev = evaluate_instructions(
                client, ["", human], splits.dev, task.metric, template=config.template
            )
            constant = best_constant_answer(splits.dev, task.metric).rate
            a = [r.score for r in human_ev.examples]
            b = [r.score for r in empty_ev.examples]
            t = paired_test(a, b)
            diff, low, high, p = t.diff, t.low, t.high, t.p_value
            rows.append(
                {
                    "task": task.name,
                    "source": task.source,
                    "metric": task.metric,
                    "n": len(a),
                    "empty": round(empty_ev.mean_score, 3),
                    "human": round(human_ev.mean_score, 3),
                    "diff": round(diff, 3),
                    "diff_low": round(low, 3),
                    "diff_high": round(high, 3),
                    "p": round(p, 4),
                    "constant": round(constant, 3),
                    "instruction": human,
                }
            )
            print(
                f"{task.name:<26} empty {empty_ev.mean_score:.2f}  human {human_ev.mean_score:.2f}  "
                f"diff {diff:+.2f} [{low:+.2f}, {high:+.2f}] p={p:.3f}  constant {constant:.2f}",
                flush=True,
            )
    wall = time.perf_counter() - start
    table = [
        [
            r["task"],
            r["metric"],
            str(r["n"]),
            f"{r['empty']:.2f}",
            f"{r['human']:.2f}",
            f"{r['diff']:+.2f} [{r['diff_low']:+.2f}, {r['diff_high']:+.2f}]",
            f"{r['p']:.3f}",
            f"{r['constant']:.2f}",
        ]
        for r in sorted(rows, key=lambda r: -r["diff"])
    ]
    print(
        write_results(
            Path(args.out),
            "sensitivity",
            rows,
            table,
            ["task", "metric", "n", "empty", "human", "human - empty [95% CI]", "p (exact)", "constant"],
            wall_s=wall,
            footer=f"{len(rows)} tasks in {wall:.0f} s",
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
