"""The config table's vocabulary: a field's command-line flag, declared on the field, and the frozen model config.

Below `flows/` so that a component's settings can live beside the component (`tasks/generation/settings.py`) and
still be one row of the table `instructzero.flows.params` assembles and `instructzero.flows.cli` turns into flags.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ConfigDict

__all__ = ["FROZEN", "Flag"]

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
