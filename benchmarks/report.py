"""Write a benchmark's report.md, PNG plots (matplotlib, Agg) and results.json into one folder."""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

from instructzero.benchmarks.quality import CONSTANT, MethodRun, QualityResult, summarize, with_constant
from instructzero.benchmarks.speed import SpeedResult, gp_series
from instructzero.storage.session import display_url
from instructzero.tasks.evaluation.statistics import bootstrap_ci, holm, paired_test

REFERENCE = "instructzero"  # the method the paired comparisons are about
# the baselines, the constant-answer reference (a gain that only reaches it is a format fix), then the kernel
# ablations (is the coupled kernel better than the exploring one, than a plain Matern?)
PAIRED_AGAINST = ("uniform", "ape", "empty", CONSTANT, "instructzero-explore", "instructzero-matern")
ALPHA = 0.05


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _file_slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


# ------------------------------------------------------------------------------------------------ quality
def quality_tables(q: QualityResult) -> str:
    methods = with_constant(q.settings["methods"], q.runs)
    tasks = list(dict.fromkeys(r.task for r in q.runs))
    summary = summarize(q.runs, methods, tasks)
    lines = ["| task | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    for task in tasks:
        cells = []
        for m in methods:
            cell = summary["per_task"][task][m]
            if not cell.get("n"):
                cells.append("n/a")
                continue
            text = f"{cell['test_mean']:.3f} ± {cell['test_std']:.3f}"
            if cell.get("failed"):
                text += f" ({cell['failed']} failed)"
            cells.append(text)
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    lines.append(
        "| **mean over tasks** | "
        + " | ".join(
            f"**{_fmt(summary['overall'][m]['test_mean'])}**"
            + (
                f" ({summary['overall'][m]['n_tasks']}/{len(tasks)} tasks)"
                if summary["overall"][m]["n_tasks"] not in (0, len(tasks))
                else ""
            )
            for m in methods
        )
        + " |"
    )
    out = ["Test accuracy, mean ± std over seeds (n/a: see notes).", "", *lines, ""]

    cost = [
        "| task | method | dev instructions (distinct) | calls (paid) | tokens (paid) | best dev |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for task in tasks:
        for m in q.settings["methods"]:  # the constant-answer reference makes no call
            rows = [r for r in q.runs if r.task == task and r.method == m and r.status == "completed"]
            if not rows:
                continue
            mean = lambda key, rows=rows: statistics.fmean(getattr(r, key) for r in rows)  # noqa: E731
            cost.append(
                f"| {task} | {m} | {mean('n_candidates'):.0f} ({mean('n_distinct'):.1f}) | {mean('calls'):.0f} "
                f"({mean('paid_calls'):.0f}) | {mean('tokens'):.0f} ({mean('paid_tokens'):.0f}) | "
                f"{mean('dev_score'):.3f} |"
            )
    out += [
        "Black-box cost per run (mean over seeds, from the store). *calls/tokens*: everything the method needed "
        "(dev + test); *paid*: not served by the store's shared response cache.",
        "",
        *cost,
        "",
    ]

    notes = _grouped_notes(q.runs, list(q.settings["methods"]))
    if notes:
        out += ["Notes:", "", *notes, ""]
    best = ["| run | dev | test | best dev instruction |", "|---|---:|---:|---|"]
    for r in q.runs:
        if r.status == "completed":
            instr = r.best_instruction.replace("|", "\\|") or "(empty)"
            best.append(f"| {r.run_name} | {_fmt(r.dev_score)} | {_fmt(r.test_score)} | {instr[:90]} |")
    out += ["<details><summary>Best instruction per run</summary>", "", *best, "", "</details>", ""]
    return "\n".join(out)


def _grouped_notes(runs: list[MethodRun], methods: list[str]) -> list[str]:
    """One line per reason a method-run did not complete, naming the task and seed cells it covers (a partial
    suite read back with --report-only has dozens)."""
    by_note: dict[str, dict[tuple[str, int], list[str]]] = {}
    for r in runs:
        if r.status != "completed":
            by_note.setdefault(f"{r.status}: {r.note}", {}).setdefault((r.task, r.seed), []).append(r.method)
    lines = []
    for note, cells in sorted(by_note.items()):
        named = [
            f"{task} seed {seed} ({'every method' if len(ms) == len(methods) else ', '.join(ms)})"
            for (task, seed), ms in sorted(cells.items())
        ]
        lines.append(f"- {note}: {sum(len(ms) for ms in cells.values())} method-runs: " + "; ".join(named))
    return lines


# ------------------------------------------------------------------------------------------ statistics
def _completed(q: QualityResult, task: str, method: str) -> list[MethodRun]:
    return [r for r in q.runs if r.task == task and r.method == method and r.status == "completed"]


def _pooled_test(runs: list[MethodRun]) -> dict[tuple[int, str], float]:
    """(seed, test example id) -> score of the run's best instruction, pooled over seeds."""
    return {(r.seed, ex_id): score for r in runs for ex_id, score in r.test_examples}


def quality_statistics(q: QualityResult, *, n_boot: int = 10_000) -> dict[str, Any]:
    """Per task and method: mean test accuracy over the pooled test examples of all seeds with a 95% BCa bootstrap
    interval; per task: paired differences of `REFERENCE` vs each of `PAIRED_AGAINST` over the test examples both
    scored (same seed, same example), pooled over seeds, with a valid paired p-value (exact McNemar for 0/1
    scores, sign-flip permutation otherwise), its Holm adjustment over every task x method comparison of the
    report, and per-seed win/tie/loss of the test accuracies; over tasks: win/tie/loss by mean difference, and
    how many differences are significant at `ALPHA` after Holm's adjustment. The constant-answer reference is one
    more column and one more comparison."""
    methods = with_constant(q.settings["methods"], q.runs)
    tasks = list(dict.fromkeys(r.task for r in q.runs))
    accuracy: dict[str, dict[str, Any]] = {}
    paired: dict[str, dict[str, Any]] = {}
    for task in tasks:
        accuracy[task] = {}
        for m in methods:
            pooled = _pooled_test(_completed(q, task, m))
            if not pooled:
                continue
            scores = list(pooled.values())
            low, high = bootstrap_ci(scores, n_boot=n_boot)
            accuracy[task][m] = {"mean": statistics.fmean(scores), "low": low, "high": high, "n": len(scores)}
        paired[task] = {}
        ref_runs = _completed(q, task, REFERENCE)
        ref = _pooled_test(ref_runs)
        for other in PAIRED_AGAINST:
            if other not in methods or not ref:
                continue
            other_runs = _completed(q, task, other)
            theirs = _pooled_test(other_runs)
            keys = sorted(set(ref) & set(theirs))
            if not keys:
                continue
            a, b = [ref[k] for k in keys], [theirs[k] for k in keys]
            test = paired_test(a, b, n_boot=n_boot)
            by_seed = {r.seed: r.test_score for r in other_runs if r.test_score is not None}
            seeds = [
                (r.test_score, by_seed[r.seed]) for r in ref_runs if r.seed in by_seed and r.test_score is not None
            ]
            paired[task][other] = {
                "diff": test.diff,
                "low": test.low,
                "high": test.high,
                "p": test.p_value,
                "test": test.test,
                "n": len(keys),
                "seed_wins": sum(x > y for x, y in seeds),
                "seed_ties": sum(x == y for x, y in seeds),
                "seed_losses": sum(x < y for x, y in seeds),
            }
    cells = [c for t in tasks for c in paired[t].values()]
    for cell, adjusted in zip(cells, holm([c["p"] for c in cells])):
        cell["p_holm"] = adjusted
    overall = {}
    for other in PAIRED_AGAINST:
        cells = [paired[t][other] for t in tasks if other in paired[t]]
        if cells:
            overall[other] = {
                "tasks": len(cells),
                "wins": sum(c["diff"] > 0 for c in cells),
                "ties": sum(c["diff"] == 0 for c in cells),
                "losses": sum(c["diff"] < 0 for c in cells),
                "significant_wins": sum(c["diff"] > 0 and c["p_holm"] < ALPHA for c in cells),
                "significant_losses": sum(c["diff"] < 0 and c["p_holm"] < ALPHA for c in cells),
                "raw_significant_wins": sum(c["diff"] > 0 and c["p"] < ALPHA for c in cells),
                "raw_significant_losses": sum(c["diff"] < 0 and c["p"] < ALPHA for c in cells),
                "mean_diff": statistics.fmean(c["diff"] for c in cells),
            }
    cost = {}
    for m in q.settings["methods"]:  # the constant-answer reference makes no call
        rows = [r for r in q.runs if r.method == m and r.status == "completed"]
        if rows:
            cost[m] = {
                "runs": len(rows),
                "wall_s": statistics.fmean(r.wall_s for r in rows),
                "calls": statistics.fmean(r.calls for r in rows),
                "paid_calls": statistics.fmean(r.paid_calls for r in rows),
                "dev_evaluations": statistics.fmean(r.n_candidates for r in rows),
            }
    return {
        "reference": REFERENCE,
        "alpha": ALPHA,
        "n_boot": n_boot,
        "accuracy": accuracy,
        "paired": paired,
        "paired_overall": overall,
        "cost": cost,
    }


def statistics_tables(stats: dict[str, Any], methods: list[str]) -> str:
    acc = stats["accuracy"]
    tasks = list(acc)
    out = [
        "Test accuracy over the pooled test examples of all seeds, with a 95% BCa bootstrap interval "
        f"({stats['n_boot']} resamples; `tasks/evaluation/statistics.py`).",
        "",
        "| task | " + " | ".join(methods) + " |",
        "|---|" + "---:|" * len(methods),
    ]
    for task in tasks:
        out.append(
            f"| {task} | "
            + " | ".join(
                f"{acc[task][m]['mean']:.3f} [{acc[task][m]['low']:.3f}, {acc[task][m]['high']:.3f}]"
                if m in acc[task]
                else "n/a"
                for m in methods
            )
            + " |"
        )
    ref = stats["reference"]
    out += [
        "",
        f"Paired differences {ref} − baseline over the test examples both scored (same seed and example), "
        "pooled over seeds: mean difference [95% paired BCa bootstrap interval], two-sided p of a valid paired "
        "test (exact McNemar for 0/1 scores, sign-flip permutation otherwise), that p Holm-adjusted over every "
        "comparison in this table, and per-seed win/tie/loss of the test accuracies.",
        "",
        "| task | vs | diff [95% CI] | p | p (Holm) | test | seeds W/T/L |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for task in tasks:
        for other, c in stats["paired"][task].items():
            out.append(
                f"| {task} | {other} | {c['diff']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}] | "
                f"{c['p']:.3g} | {c['p_holm']:.3g} | {c['test']} | "
                f"{c['seed_wins']}/{c['seed_ties']}/{c['seed_losses']} |"
            )
    if stats["paired_overall"]:
        out += [
            "",
            f"Over tasks ({ref} vs each other method; significant: Holm-adjusted p < {stats['alpha']}; "
            "unadjusted in the next column):",
            "",
            "| vs | tasks | W/T/L | significant W/L (Holm) | unadjusted p < 0.05 W/L | mean diff |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for other, c in stats["paired_overall"].items():
            out.append(
                f"| {other} | {c['tasks']} | {c['wins']}/{c['ties']}/{c['losses']} | "
                f"{c['significant_wins']}/{c['significant_losses']} | "
                f"{c['raw_significant_wins']}/{c['raw_significant_losses']} | {c['mean_diff']:+.3f} |"
            )
    out += [
        "",
        "Wall time and black-box calls per method-run (mean over tasks and seeds; *paid*: not answered by "
        "the store's shared response cache; a run reused from the store reports the wall time it took then).",
        "",
        "| method | runs | dev evaluations | calls | paid calls | wall s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m, c in stats["cost"].items():
        out.append(
            f"| {m} | {c['runs']} | {c['dev_evaluations']:.0f} | {c['calls']:.0f} | {c['paid_calls']:.0f} | "
            f"{c['wall_s']:.1f} |"
        )
    return "\n".join(out + [""])


# Methods whose curves often coincide (the flow variants share their initial design) get their own dash pattern
# and width, so a curve drawn over another stays visible.
LINE_STYLES: dict[str, dict[str, Any]] = {
    "instructzero": {"linewidth": 3.0, "linestyle": "-"},
    "instructzero-explore": {"linewidth": 1.8, "linestyle": (0, (5, 2))},
    "instructzero-matern": {"linewidth": 1.5, "linestyle": (0, (1, 1.5))},
}


def _band(ax: Any, x: Any, ys: Any, label: str) -> None:
    import numpy as np

    ys = np.asarray(ys, dtype=float)
    mean, sd = ys.mean(0), ys.std(0)
    (line,) = ax.plot(x, mean, label=label, **LINE_STYLES.get(label, {"linewidth": 1.5}))
    if len(ys) > 1:
        ax.fill_between(x, mean - sd, mean + sd, color=line.get_color(), alpha=0.15, linewidth=0)


def plot_curves(q: QualityResult, out_dir: Path) -> list[Path]:
    """One PNG per task: best dev score so far vs evaluated instructions and vs dev black-box calls, mean over
    seeds with a +-1 sd band across seeds (calls: each seed's step curve read on a common grid)."""
    import numpy as np

    plt = _plt()

    paths = []
    methods = list(q.settings["methods"])
    for task in dict.fromkeys(r.task for r in q.runs):
        fig, (ax, ax_calls) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
        runs_by = {m: [r for r in _completed(q, task, m) if r.curve] for m in methods}
        max_calls = max((r.curve_calls[-1] for rs in runs_by.values() for r in rs if r.curve_calls), default=1)
        grid = np.linspace(0, max(max_calls, 1), 200)
        for m, runs in runs_by.items():
            if not runs:
                continue
            if m in ("manual", "empty"):  # fixed candidates: their best dev score as a level
                level = statistics.fmean(r.curve[-1] for r in runs)
                for a in (ax, ax_calls):
                    a.axhline(
                        level,
                        linestyle="--",
                        linewidth=1,
                        label=f"{m} (best of {len(runs[0].curve)})",
                        color="grey" if m == "empty" else "black",
                    )
                continue
            length = min(len(r.curve) for r in runs)
            _band(ax, np.arange(1, length + 1), [r.curve[:length] for r in runs], m)
            if all(r.curve_calls for r in runs):
                ys = []
                for r in runs:  # best dev after spending x calls (NaN before the first evaluation)
                    idx = np.searchsorted(np.asarray(r.curve_calls), grid, side="right") - 1
                    ys.append(np.where(idx >= 0, np.asarray(r.curve)[np.clip(idx, 0, None)], np.nan))
                ys_arr = np.asarray(ys)
                keep = ~np.isnan(ys_arr).any(0)
                _band(ax_calls, grid[keep], ys_arr[:, keep], m)
        n_seeds = len(q.settings["seeds"])
        ax.set_xlabel("instructions evaluated on dev")
        ax.set_ylabel("best dev accuracy so far")
        ax.set_title(f"{task}: vs evaluations (mean ± sd, {n_seeds} seed(s))", fontsize=10)
        ax_calls.set_xlabel("dev black-box calls (a repeated instruction costs none)")
        ax_calls.set_title(f"{task}: vs black-box calls", fontsize=10)
        for a in (ax, ax_calls):
            a.set_ylim(-0.02, 1.02)
            a.grid(alpha=0.3)
        ax_calls.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"curve_{_file_slug(task)}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


# -------------------------------------------------------------------------------------------------- speed
SPEED_ROWS: dict[str, tuple[str, str, str]] = {
    # section: (measurement, result, target / note) as str.format templates over the section's values
    "throughput": (
        "black-box throughput, {n_requests} calls, {latency_s:g} s injected latency",
        "1 at a time {serial_s:.2f} s, concurrency {concurrency} {concurrent_s:.2f} s: **{speedup:.2f}x** "
        "(ideal {ideal_speedup:.2f}x, {fraction_of_ideal:.0%} of ideal)",
        "target within 10% of ideal: {within_10pct_of_ideal}",
    ),
    "generation": (
        "instruction generation, {n_prompts} soft prompts, {max_new_tokens} new tokens, {device} ({threads} threads)",
        "one at a time {one_at_a_time_s:.2f} s, batched {batched_s:.2f} s: **{speedup:.2f}x**",
        "identical outputs: {identical_outputs}",
    ),
    "overhead": (
        "orchestration overhead, {candidates} candidates in {iterations} iterations, {n_dev} dev examples, "
        "{max_new_tokens} new tokens, black box latency {latency_s:g} s",
        "plain functions {plain_s:.2f} s, Prefect flow {flow_s:.2f} s: **{overhead_pct_of_flow_wall:.0f}%** of the "
        "flow's wall time ({overhead_s_per_iteration:.2f} s per iteration)",
        "target < 10%; same result: {same_result}; Prefect API already up",
    ),
    "resume": (
        "resume after kill -9 (at request {killed_at_request} of {reference_requests})",
        "{total_requests_with_resume} requests vs {reference_requests} uninterrupted: {repeated_requests} repeated "
        "({repeated_fraction:.1%}); {lost_in_flight} were in flight at the kill (answered to a dead client, never "
        "stored); **{persisted_answers_repeated} stored answers paid twice**",
        "target 0; same best instruction: {same_best_instruction}",
    ),
}


def speed_tables(s: SpeedResult) -> str:
    sec = s.sections
    rows = ["| measurement | result | target / note |", "|---|---|---|"]
    for name, section in sec.items():
        if (row := SPEED_ROWS.get(name.split("@")[0])) is None:
            continue
        what, result, note = (
            (name, f"error: {section['error']}", "")
            if "error" in section
            else (template.format(**section) for template in row)
        )
        rows.append(f"| {what} | {result} | {note} |")
    out = [*rows, ""]
    if gp := sec.get("gp"):
        if "error" in gp:
            out += [f"GP update: error: {gp['error']}", ""]
        else:
            series = gp_series(gp)
            ns = sorted({n for pts in series.values() for n, _ in pts})
            out += [
                "GP update time (s) by number of evaluated points:",
                "",
                "| points | " + " | ".join(series) + " |",
                "|---:|" + "---:|" * len(series),
            ]
            for n in ns:
                out.append(f"| {n} | " + " | ".join(_fmt(dict(pts).get(n), 3) for pts in series.values()) + " |")
            out.append("")
    return "\n".join(out)


def plot_gp(s: SpeedResult, out_dir: Path) -> Path | None:
    gp = s.sections.get("gp")
    if not gp or "error" in gp:
        return None
    series = gp_series(gp)
    if not series:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, pts in series.items():
        pts = sorted(pts)
        ax.plot([n for n, _ in pts], [v for _, v in pts], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("evaluated points")
    ax.set_ylabel("GP update time (s)")
    ax.set_title("GP update time vs history size")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "gp_update_time.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------- writing
def reproduce_section(suite: str, store_url: str) -> list[str]:
    """The `instructzero sql` statements that give this report's numbers back from the store."""
    like = f"bench-{suite}-%"
    store = display_url(store_url)
    queries = [
        (
            "Each run's reported instruction, its dev and test accuracy (the tables above average these)",
            f"SELECT run_name, dev_score, test_score, instruction FROM best_instructions "
            f"WHERE run_name LIKE '{like}' ORDER BY run_name",
        ),
        (
            "The per-example test scores the paired tests use (one row per run and test example)",
            f"SELECT c.run_name, x.example_id, x.score FROM best_instructions c "
            f"JOIN store.evaluations e ON e.run_id = c.run_id AND e.split = 'test' "
            f"JOIN store.instructions i ON i.id = e.instruction_id AND i.text = c.instruction "
            f"JOIN store.example_scores x ON x.evaluation_id = e.id "
            f"WHERE c.run_name LIKE '{like}' ORDER BY c.run_name, x.example_id",
        ),
        (
            "Calls used, cache hits and paid calls per run (the ledger)",
            f"SELECT run_name, calls, cached_calls, paid_calls, tokens_in, tokens_out FROM cost_per_run "
            f"WHERE run_name LIKE '{like}' ORDER BY run_name",
        ),
        (
            "Best dev score after each evaluated instruction (the curves) and each run's wall time",
            f"SELECT r.name, m.key, m.step, m.value FROM store.metrics m JOIN store.runs r ON r.id = m.run_id "
            f"WHERE r.name LIKE '{like}' AND m.key IN ('bench.best_dev_so_far', 'bench.dev_calls_so_far', "
            f"'bench.wall_s') ORDER BY r.name, m.key, m.step",
        ),
    ]
    out = ["### Reproduce from the store", ""]
    for what, sql in queries:
        out += [f"{what}:", "", "```", f'instructzero sql --store "{store}" "{sql}"', "```", ""]
    return out


def write_report(
    out_dir: Path, *, header: dict[str, Any], quality: QualityResult | None, speed: SpeedResult | None
) -> Path:
    """report.md + PNGs + results.json in `out_dir`; returns the report's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = ["# instructzero benchmark", ""]
    md += [f"- **{k}**: {v}" for k, v in header.items()]
    md.append("")
    results: dict[str, Any] = {"header": header}
    if quality is not None:
        s = quality.settings
        md += [
            "## Quality",
            "",
            f"Suite `{quality.suite}`: tasks {', '.join(map(str, s['tasks']))}; seeds "
            f"{', '.join(map(str, s['seeds']))}; budget {s['budget']} dev evaluations per method; "
            f"{s['n_exemplars']} exemplars, {s['n_dev']} dev, {s['n_test']} test examples; generator "
            f"{s['generator'] or 'packaged Gemma-3 270M'} ({s['max_new_tokens']} new tokens); black box "
            f"`{s['black_box_model']}` ({quality.endpoint}); store `{display_url(s['store_url'])}`; "
            f"wall time {quality.wall_s / 60:.1f} min.",
            "",
            quality_tables(quality),
        ]
        stats = quality_statistics(quality)
        md += ["### Statistics", "", statistics_tables(stats, with_constant(s["methods"], quality.runs))]
        for curve in plot_curves(quality, out_dir):
            md += [f"![{curve.stem}]({curve.name})", ""]
        md += reproduce_section(quality.suite, s["store_url"])
        methods = with_constant(s["methods"], quality.runs)
        tasks = list(dict.fromkeys(r.task for r in quality.runs))
        results["quality"] = {
            "settings": s,
            "suite": quality.suite,
            "endpoint": quality.endpoint,
            "wall_s": quality.wall_s,
            "summary": summarize(quality.runs, methods, tasks),
            "statistics": stats,
            "runs": [asdict(r) for r in quality.runs],
        }
    if speed is not None:
        md += ["## Speed and cost", "", f"Wall time {speed.wall_s / 60:.1f} min.", "", speed_tables(speed)]
        if (path := plot_gp(speed, out_dir)) is not None:
            md += [f"![{path.stem}]({path.name})", ""]
        results["speed"] = {"settings": speed.settings, "sections": speed.sections, "wall_s": speed.wall_s}
    report = out_dir / "report.md"
    report.write_text("\n".join(md))
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    return report
