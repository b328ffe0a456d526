"""Prompt text shared by the black-box evaluation and the instruction generator.

The zero-shot template is deliberately one constant used for both dev and test scoring: a different wording at
test time would measure the template, not the instruction.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from instructzero.storage.records import Example
from instructzero.tasks.errors import ConfigError

ANSWER_ONLY = "Answer with the output only."
"""The template's one line about form. Chat models otherwise answer in sentences ("The sentiment of the sentence
... is positive.") that no exact-match metric accepts. Measured with Qwen2.5-Coder-0.5B-Instruct on 8 examples
of the exemplar/dev pool of 12 instruction-induction tasks and the built-in sentiment (benchmarks/README.md): the
hand-written instruction's accuracy rose on 6 tasks (sentiment 0.00 -> 0.75, sum 0.00 -> 0.62), stayed on 6 and
fell on 1 (antonyms 0.50 -> 0.38), mean 0.27 -> 0.40 over the 12; the empty instruction's fell or stayed (mean
0.15 -> 0.08). It names no task and no label, and every method is scored with the same template."""

ZERO_SHOT_TEMPLATE = "Instruction: {instruction}\n\nInput: {input}\n\n" + ANSWER_ONLY + "\nOutput:"
"""Zero-shot prompt sent to the black-box LLM for one (instruction, example input) pair, dev and test alike."""

SYSTEM_ROLE_TEMPLATE = "Input: {input}\n\n" + ANSWER_ONLY + "\nOutput:"
"""The user turn of `instruction_role="system"` when no template is given: the default template without its
instruction line, which the system message carries."""

InstructionRole = Literal["user", "system"]
_FIELDS: dict[str, frozenset[str]] = {
    "user": frozenset({"instruction", "input"}),
    "system": frozenset({"input"}),  # the instruction is the system message, not part of the user turn
}


@dataclass(frozen=True)
class SystemPrompt:
    """A chat request whose instruction is the system message and whose user turn holds the input."""

    system: str
    user: str

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]

    def __str__(self) -> str:
        """What the ledger stores and the byte bound counts (both messages, labelled)."""
        return f"[system]\n{self.system}\n[user]\n{self.user}"


Prompt = str | SystemPrompt
"""One zero-shot request: a single text (the user message, or the completions prompt), or system + user."""


def prompt_messages(prompt: Prompt) -> list[dict[str, str]]:
    """The chat messages of `prompt`."""
    return prompt.messages() if isinstance(prompt, SystemPrompt) else [{"role": "user", "content": prompt}]


def validate_template(template: str, role: InstructionRole = "user") -> None:
    """Raise `ConfigError` unless `template` has exactly the fields of `role`: `{instruction}` and `{input}`, or
    only `{input}` when the instruction goes in the system message. Literal braces are written `{{` and `}}`.

    Checked up front so that a typo in a configured template fails before any paid call is made.
    """
    expected = _FIELDS.get(role)
    if expected is None:
        raise ConfigError(f"instruction role {role!r} must be 'user' or 'system'")
    try:
        parsed = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ConfigError(f"zero-shot template {template!r} is not a valid format string: {exc}") from exc
    fields = {name for name, _, _ in parsed}
    dressed = [name for name, spec, conv in parsed if spec or conv]
    if dressed:
        raise ConfigError(
            f"zero-shot template {template!r}: field {{{dressed[0]}}} carries a conversion or format "
            "spec; write plain {instruction} and {input}"
        )
    if fields != expected:
        wanted = " and ".join("{" + f + "}" for f in sorted(expected, reverse=True))
        note = " (with --instruction-role system the instruction is the system message)" if role == "system" else ""
        raise ConfigError(
            f"zero-shot template {template!r} must use exactly the fields {wanted}{note}, found {sorted(fields)}; "
            "write literal braces as {{ and }}"
        )


@dataclass(frozen=True)
class ZeroShotFormat:
    """How an (instruction, input) pair becomes a request: the template and where the instruction goes.

    `user` (the default): the filled template is the one message. `system`: the instruction is the system message
    and the template, with `{input}` only, is the user turn; the empty instruction sends no system message.
    """

    template: str = ZERO_SHOT_TEMPLATE
    instruction_role: InstructionRole = "user"

    def __post_init__(self) -> None:
        validate_template(self.template, self.instruction_role)

    def render(self, instruction: str, input: str) -> Prompt:
        """The request for one pair; instruction and input are stripped so stray whitespace is not scored."""
        if self.instruction_role == "user":
            return self.template.format(instruction=instruction.strip(), input=input.strip())
        user = self.template.format(input=input.strip())
        return SystemPrompt(instruction.strip(), user) if instruction.strip() else user


def render_zero_shot(
    instruction: str,
    input: str,
    template: str | ZeroShotFormat = ZERO_SHOT_TEMPLATE,
) -> Prompt:
    """Fill the zero-shot template (a text with both fields, or a `ZeroShotFormat`); a text template gives a text."""
    fmt = template if isinstance(template, ZeroShotFormat) else ZeroShotFormat(template)
    return fmt.render(instruction, input)


def format_exemplars(exemplars: Sequence[Example]) -> str:
    """Format demonstrations as "Input: x\\nOutput: y" blocks separated by a blank line (no trailing newline).

    The canonical answer `answers[0]` is shown, matching what the generator is asked to induce an instruction for.
    """
    blocks = []
    for ex in exemplars:
        if not ex.answers:
            raise ConfigError(f"exemplar with input {ex.input!r} has no answers")
        blocks.append(f"Input: {ex.input.strip()}\nOutput: {ex.answers[0].strip()}")
    return "\n\n".join(blocks)
