"""The config table: the CLI flags and the flag -> field map are generated from the fields of
`RunConfig`'s sections (`Flag` markers, `description`s), the recorded config is unchanged by that, a new knob is
one field; and the two command lines no longer import each other."""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import Field

from instructzero.flows.cli import _nested_overrides, add_config_flags, build_parser, main
from instructzero.flows.params import RunConfig, build_config, config_options
from instructzero.tasks.config_flag import Flag
from instructzero.tasks.generation.settings import GeneratorSettings

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "recorded_config.json").read_text())


@pytest.fixture(autouse=True)
def _no_config_env(monkeypatch) -> None:
    """The golden configs are the defaults: no INSTRUCTZERO_* variable of the caller's may change them."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("INSTRUCTZERO_"):
            monkeypatch.delenv(name)


def _commands() -> dict[str, argparse.ArgumentParser]:
    return build_parser()._subparsers._group_actions[0].choices


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {a.option_strings[0] for a in parser._actions if a.option_strings and a.dest != "help"}


def test_the_recorded_config_is_what_it_was_before_the_flags_were_generated() -> None:
    """`recorded()` and `reproducibility_key()` of the default config and of one with every flag set, against
    the output of the hand-written parser and map (tests/fixtures/recorded_config.json)."""

    def as_then(recorded: dict) -> dict:
        """`recorded` without the settings added since (at their defaults: greedy generation, as then)."""
        generator = dict(recorded["generator"])
        assert (generator.pop("temperature"), generator.pop("top_p")) == (0.0, 1.0)
        return {**recorded, "generator": generator}

    default = build_config()
    assert as_then(default.recorded()) == GOLDEN["default"]["recorded"]
    assert as_then(default.reproducibility_key()) == GOLDEN["default"]["key"]
    parser = build_parser()
    config = build_config(**_nested_overrides(parser.parse_args(GOLDEN["argv"])))
    assert as_then(config.recorded()) == GOLDEN["flags"]["recorded"]
    assert as_then(config.reproducibility_key()) == GOLDEN["flags"]["key"]
    # flags the hand-written parser did not have (tested below)
    added_since = {"--strategy", "--generator-temperature", "--generator-top-p", "--timeout"}
    assert {o.flag.name for o in config_options()} - added_since <= set(GOLDEN["argv"])  # it sets every flag
    resume = ["resume", "r1", "--max-cost", "2", "--stop-at-limit", "--rpm", "5"]
    assert _nested_overrides(parser.parse_args(resume)) == GOLDEN["resume_overrides"]


def test_every_flagged_field_is_a_flag_and_an_override_and_every_flag_is_a_field() -> None:
    """run/estimate have exactly the table's flags, resume the budget section's plus its own --store; each flag
    lands on its own field and nowhere else."""
    commands = _commands()
    table = {o.flag.name for o in config_options()}
    # no two fields share a flag (45 hand-written + --strategy, --generator-temperature, --generator-top-p, --timeout)
    assert len(table) == len(config_options()) == 49
    assert _flags(commands["run"]) == _flags(commands["estimate"]) == table
    assert _flags(commands["resume"]) == {"--store"} | {o.flag.name for o in config_options(sections=("budget",))}
    parser = commands["run"]
    for option in config_options():
        action = next(a for a in parser._actions if option.flag.name in a.option_strings)
        value = [] if action.nargs == 0 else [action.choices[-1] if action.choices else "3"]
        args = parser.parse_args([option.flag.name, *value])
        parsed = [action.type(v) if action.type else v for v in value]
        expected: Any = (not option.flag.negates) if action.nargs == 0 else parsed[0]
        if isinstance(action, argparse._AppendAction):
            expected = parsed
        nested = _nested_overrides(args)
        for key in option.path[:-1]:
            assert list(nested) == [key], option.flag.name
            nested = nested[key]
        assert nested == {option.path[-1]: expected}, option.flag.name
        assert option.env in action.help and (option.field.description or ".".join(option.path)) in action.help


def test_flags_keep_their_argparse_forms() -> None:
    """Generated, the flags parse as the hand-written ones did: the same switches, repeatables, choices, types."""
    actions = {a.option_strings[0]: a for a in _commands()["run"]._actions if a.option_strings}
    args = build_parser().parse_args(
        ["run", "--baseline-instruction", "A", "--baseline-instruction", "B", "--no-empty-baseline", "--stop-at-limit"]
    )
    assert (args.baseline_instruction, args.empty_baseline, args.stop_at_limit) == (["A", "B"], False, True)
    assert actions["--no-empty-baseline"].dest == "empty_baseline"
    assert actions["--kernel"].choices == ["coupled", "coupled+matern", "matern"]
    assert actions["--black-box-api"].choices == ["chat", "completions"]
    assert actions["--instruction-role"].choices == ["user", "system"]
    assert {f for f, a in actions.items() if a.type is int} == {
        "--seed", "--n-exemplars", "--n-dev", "--n-test", "--soft-tokens", "--intrinsic-dim", "--max-new-tokens",
        "--generator-batch", "--max-tokens", "--concurrency", "--init", "--iterations", "--batch",
    }  # fmt: skip
    assert actions["--soft-scale"].type is float and actions["--rpm"].type is None  # text: the config validates it
    assert {a.metavar for f, a in actions.items() if f in ("--max-cost", "--price-in", "--price-out")} == {"USD"}
    assert all(a.default is None for a in actions.values() if a.dest != "help")  # only what the user gave counts


def test_help_comes_from_the_field() -> None:
    """Description, default and env name of the field, in one line of `run --help`."""
    soft = next(a for a in _commands()["run"]._actions if "--soft-tokens" in a.option_strings)
    description = GeneratorSettings.model_fields["n_soft_tokens"].description
    assert soft.help == f"{description} [default 5; env INSTRUCTZERO_GENERATOR__N_SOFT_TOKENS]"


class _TopKGenerator(GeneratorSettings):
    top_k: Annotated[int, Flag("--top-k", int)] = Field(3, ge=1, description="candidates kept per soft prompt")


class _TopKConfig(RunConfig):
    generator: _TopKGenerator = _TopKGenerator()


def test_a_new_knob_is_one_field(monkeypatch) -> None:
    """One annotated field (the line of `top_k` above) gives the flag, its help, its override and its env name;
    before the table it took params.py, build_parser and the flag -> field map of cli.py."""
    parser = argparse.ArgumentParser()
    add_config_flags(parser, config=_TopKConfig)
    action = next(a for a in parser._actions if "--top-k" in a.option_strings)
    assert action.help == "candidates kept per soft prompt [default 3; env INSTRUCTZERO_GENERATOR__TOP_K]"
    overrides = _nested_overrides(parser.parse_args(["--top-k", "7", "--soft-tokens", "2"]), _TopKConfig)
    assert overrides == {"generator": {"top_k": 7, "n_soft_tokens": 2}}
    assert _TopKConfig(**overrides).generator.top_k == 7
    monkeypatch.setenv("INSTRUCTZERO_GENERATOR__TOP_K", "5")
    assert _TopKConfig().generator.top_k == 5


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--rpm", "many"], "budget.requests_per_minute"),
        (["--max-cost", "inf"], "budget.max_cost_usd"),
        (["--normalize", "no-such-step"], "no-such-step"),
    ],
)
def test_bad_values_of_generated_flags_are_one_line(argv: list[str], needle: str, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["estimate", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and len(err.splitlines()) == 1


def _module_imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at module level) for every `import`/`from ... import` of a file."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, id(node) in top))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, id(node) in top) for alias in node.names)
    return found


def test_the_two_command_lines_do_not_import_each_other() -> None:
    """benchmarks/cli.py takes the offline defaults from flows/offline.py, not flows/cli.py; flows/cli.py reaches
    the benchmarks only lazily, for `instructzero bench` (docs/ARCHITECTURE.md)."""
    bench = _module_imports(ROOT / "benchmarks" / "cli.py")
    assert "instructzero.flows.cli" not in {m for m, _ in bench}
    assert ("instructzero.flows.offline", False) in bench
    flows = _module_imports(ROOT / "flows" / "cli.py")
    assert all(not top for m, top in flows if m.startswith("instructzero.benchmarks"))
    assert ("instructzero.benchmarks.cli", False) in flows


def test_strategy_flag_added_as_one_marker_reaches_the_config() -> None:
    parser = build_parser()
    config = build_config(**_nested_overrides(parser.parse_args(["run", "--strategy", "uniform"])))
    assert config.bo.strategy == "uniform"
    assert build_config().bo.strategy == "bo"
