"""Spend control: prices, worst-case estimates and the running budget (plain functions, no Prefect)."""

from __future__ import annotations

import pytest

from flows.params import build_config
from tasks.budget import Budget, Limits, Usage, byte_bound, check_estimate, estimate_run, worst_case
from tasks.data import Example
from tasks.errors import ConfigError
from tasks.pricing import PRICE_TABLE, Prices, resolve_prices, table_entry


def test_prices_come_from_config_then_the_table_and_local_endpoints_are_free() -> None:
    assert resolve_prices("gpt-4o-mini", "https://api.openai.com/v1", None, None) == Prices(0.15, 0.60,
                                                                                             "table:gpt-4o-mini")
    assert table_entry("gpt-4o-mini-2024-07-18") == "gpt-4o-mini"  # a dated snapshot: longest prefix
    assert table_entry("gpt-4o-2024-08-06") == "gpt-4o"
    own = resolve_prices("gpt-4o", "https://api.openai.com/v1", 1.0, 2.0)
    assert (own.in_per_mtok, own.out_per_mtok, own.source) == (1.0, 2.0, "config")
    assert resolve_prices("gpt-4o", "http://127.0.0.1:8011/v1", None, None).free  # a local server: 0
    assert resolve_prices("smollm2-135m-instruct", None, None, None).free  # the embedded black box
    assert resolve_prices("rule-based", "http://localhost:9/v1", 3.0, None) == Prices(3.0, 0.0, "config")
    assert Prices(2.0, 8.0, "config").cost(1_000_000, 500_000) == pytest.approx(6.0)
    assert all(i >= 0 and o >= 0 for i, o in PRICE_TABLE.values())


@pytest.mark.parametrize(("model", "price_in", "price_out", "needle"), [
    ("my-private-model", None, None, "no price known for black-box model 'my-private-model'"),
    ("my-private-model", 1.0, None, "no price known"),  # half a price for an unknown model
    ("gpt-4o", -1.0, 2.0, "price_in_per_mtok must be >= 0"),
])
def test_unknown_or_negative_prices_are_refused(model, price_in, price_out, needle) -> None:
    with pytest.raises(ConfigError, match=needle):
        resolve_prices(model, "https://llm.example.com/v1", price_in, price_out)


def test_prices_are_part_of_the_recorded_config_and_reach_the_client() -> None:
    config = build_config(black_box=dict(base_url="http://127.0.0.1:1/v1", model="rule-based",
                                         price_in_per_mtok=2.5, price_out_per_mtok=10.0))
    assert config.recorded()["black_box"]["price_in_per_mtok"] == 2.5
    settings = config.black_box.client_settings("http://127.0.0.1:1/v1", answers=[("12",)])
    assert settings.call_cost(1000, 100) == pytest.approx((1000 * 2.5 + 100 * 10.0) / 1e6)
    assert "price_in_per_mtok" not in settings.request_params()  # prices do not change answers or cache keys
