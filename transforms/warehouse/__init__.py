"""The warehouse: DuckDB views over the Parquet lake, their docs, and read-only access.

* :mod:`.docs`: what every table and view means (``docs/tables.md`` is generated from it);
* :mod:`.catalog`: builds ``gigapulse.duckdb``, the only writer of that file;
* :mod:`.reader`: answers read-only queries;
* :mod:`.sqltext`: SQL literals for view definitions, which cannot hold bound parameters.
"""

from transforms.warehouse.catalog import (
    DB_FILE,
    LOCK_WAIT_S,
    SENSORS_FILE,
    build_catalog,
    create_views,
    refresh_catalog,
    write_sensors,
)
from transforms.warehouse.docs import TABLE_DOCS, tables_markdown
from transforms.warehouse.reader import READ_STATEMENTS, ReadOnlyQueryError, query
from transforms.warehouse.sqltext import lake_glob, sql_ident, sql_string

__all__ = ["DB_FILE", "LOCK_WAIT_S", "READ_STATEMENTS", "SENSORS_FILE", "TABLE_DOCS", "ReadOnlyQueryError",
           "build_catalog", "create_views", "lake_glob", "query", "refresh_catalog", "sql_ident", "sql_string",
           "tables_markdown", "write_sensors"]
