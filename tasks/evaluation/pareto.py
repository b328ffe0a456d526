"""Instructions cost tokens on every future call: their length, the length-penalised objective, and the Pareto
front of dev accuracy against length (shorter and at least as accurate dominates)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

C = TypeVar("C")


def instruction_tokens(tokenizer: Any, text: str) -> int:
    """The instruction's length in tokens of `tokenizer` (no special tokens)."""
    return len(tokenizer(text.strip(), add_special_tokens=False)["input_ids"]) if text.strip() else 0


def penalised(history: Sequence[C], lengths: Mapping[str, int], penalty: float) -> list[C]:
    """Candidates whose dev_score is the BO objective: dev accuracy - penalty x instruction tokens."""
    if penalty == 0:
        return list(history)
    return [c if c.dev_score is None else replace(c, dev_score=c.dev_score - penalty * lengths.get(c.instruction, 0))
            for c in history]


def pareto_front(points: Sequence[tuple[str, float, int]]) -> list[tuple[str, float, int]]:
    """(instruction, dev accuracy, tokens) not dominated by another (>= accuracy and <= tokens, one strictly),
    shortest first; duplicates of an instruction count once."""
    unique = list({p[0]: p for p in points}.values())
    front = [p for p in unique
             if not any(q[1] >= p[1] and q[2] <= p[2] and (q[1] > p[1] or q[2] < p[2]) for q in unique)]
    return sorted(front, key=lambda p: (p[2], -p[1]))


def plot_front(points: Sequence[tuple[str, float, int]], front: Sequence[tuple[str, float, int]], path: str) -> None:
    """A PNG of every candidate (instruction tokens vs dev accuracy) with the Pareto front drawn as a step line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.scatter([t for _, _, t in points], [s for _, s, _ in points], s=18, alpha=0.5, label="candidates")
    ordered = sorted(front, key=lambda p: p[2])
    ax.step([t for _, _, t in ordered], [s for _, s, _ in ordered], where="post", color="C3", label="Pareto front")
    ax.scatter([t for _, _, t in ordered], [s for _, s, _ in ordered], color="C3", s=30)
    ax.set_xlabel("instruction length (tokens)")
    ax.set_ylabel("dev accuracy")
    ax.set_title("Dev accuracy vs instruction length")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
