"""The DuckDB catalog over the lake: analyst-facing views, and the only code that writes the file.

``gigapulse.duckdb`` holds no data, only views over the Parquet lake, so it is small, rebuilt in
a second and never the bottleneck of the stream: workers write Parquet only, and DuckDB allows one
writer per file, which is :func:`build_catalog` alone. Everyone else reads through
:mod:`transforms.warehouse.reader`, which opens the file read-only.

A view over a glob that matches no file fails in DuckDB, at creation and at every query. So a table
with no file yet gets an empty view typed from its Arrow schema (the same DuckDB types the Parquet
view will have), and :func:`refresh_catalog` swaps in the Parquet view once files exist.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

import duckdb
import pyarrow as pa

from schemas.contracts import AssetEntry
from schemas.tables import SENSORS, TABLES, TableSpec
from transforms.lake import write_parquet_atomic
from transforms.warehouse.docs import TABLE_DOCS
from transforms.warehouse.macros import create_macros
from transforms.warehouse.sqltext import lake_glob, sql_ident, sql_string

DB_FILE = "gigapulse.duckdb"
SENSORS_FILE = "sensors.parquet"
#: How long to wait for the file lock another process holds (a catalog rebuild takes well under this).
LOCK_WAIT_S = 5.0

_CATALOG_META = "gigapulse_catalog"


def _has_files(table_dir: Path) -> bool:
    for _, _, filenames in os.walk(table_dir):
        if any(name.endswith(".parquet") and not name.startswith(".") for name in filenames):
            return True
    return False


def _parquet_view_sql(con: duckdb.DuckDBPyConnection, lake_root: Path, spec: TableSpec) -> str:
    options = ["union_by_name = true"]
    if spec.partition_cols:
        # Typed explicitly: inferred from the first directory names, a partition could come back as VARCHAR.
        types = dict(_duckdb_types(con, spec.schema))
        hive_types = ", ".join(f"{sql_string(c)}: {types[c]}" for c in spec.partition_cols)
        options += ["hive_partitioning = true", f"hive_types = {{{hive_types}}}"]
    else:
        options.append("hive_partitioning = false")
    return f"SELECT * FROM read_parquet({sql_string(lake_glob(lake_root, spec.name))}, {', '.join(options)})"


def _duckdb_types(con: duckdb.DuckDBPyConnection, schema: pa.Schema) -> list[tuple[str, str]]:
    """(column, DuckDB type) of an Arrow schema, asked of DuckDB so they match what read_parquet returns."""
    con.register("_gigapulse_empty", schema.empty_table())
    try:
        return [(row[0], row[1]) for row in con.execute("DESCRIBE SELECT * FROM _gigapulse_empty").fetchall()]
    finally:
        con.unregister("_gigapulse_empty")


def _empty_view_sql(con: duckdb.DuckDBPyConnection, spec: TableSpec) -> str:
    cols = ", ".join(f"CAST(NULL AS {t}) AS {sql_ident(n)}" for n, t in _duckdb_types(con, spec.schema))
    return f"SELECT {cols} WHERE false"


# View bodies hold constants of the contract ('aging_eol' is a Stage code), never caller input: a view
# is stored as text and cannot take bound parameters.
_ENERGY_PER_CELL = """
WITH energy AS (
    SELECT site, line, time_bucket(INTERVAL 1 HOUR, window_start, 'UTC') AS hour, sum(kwh) AS kwh
    FROM energy_features GROUP BY ALL
), cells AS (
    -- Cells count as produced when they leave end-of-line test good.
    SELECT site, line, time_bucket(INTERVAL 1 HOUR, window_start, 'UTC') AS hour,
           CAST(sum(good) AS BIGINT) AS good_cells
    FROM quality_features WHERE stage = 'aging_eol' GROUP BY ALL
)
SELECT e.site, e.line, e.hour, e.kwh, c.good_cells, e.kwh / nullif(c.good_cells, 0) AS kwh_per_good_cell
FROM energy e LEFT JOIN cells c USING (site, line, hour)
"""

_SCRAP_REASONS = """
SELECT q.window_start, q.window_end, q.site, q.line, q.stage,
       u.entry.key AS reason, u.entry.value AS scrapped, q.date
FROM quality_features q CROSS JOIN unnest(map_entries(q.scrap_by_reason)) AS u(entry)
"""

_CONVENIENCE_VIEWS = {"energy_per_cell": _ENERGY_PER_CELL, "scrap_reasons": _SCRAP_REASONS}


def create_views(con: duckdb.DuckDBPyConnection, lake_root: Path) -> dict[str, str]:
    """(Re)create every view; returns view name -> 'parquet', 'empty' or 'derived'."""
    kinds: dict[str, str] = {}
    for name, spec in TABLES.items():
        if _has_files(Path(lake_root) / name):
            body, kinds[name] = _parquet_view_sql(con, lake_root, spec), "parquet"
        else:
            body, kinds[name] = _empty_view_sql(con, spec), "empty"
        con.execute(f"CREATE OR REPLACE VIEW {sql_ident(name)} AS {body}")
    for name, body in _CONVENIENCE_VIEWS.items():
        con.execute(f"CREATE OR REPLACE VIEW {sql_ident(name)} AS {body}")
        kinds[name] = "derived"
    for name, doc in TABLE_DOCS.items():
        # Comments make the docs visible in the duckdb CLI (duckdb_views(), duckdb_columns()).
        con.execute(f"COMMENT ON VIEW {sql_ident(name)} IS {sql_string(doc['grain'] + ': ' + doc['doc'])}")
        present = {row[0] for row in con.execute(f"DESCRIBE {sql_ident(name)}").fetchall()}
        for col, text in doc["columns"].items():
            if col in present:
                con.execute(f"COMMENT ON COLUMN {sql_ident(name)}.{sql_ident(col)} IS {sql_string(text)}")
    create_macros(con)
    return kinds


# --------------------------------------------------------------------------- the catalog file

def _connect(db_path: Path, read_only: bool, wait_s: float = LOCK_WAIT_S) -> duckdb.DuckDBPyConnection:
    """Open the catalog, waiting out another process's lock (a rebuild, or readers during one)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            con = duckdb.connect(str(db_path), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)
            continue
        con.execute("SET TimeZone = 'UTC'")
        return con


def build_catalog(lake_root: Path, db_path: Path) -> dict[str, str]:
    """Create or refresh every view of ``db_path`` over the lake at ``lake_root``.

    The only writer of the DuckDB file: run it from the batch side or the CLI, never from a stream
    worker. Views are replaced in one transaction and other objects in the file are left alone.
    Returns view name -> 'parquet' (reads files), 'empty' (no file yet) or 'derived'.
    """
    lake_root = Path(lake_root).resolve()
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    con = _connect(db_path, read_only=False)
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            kinds = create_views(con, lake_root)
            con.execute(f"CREATE TABLE IF NOT EXISTS {_CATALOG_META} (key VARCHAR PRIMARY KEY, value VARCHAR)")
            con.execute(f"INSERT OR REPLACE INTO {_CATALOG_META} VALUES (?, ?)", ["lake_root", str(lake_root)])
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
        # Fold the WAL into the file so read-only openers see the views without replaying a log.
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return kinds


def refresh_catalog(db_path: Path, lake_root: Path | None = None) -> dict[str, str]:
    """Re-create the views, e.g. so a table's first files replace its empty view.

    ``lake_root`` defaults to the one the catalog was built with.
    """
    if lake_root is None:
        con = _connect(Path(db_path), read_only=True)
        try:
            row = con.execute(f"SELECT value FROM {_CATALOG_META} WHERE key = ?", ["lake_root"]).fetchone()
        finally:
            con.close()
        if row is None:
            raise ValueError(f"{db_path} was not built by build_catalog; pass lake_root")
        lake_root = Path(row[0])
    return build_catalog(lake_root, db_path)


# --------------------------------------------------------------------------- sensors snapshot

def write_sensors(root: Path, entries: Iterable[AssetEntry]) -> Path:
    """Write the asset model as the ``sensors`` table (one file, replaced whole and atomically).

    The latest entry per sensor wins, as on the compacted ``plant.assets.v1`` topic.
    """
    by_id = {e.sensor_id: e.model_dump(mode="json") for e in entries}
    table = pa.Table.from_pylist([by_id[k] for k in sorted(by_id)], schema=SENSORS.file_schema)
    return write_parquet_atomic(Path(root) / SENSORS.name / SENSORS_FILE, table)


