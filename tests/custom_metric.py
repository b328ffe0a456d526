"""User metrics for the `python:module:function` tests (`--metric python:tests.custom_metric:NAME`)."""

from __future__ import annotations


def shared_characters(prediction: str, target: str | list[str]) -> float:
    """Fraction of the target's characters (the best target of a list) that the prediction also has."""
    targets = [target] if isinstance(target, str) else target
    return max(len(set(prediction) & set(t)) / len(set(t)) if t else float(not prediction) for t in targets)


def seen_target(prediction: str, target: str | list[str]) -> float:
    """1.0 when the target arrived as a list (the example has several accepted answers), else 0.0."""
    return float(isinstance(target, list))


def out_of_range(prediction: str, target: str | list[str]) -> float:
    return 1.5


def raises(prediction: str, target: str | list[str]) -> float:
    raise ValueError("cannot score this")


NOT_A_FUNCTION = 3
