"""Read-only analytics over the store through DuckDB.

The store (SQLite file or PostgreSQL database) is ATTACHed READ_ONLY as `store` using the sqlite/postgres scanner
extensions shipped in the `duckdb-extension-sqlite`/`duckdb-extension-postgres` wheels: they are INSTALLed from
site-packages into a private extension directory and LOADed; autoinstall/autoload from the internet are off.
After attaching, external access is disabled and the configuration locked, so ad-hoc SQL cannot read or write
files or attach anything else; `query` additionally accepts only a single read-only statement.

Views (DuckDB temp views over the attached store):
  candidates_flat     one row per candidate with run name, task, instruction text, dev/test scores
  score_by_iteration  per run and iteration: best dev score in the iteration and the best so far (window)
  best_instructions   per run and task: the best dev instruction and its test score
  cost_per_run        per run: black-box calls, cached calls, tokens in/out, latency, retries, cost
  cost_by_iteration   per run and iteration (and its test report): answers used, cache hits, paid calls, tokens, cost
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
from sqlalchemy.engine import make_url

from storage.errors import StoreError
from storage.session import display_url, head_revision, normalize_url

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
    "best_instructions": """
        SELECT run_id, run_name, task, instruction, instruction_hash, dev_score, test_score, iteration,
               "index", phase
        FROM candidates_flat
        WHERE dev_score IS NOT NULL
        QUALIFY row_number() OVER (PARTITION BY run_id, task
                                   ORDER BY dev_score DESC, iteration, "index") = 1
    """,
    "cost_per_run": """
        WITH ev AS (
            SELECT run_id, count(*) AS n_evaluations, sum(n_calls) AS calls, sum(n_cached) AS cached_calls,
                   sum(prompt_tokens) AS tokens_in, sum(completion_tokens) AS tokens_out,
                   sum(latency_s) AS latency_s, sum(retries) AS retries
            FROM store.evaluations GROUP BY run_id
        ), paid AS (
            SELECT run_id, count(*) AS paid_calls, sum(cost_usd) AS cost_usd
            FROM store.llm_calls WHERE run_id IS NOT NULL GROUP BY run_id
        )
        SELECT r.id AS run_id, r.name AS run_name, r.task, r.status,
               coalesce(ev.n_evaluations, 0) AS n_evaluations,
               coalesce(ev.calls, 0) AS calls, coalesce(ev.cached_calls, 0) AS cached_calls,
               coalesce(ev.tokens_in, 0) AS tokens_in, coalesce(ev.tokens_out, 0) AS tokens_out,
               coalesce(ev.latency_s, 0.0) AS latency_s, coalesce(ev.retries, 0) AS retries,
               coalesce(paid.paid_calls, 0) AS paid_calls, coalesce(paid.cost_usd, 0.0) AS cost_usd
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
FORBIDDEN_KEYWORDS = frozenset({
    "ATTACH", "DETACH", "COPY", "INSTALL", "LOAD", "EXPORT", "IMPORT", "CREATE", "INSERT", "UPDATE", "DELETE",
    "DROP", "ALTER", "SET", "RESET", "CALL", "PRAGMA", "USE", "CHECKPOINT", "VACUUM", "TRUNCATE", "MERGE",
    "GRANT", "REVOKE", "BEGIN", "COMMIT", "ROLLBACK", "PREPARE", "EXECUTE", "DEALLOCATE", "SECRET",
})
# Table functions that open their own connections or run arbitrary SQL on the attached database.
_FORBIDDEN_FUNCTION = re.compile(
    r"^(postgres_\w+|sqlite_(scan|attach|query)|query|query_table|read_\w+|glob|getenv)$", re.IGNORECASE)
_LEXER = re.compile(
    r"""(?P<comment>--[^\n]*|/\*.*?\*/)
      | (?P<string>'(?:[^']|'')*'|\$\$.*?\$\$)
      | (?P<quoted>"(?:[^"]|"")*")
      | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
      | (?P<other>.)""",
    re.VERBOSE | re.DOTALL,
)
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


def check_read_only(sql: str) -> str:
    """Return `sql` stripped if it is a single read-only statement; raise StoreError otherwise."""
    text = sql.strip().rstrip(";").strip()
    if not text:
        raise StoreError("query refused: empty SQL")
    words: list[tuple[str, bool]] = []  # (word, quoted)
    for m in _LEXER.finditer(text):
        if m.lastgroup == "word":
            words.append((m.group(), False))
        elif m.lastgroup == "quoted":
            words.append((m.group()[1:-1].replace('""', '"'), True))
        elif m.lastgroup == "other" and m.group() == ";":
            raise StoreError("query refused: only a single statement is allowed")
        elif m.lastgroup == "other" and m.group() == "(" and words:
            name = words[-1][0]
            if _FORBIDDEN_FUNCTION.match(name):
                raise StoreError(f"query refused: function {name!r} is not allowed (read-only queries only)")
    for word, quoted in words:
        if not quoted and word.upper() in FORBIDDEN_KEYWORDS:
            raise StoreError(f"query refused: {word.upper()} is not allowed (read-only SELECT queries only)")
    return text


class Analytics:
    """DuckDB over the store at `url`, read-only. Use as a context manager or call `close()`."""

    def __init__(self, url: str, *, extension_dir: Path | None = None) -> None:
        self.url = normalize_url(url)
        shown = display_url(self.url)
        try:
            parsed = make_url(self.url)
        except Exception as exc:  # noqa: BLE001
            raise StoreError(f"cannot open store {shown!r}: not a database URL ({exc})") from None
        backend = parsed.get_backend_name()
        if backend == "sqlite":
            database = parsed.database or ""
            if database in ("", ":memory:") or database.startswith("file:"):
                raise StoreError(f"cannot analyse store {shown!r}: analytics needs a SQLite file path")
            path = Path(database).expanduser().resolve()
            if not path.is_file():
                raise StoreError(f"cannot open store {shown!r}: no such file {str(path)!r}")
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
        self._con = duckdb.connect(":memory:", config={
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "extension_directory": str(ext_dir),
        })
        try:
            self._load_extension(kind)
            self._con.execute(f"ATTACH {_sql_literal(target)} AS store (TYPE {kind}, READ_ONLY)")
            self._con.execute("SET enable_external_access = false")
            self._con.execute("SET lock_configuration = true")
            self._check_schema(shown)
            for name, sql in VIEWS.items():
                self._con.execute(f"CREATE TEMP VIEW {name} AS {sql}")
        except duckdb.Error as exc:
            self._con.close()
            raise StoreError(f"cannot open store {shown!r} in DuckDB: {_one_line(exc)}") from None
        except StoreError:
            self._con.close()
            raise

    def _load_extension(self, kind: str) -> None:
        try:
            self._con.execute(f"LOAD {kind}")
            return
        except duckdb.Error:
            pass  # not installed in the private directory yet
        self._con.execute(f"INSTALL {_sql_literal(str(extension_file(kind)))}")
        self._con.execute(f"LOAD {kind}")

    def _check_schema(self, shown: str) -> None:
        tables = {r[0] for r in self._con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'store'").fetchall()}
        if "runs" not in tables or "alembic_version" not in tables:
            raise StoreError(f"store {shown!r} is not an instructzero store (no runs/alembic_version tables)")
        rows = self._con.execute("SELECT version_num FROM store.alembic_version").fetchall()
        current = rows[0][0] if rows else None
        head = head_revision()
        if current != head:
            raise StoreError(f"store {shown!r} is at schema revision {current!r} but this version needs {head!r}; "
                             f"run `instructzero db upgrade`")

    # ----------------------------------------------------------------------------------------------- public

    def __enter__(self) -> Analytics:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._con.close()

    def views(self) -> list[str]:
        return list(VIEWS)

    def tables(self) -> list[str]:
        """The store's tables (query them as `store.<name>`)."""
        return [r[0] for r in self._con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'store' ORDER BY table_name").fetchall()]

    def query(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run one read-only statement (SELECT/WITH/FROM/VALUES/DESCRIBE/SHOW/SUMMARIZE/EXPLAIN); returns
        (column names, rows). Anything else raises StoreError with a one-line message."""
        text = check_read_only(sql)
        try:
            statements = self._con.extract_statements(text)
        except duckdb.Error as exc:
            raise StoreError(f"query failed: {_one_line(exc)}") from None
        if len(statements) != 1:
            raise StoreError("query refused: only a single statement is allowed")
        kind = statements[0].type
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
        if not _IDENTIFIER.match(name or ""):
            raise StoreError(f"not a table or view name: {name!r}")
        if name in VIEWS:
            return name
        if name in self.tables():
            return f'store."{name}"'
        raise StoreError(f"no table or view named {name!r}; views: {', '.join(VIEWS)}; "
                         f"tables: {', '.join(self.tables())}")

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


def _one_line(exc: BaseException) -> str:
    msg = str(exc).strip()
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
    text = text.replace("\n", " ")
    return text if len(text) <= max_width else text[: max_width - 1] + "…"


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, max_width: int = 60) -> str:
    """Aligned plain-text table for the terminal (numbers right-aligned, long cells truncated)."""
    cells = [[_cell(v, max_width) for v in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in cells:
        for j, text in enumerate(row):
            widths[j] = max(widths[j], len(text))
    numeric = [bool(rows) and all(isinstance(r[j], (int, float)) and not isinstance(r[j], bool)
                                  for r in rows if r[j] is not None) for j in range(len(columns))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()

    out = [line(list(columns)), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)
