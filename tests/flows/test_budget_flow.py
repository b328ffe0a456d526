"""Spend limits enforced in a real run: tiny generator, the rule-based black box over real HTTP (it reports usage),
real SQLite. One unlimited reference run, the same run stopped by --max-cost, resumed with a raised limit, and a
second run served from the cache."""

from __future__ import annotations

import pytest

from instructzero.flows.params import build_config, config_from_record
from instructzero.flows.spend import prompts_for
from instructzero.storage.repository import RunStore
from instructzero.tasks.data.splits import make_splits
from instructzero.tasks.data.task_data import load_task
from instructzero.tasks.evaluation.budget import byte_bound, worst_case
from instructzero.tasks.evaluation.pricing import Prices
from instructzero.tasks.prompts import ZERO_SHOT_TEMPLATE
from tests.plugins.prefect import store_rows, tiny_run_overrides

PRICED = dict(price_in_per_mtok=1000.0, price_out_per_mtok=1000.0)  # $0.001 per token: every call costs


def _overrides(store_url: str, base_url: str, generator_dir, **budget) -> dict:
    overrides = tiny_run_overrides(store_url, base_url, generator_dir, iterations=1)
    overrides["black_box"].update(PRICED)
    overrides["name"] = "budgeted"
    if budget:
        overrides["budget"] = budget
    return overrides


def _candidates(store_url: str, run_id: str) -> list[tuple]:
    return [
        (c.iteration, c.index, c.instruction, c.dev_score, c.test_score)
        for c in RunStore(store_url).load_candidates(run_id)
    ]


def _paid(store_url: str, run_id: str) -> tuple[int, float]:
    calls, cost = store_rows(
        store_url, "SELECT count(*), coalesce(sum(cost_usd), 0) FROM llm_calls WHERE run_id = :run", run=run_id
    )[0]
    return int(calls), float(cost)


def test_a_limited_run_stops_at_its_limit_and_resumes_to_the_unlimited_result(
    prefect_harness, isolated_results, echo_server_url, tiny_generator_dir, tmp_path
) -> None:
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    from instructzero.flows.instruction_search import instructzero_flow

    reference_url = f"sqlite:///{tmp_path / 'reference.db'}"
    reference = instructzero_flow(build_config(**_overrides(reference_url, echo_server_url, tiny_generator_dir)))
    expected = _candidates(reference_url, reference.run_id)
    ref_calls, ref_cost = _paid(reference_url, reference.run_id)
    assert reference.stopped is None and ref_calls > 0 and ref_cost > 0
    assert reference.spent.cost_usd == pytest.approx(ref_cost)
    # the limit: the worst case of iteration 0 in money, and 7 calls (iteration 0 pays 2 x 3 dev, iteration 1 needs
    # 3 more), so the run stops at the boundary before iteration 1 and cannot afford its test report
    splits = make_splits(load_task("sum", None), n_exemplars=2, n_dev=3, n_test=3, seed=0)
    prompts = prompts_for([c[2] for c in expected if c[0] == 0], splits.dev, ZERO_SHOT_TEMPLATE)
    assert len(prompts) == 6
    limit = worst_case(prompts, byte_bound("completions"), 8, Prices(1000.0, 1000.0, "config")).cost_usd

    url = f"sqlite:///{tmp_path / 'limited.db'}"
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: tmp_path / "limited-results"}):
        limited = instructzero_flow(
            build_config(
                **_overrides(
                    url, echo_server_url, tiny_generator_dir, max_cost_usd=limit, max_calls=7, stop_at_limit=True
                )
            )
        )
    assert limited.stopped and "budget exhausted before iteration 1" in limited.stopped
    assert limited.test_note.startswith("test report skipped") and limited.test_score != limited.test_score
    run = RunStore(url).get_run(limited.run_id)
    assert run.status == "interrupted" and run.error.startswith("budget_exhausted: ")
    spent = store_rows(url, "SELECT sum(cost_usd) FROM llm_calls WHERE run_id = :run", run=run.id)[0][0]
    assert 0 < spent <= limit  # never over the limit, checked in SQL
    assert store_rows(url, "SELECT count(*) FROM llm_calls WHERE run_id = :run", run=run.id)[0][0] <= 7
    got = _candidates(url, run.id)
    assert [c[:4] for c in got] == [c[:4] for c in expected[: len(got)]] and len(got) == 2 < len(expected)
    print(
        f"\nlimit ${limit:.4f}: stopped after {len(got)} of {len(expected)} candidates, spent ${spent:.4f}; "
        f"{limited.stopped}; {limited.test_note}"
    )

    raised = config_from_record(run.config, store_url=url, budget={"max_cost_usd": 100.0})
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: tmp_path / "limited-results"}):
        resumed = instructzero_flow(raised, resume_run_id=run.id)
    assert resumed.stopped is None and RunStore(url).get_run(run.id).status == "completed"
    assert _candidates(url, run.id) == expected
    assert (resumed.best_instruction, resumed.dev_score, resumed.test_score) == (
        reference.best_instruction,
        reference.dev_score,
        reference.test_score,
    )
    calls, cost = _paid(url, run.id)
    assert calls == ref_calls and cost == pytest.approx(ref_cost)  # nothing paid twice

    # the same search again in the reference store: every answer is cached, so it is free, even under a budget
    # smaller than one call; Prefect's own result cache is bypassed (new result storage), the store's is not
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: tmp_path / "again-results"}):
        overrides = _overrides(reference_url, echo_server_url, tiny_generator_dir, max_cost_usd=1e-9)
        overrides["name"] = "again"
        again = instructzero_flow(build_config(**overrides))
    assert again.stopped is None and again.answered_calls > 0
    assert _paid(reference_url, again.run_id) == (0, 0.0) and again.spent.calls == 0
    assert again.test_score == reference.test_score

    from instructzero.storage.analytics import Analytics

    with Analytics(url) as analytics:
        _, rows = analytics.query(
            "SELECT stage, iteration, calls, cache_hits, paid_calls, cost_usd "
            f"FROM cost_by_iteration WHERE run_id = '{run.id}'"
        )
    assert [r[:2] for r in rows] == [("search", 0), ("search", 1), ("test", None)]
    assert sum(r[4] for r in rows) == ref_calls and sum(r[5] for r in rows) == pytest.approx(ref_cost)
    with Analytics(reference_url) as analytics:
        _, rows = analytics.query(
            f"SELECT calls, cache_hits, paid_calls, cost_usd FROM cost_by_iteration WHERE run_id = '{again.run_id}'"
        )
    assert rows and all(c == hits > 0 and paid == 0 and cost == 0 for c, hits, paid, cost in rows)
    lengths = store_rows(
        url,
        "SELECT count(*), min(value) FROM metrics WHERE run_id = :run AND key LIKE 'instruction_tokens.%'",
        run=run.id,
    )[0]
    assert lengths[0] == len(expected) and lengths[1] >= 1  # every candidate's length in tokens is recorded
    # found and empty were paid for; the constant-answer reference row costs no call
    assert [r.label for r in resumed.comparison] == ["found", "empty", "constant"]
    assert len(resumed.usd_per_1k_calls) == 3 and all(v > 0 for v in resumed.usd_per_1k_calls[:2])
    assert resumed.usd_per_1k_calls[2] == 0.0
