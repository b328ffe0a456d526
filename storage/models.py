"""SQLAlchemy 2.0 ORM models of the store (schema revision `0004_phase_is_data`).

Plural snake_case tables, named constraints (naming convention below). Every change here needs a new Alembic
revision in `storage/migrations/versions/`; `tests/storage/test_migrations.py` checks that the migrations and
these models agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from instructzero.storage.lossless_text import LosslessText
from instructzero.storage.records import PHASE_MAX_LEN

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

HASH_LEN = 64  # sha256 hex digest


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class SqlRun(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid4 hex
    name: Mapped[str] = mapped_column(String(255))
    task: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    seed: Mapped[int] = mapped_column(Integer)
    projection_hash: Mapped[str | None] = mapped_column(String(HASH_LEN))
    versions: Mapped[dict[str, Any]] = mapped_column(JSON)
    splits: Mapped[dict[str, list[str]]] = mapped_column(JSON)
    prefect_flow_run_id: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(LosslessText)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_owner: Mapped[str | None] = mapped_column(String(128))  # the process running it ("host:pid:nonce")
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # the owner's last sign of life

    __table_args__ = (
        CheckConstraint("status IN ('running', 'completed', 'failed', 'interrupted')", name="status"),
        Index("ix_runs_name_started_at", "name", "started_at"),
    )


class SqlDataset(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    task: Mapped[str] = mapped_column(String(255))
    split: Mapped[str] = mapped_column(String(32))
    content_hash: Mapped[str] = mapped_column(String(HASH_LEN))
    example_ids: Mapped[list[str]] = mapped_column(JSON)

    __table_args__ = (UniqueConstraint("run_id", "split"),)


class SqlInstruction(Base):
    __tablename__ = "instructions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    text_hash: Mapped[str] = mapped_column(String(HASH_LEN))
    text: Mapped[str] = mapped_column(LosslessText)

    __table_args__ = (UniqueConstraint("run_id", "text_hash"),)


class SqlEvaluation(Base):
    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    instruction_id: Mapped[int] = mapped_column(ForeignKey("instructions.id", ondelete="CASCADE"))
    split: Mapped[str] = mapped_column(String(8))
    model: Mapped[str] = mapped_column(String(255))
    mean_score: Mapped[float] = mapped_column(Double)
    n_examples: Mapped[int] = mapped_column(Integer)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    latency_s: Mapped[float] = mapped_column(Double)
    n_calls: Mapped[int] = mapped_column(Integer)
    n_cached: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        UniqueConstraint("instruction_id", "split", "model"),
        CheckConstraint("split IN ('dev', 'test')", name="split"),
        Index("ix_evaluations_run_id_split", "run_id", "split"),
    )


class SqlCandidate(Base):
    __tablename__ = "candidates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    iteration: Mapped[int] = mapped_column(Integer)
    index: Mapped[int] = mapped_column(Integer)
    phase: Mapped[str] = mapped_column(String(PHASE_MAX_LEN))  # a name the strategy declares, no CHECK: see records
    z: Mapped[list[float] | None] = mapped_column(JSON)  # JSON list; Python's float repr round-trips float64
    acquisition_value: Mapped[float | None] = mapped_column(Double)
    instruction_id: Mapped[int] = mapped_column(ForeignKey("instructions.id", ondelete="CASCADE"))
    dev_evaluation_id: Mapped[int | None] = mapped_column(ForeignKey("evaluations.id", ondelete="SET NULL"))
    dev_score: Mapped[float | None] = mapped_column(Double)  # the score the optimiser observed
    test_score: Mapped[float | None] = mapped_column(Double)  # latest test evaluation of the instruction
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        UniqueConstraint("run_id", "iteration", "index"),
        Index("ix_candidates_instruction_id", "instruction_id"),
    )


class SqlExampleScore(Base):
    __tablename__ = "example_scores"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    evaluation_id: Mapped[int] = mapped_column(ForeignKey("evaluations.id", ondelete="CASCADE"))
    example_id: Mapped[str] = mapped_column(String(255))
    prediction: Mapped[str] = mapped_column(LosslessText)
    score: Mapped[float] = mapped_column(Double)

    __table_args__ = (UniqueConstraint("evaluation_id", "example_id"),)


class SqlLLMCall(Base):
    __tablename__ = "llm_calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_hash: Mapped[str] = mapped_column(String(HASH_LEN))
    model: Mapped[str] = mapped_column(String(255))
    prompt: Mapped[str] = mapped_column(LosslessText)
    response_text: Mapped[str] = mapped_column(LosslessText)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    latency_s: Mapped[float] = mapped_column(Double)
    retries: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32))
    cost_usd: Mapped[float | None] = mapped_column(Double)
    run_id: Mapped[str | None] = mapped_column(String(32))  # run that first paid for it; not a FK (cache outlives runs)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        UniqueConstraint("request_hash"),
        Index("ix_llm_calls_run_id", "run_id"),
        Index("ix_llm_calls_model", "model"),
    )


class SqlMetric(Base):
    __tablename__ = "metrics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    step: Mapped[int] = mapped_column(Integer)
    value: Mapped[float] = mapped_column(Double)

    __table_args__ = (UniqueConstraint("run_id", "key", "step"),)
