"""The warehouse: DuckDB views over the Parquet lake, their docs, and read-only access.

* :mod:`.docs`: what every table and view means (``docs/tables.md`` is generated from it);
* :mod:`.catalog`: builds ``gigapulse.duckdb``, the only writer of that file;
* :mod:`.reader`: read-only connections and the statements a reader may run;
* :mod:`.export`: query results as CSV, JSON Lines and Parquet;
* :mod:`.sqltext`: SQL literals for view definitions, which cannot hold bound parameters.

Names are imported from their modules on first use: a reader (``gigapulse sql``) then pays for DuckDB
only, not for the catalog builder's pyarrow and contracts.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "catalog": ("DB_FILE", "LOCK_WAIT_S", "SENSORS_FILE", "build_catalog", "create_views", "refresh_catalog",
                "write_sensors"),
    "docs": ("TABLE_DOCS", "tables_markdown"),
    "reader": ("READ_STATEMENTS", "ReadOnlyQueryError", "connect", "query", "read_only_statements"),
    "sqltext": ("lake_glob", "sql_ident", "sql_string"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
