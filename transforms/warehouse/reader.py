"""Reading the warehouse: read-only connections, which statements a reader may run, one-shot queries.

Every reader opens ``gigapulse.duckdb`` read-only, so any number of them (``gigapulse sql``, notebooks,
the ``duckdb -readonly`` CLI, Dagster assets) share the file at once, and none of them ever rebuilds
anything: the catalog is changed only by the maintenance step (``gigapulse warehouse``).

A read-only DuckDB connection still writes files when asked to (``COPY ... TO``, ``EXPORT DATABASE``,
``EXPLAIN ANALYZE COPY``) and still creates temporary objects, so the statements are also checked
before anything runs: :func:`read_only_statements` refuses every statement outside
:data:`READ_STATEMENTS` with one line naming it. Allowed:

* ``SELECT`` in all its forms: ``WITH ... SELECT``, ``FROM t``, ``VALUES``, ``TABLE t``, ``DESCRIBE``,
  ``SHOW``, ``SUMMARIZE`` (DuckDB parses all of these as SELECT);
* ``EXPLAIN`` and ``EXPLAIN ANALYZE`` of an allowed statement;
* ``PIVOT`` and ``UNPIVOT``;
* ``PRAGMA`` of the pragmas that only report (:data:`READ_PRAGMAS`: ``table_info``, ``show_tables``...);
* ``SET`` and ``RESET`` (``SET TimeZone = 'Europe/Berlin'``): session settings, lost on close.

This module imports DuckDB only (not the catalog builder, pyarrow or the contracts), which is what
lets ``gigapulse sql 'SELECT 1'`` start almost as fast as the interpreter.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from transforms.warehouse.sqltext import strip_leading_comments

#: Statement types that only read (SELECT also covers DESCRIBE, SHOW, SUMMARIZE, VALUES and FROM-first).
READ_STATEMENTS = frozenset({duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN})
#: Session settings: allowed, they change nothing on disk and end with the connection.
SESSION_STATEMENTS = frozenset({duckdb.StatementType.SET})
#: PRAGMAs that only report; every other one (profiling output files, checkpoints...) is refused.
READ_PRAGMAS = frozenset({
    "table_info", "show", "show_tables", "show_tables_expanded", "show_databases", "database_list",
    "database_size", "storage_info", "metadata_info", "version", "platform", "user_agent", "functions",
    "collations",
})
#: How long to wait for a lock on the file: only a writer that is not the maintenance step's atomic
#: replacement (an old build_catalog running in place) ever holds one.
LOCK_WAIT_S = 5.0

_EXPLAIN = re.compile(r"EXPLAIN\s+(?:ANALY[SZ]E\s+)?(?:\([^)]*\)\s*)?", re.IGNORECASE)
_PIVOT = re.compile(r"(?:UN)?PIVOT\b", re.IGNORECASE)
_PRAGMA = re.compile(r"PRAGMA\s+([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE)
_FIRST_WORD = re.compile(r"[A-Za-z_]+")

ALLOWED_TEXT = ("SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN, PIVOT, SET and the PRAGMAs "
                "that only report, such as table_info")


class ReadOnlyQueryError(ValueError):
    """A statement that would write (or that a reader has no business running) was refused."""


def _keyword(text: str) -> str:
    match = _FIRST_WORD.match(strip_leading_comments(text))
    return match.group(0).upper() if match else "empty"


def _refuse(text: str, kind: str | None = None, what: str | None = None) -> ReadOnlyQueryError:
    """The one line for a refused statement: its first word, and DuckDB's kind of it when that differs."""
    word = _keyword(text)
    what = what or (word if kind in (None, word) else f"{word} ({kind})")
    return ReadOnlyQueryError(f"the warehouse is read-only: {what} statements are refused "
                              f"(allowed: {ALLOWED_TEXT}); the catalog is rebuilt by 'gigapulse warehouse'")


def check_statement(statement: duckdb.Statement, depth: int = 0,
                    con: duckdb.DuckDBPyConnection | None = None) -> duckdb.Statement:
    """Return ``statement`` if a reader may run it, else raise :class:`ReadOnlyQueryError` naming it."""
    try:
        kind = statement.type
    except ValueError:  # a statement type the Python enum does not know (UPDATE EXTENSIONS...)
        raise _refuse(statement.query) from None
    text = strip_leading_comments(statement.query)
    if kind is duckdb.StatementType.SELECT or kind in SESSION_STATEMENTS:
        return statement
    if kind is duckdb.StatementType.EXPLAIN and depth == 0:
        # EXPLAIN ANALYZE runs what it explains: ``EXPLAIN ANALYZE COPY ... TO`` writes the file.
        match = _EXPLAIN.match(text)
        inner = _parse(text[match.end():], con) if match else []
        if len(inner) != 1:
            raise _refuse(text, "EXPLAIN")
        check_statement(inner[0], depth + 1, con)
        return statement
    if kind is duckdb.StatementType.MULTI and _PIVOT.match(text):
        return statement  # PIVOT reads; DuckDB runs it as a few statements to find the pivot values
    if kind is duckdb.StatementType.PRAGMA:
        match = _PRAGMA.match(text)
        if match and match.group(1).lower() in READ_PRAGMAS:
            return statement
        raise _refuse(text, what=f"PRAGMA {match.group(1)}" if match else None)
    raise _refuse(text, kind.name)


def _parse(sql: str, con: duckdb.DuckDBPyConnection | None) -> list[duckdb.Statement]:
    # duckdb.extract_statements() parses on DuckDB's default connection, an in-memory database of its
    # own with a pool of threads: a reader that has a connection parses on it.
    return con.extract_statements(sql) if con is not None else duckdb.extract_statements(sql)


def read_only_statements(sql: str, con: duckdb.DuckDBPyConnection | None = None) -> list[duckdb.Statement]:
    """Parse ``sql`` into statements and check every one before any runs (one write refuses them all).

    ``con``, if given, parses (otherwise DuckDB's default in-memory connection does). A parse error is
    raised as DuckDB's own :class:`duckdb.ParserException`; no statement at all is a
    :class:`ReadOnlyQueryError`.
    """
    statements = _parse(sql, con)
    if not statements:
        raise ReadOnlyQueryError("no SQL statement given")
    return [check_statement(s, con=con) for s in statements]


def returns_rows(statement: duckdb.Statement) -> bool:
    """False for statements whose only result is DuckDB's ``Success`` flag (SET, RESET)."""
    return statement.type not in SESSION_STATEMENTS


def connect(db_path: Path, wait_s: float = LOCK_WAIT_S) -> duckdb.DuckDBPyConnection:
    """Open the warehouse read-only, in UTC; never creates the file.

    A missing file raises :class:`FileNotFoundError` (DuckDB would otherwise report a read-only
    open of a missing database). A lock held by a writer is waited out for ``wait_s`` seconds
    (the catalog is only ever replaced by rename, but an older gigapulse wrote it in place).
    """
    db_path = Path(db_path)
    if not db_path.is_file():
        raise FileNotFoundError(f"no warehouse file at {db_path}")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            con = duckdb.connect(str(db_path), read_only=True)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)
            continue
        con.execute("SET TimeZone = 'UTC'")
        # Footers of the compacted files are read once per connection instead of at every query
        # (DuckDB re-validates a cached footer against the file, so a replaced file is re-read).
        con.execute("SET parquet_metadata_cache = true")
        return con


def query(db_path: Path, sql: str, params: Sequence[Any] | dict[str, Any] | None = None
          ) -> tuple[list[str], list[tuple]]:
    """Run one read statement with bound parameters; returns (columns, rows), timestamps in UTC.

    For small answers (tests, the demo, benchmarks): the rows are held in memory. The statement is
    checked first (see the module docstring), so a write fails with a :class:`ReadOnlyQueryError`
    naming it rather than a DuckDB error half-way through.
    """
    statements = read_only_statements(sql)
    if len(statements) != 1:
        raise ReadOnlyQueryError(f"query() runs exactly one statement, got {len(statements)}")
    con = connect(db_path)
    try:
        cur = con.execute(statements[0], params) if params is not None else con.execute(statements[0])
        columns = [d[0] for d in cur.description] if cur.description else []
        return columns, cur.fetchall()
    finally:
        con.close()
