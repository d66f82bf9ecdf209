"""SQL text the catalog cannot bind as parameters: literals and identifiers for view definitions."""

from __future__ import annotations

from pathlib import Path


def sql_string(text: str) -> str:
    """A SQL string literal.

    Only for what DuckDB cannot take as a bound parameter: the path inside a view definition (a
    view is stored as text, so it cannot hold a parameter) and ``COMMENT ON``. Doubling the quote is
    the whole of SQL string escaping; backslashes have no meaning in a DuckDB literal.
    """
    return "'" + text.replace("'", "''") + "'"


def sql_ident(name: str) -> str:
    """A quoted identifier (columns such as ``count``, ``min``, ``date`` are keywords)."""
    return '"' + name.replace('"', '""') + '"'


def lake_glob(lake_root: Path, table: str) -> str:
    """The glob of a table's files; temporary files (``.*.tmp``) never match it."""
    root = Path(lake_root).resolve().as_posix()
    if any(ch in root for ch in "*?[]{}"):
        raise ValueError(f"lake root {root!r} holds glob characters, which DuckDB cannot escape")
    if "=" in root:
        raise ValueError(f"lake root {root!r} holds '=', which hive partitioning would read as a column")
    return f"{root}/{table}/**/*.parquet"


