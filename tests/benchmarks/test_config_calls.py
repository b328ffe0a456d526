"""The config-walk count behind docs/ARCHITECTURE.md: hand-checked on a snippet, and run on the real flow."""

from instructzero.benchmarks.config_calls import FLOW, config_calls, field_reads

SNIPPET = """
def flow(config, other):
    load(config.data, seed=config.seed)
    load(config.data)
    report(other)
    spend(budget=config.budget.max_calls)
    x = config.bo.iterations
"""


def test_counts_only_calls_that_hand_on_config() -> None:
    assert config_calls(SNIPPET) == {"load": 2, "spend": 1}
    assert field_reads(SNIPPET) == 2


def test_the_flow_hands_config_to_fewer_callees_than_before_issue_18() -> None:
    calls = config_calls(FLOW.read_text())
    # ddac5af: 50 calls into 36 callees (9 of them open_store); the number may go down, not back up.
    assert len(calls) <= 28 and sum(calls.values()) <= 33
    assert calls["open_store"] <= 2
