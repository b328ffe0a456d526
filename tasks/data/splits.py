"""Seeded exemplar / dev / test splits of a task, with no input shared between them.

Exemplars are the demonstrations the instruction generator sees, dev scores candidate instructions during the
search, and test scores the final instruction once. Leakage between them would inflate the reported score, so
inputs are deduplicated (after trimming, collapsing whitespace and casefolding) before anything is drawn.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from instructzero.storage.records import Example
from instructzero.tasks.data.task_data import TaskData
from instructzero.tasks.errors import SplitError


@dataclass(frozen=True)
class Splits:
    """The three disjoint splits and the seed that drew them."""

    exemplars: tuple[Example, ...]
    dev: tuple[Example, ...]
    test: tuple[Example, ...]
    seed: int
    # one line when a split got fewer examples than requested (the task is too small), else "": shown to the user
    shortfall: str = field(default="", compare=False)

    def answers(self) -> list[tuple[str, ...]]:
        """The accepted answers of every example of the run, each split's: what the black box's answer cap is
        derived from (one rule for the flow, the baselines and the benchmarks, so their requests - and cache keys -
        are the same)."""
        return [e.answers for e in (*self.exemplars, *self.dev, *self.test)]

    def manifest(self) -> dict[str, list[str]]:
        """Split name -> example ids, stored with the run so it can be reproduced and audited."""
        return {
            "exemplars": [e.id for e in self.exemplars],
            "dev": [e.id for e in self.dev],
            "test": [e.id for e in self.test],
        }


def normalize_input(text: str) -> str:
    """The key two inputs must differ in to count as distinct examples."""
    return " ".join(text.split()).casefold()


def _dedupe(examples: Iterable[Example], exclude: Iterable[str] = ()) -> list[Example]:
    """Keep the first example of each normalised input, skipping inputs in `exclude`."""
    seen = set(exclude)
    kept = []
    for example in examples:
        key = normalize_input(example.input)
        if key not in seen:
            seen.add(key)
            kept.append(example)
    return kept


def make_splits(task: TaskData, *, n_exemplars: int, n_dev: int, n_test: int, seed: int) -> Splits:
    """Draw disjoint exemplar, dev and test splits from `task`, identically for the same seed.

    Exemplars and dev come from `task.examples`. Test comes from `task.test_pool` when it is non-empty (minus any
    input already used for exemplars or dev), else it is carved from what `task.examples` has left.

    Fallback for small tasks (so dev is never empty): exemplars keep their requested count as long as at least
    one example is left for dev (and, when test is carved from the same pool, one for test); otherwise they
    shrink, down to 1. Dev then takes up to `n_dev` of what remains, and a carved test takes up to `n_test` of the
    rest. A split is never padded with repeats.

    Raises SplitError naming the task and the counts when a count is below 1, when the pool has fewer than 2
    distinct inputs (3 when test is carved), or when no test example is left.
    """
    for label, value in (("n_exemplars", n_exemplars), ("n_dev", n_dev), ("n_test", n_test)):
        if value < 1:
            raise SplitError(f"task {task.name!r}: {label} must be at least 1, got {value}")
    rng = random.Random(seed)
    pool = _dedupe(task.examples)
    rng.shuffle(pool)
    carve_test = not task.test_pool
    needed = 3 if carve_test else 2
    if len(pool) < needed:
        where = "exemplars, dev and a carved test" if carve_test else "exemplars and dev"
        raise SplitError(
            f"task {task.name!r}: only {len(pool)} distinct input(s) among {len(task.examples)} examples; "
            f"need at least {needed} for {where} (requested {n_exemplars}/{n_dev}/{n_test})"
        )
    reserve = 2 if carve_test else 1  # dev (+ test) must keep at least one example each
    k_exemplars = min(n_exemplars, len(pool) - reserve)
    k_dev = min(n_dev, len(pool) - k_exemplars - (1 if carve_test else 0))
    exemplars = pool[:k_exemplars]
    dev = pool[k_exemplars : k_exemplars + k_dev]
    if carve_test:
        test = pool[k_exemplars + k_dev : k_exemplars + k_dev + n_test]
    else:
        used = {normalize_input(e.input) for e in exemplars + dev}
        candidates = _dedupe(task.test_pool, exclude=used)
        rng.shuffle(candidates)
        test = candidates[:n_test]
        if not test:
            raise SplitError(
                f"task {task.name!r}: none of the {len(task.test_pool)} test-pool examples is left once the "
                f"{len(exemplars)} exemplar and {len(dev)} dev inputs are excluded"
            )
    note = _shortfall(
        task,
        len(pool),
        (("exemplars", len(exemplars), n_exemplars), ("dev", len(dev), n_dev), ("test", len(test), n_test)),
        carve_test,
    )
    return Splits(tuple(exemplars), tuple(dev), tuple(test), seed, note)


def _shortfall(task: TaskData, n_distinct: int, sizes: Iterable[tuple[str, int, int]], carved: bool) -> str:
    """'task 'x' has 40 distinct inputs: test gets 25 of the 30 requested (...)', or "" when every split is full.

    Said instead of shrinking silently: a 25-example test report is less certain than the 30 asked for."""
    short = [f"{label} gets {got} of the {asked} requested" for label, got, asked in sizes if got < asked]
    if not short:
        return ""
    where = (
        f"{n_distinct} distinct inputs"
        if carved
        else f"{n_distinct} distinct inputs for exemplars and dev and {len(task.test_pool)} in its test pool"
    )
    return (
        f"task {task.name!r} has {where}: {', '.join(short)} (exemplars, then dev, then test are drawn, "
        "never sharing an input)"
    )
