"""Spend control: prices, worst-case estimates and the running budget (plain functions, no Prefect)."""

from __future__ import annotations

import pytest

from instructzero.flows.params import build_config
from instructzero.storage.records import Example
from instructzero.tasks.errors import ConfigError
from instructzero.tasks.evaluation.budget import (
    Budget,
    Limits,
    Usage,
    byte_bound,
    check_estimate,
    estimate_run,
)
from instructzero.tasks.evaluation.pricing import PRICE_TABLE, Prices, resolve_prices, table_entry
from tests.plugins.prefect import tiny_run_args


def test_prices_come_from_config_then_the_table_and_local_endpoints_are_free() -> None:
    assert resolve_prices("gpt-4o-mini", "https://api.openai.com/v1", None, None) == Prices(
        0.15, 0.60, "table:gpt-4o-mini"
    )
    assert table_entry("gpt-4o-mini-2024-07-18") == "gpt-4o-mini"  # a dated snapshot: longest prefix
    assert table_entry("gpt-4o-2024-08-06") == "gpt-4o"
    own = resolve_prices("gpt-4o", "https://api.openai.com/v1", 1.0, 2.0)
    assert (own.in_per_mtok, own.out_per_mtok, own.source) == (1.0, 2.0, "config")
    assert resolve_prices("gpt-4o", "http://127.0.0.1:8011/v1", None, None).free  # a local server: 0
    assert resolve_prices("smollm2-135m-instruct", None, None, None).free  # the embedded black box
    assert resolve_prices("rule-based", "http://localhost:9/v1", 3.0, None) == Prices(3.0, 0.0, "config")
    assert Prices(2.0, 8.0, "config").cost(1_000_000, 500_000) == pytest.approx(6.0)
    assert all(i >= 0 and o >= 0 for i, o in PRICE_TABLE.values())


@pytest.mark.parametrize(
    ("model", "price_in", "price_out", "needle"),
    [
        ("my-private-model", None, None, "no price known for black-box model 'my-private-model'"),
        ("my-private-model", 1.0, None, "no price known"),  # half a price for an unknown model
        ("gpt-4o", -1.0, 2.0, "price_in_per_mtok must be >= 0"),
    ],
)
def test_unknown_or_negative_prices_are_refused(model, price_in, price_out, needle) -> None:
    with pytest.raises(ConfigError, match=needle):
        resolve_prices(model, "https://llm.example.com/v1", price_in, price_out)


def test_prices_are_part_of_the_recorded_config_and_reach_the_client() -> None:
    config = build_config(
        black_box=dict(
            base_url="http://127.0.0.1:1/v1", model="rule-based", price_in_per_mtok=2.5, price_out_per_mtok=10.0
        )
    )
    assert config.recorded()["black_box"]["price_in_per_mtok"] == 2.5
    settings = config.black_box.client_settings("http://127.0.0.1:1/v1", answers=[("12",)])
    assert settings.call_cost(1000, 100) == pytest.approx((1000 * 2.5 + 100 * 10.0) / 1e6)
    assert "price_in_per_mtok" not in settings.request_params()  # prices do not change answers or cache keys


def _examples(*inputs: str) -> list[Example]:
    return [Example(id=f"e{k}", input=text, answers=("x",)) for k, text in enumerate(inputs)]


def test_the_estimate_bounds_every_step_and_the_byte_bound_never_undercounts() -> None:
    prices = Prices(1.0, 2.0, "config")
    count = byte_bound("completions")
    estimate = estimate_run(
        dev=_examples("1 2", "3 4"),
        test=_examples("5 6", "7 8", "9 1"),
        n_init=3,
        iterations=2,
        batch_size=2,
        baselines=["", "Add them."],
        template="{instruction}|{input}",
        generator_max_new_tokens=8,
        count=count,
        max_tokens=5,
        prices=prices,
    )
    labels = [label for label, _ in estimate.steps]
    assert labels == ["iteration 0", "iteration 1", "iteration 2", "test report"]
    first = estimate.steps[0][1]
    # "|1 2" and "|3 4": 4 bytes + 4 overhead each, + 64 for the unknown instruction (8 bytes x 8 generator tokens)
    assert (first.calls, first.prompt_tokens, first.completion_tokens) == (6, 3 * 2 * (8 + 64), 6 * 5)
    assert first.cost_usd == pytest.approx((432 * 1.0 + 30 * 2.0) / 1e6)
    test = estimate.steps[-1][1]
    assert test.calls == 3 * 3  # found + 2 baselines on 3 test examples
    resumed = estimate_run(
        dev=_examples("1 2", "3 4"),
        test=_examples("5 6"),
        n_init=3,
        iterations=2,
        batch_size=2,
        baselines=[],
        template="{instruction}|{input}",
        generator_max_new_tokens=8,
        count=count,
        max_tokens=5,
        prices=prices,
        done_iterations=[0, 1],
        spent=Usage(6, 100, 30, 0.5),
    )
    assert [label for label, _ in resumed.steps] == ["iteration 2", "test report"]
    assert resumed.total.cost_usd == pytest.approx(0.5 + resumed.remaining.cost_usd)
    # a real tokenizer never counts more tokens than bytes + overhead
    from transformers import AutoTokenizer

    from instructzero.tasks.generation.model_assets import PACKAGED_GEMMA, default_cache_dir, resolve_model_path

    tok = AutoTokenizer.from_pretrained(str(resolve_model_path(PACKAGED_GEMMA, default_cache_dir())))
    for text in ["Instruction: Add the numbers.\n\nInput: 12 30\nOutput:", "Übersetze: naïve café ✓ 日本語"]:
        assert len(tok(text)["input_ids"]) <= count(text)


def test_limits_refuse_the_whole_run_or_only_a_first_step_that_cannot_fit() -> None:
    estimate = estimate_run(
        dev=_examples("a", "b"),
        test=_examples("c"),
        n_init=2,
        iterations=3,
        batch_size=1,
        baselines=[],
        template="{instruction}|{input}",
        generator_max_new_tokens=4,
        count=byte_bound("completions"),
        max_tokens=2,
        prices=Prices(1e4, 1e4, "config"),
    )
    first, total = estimate.steps[0][1].cost_usd, estimate.total.cost_usd
    check_estimate(estimate, Limits(max_cost_usd=total), stop_at_limit=False)  # exactly fits
    with pytest.raises(ConfigError, match=r"worst-case estimate of the run .* exceeds the budget: cost"):
        check_estimate(estimate, Limits(max_cost_usd=total * 0.9), stop_at_limit=False)
    check_estimate(estimate, Limits(max_cost_usd=first), stop_at_limit=True)  # one step fits: may start
    with pytest.raises(ConfigError, match=r"below the worst case of one step \(iteration 0"):
        check_estimate(estimate, Limits(max_cost_usd=first * 0.99), stop_at_limit=True)
    with pytest.raises(ConfigError, match="calls 4 > --max-calls 3"):
        check_estimate(estimate, Limits(max_calls=3), stop_at_limit=True)
    with pytest.raises(ConfigError, match="--max-total-tokens 5"):
        check_estimate(estimate, Limits(max_total_tokens=5), stop_at_limit=True)


def test_the_running_budget_charges_nothing_for_cached_or_repeated_prompts() -> None:
    spent = [Usage(2, 10, 4, 0.002)]
    budget = Budget(
        Limits(max_cost_usd=0.003),
        Prices(100.0, 100.0, "config"),
        byte_bound("completions"),
        1,
        lambda: spent[0],
        is_cached=lambda p: p == "cached",
    )
    assert budget.need(["cached", "cached"]) == Usage()
    assert budget.need(["abcdef", "abcdef"]).calls == 1  # (6 + 4) in + 1 out = 11 tokens x $1e-4
    _, need, crossed = budget.check(["abcdef"])
    assert need.cost_usd == pytest.approx(0.0011) and crossed == "cost $0.0031 > --max-cost $0.0030"
    assert budget.check(["abc"])[2] is None  # 8 tokens: $0.0028 fits


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--price-in", "1000", "--price-out", "1000", "--max-cost", "1.0"], "worst-case estimate of the run"),
        (
            ["--price-in", "1000", "--price-out", "1000", "--max-cost", "0.1", "--stop-at-limit"],
            "below the worst case of one step (iteration 0",
        ),
        (["--max-calls", "5", "--stop-at-limit"], "calls 6 > --max-calls 5"),
        (["--max-cost", "-1"], "budget.max_cost_usd"),
        (["--max-total-tokens", "lots"], "budget.max_total_tokens='lots'"),
        (["--price-in", "cheap"], "black_box.price_in_per_mtok='cheap'"),
        (["--black-box-model", "my-own-model", "--black-box-url", "https://llm.example.com/v1"], "no price known"),
    ],
)
def test_a_refused_run_is_one_line_exit_2_and_writes_nothing(
    extra, needle, echo_server_url, tiny_generator_dir, tmp_path, capsys, monkeypatch
) -> None:
    from instructzero.flows.cli import main

    monkeypatch.chdir(tmp_path)
    store = tmp_path / "store.db"
    assert (
        main(["run", *tiny_run_args(f"sqlite:///{store}", echo_server_url, tiny_generator_dir, iterations=2), *extra])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []  # no store, nothing else


def test_estimate_prints_the_worst_case_and_writes_nothing(
    echo_server_url, tiny_generator_dir, tmp_path, capsys
) -> None:
    from instructzero.flows.cli import main

    store = tmp_path / "store.db"
    args = [
        *tiny_run_args(f"sqlite:///{store}", echo_server_url, tiny_generator_dir, iterations=2),
        *("--price-in", "2", "--price-out", "8"),
    ]
    assert main(["estimate", *args, "--max-calls", "100"]) == 0
    out = capsys.readouterr().out
    assert "$2 in / $8 out per million tokens (config)" in out
    assert "worst case     18 calls" in out and "fits the limits" in out  # 2x3 + 1x3 + 1x3 dev, (found, empty)x3
    assert not store.exists()


def test_pareto_front_and_length_penalty() -> None:
    from dataclasses import dataclass

    from instructzero.tasks.evaluation.objective import penalised
    from instructzero.tasks.evaluation.pareto import pareto_front

    points = [
        ("long good", 0.9, 20),
        ("short ok", 0.6, 5),
        ("mid bad", 0.5, 10),
        ("empty", 0.2, 0),
        ("short ok", 0.6, 5),
    ]
    assert pareto_front(points) == [("empty", 0.2, 0), ("short ok", 0.6, 5), ("long good", 0.9, 20)]

    @dataclass(frozen=True)
    class Cand:
        instruction: str
        dev_score: float | None

    history = [Cand("long good", 0.9), Cand("short ok", 0.6), Cand("none", None)]
    lengths = {"long good": 20, "short ok": 5}
    assert [c.dev_score for c in penalised(history, lengths, 0.02)] == pytest.approx([0.5, 0.5, None])
    assert penalised(history, lengths, 0.0) == history


def test_pareto_plot_is_a_png(tmp_path) -> None:
    from instructzero.tasks.evaluation.pareto import pareto_front, plot_front

    points = [("long good", 0.9, 20), ("short ok", 0.6, 5), ("mid bad", 0.5, 10), ("empty", 0.2, 0)]
    path = tmp_path / "front.png"
    plot_front(points, pareto_front(points), str(path), title="run nightly (sum)")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000


def test_pareto_plot_keeps_the_accuracy_scale_and_names_the_run() -> None:
    """An all-zero run was drawn on an accuracy axis of -0.04..0.04 with no run name."""
    import matplotlib.pyplot as plt

    from instructzero.tasks.evaluation.pareto import front_figure, pareto_front

    points = [("Add them.", 0.0, 3), ("Write the sum of the two numbers.", 0.0, 8)]
    fig = front_figure(points, pareto_front(points), title="run nightly (sum)")
    [ax] = fig.axes
    low, high = ax.get_ylim()
    assert low <= 0.0 and high >= 1.0 and high - low < 1.2
    assert "run nightly (sum)" in ax.get_title()
    assert [t.get_text() for t in ax.texts] == ["Add them."]  # the front (one point: the shorter) is labelled
    plt.close(fig)


def test_the_estimate_bounds_instructions_by_the_generators_tokens_when_it_shares_the_tokenizer() -> None:
    from instructzero.flows.params import build_config
    from instructzero.flows.spend import instruction_bound

    assert instruction_bound(build_config()) == 32 + 2  # the default Qwen pair: generated tokens + slack
    other = build_config(generator={"model": "smollm2-135m-instruct"})
    assert instruction_bound(other) is None  # another tokenizer: the counter's planning factor (2 per token)
    # the same unpackaged model on both sides: its black box is counted in bytes, so no token bound applies
    same_hub_model = build_config(
        generator={"model": "org/model"}, black_box={"model": "org/model", "base_url": "http://127.0.0.1:9/v1"}
    )
    assert instruction_bound(same_hub_model) is None
