"""Task data: find a task by name under a data directory (or in code) and load it as plain examples.

Four sources share one shape, `TaskData`:
- instruction-induction (Honovich et al. 2022): `<collection>/raw/induce/<task>.json` (exemplar + dev pool),
  `<collection>/raw/execute/<task>.json` (test pool), optional `<collection>/annotations/<task>.json` (human
  instructions). Field quirks are handled by the keys an example has, following InstructZero/APE:
  {cause, effect} -> input "Sentence 1: .. Sentence 2: .." in a seeded order, answer the cause;
  {items, all_common_concepts} -> input the items joined by ", ", answers the concepts;
  other_rhymes / possible_translations -> extra accepted answers after `output` (word_in_context's
  possible_outputs are not accepted, as in the reference).
- BIG-bench: `<task>/task.json` with `target` (str or list) or `target_scores` (answers: the best options;
  the choices are appended to the input with the task's `choice_prefix` unless `append_choices_to_input` is false,
  as BIG-bench does). Scored by exact match: the tasks' metrics are multiple_choice_grade and exact_str_match.
- a user's file: `.jsonl` (objects with input and output) or `.csv` (columns input, output); output may be a
  string or a list of strings (in CSV a JSON list).
- built-in tasks generated in `instructzero.tasks.data.builtin_tasks`, available with no data directory.

A data directory may be the shared data root or one collection: formats are discovered below it.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import json
import os
import random
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from instructzero.storage.lossless_text import unencodable
from instructzero.storage.records import Example
from instructzero.tasks.data.builtin_tasks import BUILTIN_TASK_NAMES, HUMAN_INSTRUCTIONS, generate_builtin
from instructzero.tasks.errors import TaskDataError
from instructzero.tasks.evaluation.metrics import MetricName, metric_for_task

__all__ = ["MetricName", "TaskData", "TaskInfo", "TaskSource", "list_tasks", "load_task"]

TaskSource = Literal["instruction-induction", "bigbench", "file", "builtin"]

# Name prefixes; a prefix picks the source, a bare name tries them in this order.
PREFIXES: dict[str, TaskSource] = {"ii": "instruction-induction", "bigbench": "bigbench", "builtin": "builtin"}
FILE_SUFFIXES = (".jsonl", ".csv")
_MAX_DISCOVERY_DEPTH = 6  # the shared root has bigbench tasks 4 levels down
_BIGBENCH_CHOICE_PREFIX = "\n  choice: "  # BIG-bench's default choice_prefix
_EXTRA_ANSWER_KEYS = ("other_rhymes", "possible_translations")
"""Extra accepted answers, as the instruction-induction reference loader reads them (rhymes and translations).
word_in_context's `possible_outputs` (["not the same", "no", "false"]) are *not* accepted: the reference scores
only `output`, so "no" for "not the same" is wrong there, and here."""


@dataclass(frozen=True)
class TaskData:
    """A loaded task: the exemplar/dev pool, the held-out test pool, and what is needed to reproduce it."""

    name: str
    source: TaskSource
    metric: MetricName
    examples: tuple[Example, ...]
    test_pool: tuple[Example, ...]
    content_hash: str
    human_instructions: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskInfo:
    """A task as listed for the user (n_examples counts the pool and the test pool)."""

    name: str
    source: str
    n_examples: int
    metric: MetricName


@dataclass(frozen=True)
class _Catalog:
    """What lies below a data directory: task name -> II collection root, and task name -> task.json."""

    ii: dict[str, Path] = field(default_factory=dict)
    bigbench: dict[str, Path] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------- public API


def load_task(name: str, data_dir: Path | None) -> TaskData:
    """Load a task by name ("sum", "ii:sum", "bigbench:navigate", "builtin:sum") or by .jsonl/.csv path.

    A prefix picks the source; a bare name prefers instruction-induction, then BIG-bench, then built-in.
    Raises TaskDataError for a missing data dir, an unknown task (with close names), or a bad file.
    """
    catalog = _discover(data_dir) if data_dir is not None else _Catalog()
    file_path = _as_file_path(name, data_dir)
    if file_path is not None:
        return _load_file(file_path)
    source, bare = _split_prefix(name)
    if source in (None, "instruction-induction") and bare in catalog.ii:
        return _load_ii(catalog.ii[bare], bare)
    if source in (None, "bigbench") and bare in catalog.bigbench:
        return _load_bigbench(catalog.bigbench[bare], bare)
    if source in (None, "builtin") and bare in BUILTIN_TASK_NAMES:
        return _load_builtin(bare)
    raise _unknown_task(name, source, bare, catalog, data_dir)


def list_tasks(data_dir: Path | None) -> list[TaskInfo]:
    """Every task loadable from `data_dir` (II, then BIG-bench, then built-in), each loaded to count examples."""
    catalog = _discover(data_dir) if data_dir is not None else _Catalog()
    tasks = [_load_ii(root, name) for name, root in sorted(catalog.ii.items())]
    tasks += [_load_bigbench(path, name) for name, path in sorted(catalog.bigbench.items())]
    tasks += [_load_builtin(name) for name in BUILTIN_TASK_NAMES]
    return [TaskInfo(t.name, t.source, len(t.examples) + len(t.test_pool), t.metric) for t in tasks]


# ---------------------------------------------------------------------------------------------- name resolution


def _split_prefix(name: str) -> tuple[TaskSource | None, str]:
    prefix, sep, rest = name.partition(":")
    if sep and prefix in PREFIXES:
        return PREFIXES[prefix], rest
    return None, name


def _as_file_path(name: str, data_dir: Path | None) -> Path | None:
    """The user's file `name` points at, or None when `name` is a task name rather than a path."""
    looks_like_file = name.lower().endswith(FILE_SUFFIXES)
    candidates = [Path(name)] + ([data_dir / name] if data_dir is not None else [])
    for path in candidates:
        if path.is_file() and (looks_like_file or path.suffix.lower() in FILE_SUFFIXES):
            return path
    if looks_like_file:
        tried = " or ".join(str(p) for p in candidates)
        raise TaskDataError(f"task file {name!r} not found (tried {tried})")
    return None


def _discover(data_dir: Path) -> _Catalog:
    """Find II collections (a folder with raw/induce/*.json) and BIG-bench tasks (*/task.json) below `data_dir`."""
    root = Path(data_dir)
    if not root.exists():
        raise TaskDataError(f"data dir {root} does not exist")
    if not root.is_dir():
        raise TaskDataError(f"data dir {root} is not a directory")
    if not os.access(root, os.R_OK | os.X_OK):
        raise TaskDataError(f"data dir {root} is not readable")
    catalog = _Catalog()
    for current, dirs, files in os.walk(root):
        here = Path(current)
        depth = len(here.relative_to(root).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < _MAX_DISCOVERY_DEPTH else []
        induce = here / "raw" / "induce"
        if induce.is_dir():
            for task_file in sorted(induce.glob("*.json")):
                catalog.ii.setdefault(task_file.stem, here)
            dirs[:] = [d for d in dirs if d != "raw"]
        if "task.json" in files:
            catalog.bigbench.setdefault(here.name, here / "task.json")
    return catalog


def _unknown_task(
    name: str, source: TaskSource | None, bare: str, catalog: _Catalog, data_dir: Path | None
) -> TaskDataError:
    """The error for a name no source has, listing close names from the sources the prefix allows."""
    known: list[str] = []
    if source in (None, "instruction-induction"):
        known += list(catalog.ii)
    if source in (None, "bigbench"):
        known += list(catalog.bigbench)
    if source in (None, "builtin"):
        known += list(BUILTIN_TASK_NAMES)
    close = difflib.get_close_matches(bare, sorted(set(known)), n=5, cutoff=0.6)
    where = f"data dir {data_dir}" if data_dir is not None else "no data dir given, built-in tasks only"
    names = sorted(set(known))
    hint = f"; did you mean: {', '.join(close)}?" if close else f"; known tasks include: {', '.join(names[:8])}"
    return TaskDataError(f"unknown task {name!r} ({where}){hint}")


# -------------------------------------------------------------------------------------------------- file reading


def _read_json(path: Path) -> Any:
    """Parse a JSON file; a syntax error names the file, line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskDataError(f"cannot read {path}: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TaskDataError(f"malformed JSON in {path} at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    except RecursionError:
        raise TaskDataError(f"malformed JSON in {path}: nested too deeply") from None


def _text(value: Any, what: str) -> str:
    """A string field (numbers are accepted and written as text); refused when UTF-8 cannot encode it."""
    if isinstance(value, str):
        bad = unencodable(value)
        if bad is not None:  # JSON allows "\ud800"; no API request or UTF-8 store could carry it
            raise TaskDataError(f"{what} holds {bad}: not valid text, fix the task file")
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise TaskDataError(f"{what} must be a string, got {type(value).__name__} {value!r}")


def _texts(value: Any, what: str) -> tuple[str, ...]:
    """A non-empty string or list of strings, as a tuple."""
    if isinstance(value, list | tuple):
        if not value:
            raise TaskDataError(f"{what} is an empty list")
        return tuple(_text(v, what) for v in value)
    return (_text(value, what),)


def _field(raw: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in raw:
        raise TaskDataError(f"{where} lacks field {key!r} (has: {', '.join(map(str, raw)) or 'nothing'})")
    return raw[key]


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _content_hash(examples: tuple[Example, ...], test_pool: tuple[Example, ...]) -> str:
    """sha256 over a canonical JSON of both pools, so a run records exactly which data it saw."""
    payload = {
        "examples": [[e.id, e.input, list(e.answers)] for e in examples],
        "test_pool": [[e.id, e.input, list(e.answers)] for e in test_pool],
    }
    canonical = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _task_data(
    name: str,
    source: TaskSource,
    metric: MetricName,
    examples: list[Example],
    test_pool: list[Example],
    origin: Path | str,
    human_instructions: tuple[str, ...] = (),
) -> TaskData:
    if not examples:
        raise TaskDataError(f"task {name!r} in {origin} has no examples")
    ex, test = tuple(examples), tuple(test_pool)
    return TaskData(name, source, metric, ex, test, _content_hash(ex, test), human_instructions)


# ---------------------------------------------------------------------------------------- instruction-induction


def _load_ii(collection: Path, name: str) -> TaskData:
    induce = collection / "raw" / "induce" / f"{name}.json"
    execute = collection / "raw" / "execute" / f"{name}.json"
    annotations = collection / "annotations" / f"{name}.json"
    examples = _ii_examples(induce, name, "induce")
    test_pool = _ii_examples(execute, name, "execute") if execute.is_file() else []
    human = _ii_annotations(annotations) if annotations.is_file() else ()
    return _task_data(name, "instruction-induction", metric_for_task(name), examples, test_pool, induce, human)


def _ii_examples(path: Path, task: str, split: str) -> list[Example]:
    data = _read_json(path)
    if not isinstance(data, dict) or "examples" not in data:
        raise TaskDataError(f"{path}: expected an object with an 'examples' field")
    raw_examples = data["examples"]
    if isinstance(raw_examples, list):
        raw_examples = {str(i + 1): ex for i, ex in enumerate(raw_examples)}
    if not isinstance(raw_examples, dict):
        raise TaskDataError(f"{path}: 'examples' must be an object keyed by example number")
    return [_ii_example(raw, f"{split}-{key}", task, f"{path}: example {key!r}") for key, raw in raw_examples.items()]


def _ii_example(raw: Any, example_id: str, task: str, where: str) -> Example:
    """One II example; the fields it has decide how input and answers are built (see the module docstring)."""
    if not isinstance(raw, dict):
        raise TaskDataError(f"{where} must be an object, got {type(raw).__name__}")
    if "input" not in raw and "cause" in raw:
        cause = _text(_field(raw, "cause", where), f"{where} field 'cause'")
        effect = _text(_field(raw, "effect", where), f"{where} field 'effect'")
        # Seeded per example, so the order is random across examples yet identical on every load.
        rng = random.Random(zlib.crc32(f"{task}:{example_id}".encode()))
        first, second = (cause, effect) if rng.random() < 0.5 else (effect, cause)
        return Example(example_id, f"Sentence 1: {first} Sentence 2: {second}", (cause,))
    if "input" not in raw and "items" in raw:
        items = _texts(_field(raw, "items", where), f"{where} field 'items'")
        concepts = _texts(_field(raw, "all_common_concepts", where), f"{where} field 'all_common_concepts'")
        canonical = (_text(raw["concept"], f"{where} field 'concept'"),) if "concept" in raw else ()
        return Example(example_id, ", ".join(items), _unique(canonical + concepts))
    input_ = _text(_field(raw, "input", where), f"{where} field 'input'")
    answers = _texts(_field(raw, "output", where), f"{where} field 'output'")
    for key in _EXTRA_ANSWER_KEYS:
        if key in raw:
            answers += _texts(raw[key], f"{where} field {key!r}")
    return Example(example_id, input_, _unique(answers))


def _ii_annotations(path: Path) -> tuple[str, ...]:
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise TaskDataError(f"{path}: expected an object with an 'annotations' list")
    return tuple(_text(a, f"{path}: annotation {i}") for i, a in enumerate(data["annotations"]))


# --------------------------------------------------------------------------------------------------- BIG-bench


def _load_bigbench(path: Path, name: str) -> TaskData:
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("examples"), list):
        raise TaskDataError(f"{path}: expected an object with an 'examples' list")
    append_choices = bool(data.get("append_choices_to_input", True))
    choice_prefix = str(data.get("choice_prefix", _BIGBENCH_CHOICE_PREFIX))
    examples = [
        _bigbench_example(raw, i, f"{path}: example {i}", append_choices, choice_prefix)
        for i, raw in enumerate(data["examples"])
    ]
    return _task_data(name, "bigbench", "exact_match", examples, [], path)


def _bigbench_example(raw: Any, index: int, where: str, append_choices: bool, choice_prefix: str) -> Example:
    if not isinstance(raw, dict):
        raise TaskDataError(f"{where} must be an object, got {type(raw).__name__}")
    input_ = _text(_field(raw, "input", where), f"{where} field 'input'")
    if "target" in raw:
        return Example(f"bb-{index}", input_, _unique(_texts(raw["target"], f"{where} field 'target'")))
    scores = _field(raw, "target_scores", where)
    if not isinstance(scores, dict) or not scores:
        raise TaskDataError(f"{where} field 'target_scores' must be a non-empty object of option -> score")
    for option, score in scores.items():
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise TaskDataError(f"{where} target_scores[{option!r}] must be a number, got {score!r}")
    best = max(scores.values())
    answers = tuple(option for option, score in scores.items() if score == best)
    if append_choices:
        input_ += "".join(f"{choice_prefix}{option}" for option in scores)
    return Example(f"bb-{index}", input_, answers)


# --------------------------------------------------------------------------------------------------- user files


def _load_file(path: Path) -> TaskData:
    examples = _jsonl_examples(path) if path.suffix.lower() == ".jsonl" else _csv_examples(path)
    return _task_data(path.stem, "file", metric_for_task(path.stem), examples, [], path)


def _jsonl_examples(path: Path) -> list[Example]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskDataError(f"cannot read {path}: {exc}") from exc
    examples = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path} line {lineno}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaskDataError(f"malformed JSON in {path} at line {lineno}, column {exc.colno}: {exc.msg}") from exc
        except RecursionError:
            raise TaskDataError(f"malformed JSON in {path} at line {lineno}: nested too deeply") from None
        if not isinstance(raw, dict):
            raise TaskDataError(f"{where} must be a JSON object with input and output")
        input_ = _text(_field(raw, "input", where), f"{where} field 'input'")
        answers = _unique(_texts(_field(raw, "output", where), f"{where} field 'output'"))
        examples.append(Example(f"row-{lineno}", input_, answers))
    return examples


def _csv_examples(path: Path) -> list[Example]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in ("input", "output") if c not in (reader.fieldnames or [])]
            if missing:
                found = ", ".join(reader.fieldnames or []) or "no header"
                raise TaskDataError(f"{path}: missing column(s) {', '.join(missing)} (found: {found})")
            examples = []
            for row_number, row in enumerate(reader, start=1):
                where = f"{path} line {reader.line_num}"
                input_, output = row.get("input"), row.get("output")
                if input_ is None or output is None:
                    raise TaskDataError(f"{where} has too few columns for input and output")
                examples.append(Example(f"row-{row_number}", input_, _csv_answers(output, where)))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TaskDataError(f"cannot read {path}: {exc}") from exc
    return examples


def _csv_answers(cell: str, where: str) -> tuple[str, ...]:
    """A CSV output cell: a plain answer, or a JSON list of accepted answers."""
    if cell.lstrip().startswith("["):
        try:
            parsed = json.loads(cell)
        except json.JSONDecodeError:
            return (cell,)
        except RecursionError:
            raise TaskDataError(f"{where} column 'output': JSON nested too deeply") from None
        return _unique(_texts(parsed, f"{where} column 'output'"))
    return (cell,)


# ----------------------------------------------------------------------------------------------------- built-in


def _load_builtin(name: str) -> TaskData:
    examples = [Example(f"gen-{i}", x, (y,)) for i, (x, y) in enumerate(generate_builtin(name))]
    return _task_data(
        name,
        "builtin",
        metric_for_task(name),
        examples,
        [],
        f"tasks/data/builtin_tasks.py:{name}",
        human_instructions=HUMAN_INSTRUCTIONS.get(name, ()),
    )
