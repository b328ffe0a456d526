"""Run lease (one process per run): runs.lease_owner + runs.heartbeat_at; store URLs in runs.config redacted.

Revision ID: 0002_run_lease
Revises: 0001_initial
Create Date: 2025-02-01 00:00:00
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import make_url

revision: str = "0002_run_lease"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _redacted(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL: keep as is
        return url


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(128), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
    # Stores written before this revision kept the store URL, password included, in runs.config.
    conn = op.get_bind()
    runs = sa.table("runs", sa.column("id", sa.String), sa.column("config", sa.JSON))
    for run_id, config in conn.execute(sa.select(runs.c.id, runs.c.config)).all():
        config = json.loads(config) if isinstance(config, str) else config
        if isinstance(config, dict) and isinstance(config.get("store_url"), str):
            redacted = _redacted(config["store_url"])
            if redacted != config["store_url"]:
                conn.execute(runs.update().where(runs.c.id == run_id).values(config={**config, "store_url": redacted}))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("lease_owner")
