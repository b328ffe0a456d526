"""Splits: seeded, deduplicated, disjoint, dev never empty, clear errors for tiny tasks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from instructzero.storage.records import Example
from instructzero.tasks.data.splits import Splits, make_splits, normalize_input
from instructzero.tasks.data.task_data import TaskData, load_task
from instructzero.tasks.errors import SplitError

MakeTask = Callable[..., TaskData]


def _inputs(splits: Splits, name: str) -> set[str]:
    return {normalize_input(e.input) for e in getattr(splits, name)}


def _assert_disjoint(splits: Splits) -> None:
    ex, dev, test = _inputs(splits, "exemplars"), _inputs(splits, "dev"), _inputs(splits, "test")
    assert not ex & dev and not ex & test and not dev & test
    ids = [i for ids in splits.manifest().values() for i in ids]
    assert len(ids) == len(set(ids))


def test_same_seed_same_splits() -> None:
    task = load_task("builtin:sum", None)
    a = make_splits(task, n_exemplars=5, n_dev=20, n_test=50, seed=7)
    b = make_splits(task, n_exemplars=5, n_dev=20, n_test=50, seed=7)
    assert a == b and a.manifest() == b.manifest()
    assert (len(a.exemplars), len(a.dev), len(a.test), a.seed) == (5, 20, 50, 7)


def test_answers_cover_every_split_in_order() -> None:
    """The answer cap is derived from these: a test answer longer than every dev answer must be in them."""
    e = Example
    splits = Splits((e("x", "a", ("1",)),), (e("d", "b", ("22", "2")),), (e("t", "c", ("333",)),), seed=0)
    assert splits.answers() == [("1",), ("22", "2"), ("333",)]


def test_different_seeds_differ() -> None:
    task = load_task("builtin:sum", None)
    a = make_splits(task, n_exemplars=5, n_dev=20, n_test=50, seed=1)
    b = make_splits(task, n_exemplars=5, n_dev=20, n_test=50, seed=2)
    assert a.manifest() != b.manifest()


def test_carved_splits_are_disjoint() -> None:
    task = load_task("builtin:word_sorting", None)
    splits = make_splits(task, n_exemplars=5, n_dev=50, n_test=100, seed=0)
    _assert_disjoint(splits)
    assert splits.manifest().keys() == {"exemplars", "dev", "test"}


def test_test_comes_from_test_pool_without_exemplar_or_dev_inputs(make_task: MakeTask) -> None:
    pairs = [(f"q{i}", f"a{i}") for i in range(6)]
    test_pairs = [(f"Q{i}", "x") for i in range(6)] + [("fresh", "y")]  # Q0..Q5 equal q0..q5 after casefolding
    task = make_task(pairs, test_pairs=test_pairs)
    for seed in range(5):
        splits = make_splits(task, n_exemplars=2, n_dev=4, n_test=10, seed=seed)
        assert [e.id for e in splits.test] == ["execute-7"]
        assert all(e.id.startswith("induce-") for e in splits.exemplars + splits.dev)


def test_duplicate_inputs_are_used_once(make_task: MakeTask) -> None:
    pairs = [("a b", "1"), (" A  b ", "2"), ("c", "3"), ("d", "4"), ("C", "5")]
    task = make_task(pairs)
    splits = make_splits(task, n_exemplars=1, n_dev=10, n_test=10, seed=3)
    _assert_disjoint(splits)
    assert len(splits.exemplars) + len(splits.dev) + len(splits.test) == 3  # 3 distinct inputs


def test_tiny_pool_shrinks_exemplars_then_dev(make_task: MakeTask) -> None:
    task = make_task([("a", "1"), ("b", "2"), ("c", "3")], test_pairs=[("z", "9")])
    splits = make_splits(task, n_exemplars=5, n_dev=20, n_test=10, seed=0)
    assert (len(splits.exemplars), len(splits.dev), len(splits.test)) == (2, 1, 1)


def test_tiny_pool_without_test_pool_keeps_one_of_each(make_task: MakeTask) -> None:
    task = make_task([("a", "1"), ("b", "2"), ("c", "3")])
    splits = make_splits(task, n_exemplars=5, n_dev=20, n_test=10, seed=0)
    assert (len(splits.exemplars), len(splits.dev), len(splits.test)) == (1, 1, 1)
    _assert_disjoint(splits)


def test_exemplars_keep_their_count_when_possible(make_task: MakeTask) -> None:
    task = make_task([(str(i), str(i)) for i in range(12)], test_pairs=[("t", "t")])
    splits = make_splits(task, n_exemplars=5, n_dev=20, n_test=10, seed=0)
    assert (len(splits.exemplars), len(splits.dev)) == (5, 7)


def test_too_few_distinct_examples_names_task_and_counts(make_task: MakeTask) -> None:
    task = make_task([("a", "1"), (" A ", "1")], name="tinytask", test_pairs=[("z", "9")])
    with pytest.raises(SplitError, match=r"task 'tinytask': only 1 distinct input\(s\) among 2 examples"):
        make_splits(task, n_exemplars=1, n_dev=1, n_test=1, seed=0)


def test_carving_needs_three_distinct(make_task: MakeTask) -> None:
    with pytest.raises(SplitError, match="need at least 3"):
        make_splits(make_task([("a", "1"), ("b", "2")]), n_exemplars=1, n_dev=1, n_test=1, seed=0)


def test_empty_test_after_exclusion_raises(make_task: MakeTask) -> None:
    task = make_task([("a", "1"), ("b", "2")], name="leaky", test_pairs=[("a", "1"), ("B", "2")])
    with pytest.raises(SplitError, match="task 'leaky': none of the 2 test-pool examples"):
        make_splits(task, n_exemplars=1, n_dev=1, n_test=5, seed=0)


@pytest.mark.parametrize("field", ["n_exemplars", "n_dev", "n_test"])
def test_counts_below_one_rejected(make_task: MakeTask, field: str) -> None:
    counts = {"n_exemplars": 1, "n_dev": 1, "n_test": 1, field: 0}
    with pytest.raises(SplitError, match=f"{field} must be at least 1, got 0"):
        make_splits(make_task([("a", "1"), ("b", "2"), ("c", "3")]), seed=0, **counts)


def test_shared_ii_task_splits(shared_data_dir: Path) -> None:
    task = load_task("ii:informal_to_formal", shared_data_dir)  # 15 induce + 15 execute examples
    splits = make_splits(task, n_exemplars=5, n_dev=20, n_test=100, seed=0)
    assert len(splits.exemplars) == 5 and 1 <= len(splits.dev) <= 10 and splits.test
    assert all(e.id.startswith("execute-") for e in splits.test)
    _assert_disjoint(splits)
