"""Scoring a black-box prediction against a task's accepted answers.

The normalisation and the four metrics follow the instruction-induction evaluation code (Honovich et al. 2022) as
used by InstructZero (`evaluation/instruction_induction/utility.py`), so scores are comparable with the paper.
Each metric is the max over the accepted answers and lies in [0, 1].

Deliberate differences from the original, all on by default:
- `normalize_prediction` keeps a '.' that sits between two digits: the original cut every text at its first '.',
  which turns "3.5" into "3" and scores a wrong decimal as a correct integer. Pass `keep_decimals=False` for
  the original behaviour.
- `contains` escapes the answer before building its regex (the original broke on answers holding regex syntax).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, get_args

from instructzero.tasks.errors import ConfigError, TaskDataError
from instructzero.tasks.evaluation.custom_metric import call_metric, is_python_metric, load_metric_function
from instructzero.tasks.evaluation.normalization import AUTO, Normalization, normalize

MetricName = Literal["exact_match", "contains", "f1", "exact_set"]
METRIC_NAMES: tuple[str, ...] = get_args(MetricName)

# InstructZero's TASK_TO_METRIC; every other task is scored by exact match (over all accepted answers, so tasks
# with several answers, such as rhymes, translation_* and word_in_context, accept any of them).
_TASK_TO_METRIC: dict[str, MetricName] = {
    "common_concept": "f1",
    "informal_to_formal": "f1",
    "orthography_starts_with": "exact_set",
    "taxonomy_animal": "exact_set",
    "synonyms": "contains",
}


def normalize_prediction(text: str, lowercase: bool = True, *, keep_decimals: bool = True) -> str:
    """Reduce an LLM answer to its comparable core, as instruction-induction does.

    Steps: ' and ' -> ' ', drop 'Sentence 1:'/'Sentence 2:', strip, keep the first line, keep the text before the
    first '.', lowercase, '-' -> ' ', remove ASCII punctuation. The original also cut at a '.' inside a number;
    with `keep_decimals` (the default) a '.' between two digits survives, so "3.5" stays "3.5" (not "3").
    Each step can be switched off per run: `instructzero.tasks.evaluation.normalization`.
    """
    return normalize(text, replace(AUTO, lowercase=lowercase), keep_decimals=keep_decimals)


def exact_match(prediction: str, answer: str, norm: Normalization = AUTO) -> float:
    """1.0 when the normalised prediction equals the normalised answer."""
    return float(normalize(prediction, norm) == normalize(answer, norm))


def contains(prediction: str, answer: str, norm: Normalization = AUTO) -> float:
    """1.0 when the normalised answer appears as whole words inside the normalised prediction."""
    pred, ans = normalize(prediction, norm), normalize(answer, norm)
    if not ans.strip():
        return float(not pred.strip())
    return float(re.search(rf"\b{re.escape(ans)}\b", pred) is not None)


def f1(prediction: str, answer: str, norm: Normalization = AUTO) -> float:
    """Token-level F1 between the normalised prediction and answer (SQuAD style)."""
    pred_tokens = normalize(prediction, norm).split()
    ans_tokens = normalize(answer, norm).split()
    n_same = sum((Counter(pred_tokens) & Counter(ans_tokens)).values())
    if n_same == 0:
        return 0.0
    precision = n_same / len(pred_tokens)
    recall = n_same / len(ans_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_set(prediction: str, answer: str, norm: Normalization = AUTO) -> float:
    """1.0 when both name the same set of items, in any order (commas vanish with the punctuation)."""
    return float(set(normalize(prediction, norm).split()) == set(normalize(answer, norm).split()))


_METRICS: dict[str, Callable[[str, str, Normalization], float]] = {
    "exact_match": exact_match,
    "contains": contains,
    "f1": f1,
    "exact_set": exact_set,
}


@dataclass(frozen=True)
class Scorer:
    """One run's way of scoring an answer: a metric and the normalisation both sides go through first.

    Built once from the run's config (`RunConfig.scoring`) so dev, test, the baselines and the constant-answer line
    are all scored alike. `metric` is a `MetricName` or `python:module:function`
    (`instructzero.tasks.evaluation.custom_metric`).
    """

    metric: str
    normalization: Normalization = AUTO

    def __post_init__(self) -> None:
        if is_python_metric(self.metric):
            load_metric_function(self.metric)  # fails now, naming the spec, not at the first answer
        elif self.metric not in _METRICS:
            raise ConfigError(
                f"unknown metric {self.metric!r}; choose one of {', '.join(METRIC_NAMES)} or python:module:function"
            )

    def __call__(self, prediction: str, answers: Sequence[str]) -> float:
        """The score of `prediction`, in [0, 1]: a built-in metric's best over `answers`, or the user's function
        called once with the normalised answer (a list when there are several)."""
        norm = self.normalization
        if is_python_metric(self.metric):
            targets = [normalize(a, norm) for a in answers]
            return call_metric(self.metric, normalize(prediction, norm), targets[0] if len(targets) == 1 else targets)
        fn = _METRICS[self.metric]
        return max(fn(prediction, answer, norm) for answer in answers)


def score_prediction(prediction: str, answers: Sequence[str], metric: MetricName | Scorer) -> float:
    """Score one prediction, in [0, 1]: `metric`'s best value over all accepted answers (a bare metric name is
    scored with the default normalisation)."""
    if not isinstance(metric, Scorer):
        if metric not in _METRICS:
            raise ConfigError(f"unknown metric {metric!r}; choose one of {', '.join(METRIC_NAMES)}")
        metric = Scorer(metric)
    if isinstance(answers, str):
        raise TaskDataError(f"answers must be a sequence of strings, got the single string {answers!r}")
    if len(answers) == 0:
        raise TaskDataError(f"no accepted answers to score the prediction {prediction!r} against")
    return metric(prediction, answers)


def metric_for_task(task_name: str) -> MetricName:
    """InstructZero's metric for a task name (a prefix such as 'ii:' is ignored); exact_match by default."""
    bare = task_name.rsplit(":", 1)[-1]
    return _TASK_TO_METRIC.get(bare, "exact_match")
