"""Alembic migrations: fresh stores reach head, up/down work, out-of-date and unknown schemas are refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

import instructzero.storage.session as session_mod
from instructzero.storage.errors import StoreError
from instructzero.storage.models import Base
from instructzero.storage.repository import RunStore
from instructzero.storage.session import downgrade_store, head_revision, normalize_url, store_revision, upgrade_store
from tests.plugins.store import populate
from tests.storage.test_repository import counts

OUR_TABLES = set(Base.metadata.tables)

HEAD = "0004_phase_is_data"
NEXT_REVISION = f'''"""test-only next revision: adds runs.note

Revision ID: 9000_test_note
Revises: {HEAD}
"""
import sqlalchemy as sa
from alembic import op

revision = "9000_test_note"
down_revision = "{HEAD}"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("note")
'''


def tables(url: str) -> set[str]:
    engine = create_engine(normalize_url(url))
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def execute(url: str, sql: str) -> None:
    engine = create_engine(normalize_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


@pytest.fixture
def newer_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Pretend this code has a newer migration: a copy of storage/migrations plus 9000_test_note."""
    migrations = tmp_path / "migrations"
    shutil.copytree(session_mod.MIGRATIONS_DIR, migrations, ignore=shutil.ignore_patterns("__pycache__"))
    (migrations / "versions" / "9000_test_note.py").write_text(NEXT_REVISION)
    monkeypatch.setattr(session_mod, "MIGRATIONS_DIR", migrations)
    return migrations


def test_fresh_store_is_upgraded_to_head(store_url: str) -> None:
    assert store_revision(store_url) is None
    RunStore(store_url).close()
    assert store_revision(store_url) == head_revision() == HEAD
    assert OUR_TABLES <= tables(store_url)


def test_migrations_match_the_models(store_url: str) -> None:
    upgrade_store(store_url)
    engine = create_engine(normalize_url(store_url))
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_downgrade_and_upgrade_again(store_url: str) -> None:
    with RunStore(store_url) as store:
        populate(store, n_iterations=1)
    assert downgrade_store(store_url, "base") == "base"
    assert tables(store_url) & OUR_TABLES == set()
    assert upgrade_store(store_url) == HEAD
    with RunStore(store_url) as store:
        assert store.list_runs() == []
        populate(store, n_iterations=1)


def test_out_of_date_store_is_refused_until_upgraded(store_url: str, newer_code: Path) -> None:
    upgrade_store(store_url, "0001_initial")
    assert head_revision() == "9000_test_note"
    with pytest.raises(
        StoreError,
        match=r"revision '0001_initial' but this version needs '9000_test_note'.*"
        r"instructzero db upgrade",
    ):
        RunStore(store_url)
    assert upgrade_store(store_url) == "9000_test_note"
    engine = create_engine(normalize_url(store_url))
    try:
        assert "note" in {c["name"] for c in inspect(engine).get_columns("runs")}
    finally:
        engine.dispose()
    with RunStore(store_url) as store:
        populate(store, n_iterations=1)
    assert downgrade_store(store_url, "0001_initial") == "0001_initial"
    with pytest.raises(StoreError, match="instructzero db upgrade"):
        RunStore(store_url)


def test_unknown_newer_revision_is_refused(store_url: str) -> None:
    RunStore(store_url).close()
    execute(store_url, "UPDATE alembic_version SET version_num = '9999_from_the_future'")
    with pytest.raises(StoreError, match="'9999_from_the_future', which this version of instructzero does not know"):
        RunStore(store_url)


def test_unversioned_tables_are_refused(store_url: str) -> None:
    execute(store_url, "CREATE TABLE runs (id VARCHAR(32) PRIMARY KEY)")
    with pytest.raises(StoreError, match="no schema revision"):
        RunStore(store_url)


def test_bad_target_revision(sqlite_url: str) -> None:
    with pytest.raises(StoreError, match="'nope'"):
        upgrade_store(sqlite_url, "nope")


def test_0002_adds_the_lease_and_redacts_stored_store_urls(store_url: str) -> None:
    """A store from before 0002 kept the store URL's password in runs.config; the upgrade redacts it."""
    upgrade_store(store_url, "0001_initial")
    execute(
        store_url,
        "INSERT INTO runs (id, name, task, status, config, seed, versions, splits, started_at) "
        "VALUES ('r1', 'old', 'sum', 'running', "
        "'{\"store_url\": \"postgresql+psycopg://iz:s3cret@db/iz\", \"seed\": 0}', 0, '{}', '{}', "
        "'2025-01-01 00:00:00')",
    )
    assert upgrade_store(store_url) == HEAD
    with RunStore(store_url) as store:
        run = store.get_run("r1")
        assert run.config == {"store_url": "postgresql+psycopg://iz:***@db/iz", "seed": 0}
        assert run.lease_owner is None and run.heartbeat_at is None


def test_upgrading_a_populated_store_keeps_every_row(store_url: str) -> None:
    """A store with data, taken back to 0002 and upgraded again: 0003 rebuilds `evaluations` (SQLite batch mode:
    copy, drop, rename), which with foreign keys enforced cascaded into `example_scores` and deleted all of
    them. Every table keeps its rows, on SQLite and PostgreSQL."""
    with RunStore(store_url) as store:
        populate(store, n_iterations=2)
    before = counts(store_url)
    assert before["example_scores"] > 0
    assert downgrade_store(store_url, "0002_run_lease") == "0002_run_lease"
    assert counts(store_url) == before
    assert upgrade_store(store_url) == head_revision()
    assert counts(store_url) == before
    with RunStore(store_url) as store:
        run = store.list_runs()[0]
        assert all(ev.examples for ev in store.load_evaluations(run.id))


def test_0004_drops_the_phase_check_and_keeps_every_row(store_url: str) -> None:
    """0003 refused any phase but the built-in strategies'; 0004 takes any name. Up and down again with every row
    kept, on SQLite (a table rebuild) and PostgreSQL; a downgrade that would strand a new phase is refused, with
    nothing changed, until those candidates are gone."""
    with RunStore(store_url) as store:
        populate(store, n_iterations=2)
    before = counts(store_url)
    assert downgrade_store(store_url, "0003_one_retry_count") == "0003_one_retry_count"
    assert counts(store_url) == before
    with pytest.raises(Exception, match="CHECK|check"):  # the old schema refuses a new strategy's phase
        execute(store_url, "UPDATE candidates SET phase = 'explore' WHERE iteration = 0")
    assert upgrade_store(store_url) == HEAD
    assert counts(store_url) == before
    execute(store_url, "UPDATE candidates SET phase = 'explore' WHERE iteration = 0")
    with pytest.raises(StoreError, match=r"candidates hold phases 'explore', which the older schema refuses"):
        downgrade_store(store_url, "0003_one_retry_count")
    assert store_revision(store_url) == HEAD and counts(store_url) == before
    with RunStore(store_url) as store:
        [run] = store.list_runs()
        phases = [c.phase for c in store.load_candidates(run.id)]
        assert phases == ["explore", "explore", "bo", "bo"]
        assert all(ev.examples for ev in store.load_evaluations(run.id))
