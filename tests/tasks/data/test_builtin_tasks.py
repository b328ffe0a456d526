"""Built-in tasks: deterministic, instruction-induction formats, enough distinct examples."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from instructzero.tasks.data.builtin_tasks import BUILTIN_TASK_NAMES, WORDS, generate_builtin, number_to_words

REQUIRED = {"sum", "diff", "first_word_letter", "letters_list", "num_to_verbal", "word_sorting"}


def test_required_tasks_exist() -> None:
    assert REQUIRED <= set(BUILTIN_TASK_NAMES)


@pytest.mark.parametrize("name", BUILTIN_TASK_NAMES)
def test_generation_is_deterministic_and_distinct(name: str) -> None:
    pairs = generate_builtin(name)
    assert pairs == generate_builtin(name)
    assert 200 <= len(pairs) <= 1000
    assert len({x for x, _ in pairs}) == len(pairs)


def test_word_list_is_unique_and_alphabetic() -> None:
    assert len(set(WORDS)) == len(WORDS)
    assert all(w.isalpha() and w.islower() for w in WORDS)


def test_first_examples_are_pinned() -> None:
    # Pinned so that a change in generation (and so in every content hash) is a conscious one.
    assert generate_builtin("sum")[0] == ("54 78", "132")
    assert generate_builtin("diff")[0] == ("92 38", "54")


@pytest.mark.parametrize(
    ("name", "check"),
    [
        ("sum", lambda x, y: int(x.split()[0]) + int(x.split()[1]) == int(y)),
        ("diff", lambda x, y: int(x.split()[0]) - int(x.split()[1]) == int(y) >= 0),
        ("first_word_letter", lambda x, y: y == x[0]),
        ("second_word_letter", lambda x, y: y == x[1]),
        ("letters_list", lambda x, y: y == " ".join(x)),
        ("word_sorting", lambda x, y: y.split() == sorted(x.split())),
        ("num_to_verbal", lambda x, y: y == number_to_words(int(x))),
    ],
)
def test_answers_are_correct(name: str, check: Callable[[str, str], bool]) -> None:
    assert all(check(x, y) for x, y in generate_builtin(name))


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zero"),
        (14, "fourteen"),
        (21, "twenty-one"),
        (90, "ninety"),
        (152, "one hundred and fifty-two"),
        (300, "three hundred"),
        (1012, "one thousand and twelve"),
        (2150, "two thousand, one hundred and fifty"),
        (9900, "nine thousand, nine hundred"),
    ],
)
def test_number_to_words_matches_instruction_induction(n: int, words: str) -> None:
    assert number_to_words(n) == words


def test_number_to_words_range() -> None:
    with pytest.raises(ValueError, match="10000"):
        number_to_words(10000)


def test_unknown_builtin_raises_key_error() -> None:
    with pytest.raises(KeyError):
        generate_builtin("nope")
