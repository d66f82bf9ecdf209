"""The DuckDB catalog over the lake: analyst-facing views, and the only code that writes the file.

``gigapulse.duckdb`` holds no data, only views over the Parquet lake, so it is small, rebuilt in
a second and never the bottleneck of the stream: workers write Parquet only, and DuckDB allows one
writer per file, which is :func:`build_catalog` alone. Everyone else reads through :func:`query`,
which opens the file read-only.

A view over a glob that matches no file fails in DuckDB, at creation and at every query. So a table
with no file yet gets an empty view typed from its Arrow schema (the same DuckDB types the Parquet
view will have), and :func:`refresh_catalog` swaps in the Parquet view once files exist.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from schemas.contracts import AssetEntry
from schemas.tables import SENSORS, TABLES, TableSpec
from transforms.lake import write_parquet_atomic

DB_FILE = "gigapulse.duckdb"
SENSORS_FILE = "sensors.parquet"
#: Statement types :func:`query` runs; everything else could change the catalog or write files.
READ_STATEMENTS = frozenset({duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN})
#: How long to wait for the file lock another process holds (a catalog rebuild takes well under this).
LOCK_WAIT_S = 5.0

_CATALOG_META = "gigapulse_catalog"


class ReadOnlyQueryError(ValueError):
    """A statement that would write was sent to :func:`query`, which only reads."""


# --------------------------------------------------------------------------- docs

_VIEW_DOCS: dict[str, dict[str, Any]] = {
    "energy_per_cell": {
        "grain": "one line x one hour",
        "doc": "Energy drawn by a line's metered stations per UTC hour, against the cells that left end "
               "of line (aging_eol) good in the same hour. Plant-wide stations (line 'site', e.g. the dry "
               "room) have no cells of their own. kWh per kWh of cell capacity needs the cell's nominal "
               "energy, which the lake does not hold yet.",
        "columns": {
            "site": "Site.",
            "line": "Production line.",
            "hour": "Start of the UTC hour.",
            "kwh": "Energy drawn by the line's metered stations in the hour, kWh.",
            "good_cells": "Cells that left aging_eol good in the hour; null if none were reported.",
            "kwh_per_good_cell": "kwh / good_cells; null when no good cell was reported.",
        },
        "example": "SELECT line, sum(kwh) / sum(good_cells) AS kwh_per_good_cell\n"
                   "FROM energy_per_cell\nWHERE hour >= now() - INTERVAL 1 DAY\nGROUP BY line;",
    },
    "scrap_reasons": {
        "grain": "one line x one stage x one window x one scrap reason",
        "doc": "quality_features.scrap_by_reason unnested: one row per reason that scrapped units.",
        "columns": {
            "window_start": "Start of the tumbling window, UTC.",
            "window_end": "End of the tumbling window, UTC.",
            "site": "Site.",
            "line": "Production line.",
            "stage": "Process stage.",
            "reason": "Scrap reason (coating_defect, moisture, weld_failure...).",
            "scrapped": "Units scrapped for that reason in the window.",
            "date": "UTC date of window_start.",
        },
        "example": "SELECT stage, reason, sum(scrapped) AS units\nFROM scrap_reasons\n"
                   "WHERE date = current_date\nGROUP BY ALL ORDER BY units DESC;",
    },
}

_EXAMPLES = {
    "readings": "SELECT sensor_id, count(*) AS samples, avg(value) AS mean\nFROM readings\n"
                "WHERE date = DATE '2024-05-01' AND stage = 'coating'\nGROUP BY sensor_id;",
    "production_events": "SELECT kind, count(*)\nFROM production_events\n"
                         "WHERE unit_id = 'cell-000123' OR list_contains(parent_ids, 'roll-000042')\n"
                         "GROUP BY kind;",
    "sensors": "SELECT stage, count(*) AS sensors, count(*) FILTER (WHERE ctq) AS ctq_sensors\n"
               "FROM sensors\nGROUP BY stage ORDER BY stage;",
    "sensor_features_1m": "SELECT sensor_id, window_start, mean, ewma, ewma_ucl, ewma_lcl, cpk\nFROM sensor_features_1m\n"
                          "WHERE parameter = 'areal_loading' AND ewma_alarm\n"
                          "ORDER BY window_start DESC LIMIT 20;",
    "sensor_features_1h": "SELECT sensor_id, window_start, mean, min, max, out_of_spec\nFROM sensor_features_1h\n"
                          "WHERE station = 'L1-coat-c' AND date = current_date\nORDER BY sensor_id, window_start;",
    "quality_features": "SELECT line, stage, sum(good) / nullif(sum(good) + sum(scrapped), 0) AS yield\n"
                        "FROM quality_features\nWHERE date = current_date\nGROUP BY line, stage;",
    "energy_features": "SELECT stage, sum(kwh) AS kwh\nFROM energy_features\n"
                       "WHERE date >= current_date - 7\nGROUP BY stage ORDER BY kwh DESC;",
    "sensor_health": "SELECT sensor_id, avg(rate_ratio) AS rate_ratio, bool_or(stuck) AS ever_stuck\n"
                     "FROM sensor_health\nWHERE date = current_date\nGROUP BY sensor_id\n"
                     "HAVING avg(rate_ratio) < 0.9;",
    "dead_letters": "SELECT reason, stage, count(*) AS messages\nFROM dead_letters\n"
                    "WHERE date = current_date\nGROUP BY ALL ORDER BY messages DESC;",
}

#: Every table and view of the warehouse: grain, description, column descriptions and an example query.
TABLE_DOCS: dict[str, dict[str, Any]] = {
    **{
        name: {"grain": spec.grain, "doc": spec.doc, "columns": spec.column_docs(), "example": _EXAMPLES[name]}
        for name, spec in TABLES.items()
    },
    **_VIEW_DOCS,
}


# --------------------------------------------------------------------------- SQL text

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


def _create_views(con: duckdb.DuckDBPyConnection, lake_root: Path) -> dict[str, str]:
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
            kinds = _create_views(con, lake_root)
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


# --------------------------------------------------------------------------- sensors snapshot

def write_sensors(root: Path, entries: Iterable[AssetEntry]) -> Path:
    """Write the asset model as the ``sensors`` table (one file, replaced whole and atomically).

    The latest entry per sensor wins, as on the compacted ``plant.assets.v1`` topic.
    """
    by_id = {e.sensor_id: e.model_dump(mode="json") for e in entries}
    table = pa.Table.from_pylist([by_id[k] for k in sorted(by_id)], schema=SENSORS.file_schema)
    return write_parquet_atomic(Path(root) / SENSORS.name / SENSORS_FILE, table)


# --------------------------------------------------------------------------- docs/tables.md

def tables_markdown() -> str:
    """docs/tables.md: every table and view with its grain, columns (DuckDB types) and an example."""
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        _create_views(con, Path("/nonexistent-gigapulse-lake"))
        types = {
            name: dict(con.execute("SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ?",
                             [name]).fetchall())
            for name in TABLE_DOCS
        }
    finally:
        con.close()
    out = [
        "# Warehouse tables",
        "",
        "Generated from `schemas/tables.py` and `transforms/warehouse.py` (`tables_markdown()`); edit those,",
        "not this file. Every table is a view of `gigapulse.duckdb` over the Parquet lake",
        "(`<lake>/<table>/date=YYYY-MM-DD/*.parquet`); filter on `date` to read only the days you need.",
        "Timestamps are UTC.",
        "",
    ]
    for name, doc in TABLE_DOCS.items():
        out += [f"## `{name}`", "", f"**Grain:** {doc['grain']}.", "", doc["doc"], "",
                "| column | type | description |", "|---|---|---|"]
        for col, text in doc["columns"].items():
            out.append(f"| `{col}` | {types[name].get(col, '')} | {text.replace('|', '/')} |")
        out += ["", "```sql", doc["example"], "```", ""]
    return "\n".join(out)
