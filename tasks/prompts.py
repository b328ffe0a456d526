"""Prompt text shared by the black-box evaluation and the instruction generator.

The zero-shot template is deliberately one constant used for both dev and test scoring: a different wording at
test time would measure the template, not the instruction.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Protocol

from tasks.errors import ConfigError

ANSWER_ONLY = "Answer with the output only."
"""The template's one line about form. Chat models otherwise answer in sentences ("The sentiment of the sentence
... is positive.") that no exact-match metric accepts. Measured with Qwen2.5-Coder-0.5B-Instruct on 8 examples
of the exemplar/dev pool of 12 instruction-induction tasks and the built-in sentiment (benchmarks/README.md): the
hand-written instruction's accuracy rose on 6 tasks (sentiment 0.00 -> 0.75, sum 0.00 -> 0.62), stayed on 6 and
fell on 1 (antonyms 0.50 -> 0.38), mean 0.27 -> 0.40 over the 12; the empty instruction's fell or stayed (mean
0.15 -> 0.08). It names no task and no label, and every method is scored with the same template."""

ZERO_SHOT_TEMPLATE = "Instruction: {instruction}\n\nInput: {input}\n\n" + ANSWER_ONLY + "\nOutput:"
"""Zero-shot prompt sent to the black-box LLM for one (instruction, example input) pair, dev and test alike."""

_FIELDS = frozenset({"instruction", "input"})


class _ExampleLike(Protocol):
    input: str
    answers: tuple[str, ...]


def validate_template(template: str) -> None:
    """Raise `ConfigError` unless `template` has exactly the `{instruction}` and `{input}` fields.

    Checked up front so that a typo in a configured template fails before any paid call is made.
    """
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ConfigError(f"zero-shot template {template!r} is not a valid format string: {exc}") from exc
    if fields != _FIELDS:
        raise ConfigError(
            f"zero-shot template {template!r} must use exactly the fields {{instruction}} and {{input}}, "
            f"found {sorted(fields)}"
        )


def render_zero_shot(instruction: str, input: str, template: str = ZERO_SHOT_TEMPLATE) -> str:  # noqa: A002
    """Fill the zero-shot template; the instruction and input are stripped so stray whitespace is not scored."""
    validate_template(template)
    return template.format(instruction=instruction.strip(), input=input.strip())


def format_exemplars(exemplars: Sequence[_ExampleLike]) -> str:
    """Format demonstrations as "Input: x\\nOutput: y" blocks separated by a blank line (no trailing newline).

    The canonical answer `answers[0]` is shown, matching what the generator is asked to induce an instruction for.
    """
    blocks = []
    for ex in exemplars:
        if not ex.answers:
            raise ConfigError(f"exemplar with input {ex.input!r} has no answers")
        blocks.append(f"Input: {ex.input.strip()}\nOutput: {ex.answers[0].strip()}")
    return "\n\n".join(blocks)
