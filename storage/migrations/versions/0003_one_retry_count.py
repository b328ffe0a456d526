"""One retry count: evaluations.retries dropped; retries live only in the ledger (llm_calls.retries).

An evaluation counted the retries of the calls it sent itself, so after a failed-then-resumed run (whose first
attempt had already paid for, and stored, some answers) its sum disagreed with the ledger's. The ledger records
every answer once, with the retries it took; the `cost_per_run` and `cost_by_iteration` views read it.

Revision ID: 0003_one_retry_count
Revises: 0002_run_lease
Create Date: 2026-12-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_one_retry_count"
down_revision: str | None = "0002_run_lease"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("evaluations") as batch:
        batch.drop_column("retries")


def downgrade() -> None:
    # The per-evaluation split of the ledger's retries is not recoverable; 0 is what a cached evaluation had.
    with op.batch_alter_table("evaluations") as batch:
        batch.add_column(sa.Column("retries", sa.Integer(), nullable=False, server_default="0"))
