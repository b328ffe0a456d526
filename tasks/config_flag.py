"""The config table's vocabulary: a field's command-line flag, declared on the field, and the frozen model config.

Below `flows/` so that a component's settings can live beside the component (`tasks/generation/settings.py`) and
still be one row of the table `instructzero.flows.params` assembles and `instructzero.flows.cli` turns into flags.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ConfigDict, ValidationError

from instructzero.storage.redaction import redact_secrets
from instructzero.tasks.errors import ConfigError

__all__ = ["FROZEN", "Flag", "one_line_error"]

# allow_inf_nan=False: `--max-cost inf` passes `ge=0` and would silently mean "no limit", and nan passes a field
# without bounds; every float setting, from flags or INSTRUCTZERO_* variables, must be a finite number.
FROZEN = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


@dataclass(frozen=True)
class Flag:
    """The command-line flag of a config field, declared on the field so that the field is the one place of a knob:
    `n_soft_tokens: Annotated[int, Flag("--soft-tokens", int)] = Field(5, ge=1, description="...")`.

    `instructzero.flows.cli` turns it into the argparse option: help from the field's description, default and
    INSTRUCTZERO_* variable; choices from a `Literal`; a `bool` is a switch (a `--no-...` name turns it off, any
    other turns it on); a `tuple` field is repeatable (`action="append"`)."""

    name: str
    """The flag, e.g. `--soft-tokens`; the argparse attribute is its name without `--` (and `no-`), `soft_tokens`."""
    parse: Callable[[str], Any] | None = None
    """argparse `type=` (a bad value is argparse's usage error); None: the text, which the model validates."""
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.name.removeprefix("--").removeprefix("no-").replace("-", "_")

    @property
    def negates(self) -> bool:
        """A switch that stores False (`--no-empty-baseline`)."""
        return self.name.startswith("--no-")


_SHORT_REPR = reprlib.Repr()
"""How a refused input is shown: a value nested 500 deep or 1 MB long is cut, never printed whole."""
_SHORT_REPR.maxlevel, _SHORT_REPR.maxstring, _SHORT_REPR.maxother, _SHORT_REPR.maxlong = 3, 120, 120, 60


NOT_ECHOED = frozenset({"api_key_env"})
"""Settings whose bad value is never repeated in an error: a key pasted where its variable's name belongs."""


def one_line_error(exc: ValidationError) -> ConfigError:
    """A settings model's validation error as the one-line `ConfigError` every entry point prints: the first
    problem, its dotted field name and its value (short, secrets masked)."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    shown = redact_secrets(_SHORT_REPR.repr(first.get("input")))  # one short line, whatever the input was
    if first["loc"] and first["loc"][-1] in NOT_ECHOED:
        shown = "<not shown>"
    return ConfigError(f"invalid setting {where}={shown}: {first['msg'].removeprefix('Value error, ')}")
