"""The search in the Prefect UI (`tasks/search_view.py`, `flows/search_artifacts.py`): the best-so-far curve, the
candidate table and the store queries behind them, as artifacts updated every iteration.

The content builders are tested as plain functions; one real flow run (tiny generator, rule-based black box over
HTTP, Prefect's own API) checks what the API holds against the store.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from instructzero.tasks.search_view import (
    CurvePoint,
    Reference,
    best_so_far,
    candidate_rows,
    curve_markdown,
    curve_svg,
    queries_markdown,
    store_queries,
    unicode_bar,
)


@dataclass(frozen=True)
class Cand:
    iteration: int
    index: int
    dev_score: float | None
    phase: str = "bo"
    instruction: str = ""


def _svg(markdown: str) -> str:
    data = re.search(r"\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert data, markdown[:200]
    return base64.b64decode(data.group(1)).decode()


# ------------------------------------------------------------------------------------------------ pure builders
def test_curve_points_are_the_best_so_far_by_iteration() -> None:
    history = [
        Cand(2, 0, 0.5),
        Cand(0, 0, 0.2),
        Cand(0, 1, 0.4, "init"),
        Cand(1, 0, 0.3),
        Cand(3, 0, None),
        Cand(3, 1, 0.9),
        Cand(4, 0, None),
    ]
    assert best_so_far(history) == [
        CurvePoint(0, 2, 0.4, 0.4),
        CurvePoint(1, 1, 0.3, 0.4),
        CurvePoint(2, 1, 0.5, 0.5),
        CurvePoint(3, 2, 0.9, 0.9),
        CurvePoint(4, 1, None, 0.9),
    ]
    assert best_so_far([]) == []
    assert best_so_far([Cand(0, 0, None)]) == [CurvePoint(0, 1, None, None)]


def test_candidate_rows_best_first_ties_in_recording_order_top_n() -> None:
    history = [
        Cand(0, 0, 0.5, "init", "a"),
        Cand(0, 1, 0.9, "init", "b"),
        Cand(1, 0, 0.5, "bo", "c"),
        Cand(1, 1, None, "bo", "d"),
        Cand(2, 0, 0.7, "bo", "e"),
    ]
    rows = candidate_rows(history, top_n=4)
    assert [r["instruction"] for r in rows] == ["b", "e", "a", "c"]
    assert rows[0] == {"iteration": 0, "index": 1, "phase": "init", "dev_score": 0.9, "instruction": "b"}
    assert len(candidate_rows(history)) == 5


def test_curve_markdown_lists_every_iteration_and_draws_the_references() -> None:
    points = best_so_far([Cand(0, 0, 0.25), Cand(1, 0, 0.75), Cand(2, 0, 0.5)])
    refs = [Reference("found", 0.9), Reference("empty", 0.0), Reference("constant", 0.533)]
    md = curve_markdown(points, refs, last_iteration=5, run_name="my-run")
    table = [line for line in md.splitlines() if re.match(r"\| \d", line)]
    assert table == [
        "| 0 | 1 | 0.250 | 0.250 | █████ |",
        "| 1 | 1 | 0.750 | 0.750 | ███████████████ |",
        "| 2 | 1 | 0.500 | 0.750 | ███████████████ |",
    ]
    assert "best dev score so far: 0.750** after iteration 2 of 5" in md
    assert "on test: found 0.900, empty 0.000, constant 0.533" in md
    svg = _svg(md)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count('stroke-dasharray="6 4"') == 3  # one dashed line per reference
    for label in ("found (test) 0.900", "empty (test) 0.000", "constant (test) 0.533", "best so far 0.750"):
        assert label in svg
    assert ">5</text>" in svg  # the x axis runs to the planned last iteration
    assert "dasharray" not in curve_svg(points)  # no references before the test report
    assert "no iteration recorded yet" in curve_svg([])
    assert "&lt;b&gt;" in curve_svg(points, [Reference("<b>", 0.5)])  # labels are escaped


def test_unicode_bar() -> None:
    assert unicode_bar(1.0) == "█" * 20
    assert unicode_bar(0.0) == ""
    assert unicode_bar(None) == ""
    assert unicode_bar(0.5, width=4) == "██"
    assert unicode_bar(0.55, width=4) == "██▎"
    assert unicode_bar(2.0, width=3) == "███"


def test_store_queries_mask_the_password_and_name_the_run() -> None:
    url = "postgresql://iz:s3cret@db-host:5432/instructzero"
    md = queries_markdown(url, "0123abcd")
    assert "s3cret" not in md
    commands = [command for _, command in store_queries(url, "0123abcd")]
    assert len(commands) == 3
    for command in commands:
        assert command.startswith("instructzero sql --store 'postgresql+psycopg://iz:***@db-host:5432/instructzero' ")
        assert "run_id = '0123abcd'" in command
        store, query = command.split(" ", 4)[3:]
        assert f"```bash\ninstructzero sql --store {store} \\\n  {query}\n```" in md  # two lines in the artifact
    assert "FROM score_by_iteration" in commands[0] and "FROM candidates_flat" in commands[1]
    assert "INSTRUCTZERO_STORE_URL" in md  # how to put the password back
    # a relative SQLite path is made absolute, so the command works from any directory
    (what, command), *_ = store_queries("sqlite:///runs/iz.db", "r1", cwd=Path("/data"))
    assert what == "the best-so-far curve"
    assert command.startswith('instructzero sql --store sqlite:////data/runs/iz.db "SELECT iteration')
    assert "INSTRUCTZERO_STORE_URL" not in queries_markdown("sqlite:////data/iz.db", "r1")


def test_a_failing_prefect_api_logs_one_warning_and_the_run_goes_on(monkeypatch) -> None:
    from types import SimpleNamespace

    import instructzero.flows.search_artifacts as sa

    calls = []

    def refuse(**kwargs):
        calls.append(kwargs.get("key"))
        raise ConnectionError("prefect api down: http://user:pw@prefect:4200")

    for name in ("create_markdown_artifact", "create_table_artifact", "create_progress_artifact"):
        monkeypatch.setattr(sa, name, refuse)
    run = SimpleNamespace(id="abcdef0123456789", name="r", config={})

    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    collect = Collect()
    logger = logging.getLogger("instructzero.artifacts")  # outside a flow run, where get_run_logger has none
    logger.addHandler(collect)
    monkeypatch.setattr(logger, "level", logging.WARNING)
    artifacts = sa.SearchArtifacts(run, "sqlite:///x.db", last_iteration=2, n_steps=4, recorded=0)
    for _ in range(3):
        artifacts.recorded([Cand(0, 0, 0.5)], progress=25.0)
    artifacts.finished([Cand(0, 0, 0.5)], [])
    assert artifacts.ids == {}
    assert calls.count("search-curve-abcdef012345") == 4
    logger.removeHandler(collect)
    warnings = collect.messages
    assert len(warnings) == 4  # progress, queries, curve, table: once each
    assert all("not updated" in w and "pw@" not in w for w in warnings)


def test_each_artifact_is_created_once_then_updated_every_iteration(monkeypatch) -> None:
    from types import SimpleNamespace
    from uuid import uuid4

    import instructzero.flows.search_artifacts as sa

    created: dict[str, object] = {}
    updates: list[tuple[object, str, str]] = []

    def create(kind):
        def make(**kwargs):
            created[kwargs["key"]] = (kind, uuid4())
            return created[kwargs["key"]][1]

        return make

    monkeypatch.setattr(sa, "create_markdown_artifact", create("markdown"))
    monkeypatch.setattr(sa, "create_table_artifact", create("table"))
    monkeypatch.setattr(sa, "create_progress_artifact", create("progress"))
    monkeypatch.setattr(sa, "update_progress_artifact", lambda aid, progress: updates.append((aid, "progress", "")))
    monkeypatch.setattr(sa, "update_artifact", lambda aid, data, description: updates.append((aid, data, description)))
    run = SimpleNamespace(id="0123456789abcdef", name="r", config={})
    artifacts = sa.SearchArtifacts(run, "sqlite:////tmp/x.db", last_iteration=2, n_steps=4, recorded=0)
    assert sorted(created) == ["progress-0123456789ab", "search-queries-0123456789ab"]
    artifacts.search([])  # a fresh run: nothing to show before the first iteration
    history = [Cand(0, 0, 0.25, "init", "a"), Cand(0, 1, 0.5, "init", "b")]
    artifacts.recorded(history, progress=25.0)
    curve_id, table_id = created["search-curve-0123456789ab"][1], created["best-instructions-0123456789ab"][1]
    history += [Cand(1, 0, 0.75, "bo", "c")]
    artifacts.recorded(history, progress=50.0)
    history += [Cand(2, 0, 0.0, "bo", "d")]
    artifacts.recorded(history, progress=75.0)
    rows = [SimpleNamespace(label="found", accuracy=0.6), SimpleNamespace(label="empty", accuracy=0.1)]
    artifacts.finished(history, rows)
    assert len(created) == 4  # curve and table created once, by the first iteration
    curve = [u for u in updates if u[0] == curve_id]
    table = [u for u in updates if u[0] == table_id]
    assert len(curve) == len(table) == 3  # iterations 1 and 2, then the test report
    assert [u[1] for u in updates if u[1] == "progress"] == ["progress"] * 4
    assert curve[-1][1] == curve_markdown(
        best_so_far(history), [Reference("found", 0.6), Reference("empty", 0.1)], last_iteration=2, run_name="r"
    )
    assert json.loads(table[-1][1]) == candidate_rows(history)
    assert table[-1][2] == "Best instructions of run r (test score of the best: 0.600)"
    assert table[0][2] == "Best instructions of run r (iteration 1 of 2 recorded)"


# ------------------------------------------------------------------------------------------------ a real run
@pytest.mark.slow
def test_flow_run_has_curve_table_and_query_artifacts_matching_the_store(
    prefect_harness, isolated_results, make_server, tiny_generator_dir, tmp_path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter
    from prefect.client.schemas.sorting import ArtifactSort

    from instructzero.flows.instruction_search import instructzero_flow
    from instructzero.flows.params import build_config
    from instructzero.flows.search_artifacts import artifact_keys
    from instructzero.storage.analytics import Analytics
    from instructzero.storage.repository import RunStore
    from tests.plugins.prefect import tiny_run_overrides

    url = f"sqlite:///{tmp_path / 'artifacts.db'}"
    server = make_server("rule", model_name="rule-based")
    iterations = 2
    started = time.perf_counter()
    summary = instructzero_flow(
        build_config(
            **{
                **tiny_run_overrides(url, server.base_url, tiny_generator_dir, iterations=iterations),
                "name": "artifacts",
                "report": {"baselines": ["Add the numbers."]},
            }
        )
    )
    run_s = time.perf_counter() - started
    run = RunStore(url).get_run(summary.run_id)
    history = RunStore(url).load_candidates(run.id)
    keys = artifact_keys(run.id)

    async def versions() -> dict[str, list]:
        async with get_client() as client:
            found = {}
            for name, key in keys.items():
                found[name] = (
                    await client.read_artifacts(
                        artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                        flow_run_filter=FlowRunFilter(id={"any_": [run.prefect_flow_run_id]}),
                        sort=ArtifactSort.CREATED_DESC,
                    )
                )[::-1]  # oldest first
            return found

    found = asyncio.run(versions())
    print(f"\nflow run {run_s:.1f} s")

    # one artifact per key for the flow run, created by the first iteration and updated in place since
    assert {name: len(v) for name, v in found.items()} == {"progress": 1, "curve": 1, "table": 1, "queries": 1}
    assert found["progress"][0].data == 100.0
    latest_curve, latest_table = found["curve"][-1], found["table"][-1]
    points = best_so_far(history)
    assert [p.iteration for p in points] == list(range(iterations + 1))
    assert f"after iteration {iterations} of {iterations}" in latest_curve.data
    assert latest_curve.updated > latest_curve.created and latest_table.updated > latest_table.created
    assert latest_curve.data == curve_markdown(
        points,
        [Reference(r.label, r.accuracy) for r in summary.comparison],
        last_iteration=iterations,
        run_name=run.name,
    )
    assert {"found", "empty", "baseline-1", "constant"} <= {r.label for r in summary.comparison}
    assert "baseline-1 (test) 1.000" in _svg(latest_curve.data)  # the rule black box adds the numbers
    # the table: the store's candidates, best first
    assert json.loads(latest_table.data) == candidate_rows(history)  # a table artifact's data is JSON
    assert len(history) == 4 and f"{summary.test_score:.3f}" in latest_table.description
    # the query commands reproduce the curve and the table from the store
    commands = re.findall(r'^instructzero sql --store (\S+) \\\n  "(.*)"$', found["queries"][0].data, re.MULTILINE)
    assert [store for store, _ in commands] == [url] * 3
    with Analytics(url, extension_dir=tmp_path / "ext") as analytics:
        _, curve_rows = analytics.query(commands[0][1])
        _, table_rows = analytics.query(commands[1][1])
        _, report_rows = analytics.query(commands[2][1])
    assert [(it, n, best, so_far) for it, n, best, so_far in curve_rows] == [
        (p.iteration, p.n_candidates, p.best_dev, p.best_so_far) for p in points
    ]
    assert [
        dict(zip(("iteration", "index", "phase", "dev_score", "instruction"), r)) for r in table_rows
    ] == candidate_rows(history)
    assert {k: v for k, v in report_rows} == {f"report.{r.label}.accuracy": r.accuracy for r in summary.comparison}
    print(f"test wall time {time.perf_counter() - started:.1f} s")
