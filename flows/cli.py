"""`instructzero` command line: run, estimate, resume, tasks, runs, sql, export, db, serve, bench.

User errors (bad task, malformed files, bad DB URL, unreachable endpoint, invalid settings) print one line,
`error: ...`, and exit with status 2; nothing is written to the store before the inputs have been checked.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

from instructzero.flows.console import resume_command
from instructzero.flows.offline import offline_defaults
from instructzero.storage.errors import StoreError
from instructzero.tasks.errors import InstructZeroError

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings

    from instructzero.flows.params import ConfigOption

EXIT_USER_ERROR = 2


def _nested_overrides(args: argparse.Namespace, config: type[BaseSettings] | None = None) -> dict[str, Any]:
    """Map CLI flags onto the nested `RunConfig` fields (only flags the user gave). The map is the config table's
    (`instructzero.flows.params.config_options`), so it cannot drift from the flags `add_config_flags` made."""
    from instructzero.flows.params import RunConfig, config_options

    nested: dict[str, Any] = {}
    for option in config_options(config or RunConfig):
        value = getattr(args, option.flag.dest, None)
        if value is None:
            continue
        target = nested
        for key in option.path[:-1]:
            target = target.setdefault(key, {})
        target[option.path[-1]] = value
    return nested


def _verdict(row: Any, p: float) -> str:
    """What a comparison says to do, from its paired test at 0.05."""
    if p >= 0.05:
        return "no evidence either way at 0.05"
    if row.gain > 0:
        return "the found instruction is better"
    keep = "your instruction" if row.label.startswith("baseline") else f"the {row.label} instruction"
    return f"the found instruction is worse: keep {keep}"


def _print_summary(summary: Any, wall_s: float, store_url: str) -> None:
    from instructzero.tasks.evaluation.comparison import CONSTANT, format_comparison, format_p

    print()
    print(
        f"run {summary.name} ({summary.run_id}) on task {summary.task}: strategy {summary.strategy}, "
        f"{summary.n_candidates} candidates ({summary.n_distinct} distinct instructions), "
        f"black box {summary.black_box}"
    )
    for instruction, score, count in summary.top:
        print(f"  dev {score:.3f}  x{count:<3} {instruction!r}")
    print(f"best instruction: {summary.best_instruction!r}")
    test = "not evaluated" if summary.test_score != summary.test_score else f"{summary.test_score:.3f}"
    print(f"dev score: {summary.dev_score:.3f}   test score: {test}")
    if summary.comparison:
        print()
        print(f"test report ({summary.comparison[0].n} examples, the same for every row):")
        print(format_comparison(summary.comparison, confidence=summary.confidence))
        several = len(summary.comparison) > 2
        for row in summary.comparison[1:]:
            p = row.p_holm  # Holm over the report's rows; the raw p when it is the only comparison
            p_text = f"p = {format_p(row.p_value)}" + (f", Holm {format_p(row.p_holm)}" if several else "")
            print(f"  vs {row.label}: {_verdict(row, p)} (gain {row.gain:+.3f}, {p_text}, {row.test})")
            if (p < 0.05) != (row.gain_low > 0 or row.gain_high < 0):
                print(
                    "    (the bootstrap interval and the exact test disagree, as they can on few examples: "
                    "the verdict follows the test)"
                )
            if row.label == CONSTANT and not p < 0.05:
                print(
                    f"  note: {row.instruction} scores {row.accuracy:.3f} on these examples; a found instruction not "
                    f"clearly above that taught the black box the answer format, not the task"
                )
    from instructzero.flows.spend import format_value

    for line in format_value(summary):
        print(line)
    print()
    print(
        f"cost: {summary.paid_calls} black-box calls paid by this run, {summary.answered_calls} answers used "
        f"(the rest from the store's cache); {summary.spent.total_tokens} tokens, ${summary.spent.cost_usd:.4f}"
        f"{'; budget ' + summary.limits if summary.limits else ''}; {wall_s:.0f} s"
    )
    if summary.stopped:
        print(f"stopped: {summary.stopped}")
        if summary.test_note:
            print(f"test: {summary.test_note}")
        print(
            f"status: budget exhausted (stored as 'interrupted'); continue with "
            f"`{resume_command(summary.run_id, store_url, '--max-cost USD')}` (or --max-total-tokens/--max-calls)"
        )


def _preflight(config: Any, *, resume_run_id: str | None = None) -> None:
    """Check task data, budget, store and endpoint before anything is written or Prefect starts."""
    from instructzero.storage.repository import lease_timeout_s
    from instructzero.tasks.data.splits import make_splits
    from instructzero.tasks.data.task_data import load_task
    from instructzero.tasks.evaluation.blackbox import BlackBoxClient
    from instructzero.tasks.generation.generator import resolve_device
    from instructzero.tasks.prefect_tasks import open_store

    lease_timeout_s()  # INSTRUCTZERO_LEASE_TIMEOUT_S=nan: one line now, not a traceback from inside the flow
    resolve_device(config.generator.device)  # --device cuda without CUDA: refused before any model is loaded
    data = load_task(config.data.task, config.data.data_dir)
    splits = make_splits(
        data, n_exemplars=config.data.n_exemplars, n_dev=config.data.n_dev, n_test=config.data.n_test, seed=config.seed
    )
    _say_shortfall(splits)
    _check_budget(config, splits, resume_run_id)
    from instructzero.tasks.generation.model_assets import PACKAGED_MODELS, resolve_model_path

    if config.generator.model not in PACKAGED_MODELS:  # a missing local folder fails now, not after Prefect starts
        resolve_model_path(config.generator.model, config.cache_dir)
    if config.black_box.base_url:
        BlackBoxClient(config.black_box.client_settings(config.black_box.base_url, timeout_s=10.0)).check_reachable()
    open_store(config.store_url).check_writable()  # a read-only store fails here, not after Prefect has started


def _check_not_held(config: Any, run: Any) -> None:
    """Refuse, before Prefect starts, a run another live process holds (the flow's claim is the real guard)."""
    from datetime import UTC, datetime

    from instructzero.storage.errors import RunLeasedError
    from instructzero.storage.lease import holder_is_dead
    from instructzero.storage.repository import lease_timeout_s

    timeout = lease_timeout_s()
    if run is not None and run.lease_live(datetime.now(UTC), timeout) and not holder_is_dead(run.lease_owner):
        age = (datetime.now(UTC) - run.heartbeat_at).total_seconds()
        raise RunLeasedError(
            f"run {run.name!r} ({run.id}) is being run by another process ({run.lease_owner}, last heartbeat "
            f"{age:.0f}s ago); wait for it to finish, or resume it once it has been silent for {timeout:.0f}s"
        )


def _start_prefect() -> None:
    from instructzero.flows.console import quiet_known_errors
    from instructzero.flows.prefect_server import start_ephemeral_api

    start_ephemeral_api()
    quiet_known_errors()  # a 401 or a held lease ends in our one `error:` line, not Prefect's tracebacks first


def _run_flow(config: Any, resume_run_id: str | None = None) -> Any:
    """The flow, with Ctrl-C/SIGTERM stopping it at its next safe point (`flows/stop_signals.py`)."""
    from prefect.exceptions import TerminationSignal

    from instructzero.flows import stop_signals
    from instructzero.flows.instruction_search import instructzero_flow
    from instructzero.tasks.interrupts import RunInterrupted

    try:
        with stop_signals.deferring():
            return instructzero_flow(config, resume_run_id=resume_run_id)
    except TerminationSignal as exc:  # SIGTERM in the instant before the flow took its handler back from Prefect
        raise RunInterrupted("as the flow started", signum=exc.signal) from None


def _check_budget(config: Any, splits: Any, resume_run_id: str | None, *, show: bool = False) -> None:
    """Estimate the worst case of what is left to run and refuse (ConfigError) what the limits cannot cover."""
    from instructzero.flows.spend import estimate_for, format_estimate, one_line
    from instructzero.tasks.evaluation.budget import Usage, check_estimate
    from instructzero.tasks.prefect_tasks import open_store

    done: list[int] = []
    spent = Usage()
    if resume_run_id is not None:  # the store exists: count what is recorded and spent
        store = open_store(config.store_url)
        done, spent = store.completed_iterations(resume_run_id), Usage(*store.llm_spend(resume_run_id))
    estimate = estimate_for(config, splits, done_iterations=done, spent=spent)
    if show:
        print(format_estimate(config, estimate))
    check_estimate(estimate, config.budget.limits(), stop_at_limit=config.budget.stop_at_limit)
    if not show and config.budget.limits().any:
        print(
            f"budget: {one_line(estimate)}; within the limits"
            if not config.budget.stop_at_limit
            else f"budget: {one_line(estimate)}; stopping at the limit if it is reached"
        )


def _say_shortfall(splits: Any) -> None:
    """One line on stderr when the task is too small for the requested split sizes (they shrink, not pad)."""
    if splits.shortfall:
        print(f"note: {splits.shortfall}", file=sys.stderr)


def cmd_estimate(args: argparse.Namespace) -> int:
    from instructzero.flows.params import build_config
    from instructzero.tasks.data.splits import make_splits
    from instructzero.tasks.data.task_data import load_task

    config = build_config(**_nested_overrides(args))
    data = load_task(config.data.task, config.data.data_dir)
    splits = make_splits(
        data, n_exemplars=config.data.n_exemplars, n_dev=config.data.n_dev, n_test=config.data.n_test, seed=config.seed
    )
    _say_shortfall(splits)
    _check_budget(config, splits, None, show=True)
    if config.budget.limits().any:
        print("fits the limits" + (" (or stops at them)" if config.budget.stop_at_limit else ""))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from instructzero.flows.instruction_search import same_name_run
    from instructzero.flows.params import build_config

    config = build_config(**_nested_overrides(args))
    _preflight(config)
    existing = same_name_run(config)  # a clash of settings is refused here, before Prefect starts
    if existing is not None and existing.status == "completed":
        print(
            f"run {existing.name!r} ({existing.id}) is already complete (finished "
            f"{existing.finished_at:%Y-%m-%d %H:%M:%S} UTC): nothing re-run, nothing paid; "
            f"its candidates: instructzero sql \"SELECT * FROM store.candidates WHERE run_id = '{existing.id}'\""
        )
        return 0
    _check_not_held(config, existing)
    start = time.perf_counter()
    _start_prefect()
    _print_summary(_run_flow(config), time.perf_counter() - start, config.store_url)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from instructzero.flows.params import config_from_record
    from instructzero.storage.errors import RunNotFoundError
    from instructzero.storage.repository import RunStore

    store_url = _store_url(args)
    try:
        with RunStore(store_url, read_only=True) as lookup:  # creates nothing when the store or the run is missing
            run = lookup.find_run(args.run_id)  # an id, a name or a unique id prefix
    except RunNotFoundError:
        raise
    except StoreError as exc:
        raise StoreError(f"cannot resume run {args.run_id!r}: {exc}") from None
    if run.status == "completed":
        print(
            f"run {run.name!r} ({run.id}) is already complete (finished {run.finished_at:%Y-%m-%d %H:%M:%S} UTC): "
            "nothing to resume"
        )
        return 0
    budget = {**run.config.get("budget", {}), **_nested_overrides(args).get("budget", {})}
    config = config_from_record(run.config, store_url=store_url, budget=budget)
    _preflight(config, resume_run_id=run.id)
    _check_not_held(config, run)
    start = time.perf_counter()
    _start_prefect()
    _print_summary(_run_flow(config, resume_run_id=run.id), time.perf_counter() - start, config.store_url)
    return 0


def cmd_pareto(args: argparse.Namespace) -> int:
    """The Pareto front of dev accuracy vs instruction length (tokens) of a run's candidates."""
    from instructzero.storage.repository import RunStore
    from instructzero.tasks.evaluation.pareto import pareto_front
    from instructzero.tasks.optimisation.selection import instruction_token_counts

    for flag, path in (("--csv", args.csv), ("--png", args.png)):
        _check_output_path(flag, path)  # before reading anything: a typo in a folder is one line, not a traceback
    with RunStore(_store_url(args), read_only=True) as store:  # a mistyped store path is refused, never created
        run = store.find_run(args.run_id)  # an id, a name or a unique id prefix
        candidates = store.load_candidates(run.id)
        lengths = instruction_token_counts(store, run.id)
    points = [
        (c.instruction, float(c.dev_score or 0.0), lengths[(c.iteration, c.index)])
        for c in candidates
        if (c.iteration, c.index) in lengths
    ]
    front = pareto_front(points)
    print(
        f"Pareto front of run {run.name!r} ({run.id}): {len(front)} of {len(points)} candidates "
        "(dev accuracy vs tokens)"
    )
    for text, score, tokens in front:
        print(f"  {tokens:>4} tokens  dev {score:.3f}  {text!r}")
    if args.csv:
        import csv

        with open(args.csv, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["tokens", "dev_score", "on_front", "instruction"])
            on = {p[0] for p in front}
            writer.writerows((t, s, int(i in on), i) for i, s, t in points)
        print(f"wrote {args.csv}")
    if args.png:
        from instructzero.tasks.evaluation.pareto import plot_front

        plot_front(points, front, args.png, title=f"run {run.name} ({run.task})")
        print(f"wrote {args.png}")
    return 0


def _check_output_path(flag: str, path: str | None) -> None:
    """Refuse (ConfigError) an output file that cannot be written: its folder missing or not a folder, or itself
    a folder. Nothing is created here."""
    from instructzero.tasks.errors import ConfigError

    if not path:
        return
    target = Path(path).expanduser()
    parent = target.parent
    try:
        if target.is_dir():
            raise ConfigError(f"cannot write {flag} {path!r}: it is a directory")
        if not parent.is_dir():
            raise ConfigError(f"cannot write {flag} {path!r}: directory {str(parent)!r} does not exist")
    except OSError as exc:  # e.g. a file name too long for the filesystem
        raise ConfigError(f"cannot write {flag} {path!r}: {exc.strerror or exc}") from None
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"cannot write {flag} {path!r}: directory {str(parent)!r} is not writable")


def cmd_tasks(args: argparse.Namespace) -> int:
    from instructzero.tasks.data.task_data import list_tasks

    infos = list_tasks(Path(args.data_dir) if args.data_dir else None)
    width = max((len(i.name) for i in infos), default=4)
    for info in infos:
        print(f"{info.name:<{width}}  {info.source:<22} {info.metric:<12} {info.n_examples:>6} examples")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from instructzero.storage.repository import RunStore, lease_timeout_s
    from instructzero.tasks.optimisation.selection import reported_candidate

    now, timeout = datetime.now(UTC), lease_timeout_s()
    with RunStore(_store_url(args), read_only=True) as store:
        runs = []
        for run in store.list_runs():
            candidates = store.load_candidates(run.id)
            runs.append((run, candidates, reported_candidate(store, run, candidates)))  # the one rule
    from instructzero.storage.redaction import printable

    def score(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    print(f"{'RUN':<32}  {'STATUS':<11} {'TASK':<24} {'CAND':>4} {'DEV':>5} {'TEST':>5}  {'STARTED':<16}  NAME")
    for run, candidates, best in runs:
        status = run.shown_status(now, timeout)  # "stale": running, but its process stopped beating
        dev, test = (None, None) if best is None else (best.dev_score, best.test_score)
        print(
            printable(
                f"{run.id:<32}  {status:<11} {run.task:<24} {len(candidates):>4} {score(dev):>5} {score(test):>5}  "
                f"{run.started_at:%Y-%m-%d %H:%M}  {run.name}"
            )
        )
    return 0


def _store_url(args: argparse.Namespace) -> str:
    from instructzero.flows.params import DEFAULT_STORE_URL

    return args.store or os.environ.get("INSTRUCTZERO_STORE_URL", DEFAULT_STORE_URL)


def _print_warnings(warnings: Sequence[str]) -> None:
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


def cmd_sql(args: argparse.Namespace) -> int:
    from instructzero.storage.analytics import Analytics, format_table

    with Analytics(_store_url(args)) as analytics:
        _print_warnings(analytics.warnings)
        columns, rows = analytics.query(args.query)
    if args.format == "json":
        print(json.dumps([dict(zip(columns, row)) for row in rows], default=str, indent=1))
    elif args.format == "csv":
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        print(format_table(columns, rows))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from instructzero.storage.analytics import Analytics

    with Analytics(_store_url(args)) as analytics:
        _print_warnings(analytics.warnings)
        analytics.export_parquet(args.view, Path(args.path))
    print(f"wrote {args.path}")
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from instructzero.storage.session import require_existing_store, store_revision, upgrade_store

    url = _store_url(args)
    if not args.create:  # a mistyped SQLite path is refused, not initialised as a new empty store
        require_existing_store(url, hint="`instructzero db upgrade --create` initialises a new store there")
    before = store_revision(url)
    reached = upgrade_store(url)
    print(
        f"store upgraded from {before or 'an empty database'} to {reached}"
        if before != reached
        else f"store is already at the latest schema ({reached})"
    )
    return 0


def cmd_serve(argv: Sequence[str]) -> int:
    from instructzero.servers.openai_compatible import main as serve_main

    serve_main(list(argv), prog="instructzero serve")
    return 0


def cmd_bench(argv: Sequence[str]) -> int:
    from instructzero.benchmarks.cli import main as bench_main

    return bench_main(list(argv)) or 0


PASS_THROUGH = {"serve": cmd_serve, "bench": cmd_bench}
"""Subcommands with their own parser: everything after the name goes to it (argparse's REMAINDER would refuse a
leading option such as `instructzero bench --tasks sum`)."""


STORE_HELP = "SQLAlchemy URL of the store (default: $INSTRUCTZERO_STORE_URL, else sqlite:///instructzero.db)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="instructzero", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="search the best instruction for a task (resumes an unfinished run of --name)")
    add_config_flags(run)
    run.set_defaults(func=cmd_run)

    estimate = sub.add_parser("estimate", help="worst-case calls, tokens and cost of a run (same flags as run)")
    add_config_flags(estimate)
    estimate.set_defaults(func=cmd_estimate)

    resume = sub.add_parser("resume", help="continue an interrupted run from the store (raise its limits here)")
    resume.add_argument("run_id", metavar="RUN", help="the run: its id, its name or the start of its id")
    resume.add_argument("--store", help=STORE_HELP)
    # limits are not part of a run's identity: a resume may raise them (the others are the recorded ones)
    add_config_flags(resume, sections=("budget",), default_note="default: the run's recorded value")
    resume.set_defaults(func=cmd_resume)

    pareto = sub.add_parser("pareto", help="Pareto front of dev accuracy vs instruction length of a run")
    pareto.add_argument("run_id", metavar="RUN", help="the run: its id, its name or the start of its id")
    pareto.add_argument("--store", help=STORE_HELP)
    pareto.add_argument("--csv", help="also write every candidate (tokens, dev score, on the front) to this file")
    pareto.add_argument("--png", help="also plot the candidates and the front to this PNG file")
    pareto.set_defaults(func=cmd_pareto)

    tasks_cmd = sub.add_parser("tasks", help="list available tasks")
    tasks_cmd.add_argument(
        "--data-dir", help="root holding instruction-induction/ and/or bigbench-ii/ (default: the built-in tasks only)"
    )
    tasks_cmd.set_defaults(func=cmd_tasks)

    runs = sub.add_parser("runs", help="list runs in the store")
    runs.add_argument("--store", help=STORE_HELP)
    runs.set_defaults(func=cmd_runs)

    sql = sub.add_parser(
        "sql",
        help="read-only SQL over the store through DuckDB",
        description="Tables (as `runs` or `store.runs`, here and in `export`): runs, candidates, instructions, "
        "evaluations, example_scores, llm_calls, metrics, datasets. Views: best_instructions, score_by_iteration, "
        "cost_per_run, cost_by_iteration, candidates_flat, nightly_results.",
    )
    sql.add_argument("query")
    sql.add_argument("--store", help=STORE_HELP)
    sql.add_argument("--format", choices=["table", "csv", "json"], default="table", help="output format")
    sql.set_defaults(func=cmd_sql)

    export = sub.add_parser("export", help="export a table or view to Parquet")
    export.add_argument("view")
    export.add_argument("path")
    export.add_argument("--store", help=STORE_HELP)
    export.set_defaults(func=cmd_export)

    db = sub.add_parser(
        "db",
        help="store maintenance",
        description="upgrade: migrate an existing store to the current schema. A SQLite file that "
        "does not exist is refused (a typo must not become a new empty store) unless --create is "
        "given; `instructzero run` creates its store itself.",
    )
    db.add_argument("action", choices=["upgrade"])
    db.add_argument("--store", help=STORE_HELP)
    db.add_argument(
        "--create",
        action="store_true",
        help="initialise a new store at --store when its SQLite file does not exist yet",
    )
    db.set_defaults(func=cmd_db)

    # Listed for --help only: main() hands everything after these names to their own parsers (PASS_THROUGH).
    sub.add_parser("serve", help="serve a local OpenAI-compatible black box (see --help of the server)", add_help=False)
    sub.add_parser("bench", help="benchmarks: quality against baselines, and pipeline speed", add_help=False)
    return parser


def add_config_flags(
    parser: argparse.ArgumentParser,
    *,
    config: type[BaseSettings] | None = None,
    sections: Collection[str] | None = None,
    default_note: str | None = None,
) -> None:
    """Add one flag per flagged field of the config table (`instructzero.flows.params.config_options`), a group per
    section. Generated rather than written out so that a knob is one field in params.py: its flag, help, default,
    choices and env name all come from there. Values stay text unless the `Flag` names a `parse`: the config
    validates them, so a bad value is one `error:` line. `default_note`: what the help says instead of the default
    and env name, where neither applies (`resume` starts from the recorded values)."""
    from instructzero.flows.params import RunConfig, config_options

    config = config or RunConfig
    groups: dict[str | None, Any] = {None: parser}
    for option in config_options(config, sections):
        if option.section is not None and option.section not in groups:
            model = config.model_fields[option.section].annotation
            doc = (getattr(model, "__doc__", None) or "").strip().split("\n\n")[0]
            groups[option.section] = parser.add_argument_group(option.section, " ".join(doc.split()) or None)
        groups[option.section].add_argument(option.flag.name, **_argparse_options(option, default_note))


def _argparse_options(option: ConfigOption, default_note: str | None = None) -> dict[str, Any]:
    """argparse keywords of a config field's flag: a bool is a switch, a tuple repeatable, a Literal has choices.
    Every default is None, so `_nested_overrides` passes on only what the user gave."""
    annotation = _without_none(option.field.annotation)
    kwargs: dict[str, Any] = {"dest": option.flag.dest, "default": None, "help": _help(option, default_note)}
    if annotation is bool:
        kwargs["action"] = "store_false" if option.flag.negates else "store_true"
        return kwargs
    if get_origin(annotation) in (tuple, list):
        kwargs["action"] = "append"
    elif get_origin(annotation) is Literal:
        kwargs["choices"] = list(get_args(annotation))
    if option.flag.parse is not None:
        kwargs["type"] = option.flag.parse
    if option.flag.metavar is not None:
        kwargs["metavar"] = option.flag.metavar
    return kwargs


def _without_none(annotation: Any) -> Any:
    """`X | None` -> X (an unset optional is simply not given)."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    return args[0] if get_origin(annotation) in (Union, UnionType) and len(args) == 1 else annotation


def _help(option: ConfigOption, default_note: str | None = None) -> str:
    """The field's description (else its name), its default when short, and the variable that also sets it."""
    text = option.field.description or ".".join(option.path)
    if option.flag.negates:  # the description says what the field does; this flag switches it off
        text = f"turns off: {text}"
    if default_note is not None:
        return f"{text} [{default_note}]".replace("%", "%%")
    default = option.field.get_default(call_default_factory=True)
    notes = []
    if isinstance(default, bool):
        notes.append(f"default {'on' if default else 'off'}")
    elif isinstance(default, str | int | float) and "\n" not in str(default) and len(str(default)) <= 40:
        notes.append(f"default {default}")
    notes.append(f"env {option.env}")
    return f"{text} [{'; '.join(notes)}]".replace("%", "%%")  # argparse %-formats help


def main(argv: Sequence[str] | None = None) -> int:
    offline_defaults()
    as_command = argv is None  # the process's own command line (not a call from Python code)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASS_THROUGH:
        return PASS_THROUGH[argv[0]](argv[1:])
    args = build_parser().parse_args(argv)
    from instructzero.tasks.interrupts import RunInterrupted

    try:
        with _stop_signals_for(args.command):
            return int(args.func(args) or 0)
    except RunInterrupted as exc:  # Ctrl-C or SIGTERM: stopped at a safe point, stored as 'interrupted'
        from instructzero.storage.redaction import redact_secrets

        print(redact_secrets(_interrupted_line(exc, args)), file=sys.stderr)
        if as_command:  # the user waits for the prompt: skip the interpreter's final sweep of torch/Prefect objects
            import gc

            gc.freeze()  # (seconds on 2 loaded cores); atexit handlers still run: Prefect stops its server
        return exc.exit_code
    except (InstructZeroError, StoreError) as exc:
        from instructzero.storage.redaction import redact_secrets

        message = "; ".join([str(exc), *getattr(exc, "__notes__", ())])  # notes: e.g. the failed run's resume hint
        message = " ".join(message.splitlines())  # one line, whatever a library put in the message
        print(f"error: {redact_secrets(message)}", file=sys.stderr)  # any URL or conninfo in it, masked
        return EXIT_USER_ERROR
    except (
        KeyboardInterrupt
    ) as exc:  # before the flow started (instructzero.flows.stop_signals.StopSignal), or no handler yet
        from instructzero.storage.redaction import redact_secrets

        print(redact_secrets(_stopped_early_line(exc, args)), file=sys.stderr)
        if as_command:  # as above: exit without the final sweep
            import gc

            gc.freeze()
        return 128 + getattr(exc, "signum", 2)  # 130 for SIGINT, 143 for SIGTERM
    except BrokenPipeError:  # `instructzero runs | head -1`: the reader has all it wanted; end quietly, as `seq` does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's final flush of stdout would raise again
        return 128 + 13  # SIGPIPE's status


def _stop_signals_for(command: str) -> Any:
    """Ctrl-C/SIGTERM handling for `run` and `resume` (see flows/stop_signals.py); nothing for the others."""
    import contextlib

    if command not in ("run", "resume"):
        return contextlib.nullcontext()
    from instructzero.flows import stop_signals

    return stop_signals.handled()


def _stopped_early_line(exc: KeyboardInterrupt, args: argparse.Namespace) -> str:
    """The line for a signal before the flow started: nothing of the run was written."""
    name = str(exc.args[0]) if exc.args else "SIGINT"  # StopSignal("SIGTERM"), or Python's own KeyboardInterrupt
    if args.command == "resume":
        return (
            f"interrupted: resume with `{resume_command(args.run_id, _store_url(args))}` ({name} before the run "
            f"resumed; nothing changed)"
        )
    if args.command == "run":
        return f"interrupted: nothing was recorded yet ({name} before the run started); run the same command again"
    return "interrupted: resume with `instructzero resume RUN_ID` (see `instructzero runs`)"


def _interrupted_line(exc: Any, args: argparse.Namespace) -> str:
    """The one line an interrupted run ends with: how to resume it."""
    if exc.run_id is None:
        return f"interrupted: nothing was recorded yet ({exc}); run the same command again to start"
    # `recorded` is set once the search had started and the flow stored the run as interrupted
    what = f"stored as 'interrupted' with {exc.recorded}" if exc.recorded else "unchanged"
    resume = resume_command(exc.run_id, _store_url(args))
    return f"interrupted: resume with `{resume}` ({exc}; run {exc.run_name!r} {what})"


if __name__ == "__main__":
    sys.exit(main())
