"""Engine, transactional session scope and schema-version handling of the store.

* `normalize_url` accepts any SQLAlchemy URL; `postgresql://`/`postgres://` map to psycopg 3, a bare path means a
  SQLite file.
* SQLite connections get WAL, a busy timeout and foreign keys on connect; write sessions start with
  `BEGIN IMMEDIATE`, so concurrent writers (two processes on one file) queue on the busy timeout instead of failing
  on a read-to-write lock upgrade.
* `open_engine` refuses a store whose schema is not at this code's head revision (a fresh, empty database is
  upgraded automatically); `upgrade_store` is what `instructzero db upgrade` calls.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session

from instructzero.storage.errors import StoreError
from instructzero.storage.models import Base
from instructzero.storage.redaction import redact_secrets

MIGRATIONS_DIR: Path = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 60_000
_PG_MIGRATION_LOCK = 0x1A57C0DE  # pg_advisory_xact_lock key: serialises concurrent first opens
_BEGIN_OPTION = "instructzero_sqlite_begin"


def normalize_url(url: str) -> str:
    """Map `postgresql://` and `postgres://` to psycopg 3 and a bare filesystem path to `sqlite:///path`."""
    url = str(url).strip()
    if not url:
        raise StoreError("cannot open store '': empty store URL")
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser()}"
    scheme, rest = url.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    return url


def display_url(url: str) -> str:
    """The URL with any password masked (for messages): user:password, a password/token query parameter, and the
    same in a URL SQLAlchemy cannot parse (e.g. a bad port), which is shown redacted, never raw."""
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - unparsable URL: redact what can be recognised
        shown = url
    return redact_secrets(shown)


def one_line(exc: BaseException) -> str:
    """The first line of a (possibly DBAPI-wrapped) exception, without SQLAlchemy's SQL/background dump."""
    orig = getattr(exc, "orig", None)
    msg = str(orig if orig is not None else exc).strip()
    return msg.splitlines()[0] if msg else type(exc).__name__


def _sqlite_on_connect(dbapi_conn: Any, _record: Any, *, read_only: bool = False) -> None:
    # Autocommit at the driver level; transactions are begun explicitly in `_sqlite_on_begin` (the pysqlite
    # legacy transaction handling would otherwise defer BEGIN and break BEGIN IMMEDIATE / savepoints).
    # Reading commands: no journal-mode switch (that would alter another application's file), no writes at all.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if read_only:
            cur.execute("PRAGMA query_only = ON")
            return
        cur.execute("PRAGMA foreign_keys = ON")
        _switch_to_wal(cur)
        cur.execute("PRAGMA synchronous = NORMAL")
    finally:
        cur.close()


def _switch_to_wal(cur: Any) -> None:
    """`PRAGMA journal_mode = WAL`, retried: on a file another process is creating right now the switch can
    answer "database is locked" at once, without waiting on the busy timeout (two first runs on one fresh store)."""
    import sqlite3
    import time

    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cur.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _sqlite_on_begin(conn: Connection) -> None:
    conn.exec_driver_sql(conn.get_execution_options().get(_BEGIN_OPTION, "BEGIN"))


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite store URL; None for another database, `:memory:` or a `file:` URI."""
    try:
        parsed = make_url(normalize_url(url))
    except Exception:  # noqa: BLE001 - not a URL: opening the store says so
        return None
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    return None if database.startswith("file:") else Path(database).expanduser()


def require_existing_store(url: str, *, hint: str = "reading commands never create one") -> None:
    """Refuse (StoreError, one line) a SQLite store whose file does not exist, so a mistyped path is never created
    as a new empty store; other databases pass (their server says whether they exist)."""
    path = sqlite_file(url)
    if path is None:
        return
    try:
        exists = path.is_file()
    except OSError as exc:  # a file name too long for the filesystem, ...
        raise StoreError(f"cannot open store {display_url(normalize_url(url))!r}: {exc.strerror or exc}") from None
    if not exists:
        raise StoreError(f"no store at {display_url(normalize_url(url))!r}: {str(path)!r} does not exist ({hint})")


PG_CONNECT_TIMEOUT_S = 10
"""libpq connect_timeout unless the URL sets one: a host that accepts but never answers fails in seconds."""


def create_store_engine(url: str, *, read_only: bool = False) -> Engine:
    """A configured engine for `url` (not yet checked against the schema). Raises StoreError naming the URL.

    `read_only`: for reading commands; a SQLite file must exist already (no file or directory is created) and is
    opened with `query_only` and without switching its journal mode."""
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"cannot open store {url!r}: not a database URL ({one_line(exc)})") from None
    kwargs: dict[str, Any] = {}
    is_sqlite = parsed.get_backend_name() == "sqlite"
    if is_sqlite:
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        database = parsed.database
        if read_only:
            require_existing_store(url)
        elif database and database != ":memory:" and not database.startswith("file:"):
            try:
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot open store {display_url(url)!r}: {exc}") from None
    else:
        kwargs["pool_pre_ping"] = True
        if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
            kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    try:
        engine = create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ArgumentError, ImportError) as exc:
        raise StoreError(f"cannot open store {display_url(url)!r}: {one_line(exc)}") from None
    if is_sqlite:
        event.listen(engine, "connect", functools.partial(_sqlite_on_connect, read_only=read_only))
        event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def write_engine(engine: Engine) -> Engine:
    """The same engine (same pool) whose transactions take the SQLite write lock up front."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**{_BEGIN_OPTION: "BEGIN IMMEDIATE"})
    return engine


@contextmanager
def session_scope(engine: Engine, *, write: bool = False, what: str = "store") -> Iterator[Session]:
    """A transactional scope: commit on success, roll back on any error; database errors become one-line
    StoreErrors (`what` says which operation failed)."""
    session = Session(bind=write_engine(engine) if write else engine, expire_on_commit=False, autoflush=False)
    try:
        yield session
        session.commit()
    except StoreError:
        session.rollback()
        raise
    except SQLAlchemyError as exc:
        session.rollback()
        raise StoreError(f"{what} failed in store {display_url(str(engine.url))!r}: {one_line(exc)}") from None
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# --------------------------------------------------------------------------------------------------- migrations


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """Alembic configured programmatically (no alembic.ini): script location `storage/migrations`."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - packaging error
        raise StoreError(f"no migrations found under {MIGRATIONS_DIR}")
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _lock_for_migration(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})


def _check_or_initialise(engine: Engine, shown: str) -> None:
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    with write_engine(engine).begin() as conn:
        _lock_for_migration(conn)
        current = current_revision(conn)
        if current == head:
            return
        if current is None:
            ours = set(Base.metadata.tables)
            existing = set(inspect(conn).get_table_names()) - {"alembic_version"}
            if existing & ours:
                raise StoreError(
                    f"store {shown!r} has instructzero tables but no schema revision; "
                    f"run `instructzero db upgrade` only after checking it, or use a fresh database"
                )
            command.upgrade(alembic_config(connection=conn), "head")
            return
        try:
            known = script.get_revision(current) is not None
        except Exception:  # noqa: BLE001 - alembic raises for unknown revisions
            known = False
        if not known:
            raise StoreError(
                f"store {shown!r} is at schema revision {current!r}, which this version of instructzero does not "
                f"know (its newest is {head!r}); upgrade instructzero or use another store"
            )
        raise StoreError(
            f"store {shown!r} is at schema revision {current!r} but this version needs {head!r}; "
            f"run `instructzero db upgrade` (back up the database first)"
        )


def _check_existing(engine: Engine, shown: str) -> None:
    """Reading commands: the database must already be an instructzero store at head; nothing is written."""
    head = head_revision()
    with engine.connect() as conn:
        names = set(inspect(conn).get_table_names())
        if "alembic_version" not in names or "runs" not in names:
            raise StoreError(
                f"{shown!r} is not an instructzero store (no runs/alembic_version tables); "
                "reading commands never create or change a database"
            )
        current = current_revision(conn)
    if current != head:
        raise StoreError(
            f"store {shown!r} is at schema revision {current!r} but this version needs {head!r}; "
            f"run `instructzero db upgrade` (back up the database first)"
        )


def open_engine(url: str, *, read_only: bool = False) -> Engine:
    """Create the engine, upgrade a fresh database to head and refuse one at another revision (`read_only`:
    refuse anything but an existing store at head, and write nothing)."""
    engine = create_store_engine(url, read_only=read_only)
    shown = display_url(str(engine.url))
    try:
        (_check_existing if read_only else _check_or_initialise)(engine, shown)
    except StoreError:
        engine.dispose()
        raise
    except SQLAlchemyError as exc:
        engine.dispose()
        raise StoreError(f"cannot open store {shown!r}: {one_line(exc)}") from None
    return engine


def upgrade_store(url: str, revision: str = "head") -> str:
    """Run the migrations of `url` up to `revision` (default head). Returns the revision reached."""
    return _migrate(url, revision, upgrade=True)


def downgrade_store(url: str, revision: str) -> str:
    """Run the migrations of `url` down to `revision` ("base" drops everything). Returns the revision reached."""
    return _migrate(url, revision, upgrade=False)


def store_revision(url: str) -> str | None:
    """The schema revision the store is at (None: not initialised)."""
    engine = create_store_engine(url)
    try:
        with engine.connect() as conn:
            return current_revision(conn)
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot open store {display_url(str(engine.url))!r}: {one_line(exc)}") from None
    finally:
        engine.dispose()


def _sqlite_foreign_keys(conn: Connection, on: bool) -> None:
    """Switch SQLite's foreign-key enforcement on this connection; only works outside a transaction."""
    conn.connection.dbapi_connection.execute(f"PRAGMA foreign_keys = {'ON' if on else 'OFF'}")  # type: ignore[union-attr]


def _migrate(url: str, revision: str, *, upgrade: bool) -> str:
    """Migrate in one transaction. On SQLite, foreign keys are off meanwhile: a batch migration rebuilds a table
    by copy, drop and rename, and dropping `evaluations` with enforcement on cascaded into `example_scores`
    (0003 deleted every example score). Any dangling reference the migration leaves aborts it instead."""
    engine = create_store_engine(url)
    shown = display_url(str(engine.url))
    sqlite = engine.dialect.name == "sqlite"
    try:
        with write_engine(engine).connect() as conn:
            if sqlite:
                _sqlite_foreign_keys(conn, on=False)
            try:
                with conn.begin():
                    _lock_for_migration(conn)
                    cfg = alembic_config(connection=conn)
                    (command.upgrade if upgrade else command.downgrade)(cfg, revision)
                    if sqlite and (broken := conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()):
                        raise StoreError(
                            f"migrating store {shown!r} to {revision!r} would leave "
                            f"{len(broken)} dangling references (first: {tuple(broken[0])}); "
                            "nothing was changed"
                        )
                    reached = current_revision(conn) or "base"
            finally:
                if sqlite:
                    _sqlite_foreign_keys(conn, on=True)
            return reached
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot migrate store {shown!r}: {one_line(exc)}") from None
    except StoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - alembic's CommandError for unknown revisions, a migration's refusal
        raise StoreError(f"cannot migrate store {shown!r} to {revision!r}: {one_line(exc)}") from None
    finally:
        engine.dispose()


logging.getLogger("alembic").setLevel(logging.WARNING)
