"""What the Prefect UI shows of a run's search, built as plain data (no Prefect here; `flows/search_artifacts.py`
publishes it):

* the best-so-far curve: per iteration the best dev score in it and the best so far (the store's view
  `score_by_iteration`), with the test scores of the report's rows (found, empty, constant, the user's baselines)
  as horizontal reference lines once the test report exists; drawn as an SVG inside a markdown image, followed by
  the same numbers as a markdown table with a unicode bar per iteration (readable even where images are not);
* the candidate table: the best candidates, best first (iteration, index, phase, dev score, instruction);
* the store queries that reproduce both, as `instructzero sql` commands with the store's password masked.
"""

from __future__ import annotations

import base64
import math
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from instructzero.storage.records import Candidate
from instructzero.storage.session import display_url, normalize_url
from instructzero.tasks.optimisation.selection import ranked

__all__ = [
    "CurvePoint",
    "Reference",
    "best_so_far",
    "candidate_rows",
    "curve_markdown",
    "curve_svg",
    "queries_markdown",
    "store_queries",
    "unicode_bar",
]

TOP_N = 10  # candidates in the table artifact


@dataclass(frozen=True)
class CurvePoint:
    """One iteration of the curve: as the view `score_by_iteration` has it."""

    iteration: int
    n_candidates: int
    best_dev: float | None  # the best dev score among the iteration's candidates (None: none scored)
    best_so_far: float | None  # the best dev score up to and including this iteration


@dataclass(frozen=True)
class Reference:
    """A horizontal reference line: a report row's test score."""

    label: str  # "found", "empty", "constant", "baseline-1", ...
    score: float


def best_so_far(candidates: Iterable[Candidate]) -> list[CurvePoint]:
    """The curve's points, one per recorded iteration in order: the same numbers as `score_by_iteration`
    (max over the iteration's dev scores, then the running max; unscored candidates are ignored)."""
    by_iteration: dict[int, list[float | None]] = {}
    for c in candidates:
        by_iteration.setdefault(c.iteration, []).append(c.dev_score)
    points: list[CurvePoint] = []
    running: float | None = None
    for iteration in sorted(by_iteration):
        scores = [float(s) for s in by_iteration[iteration] if s is not None]
        best = max(scores) if scores else None
        if best is not None:
            running = best if running is None else max(running, best)
        points.append(CurvePoint(iteration, len(by_iteration[iteration]), best, running))
    return points


def candidate_rows(
    candidates: Iterable[Candidate],
    top_n: int = TOP_N,
    *,
    length_penalty: float = 0.0,
    tokens: Mapping[tuple[int, int], int] | None = None,
) -> list[dict[str, object]]:
    """The table artifact's rows: the `top_n` best candidates by the run's objective (`selection.ranked`, the one
    rule: dev score less `length_penalty` per instruction token), ties in recording order."""
    return [
        {
            "iteration": c.iteration,
            "index": c.index,
            "phase": c.phase,
            "dev_score": _finite(c.dev_score),
            "instruction": c.instruction,
        }
        for c in ranked(candidates, length_penalty=length_penalty, tokens=tokens)[:top_n]
    ]


def _finite(v: float | None) -> float | None:
    return v if v is None or math.isfinite(v) else None  # JSON has no NaN


def unicode_bar(score: float | None, width: int = 20) -> str:
    """`score` in [0, 1] as a bar of `width` cells (eighths of a cell for the remainder), blank for None."""
    if score is None or not math.isfinite(score):
        return ""
    eighths = round(min(max(score, 0.0), 1.0) * width * 8)
    full, part = divmod(eighths, 8)
    return "█" * full + ("" if part == 0 else " ▏▎▍▌▋▊▉"[part])


# ------------------------------------------------------------------------------------------------ the curve as SVG
_W, _H = 720, 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 170, 34, 40
_CURVE, _DOTS, _GRID, _TEXT = "#2563eb", "#94a3b8", "#e5e7eb", "#374151"
_REFERENCE_COLOURS = ("#16a34a", "#dc2626", "#d97706", "#7c3aed", "#0891b2", "#db2777")


def _fmt(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def curve_svg(
    points: Sequence[CurvePoint], references: Sequence[Reference] = (), *, last_iteration: int | None = None
) -> str:
    """The best-so-far curve (a step line with a marker per iteration), the best score of each iteration (grey
    dots) and the references (dashed, labelled on the right), on a 0..1 axis; x runs to `last_iteration` (the
    run's planned last iteration) so the axis stays put while the run grows. A self-contained SVG document."""
    x_max = max([last_iteration or 0, *(p.iteration for p in points), 1])
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def x(i: float) -> float:
        return _LEFT + plot_w * i / x_max

    def y(v: float) -> float:
        return _TOP + plot_h * (1.0 - min(max(v, 0.0), 1.0))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" '
        f'font-family="Helvetica, Arial, sans-serif" font-size="12">',
        f'<rect x="0" y="0" width="{_W}" height="{_H}" rx="6" fill="#ffffff" stroke="{_GRID}"/>',
        f'<text x="{_LEFT}" y="20" font-size="14" font-weight="bold" fill="{_TEXT}">best dev score so far, by '
        f"iteration</text>",
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):  # y grid
        out.append(f'<line x1="{_LEFT}" y1="{y(tick):.1f}" x2="{_LEFT + plot_w}" y2="{y(tick):.1f}" stroke="{_GRID}"/>')
        out.append(f'<text x="{_LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" fill="{_TEXT}">{tick:.2f}</text>')
    step = max(1, math.ceil(x_max / 10))
    for i in range(0, x_max + 1, step):  # x ticks
        out.append(
            f'<line x1="{x(i):.1f}" y1="{_TOP + plot_h}" x2="{x(i):.1f}" y2="{_TOP + plot_h + 4}" stroke="{_TEXT}"/>'
        )
        out.append(f'<text x="{x(i):.1f}" y="{_TOP + plot_h + 17}" text-anchor="middle" fill="{_TEXT}">{i}</text>')
    out.append(
        f'<text x="{_LEFT + plot_w / 2:.1f}" y="{_H - 6}" text-anchor="middle" fill="{_TEXT}">iteration '
        f"(0 = initial design)</text>"
    )
    out.append(f'<line x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{_LEFT + plot_w}" y2="{_TOP + plot_h}" stroke="{_TEXT}"/>')

    # references: dashed lines, labels on the right spread apart so that equal scores stay readable
    placed: list[float] = []
    labels = []
    for k, ref in enumerate(sorted(references, key=lambda r: -r.score)):
        colour = _REFERENCE_COLOURS[k % len(_REFERENCE_COLOURS)]
        ly = y(ref.score)
        out.append(
            f'<line x1="{_LEFT}" y1="{ly:.1f}" x2="{_LEFT + plot_w}" y2="{ly:.1f}" stroke="{colour}" '
            f'stroke-width="1.5" stroke-dasharray="6 4"/>'
        )
        ty = max(ly + 4, placed[-1] + 14) if placed else ly + 4
        placed.append(ty)
        labels.append(
            f'<text x="{_LEFT + plot_w + 8}" y="{ty:.1f}" fill="{colour}">'
            f"{escape(ref.label[:16])} (test) {ref.score:.3f}</text>"
        )
    out += labels

    for p in points:  # each iteration's best
        if p.best_dev is not None:
            out.append(f'<circle cx="{x(p.iteration):.1f}" cy="{y(p.best_dev):.1f}" r="3.5" fill="{_DOTS}"/>')
    curve = [(p.iteration, p.best_so_far) for p in points if p.best_so_far is not None]
    if curve:
        path = [f"M{x(curve[0][0]):.1f},{y(curve[0][1]):.1f}"]
        for iteration, value in curve[1:]:
            path.append(f"H{x(iteration):.1f}V{y(value):.1f}")
        out.append(f'<path d="{"".join(path)}" fill="none" stroke="{_CURVE}" stroke-width="2.5"/>')
        for iteration, value in curve:
            out.append(f'<circle cx="{x(iteration):.1f}" cy="{y(value):.1f}" r="3" fill="{_CURVE}"/>')
    else:
        out.append(
            f'<text x="{_LEFT + plot_w / 2:.1f}" y="{_TOP + plot_h / 2:.1f}" text-anchor="middle" '
            f'fill="{_DOTS}">no iteration recorded yet</text>'
        )
    lx = 330  # the legend, on the title's line
    best = f" {curve[-1][1]:.3f}" if curve else ""
    out.append(
        f'<line x1="{lx}" y1="16" x2="{lx + 18}" y2="16" stroke="{_CURVE}" stroke-width="2.5"/>'
        f'<text x="{lx + 24}" y="20" fill="{_CURVE}" font-weight="bold">best so far{best}</text>'
        f'<circle cx="{lx + 170}" cy="16" r="3.5" fill="{_DOTS}"/>'
        f'<text x="{lx + 178}" y="20" fill="{_TEXT}">best of the iteration</text>'
    )
    out.append("</svg>")
    return "".join(out)


def curve_markdown(
    points: Sequence[CurvePoint],
    references: Sequence[Reference] = (),
    *,
    last_iteration: int | None = None,
    run_name: str = "",
) -> str:
    """The curve artifact: the SVG as a data-URI image, one line of totals, the points as a table with bars."""
    svg = base64.b64encode(curve_svg(points, references, last_iteration=last_iteration).encode()).decode()
    lines = [f"![best dev score so far by iteration](data:image/svg+xml;base64,{svg})", ""]
    scored = [p for p in points if p.best_so_far is not None]
    if scored:
        of = f" of {last_iteration}" if last_iteration is not None else ""
        summary = f"**best dev score so far: {scored[-1].best_so_far:.3f}** after iteration {scored[-1].iteration}{of}"
    else:
        summary = "**no iteration recorded yet**"
    if references:
        summary += "; on test: " + ", ".join(f"{_md(r.label)} {r.score:.3f}" for r in references)
    lines += [summary + (f" (run {_md(run_name)})" if run_name else ""), ""]
    if points:
        lines += ["| iteration | candidates | best dev | best so far | 0 to 1 |", "|---:|---:|---:|---:|:---|"]
        lines += [
            f"| {p.iteration} | {p.n_candidates} | {_score(p.best_dev)} | {_score(p.best_so_far)} | "
            f"{unicode_bar(p.best_so_far)} |"
            for p in points
        ]
    return "\n".join(lines) + "\n"


def _score(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}"


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")


def _md(text: str) -> str:
    """`text` shown literally in markdown (labels and run names are user input)."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


# ------------------------------------------------------------------------------------------------ the store queries
def _shown_store(store_url: str, cwd: Path | None = None) -> str:
    """The store URL as a user passes it to `--store`: password masked, a relative SQLite path made absolute."""
    url = normalize_url(store_url)
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        path, sep, query = url[len(prefix) :].partition("?")
        url = f"{prefix}{(cwd or Path.cwd()) / path}{sep}{query}"
    return display_url(url)


def _double_quoted(sql: str) -> str:
    return '"' + re.sub(r'([\\"$`])', r"\\\1", sql) + '"'


def store_queries(
    store_url: str, run_id: str, *, top_n: int = TOP_N, cwd: Path | None = None, sep: str = " "
) -> list[tuple[str, str]]:
    """(what it shows, the shell command) for each artifact: `instructzero sql` on the run's store, whose password
    is shown as `***` (see `queries_markdown`); `sep` goes between the store and the query."""
    run = run_id.replace("'", "''")
    store = shlex.quote(_shown_store(store_url, cwd))
    queries = [
        (
            "the best-so-far curve",
            f"SELECT iteration, n_candidates, best_dev, best_so_far FROM score_by_iteration WHERE run_id = '{run}' "
            "ORDER BY iteration",
        ),
        (
            f"the candidate table (top {top_n})",
            f"SELECT iteration, index, phase, dev_score, instruction FROM candidates_flat WHERE run_id = '{run}' "
            f"ORDER BY dev_score DESC NULLS LAST, iteration, index LIMIT {top_n}",
        ),
        (
            "the reference lines (test scores of the report)",
            f"SELECT key, value FROM store.metrics WHERE run_id = '{run}' AND key LIKE 'report.%.accuracy' "
            "ORDER BY key",
        ),
    ]
    return [(what, f"instructzero sql --store {store}{sep}{_double_quoted(sql)}") for what, sql in queries]


def queries_markdown(store_url: str, run_id: str, *, top_n: int = TOP_N, cwd: Path | None = None) -> str:
    """The queries artifact: one fenced shell command per artifact, and how to supply a masked password."""
    lines = [f"The run's search in the store (run `{run_id}`), reproduced with `instructzero sql`:", ""]
    for what, command in store_queries(store_url, run_id, top_n=top_n, cwd=cwd, sep=" \\\n  "):
        lines += [f"{what}:", "", "```bash", command, "```", ""]
    if "***" in _shown_store(store_url, cwd):
        lines += [
            "The store's password is shown as `***`: put it back in `--store`, or set "
            "`INSTRUCTZERO_STORE_URL` to the full URL and leave `--store` out.",
            "",
        ]
    return "\n".join(lines)
