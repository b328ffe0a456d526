"""The search, visible in the Prefect UI: a run's artifacts, each under a stable key per run.

* `progress-<run>`           Prefect's progress artifact: steps recorded of initial design + BO iterations + test;
* `search-curve-<run>`       markdown: the best-so-far dev curve (an SVG image) with the report's test scores as
                             reference lines once the report exists, and the same numbers as a table;
* `best-instructions-<run>`  table: the best candidates so far, best first;
* `search-queries-<run>`     markdown: the `instructzero sql` commands that reproduce them from the store
                             (password masked).

`<run>` is the first 12 hex digits of the run id; the content is built in `tasks/search_view.py`. Each flow run
creates each artifact once (a new version of its key: a resumed run's flow run gets its own) and then updates it in
place after every recorded iteration and after the test report, as Prefect does with progress artifacts. A new
version per update would list every version as a card of its own in the flow run's Artifacts tab (2 x iterations
cards); the curve and the table are cumulative, so their latest content is the whole history, and the store has
every iteration anyway. An artifact is a view, never the record: a failing Prefect API call logs one warning per
artifact and the run goes on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import TypeVar, cast
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from instructzero.storage.records import Candidate, Run
from instructzero.storage.redaction import redact_secrets
from instructzero.tasks.evaluation.comparison import FOUND, ComparisonRow
from instructzero.tasks.optimisation.selection import length_penalty, stored_objective
from instructzero.tasks.prefect_tasks import open_store
from instructzero.tasks.search_view import Reference, best_so_far, candidate_rows, curve_markdown, queries_markdown

T = TypeVar("T")


def artifact_keys(run_id: str) -> dict[str, str]:
    """The run's artifact keys (lowercase letters, digits and dashes, as Prefect requires)."""
    short = run_id[:12].lower()
    return {
        "progress": f"progress-{short}",
        "curve": f"search-curve-{short}",
        "table": f"best-instructions-{short}",
        "queries": f"search-queries-{short}",
    }


def update_artifact(artifact_id: UUID, data: str, description: str) -> None:
    """Replace an artifact's data and description in place (the API's PATCH, which also updates its key's latest)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactUpdate

    get_client(sync_client=True).update_artifact(artifact_id, ArtifactUpdate(data=data, description=description))


def _logger() -> logging.Logger | logging.LoggerAdapter:
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("instructzero.artifacts")


class SearchArtifacts:
    """A run's search artifacts, kept up to date by the flow: `search` with what is recorded when the search starts
    (a resumed run), `recorded` after each iteration, `finished` after the test report. Every call is safe: an
    artifact the Prefect API refuses is skipped with one warning."""

    def __init__(self, run: Run, store_url: str, *, last_iteration: int, n_steps: int, recorded: int) -> None:
        self.run, self.store_url = run, store_url
        self.keys = artifact_keys(run.id)
        self.last_iteration = last_iteration
        self.ids: dict[str, UUID] = {}
        self._warned: set[str] = set()
        progress = self._safely(
            "progress",
            lambda: create_progress_artifact(
                progress=100.0 * recorded / n_steps,
                key=self.keys["progress"],
                description=f"InstructZero run {run.name}: iterations recorded",
            ),
        )
        if progress is not None:  # called from sync code: the artifact's id, not a coroutine
            self.ids["progress"] = cast(UUID, progress)
        self._safely(
            "queries",
            lambda: create_markdown_artifact(
                key=self.keys["queries"],
                markdown=queries_markdown(store_url, run.id),
                description=f"Run {run.name}: the store queries behind the curve and the candidate table",
            ),
        )

    def recorded(self, history: Sequence[Candidate], progress: float) -> None:
        """After an iteration was recorded: the progress, the curve and the table."""
        self._progress(progress)
        self.search(history)

    def search(
        self, history: Sequence[Candidate], rows: Sequence[ComparisonRow] = (), *, tested: str | None = None
    ) -> None:
        """The curve (with `rows`' test scores as reference lines) and the candidate table; `tested`: what the
        table's description says about the test split (default: the last iteration recorded). Nothing before the
        first candidate is recorded."""
        if not history:
            return
        references = [Reference(r.label, r.accuracy) for r in rows]
        points = best_so_far(history)
        self._publish(
            "curve",
            curve_markdown(points, references, last_iteration=self.last_iteration, run_name=self.run.name),
            f"Run {self.run.name}: best dev score so far by iteration"
            + ("; dashed: test scores of the report" if references else ""),
        )
        if tested is None:
            tested = f"iteration {points[-1].iteration} of {self.last_iteration} recorded"
        penalty, tokens = (  # the run's own objective; token counts read only when it has a length penalty
            stored_objective(open_store(self.store_url), self.run) if length_penalty(self.run) else (0.0, {})
        )
        self._publish(
            "table",
            candidate_rows(history, length_penalty=penalty, tokens=tokens),
            f"Best instructions of run {self.run.name} ({tested})",
        )

    def finished(self, history: Sequence[Candidate], rows: Sequence[ComparisonRow], test_note: str = "") -> None:
        """After the test report (`rows`, empty when the budget skipped it): progress at 100 %, the curve with its
        reference lines, the final table."""
        self._progress(100.0)
        found = next((r.accuracy for r in rows if r.label == FOUND), None)
        tested = "test score of the best: " + ("not evaluated" if found is None else f"{found:.3f}")
        self.search(history, rows, tested=f"{tested}; {test_note}" if test_note else tested)

    def _progress(self, progress: float) -> None:
        if "progress" in self.ids:
            self._safely("progress", lambda: update_progress_artifact(self.ids["progress"], progress=progress))

    def _publish(self, what: str, content: str | list[dict[str, object]], description: str) -> None:
        """Create the artifact `what` ("curve": markdown, "table": rows) on first use, update it in place after."""
        if what in self.ids:
            data = content if isinstance(content, str) else json.dumps(content, allow_nan=False)
            self._safely(what, lambda: update_artifact(self.ids[what], data, description))
            return
        if isinstance(content, str):
            created = self._safely(
                what, lambda: create_markdown_artifact(key=self.keys[what], markdown=content, description=description)
            )
        else:
            created = self._safely(
                what, lambda: create_table_artifact(key=self.keys[what], table=content, description=description)
            )
        if created is not None:
            self.ids[what] = cast(UUID, created)

    def _safely(self, what: str, call: Callable[[], T]) -> T | None:
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - a view must not fail the run: the store holds the record
            if what not in self._warned:
                self._warned.add(what)
                _logger().warning(
                    "Prefect artifact %s of run %s not updated (%s); the run goes on, later "
                    "failures of it are not logged",
                    self.keys.get(what, what),
                    self.run.id,
                    _one_line(exc),
                )
            return None


def publish_table(key: str, table: list[dict[str, object]], description: str) -> None:
    """A one-off table artifact (the test report) that, like the search's, never fails the run."""
    try:
        create_table_artifact(key=key, table=table, description=description)
    except Exception as exc:  # noqa: BLE001 - a view must not fail the run: the store holds the record
        _logger().warning("Prefect artifact %s not created (%s); the run goes on", key, _one_line(exc))


def _one_line(exc: Exception) -> str:
    """`Type: message` of an artifact failure, on one line, cut at 200 characters, secrets masked."""
    message = redact_secrets(" ".join(str(exc).split())[:200]) or type(exc).__name__
    return f"{type(exc).__name__}: {message}"
