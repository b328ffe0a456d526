"""Initial schema: runs, datasets, instructions, evaluations, candidates, example_scores, llm_calls, metrics.

Revision ID: 0001_initial
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("task", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("projection_hash", sa.String(64), nullable=True),
        sa.Column("versions", sa.JSON(), nullable=False),
        sa.Column("splits", sa.JSON(), nullable=False),
        sa.Column("prefect_flow_run_id", sa.String(64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("finished_at", TZ, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        sa.CheckConstraint("status IN ('running', 'completed', 'failed', 'interrupted')", name="ck_runs_status"),
    )
    op.create_index("ix_runs_name_started_at", "runs", ["name", "started_at"])

    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("task", sa.String(255), nullable=False),
        sa.Column("split", sa.String(32), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("example_ids", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_datasets"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_datasets_run_id_runs", ondelete="CASCADE"),
        sa.UniqueConstraint("run_id", "split", name="uq_datasets_run_id_split"),
    )

    op.create_table(
        "instructions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("text_hash", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_instructions"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_instructions_run_id_runs", ondelete="CASCADE"),
        sa.UniqueConstraint("run_id", "text_hash", name="uq_instructions_run_id_text_hash"),
    )

    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("instruction_id", sa.Integer(), nullable=False),
        sa.Column("split", sa.String(8), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("mean_score", sa.Double(), nullable=False),
        sa.Column("n_examples", sa.Integer(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("latency_s", sa.Double(), nullable=False),
        sa.Column("n_calls", sa.Integer(), nullable=False),
        sa.Column("n_cached", sa.Integer(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_evaluations"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_evaluations_run_id_runs", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["instruction_id"],
            ["instructions.id"],
            name="fk_evaluations_instruction_id_instructions",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("instruction_id", "split", "model", name="uq_evaluations_instruction_id_split_model"),
        sa.CheckConstraint("split IN ('dev', 'test')", name="ck_evaluations_split"),
    )
    op.create_index("ix_evaluations_run_id_split", "evaluations", ["run_id", "split"])

    op.create_table(
        "candidates",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("iteration", sa.Integer(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("z", sa.JSON(), nullable=True),
        sa.Column("acquisition_value", sa.Double(), nullable=True),
        sa.Column("instruction_id", sa.Integer(), nullable=False),
        sa.Column("dev_evaluation_id", sa.Integer(), nullable=True),
        sa.Column("dev_score", sa.Double(), nullable=True),
        sa.Column("test_score", sa.Double(), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_candidates"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_candidates_run_id_runs", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["instruction_id"],
            ["instructions.id"],
            name="fk_candidates_instruction_id_instructions",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["dev_evaluation_id"],
            ["evaluations.id"],
            name="fk_candidates_dev_evaluation_id_evaluations",
            ondelete="SET NULL",
        ),
        sa.UniqueConstraint("run_id", "iteration", "index", name="uq_candidates_run_id_iteration_index"),
        sa.CheckConstraint("phase IN ('init', 'bo', 'uniform', 'baseline')", name="ck_candidates_phase"),
    )
    op.create_index("ix_candidates_instruction_id", "candidates", ["instruction_id"])

    op.create_table(
        "example_scores",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("evaluation_id", sa.Integer(), nullable=False),
        sa.Column("example_id", sa.String(255), nullable=False),
        sa.Column("prediction", sa.Text(), nullable=False),
        sa.Column("score", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_example_scores"),
        sa.ForeignKeyConstraint(
            ["evaluation_id"],
            ["evaluations.id"],
            name="fk_example_scores_evaluation_id_evaluations",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("evaluation_id", "example_id", name="uq_example_scores_evaluation_id_example_id"),
    )

    op.create_table(
        "llm_calls",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("response_text", sa.Text(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("latency_s", sa.Double(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("cost_usd", sa.Double(), nullable=True),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_llm_calls"),
        sa.UniqueConstraint("request_hash", name="uq_llm_calls_request_hash"),
    )
    op.create_index("ix_llm_calls_run_id", "llm_calls", ["run_id"])
    op.create_index("ix_llm_calls_model", "llm_calls", ["model"])

    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_metrics"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_metrics_run_id_runs", ondelete="CASCADE"),
        sa.UniqueConstraint("run_id", "key", "step", name="uq_metrics_run_id_key_step"),
    )


def downgrade() -> None:
    op.drop_table("metrics")
    op.drop_index("ix_llm_calls_model", table_name="llm_calls")
    op.drop_index("ix_llm_calls_run_id", table_name="llm_calls")
    op.drop_table("llm_calls")
    op.drop_table("example_scores")
    op.drop_index("ix_candidates_instruction_id", table_name="candidates")
    op.drop_table("candidates")
    op.drop_index("ix_evaluations_run_id_split", table_name="evaluations")
    op.drop_table("evaluations")
    op.drop_table("instructions")
    op.drop_table("datasets")
    op.drop_index("ix_runs_name_started_at", table_name="runs")
    op.drop_table("runs")
