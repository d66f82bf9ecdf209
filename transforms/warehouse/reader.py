"""Reading the warehouse: one read-only statement with bound parameters."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from transforms.warehouse.catalog import _connect

#: Statement types :func:`query` runs; everything else could change the catalog or write files.
READ_STATEMENTS = frozenset({duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN})


class ReadOnlyQueryError(ValueError):
    """A statement that would write was sent to :func:`query`, which only reads."""


def query(db_path: Path, sql: str, params: Sequence[Any] | dict[str, Any] | None = None
          ) -> tuple[list[str], list[tuple]]:
    """Run one read statement (SELECT, EXPLAIN) with bound parameters; returns (columns, rows).

    The file is opened read-only and the statement type is checked first, so a write fails with a
    :class:`ReadOnlyQueryError` naming the statement rather than a DuckDB error half-way through.
    Timestamps come back in UTC.
    """
    statements = duckdb.extract_statements(sql)
    if len(statements) != 1:
        raise ReadOnlyQueryError(f"query() runs exactly one statement, got {len(statements)}")
    kind = statements[0].type
    if kind not in READ_STATEMENTS:
        raise ReadOnlyQueryError(
            f"query() is read-only and refuses {kind.name} statements; the warehouse file is written "
            "only by build_catalog(), and the lake only by the stream"
        )
    con = _connect(Path(db_path), read_only=True)
    try:
        cur = con.execute(sql, params) if params is not None else con.execute(sql)
        columns = [d[0] for d in cur.description]
        return columns, cur.fetchall()
    finally:
        con.close()


