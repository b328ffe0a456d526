"""`instructzero sql` cannot be escaped: hostile SQL, spelled to slip past the text filter, run against the
sandboxed DuckDB itself (filter bypassed) on SQLite and PostgreSQL stores. Nothing is written to the store, nothing
outside the store is read, no password, path or other database's row comes back.

The statement counts are printed (run with -s)."""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from pathlib import Path

import duckdb
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from instructzero.storage.analytics import Analytics
from instructzero.storage.errors import StoreError
from instructzero.storage.repository import RunStore
from instructzero.storage.session import normalize_url
from tests.plugins.store import populate

PASSWORD = "hunter2-" + uuid.uuid4().hex[:8]
OTHER_ROW = "TOPSECRET-" + uuid.uuid4().hex[:8]

# {other}: another application's SQLite file holding OTHER_ROW; {pg}: a libpq conninfo of the PostgreSQL server
# with the password (or of a made-up one, for SQLite stores); {tmp}: a scratch directory.
HOSTILE = [
    # the statements
    "SELECT E'\\\\'' AS a, * FROM postgres_execute($$store$$, $$COMMIT; BEGIN READ WRITE; DELETE FROM alembic_version; "
    "CREATE TABLE pwned(x int); COMMIT$$) --'",
    "/* /* */ ' */ SELECT * FROM sqlite_scan('{other}','secrets') --'",
    "SELECT * FROM postgres_scan('{pg}', 'public', 'runs')",
    "SELECT database_name, path FROM duckdb_databases()",
    "SELECT * FROM duckdb_settings()",
    "SELECT current_setting('extension_directory') AS d, current_setting('home_directory') AS h",
    # comments, strings and quoting that hide keywords from a naive lexer
    "/* /* */ ' */ CALL postgres_execute('store', 'DROP TABLE runs') --'",
    "/* nested /* deeper */ still */ SELECT * FROM postgres_query('store', 'DELETE FROM runs RETURNING 1')",
    "SELECT E'it\\'s' AS a, * FROM sqlite_scan('{other}', 'secrets')",
    "SELECT $tag$ ' $tag$ AS a, * FROM sqlite_scan('{other}', 'secrets') -- '",
    "SELECT * FROM \"sqlite_scan\"('{other}', 'secrets')",
    "SELECT * FROM system.main.sqlite_scan('{other}', 'secrets')",
    "WITH s AS (SELECT * FROM sqlite_scan('{other}', 'secrets')) SELECT * FROM s",
    "SELECT * FROM query('SELECT * FROM sqlite_scan(''{other}'', ''secrets'')')",
    "SELECT * FROM sqlite_attach('{other}')",
    "CALL sqlite_attach('{other}', overwrite=true)",
    "SELECT * FROM postgres_attach('{pg}')",
    "SELECT * FROM postgres_scan_pushdown('{pg}', 'public', 'runs')",
    "CALL postgres_execute('store', 'CREATE TABLE pwned(x int)')",
    "SELECT * FROM postgres_query('store', 'SELECT pg_read_file(''/etc/hostname'')')",
    # files
    "SELECT * FROM read_text('{other}')",
    "SELECT * FROM read_blob('{other}')",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_csv_auto('/etc/passwd')",
    "SELECT * FROM read_json_auto('/etc/passwd')",
    "SELECT * FROM read_parquet('{tmp}/*.parquet')",
    "SELECT * FROM parquet_scan('{tmp}/x.parquet')",
    "SELECT * FROM glob('{tmp}/*')",
    "SELECT * FROM '{other}'",
    "COPY (SELECT 1 AS x) TO '{tmp}/leak.csv'",
    "COPY store.runs TO '{tmp}/leak.parquet' (FORMAT parquet)",
    "COPY store.runs FROM '/etc/passwd'",
    "EXPORT DATABASE '{tmp}/dump'",
    "IMPORT DATABASE '{tmp}'",
    # attach / extensions / settings / secrets
    "ATTACH '{other}' AS other (TYPE sqlite)",
    "ATTACH '{other}' AS other",
    "ATTACH '{pg}' AS pg (TYPE postgres)",
    "INSTALL sqlite",
    "FORCE INSTALL postgres",
    "LOAD sqlite",
    "LOAD postgres",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "RESET lock_configuration",
    "SET allow_unsigned_extensions = true",
    "PRAGMA enable_external_access = true",
    "SET GLOBAL autoload_known_extensions = true",
    "CREATE SECRET s (TYPE postgres, HOST '127.0.0.1', PASSWORD 'x')",
    "SELECT * FROM duckdb_secrets()",
    "SELECT * FROM duckdb_extensions()",
    "SELECT getenv('INSTRUCTZERO_STORE_URL')",
    "PRAGMA database_list",
    "CALL pragma_database_list()",
    # writes to the store
    "DELETE FROM store.runs",
    "DELETE FROM store.alembic_version",
    "UPDATE store.runs SET status = 'x'",
    "INSERT INTO store.metrics VALUES (999, 'r', 'k', 0, 0.0)",
    "DROP TABLE store.metrics",
    "CREATE TABLE store.pwned (x INT)",
    "ALTER TABLE store.runs ADD COLUMN pwned INT",
    "WITH x AS (DELETE FROM store.runs RETURNING *) SELECT * FROM x",
    "DETACH store",
    "CHECKPOINT store",
    "SELECT 1; DELETE FROM store.runs",
]


def _fingerprint(url: str) -> str:
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        return hashlib.sha256(path.read_bytes()).hexdigest()
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            names = [
                n
                for (n,) in conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"))
            ]
            counts = [(n, conn.execute(text(f'SELECT count(*) FROM "{n}"')).scalar()) for n in names]
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            return str((counts, version))
    finally:
        engine.dispose()


@pytest.fixture
def hostile_setup(store_url: str, tmp_path: Path) -> dict:
    if store_url.startswith("postgresql"):
        url = make_url(store_url).set(password=PASSWORD).render_as_string(hide_password=False)  # trust auth
        u = make_url(url)
        pg = f"host={u.host} port={u.port} dbname={u.database} user={u.username} password={PASSWORD}"
    else:
        url = store_url
        pg = f"host=127.0.0.1 port=1 dbname=x user=postgres password={PASSWORD}"
    with RunStore(url) as store:
        populate(store)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    other = scratch / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE secrets (v TEXT)")
        conn.execute("INSERT INTO secrets VALUES (?)", (OTHER_ROW,))
    conn.close()
    return {"url": url, "pg": pg, "other": str(other), "tmp": str(scratch), "ext_dir": tmp_path / "ext"}


def _statements(setup: dict) -> list[str]:
    return [
        s.replace("{other}", setup["other"]).replace("{pg}", setup["pg"]).replace("{tmp}", setup["tmp"])
        for s in HOSTILE
    ]


def _never_shown(setup: dict) -> list[str]:
    needles = [PASSWORD, OTHER_ROW, str(Path.home()) + "/", str(setup["ext_dir"])]  # (paths the SQL names are echoed)
    if setup["url"].startswith("sqlite:///"):
        needles.append(setup["url"][len("sqlite:///") :])
    return needles


def test_hostile_sql_against_the_engine_changes_and_reveals_nothing(hostile_setup: dict) -> None:
    """The filter is bypassed: every statement goes straight to the sandboxed DuckDB connection."""
    setup = hostile_setup
    before = _fingerprint(setup["url"])
    scratch_before = sorted(p.name for p in Path(setup["tmp"]).iterdir())
    needles = _never_shown(setup)
    outcomes = {"refused by the engine": 0, "ran harmlessly": 0}
    with Analytics(setup["url"], extension_dir=setup["ext_dir"]) as analytics:
        con = analytics._con
        for sql in _statements(setup):
            try:
                shown = str(con.execute(sql).fetchall())
                outcomes["ran harmlessly"] += 1
            except duckdb.Error as exc:
                shown = str(exc)
                outcomes["refused by the engine"] += 1
            for needle in needles:
                assert needle not in shown, (sql, needle, shown[:500])
            con.execute("USE store") if "DETACH" not in sql else None
        # the store as DuckDB sees it is still whole
        assert con.execute("SELECT count(*) FROM store.runs").fetchone()[0] == 1
    assert _fingerprint(setup["url"]) == before
    assert sorted(p.name for p in Path(setup["tmp"]).iterdir()) == scratch_before
    backend = "postgres" if setup["url"].startswith("postgresql") else "sqlite"
    print(
        f"\nsql sandbox/{backend}: {len(HOSTILE)} hostile statements sent to the engine with the filter bypassed: "
        f"{outcomes}; store unchanged, no file written, no password/path/other row shown"
    )
    assert outcomes["refused by the engine"] >= len(HOSTILE) - 12


def test_hostile_sql_through_the_filter_is_one_line(hostile_setup: dict) -> None:
    """Through `query` (filter first): every statement is refused with one line, or (read-only introspection)
    answers without secrets."""
    setup = hostile_setup
    before = _fingerprint(setup["url"])
    needles = _never_shown(setup)
    refused = 0
    with Analytics(setup["url"], extension_dir=setup["ext_dir"]) as analytics:
        for sql in _statements(setup):
            try:
                shown = str(analytics.query(sql))
            except StoreError as exc:
                shown = str(exc)
                assert "\n" not in shown and shown.startswith(("query refused", "query failed")), (sql, shown)
                refused += 1
            for needle in needles:
                assert needle not in shown, (sql, needle, shown[:500])
    assert _fingerprint(setup["url"]) == before
    assert refused >= len(HOSTILE) - 6


@pytest.mark.postgres
def test_postgres_read_only_role_from_the_readme_gets_no_warning(postgres_db_url: str, tmp_path: Path) -> None:
    import psycopg

    with RunStore(postgres_db_url) as store:
        populate(store)
    role = f"iz_reader_{uuid.uuid4().hex[:8]}"
    u = make_url(postgres_db_url)
    admin = u.set(drivername="postgresql").render_as_string(hide_password=False)
    readme_sql = [  # the README's "PostgreSQL read-only role" section
        f"CREATE ROLE {role} LOGIN PASSWORD 'change-me'",
        f"ALTER ROLE {role} SET default_transaction_read_only = on",
        f'GRANT CONNECT ON DATABASE "{u.database}" TO {role}',
        f"GRANT USAGE ON SCHEMA public TO {role}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}",
    ]
    with psycopg.connect(admin, autocommit=True) as conn:
        for sql in readme_sql:
            conn.execute(sql)
    try:
        with Analytics(postgres_db_url, extension_dir=tmp_path / "ext") as owner:
            assert len(owner.warnings) == 1 and "can write" in owner.warnings[0] and "\n" not in owner.warnings[0]
        reader = u.set(username=role, password="change-me").render_as_string(hide_password=False)
        with Analytics(reader, extension_dir=tmp_path / "ext") as analytics:
            assert analytics.warnings == []
            assert analytics.query("SELECT count(*) FROM store.runs")[1] == [(1,)]
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")
