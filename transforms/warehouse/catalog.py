"""The DuckDB catalog over the lake: analyst-facing views, and the only code that writes the file.

``gigapulse.duckdb`` holds no data, only views (and macros) over the Parquet lake. It is never
opened read-write where readers could meet it: :func:`publish_catalog` builds a complete new file
under a temporary name and renames it over the old one, so any number of readers (``gigapulse sql``,
notebooks, the ``duckdb`` CLI) open it read-only at any time without a lock conflict, and a
connection opened before a publish keeps the file it opened, whose views stay consistent.

A table's view reads, in one ``read_parquet`` call, a zero-row file carrying the table's current
schema (so the view never fails on a table with no data yet, and old files missing a new column
read as null), the compacted files the manifest names, and the stream's hot files through a glob,
keeping only those above the manifest's watermarks (see :mod:`transforms.warehouse.manifest`).
New hot files are visible at once, without a new catalog.
"""


from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.batch import BATCH_TABLES
from schemas.contracts import AssetEntry, ProductionEvent
from schemas.tables import SENSORS, TABLES, TableSpec
from transforms.batch.store import BATCH_DIR
from transforms.lake import OFFSET_DIGITS, fsync_dir, tmp_name, write_parquet_atomic
from transforms.warehouse.docs import TABLE_DOCS
from transforms.warehouse.macros import create_macros
from transforms.warehouse.manifest import MANIFEST_DIR, Manifest, load_manifest, maintenance_lock
from transforms.warehouse.rollups.specs import ROLLUPS
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


SCHEMA_FILE = "schema.parquet"


def schema_file(lake_root: Path, spec: TableSpec, generation: int) -> Path:
    """The zero-row file that gives a table's view at ``generation`` its columns and types.

    One per generation: collection deletes a generation's schema files before any data file that
    generation reads, so a connection kept open on a catalog older than the grace period fails
    with a missing file instead of answering from a partial lake.
    """
    parts = "/".join(f"{c}=1970-01-01" if c == "date" else f"{c}=_" for c in spec.partition_cols)
    return schemas_dir(lake_root) / f"g{generation:08d}" / spec.name / parts / SCHEMA_FILE


def schemas_dir(lake_root: Path) -> Path:
    return Path(lake_root) / MANIFEST_DIR / "schemas"


def write_schema_file(lake_root: Path, spec: TableSpec, generation: int) -> Path:
    path = schema_file(lake_root, spec, generation)
    empty = spec.file_schema.empty_table()
    if path.exists():
        try:
            if pq.read_schema(path).equals(spec.file_schema, check_metadata=False):
                return path
        except (OSError, pa.ArrowInvalid):
            pass
    return write_parquet_atomic(path, empty)


def _hot_glob(lake_root: Path, spec: TableSpec) -> str:
    return lake_glob(lake_root, spec.name).removesuffix("**/*.parquet") + "/".join(
        [f"{c}=*" for c in spec.partition_cols] + ["*.parquet"])


def _below_watermark(source: str, watermark: int) -> str:
    """A file filter true for the hot files of ``source`` that a compacted file already holds.

    Hot file names are ``<topic>+<partition>+<first>+<last>.parquet`` with zero-padded offsets and
    topics free of ``+`` (see :func:`transforms.lake.file_name`), so the files of one source whose
    first offset is at or below the watermark are exactly the base names in one lexicographic range.
    DuckDB evaluates this filter on each listed file's name before opening it: a string range costs
    a tenth of the regular expressions it replaced, which over the ~1,000 merged files a live lake
    keeps listed through the grace period was half of every poll (docs/warehouse.md).
    """
    low = sql_string(f"{source}+")
    high = sql_string(f"{source}+{int(watermark):0{OFFSET_DIGITS}d}+~")  # '~' sorts after '+' and digits
    return f"parse_filename(filename) BETWEEN {low} AND {high}"


def _parquet_view_sql(con: duckdb.DuckDBPyConnection, lake_root: Path, spec: TableSpec,
                      manifest: Manifest | None = None) -> str:
    """The view of one date-partitioned table at one manifest generation.

    File names and watermarks are constants of the view, so one catalog file is one consistent
    snapshot: the compacted files it names are never rewritten, and the hot files it keeps (those
    starting above the watermarks) are the ones no compacted file of that generation holds.
    """
    manifest = manifest or Manifest()
    root = Path(lake_root).resolve()
    types = dict(_duckdb_types(con, spec.schema))
    hive_types = ", ".join(f"{sql_string(c)}: {types[c]}" for c in spec.partition_cols)
    hot = _hot_glob(root, spec)
    seed = sql_string(schema_file(root, spec, manifest.generation).as_posix())
    compacted = ", ".join([seed] + [sql_string((root / rel).as_posix())
                                    for _, segments in sorted(manifest.files.get(spec.name, {}).items())
                                    for rel in segments])
    options = f"hive_partitioning = true, hive_types = {{{hive_types}}}"
    # Two reads. Compacted files: a missing one must fail the query (allow_empty would skip it
    # silently), and older ones may lack a newer column (union_by_name). Hot files: the glob may
    # match nothing yet, and the schema comes from the seed alone, because union_by_name opens
    # every listed file while binding, merged ones included, which collection may be deleting at
    # that moment; without it DuckDB drops them on the watermark filter before opening any.
    cold_sql = f"SELECT * FROM read_parquet([{compacted}], union_by_name = true, {options})"
    hot_sql = (f"SELECT * EXCLUDE (filename) FROM read_parquet([{seed}, {sql_string(hot)}], {options}, "
               "filename = true, allow_empty = true)")
    conditions = []
    for source, watermark in sorted(manifest.watermarks.get(spec.name, {}).items()):
        conditions.append(f"NOT {_below_watermark(source, watermark)}")
    where = " WHERE " + " AND ".join(conditions) if conditions else ""
    body = f"{cold_sql} UNION ALL BY NAME {hot_sql}{where}"
    cutoff = manifest.cutoffs.get(spec.name)
    if cutoff:
        body = f"SELECT * FROM ({body}) WHERE date >= DATE {sql_string(cutoff)}"
    return body


def table_relation_sql(lake_root: Path, spec: TableSpec, manifest: Manifest | None = None) -> str:
    """A date-partitioned table as one SQL relation at ``manifest``'s generation, for batch steps.

    The same rows the catalog's view of that generation reads (compacted files plus the hot files
    above the watermarks), so a step that reads the lake directly never counts a merged file twice.
    """
    manifest = manifest or load_manifest(lake_root)
    write_schema_file(lake_root, spec, manifest.generation)
    con = duckdb.connect()
    try:
        return f"({_parquet_view_sql(con, lake_root, spec, manifest)})"
    finally:
        con.close()


def _rollup_view_sql(lake_root: Path, spec: TableSpec, seed: Path, folder: str | None = None) -> str:
    """A rollup's (or batch table's) view: its schema file and every day's file (replaced whole by rename).

    ``folder`` is the lake folder holding the table (rollups by default; ``batch`` for batch tables).
    """
    from transforms.warehouse.rollups import ROLLUPS_DIR

    glob = lake_glob(Path(lake_root) / (folder or ROLLUPS_DIR), spec.name)
    return (f"SELECT * FROM read_parquet([{sql_string(seed.as_posix())}, {sql_string(glob)}], hive_partitioning = "
            "true, hive_types = {'date': DATE}, union_by_name = true, allow_empty = true)")


def _single_file_view_sql(con: duckdb.DuckDBPyConnection, lake_root: Path, spec: TableSpec) -> str:
    """A table the lake holds whole in its folder (``sensors``): read what is there."""
    del con
    return (f"SELECT * FROM read_parquet({sql_string(lake_glob(lake_root, spec.name))}, union_by_name = true, "
            "hive_partitioning = false)")


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

# An event's payload is what its producer sent: every contract field (event_id is the group itself).
# Where it landed (src_partition, src_offset) and whether it came late say nothing about the event.
_EVENT_PAYLOAD = ", ".join(sql_ident(f) for f in ProductionEvent.model_fields if f != "event_id")
# Copies of one event id share a partition (events are keyed by site/line), so the lowest position is
# the copy that reached plant.events.v1 first: the one the dedup rule keeps.
_DUPLICATE_EVENTS = f"""
SELECT event_id,
       arg_min(unit_id, (src_partition, src_offset)) AS unit_id,
       count(*) AS copies,
       count(DISTINCT ({_EVENT_PAYLOAD})) AS payloads,
       min(ts) AS first_ts,
       max(ts) AS last_ts,
       arg_min(src_partition, (src_partition, src_offset)) AS kept_partition,
       arg_min(src_offset, (src_partition, src_offset)) AS kept_offset
FROM production_events
GROUP BY event_id
HAVING count(*) > 1
"""

_CONVENIENCE_VIEWS = {"energy_per_cell": _ENERGY_PER_CELL, "scrap_reasons": _SCRAP_REASONS,
                      "duplicate_events": _DUPLICATE_EVENTS}


def create_views(con: duckdb.DuckDBPyConnection, lake_root: Path, manifest: Manifest | None = None,
                 with_schema_files: bool = False) -> dict[str, str]:
    """(Re)create every view; returns view name -> 'parquet', 'empty' or 'derived'.

    Date-partitioned tables read their schema file, so their views work before any data exists;
    ``with_schema_files`` writes those files first (the docs generator builds views without a lake).
    """
    kinds: dict[str, str] = {}
    for name, spec in TABLES.items():
        if spec.partition_cols and with_schema_files:
            write_schema_file(lake_root, spec, (manifest or Manifest()).generation)
            body, kinds[name] = _parquet_view_sql(con, lake_root, spec, manifest), "parquet"
        elif not spec.partition_cols and _has_files(Path(lake_root) / name):
            body, kinds[name] = _single_file_view_sql(con, lake_root, spec), "parquet"
        else:
            body, kinds[name] = _empty_view_sql(con, spec), "empty"
        con.execute(f"CREATE OR REPLACE VIEW {sql_ident(name)} AS {body}")
    for name, body in _CONVENIENCE_VIEWS.items():
        con.execute(f"CREATE OR REPLACE VIEW {sql_ident(name)} AS {body}")
        kinds[name] = "derived"
    for name, rollup in ROLLUPS.items():
        if with_schema_files:
            seed = write_schema_file(lake_root, rollup.table, (manifest or Manifest()).generation)
            body, kinds[name] = _rollup_view_sql(lake_root, rollup.table, seed), "rollup"
        else:
            body, kinds[name] = _empty_view_sql(con, rollup.table), "empty"
        con.execute(f"CREATE OR REPLACE VIEW {sql_ident(name)} AS {body}")
    for name, spec in BATCH_TABLES.items():
        if with_schema_files:
            seed = write_schema_file(lake_root, spec, (manifest or Manifest()).generation)
            body, kinds[name] = _rollup_view_sql(lake_root, spec, seed, BATCH_DIR), "batch"
        else:
            body, kinds[name] = _empty_view_sql(con, spec), "empty"
        con.execute(f"CREATE OR REPLACE VIEW {sql_ident(name)} AS {body}")
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

def _connect(db_path: Path, read_only: bool = True, wait_s: float = LOCK_WAIT_S) -> duckdb.DuckDBPyConnection:
    """Open the catalog read-only (the only way it is opened once published): see :func:`.reader.connect`."""
    from transforms.warehouse.reader import connect

    if not read_only:
        raise ValueError("the catalog is never opened read-write: publish_catalog() builds a new file")
    return connect(db_path, wait_s)


def catalog_generation(db_path: Path) -> int | None:
    """The manifest generation the published catalog was built from; None if there is no catalog."""
    if not Path(db_path).exists():
        return None
    try:
        con = _connect(Path(db_path), read_only=True)
    except duckdb.Error:
        return None
    try:
        row = con.execute(f"SELECT value FROM {_CATALOG_META} WHERE key = ?", ["generation"]).fetchone()
    except duckdb.CatalogException:
        return None
    finally:
        con.close()
    return int(row[0]) if row else None


def publish_catalog(lake_root: Path, db_path: Path, manifest: Manifest) -> dict[str, str]:
    """Build the catalog of ``manifest`` in a new file and rename it over ``db_path``.

    Call with the lake's maintenance lock held (two publishers would race on the rename's order).
    Readers never see a half-built file and never meet a write lock: the file they opened stays
    theirs, and the next connection opens the new one. Returns view name -> kind.
    """
    lake_root = Path(lake_root).resolve()
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = db_path.parent / tmp_name(db_path.name)
    try:
        con = duckdb.connect(str(tmp))
        try:
            con.execute("SET TimeZone = 'UTC'")
            kinds = create_views(con, lake_root, manifest, with_schema_files=True)
            con.execute(f"CREATE TABLE {_CATALOG_META} (key VARCHAR PRIMARY KEY, value VARCHAR)")
            con.executemany(f"INSERT INTO {_CATALOG_META} VALUES (?, ?)", [
                ["lake_root", str(lake_root)], ["generation", str(manifest.generation)],
                ["published_at", datetime.now(UTC).isoformat()],
            ])
            # Everything in the main file: a reader must never need a write-ahead log.
            con.execute("CHECKPOINT")
        finally:
            con.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        # A log left by an old read-write session would be replayed into the new file: drop it.
        Path(str(db_path) + ".wal").unlink(missing_ok=True)
        os.replace(tmp, db_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        Path(str(tmp) + ".wal").unlink(missing_ok=True)
        raise
    fsync_dir(db_path.parent)
    return kinds


def build_catalog(lake_root: Path, db_path: Path) -> dict[str, str]:
    """Publish the catalog of the lake's current manifest generation (creating it on a new lake).

    The only writer of ``db_path``; waits for a running maintenance step. Returns view name ->
    'parquet' (reads files), 'empty' (no file yet) or 'derived'.
    """
    lake_root = Path(lake_root).resolve()
    with maintenance_lock(lake_root, wait=True):
        return publish_catalog(lake_root, db_path, load_manifest(lake_root))


def refresh_catalog(db_path: Path, lake_root: Path | None = None) -> dict[str, str]:
    """Re-publish the catalog, e.g. after the sensors table got its first file.

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


