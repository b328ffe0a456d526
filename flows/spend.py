"""Spend control wired to a `RunConfig`: the worst-case estimate (`instructzero estimate`, the start of every run)
and the running `Budget` the flow checks before each black-box batch. The arithmetic lives in
`tasks/evaluation/budget.py`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from instructzero.flows.params import RunConfig
from instructzero.tasks.data.splits import Splits
from instructzero.tasks.evaluation.answer_length import answer_token_cap
from instructzero.tasks.evaluation.budget import (
    SAME_TOKENIZER_SLACK,
    Budget,
    RunEstimate,
    TokenCounter,
    Usage,
    estimate_run,
    token_counter,
)
from instructzero.tasks.prompts import Prompt, ZeroShotFormat


def answer_cap(config: RunConfig, splits: Splits) -> int:
    """max_tokens per call, as the flow will send it."""
    if config.black_box.max_tokens is not None:
        return config.black_box.max_tokens
    return answer_token_cap([e.answers for e in (*splits.exemplars, *splits.dev, *splits.test)])


def counter_for(config: RunConfig) -> TokenCounter:
    bb = config.black_box
    return token_counter(bb.model, bb.api, config.cache_dir)


def estimate_for(
    config: RunConfig,
    splits: Splits,
    *,
    count: TokenCounter | None = None,
    done_iterations: Iterable[int] = (),
    spent: Usage | None = None,
) -> RunEstimate:
    """Worst case of the run's steps not yet recorded (all of them for a new run), plus what was spent."""
    baselines = list(config.report.labelled_baselines().values())
    return estimate_run(
        dev=splits.dev,
        test=splits.test,
        n_init=config.bo.n_init,
        iterations=config.bo.iterations,
        batch_size=config.bo.batch_size,
        baselines=baselines,
        template=config.black_box.zero_shot,
        generator_max_new_tokens=config.generator.max_new_tokens,
        count=count or counter_for(config),
        max_tokens=answer_cap(config, splits),
        prices=config.black_box.prices(),
        done_iterations=done_iterations,
        spent=spent or Usage(),
        instruction_tokens=instruction_bound(config),
    )


def instruction_bound(config: RunConfig) -> int | None:
    """An unwritten instruction's black-box tokens when the generator shares the black box's tokenizer (the
    default Qwen pair): what it may generate plus a little; None: the counter's planning factor applies."""
    from instructzero.tasks.generation.model_assets import PACKAGED_MODELS, same_tokenizer

    # only where the counter is that tokenizer's own count: the byte bound of other models counts bytes, not tokens
    if config.black_box.model in PACKAGED_MODELS and same_tokenizer(config.generator.model, config.black_box.model):
        return config.generator.max_new_tokens + SAME_TOKENIZER_SLACK
    return None


def format_estimate(config: RunConfig, estimate: RunEstimate) -> str:
    """The estimate as a few lines for the terminal."""
    prices = config.black_box.prices()
    lines = [
        f"black box {config.black_box.model}: ${prices.in_per_mtok:g} in / ${prices.out_per_mtok:g} out per "
        f"million tokens ({prices.source}); instructions bounded at {estimate.instruction_tokens} tokens"
    ]
    if estimate.spent.calls:
        lines.append(f"  {'already spent':<14} {estimate.spent.describe()}")
    for label, usage in estimate.steps:
        lines.append(f"  {label:<14} {usage.describe()}")
    lines.append(f"  {'worst case':<14} {estimate.total.describe()}")
    limits = config.budget.limits()
    if limits.any:
        lines.append(
            f"  {'limits':<14} {_limits(config)}" + (" (stop at limit)" if config.budget.stop_at_limit else "")
        )
    return "\n".join(lines)


def _limits(config: RunConfig) -> str:
    return config.budget.limits().as_flags()


def one_line(estimate: RunEstimate) -> str:
    return f"worst case {estimate.total.describe()}"


def make_budget(
    config: RunConfig, store, run_id: str, settings, max_tokens: int, count: TokenCounter | None = None
) -> Budget:
    """The run's running budget: spent = the store's llm_calls this run paid for; cached prompts cost 0."""
    from instructzero.tasks.evaluation.blackbox import BlackBoxClient, StoreResponseCache

    cache = StoreResponseCache(store)
    client = BlackBoxClient(settings)

    def spent() -> Usage:
        return Usage(*store.llm_spend(run_id))

    def is_cached(prompt: Prompt) -> bool:
        return cache.get(client.request_hash(prompt)) is not None

    return Budget(
        config.budget.limits(), config.black_box.prices(), count or counter_for(config), max_tokens, spent, is_cached
    )


def prompts_for(instructions: Sequence[str], examples, template: str | ZeroShotFormat) -> list[Prompt]:
    """The zero-shot prompts a batch will send (one per instruction x example)."""
    from instructzero.tasks.prompts import render_zero_shot

    return [render_zero_shot(i, e.input, template) for i in dict.fromkeys(instructions) for e in examples]


def usd_per_1k_calls(store, settings, instruction: str, examples, template: str | ZeroShotFormat, prices) -> float:
    """What 1,000 calls with `instruction` cost, from the recorded usage of its test calls (cached or not)."""
    from instructzero.tasks.evaluation.blackbox import BlackBoxClient

    client = BlackBoxClient(settings)
    calls = [store.get_llm_call(client.request_hash(p)) for p in prompts_for([instruction], examples, template)]
    calls = [c for c in calls if c is not None]
    if not calls:
        return 0.0
    return 1000.0 * sum(prices.cost(c.prompt_tokens, c.completion_tokens) for c in calls) / len(calls)


def format_value(summary) -> list[str]:
    """Test accuracy per dollar and per 1,000 calls, found instruction against the baselines (a few lines)."""
    if not summary.comparison:
        return []
    if summary.spent.cost_usd <= 0 and not any(summary.usd_per_1k_calls):
        return []  # a free (local) black box: the cost line says it all
    lines = ["value for money (deployment: $ per 1,000 calls with the instruction, from its test calls' usage):"]
    for row, per_1k in zip(summary.comparison, summary.usd_per_1k_calls):
        per_dollar = f"{row.accuracy * 1000.0 / per_1k:,.0f} correct answers per $" if per_1k > 0 else "free"
        lines.append(f"  {row.label:<11} test acc {row.accuracy:.3f}  ${per_1k:.4f} per 1k calls  {per_dollar}")
    spent = summary.spent
    for row in summary.comparison[1:]:
        gain = row.gain or 0.0
        per_usd = f"{gain / spent.cost_usd:+.3f} per $" if spent.cost_usd > 0 else "free search"
        per_calls = f"{1000.0 * gain / spent.calls:+.3f} per 1,000 paid calls" if spent.calls else "no paid calls"
        lines.append(
            f"  search gain vs {row.label}: {gain:+.3f} test accuracy for ${spent.cost_usd:.4f} and "
            f"{spent.calls} paid calls: {per_usd}, {per_calls}"
        )
    return lines
