"""Spend control: worst-case estimates before a run, and a budget that no black-box request may cross.

Three limits, each optional: money (USD), total tokens (input + output) and paid calls. Before a run the whole
search is bounded (`estimate_run`); while it runs, each batch of black-box requests is bounded *with its real
prompts* just before it is sent (`Budget.check`), against what the run has actually spent so far (the usage the
API reported, summed over the store's `llm_calls` rows this run paid for; cached answers cost nothing).

Bounds on input tokens, per prompt:
* a packaged local black box: its own tokenizer (with its chat template) plus `TOKENIZER_MARGIN`;
* anything else: the prompt's UTF-8 byte count plus a per-request overhead. Every byte-level BPE and every
  SentencePiece model with byte fallback spends at least one byte per token, so this never undercounts.
Output tokens are bounded by `max_tokens` per call. Before the instructions exist (the run estimate), an
instruction is bounded by `INSTRUCTION_TOKENS_PER_GENERATED_TOKEN` x `generator.max_new_tokens` tokens (by
`generator.max_new_tokens` + `SAME_TOKENIZER_SLACK` when the generator and the black box share a tokenizer): a planning
number (`INSTRUCTION_BYTES_PER_GENERATED_TOKEN` bytes each for the byte bound), while the enforcement during the
run uses the real instruction texts, so the guarantee never rests on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from instructzero.storage.records import Example
from instructzero.tasks.errors import ConfigError
from instructzero.tasks.evaluation.pricing import Prices
from instructzero.tasks.prompts import Prompt, ZeroShotFormat, prompt_messages, render_zero_shot

CHAT_OVERHEAD_TOKENS = 64
"""Tokens a chat request may add around the user message (role markers, a default system prompt)."""
COMPLETION_OVERHEAD_TOKENS = 4
"""Tokens a completions request may add (BOS and the like)."""
TOKENIZER_MARGIN = 8
"""Tokens allowed beyond the packaged model's own count (an engine's slightly different special tokens)."""
INSTRUCTION_TOKENS_PER_GENERATED_TOKEN = 2
"""Planning bound for an instruction not yet written: black-box tokens per generator token (tokenizer count)."""
SAME_TOKENIZER_SLACK = 2
"""Tokens allowed beyond `max_new_tokens` for an instruction re-tokenized by the tokenizer that wrote it (cleaning
may end it differently)."""
INSTRUCTION_BYTES_PER_GENERATED_TOKEN = 8
"""The same in UTF-8 bytes (byte bound): generous for subword vocabularies, where a token is ~4 characters."""


@dataclass(frozen=True)
class Usage:
    """Black-box calls, tokens and money (spent, or an upper bound of what a step may spend)."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.calls + other.calls,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cost_usd + other.cost_usd,
        )

    def describe(self) -> str:
        return (
            f"{self.calls} calls, {self.total_tokens} tokens ({self.prompt_tokens} in + "
            f"{self.completion_tokens} out), ${self.cost_usd:.4f}"
        )


@dataclass(frozen=True)
class Limits:
    """The run's limits (None: unlimited). CLI: --max-cost, --max-total-tokens, --max-calls."""

    max_cost_usd: float | None = None
    max_total_tokens: int | None = None
    max_calls: int | None = None

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.max_cost_usd, self.max_total_tokens, self.max_calls))

    def exceeded(self, usage: Usage) -> str | None:
        """'cost $0.0123 > --max-cost $0.0100' for the first limit `usage` would cross, else None."""
        if self.max_cost_usd is not None and usage.cost_usd > self.max_cost_usd + 1e-12:
            return f"cost ${usage.cost_usd:.4f} > --max-cost ${self.max_cost_usd:.4f}"
        if self.max_total_tokens is not None and usage.total_tokens > self.max_total_tokens:
            return f"tokens {usage.total_tokens} > --max-total-tokens {self.max_total_tokens}"
        if self.max_calls is not None and usage.calls > self.max_calls:
            return f"calls {usage.calls} > --max-calls {self.max_calls}"
        return None

    def as_flags(self) -> str:
        """'--max-cost $0.5, --max-calls 100': the limits as the user set them."""
        parts = []
        if self.max_cost_usd is not None:
            parts.append(f"--max-cost ${self.max_cost_usd:g}")
        if self.max_total_tokens is not None:
            parts.append(f"--max-total-tokens {self.max_total_tokens}")
        if self.max_calls is not None:
            parts.append(f"--max-calls {self.max_calls}")
        return ", ".join(parts)

    def describe(self, spent: Usage) -> str:
        """'$0.0012/$0.0100 30/100 calls' for the progress bar."""
        parts = []
        if self.max_cost_usd is not None:
            parts.append(f"${spent.cost_usd:.4f}/${self.max_cost_usd:.4f}")
        if self.max_total_tokens is not None:
            parts.append(f"{spent.total_tokens}/{self.max_total_tokens} tok")
        if self.max_calls is not None:
            parts.append(f"{spent.calls}/{self.max_calls} calls")
        return " ".join(parts) or f"${spent.cost_usd:.4f} {spent.calls} calls"


class TokenCounter(Protocol):
    def __call__(self, prompt: Prompt) -> int:
        """An upper bound of the input tokens the black box charges for `prompt`."""


def byte_bound(api: str) -> TokenCounter:
    """UTF-8 bytes plus the request overhead: never below the true count for byte-level tokenizers."""
    overhead = CHAT_OVERHEAD_TOKENS if api == "chat" else COMPLETION_OVERHEAD_TOKENS

    def count(prompt: Prompt) -> int:  # a system + user prompt: both texts (and their labels, > their role markers)
        return len(str(prompt).encode("utf-8")) + overhead

    count.per_generated_token = INSTRUCTION_BYTES_PER_GENERATED_TOKEN  # type: ignore[attr-defined]
    return count


def tokenizer_count(tokenizer: Any, api: str) -> TokenCounter:
    """The packaged model's own count (through its chat template on the chat API) plus `TOKENIZER_MARGIN`."""

    def count(prompt: Prompt) -> int:
        if api == "chat" and getattr(tokenizer, "chat_template", None):
            # transformers 5 returns a BatchEncoding here (its len() is the number of fields, 2): take the ids
            encoded = tokenizer.apply_chat_template(
                prompt_messages(prompt), add_generation_prompt=True, tokenize=True, return_dict=True
            )
            return len(encoded["input_ids"]) + TOKENIZER_MARGIN
        text = str(prompt)
        return len(tokenizer(text)["input_ids"]) + TOKENIZER_MARGIN + (CHAT_OVERHEAD_TOKENS if api == "chat" else 0)

    count.per_generated_token = INSTRUCTION_TOKENS_PER_GENERATED_TOKEN  # type: ignore[attr-defined]
    return count


def token_counter(model: str, api: str, cache_dir: Path | None = None) -> TokenCounter:
    """The tokenizer of a packaged model (embedded, or served under its name by `instructzero serve`), else the
    byte bound (remote models: no tokenizer is known offline; tiktoken would need its BPE files from the internet)."""
    from instructzero.tasks.generation.model_assets import PACKAGED_MODELS

    if model in PACKAGED_MODELS:
        from transformers import AutoTokenizer

        from instructzero.tasks.generation.model_assets import resolve_model_path

        return tokenizer_count(AutoTokenizer.from_pretrained(str(resolve_model_path(model, cache_dir))), api)
    return byte_bound(api)


def worst_case(prompts: Iterable[Prompt], count: TokenCounter, max_tokens: int, prices: Prices) -> Usage:
    """Upper bound of what sending `prompts` (one call each) can spend."""
    calls = tokens_in = 0
    for prompt in prompts:
        calls += 1
        tokens_in += count(prompt)
    tokens_out = calls * max_tokens
    return Usage(calls, tokens_in, tokens_out, prices.cost(tokens_in, tokens_out))


@dataclass(frozen=True)
class RunEstimate:
    """Worst case of a (remaining) run, step by step, plus what was already spent."""

    steps: tuple[tuple[str, Usage], ...]
    spent: Usage = Usage()
    instruction_tokens: int = 0  # the planning bound used for instructions not yet written

    @property
    def remaining(self) -> Usage:
        total = Usage()
        for _, usage in self.steps:
            total = total + usage
        return total

    @property
    def total(self) -> Usage:
        return self.spent + self.remaining

    @property
    def first_step(self) -> tuple[str, Usage] | None:
        return self.steps[0] if self.steps else None


def _padded(count: TokenCounter, template: str | ZeroShotFormat, inputs: Sequence[str], extra: int) -> int:
    """Bound of the prompts for an unknown instruction of `extra` tokens over `inputs` (the bytes of the padding
    of an empty instruction are included by rendering it with "")."""
    return sum(count(render_zero_shot("", text, template)) + extra for text in inputs)


def estimate_run(
    *,
    dev: Sequence[Example],
    test: Sequence[Example],
    n_init: int,
    iterations: int,
    batch_size: int,
    baselines: Sequence[str],
    template: str | ZeroShotFormat,
    generator_max_new_tokens: int,
    count: TokenCounter,
    max_tokens: int,
    prices: Prices,
    done_iterations: Iterable[int] = (),
    spent: Usage = Usage(),
    instruction_tokens: int | None = None,
) -> RunEstimate:
    """Worst-case calls, tokens and cost of every step not yet recorded: iteration 0 (n_init instructions x dev),
    each BO iteration (batch_size x dev), then the test report (found + baselines x test).

    `instruction_tokens`: the bound of an instruction not yet written when it is known (the generator and the black
    box share a tokenizer); else the counter's planning factor x `generator_max_new_tokens`."""
    per_token = getattr(count, "per_generated_token", INSTRUCTION_TOKENS_PER_GENERATED_TOKEN)
    instr = instruction_tokens if instruction_tokens is not None else per_token * generator_max_new_tokens
    dev_inputs = [e.input for e in dev]
    test_inputs = [e.input for e in test]
    per_dev_instruction = _padded(count, template, dev_inputs, instr)
    done = set(done_iterations)
    steps: list[tuple[str, Usage]] = []

    def usage(n_calls: int, tokens_in: int) -> Usage:
        tokens_out = n_calls * max_tokens
        return Usage(n_calls, tokens_in, tokens_out, prices.cost(tokens_in, tokens_out))

    for iteration in range(iterations + 1):
        if iteration in done:
            continue
        n = n_init if iteration == 0 else batch_size
        steps.append((f"iteration {iteration}", usage(n * len(dev), n * per_dev_instruction)))
    found = _padded(count, template, test_inputs, instr)
    known = sum(count(render_zero_shot(text, inp, template)) for text in baselines for inp in test_inputs)
    steps.append(("test report", usage((1 + len(baselines)) * len(test), found + known)))
    return RunEstimate(tuple(steps), spent=spent, instruction_tokens=instr)


def check_estimate(estimate: RunEstimate, limits: Limits, *, stop_at_limit: bool) -> None:
    """Refuse a run before it spends: with `stop_at_limit` only when not even its next step fits, else whenever
    its worst case crosses a limit.

    Raises:
        ConfigError: one line naming the estimate and the limit.
    """
    if not limits.any:
        return
    first = estimate.first_step
    if first is not None:
        label, usage = first
        crossed = limits.exceeded(estimate.spent + usage)
        if crossed:
            raise ConfigError(f"budget below the worst case of one step ({label}: {usage.describe()}): {crossed}")
    if not stop_at_limit:
        crossed = limits.exceeded(estimate.total)
        if crossed:
            raise ConfigError(
                f"worst-case estimate of the run ({estimate.total.describe()}) exceeds the budget: "
                f"{crossed}; raise the limit or pass --stop-at-limit to stop when it is reached"
            )


@dataclass
class Budget:
    """The running check: `spent()` reads what the run has paid so far (from the store), `check` bounds a batch.

    `count`, `max_tokens` and `prices` bound each request; `is_cached(prompt)` says whether an answer is already
    stored (it will cost nothing, so it is left out of the bound).
    """

    limits: Limits
    prices: Prices
    count: TokenCounter
    max_tokens: int
    spent: Callable[[], Usage]
    is_cached: Callable[[Prompt], bool] = field(default=lambda prompt: False)

    def need(self, prompts: Iterable[Prompt]) -> Usage:
        """Worst case of sending `prompts` now (cached and repeated prompts cost nothing)."""
        fresh = [p for p in dict.fromkeys(prompts) if not self.is_cached(p)]
        return worst_case(fresh, self.count, self.max_tokens, self.prices)

    def check(self, prompts: Iterable[Prompt]) -> tuple[Usage, Usage, str | None]:
        """(spent, need, crossed): `crossed` names the limit spending `need` could cross, None when it fits."""
        spent = self.spent()
        need = self.need(prompts)
        return spent, need, self.limits.exceeded(spent + need)

    def describe(self) -> str:
        return self.limits.describe(self.spent())
