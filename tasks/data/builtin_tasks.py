"""Built-in tasks generated in code, so the pipeline runs (and its tests pass) with no data directory.

`sentiment` (short reviews labelled positive/negative) is the default task of `make run`: the default chat black
box answers it with a good instruction and not at all without one (benchmarks/README.md), so an instruction can
gain there. Each task mimics the format of its instruction-induction namesake ("12 7" -> "19", "cat" -> "c a t",
"152" -> "one hundred and fifty-two", ...). Generation is seeded with a fixed integer per task and uses only
`random.Random` methods whose output is stable across Python versions and machines, so every machine gets the
same examples and the same content hash.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable

N_EXAMPLES = 300

# Common English words (lowercase, letters only, unique) for the word tasks.
WORDS: tuple[str, ...] = tuple(
    """
    time year people way day man thing woman life child world school state family student group country problem
    hand part place case week company system program question work government number night point home water room
    mother area money story fact month lot right study book eye job word business issue side kind head house
    service friend father power hour game line end member law car city community name president team minute idea
    kid body information back parent face others level office door health person art war history party result
    change morning reason research girl guy moment air teacher force education foot boy age policy process music
    market sense nation plan college interest death experience effect class control care field development role
    effort rate heart drug show leader light voice wife police mind price report decision son view relationship
    town road arm difference value building action model season society tax director position player record paper
    space ground form event official matter center couple site project activity star table need court oil situation
    cost industry figure street image phone data picture practice piece land product doctor wall patient worker
    news test movie north love support technology step baby computer type attention film tree source organization
    hair window evidence population shirt truck dinner garden river island forest mountain valley ocean desert
    castle bridge tower church temple palace harbor village station airport library museum theater kitchen
    bedroom basket bottle candle carpet mirror pillow blanket button pencil rocket planet comet galaxy meadow
    orchard violin guitar piano trumpet drum flute anchor arrow banner barrel beacon bicycle blossom breeze
    cabinet camera canvas cherry clover cotton crystal dragon eagle falcon feather fiddle glacier goblet harvest
    helmet jacket jungle kettle ladder lantern lemon lizard magnet marble meteor napkin needle noodle oyster
    paddle parrot peanut pepper pirate pocket puzzle rabbit saddle salmon sandal shovel silver spider spoon
    squirrel statue summer sunset tablet tiger tomato tunnel turtle umbrella velvet wagon walnut whale whistle
    wizard yogurt zebra apple banana orange grape melon peach plum carrot onion potato cheese butter bread honey
    sugar coffee tea juice salad soup rice pasta cookie cake candy pizza
    """.split()
)

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_to_words(n: int) -> str:
    """Spell 0..9999 the instruction-induction way: 2150 -> 'two thousand, one hundred and fifty'."""
    if not 0 <= n <= 9999:
        raise ValueError(f"number_to_words covers 0..9999, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" and {number_to_words(rest)}" if rest else "")
    thousands, rest = divmod(n, 1000)
    head = f"{_ONES[thousands]} thousand"
    if rest == 0:
        return head
    if rest < 100:
        return f"{head} and {number_to_words(rest)}"
    return f"{head}, {number_to_words(rest)}"


def _distinct(rng: random.Random, draw: Callable[[random.Random], tuple[str, str]], n: int) -> list[tuple[str, str]]:
    """Draw until `n` examples with distinct inputs exist (keeps the first answer drawn for an input)."""
    seen: dict[str, str] = {}
    while len(seen) < n:
        x, y = draw(rng)
        seen.setdefault(x, y)
    return list(seen.items())


def _sum(rng: random.Random) -> tuple[str, str]:
    x, y = rng.randrange(100), rng.randrange(100)
    return f"{x} {y}", str(x + y)


def _diff(rng: random.Random) -> tuple[str, str]:
    x, y = rng.randrange(100), rng.randrange(100)
    x, y = max(x, y), min(x, y)
    return f"{x} {y}", str(x - y)


def _num_to_verbal(rng: random.Random) -> tuple[str, str]:
    n = rng.randrange(10000)
    return str(n), number_to_words(n)


def _word_sorting(rng: random.Random) -> tuple[str, str]:
    words = [WORDS[rng.randrange(len(WORDS))] for _ in range(2 + rng.randrange(4))]
    return " ".join(words), " ".join(sorted(words))


def _word_task(answer: Callable[[str], str]) -> Callable[[random.Random], list[tuple[str, str]]]:
    """A task over the word list: every word once, in a seeded order."""

    def make(rng: random.Random) -> list[tuple[str, str]]:
        order = list(range(len(WORDS)))
        rng.shuffle(order)
        return [(WORDS[i], answer(WORDS[i])) for i in order[:N_EXAMPLES]]

    return make


def _drawn(draw: Callable[[random.Random], tuple[str, str]]) -> Callable[[random.Random], list[tuple[str, str]]]:
    return lambda rng: _distinct(rng, draw, N_EXAMPLES)


# Short review sentences for `sentiment`: a subject, a verdict phrase of clear polarity, and a sentence frame.
_SUBJECTS = (
    "movie film book hotel restaurant concert service food album show game phone laptop camera trip museum "
    "teacher course app play novel song meal room coffee pizza car bike"
).split()
_POSITIVE = (
    "wonderful",
    "excellent",
    "delightful",
    "fantastic",
    "superb",
    "brilliant",
    "charming",
    "lovely",
    "amazing",
    "great",
    "a pleasure",
    "a joy from start to finish",
    "worth every penny",
    "truly inspiring",
    "beautifully done",
    "a real treat",
)
_NEGATIVE = (
    "terrible",
    "awful",
    "dreadful",
    "boring",
    "disappointing",
    "horrible",
    "dull",
    "painful",
    "a mess",
    "a waste of money",
    "a complete disaster",
    "poorly made",
    "unbearable",
    "frustrating",
    "a letdown",
    "far worse than expected",
)
_FRAMES = (
    "The {s} was {v}.",
    "Honestly, the {s} was {v}.",
    "I thought the {s} was {v}.",
    "Our {s} was {v}.",
    "That {s} is {v}.",
    "Overall the {s} was {v}.",
    "My friends agreed: the {s} was {v}.",
    "What can I say, this {s} is {v}.",
)


def _sentiment(rng: random.Random) -> tuple[str, str]:
    positive = rng.random() < 0.5
    verdict = (_POSITIVE if positive else _NEGATIVE)[rng.randrange(16)]
    frame = _FRAMES[rng.randrange(len(_FRAMES))]
    subject = _SUBJECTS[rng.randrange(len(_SUBJECTS))]
    return frame.format(s=subject, v=verdict), "positive" if positive else "negative"


_GENERATORS: dict[str, Callable[[random.Random], list[tuple[str, str]]]] = {
    "sentiment": _drawn(_sentiment),
    "sum": _drawn(_sum),
    "diff": _drawn(_diff),
    "num_to_verbal": _drawn(_num_to_verbal),
    "word_sorting": _drawn(_word_sorting),
    "first_word_letter": _word_task(lambda w: w[0]),
    "second_word_letter": _word_task(lambda w: w[1]),
    "letters_list": _word_task(lambda w: " ".join(w)),
}

BUILTIN_TASK_NAMES: tuple[str, ...] = tuple(sorted(_GENERATORS))

HUMAN_INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "sum": ("Add the two numbers.",),
    "diff": ("Subtract the second number from the first.",),
    "num_to_verbal": ("Write the number in English words.",),
    "word_sorting": ("Sort the words alphabetically.",),
    "first_word_letter": ("Write the first letter of the word.",),
    "second_word_letter": ("Write the second letter of the word.",),
    "letters_list": ("Spell the word letter by letter, separated by spaces.",),
    "sentiment": ("Classify the sentiment of the sentence as positive or negative.",),
}
"""A hand-written instruction per built-in task (the `manual` baseline, and the README's sensitivity check)."""


def generate_builtin(name: str) -> list[tuple[str, str]]:
    """The (input, output) pairs of built-in task `name`, identical on every call and machine.

    Raises KeyError for an unknown name; `instructzero.tasks.data.task_data.load_task` turns that into a TaskDataError
    with
    suggestions.
    """
    make = _GENERATORS[name]
    return make(random.Random(zlib.crc32(f"builtin:{name}".encode())))
