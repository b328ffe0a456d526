"""Write a benchmark's report.md, PNG plots (matplotlib, Agg) and results.json into one folder."""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.quality import QualityResult, summarize
from benchmarks.speed import SpeedResult, gp_series


def _plt():  # noqa: ANN202
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
    methods = list(q.settings["methods"])
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
    lines.append("| **mean over tasks** | " + " | ".join(
        f"**{_fmt(summary['overall'][m]['test_mean'])}**" + (
            f" ({summary['overall'][m]['n_tasks']}/{len(tasks)} tasks)"
            if summary["overall"][m]["n_tasks"] not in (0, len(tasks)) else "")
        for m in methods) + " |")
    out = ["Test accuracy, mean ± std over seeds (n/a: see notes).", "", *lines, ""]

    cost = ["| task | method | dev instructions | calls (paid) | tokens (paid) | best dev |",
            "|---|---|---:|---:|---:|---:|"]
    for task in tasks:
        for m in methods:
            rows = [r for r in q.runs if r.task == task and r.method == m and r.status == "completed"]
            if not rows:
                continue
            mean = lambda key: statistics.fmean(getattr(r, key) for r in rows)  # noqa: E731
            cost.append(f"| {task} | {m} | {mean('n_candidates'):.0f} | {mean('calls'):.0f} "
                        f"({mean('paid_calls'):.0f}) | {mean('tokens'):.0f} ({mean('paid_tokens'):.0f}) | "
                        f"{mean('dev_score'):.3f} |")
    out += ["Black-box cost per run (mean over seeds, from the store). *calls/tokens*: everything the method needed "
            "(dev + test); *paid*: not served by the store's shared response cache.", "", *cost, ""]

    notes = sorted({f"- {r.task} / {r.method} (seed {r.seed}): {r.status}: {r.note}"
                    for r in q.runs if r.status != "completed"})
    if notes:
        out += ["Notes:", "", *notes, ""]
    best = ["| run | dev | test | best dev instruction |", "|---|---:|---:|---|"]
    for r in q.runs:
        if r.status == "completed":
            instr = r.best_instruction.replace("|", "\\|") or "(empty)"
            best.append(f"| {r.run_name} | {_fmt(r.dev_score)} | {_fmt(r.test_score)} | {instr[:90]} |")
    out += ["<details><summary>Best instruction per run</summary>", "", *best, "", "</details>", ""]
    return "\n".join(out)


def plot_curves(q: QualityResult, out_dir: Path) -> list[Path]:
    """One PNG per task: best dev score so far vs number of evaluated instructions (mean over seeds)."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    paths = []
    methods = list(q.settings["methods"])
    budget = int(q.settings["budget"])
    for task in dict.fromkeys(r.task for r in q.runs):
        fig, ax = plt.subplots(figsize=(6, 4))
        for m in methods:
            runs = [r for r in q.runs if r.task == task and r.method == m and r.status == "completed" and r.curve]
            if not runs:
                continue
            if m in ("manual", "empty"):  # fixed candidates: their best dev score as a level
                level = statistics.fmean(r.curve[-1] for r in runs)
                ax.axhline(level, linestyle="--", linewidth=1, label=f"{m} (best of {len(runs[0].curve)})",
                           color="grey" if m == "empty" else "black")
                continue
            length = min(len(r.curve) for r in runs)
            ys = [statistics.fmean(r.curve[k] for r in runs) for k in range(length)]
            ax.plot(range(1, length + 1), ys, marker="o", markersize=3, label=m)
        ax.set_xlabel("instructions evaluated on dev")
        ax.set_ylabel("best dev accuracy so far")
        ax.set_title(f"{task}: best dev vs evaluations (mean over {len(q.settings['seeds'])} seed(s))")
        ax.set_xlim(0.5, max(budget, 1) + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
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
        "target within 10% of ideal: {within_10pct_of_ideal}"),
    "generation": (
        "instruction generation, {n_prompts} soft prompts, {max_new_tokens} new tokens, {device} ({threads} threads)",
        "one at a time {one_at_a_time_s:.2f} s, batched {batched_s:.2f} s: **{speedup:.2f}x**",
        "identical outputs: {identical_outputs}"),
    "overhead": (
        "orchestration overhead, {candidates} candidates in {iterations} iterations, {n_dev} dev examples, "
        "{max_new_tokens} new tokens, black box latency {latency_s:g} s",
        "plain functions {plain_s:.2f} s, Prefect flow {flow_s:.2f} s: **{overhead_pct_of_flow_wall:.0f}%** of the "
        "flow's wall time ({overhead_s_per_iteration:.2f} s per iteration)",
        "target < 10%; same result: {same_result}; Prefect API already up"),
    "resume": (
        "resume after kill -9 (at request {killed_at_request} of {reference_requests})",
        "{total_requests_with_resume} requests vs {reference_requests} uninterrupted: {repeated_requests} repeated "
        "({repeated_fraction:.1%}); {lost_in_flight} were in flight at the kill (answered to a dead client, never "
        "stored); **{persisted_answers_repeated} stored answers paid twice**",
        "target 0; same best instruction: {same_best_instruction}"),
}


def speed_tables(s: SpeedResult) -> str:
    sec = s.sections
    rows = ["| measurement | result | target / note |", "|---|---|---|"]
    for name, section in sec.items():
        if (row := SPEED_ROWS.get(name.split("@")[0])) is None:
            continue
        what, result, note = ((name, f"error: {section['error']}", "") if "error" in section
                              else (template.format(**section) for template in row))
        rows.append(f"| {what} | {result} | {note} |")
    out = [*rows, ""]
    if gp := sec.get("gp"):
        if "error" in gp:
            out += [f"GP update: error: {gp['error']}", ""]
        else:
            series = gp_series(gp)
            ns = sorted({n for pts in series.values() for n, _ in pts})
            out += ["GP update time (s) by number of evaluated points:", "",
                    "| points | " + " | ".join(series) + " |", "|---:|" + "---:|" * len(series)]
            for n in ns:
                out.append(f"| {n} | " + " | ".join(
                    _fmt(dict(pts).get(n), 3) for pts in series.values()) + " |")
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
def write_report(out_dir: Path, *, header: dict[str, Any], quality: QualityResult | None,
                 speed: SpeedResult | None) -> Path:
    """report.md + PNGs + results.json in `out_dir`; returns the report's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = ["# instructzero benchmark", ""]
    md += [f"- **{k}**: {v}" for k, v in header.items()]
    md.append("")
    results: dict[str, Any] = {"header": header}
    if quality is not None:
        s = quality.settings
        md += ["## Quality", "",
               f"Suite `{quality.suite}`: tasks {', '.join(map(str, s['tasks']))}; seeds "
               f"{', '.join(map(str, s['seeds']))}; budget {s['budget']} dev evaluations per method; "
               f"{s['n_exemplars']} exemplars, {s['n_dev']} dev, {s['n_test']} test examples; generator "
               f"{s['generator'] or 'packaged Gemma-3 270M'} ({s['max_new_tokens']} new tokens); black box "
               f"`{s['black_box_model']}` ({quality.endpoint}); store `{s['store_url']}`; "
               f"wall time {quality.wall_s / 60:.1f} min.", "",
               quality_tables(quality)]
        for path in plot_curves(quality, out_dir):
            md += [f"![{path.stem}]({path.name})", ""]
        methods = list(s["methods"])
        tasks = list(dict.fromkeys(r.task for r in quality.runs))
        results["quality"] = {
            "settings": s, "suite": quality.suite, "endpoint": quality.endpoint, "wall_s": quality.wall_s,
            "summary": summarize(quality.runs, methods, tasks), "runs": [asdict(r) for r in quality.runs],
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
