"""The constant-answer rate: the best score one fixed answer gets on a set of examples, with no model at all.

It is the reference line every gain is read against. On a balanced yes/no task it is about 0.5; on a skewed one
it is the majority label's share. A found instruction that scores no more than this has taught the black box the
answer format (answer with a label, not a sentence), not the task, and the report says so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from instructzero.storage.records import Example
from instructzero.tasks.evaluation.metrics import MetricName, Scorer, score_prediction

MAX_CANDIDATES = 500
"""The most frequent accepted answers tried as the constant (a task whose every answer differs, e.g. translation,
has a rate near 0 whichever are tried)."""


@dataclass(frozen=True)
class ConstantAnswer:
    """The best fixed answer on some examples and its per-example scores (in the examples' order)."""

    answer: str
    scores: tuple[float, ...]

    @property
    def rate(self) -> float:
        return sum(self.scores) / len(self.scores)

    @property
    def label(self) -> str:
        """How the report names it: what a model that always gives this answer would score."""
        return f"<always {self.answer!r}>"


def best_constant_answer(
    examples: Sequence[Example], metric: MetricName | Scorer, *, max_candidates: int = MAX_CANDIDATES
) -> ConstantAnswer:
    """The accepted answer of `examples` that, given as the answer to every one of them, scores best under
    `metric` (ties: the more frequent canonical answer, then the first seen). Chosen on the very examples it is
    scored on, so it is the ceiling of any constant predictor there, not an estimate of one."""
    if not examples:
        raise ValueError("best_constant_answer needs at least one example")
    frequency = Counter(a for ex in examples for a in ex.answers[:1])
    others = [a for ex in examples for a in ex.answers[1:] if a not in frequency]
    candidates = [a for a, _ in frequency.most_common()] + list(dict.fromkeys(others))
    best: ConstantAnswer | None = None
    for answer in candidates[:max_candidates]:
        scores = tuple(score_prediction(answer, ex.answers, metric) for ex in examples)
        if best is None or sum(scores) > sum(best.scores):
            best = ConstantAnswer(answer, scores)
    assert best is not None  # examples is non-empty and every example has an answer
    return best
