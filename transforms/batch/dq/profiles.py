"""The heavy counting of the data-quality checks, done by DuckDB: one lake table's day, aggregated.

Great Expectations evaluates pandas frames in Python; a day of the reference plant is hundreds of
millions of readings, which it could neither hold nor scan in a minute. So DuckDB reduces the day to
small frames first, and the suites (:mod:`transforms.batch.dq.suites`) validate those:

* ``per_sensor`` (readings): one row per sensor and unit: rows, nulls per key column, bad quality
  codes, non-finite values, the finite min/max against the unit's physical limits, the newest ``ts``;
* ``per_source`` (readings, events): one row per source partition of the topic: offsets in the day,
  rows repeating a source position, the day's offset range, and how many offsets of that range no table
  accounts for (see :func:`source_positions`);
* ``schema``: one row per column of the contract or of the files, expected and actual DuckDB types;
* ``day``: one row of the table's day-level figures (rows, nulls, freshness, genealogy).

Each profile is two or three scans of the day's columns, whatever the number of sensors or units.
Table names come from the contracts (``schemas.tables``), never from a caller; every value is bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import duckdb
import pandas as pd

from schemas.tables import DEAD_LETTERS, PRODUCTION_EVENTS, READINGS, TableSpec
from transforms.batch.dq.limits import limit_columns

#: Topic each checked table's source positions refer to.
SOURCE_TOPICS = {READINGS.name: "plant.readings.v1", PRODUCTION_EVENTS.name: "plant.events.v1"}
#: Key columns that may never be null, per table.
KEY_COLUMNS: dict[str, tuple[str, ...]] = {
    READINGS.name: ("sensor_id", "ts", "value", "quality", "src_partition", "src_offset", "src_index"),
    PRODUCTION_EVENTS.name: ("event_id", "ts", "site", "line", "stage", "station", "unit_id", "unit_type", "kind",
                             "src_partition", "src_offset"),
    DEAD_LETTERS.name: ("reason", "stage", "ts"),
}
#: Serials of electrode rolls taken from stock: they enter the plant with no event of their own
#: (docs/ingestion.md, unit ids), so genealogy may name them without the lake knowing them.
STOCK_SERIAL = r"-STOCK\d+$"
KINDS = ("enter", "leave", "measure", "grade", "scrap")
UNIT_TYPES = ("slurry_batch", "electrode_roll", "cell")
GRADES = ("A", "B", "C")
QUALITY_CODES = (0, 1, 2)


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The UTC instants a daily partition covers: [midnight, next midnight)."""
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return start, start + timedelta(days=1)


def day_files(lake_root: Path, table: str, day: date) -> list[str]:
    """The Parquet files of ``table`` on ``day``: the stream's hot files and the compacted ones."""
    root = Path(lake_root) / table
    part = f"date={day.isoformat()}"
    return sorted(p.as_posix() for p in [*(root / part).glob("*.parquet"), *(root / "compacted" / part).glob("*.parquet")])


def footer_nulls(con: duckdb.DuckDBPyConnection, files: list[str], columns: tuple[str, ...]) -> set[str]:
    """The columns the files' footers prove null-free: every row group has statistics and a null count of 0.

    The files may include hot files already merged into a compacted one (they stay on disk for a grace
    period), so the footers see a superset of the table's rows: a zero there is a zero in the table,
    which spares the scan; any other figure is counted exactly over the table instead.
    """
    if not files:
        return set(columns)
    rows = con.execute("""
        SELECT path_in_schema, count(*) FILTER (WHERE stats_null_count IS NULL OR stats_null_count > 0)
        FROM parquet_metadata(?) WHERE list_contains(?, path_in_schema) GROUP BY 1""",
        [files, list(columns)]).fetchall()
    # A column missing from a file is null in every row of it: not proven (its row groups have no entry,
    # so a file lacking it must be ruled out too: the schema check reports it, the scan counts it).
    files_with = dict(con.execute("""
        SELECT path_in_schema, count(DISTINCT file_name) FROM parquet_metadata(?)
        WHERE list_contains(?, path_in_schema) GROUP BY 1""", [files, list(columns)]).fetchall())
    return {name for name, unproven in rows if unproven == 0 and files_with.get(name) == len(files)}


def newest_ts(con: duckdb.DuckDBPyConnection, table: str, files: list[str], day: date) -> datetime | None:
    """The newest ``ts`` of ``table`` on ``day``: from the files' footers when every row group has
    statistics (merged hot files still on disk repeat rows of the compacted file, never add newer
    ones), else from a scan of the column."""
    if files:
        groups, with_stats, newest = con.execute("""
            SELECT count(*), count(stats_max), max(TRY_CAST(stats_max AS TIMESTAMPTZ))
            FROM parquet_metadata(?) WHERE path_in_schema = 'ts'""", [files]).fetchone()
        if groups and groups == with_stats and newest is not None:
            return newest
    return con.execute(f"SELECT max(ts) FROM {table} WHERE date = ?", [day]).fetchone()[0]


def _null_counts(columns: tuple[str, ...], proven: set[str]) -> str:
    """``null_<c>`` select items: a scan for the columns the footers could not prove null-free."""
    return ", ".join(f"0::BIGINT AS null_{c}" if c in proven else f"count(*) - count({c}) AS null_{c}"
                     for c in columns)


def contract_types(con: duckdb.DuckDBPyConnection, spec: TableSpec) -> dict[str, str]:
    """Column -> DuckDB type of the contract's file schema, as DuckDB reads it from Parquet."""
    con.register("dq_contract", spec.file_schema.empty_table())
    try:
        return {row[0]: row[1] for row in con.execute("DESCRIBE SELECT * FROM dq_contract").fetchall()}
    finally:
        con.unregister("dq_contract")


def schema_frame(con: duckdb.DuckDBPyConnection, lake_root: Path, spec: TableSpec, day: date) -> pd.DataFrame:
    """One row per column of the contract or of the day's files: expected and actual type, and how many
    files lack it. Reads footers only. No files: an empty frame (the rows check reports a missing day)."""
    # -> column, expected_type, actual_type, files_missing
    files = day_files(lake_root, spec.name, day)
    expected = contract_types(con, spec)
    if not files:
        return pd.DataFrame({"column": [], "expected_type": [], "actual_type": [], "files_missing": []})
    actual = {row[0]: row[1] for row in con.execute(
        "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet(?, union_by_name = true, hive_partitioning = false))",
        [files]).fetchall()}
    present = dict(con.execute(
        "SELECT name, count(DISTINCT file_name) FROM parquet_schema(?) WHERE list_contains(?, name) GROUP BY name",
        [files, list(expected)]).fetchall())
    names = list(expected) + sorted(set(actual) - set(expected))
    return pd.DataFrame({
        "column": names,
        "expected_type": [expected.get(n, "(not in the contract)") for n in names],
        "actual_type": [actual.get(n, "(missing)") for n in names],
        "files_missing": [len(files) - present.get(n, 0) if n in expected else 0 for n in names],
    })


def readings_per_sensor(con: duckdb.DuckDBPyConnection, day: date, proven: set[str] = frozenset()
                        ) -> pd.DataFrame:
    """One scan of the day's readings, grouped by sensor: the rows, nulls, codes and extremes the
    suites check, with the unit's physical limits beside them (null where the unit has none). The
    newest timestamp is not taken here (it would cost a third of the scan): see :func:`newest_ts`.

    ``proven``: key columns the footers prove null-free (:func:`footer_nulls`), not scanned.
    The unit comes from the asset model (``sensors``), which is where readings got it: reading a text
    column of every row would double the scan. Min and max are taken over all values: DuckDB orders NaN
    above every number, so a NaN or an infinity shows in them and makes ``unphysical`` true.
    """
    units, lows, highs = limit_columns()
    nulls = _null_counts(tuple(c for c in KEY_COLUMNS[READINGS.name] if c != "sensor_id"), proven)
    sql = f"""
        WITH per_sensor AS (
            SELECT sensor_id, count(*) AS rows, {nulls},
                   count(*) FILTER (WHERE NOT list_contains(?, quality)) AS bad_quality,
                   min(value) AS min_value, max(value) AS max_value
            FROM readings WHERE date = ?
            GROUP BY sensor_id),
        limits AS (SELECT unnest(?::VARCHAR[]) AS unit, unnest(?::DOUBLE[]) AS phys_lo, unnest(?::DOUBLE[]) AS phys_hi)
        SELECT s.sensor_id, m.unit, s.* EXCLUDE (sensor_id), l.phys_lo, l.phys_hi,
               coalesce(NOT isfinite(s.min_value) OR NOT isfinite(s.max_value)
                        OR s.min_value < l.phys_lo OR s.max_value > l.phys_hi, false)::INTEGER AS unphysical
        FROM per_sensor s
        LEFT JOIN (SELECT sensor_id, any_value(unit) AS unit FROM sensors GROUP BY sensor_id) m USING (sensor_id)
        LEFT JOIN limits l ON m.unit = l.unit
        ORDER BY s.sensor_id NULLS FIRST
    """
    # -> sensor_id, unit, rows, null_ts ... null_src_index, bad_quality, min_value, max_value,
    #    phys_lo, phys_hi, unphysical (0/1)
    return con.execute(sql, [list(QUALITY_CODES), day, units, lows, highs]).df()


def events_day(con: duckdb.DuckDBPyConnection, day: date, proven: set[str] = frozenset()) -> pd.DataFrame:
    """One row: the day's production events: rows, nulls per key, values outside their domain, newest ts."""
    nulls = _null_counts(KEY_COLUMNS[PRODUCTION_EVENTS.name], proven)
    sql = f"""
        SELECT count(*) AS rows, {nulls},
               count(*) FILTER (WHERE kind IS NOT NULL AND NOT list_contains(?, kind)) AS bad_kind,
               count(*) FILTER (WHERE unit_type IS NOT NULL AND NOT list_contains(?, unit_type)) AS bad_unit_type,
               count(*) FILTER (WHERE kind = 'grade' AND (grade IS NULL OR NOT list_contains(?, grade))) AS bad_grade,
               count(*) FILTER (WHERE kind = 'scrap' AND reason IS NULL) AS scrap_without_reason,
               count(*) FILTER (WHERE kind = 'measure' AND (value IS NULL OR NOT isfinite(value))) AS bad_measure,
               max(ts) AS newest_ts
        FROM production_events WHERE date = ?
    """
    # -> one row: rows, null_<key>..., bad_kind, bad_unit_type, bad_grade, scrap_without_reason, bad_measure, newest_ts
    return con.execute(sql, [list(KINDS), list(UNIT_TYPES), list(GRADES), day]).df()


def dead_letters_day(con: duckdb.DuckDBPyConnection, day: date) -> pd.DataFrame:
    """One row: the day's dead letters: rows, nulls per key, newest ts."""
    nulls = ", ".join(f"count(*) - count({c}) AS null_{c}" for c in KEY_COLUMNS[DEAD_LETTERS.name])
    return con.execute(f"SELECT count(*) AS rows, {nulls}, max(ts) AS newest_ts FROM dead_letters WHERE date = ?",
                       [day]).df()


def genealogy(con: duckdb.DuckDBPyConnection, day: date, examples: int) -> pd.DataFrame:
    """One row: parent ids named by the day's events, and those no event up to that day knows.

    A parent is known if any event (any day up to ``day``: a parent is made before its child) has it
    as ``unit_id``; rolls from stock (:data:`STOCK_SERIAL`) have no events by design and are skipped.
    """
    sql = """
        WITH parents AS (
            SELECT DISTINCT unnest(parent_ids) AS parent_id FROM production_events
            WHERE date = ? AND len(parent_ids) > 0),
        unknown AS (
            SELECT parent_id FROM parents
            WHERE NOT regexp_matches(parent_id, ?)
              AND parent_id NOT IN (SELECT unit_id FROM production_events WHERE date <= ? AND unit_id IS NOT NULL))
        SELECT (SELECT count(*) FROM parents) AS parents,
               (SELECT count(*) FROM unknown) AS unknown_parents,
               (SELECT string_agg(parent_id, ', ' ORDER BY parent_id)
                FROM (SELECT parent_id FROM unknown ORDER BY parent_id LIMIT ?)) AS unknown_examples
    """
    # -> one row: parents, unknown_parents, unknown_examples
    return con.execute(sql, [day, STOCK_SERIAL, day, examples]).df()


@dataclass(frozen=True)
class SourceSpec:
    """How a table records where each row came from: its topic and the columns of the position."""

    table: str
    topic: str
    index_col: str | None  # position within a message (frames); None: one row per message


SOURCES = {READINGS.name: SourceSpec(READINGS.name, SOURCE_TOPICS[READINGS.name], "src_index"),
           PRODUCTION_EVENTS.name: SourceSpec(PRODUCTION_EVENTS.name, SOURCE_TOPICS[PRODUCTION_EVENTS.name], None)}


def source_positions(con: duckdb.DuckDBPyConnection, source: SourceSpec, day: date) -> pd.DataFrame:
    """One row per source partition: the day's offsets against what the topic produced.

    Kafka offsets of a partition are consecutive (the producer is idempotent, not transactional, so no
    control records take offsets), and every message the stream reads ends as rows of the table or as
    a dead letter. So between the first and the last offset the day holds, every offset must be in the
    table (this day, or another one: a message is dated by its event time, so late data and frames
    spanning midnight land elsewhere) or in ``dead_letters``; ``missing`` counts those in neither. What
    this cannot see: messages lost before the day's first or after its last offset, which fall in the
    range of a neighbouring day instead. ``duplicate_rows`` counts rows repeating a source position.
    """
    index = source.index_col
    # The heavy pass, once: one row per source message of the day. count(DISTINCT index) per message
    # would cost ten times the scan; a frame whose indices are exactly 0..n-1 (count, min, max and the
    # first two power sums agree) holds no repeat, so only the other ("irregular") messages are
    # counted exactly, below. A message landed twice doubles its count and is always irregular.
    # BIGINT sums: a frame would need about 10^6 samples before its sum of squares overflowed.
    shape = (f", min({index}) AS lo, max({index}) AS hi, sum({index}::BIGINT) AS s1, "
             f"sum({index}::BIGINT * {index}) AS s2") if index else ""
    con.execute("DROP TABLE IF EXISTS dq_day_offsets")
    con.execute(f"""
        CREATE TEMP TABLE dq_day_offsets AS
        SELECT src_partition AS p, src_offset AS o, count(*) AS n{shape}
        FROM {source.table} WHERE date = ? AND src_partition IS NOT NULL AND src_offset IS NOT NULL
        GROUP BY ALL""", [day])
    if index:
        regular = ("lo = 0 AND hi = n - 1 AND s1 = n * (n - 1) // 2 "
                   "AND s2 = (n - 1) * n * (2 * n - 1) // 6")
        # Irregular messages (usually none), counted exactly: rows beyond the distinct indices they hold.
        con.execute(f"CREATE OR REPLACE TEMP TABLE dq_irregular AS SELECT p, o, 0::BIGINT AS extra "
                    f"FROM dq_day_offsets WHERE NOT ({regular})")
        if con.execute("SELECT count(*) FROM dq_irregular").fetchone()[0]:
            con.execute(f"""
                CREATE OR REPLACE TEMP TABLE dq_irregular AS
                SELECT t.src_partition AS p, t.src_offset AS o, count(*) - count(DISTINCT t.{index}) AS extra
                FROM {source.table} t SEMI JOIN dq_irregular i ON t.src_partition = i.p AND t.src_offset = i.o
                WHERE t.date = ?
                GROUP BY ALL""", [day])
    else:
        con.execute("CREATE OR REPLACE TEMP TABLE dq_irregular AS SELECT p, o, n - 1 AS extra "
                    "FROM dq_day_offsets WHERE n > 1")
    ranges = con.execute("""
        SELECT p, min(o) AS first_offset, max(o) AS last_offset, count(*) AS offsets,
               coalesce((SELECT sum(extra) FROM dq_irregular i WHERE i.p = d.p), 0) AS duplicate_rows
        FROM dq_day_offsets d GROUP BY p ORDER BY p""").fetchall()
    rows = []
    for p, lo, hi, offsets, dup in ranges:
        other, dead, held = con.execute(f"""
            WITH other AS (SELECT DISTINCT src_offset AS o FROM {source.table}
                           WHERE date <> ? AND src_partition = ? AND src_offset BETWEEN ? AND ?),
                 dead AS (SELECT DISTINCT source_offset AS o FROM dead_letters
                          WHERE source_topic = ? AND source_partition = ? AND source_offset BETWEEN ? AND ?)
            SELECT (SELECT count(*) FROM other), (SELECT count(*) FROM dead),
                   (SELECT count(*) FROM (SELECT o FROM dq_day_offsets WHERE p = ?
                                          UNION SELECT o FROM other UNION SELECT o FROM dead))""",
            [day, p, lo, hi, source.topic, p, lo, hi, p]).fetchone()
        rows.append({"src_partition": p, "first_offset": lo, "last_offset": hi, "offsets": offsets,
                     "duplicate_rows": int(dup), "other_days": other, "dead_lettered": dead,
                     "missing": (hi - lo + 1) - held})
    con.execute("DROP TABLE dq_day_offsets")
    con.execute("DROP TABLE dq_irregular")
    # -> src_partition, first_offset, last_offset, offsets, duplicate_rows, other_days, dead_lettered, missing
    return pd.DataFrame(rows, columns=["src_partition", "first_offset", "last_offset", "offsets", "duplicate_rows",
                                       "other_days", "dead_lettered", "missing"])


def freshness(newest: datetime | None, day: date, now: datetime) -> pd.DataFrame:
    """One row: the newest timestamp of the day and its lag behind the day's end (now, for today)."""
    _, end = day_bounds(day)
    reference = min(end, now)
    lag = (reference - newest).total_seconds() if newest is not None and not pd.isna(newest) else None
    # -> one row: newest_ts (ISO text), reference (ISO text), lag_s (null: no rows)
    return pd.DataFrame({"newest_ts": [None if lag is None else pd.Timestamp(newest).isoformat()],
                         "reference": [reference.isoformat()], "lag_s": [lag]})
