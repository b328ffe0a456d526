"""What the search maximises: dev accuracy, less `length_penalty` per instruction token (instructions cost tokens on
every future call). The flow scores its history with it for the proposer and picks its reported candidate by it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from instructzero.storage.records import Candidate

__all__ = ["instruction_tokens", "penalised"]


def instruction_tokens(tokenizer: Any, text: str) -> int:
    """The instruction's length in tokens of `tokenizer` (no special tokens)."""
    return len(tokenizer(text.strip(), add_special_tokens=False)["input_ids"]) if text.strip() else 0


def penalised(history: Sequence[Candidate], lengths: Mapping[str, int], penalty: float) -> list[Candidate]:
    """Candidates whose dev_score is the BO objective: dev accuracy - penalty x instruction tokens."""
    if penalty == 0:
        return list(history)
    return [
        c if c.dev_score is None else replace(c, dev_score=c.dev_score - penalty * lengths.get(c.instruction, 0))
        for c in history
    ]
