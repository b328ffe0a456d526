"""The found instruction against baselines on the same test examples: accuracy with intervals, paired tests.

A user judges an optimiser by how much better its instruction scores than theirs, so every run ends with this
table. Every row is scored on the *same* test examples, so differences are paired: a paired BCa bootstrap gives
the gain's interval and a valid paired test its two-sided p-value (exact McNemar for 0/1 scores, the sign-flip
permutation test otherwise; `tasks/evaluation/statistics.py`). With several baselines the report makes several
comparisons, so Holm-adjusted p-values stand next to the raw ones and the verdict reads the adjusted one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from instructzero.tasks.errors import ConfigError
from instructzero.tasks.evaluation.statistics import bootstrap_ci, holm, paired_test

FOUND = "found"
EMPTY = "empty"
CONSTANT = "constant"  # the best single fixed answer on the test examples (tasks/evaluation/constant_answer.py)


@dataclass(frozen=True)
class ScoredInstruction:
    """One instruction's per-example test scores, in the order of the test split's example ids."""

    label: str  # "found", "empty", "baseline-1", ...
    instruction: str
    scores: tuple[float, ...]


@dataclass(frozen=True)
class ComparisonRow:
    """One line of the report: an instruction's accuracy and, for baselines, the found one's gain over it."""

    label: str
    instruction: str
    n: int
    accuracy: float
    ci_low: float
    ci_high: float
    gain: float | None  # found - this, on the same examples (None on the found row)
    gain_low: float | None
    gain_high: float | None
    p_value: float | None  # two-sided paired test of the gain (None on the found row)
    p_holm: float | None  # p_value Holm-adjusted over the report's baselines
    test: str | None  # which paired test gave p_value ("exact McNemar", "sign-flip (exact)", ...)


def baseline_labels(baselines: Sequence[str], *, empty: bool) -> dict[str, str]:
    """label -> instruction of the run's baselines, in report order: the empty instruction, then the user's."""
    labels = {EMPTY: ""} if empty else {}
    for k, text in enumerate(baselines, start=1):
        labels[f"baseline-{k}"] = text
    return labels


def compare(
    found: ScoredInstruction,
    baselines: Sequence[ScoredInstruction],
    *,
    n_bootstrap: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[ComparisonRow]:
    """The report's rows: the found instruction first, then each baseline with the paired gain over it.

    Raises:
        ConfigError: a baseline was scored on a different number of examples (the pairs would not line up).
    """
    rows = [_row(found, None, n_bootstrap, confidence, seed)]
    for other in baselines:
        if len(other.scores) != len(found.scores):
            raise ConfigError(
                f"baseline {other.label!r} has {len(other.scores)} test scores, the found instruction "
                f"{len(found.scores)}: they must be scored on the same examples"
            )
        rows.append(_row(other, found, n_bootstrap, confidence, seed))
    adjusted = holm([1.0 if r.p_value is None else r.p_value for r in rows[1:]])  # every baseline row has one
    return [rows[0], *(replace(r, p_holm=p) for r, p in zip(rows[1:], adjusted))]


def _row(
    this: ScoredInstruction, found: ScoredInstruction | None, n_bootstrap: int, confidence: float, seed: int
) -> ComparisonRow:
    x = np.asarray(this.scores, dtype=np.float64)
    low, high = bootstrap_ci(x, n_boot=n_bootstrap, level=confidence, seed=seed)
    paired = None if found is None else paired_test(found.scores, x, n_boot=n_bootstrap, level=confidence, seed=seed)
    return ComparisonRow(
        label=this.label,
        instruction=this.instruction,
        n=int(x.size),
        accuracy=float(x.mean()),
        ci_low=low,
        ci_high=high,
        gain=None if paired is None else paired.diff,
        gain_low=None if paired is None else paired.low,
        gain_high=None if paired is None else paired.high,
        p_value=None if paired is None else paired.p_value,
        p_holm=None,
        test=None if paired is None else paired.test,
    )


def scores_in_order(example_scores: Mapping[str, float], example_ids: Sequence[str]) -> tuple[float, ...]:
    """Per-example scores in the test split's order (so pairs line up across instructions)."""
    missing = [i for i in example_ids if i not in example_scores]
    if missing:
        raise ConfigError(f"no score for test example(s) {missing[:3]} of {len(example_ids)}")
    return tuple(float(example_scores[i]) for i in example_ids)


def format_p(p: float) -> str:
    """A p-value for people: 4 decimals, or 2 significant digits below 0.0001 (never a bare 0.0000)."""
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def format_comparison(rows: Sequence[ComparisonRow], *, confidence: float = 0.95, width: int = 60) -> str:
    """A plain-text table for the terminal (the Prefect artifact shows the same rows)."""
    pct = f"{round(confidence * 100):d}%"
    header = (
        f"{'':<11} {'test acc':>8}  {pct + ' CI':<13} {'found - this row [CI]':<24} {'p':>8} {'p (Holm)':>8}  "
        "instruction"
    )
    lines = [header]
    for r in rows:
        ci = f"[{r.ci_low:.3f}, {r.ci_high:.3f}]"
        if r.gain is None:
            gain, p_b, p_m = "", "", ""
        else:
            gain = f"{r.gain:+.3f} [{r.gain_low:+.3f}, {r.gain_high:+.3f}]"
            p_b = "" if r.p_value is None else format_p(r.p_value)
            p_m = "" if r.p_holm is None else format_p(r.p_holm)
        text = r.instruction if len(r.instruction) <= width else r.instruction[: width - 3] + "..."
        lines.append(f"{r.label:<11} {r.accuracy:>8.3f}  {ci:<13} {gain:<24} {p_b:>8} {p_m:>8}  {text!r}")
    return "\n".join(lines)


def comparison_metrics(rows: Sequence[ComparisonRow]) -> dict[str, float]:
    """The rows as `metrics` keys (stored with the run): report.<label>.{accuracy,ci_low,ci_high,gain,...}."""
    out: dict[str, float] = {}
    for r in rows:
        for field in ("accuracy", "ci_low", "ci_high", "gain", "gain_low", "gain_high", "p_value", "p_holm"):
            value = getattr(r, field)
            if value is not None:
                out[f"report.{r.label}.{field}"] = float(value)
        out[f"report.{r.label}.n"] = float(r.n)
    return out


def comparison_table(rows: Sequence[ComparisonRow]) -> list[dict[str, object]]:
    """The rows as dicts (Prefect table artifact, JSON)."""
    return [
        {
            "label": r.label,
            "instruction": r.instruction,
            "n": r.n,
            "test_accuracy": round(r.accuracy, 4),
            "ci": f"[{r.ci_low:.3f}, {r.ci_high:.3f}]",
            "gain_vs_found": None if r.gain is None else f"{r.gain:+.3f} [{r.gain_low:+.3f}, {r.gain_high:+.3f}]",
            "p_value": None if r.p_value is None else round(r.p_value, 5),
            "p_holm": None if r.p_holm is None else round(r.p_holm, 5),
            "test": r.test,
        }
        for r in rows
    ]
