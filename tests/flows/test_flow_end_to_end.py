"""End to end on real parts: the default packaged models (Qwen2.5-Coder-0.5B-Instruct as the generator, and as the
chat black box behind a real local OpenAI-compatible HTTP server), a real SQLite store, the real Prefect flow with
its baseline report, then the same run re-run by name. (Kill -9 and resume on real processes:
tests/flows/test_reliability.py, tests/storage/test_run_lease.py and tests/flows/test_interrupts.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from instructzero.flows.params import build_config
from instructzero.storage.repository import RunStore
from tests.plugins.prefect import store_rows
from tests.plugins.store import SoftPromptVector

pytestmark = pytest.mark.slow

SMALL = dict(
    data=dict(task="sentiment", n_exemplars=3, n_dev=3, n_test=6),
    generator=dict(max_new_tokens=12),
    bo=dict(n_init=2, iterations=2, batch_size=1, num_restarts=2, raw_samples=32),
)


def _table(store: RunStore, run_id: str) -> list[tuple]:
    return [
        (c.iteration, c.index, c.phase, c.instruction, c.dev_score, SoftPromptVector(c.z))
        for c in store.load_candidates(run_id)
    ]


def test_flow_runs_and_persists_every_iteration(prefect_harness, default_black_box_url, tmp_path: Path) -> None:
    from instructzero.flows.instruction_search import instructzero_flow
    from instructzero.tasks.data.builtin_tasks import HUMAN_INSTRUCTIONS

    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    human = HUMAN_INSTRUCTIONS["sentiment"][0]
    config = build_config(
        **SMALL,
        name="e2e",
        store_url=store_url,
        report=dict(baselines=[human], n_bootstrap=500),
        black_box=dict(base_url=default_black_box_url),  # the default model name, chat API and derived answer cap
    )
    summary = instructzero_flow(config)

    store = RunStore(store_url)
    run = store.get_run(summary.run_id)
    assert run.status == "completed"
    assert run.config["bo"]["kernel"] == "coupled"
    assert run.versions["torch"].startswith("2.13")
    candidates = store.load_candidates(run.id)
    assert [(c.iteration, c.index) for c in candidates] == [(0, 0), (0, 1), (1, 0), (2, 0)]
    assert all(c.dev_score is not None and len(c.dev_example_scores) == 3 for c in candidates)
    assert [c.phase for c in candidates] == ["init", "init", "bo", "bo"]
    best = max(candidates, key=lambda c: (c.dev_score, -c.iteration, -c.index))
    assert summary.best_instruction == best.instruction
    assert summary.dev_score == pytest.approx(best.dev_score)
    assert 0.0 <= summary.test_score <= 1.0
    assert any(c.test_score is not None for c in candidates)
    assert store.completed_iterations(run.id) == [0, 1, 2]
    unique = {m.step: m.value for m in store.load_metrics(run.id, "bo.unique_instructions")}
    assert sorted(unique) == [0, 1, 2] and all(0 <= v <= (2 if step == 0 else 1) for step, v in unique.items())
    texts = [c.instruction for c in candidates]
    assert sum(unique.values()) == len(set(texts))  # each iteration counts the instructions it added

    # The report: found instruction, empty instruction and the user's baseline, on the same 6 test examples, and the
    # reference line of the best single fixed answer (a balanced two-label task: at least half right)
    assert [r.label for r in summary.comparison] == ["found", "empty", "baseline-1", "constant"]
    assert [r.instruction for r in summary.comparison][:3] == [summary.best_instruction, "", human]
    constant = summary.comparison[-1]
    assert constant.instruction in ("<always 'positive'>", "<always 'negative'>") and constant.accuracy >= 0.5
    tests = {e.instruction: e for e in store.load_evaluations(run.id, "test")}
    assert set(tests) == {summary.best_instruction, "", human}
    test_ids = [e.example_id for e in tests[""].examples]
    assert all([x.example_id for x in e.examples] == test_ids for e in tests.values())  # the same examples, paired
    metrics = {m.key: m.value for m in store.load_metrics(run.id) if m.key.startswith("report.")}
    for row in summary.comparison[:3]:
        assert metrics[f"report.{row.label}.accuracy"] == pytest.approx(tests[row.instruction].mean_score)
    assert metrics["report.constant.accuracy"] == pytest.approx(constant.accuracy)
    assert metrics["report.baseline-1.gain"] == pytest.approx(
        tests[summary.best_instruction].mean_score - tests[human].mean_score
    )
    assert 0.0 < metrics["report.empty.p_value"] <= metrics["report.empty.p_holm"] <= 1.0
    assert tests[human].mean_score > tests[""].mean_score  # the default black box follows instructions

    # The worst-case estimate of this run (the served model's own tokenizer: its name is a packaged model's)
    # bounds what it spent; the real-run ratio is published in README ("Budgets").
    from instructzero.flows.spend import counter_for, estimate_for
    from instructzero.tasks.data.splits import make_splits
    from instructzero.tasks.data.task_data import load_task

    splits = make_splits(load_task("sentiment", None), n_exemplars=3, n_dev=3, n_test=6, seed=config.seed)
    assert counter_for(config).per_generated_token == 2  # the tokenizer's count, not the byte bound's 8 per token
    worst, spent = estimate_for(config, splits).total, summary.spent
    assert worst.calls >= spent.calls and worst.prompt_tokens >= spent.prompt_tokens > 0
    assert worst.completion_tokens >= spent.completion_tokens

    # Run again by name (a deployment re-run): read back from the store, nothing sent, rewritten or paid.
    rows = {t: store_rows(store_url, f"SELECT * FROM {t} ORDER BY id") for t in ("llm_calls", "evaluations")}
    again = instructzero_flow(config)
    assert (again.run_id, again.best_instruction, again.test_score) == (
        run.id,
        summary.best_instruction,
        summary.test_score,
    )
    assert again.paid_calls == 0 and "already complete" in again.test_note
    assert {t: store_rows(store_url, f"SELECT * FROM {t} ORDER BY id") for t in rows} == rows
    assert store.get_run(run.id).finished_at == run.finished_at
