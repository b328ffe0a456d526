"""Task loaders: II layout, BIG-bench, user files, built-ins, name resolution and error messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instructzero.storage.records import Example
from instructzero.tasks.data.task_data import list_tasks, load_task
from instructzero.tasks.errors import TaskDataError

II_TASKS = [
    "active_to_passive", "antonyms", "cause_and_effect", "common_concept", "diff", "first_word_letter",
    "informal_to_formal", "larger_animal", "letters_list", "negation", "num_to_verbal", "orthography_starts_with",
    "rhymes", "second_word_letter", "sentence_similarity", "sentiment", "singular_to_plural", "sum", "synonyms",
    "taxonomy_animal", "translation_en-de", "translation_en-es", "translation_en-fr", "word_in_context",
]  # fmt: skip


# ------------------------------------------------------------------------------------- instruction-induction


def test_ii_layout_loads_induce_execute_and_annotations(fixture_data_dir: Path) -> None:
    task = load_task("ii:sum", fixture_data_dir)
    assert task.source == "instruction-induction"
    assert task.metric == "exact_match"
    assert task.examples[0] == Example("induce-1", "1 2", ("3",))
    assert [e.id for e in task.test_pool] == ["execute-1", "execute-2", "execute-3"]
    assert task.human_instructions == ("Add the two numbers.", "Write their sum.")


def test_data_dir_may_be_one_collection(fixture_data_dir: Path) -> None:
    whole = load_task("sum", fixture_data_dir)
    one = load_task("sum", fixture_data_dir / "instruction-induction")
    assert one == whole


def test_cause_and_effect_is_seeded_and_answers_the_cause(fixture_data_dir: Path) -> None:
    task = load_task("cause_and_effect", fixture_data_dir)
    assert task == load_task("cause_and_effect", fixture_data_dir)
    for example in task.examples:
        cause = example.answers[0]
        assert example.input.startswith("Sentence 1: ") and " Sentence 2: " in example.input
        assert cause in example.input and len(example.answers) == 1
    firsts = {e.input.startswith(f"Sentence 1: {e.answers[0]}") for e in task.examples}
    assert firsts == {True, False}, "the cause should come first in some examples and second in others"


def test_common_concept_joins_items_and_accepts_all_concepts(fixture_data_dir: Path) -> None:
    task = load_task("common_concept", fixture_data_dir)
    assert task.examples[0] == Example("induce-1", "guitars, pendulums", ("involve oscillations.", "vibrate."))
    assert task.metric == "f1"


@pytest.mark.parametrize(
    ("name", "answers"),
    [
        ("rhymes", ("big", "dig")),
        ("translation_en-de", ("Zeit", "Zeiten")),
        ("word_in_context", ("not the same",)),
    ],
)
def test_extra_answer_fields_follow_the_canonical_output(fixture_data_dir: Path, name: str, answers: tuple) -> None:
    assert load_task(name, fixture_data_dir).examples[0].answers == answers


def test_word_in_context_follows_the_reference_metric(fixture_data_dir: Path) -> None:
    """The reference accepts only `output`: "no" for "not the same" scores 0, the exact phrase scores 1."""
    from instructzero.tasks.evaluation.metrics import score_prediction

    task = load_task("word_in_context", fixture_data_dir)
    answers = task.examples[0].answers
    assert score_prediction("no", answers, task.metric) == 0.0
    assert score_prediction("false", answers, task.metric) == 0.0
    assert score_prediction("Not the same.", answers, task.metric) == 1.0


# ---------------------------------------------------------------------------------------------------- BIG-bench


def test_bigbench_target_string_and_list(fixture_data_dir: Path) -> None:
    task = load_task("bigbench:sum", fixture_data_dir)
    assert task.source == "bigbench" and task.test_pool == ()
    assert [e.answers for e in task.examples] == [("2",), ("3", "three"), ("4",)]
    assert task.examples[0].id == "bb-0"


def test_bigbench_target_scores_best_options_and_appended_choices(fixture_data_dir: Path) -> None:
    task = load_task("choose", fixture_data_dir)
    assert task.metric == "exact_match"
    assert task.examples[0].answers == ("yes",)
    assert task.examples[0].input == "Is fire hot?\n  choice: yes\n  choice: no"
    assert task.examples[1].answers == ("red", "blue")


def test_bigbench_choices_not_appended_when_task_says_so(fixture_data_dir: Path) -> None:
    task = load_task("plain_choice", fixture_data_dir)
    assert task.examples[0] == Example("bb-0", "Is ice cold?", ("True",))


# ---------------------------------------------------------------------------------------------------- user files


@pytest.mark.parametrize("filename", ["tiny.jsonl", "tiny.csv"])
def test_user_file_loads_string_and_list_outputs(fixture_data_dir: Path, filename: str) -> None:
    task = load_task(str(fixture_data_dir / filename), None)
    assert task.name == "tiny" and task.source == "file" and task.test_pool == ()
    assert [e.answers for e in task.examples] == [("A",), ("B", "bee"), ("C",)]
    assert task.examples[0].input == "a"


def test_jsonl_ids_are_line_numbers(fixture_data_dir: Path) -> None:
    task = load_task(str(fixture_data_dir / "tiny.jsonl"), None)
    assert [e.id for e in task.examples] == ["row-1", "row-3", "row-4"]


def test_user_file_relative_to_data_dir(fixture_data_dir: Path) -> None:
    assert load_task("tiny.csv", fixture_data_dir).examples[2].input == "c, with comma"


def test_missing_user_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(TaskDataError, match="nope.jsonl"):
        load_task(str(tmp_path / "nope.jsonl"), None)


# ------------------------------------------------------------------------------------------ names and built-ins


def test_bare_name_prefers_ii_then_bigbench_then_builtin(fixture_data_dir: Path) -> None:
    assert load_task("sum", fixture_data_dir).source == "instruction-induction"
    assert load_task("bigbench:sum", fixture_data_dir).source == "bigbench"
    assert load_task("builtin:sum", fixture_data_dir).source == "builtin"
    assert load_task("diff", fixture_data_dir).source == "builtin"
    assert load_task("choose", fixture_data_dir).source == "bigbench"


def test_builtin_without_data_dir_is_stable() -> None:
    task = load_task("letters_list", None)
    assert task.source == "builtin" and len(task.examples) >= 200
    assert task.examples[0].id == "gen-0"
    assert task.examples[0].answers == (" ".join(task.examples[0].input),)
    assert task.content_hash == load_task("builtin:letters_list", None).content_hash


def test_content_hash_tracks_content(fixture_data_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"input": "a", "output": "A"}\n')
    first = load_task(str(path), None).content_hash
    assert load_task(str(path), None).content_hash == first
    path.write_text('{"input": "a", "output": "B"}\n')
    assert load_task(str(path), None).content_hash != first
    assert len(first) == 64


def test_list_tasks_covers_every_source(fixture_data_dir: Path) -> None:
    infos = list_tasks(fixture_data_dir)
    by_key = {(i.source, i.name): i for i in infos}
    assert by_key[("instruction-induction", "sum")].n_examples == 9
    assert by_key[("bigbench", "choose")].n_examples == 2
    assert ("builtin", "word_sorting") in by_key
    assert by_key[("instruction-induction", "common_concept")].metric == "f1"


def test_list_tasks_without_data_dir_is_builtin_only() -> None:
    assert {i.source for i in list_tasks(None)} == {"builtin"}


# -------------------------------------------------------------------------------------------------------- errors


def test_unknown_task_suggests_close_names(fixture_data_dir: Path) -> None:
    with pytest.raises(TaskDataError, match=r"unknown task 'comon_concept'.*did you mean: common_concept"):
        load_task("comon_concept", fixture_data_dir)


def test_prefix_restricts_the_search(fixture_data_dir: Path) -> None:
    with pytest.raises(TaskDataError, match="unknown task 'bigbench:rhymes'"):
        load_task("bigbench:rhymes", fixture_data_dir)


def test_ii_name_without_data_dir_explains(fixture_data_dir: Path) -> None:
    with pytest.raises(TaskDataError, match="no data dir given"):
        load_task("ii:sum", None)


def test_missing_data_dir_is_named(tmp_path: Path) -> None:
    with pytest.raises(TaskDataError, match=f"data dir {tmp_path / 'absent'} does not exist"):
        load_task("sum", tmp_path / "absent")


def test_data_dir_that_is_a_file(fixture_data_dir: Path) -> None:
    with pytest.raises(TaskDataError, match="is not a directory"):
        load_task("sum", fixture_data_dir / "tiny.csv")


def test_malformed_json_names_path_line_and_column(malformed_data_dir: Path) -> None:
    path = malformed_data_dir / "broken_json" / "raw" / "induce" / "broken.json"
    with pytest.raises(TaskDataError, match=rf"{path} at line 3, column \d+"):
        load_task("broken", malformed_data_dir / "broken_json")


def test_missing_field_names_file_and_example(malformed_data_dir: Path) -> None:
    with pytest.raises(TaskDataError, match=r"nofield\.json: example '2' lacks field 'output'"):
        load_task("nofield", malformed_data_dir / "missing_field")


def test_empty_task_is_rejected(malformed_data_dir: Path) -> None:
    with pytest.raises(TaskDataError, match="task 'empty' .* has no examples"):
        load_task("empty", malformed_data_dir / "empty")


def test_bigbench_without_target_names_example(malformed_data_dir: Path) -> None:
    with pytest.raises(TaskDataError, match=r"task\.json: example 0 lacks field 'target_scores'"):
        load_task("nosc", malformed_data_dir / "bb_missing")


def test_broken_jsonl_names_line(malformed_data_dir: Path) -> None:
    with pytest.raises(TaskDataError, match=r"broken\.jsonl at line 2, column \d+"):
        load_task(str(malformed_data_dir / "broken.jsonl"), None)


def test_jsonl_missing_output_names_line(malformed_data_dir: Path) -> None:
    with pytest.raises(TaskDataError, match=r"missing_output\.jsonl line 2 lacks field 'output'"):
        load_task(str(malformed_data_dir / "missing_output.jsonl"), None)


def test_csv_missing_column_names_columns(malformed_data_dir: Path) -> None:
    with pytest.raises(TaskDataError, match=r"missing_column\.csv: missing column\(s\) input, output"):
        load_task(str(malformed_data_dir / "missing_column.csv"), None)


def test_wrong_types_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "typed.jsonl"
    path.write_text(json.dumps({"input": "a", "output": {"not": "text"}}) + "\n")
    with pytest.raises(TaskDataError, match="line 1 field 'output' must be a string, got dict"):
        load_task(str(path), None)


# ---------------------------------------------------------------------------------------------- the shared data


@pytest.mark.parametrize("name", II_TASKS)
def test_every_ii_task_loads(shared_data_dir: Path, name: str) -> None:
    task = load_task(f"ii:{name}", shared_data_dir)
    assert task.examples and task.test_pool
    assert all(e.input.strip() and e.answers and all(isinstance(a, str) for a in e.answers) for e in task.examples)
    assert task.human_instructions


def test_every_bigbench_task_loads(shared_data_dir: Path) -> None:
    infos = [i for i in list_tasks(shared_data_dir) if i.source == "bigbench"]
    assert len(infos) >= 20
    for info in infos:
        task = load_task(f"bigbench:{info.name}", shared_data_dir)
        assert task.examples and all(e.answers for e in task.examples), info.name


def test_shared_collections_are_found_from_the_root(shared_data_dir: Path) -> None:
    ii = {i.name for i in list_tasks(shared_data_dir) if i.source == "instruction-induction"}
    assert set(II_TASKS) <= ii
