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
