"""How many tokens the black box may answer with: enough that no accepted answer can be cut.

A fixed cap was wrong by construction: with 16 tokens, 63% of word_sorting's test answers (Gemma tokenizer, mean
19, max 36 tokens) and 8% of negation's could never be produced in full, so a perfect instruction scored zero.
The cap is derived from the task instead, without knowing the black box's tokenizer: every byte-level BPE and
every SentencePiece model with byte fallback (GPT, Llama, Gemma, SmolLM2, Qwen, ...) spends at least one byte of
text per token, so an answer of B UTF-8 bytes needs at most B tokens, plus a margin for a leading space or a
closing newline/stop. Answers are short, and the model stops at the stop sequence or end of turn anyway, so a
generous cap costs nothing on a correct answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

ANSWER_MARGIN_TOKENS = 8
"""Tokens allowed beyond the longest accepted answer (leading space, punctuation, the stop sequence)."""

MAX_ANSWER_TOKENS = 4096
DEFAULT_ANSWER_TOKENS = 32
"""Used only when no answers are known (a connectivity check)."""


def answer_token_cap(answers: Iterable[Sequence[str]], *, margin: int = ANSWER_MARGIN_TOKENS) -> int:
    """An upper bound on the tokens any accepted answer needs, for any byte-level tokenizer.

    Args:
        answers: per example, its accepted answers (`Example.answers`).
        margin: tokens added beyond the longest answer's byte count.

    Returns:
        min(MAX_ANSWER_TOKENS, longest answer in UTF-8 bytes + margin); `DEFAULT_ANSWER_TOKENS` with no answers.
    """
    longest = max((len(a.encode("utf-8")) for accepted in answers for a in accepted), default=None)
    if longest is None:
        return DEFAULT_ANSWER_TOKENS
    return min(MAX_ANSWER_TOKENS, longest + margin)
