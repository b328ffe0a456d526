"""Instructions cost tokens on every future call: the Pareto front of dev accuracy against length (shorter and at
least as accurate dominates) and its plot. The length-penalised objective the search maximises is objective.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def pareto_front(points: Sequence[tuple[str, float, int]]) -> list[tuple[str, float, int]]:
    """(instruction, dev accuracy, tokens) not dominated by another (>= accuracy and <= tokens, one strictly),
    shortest first; duplicates of an instruction count once."""
    unique = list({p[0]: p for p in points}.values())
    front = [
        p for p in unique if not any(q[1] >= p[1] and q[2] <= p[2] and (q[1] > p[1] or q[2] < p[2]) for q in unique)
    ]
    return sorted(front, key=lambda p: (p[2], -p[1]))


def plot_front(
    points: Sequence[tuple[str, float, int]], front: Sequence[tuple[str, float, int]], path: str, *, title: str = ""
) -> None:
    """A PNG of every candidate (instruction tokens vs dev accuracy) with the Pareto front drawn as a step line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = front_figure(points, front, title=title)
    fig.savefig(path)
    plt.close(fig)


def front_figure(
    points: Sequence[tuple[str, float, int]], front: Sequence[tuple[str, float, int]], *, title: str = ""
) -> Any:  # a matplotlib Figure
    """The plot of `plot_front`. Accuracy keeps its full 0..1 scale (an all-zero run shows as zero, not as a band
    of -0.04..0.04), the front's instructions are labelled, and the title names the run."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.scatter(
        [t for _, _, t in points], [s for _, s, _ in points], s=18, alpha=0.5, label=f"candidates ({len(points)})"
    )
    ordered = sorted(front, key=lambda p: p[2])
    ax.step(
        [t for _, _, t in ordered],
        [s for _, s, _ in ordered],
        where="post",
        color="C3",
        label=f"Pareto front ({len(ordered)})",
    )
    ax.scatter([t for _, _, t in ordered], [s for _, s, _ in ordered], color="C3", s=30)
    for text, score, tokens in ordered[:8]:
        short = (text[:37] + "...") if len(text) > 40 else (text or "(empty)")
        ax.annotate(short, (tokens, score), textcoords="offset points", xytext=(4, 4), fontsize=7, color="C3")
    low = min([s for _, s, _ in points] + [0.0])
    high = max([s for _, s, _ in points] + [1.0])
    ax.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
    ax.set_xlim(left=-1, right=max([t for _, _, t in points] + [1]) * 1.15 + 1)
    ax.set_xlabel("instruction length (tokens)")
    ax.set_ylabel("dev accuracy")
    ax.set_title(
        f"{title}: dev accuracy vs instruction length" if title else "Dev accuracy vs instruction length", fontsize=10
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig
