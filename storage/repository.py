"""`RunStore`: the only writer of the SQL store.

Every public method is one transaction (`session_scope`). `record_iteration` writes all candidates, instructions,
dev evaluations and example scores of an iteration or nothing, and is idempotent on exact replay. What goes in
and what comes out are the records of `instructzero.storage.records` (one frozen dataclass per concept, the same
both ways): this module maps them to and from ORM rows, which never escape.
"""

from __future__ import annotations

import hashlib
import math
import os
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import overload

from sqlalchemy import Engine, func, insert, or_, select, text, update
from sqlalchemy.orm import Session

from instructzero.storage.errors import RunExistsError, RunLeasedError, RunNotFoundError, StoreError
from instructzero.storage.models import (
    SqlCandidate,
    SqlDataset,
    SqlEvaluation,
    SqlExampleScore,
    SqlInstruction,
    SqlLLMCall,
    SqlMetric,
    SqlRun,
)
from instructzero.storage.records import (
    RUN_STATUSES,
    BlackBoxCall,
    Candidate,
    Dataset,
    Evaluation,
    ExampleScore,
    Metric,
    Run,
    check_phase,
    instruction_hash,
)
from instructzero.storage.session import display_url, one_line, open_engine, session_scope

__all__ = ["RunStore"]

TERMINAL_STATUSES = ("completed", "failed", "interrupted")
DEFAULT_LEASE_TIMEOUT_S = 60.0
"""A run whose owner sent no heartbeat for this long is stale: `instructzero runs` says so and resume takes it over.
The owner beats every quarter of it. Override with $INSTRUCTZERO_LEASE_TIMEOUT_S."""


def lease_timeout_s() -> float:
    """$INSTRUCTZERO_LEASE_TIMEOUT_S, else DEFAULT_LEASE_TIMEOUT_S."""
    raw = os.environ.get("INSTRUCTZERO_LEASE_TIMEOUT_S", "")
    try:
        value = float(raw) if raw else DEFAULT_LEASE_TIMEOUT_S
    except ValueError:
        raise StoreError(f"INSTRUCTZERO_LEASE_TIMEOUT_S must be a number of seconds, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise StoreError(f"INSTRUCTZERO_LEASE_TIMEOUT_S must be positive, got {raw!r}")
    return value


@overload
def _aware(dt: datetime) -> datetime: ...
@overload
def _aware(dt: datetime | None) -> datetime | None: ...
def _aware(dt: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything is stored in UTC."""
    if dt is None or dt.tzinfo is not None:
        return dt
    return dt.replace(tzinfo=UTC)


def _finite(value: float, what: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise StoreError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise StoreError(f"{what} must be finite, got {value!r}")
    return value


def _run_record(row: SqlRun) -> Run:
    return Run(
        id=row.id,
        name=row.name,
        task=row.task,
        status=row.status,
        config=dict(row.config or {}),
        seed=row.seed,
        projection_hash=row.projection_hash,
        versions=dict(row.versions or {}),
        splits={k: list(v) for k, v in (row.splits or {}).items()},
        prefect_flow_run_id=row.prefect_flow_run_id,
        error=row.error,
        started_at=_aware(row.started_at),
        finished_at=_aware(row.finished_at),
        lease_owner=row.lease_owner,
        heartbeat_at=_aware(row.heartbeat_at),
    )


@dataclass(frozen=True)
class _CandidateKey:
    """What identifies a recorded candidate for replay comparison (cost bookkeeping such as latency or cached
    counts may legitimately differ on a replay served from the response cache and is not compared)."""

    index: int
    phase: str
    z: tuple[float, ...] | None
    acquisition_value: float | None
    instruction_hash: str
    dev_score: float | None


class RunStore:
    """The run store at `url` (any SQLAlchemy URL; `sqlite:///path.db` is the default kind).

    Opening creates/upgrades a fresh database and refuses one at another schema revision (StoreError).
    Safe to use from several threads; several processes may hold their own RunStore on the same database.
    """

    def __init__(self, url: str, *, read_only: bool = False) -> None:
        """`read_only`: for reading commands; open an existing store at head only, create and write nothing."""
        self._engine: Engine = open_engine(url, read_only=read_only)
        self.url: str = str(self._engine.url.render_as_string(hide_password=False))

    # ------------------------------------------------------------------------------------------------ plumbing

    def __repr__(self) -> str:
        return f"RunStore({display_url(self.url)!r})"

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._engine.dispose()

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def check_writable(self) -> None:
        """Raise StoreError now if a run could not be written (a read-only file or URI, a read-only role or
        replica), instead of after the run has started: an UPDATE that matches no row, rolled back."""
        with self._engine.connect() as conn:
            trans = conn.begin()
            try:
                conn.execute(text("UPDATE metrics SET value = value WHERE 1 = 0"))  # a write that changes nothing
            except Exception as exc:  # noqa: BLE001 - any driver's refusal
                raise StoreError(
                    f"store {display_url(str(self._engine.url))!r} is not writable: {one_line(exc)}"
                ) from None
            finally:
                trans.rollback()

    def _scope(self, what: str, *, write: bool = False):
        return session_scope(self._engine, write=write, what=what)

    @staticmethod
    def _get_run_row(session: Session, run_id: str) -> SqlRun:
        row = session.get(SqlRun, run_id)
        if row is None:
            raise RunNotFoundError(f"no run with id {run_id!r} in the store")
        return row

    # ---------------------------------------------------------------------------------------------------- runs

    def create_run(
        self,
        *,
        name: str,
        task: str,
        config: dict,
        seed: int,
        versions: dict,
        projection_hash: str | None,
        splits: dict[str, list[str]],
        datasets: Sequence[Dataset] = (),
        lease_owner: str | None = None,
    ) -> Run:
        """Insert a new run (status "running") with its split manifests; returns it.

        With `lease_owner`, the new run is created already claimed by that process, and only if no run of that
        name exists (checked in the same serialised transaction): otherwise RunExistsError, so two processes
        started with one name at once cannot both create it."""
        if not name:
            raise StoreError("run name must not be empty")
        seen: set[str] = set()
        for ds in datasets:
            if ds.split in seen:
                raise StoreError(f"dataset split {ds.split!r} given twice for run {name!r}")
            seen.add(ds.split)
        row = SqlRun(
            id=uuid.uuid4().hex,
            name=name,
            task=task,
            status="running",
            config=dict(config),
            seed=int(seed),
            projection_hash=projection_hash,
            versions=dict(versions),
            splits={k: list(v) for k, v in splits.items()},
            started_at=datetime.now(UTC),
            lease_owner=lease_owner,
            heartbeat_at=datetime.now(UTC) if lease_owner else None,
        )
        with self._scope(f"create_run({name!r})", write=True) as s:
            if lease_owner is not None:
                if s.bind.dialect.name == "postgresql":  # SQLite write transactions are serialised already
                    s.execute(
                        text("SELECT pg_advisory_xact_lock(:k)"),
                        {"k": int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)},
                    )
                other = s.scalar(select(SqlRun.id).where(SqlRun.name == name).limit(1))
                if other is not None:
                    raise RunExistsError(f"a run named {name!r} already exists ({other})")
            s.add(row)
            s.flush()
            for ds in datasets:
                s.add(
                    SqlDataset(
                        run_id=row.id,
                        task=ds.task,
                        split=ds.split,
                        content_hash=ds.content_hash,
                        example_ids=list(ds.example_ids),
                    )
                )
            s.flush()
            return _run_record(row)

    # ---------------------------------------------------------------------------------------------- leases

    def claim_run(self, run_id: str, owner: str, *, timeout_s: float, take_over: str | None = None) -> Run:
        """Take the run's lease for `owner` if it is free, already ours, stale (no heartbeat for `timeout_s`) or
        held by `take_over` (a holder the caller knows is dead); one atomic UPDATE, so of two processes claiming
        at once exactly one wins. Raises RunLeasedError (naming the holder and its last heartbeat) while another
        process holds it."""
        now = datetime.now(UTC)
        stale_before = now - timedelta(seconds=timeout_s)
        with self._scope(f"claim_run({run_id!r})", write=True) as s:
            row = self._get_run_row(s, run_id)
            won = s.execute(
                update(SqlRun)
                .where(
                    SqlRun.id == run_id,
                    or_(
                        SqlRun.lease_owner.is_(None),
                        SqlRun.lease_owner == owner,
                        SqlRun.heartbeat_at.is_(None),
                        SqlRun.heartbeat_at < stale_before,
                        *([SqlRun.lease_owner == take_over] if take_over else []),
                    ),
                )
                .values(lease_owner=owner, heartbeat_at=now)
                .execution_options(synchronize_session=False)
            ).rowcount
            s.expire_all()
            row = self._get_run_row(s, run_id)
            if won != 1:
                beat = _aware(row.heartbeat_at)
                age = (now - beat).total_seconds() if beat is not None else float("nan")
                raise RunLeasedError(
                    f"run {row.name!r} ({run_id}) is being run by another process ({row.lease_owner}, last "
                    f"heartbeat {age:.0f}s ago); wait for it to finish, or resume it once it has been silent for "
                    f"{timeout_s:.0f}s"
                )
            return _run_record(row)

    def heartbeat(self, run_id: str, owner: str) -> bool:
        """Renew `owner`'s lease; False when it no longer holds it (taken over after going stale)."""
        with self._scope(f"heartbeat({run_id!r})", write=True) as s:
            return (
                s.execute(
                    update(SqlRun)
                    .where(SqlRun.id == run_id, SqlRun.lease_owner == owner)
                    .values(heartbeat_at=datetime.now(UTC))
                    .execution_options(synchronize_session=False)
                ).rowcount
                == 1
            )

    def release_run(self, run_id: str, owner: str) -> None:
        """Give the lease up (no-op when `owner` does not hold it)."""
        with self._scope(f"release_run({run_id!r})", write=True) as s:
            s.execute(
                update(SqlRun)
                .where(SqlRun.id == run_id, SqlRun.lease_owner == owner)
                .values(lease_owner=None, heartbeat_at=None)
                .execution_options(synchronize_session=False)
            )

    def get_run(self, run_id: str) -> Run:
        with self._scope(f"get_run({run_id!r})") as s:
            return _run_record(self._get_run_row(s, run_id))

    def find_run_by_name(self, name: str) -> Run | None:
        """The newest run with that name, or None."""
        with self._scope(f"find_run_by_name({name!r})") as s:
            row = s.scalars(
                select(SqlRun).where(SqlRun.name == name).order_by(SqlRun.started_at.desc(), SqlRun.id.desc()).limit(1)
            ).first()
            return None if row is None else _run_record(row)

    def find_run(self, ref: str) -> Run:
        """The run a user names: its id, else the newest run of that name, else the one run whose id starts with
        `ref` (4 characters at least); RunNotFoundError saying which when none or several match."""
        with self._scope(f"find_run({ref!r})") as s:
            row = s.get(SqlRun, ref)
            if row is None:
                row = s.scalars(
                    select(SqlRun).where(SqlRun.name == ref).order_by(SqlRun.started_at.desc(), SqlRun.id.desc())
                ).first()
            if row is None and len(ref) >= 4 and all(ch in "0123456789abcdef" for ch in ref):
                matches = s.scalars(select(SqlRun).where(SqlRun.id.startswith(ref)).limit(6)).all()
                if len(matches) > 1:
                    ids = ", ".join(m.id for m in matches[:5])
                    raise RunNotFoundError(f"{ref!r} is the start of several run ids ({ids}); give more of it")
                row = matches[0] if matches else None
            if row is None:
                raise RunNotFoundError(
                    f"no run with id or name {ref!r} in the store (an id prefix needs 4 characters at least); "
                    "`instructzero runs` lists them"
                )
            return _run_record(row)

    def list_runs(self) -> list[Run]:
        """All runs, oldest first."""
        with self._scope("list_runs") as s:
            rows = s.scalars(select(SqlRun).order_by(SqlRun.started_at, SqlRun.id)).all()
            return [_run_record(r) for r in rows]

    def load_datasets(self, run_id: str) -> list[Dataset]:
        with self._scope(f"load_datasets({run_id!r})") as s:
            self._get_run_row(s, run_id)
            rows = s.scalars(select(SqlDataset).where(SqlDataset.run_id == run_id).order_by(SqlDataset.id)).all()
            return [
                Dataset(
                    task=r.task,
                    split=r.split,
                    content_hash=r.content_hash,
                    example_ids=tuple(r.example_ids),
                )
                for r in rows
            ]

    def set_run_status(
        self, run_id: str, status: str, *, error: str | None = None, prefect_flow_run_id: str | None = None
    ) -> None:
        """Set the status; terminal statuses stamp `finished_at`, "running" (a resume) clears it and the error."""
        if status not in RUN_STATUSES:
            raise StoreError(f"unknown run status {status!r}; expected one of {', '.join(RUN_STATUSES)}")
        with self._scope(f"set_run_status({run_id!r}, {status!r})", write=True) as s:
            row = self._get_run_row(s, run_id)
            row.status = status
            row.error = error
            row.finished_at = datetime.now(UTC) if status in TERMINAL_STATUSES else None
            if prefect_flow_run_id is not None:
                row.prefect_flow_run_id = prefect_flow_run_id

    # ---------------------------------------------------------------------------------------------- iterations

    @staticmethod
    def _validate_iteration(run_id: str, iteration: int, candidates: Sequence[Candidate]) -> list[_CandidateKey]:
        where = f"iteration {iteration} of run {run_id!r}"
        if not isinstance(iteration, int) or iteration < 0:
            raise StoreError(f"iteration must be a non-negative integer, got {iteration!r}")
        if not candidates:
            raise StoreError(f"{where}: no candidates to record")
        keys: list[_CandidateKey] = []
        seen: set[int] = set()
        for c in candidates:
            if c.index in seen:
                raise StoreError(f"{where}: candidate index {c.index} given twice")
            seen.add(c.index)
            if c.iteration != iteration:
                raise StoreError(f"{where}: candidate {c.index} is of iteration {c.iteration!r}")
            if (why := check_phase(c.phase)) is not None:
                raise StoreError(f"{where}: candidate {c.index}: {why}")
            if c.dev is None:
                raise StoreError(f"{where}: candidate {c.index} has no dev evaluation to record")
            if c.dev.split not in (None, "dev"):
                raise StoreError(f"{where}: candidate {c.index} carries a {c.dev.split!r} evaluation, expected 'dev'")
            z = None if c.z is None else tuple(_finite(v, f"{where}: candidate {c.index} z") for v in c.z)
            acq = (
                None
                if c.acquisition_value is None
                else _finite(c.acquisition_value, f"{where}: candidate {c.index} acquisition_value")
            )
            keys.append(
                _CandidateKey(
                    c.index,
                    c.phase,
                    z,
                    acq,
                    instruction_hash(c.instruction),
                    _finite(c.dev.mean_score, f"{where}: candidate {c.index} dev score"),
                )
            )
        return keys

    def record_iteration(self, run_id: str, iteration: int, candidates: Sequence[Candidate]) -> None:
        """Record all candidates of one iteration (with their instructions, `dev` evaluations and example scores) in
        ONE transaction; each candidate's `iteration` must be `iteration`. Re-recording an identical iteration is a
        no-op; a different one raises StoreError.

        An instruction text seen before in the run reuses its instructions row and its dev evaluation (per model);
        the candidate's own `dev_score` is the score the optimiser observed.
        """
        keys = self._validate_iteration(run_id, iteration, candidates)
        with self._scope(f"record_iteration({run_id!r}, {iteration})", write=True) as s:
            self._get_run_row(s, run_id)
            existing = s.execute(
                select(SqlCandidate, SqlInstruction.text_hash)
                .join(SqlInstruction, SqlInstruction.id == SqlCandidate.instruction_id)
                .where(SqlCandidate.run_id == run_id, SqlCandidate.iteration == iteration)
                .order_by(SqlCandidate.index)
            ).all()
            if existing:
                stored = [
                    _CandidateKey(
                        c.index,
                        c.phase,
                        None if c.z is None else tuple(float(v) for v in c.z),
                        c.acquisition_value,
                        h,
                        c.dev_score,
                    )
                    for c, h in existing
                ]
                if stored == sorted(keys, key=lambda k: k.index):
                    return
                raise StoreError(
                    f"iteration {iteration} of run {run_id!r} is already recorded with different candidates "
                    f"({len(stored)} stored, {len(keys)} given); refusing to overwrite it"
                )
            instr_ids: dict[str, int] = {}
            for c, key in zip(candidates, keys, strict=True):
                iid = instr_ids.get(key.instruction_hash)
                if iid is None:
                    iid = self._instruction_id(s, run_id, c.instruction, key.instruction_hash)
                    instr_ids[key.instruction_hash] = iid
                assert c.dev is not None  # checked by _validate_iteration
                ev_id = self._evaluation_id(s, run_id, iid, c.dev, "dev", replace=False)
                s.add(
                    SqlCandidate(
                        run_id=run_id,
                        iteration=iteration,
                        index=c.index,
                        phase=c.phase,
                        z=None if key.z is None else list(key.z),
                        acquisition_value=key.acquisition_value,
                        instruction_id=iid,
                        dev_evaluation_id=ev_id,
                        dev_score=key.dev_score,
                        test_score=self._latest_test_score(s, iid),
                    )
                )
            s.flush()

    @staticmethod
    def _instruction_id(s: Session, run_id: str, text: str, text_hash: str) -> int:
        iid = s.scalar(
            select(SqlInstruction.id).where(SqlInstruction.run_id == run_id, SqlInstruction.text_hash == text_hash)
        )
        if iid is not None:
            return iid
        row = SqlInstruction(run_id=run_id, text_hash=text_hash, text=text)
        s.add(row)
        s.flush()
        return row.id

    @staticmethod
    def _latest_test_score(s: Session, instruction_id: int) -> float | None:
        return s.scalar(
            select(SqlEvaluation.mean_score)
            .where(SqlEvaluation.instruction_id == instruction_id, SqlEvaluation.split == "test")
            .order_by(SqlEvaluation.created_at.desc(), SqlEvaluation.id.desc())
            .limit(1)
        )

    @staticmethod
    def _evaluation_id(
        s: Session, run_id: str, instruction_id: int, ev: Evaluation, split: str, *, replace: bool
    ) -> int:
        """The evaluation row of (instruction, split, model): reused as is (replace=False) or overwritten."""
        row = s.scalars(
            select(SqlEvaluation).where(
                SqlEvaluation.instruction_id == instruction_id,
                SqlEvaluation.split == split,
                SqlEvaluation.model == ev.model,
            )
        ).first()
        if row is not None and not replace:
            return row.id
        values = dict(
            mean_score=float(ev.mean_score),
            n_examples=len(ev.examples),
            prompt_tokens=int(ev.prompt_tokens),
            completion_tokens=int(ev.completion_tokens),
            latency_s=float(ev.latency_s),
            n_calls=int(ev.n_calls),
            n_cached=int(ev.n_cached),
            created_at=datetime.now(UTC),
        )
        if row is None:
            row = SqlEvaluation(run_id=run_id, instruction_id=instruction_id, split=split, model=ev.model, **values)
            s.add(row)
            s.flush()
        else:
            for k, v in values.items():
                setattr(row, k, v)
            s.query(SqlExampleScore).filter(SqlExampleScore.evaluation_id == row.id).delete(synchronize_session=False)
            s.flush()
        if ev.examples:
            s.execute(
                insert(SqlExampleScore),
                [
                    {
                        "evaluation_id": row.id,
                        "example_id": e.example_id,
                        "prediction": e.prediction,
                        "score": float(e.score),
                    }
                    for e in ev.examples
                ],
            )
        return row.id

    def completed_iterations(self, run_id: str) -> list[int]:
        with self._scope(f"completed_iterations({run_id!r})") as s:
            self._get_run_row(s, run_id)
            return list(
                s.scalars(
                    select(SqlCandidate.iteration)
                    .where(SqlCandidate.run_id == run_id)
                    .distinct()
                    .order_by(SqlCandidate.iteration)
                )
            )

    def load_candidates(self, run_id: str) -> list[Candidate]:
        """All candidates of the run ordered by (iteration, index), with their dev scores and per-example dev scores
        (not their whole `dev` evaluation: `load_evaluations` has it) and their instruction's latest test score."""
        with self._scope(f"load_candidates({run_id!r})") as s:
            self._get_run_row(s, run_id)
            rows = s.execute(
                select(SqlCandidate, SqlInstruction.text)
                .join(SqlInstruction, SqlInstruction.id == SqlCandidate.instruction_id)
                .where(SqlCandidate.run_id == run_id)
                .order_by(SqlCandidate.iteration, SqlCandidate.index)
            ).all()
            ev_ids = {c.dev_evaluation_id for c, _ in rows if c.dev_evaluation_id is not None}
            scores: dict[int, dict[str, float]] = defaultdict(dict)
            if ev_ids:
                for ev_id, ex_id, score in s.execute(
                    select(SqlExampleScore.evaluation_id, SqlExampleScore.example_id, SqlExampleScore.score)
                    .join(SqlEvaluation, SqlEvaluation.id == SqlExampleScore.evaluation_id)
                    .where(SqlEvaluation.run_id == run_id, SqlEvaluation.split == "dev")
                    .order_by(SqlExampleScore.id)
                ):
                    scores[ev_id][ex_id] = score
            return [
                Candidate(
                    iteration=c.iteration,
                    index=c.index,
                    phase=c.phase,
                    z=None if c.z is None else tuple(float(v) for v in c.z),
                    acquisition_value=c.acquisition_value,
                    instruction=text,
                    dev_score=c.dev_score,
                    test_score=c.test_score,
                    dev_example_scores=dict(scores.get(c.dev_evaluation_id, {})) if c.dev_evaluation_id else {},
                )
                for c, text in rows
            ]

    def record_test_evaluation(self, run_id: str, evaluation: Evaluation) -> None:
        """Store the test evaluation of its instruction (creating the instruction row for baselines that are not
        candidates). Re-recording for the same (instruction, model) replaces the previous one. Candidates of the
        run with that instruction get the new `test_score`."""
        if evaluation.split not in (None, "test"):
            raise StoreError(f"record_test_evaluation expects a 'test' evaluation, got split {evaluation.split!r}")
        instruction = evaluation.instruction
        _finite(evaluation.mean_score, f"test score of instruction {instruction[:60]!r}")
        h = instruction_hash(instruction)
        with self._scope(f"record_test_evaluation({run_id!r})", write=True) as s:
            self._get_run_row(s, run_id)
            iid = self._instruction_id(s, run_id, instruction, h)
            self._evaluation_id(s, run_id, iid, evaluation, "test", replace=True)
            s.execute(
                update(SqlCandidate)
                .where(SqlCandidate.run_id == run_id, SqlCandidate.instruction_id == iid)
                .values(test_score=float(evaluation.mean_score))
            )

    def load_evaluations(self, run_id: str, split: str | None = None) -> list[Evaluation]:
        """All evaluations of the run (optionally of one split), oldest first, with their example scores."""
        with self._scope(f"load_evaluations({run_id!r})") as s:
            self._get_run_row(s, run_id)
            q = (
                select(SqlEvaluation, SqlInstruction.text)
                .join(SqlInstruction, SqlInstruction.id == SqlEvaluation.instruction_id)
                .where(SqlEvaluation.run_id == run_id)
                .order_by(SqlEvaluation.id)
            )
            if split is not None:
                q = q.where(SqlEvaluation.split == split)
            rows = s.execute(q).all()
            examples: dict[int, list[ExampleScore]] = defaultdict(list)
            ids = [e.id for e, _ in rows]
            if ids:
                for ex in s.scalars(
                    select(SqlExampleScore).where(SqlExampleScore.evaluation_id.in_(ids)).order_by(SqlExampleScore.id)
                ):
                    examples[ex.evaluation_id].append(ExampleScore(ex.example_id, ex.prediction, ex.score))
            return [
                Evaluation(
                    instruction=text,
                    model=e.model,
                    mean_score=e.mean_score,
                    examples=tuple(examples.get(e.id, ())),
                    prompt_tokens=e.prompt_tokens,
                    completion_tokens=e.completion_tokens,
                    latency_s=e.latency_s,
                    n_calls=e.n_calls,
                    n_cached=e.n_cached,
                    split=e.split,
                    created_at=_aware(e.created_at),
                )
                for e, text in rows
            ]

    # -------------------------------------------------------------------------------------- black-box cache

    def get_llm_call(self, request_hash: str) -> BlackBoxCall | None:
        """The ledger's call of that request (the persistent response cache), whatever its status."""
        with self._scope("get_llm_call") as s:
            r = s.scalars(select(SqlLLMCall).where(SqlLLMCall.request_hash == request_hash)).first()
            if r is None:
                return None
            return BlackBoxCall(
                request_hash=r.request_hash,
                model=r.model,
                prompt=r.prompt,
                text=r.response_text,
                prompt_tokens=r.prompt_tokens,
                completion_tokens=r.completion_tokens,
                latency_s=r.latency_s,
                retries=r.retries,
                status=r.status,
                cost_usd=r.cost_usd,
                run_id=r.run_id,
            )

    def put_llm_call(self, call: BlackBoxCall) -> None:
        """Insert-or-ignore keyed by `request_hash`, in its own short transaction (safe under concurrent writers:
        the first writer wins, later ones are no-ops). `cached` is not stored."""
        values = dict(
            request_hash=call.request_hash,
            model=call.model,
            prompt=call.prompt,
            response_text=call.text,
            prompt_tokens=int(call.prompt_tokens),
            completion_tokens=int(call.completion_tokens),
            latency_s=float(call.latency_s),
            retries=int(call.retries),
            status=call.status,
            cost_usd=None if call.cost_usd is None else float(call.cost_usd),
            run_id=call.run_id,
            created_at=datetime.now(UTC),
        )
        dialect = self._engine.dialect.name
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        elif dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert  # type: ignore[assignment]
        else:
            dialect_insert = None  # type: ignore[assignment]
        try:
            with self._scope("put_llm_call", write=True) as s:
                if dialect_insert is not None:
                    s.execute(
                        dialect_insert(SqlLLMCall)
                        .values(**values)
                        .on_conflict_do_nothing(index_elements=["request_hash"])
                    )
                else:
                    exists = s.scalar(select(SqlLLMCall.id).where(SqlLLMCall.request_hash == call.request_hash))
                    if exists is None:
                        s.execute(insert(SqlLLMCall).values(**values))
        except StoreError:
            if dialect_insert is None and self.get_llm_call(call.request_hash) is not None:
                return  # lost a race on a dialect without ON CONFLICT: the other writer's row stands
            raise

    def count_llm_calls(self, run_id: str | None = None) -> int:
        """Black-box answers persisted (by the run that first paid for them, or all): what a resume will not pay."""
        with self._scope("count_llm_calls") as s:
            q = select(func.count()).select_from(SqlLLMCall)
            if run_id is not None:
                q = q.where(SqlLLMCall.run_id == run_id)
            return int(s.scalar(q) or 0)

    def llm_spend(self, run_id: str) -> tuple[int, int, int, float]:
        """(calls, prompt tokens, completion tokens, cost USD) of the black-box calls this run paid for: the
        ledger that spend limits are checked against (answers served from the cache are not in it)."""
        with self._scope(f"llm_spend({run_id!r})") as s:
            row = s.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(SqlLLMCall.prompt_tokens), 0),
                    func.coalesce(func.sum(SqlLLMCall.completion_tokens), 0),
                    func.coalesce(func.sum(SqlLLMCall.cost_usd), 0.0),
                ).where(SqlLLMCall.run_id == run_id)
            ).one()
            return int(row[0]), int(row[1]), int(row[2]), float(row[3])

    # ------------------------------------------------------------------------------------------------ metrics

    def record_metric(self, run_id: str, key: str, step: int, value: float) -> None:
        """Upsert one (run, key, step) metric value."""
        value = _finite(value, f"metric {key!r} at step {step}")
        with self._scope(f"record_metric({run_id!r}, {key!r})", write=True) as s:
            self._get_run_row(s, run_id)
            row = s.scalars(
                select(SqlMetric).where(SqlMetric.run_id == run_id, SqlMetric.key == key, SqlMetric.step == step)
            ).first()
            if row is None:
                s.add(SqlMetric(run_id=run_id, key=key, step=int(step), value=value))
            else:
                row.value = value

    def record_metrics(self, run_id: str, values: Mapping[str, float], step: int = 0) -> None:
        """Upsert several metrics of one step in one transaction (a report is stored whole or not at all)."""
        checked = {key: _finite(value, f"metric {key!r} at step {step}") for key, value in values.items()}
        with self._scope(f"record_metrics({run_id!r})", write=True) as s:
            self._get_run_row(s, run_id)
            existing = {
                m.key: m
                for m in s.scalars(
                    select(SqlMetric).where(
                        SqlMetric.run_id == run_id, SqlMetric.step == step, SqlMetric.key.in_(list(checked))
                    )
                )
            }
            for key, value in checked.items():
                if key in existing:
                    existing[key].value = value
                else:
                    s.add(SqlMetric(run_id=run_id, key=key, step=int(step), value=value))

    def load_metrics(self, run_id: str, key: str | None = None) -> list[Metric]:
        with self._scope(f"load_metrics({run_id!r})") as s:
            self._get_run_row(s, run_id)
            q = select(SqlMetric).where(SqlMetric.run_id == run_id).order_by(SqlMetric.key, SqlMetric.step)
            if key is not None:
                q = q.where(SqlMetric.key == key)
            return [Metric(m.key, m.step, m.value) for m in s.scalars(q)]
