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
import string
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Literal, get_args

from tasks.errors import ConfigError, TaskDataError

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

_PUNCTUATION = str.maketrans("", "", string.punctuation)
# A '.' that ends a sentence, i.e. not one between two digits as in "3.5".
_DECIMAL_DOT = re.compile(r"(?<=\d)\.(?=\d)")
_DOT_STANDIN = "\x00"  # hides a decimal point from the sentence split and punctuation removal


def normalize_prediction(text: str, lowercase: bool = True, *, keep_decimals: bool = True) -> str:
    """Reduce an LLM answer to its comparable core, as instruction-induction does.

    Steps: ' and ' -> ' ', drop 'Sentence 1:'/'Sentence 2:', strip, keep the first line, keep the text before the
    first '.', lowercase, '-' -> ' ', remove ASCII punctuation. The original also cut at a '.' inside a number;
    with `keep_decimals` (the default) a '.' between two digits survives, so "3.5" stays "3.5" (not "3").
    """
    text = text.replace(" and ", " ")
    text = text.replace("Sentence 1:", " ").replace("Sentence 2:", " ")
    text = text.strip()
    text = text.split("\n")[0]
    if keep_decimals:
        text = _DECIMAL_DOT.sub(_DOT_STANDIN, text)
    text = text.split(".")[0]
    if lowercase:
        text = text.lower()
    text = text.replace("-", " ")
    return text.translate(_PUNCTUATION).replace(_DOT_STANDIN, ".")


def exact_match(prediction: str, answer: str) -> float:
    """1.0 when the normalised prediction equals the normalised answer."""
    return float(normalize_prediction(prediction) == normalize_prediction(answer))


def contains(prediction: str, answer: str) -> float:
    """1.0 when the normalised answer appears as whole words inside the normalised prediction."""
    pred, ans = normalize_prediction(prediction), normalize_prediction(answer)
    if not ans.strip():
        return float(not pred.strip())
    return float(re.search(rf"\b{re.escape(ans)}\b", pred) is not None)


def f1(prediction: str, answer: str) -> float:
    """Token-level F1 between the normalised prediction and answer (SQuAD style)."""
    pred_tokens = normalize_prediction(prediction).split()
    ans_tokens = normalize_prediction(answer).split()
    n_same = sum((Counter(pred_tokens) & Counter(ans_tokens)).values())
    if n_same == 0:
        return 0.0
    precision = n_same / len(pred_tokens)
    recall = n_same / len(ans_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_set(prediction: str, answer: str) -> float:
    """1.0 when both name the same set of items, in any order (commas vanish with the punctuation)."""
    return float(set(normalize_prediction(prediction).split()) == set(normalize_prediction(answer).split()))


_METRICS: dict[str, Callable[[str, str], float]] = {
    "exact_match": exact_match,
    "contains": contains,
    "f1": f1,
    "exact_set": exact_set,
}


def score_prediction(prediction: str, answers: Sequence[str], metric: MetricName) -> float:
    """Score one prediction: the best value of `metric` over all accepted answers, in [0, 1]."""
    fn = _METRICS.get(metric)
    if fn is None:
        raise ConfigError(f"unknown metric {metric!r}; choose one of {', '.join(METRIC_NAMES)}")
    if isinstance(answers, str):
        raise TaskDataError(f"answers must be a sequence of strings, got the single string {answers!r}")
    if len(answers) == 0:
        raise TaskDataError(f"no accepted answers to score the prediction {prediction!r} against")
    return max(fn(prediction, answer) for answer in answers)


def metric_for_task(task_name: str) -> MetricName:
    """InstructZero's metric for a task name (a prefix such as 'ii:' is ignored); exact_match by default."""
    bare = task_name.rsplit(":", 1)[-1]
    return _TASK_TO_METRIC.get(bare, "exact_match")
