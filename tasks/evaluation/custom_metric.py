"""A user's own metric, named `python:module:function`, for tasks none of the built-in metrics scores right.

The function is `(prediction: str, target: str | list[str]) -> float` in [0, 1]: `target` is the example's one
accepted answer, or the list of them when it has several, both after the run's normalisation (as the prediction).
It is imported (from the installed packages or the working directory) when the config is validated, so a bad name
fails before anything runs.
"""

from __future__ import annotations

import importlib
import math
import numbers
import os
import sys
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from instructzero.tasks.errors import ConfigError

PYTHON_PREFIX = "python:"

MetricFunction = Callable[[str, "str | list[str]"], float]


def is_python_metric(spec: str) -> bool:
    return spec.startswith(PYTHON_PREFIX)


@lru_cache(maxsize=32)
def load_metric_function(spec: str) -> MetricFunction:
    """Import `module:function` of a `python:module:function` spec (ConfigError naming it when that fails)."""
    target = spec.removeprefix(PYTHON_PREFIX)
    module_name, sep, attr = target.partition(":")
    if not is_python_metric(spec) or not sep or not module_name or not attr or ":" in attr:
        raise ConfigError(f"custom metric {spec!r} must read python:module:function, e.g. python:my_metrics:score")
    try:
        module = _import_from_cwd(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's to fix, in one line
        raise ConfigError(
            f"custom metric {spec!r}: cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"custom metric {spec!r}: module {module_name!r} has no function {attr!r}")
    return fn


def _import_from_cwd(module_name: str) -> Any:
    """Import a module installed or lying in the working directory (the `instructzero` script's own path does
    not hold the directory it was started in)."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    finally:
        if added:
            sys.path.remove(cwd)


def call_metric(spec: str, prediction: str, target: str | list[str]) -> float:
    """The user's score for one prediction, checked to be a real number in [0, 1] (a bool counts as 0 or 1)."""
    fn = load_metric_function(spec)
    try:
        value: Any = fn(prediction, target)
    except Exception as exc:  # noqa: BLE001 - a failing user metric is reported with its input, in one line
        raise ConfigError(
            f"custom metric {spec!r} raised {type(exc).__name__}: {exc} (prediction {prediction!r}, target {target!r})"
        ) from None
    if not isinstance(value, numbers.Real) or not math.isfinite(float(value)) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(
            f"custom metric {spec!r} returned {value!r} for prediction {prediction!r} and target "
            f"{target!r}; it must return a number in [0, 1]"
        )
    return float(value)
