"""A candidate's phase is data: the CHECK listing the phases of the built-in strategies goes, the column widens.

Until 0003 the store named the strategies' phases ('init', 'bo', 'uniform', 'baseline'), so a new search strategy
needed a migration before its first candidate could be recorded. Which phases a strategy may write is now its own
declaration (`Proposer.phases`, checked when it proposes); the store only checks the phase is a short name
(`storage.records.check_phase`).

Downgrading restores the CHECK, and refuses (naming the phases found) while candidates hold a phase the old schema
cannot take: dropping or rewriting them would lose runs.

Revision ID: 0004_phase_is_data
Revises: 0003_one_retry_count
Create Date: 2026-12-05 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_phase_is_data"
down_revision: str | None = "0003_one_retry_count"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_PHASES = ("init", "bo", "uniform", "baseline")
OLD_CHECK = "phase IN ('init', 'bo', 'uniform', 'baseline')"
CHECK_NAME = "ck_candidates_ck_candidates_phase"  # as 0001 named it (the naming convention prefixed it again)


def _candidates(phase_len: int, *, check: bool) -> sa.Table:
    """The candidates table as it stands (given to SQLite's batch rebuild instead of a reflection, which keeps or
    loses a CHECK depending on how the table was created)."""
    constraints: list[sa.Constraint] = [
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
    ]
    if check:
        constraints.append(sa.CheckConstraint(OLD_CHECK, name=CHECK_NAME))
    return sa.Table(
        "candidates",
        sa.MetaData(),
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("iteration", sa.Integer(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("phase", sa.String(phase_len), nullable=False),
        sa.Column("z", sa.JSON(), nullable=True),
        sa.Column("acquisition_value", sa.Double(), nullable=True),
        sa.Column("instruction_id", sa.Integer(), nullable=False),
        sa.Column("dev_evaluation_id", sa.Integer(), nullable=True),
        sa.Column("dev_score", sa.Double(), nullable=True),
        sa.Column("test_score", sa.Double(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Index("ix_candidates_instruction_id", "instruction_id"),
        *constraints,
    )


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":  # a rebuild: copy into the table below, without the CHECK
        with op.batch_alter_table("candidates", copy_from=_candidates(16, check=False), recreate="always") as batch:
            batch.alter_column("phase", existing_type=sa.String(16), type_=sa.String(32), existing_nullable=False)
        return
    for check in sa.inspect(op.get_bind()).get_check_constraints("candidates"):
        if "phase" in check["sqltext"] and check["name"]:
            op.drop_constraint(op.f(check["name"]), "candidates", type_="check")
    op.alter_column("candidates", "phase", existing_type=sa.String(16), type_=sa.String(32), existing_nullable=False)


def downgrade() -> None:
    found = op.get_bind().execute(sa.text("SELECT DISTINCT phase FROM candidates")).scalars().all()
    other = sorted(set(found) - set(OLD_PHASES))
    if other:
        raise RuntimeError(
            f"cannot downgrade below 0004_phase_is_data: candidates hold phases {', '.join(map(repr, other))}, "
            f"which the older schema refuses (it takes {', '.join(map(repr, OLD_PHASES))} only)"
        )
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("candidates", copy_from=_candidates(16, check=True), recreate="always"):
            pass  # the table above: phase VARCHAR(16) and the CHECK back
        return
    op.alter_column("candidates", "phase", existing_type=sa.String(32), type_=sa.String(16), existing_nullable=False)
    op.create_check_constraint(op.f(CHECK_NAME), "candidates", OLD_CHECK)
