"""Read-only analytics over the store through DuckDB.

The store (SQLite file or PostgreSQL database) is ATTACHed READ_ONLY by a private *loader* DuckDB using the
sqlite/postgres scanner extensions shipped in the `duckdb-extension-sqlite`/`duckdb-extension-postgres` wheels
(INSTALLed from site-packages into a private extension directory; autoinstall/autoload off), copied in one
transaction into a temporary DuckDB file, and detached. Ad-hoc SQL runs in a second, sandboxed DuckDB that sees
only that copy, READ_ONLY, as `store`: no extension is ever loaded there, external access is disabled and the
configuration locked (see `Analytics`). `check_read_only` is only a friendly first message in front of it.

Views (DuckDB temp views over the attached store):
  candidates_flat     one row per candidate with run name, task, instruction text, dev/test scores
  score_by_iteration  per run and iteration: best dev score in the iteration and the best so far (window)
  best_instructions   per run and task: the best dev instruction and its test score
  nightly_results     per night of the nightly suite (runs named suite-<YYYYMMDD>-...), task and seed: the best
                      instruction's test score, the previous night's and whether it fell (`regressed`)
  cost_per_run        per run: answers used and cache hits (evaluations); paid calls, tokens in/out, latency,
                      retries and cost from the llm_calls rows the run itself sent (the ledger)
  cost_by_iteration   per run and iteration (and its test report): answers used, cache hits, paid calls, tokens, cost
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
from sqlalchemy.engine import make_url

from instructzero.storage.errors import StoreError
from instructzero.storage.redaction import printable, redact_secrets
from instructzero.storage.session import display_url, head_revision, normalize_url, require_existing_store

__all__ = ["Analytics", "VIEWS", "format_table", "extension_file"]

_EXTENSION_PACKAGES = {"sqlite": "duckdb_extension_sqlite", "postgres": "duckdb_extension_postgres"}

VIEWS: dict[str, str] = {
    "candidates_flat": """
        SELECT c.run_id, r.name AS run_name, r.task, c.iteration, c."index" AS "index", c.phase, c.z,
               c.acquisition_value, i.text AS instruction, i.text_hash AS instruction_hash,
               c.dev_score, c.test_score, e.model AS dev_model, e.n_examples AS dev_n_examples, c.created_at
        FROM store.candidates AS c
        JOIN store.runs AS r ON r.id = c.run_id
        JOIN store.instructions AS i ON i.id = c.instruction_id
        LEFT JOIN store.evaluations AS e ON e.id = c.dev_evaluation_id
    """,
    "score_by_iteration": """
        WITH per_iteration AS (
            SELECT run_id, run_name, task, iteration, count(*) AS n_candidates, max(dev_score) AS best_dev
            FROM candidates_flat
            GROUP BY run_id, run_name, task, iteration
        )
        SELECT run_id, run_name, task, iteration, n_candidates, best_dev,
               max(best_dev) OVER (PARTITION BY run_id ORDER BY iteration
                                   ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS best_so_far
        FROM per_iteration
    """,
    # The one rule for "best" (tasks/optimisation/selection.py): the run's objective, dev score less its recorded
    # bo.length_penalty per instruction token (the flow's instruction_tokens.<index> metric), ties to the earliest.
    "best_instructions": """
        SELECT c.run_id, c.run_name, c.task, c.instruction, c.instruction_hash, c.dev_score, c.test_score,
               c.iteration, c."index", c.phase
        FROM candidates_flat AS c
        JOIN store.runs AS r ON r.id = c.run_id
        LEFT JOIN store.metrics AS m
               ON m.run_id = c.run_id AND m.step = c.iteration AND m.key = 'instruction_tokens.' || c."index"
        WHERE c.dev_score IS NOT NULL
        QUALIFY row_number() OVER (
            PARTITION BY c.run_id, c.task
            ORDER BY c.dev_score - coalesce(TRY_CAST(json_extract_string(CAST(r.config AS VARCHAR),
                                                                         '$.bo.length_penalty') AS DOUBLE), 0)
                                   * coalesce(m.value, 0) DESC,
                     c.iteration, c."index") = 1
    """,
    # One row per completed night of the scheduled suite (`benchmark-nightly` names its runs suite-<date>-<task>-
    # seed<seed>) and task and seed, next to the night before: a stored best instruction that tests worse than the
    # previous night's (a black-box model change, a generator or template change) is a row WHERE regressed.
    "nightly_results": """
        WITH nights AS (
            SELECT CAST(strptime(regexp_extract(b.run_name, '^suite-([0-9]{8})-', 1), '%Y%m%d') AS DATE) AS night,
                   b.task, r.seed, b.run_id, b.run_name, c.dev_model AS black_box_model, b.instruction,
                   b.dev_score, b.test_score
            FROM best_instructions AS b
            JOIN store.runs AS r ON r.id = b.run_id
            JOIN candidates_flat AS c ON c.run_id = b.run_id AND c.iteration = b.iteration AND c."index" = b."index"
            WHERE regexp_matches(b.run_name, '^suite-[0-9]{8}-') AND r.status = 'completed'
        )
        SELECT night, task, seed, run_id, run_name, black_box_model, instruction, dev_score, test_score,
               lag(night) OVER w AS previous_night, lag(black_box_model) OVER w AS previous_black_box_model,
               lag(instruction) OVER w AS previous_instruction, lag(test_score) OVER w AS previous_test_score,
               test_score - lag(test_score) OVER w AS test_change,
               coalesce(test_score < lag(test_score) OVER w, false) AS regressed
        FROM nights
        WINDOW w AS (PARTITION BY task, seed ORDER BY night, run_name)
        ORDER BY task, seed, night
    """,
    # The ledger: what a run paid is what it sent, i.e. its own llm_calls rows (each answer is stored once, by the
    # run that paid for it); `calls`/`cached_calls` are the answers its evaluations used and those of them taken
    # from the store's response cache instead of being sent.
    "cost_per_run": """
        WITH ev AS (
            SELECT run_id, count(*) AS n_evaluations, sum(n_calls) AS calls, sum(n_cached) AS cached_calls
            FROM store.evaluations GROUP BY run_id
        ), paid AS (
            SELECT run_id, count(*) AS paid_calls, sum(prompt_tokens) AS tokens_in,
                   sum(completion_tokens) AS tokens_out, sum(latency_s) AS latency_s, sum(retries) AS retries,
                   sum(cost_usd) AS cost_usd
            FROM store.llm_calls WHERE run_id IS NOT NULL GROUP BY run_id
        )
        SELECT r.id AS run_id, r.name AS run_name, r.task, r.status,
               coalesce(ev.n_evaluations, 0) AS n_evaluations,
               coalesce(ev.calls, 0) AS calls, coalesce(ev.cached_calls, 0) AS cached_calls,
               coalesce(paid.paid_calls, 0) AS paid_calls,
               coalesce(paid.tokens_in, 0) AS tokens_in, coalesce(paid.tokens_out, 0) AS tokens_out,
               coalesce(paid.latency_s, 0.0) AS latency_s, coalesce(paid.retries, 0) AS retries,
               coalesce(paid.cost_usd, 0.0) AS cost_usd
        FROM store.runs AS r
        LEFT JOIN ev ON ev.run_id = r.id
        LEFT JOIN paid ON paid.run_id = r.id
    """,
    # Answers used and cache hits from the evaluations (an instruction's dev evaluation counted at its first
    # iteration; iteration -1 = the test report); what was paid from the run's ledger (metrics spend.*, the
    # cumulative llm_calls totals after each step), differenced in step order, so calls paid by an attempt that
    # crashed are charged to the iteration that finally recorded them.
    "cost_by_iteration": """
        WITH dev AS (
            SELECT run_id, dev_evaluation_id, min(iteration) AS iteration FROM store.candidates
            WHERE dev_evaluation_id IS NOT NULL GROUP BY run_id, dev_evaluation_id
        ), used AS (
            SELECT d.run_id, d.iteration, sum(e.n_calls) AS calls, sum(e.n_cached) AS cache_hits
            FROM dev AS d JOIN store.evaluations AS e ON e.id = d.dev_evaluation_id
            GROUP BY d.run_id, d.iteration
            UNION ALL
            SELECT run_id, -1, sum(n_calls), sum(n_cached) FROM store.evaluations WHERE split = 'test'
            GROUP BY run_id
        ), ledger AS (
            SELECT run_id, step AS iteration,
                   max(CASE WHEN key = 'spend.calls' THEN value END) AS cum_calls,
                   max(CASE WHEN key = 'spend.prompt_tokens' THEN value END) AS cum_in,
                   max(CASE WHEN key = 'spend.completion_tokens' THEN value END) AS cum_out,
                   max(CASE WHEN key = 'spend.cost_usd' THEN value END) AS cum_cost
            FROM store.metrics WHERE key LIKE 'spend.%' GROUP BY run_id, step
        ), paid AS (
            SELECT run_id, iteration, cum_cost,
                   cum_calls - coalesce(lag(cum_calls) OVER w, 0) AS paid_calls,
                   cum_in - coalesce(lag(cum_in) OVER w, 0) AS tokens_in,
                   cum_out - coalesce(lag(cum_out) OVER w, 0) AS tokens_out,
                   cum_cost - coalesce(lag(cum_cost) OVER w, 0) AS cost_usd
            FROM ledger
            WINDOW w AS (PARTITION BY run_id ORDER BY CASE WHEN iteration < 0 THEN 1000000000 ELSE iteration END)
        )
        SELECT r.id AS run_id, r.name AS run_name,
               CASE WHEN coalesce(u.iteration, p.iteration) < 0 THEN 'test' ELSE 'search' END AS stage,
               CASE WHEN coalesce(u.iteration, p.iteration) < 0 THEN NULL
                    ELSE coalesce(u.iteration, p.iteration) END AS iteration,
               coalesce(u.calls, 0) AS calls, coalesce(u.cache_hits, 0) AS cache_hits,
               CAST(coalesce(p.paid_calls, 0) AS BIGINT) AS paid_calls,
               CAST(coalesce(p.tokens_in, 0) AS BIGINT) AS tokens_in,
               CAST(coalesce(p.tokens_out, 0) AS BIGINT) AS tokens_out,
               coalesce(p.cost_usd, 0.0) AS cost_usd, p.cum_cost AS cost_so_far_usd
        FROM used AS u
        FULL OUTER JOIN paid AS p ON p.run_id = u.run_id AND p.iteration = u.iteration
        JOIN store.runs AS r ON r.id = coalesce(u.run_id, p.run_id)
        ORDER BY r.id, CASE WHEN coalesce(u.iteration, p.iteration) < 0 THEN 1000000000
                            ELSE coalesce(u.iteration, p.iteration) END
    """,
}

# Statements/keywords that are never allowed in `query` (checked on unquoted words outside literals/comments).
FORBIDDEN_KEYWORDS = frozenset(
    {
        "ATTACH",
        "DETACH",
        "COPY",
        "INSTALL",
        "LOAD",
        "EXPORT",
        "IMPORT",
        "CREATE",
        "INSERT",
        "UPDATE",
        "DELETE",
        "DROP",
        "ALTER",
        "SET",
        "RESET",
        "CALL",
        "PRAGMA",
        "USE",
        "CHECKPOINT",
        "VACUUM",
        "TRUNCATE",
        "MERGE",
        "GRANT",
        "REVOKE",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "PREPARE",
        "EXECUTE",
        "DEALLOCATE",
        "SECRET",
    }
)
# Table functions that open their own connections or run arbitrary SQL on the attached database.
_FORBIDDEN_FUNCTION = re.compile(
    r"^(postgres_\w+|sqlite_(scan|attach|query)|query|query_table|read_\w+|glob|getenv)$", re.IGNORECASE
)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def extension_file(name: str) -> Path:
    """The `.duckdb_extension` file shipped by the `duckdb-extension-<name>` wheel in site-packages."""
    package = _EXTENSION_PACKAGES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise StoreError(f"DuckDB {name} extension missing: install the {package.replace('_', '-')} package")
    root = Path(spec.origin).parent
    version = duckdb.__version__.lstrip("v")
    preferred = sorted(root.glob(f"extensions/v{version}/**/{name}.duckdb_extension"))
    found = preferred or sorted(root.rglob(f"{name}.duckdb_extension"))
    if not found:
        raise StoreError(f"DuckDB {name} extension file not found under {root}")
    return found[0]


def _default_extension_dir() -> Path:
    env = os.environ.get("INSTRUCTZERO_DUCKDB_EXTENSION_DIR")
    if env:
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "instructzero" / "duckdb_extensions"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        if os.access(cache, os.W_OK):
            return cache
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / f"instructzero-duckdb-extensions-{os.getuid()}"


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _libpq_value(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _postgres_conninfo(url: str) -> str:
    u = make_url(url)
    parts: dict[str, str] = {}
    if u.host:
        parts["host"] = u.host
    if u.port:
        parts["port"] = str(u.port)
    if u.database:
        parts["dbname"] = u.database
    if u.username:
        parts["user"] = u.username
    if u.password:
        parts["password"] = str(u.password)
    for key, value in u.query.items():
        if key != "options":
            parts[key] = value if isinstance(value, str) else value[-1]
    parts["options"] = "-c default_transaction_read_only=on"
    return " ".join(f"{k}={_libpq_value(v)}" for k, v in parts.items())


def _tokens(text: str) -> Iterator[tuple[str, str]]:
    """(kind, text) tokens of DuckDB/PostgreSQL SQL: comments (nested /* */), strings ('..', E'..' with
    backslash escapes, $tag$..$tag$), quoted identifiers, words and single characters."""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if text.startswith("--", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            yield "comment", text[i:j]
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            if depth:
                raise StoreError("query refused: unterminated /* comment")
            yield "comment", text[i:j]
            i = j
        elif ch == "'" or (ch in "eE" and text.startswith("'", i + 1) and not _word_before(text, i)):
            escapes = ch != "'"
            j = i + (2 if escapes else 1)
            while True:
                if j >= n:
                    raise StoreError("query refused: unterminated string literal")
                if escapes and text[j] == "\\":
                    j += 2
                elif text[j] == "'":
                    if text.startswith("'", j + 1):
                        j += 2
                    else:
                        break
                else:
                    j += 1
            yield "string", text[i : j + 1]
            i = j + 1
        elif ch == "$" and (m := _DOLLAR_TAG.match(text, i)) and not _word_before(text, i):
            tag = m.group()
            j = text.find(tag, m.end())
            if j < 0:
                raise StoreError("query refused: unterminated dollar-quoted string")
            yield "string", text[i : j + len(tag)]
            i = j + len(tag)
        elif ch == '"':
            j = i + 1
            while True:
                if j >= n:
                    raise StoreError("query refused: unterminated quoted identifier")
                if text[j] == '"':
                    if text.startswith('"', j + 1):
                        j += 2
                        continue
                    break
                j += 1
            yield "quoted", text[i + 1 : j].replace('""', '"')
            i = j + 1
        elif m := _WORD.match(text, i):
            yield "word", m.group()
            i = m.end()
        else:
            yield "other", ch
            i += 1


def _word_before(text: str, i: int) -> bool:
    return i > 0 and (text[i - 1].isalnum() or text[i - 1] in "_$")


def check_read_only(sql: str) -> str:
    """Return `sql` stripped if it looks like a single read-only statement; raise StoreError otherwise.

    A friendly first message only: the guarantee is the sandboxed engine of `Analytics` (see the module doc),
    which refuses or cannot perform anything else however the SQL is spelled."""
    text = sql.strip().rstrip(";").strip()
    if not text:
        raise StoreError("query refused: empty SQL")
    words: list[tuple[str, bool]] = []  # (word, quoted)
    for kind, value in _tokens(text):
        if kind == "word":
            words.append((value, False))
        elif kind == "quoted":
            words.append((value, True))
        elif kind == "other" and value == ";":
            raise StoreError("query refused: only a single statement is allowed")
        elif kind == "other" and value == "(" and words:
            name = words[-1][0]
            if _FORBIDDEN_FUNCTION.match(name):
                raise StoreError(f"query refused: function {name!r} is not allowed (read-only queries only)")
    for word, quoted in words:
        if not quoted and word.upper() in FORBIDDEN_KEYWORDS:
            raise StoreError(f"query refused: {word.upper()} is not allowed (read-only SELECT queries only)")
    return text

    # ----------------------------------------------------------------------------------------------- public


# Read-only role check (PostgreSQL): can the configured role change anything in the store's schema?
_PG_CAN_WRITE = """
    SELECT current_user::text AS who,
           coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false)
           OR has_schema_privilege(current_schema(), 'CREATE')
           OR EXISTS (SELECT 1 FROM pg_tables AS t WHERE t.schemaname = current_schema()
                      AND has_table_privilege(format('%I.%I', t.schemaname, t.tablename),
                                              'INSERT,UPDATE,DELETE,TRUNCATE')) AS can_write
"""


class Analytics:
    """DuckDB over a read-only snapshot of the store at `url`. Use as a context manager or call `close()`.

    Two DuckDB instances, so that ad-hoc SQL can never reach the store itself or anything else:

    1. a *loader* instance (our own SQL only) LOADs the sqlite/postgres scanner, ATTACHes the store READ_ONLY
       (SQLite: a read-only file handle; PostgreSQL: `default_transaction_read_only=on` for the session), checks
       the schema revision and copies every store table, in one transaction, into a private DuckDB file in a fresh
       temporary directory; then it is closed, with every connection to the store.
    2. the *query* instance, a fresh in-memory DuckDB that never loads an extension, ATTACHes that file READ_ONLY
       as `store`, then disables external access (no files, no ATTACH of files, no COPY, no LOAD) and locks its
       configuration. Its settings hold only the temporary directory's path, it has no secrets, and the scanner
       functions (`sqlite_scan`, `postgres_scan`, `postgres_query`, `postgres_execute`, ...) do not exist in it.

    For PostgreSQL, `warnings` holds one line when the configured role could write to the store (use a
    read-only role for analysis; see the README).
    """

    def __init__(self, url: str, *, extension_dir: Path | None = None) -> None:
        self.url = normalize_url(url)
        shown = display_url(self.url)
        self.warnings: list[str] = []
        try:
            parsed = make_url(self.url)
        except Exception as exc:  # noqa: BLE001
            raise StoreError(f"cannot open store {shown!r}: not a database URL ({exc})") from None
        backend = parsed.get_backend_name()
        if backend == "sqlite":
            database = parsed.database or ""
            if database in ("", ":memory:") or database.startswith("file:"):
                raise StoreError(f"cannot analyse store {shown!r}: analytics needs a SQLite file path")
            require_existing_store(self.url)  # "no store at ...": a mistyped path, nothing created
            path = Path(database).expanduser().resolve()
            kind, target = "sqlite", str(path)
        elif backend == "postgresql":
            kind, target = "postgres", _postgres_conninfo(self.url)
        else:
            raise StoreError(f"cannot analyse store {shown!r}: DuckDB analytics supports sqlite and postgresql")
        ext_dir = Path(extension_dir) if extension_dir is not None else _default_extension_dir()
        try:
            ext_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create DuckDB extension directory {str(ext_dir)!r}: {exc}") from None
        self._tmp = Path(tempfile.mkdtemp(prefix="iz-sql-"))
        snapshot = self._tmp / "snapshot.duckdb"
        try:
            self._snapshot(kind, target, ext_dir, snapshot, shown)
            self._con = self._sandbox(snapshot)
            try:
                for name, sql in VIEWS.items():
                    self._con.execute(f"CREATE TEMP VIEW {name} AS {sql}")
                for table in self.tables():  # `runs` and `store.runs` name the same rows, in `sql` and `export`
                    if table not in VIEWS:
                        self._con.execute(f'CREATE TEMP VIEW "{table}" AS SELECT * FROM store."{table}"')
            except duckdb.Error:
                self._con.close()
                raise
        except duckdb.Error as exc:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise StoreError(f"cannot open store {shown!r} in DuckDB: {_one_line(exc)}") from None
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise

    def _snapshot(self, kind: str, target: str, ext_dir: Path, snapshot: Path, shown: str) -> None:
        loader = duckdb.connect(
            str(snapshot),
            config={
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
                "extension_directory": str(ext_dir),
            },
        )
        try:
            _load_extension(loader, kind)
            loader.execute(f"ATTACH {_sql_literal(target)} AS store (TYPE {kind}, READ_ONLY)")
            loader.execute("BEGIN TRANSACTION")
            tables = _check_schema(loader, shown)
            if kind == "postgres":
                who, can_write = loader.execute(
                    f"SELECT * FROM postgres_query('store', {_sql_literal(_PG_CAN_WRITE)})"
                ).fetchone() or ("?", False)
                if can_write:
                    self.warnings.append(
                        f"store role {who!r} can write to {shown!r}; `instructzero sql` reads a snapshot and "
                        f"cannot write, but connect with a read-only role (README: PostgreSQL read-only role)"
                    )
            for schema, table in tables:
                loader.execute(f'CREATE TABLE main."{table}" AS SELECT * FROM store."{schema}"."{table}"')
            loader.execute("COMMIT")
            loader.execute("DETACH store")
        finally:
            loader.close()

    def _sandbox(self, snapshot: Path) -> duckdb.DuckDBPyConnection:
        private = str(self._tmp)
        con = duckdb.connect(
            ":memory:",
            config={
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
                "allow_community_extensions": False,
                "allow_persistent_secrets": False,
                "extension_directory": private,
                "custom_extension_repository": private,
                "home_directory": private,
                "secret_directory": private,
                "temp_directory": private,
            },
        )
        try:
            con.execute(f"ATTACH {_sql_literal(str(snapshot))} AS store (READ_ONLY)")
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
        except BaseException:
            con.close()
            raise
        return con

    # ----------------------------------------------------------------------------------------------- public

    def __enter__(self) -> Analytics:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._con.close()
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def views(self) -> list[str]:
        return list(VIEWS)

    def tables(self) -> list[str]:
        """The store's tables (query them as `<name>` or `store.<name>`)."""
        return [
            r[0]
            for r in self._con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = 'store' ORDER BY table_name"
            ).fetchall()
        ]

    def query(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run one read-only statement (SELECT/WITH/FROM/VALUES/DESCRIBE/SHOW/SUMMARIZE/EXPLAIN); returns
        (column names, rows). Anything else raises StoreError with a one-line message."""
        text = check_read_only(sql)
        try:
            statements = self._con.extract_statements(text)
        except duckdb.Error as exc:
            raise StoreError(f"query failed: {_one_line(exc)}") from None
        if len(statements) != 1 and not _pivot_expansion(text, statements):
            raise StoreError("query refused: only a single statement is allowed")
        kind = statements[-1].type
        if kind not in (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN):
            raise StoreError(f"query refused: {kind.name} statements are not allowed (read-only queries only)")
        try:
            cur = self._con.execute(text)
            columns = [d[0] for d in (cur.description or [])]
            return columns, [tuple(r) for r in cur.fetchall()]
        except duckdb.Error as exc:
            raise StoreError(f"query failed: {_one_line(exc)}") from None

    def view(self, name: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """All rows of a named view (or a store table)."""
        return self.query(f"SELECT * FROM {self._relation(name)}")

    def _relation(self, name: str) -> str:
        name = name.removeprefix("store.") if name and name.startswith("store.") else name
        if not _IDENTIFIER.match(name or ""):
            raise StoreError(f"not a table or view name: {name!r}")
        if name in VIEWS:
            return name
        if name in self.tables():
            return f'store."{name}"'
        raise StoreError(
            f"no table or view named {name!r}; views: {', '.join(VIEWS)}; tables: {', '.join(self.tables())}"
        )

    def export_parquet(self, table_or_view: str, path: str | Path) -> int:
        """Write a view or store table to a Parquet file (via Arrow; DuckDB itself has no file access).
        Returns the number of rows written."""
        import pyarrow.parquet as pq

        relation = self._relation(table_or_view)
        try:
            result = self._con.execute(f"SELECT * FROM {relation}")
            table = result.fetch_arrow_table() if hasattr(result, "fetch_arrow_table") else result.arrow()
        except duckdb.Error as exc:
            raise StoreError(f"export of {table_or_view!r} failed: {_one_line(exc)}") from None
        out = Path(path)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, out)
        except OSError as exc:
            raise StoreError(f"cannot write {str(out)!r}: {exc}") from None
        return table.num_rows


def _pivot_expansion(text: str, statements: Sequence[Any]) -> bool:
    """Whether DuckDB split one read-only PIVOT into statements: a PIVOT without an IN list first creates a temporary
    ENUM of the pivoted values (CREATE, in the sandbox's own in-memory catalog), then SELECTs. The text passed
    `check_read_only` (no `;`, no CREATE), so those CREATEs can only be DuckDB's own."""
    pivots = any(kind == "word" and value.upper() in ("PIVOT", "PIVOT_WIDER") for kind, value in _tokens(text))
    *enums, last = statements
    return (
        pivots
        and last.type == duckdb.StatementType.SELECT
        and all(s.type == duckdb.StatementType.CREATE for s in enums)
    )


def _load_extension(con: duckdb.DuckDBPyConnection, kind: str) -> None:
    try:
        con.execute(f"LOAD {kind}")
        return
    except duckdb.Error:
        pass  # not installed in the private directory yet
    con.execute(f"INSTALL {_sql_literal(str(extension_file(kind)))}")
    con.execute(f"LOAD {kind}")


def _check_schema(con: duckdb.DuckDBPyConnection, shown: str) -> list[tuple[str, str]]:
    """(schema, table) of the attached store's tables, after checking it is an instructzero store at head."""
    tables = [
        (r[0], r[1])
        for r in con.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = 'store' "
            "AND schema_name IN ('main', 'public') ORDER BY table_name"
        ).fetchall()
    ]
    names = {t for _, t in tables}
    if "runs" not in names or "alembic_version" not in names:
        raise StoreError(f"store {shown!r} is not an instructzero store (no runs/alembic_version tables)")
    schema = next(s for s, t in tables if t == "alembic_version")
    rows = con.execute(f'SELECT version_num FROM store."{schema}".alembic_version').fetchall()
    current = rows[0][0] if rows else None
    head = head_revision()
    if current != head:
        raise StoreError(
            f"store {shown!r} is at schema revision {current!r} but this version needs {head!r}; "
            f"run `instructzero db upgrade`"
        )
    return tables


def _one_line(exc: BaseException) -> str:
    """DuckDB's first line, its libpq connection string (password='...') masked."""
    msg = redact_secrets(str(exc).strip())
    return msg.splitlines()[0] if msg else type(exc).__name__


def _cell(value: Any, max_width: int) -> str:
    if value is None:
        text = ""
    elif isinstance(value, float):
        text = f"{value:.4g}" if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3) else f"{value:.4f}"
    elif isinstance(value, datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S")
    else:
        text = str(value)
    text = printable(text.replace("\n", " "))  # ESC, BEL, NUL, U+202E from a run name or an answer: escaped
    return text if len(text) <= max_width else text[: max_width - 1] + "…"


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, max_width: int = 60) -> str:
    """Aligned plain-text table for the terminal (numbers right-aligned, long cells truncated)."""
    cells = [[_cell(v, max_width) for v in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in cells:
        for j, text in enumerate(row):
            widths[j] = max(widths[j], len(text))
    numeric = [
        bool(rows)
        and all(isinstance(r[j], (int, float)) and not isinstance(r[j], bool) for r in rows if r[j] is not None)
        for j in range(len(columns))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = [line(list(columns)), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)
