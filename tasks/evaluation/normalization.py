"""What a prediction and an accepted answer go through before a metric compares them.

The default (`AUTO`) is the instruction-induction normalisation InstructZero scores with (Honovich et al. 2022), so
stored results and the paper stay comparable. It lower-cases both sides, which makes a task about case (upper-case
the input) unscorable: the empty instruction's echo of the input already "matches". Each step is therefore a switch,
recorded with the run (`RunConfig.scoring.normalize`), and `--normalize` names them (`parse_normalization`).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, fields, replace

from instructzero.tasks.errors import ConfigError

_PUNCTUATION = str.maketrans("", "", string.punctuation)
# A '.' that ends a sentence, i.e. not one between two digits as in "3.5".
_DECIMAL_DOT = re.compile(r"(?<=\d)\.(?=\d)")
_DOT_STANDIN = "\x00"  # hides a decimal point from the sentence split and punctuation removal


@dataclass(frozen=True)
class Normalization:
    """Which normalisation steps run, in this order; surrounding whitespace is always stripped.

    The defaults are `AUTO`, the instruction-induction steps (everything but `whitespace`).
    """

    __pydantic_config__ = {"extra": "forbid"}  # a misspelt step in a JSON config is an error, not ignored

    fillers: bool = True  # ' and ' -> ' ', drop 'Sentence 1:' / 'Sentence 2:' (instruction-induction's)
    first_line: bool = True  # keep the first line only
    first_period: bool = True  # keep the text before the first '.' (a '.' between two digits is kept)
    lowercase: bool = True
    punctuation: bool = True  # '-' -> ' ', then remove ASCII punctuation
    whitespace: bool = False  # collapse runs of whitespace into one space

    def spec(self) -> str:
        """The shortest `--normalize` spelling of these settings (relative to `auto`)."""
        changes = [("" if on else "no-") + _flag(name) for name, on in _switches(self) if on != _AUTO_SWITCHES[name]]
        return ",".join(["auto", *changes]) if changes else "auto"


AUTO = Normalization()
"""Today's (and the paper's) normalisation: the default, so stored results keep their meaning."""
NONE = Normalization(**{f.name: False for f in fields(Normalization)})
"""Only the surrounding whitespace is stripped: the answer must match as written."""


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _switches(norm: Normalization) -> list[tuple[str, bool]]:
    return [(f.name, getattr(norm, f.name)) for f in fields(norm)]


_AUTO_SWITCHES = dict(_switches(AUTO))
STEP_NAMES: tuple[str, ...] = tuple(_flag(name) for name in _AUTO_SWITCHES)


def parse_normalization(spec: str) -> Normalization:
    """Read a `--normalize` value: comma-separated items applied left to right, starting from `auto`.

    Items: `auto`, `none` (every step off), a step name (on) or `no-<step>` (off); steps: fillers, first-line,
    first-period, lowercase, punctuation, whitespace. E.g. `no-lowercase` (case-sensitive, the rest as today),
    `none,whitespace` (exact text up to spacing).
    """
    norm = AUTO
    items = [item.strip().lower() for item in spec.split(",") if item.strip()]
    if not items:
        raise ConfigError(f"normalisation spec {spec!r} is empty; use auto, none or steps such as no-lowercase")
    for item in items:
        if item in ("auto", "none"):
            norm = AUTO if item == "auto" else NONE
            continue
        on = not item.startswith("no-")
        step = item.removeprefix("no-")
        if step not in STEP_NAMES:
            raise ConfigError(
                f"unknown normalisation step {item!r} in {spec!r}; use auto, none, or (no-)one of "
                f"{', '.join(STEP_NAMES)}"
            )
        norm = replace(norm, **{step.replace("-", "_"): on})
    return norm


def normalize(text: str, norm: Normalization = AUTO, *, keep_decimals: bool = True) -> str:
    """Apply the steps of `norm` to `text`; `AUTO` is exactly `metrics.normalize_prediction`.

    `keep_decimals`: a '.' between two digits neither ends the text nor counts as punctuation ("3.5" stays).
    """
    if norm.fillers:
        text = text.replace(" and ", " ")
        text = text.replace("Sentence 1:", " ").replace("Sentence 2:", " ")
    text = text.strip()
    if norm.first_line:
        text = text.split("\n")[0]
    if keep_decimals:  # neither the sentence cut nor the punctuation step may break "3.5"
        text = _DECIMAL_DOT.sub(_DOT_STANDIN, text)
    if norm.first_period:
        text = text.split(".")[0]
    if norm.lowercase:
        text = text.lower()
    if norm.punctuation:
        text = text.replace("-", " ").translate(_PUNCTUATION)
    if norm.whitespace:
        text = " ".join(text.split())
    return text.replace(_DOT_STANDIN, ".")
