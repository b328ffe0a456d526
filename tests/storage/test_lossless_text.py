"""Text a black box may answer and PostgreSQL cannot hold (NUL) or no UTF-8 store can hold (a lone surrogate) is
stored losslessly on both backends; input text that no request could carry is refused in one line."""

from __future__ import annotations

import json
import random

import pytest
from sqlalchemy import create_engine, text

from instructzero.flows.params import build_config
from instructzero.storage.lossless_text import ESCAPE, escape_text, unescape_text
from instructzero.storage.records import BlackBoxCall
from instructzero.storage.repository import RunStore
from instructzero.storage.session import normalize_url
from instructzero.tasks.data.task_data import load_task
from instructzero.tasks.errors import ConfigError, TaskDataError
from tests.plugins.store import make_evaluation

HOSTILE = ("a\x00b", "\ud800 lone", "end \udfff", f"{ESCAPE}0 looks escaped", "\x00" * 3, "plain é 😀")


def test_escaping_hand_cases_and_round_trip() -> None:
    assert escape_text("plain é 😀") == "plain é 😀"  # ordinary text is stored as it is
    assert escape_text("a\x00b") == f"a{ESCAPE}0b"
    assert escape_text("\ud800") == f"{ESCAPE}sd800"
    assert escape_text(f"{ESCAPE}0") == f"{ESCAPE}e0"  # the escape character itself, so decoding is exact
    alphabet = ["a", "0", "e", "s", "d800", "\x00", "\ud800", "\udfff", ESCAPE]
    rng = random.Random(0)
    for _ in range(2000):
        original = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        stored = escape_text(original)
        stored.encode("utf-8")  # always encodable, never NUL
        assert "\x00" not in stored and unescape_text(stored) == original


def _raw(url: str, sql: str) -> list[tuple]:
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


def test_hostile_answers_reach_the_ledger_and_come_back_unchanged(store_url: str) -> None:
    """PostgreSQL refused a NUL in llm_calls (a paid answer missing from the ledger) and a lone surrogate raised
    UnicodeEncodeError on both backends."""
    store = RunStore(store_url)
    for i, answer in enumerate(HOSTILE):
        store.put_llm_call(
            BlackBoxCall(
                request_hash=f"{i:064x}",
                model="m",
                prompt=f"prompt {answer}",
                text=answer,
                prompt_tokens=3,
                completion_tokens=1,
                latency_s=0.1,
                retries=0,
                run_id="r",
            )
        )
    assert [store.get_llm_call(f"{i:064x}").text for i in range(len(HOSTILE))] == list(HOSTILE)
    assert [store.get_llm_call(f"{i:064x}").prompt for i in range(len(HOSTILE))] == [f"prompt {a}" for a in HOSTILE]
    assert store.llm_spend("r")[0] == len(HOSTILE)
    raw = dict(_raw(store_url, f"SELECT response_text, prompt FROM llm_calls WHERE request_hash = '{0:064x}'"))
    assert raw == {f"a{ESCAPE}0b": f"prompt a{ESCAPE}0b"}  # what SQL analysis sees: escaped, not truncated

    run = store.create_run(
        name="r",
        task="sum",
        config={},
        seed=0,
        versions={},
        projection_hash=None,
        splits={"dev": [], "test": ["t0", "t1"]},
    )
    store.record_test_evaluation(
        run.id,
        make_evaluation({"t0": 1.0, "t1": 0.0}, instruction="Sum\x00them.", split="test", prefix="\ud800\x00"),
    )
    [evaluation] = store.load_evaluations(run.id, "test")
    assert evaluation.instruction == "Sum\x00them."
    assert [x.prediction for x in evaluation.examples] == ["\ud800\x00-t0", "\ud800\x00-t1"]


def test_a_lone_surrogate_in_a_task_file_is_one_line_naming_the_place(tmp_path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"input": "ok", "output": "fine"}) + "\n" + '{"input": "bad \\ud800", "output": "x"}\n')
    with pytest.raises(TaskDataError, match="lone surrogate U\\+D800") as info:
        load_task(str(path), None)
    assert "\n" not in str(info.value) and "line 2" in str(info.value)


def test_a_lone_surrogate_in_a_setting_is_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"report\.baselines\[1\].*lone surrogate U\+D800"):
        build_config(report=dict(baselines=["Add them.", "x\ud800"]))
