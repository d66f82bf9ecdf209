"""Time-series and genealogy helpers: table macros stored in the catalog file.

Gap-filled time buckets, the last value of every sensor, the process history of a unit and the
sensor features it saw are questions every analyst asks, and each takes a window function, an
as-of join or a recursive CTE to answer right. Written once here, they are stored in
``gigapulse.duckdb`` with the views, so the plain ``duckdb`` CLI, notebooks and ``gigapulse sql``
all call them on a read-only connection, with no Python on the path.

A macro is stored as SQL text and expanded where it is called: its arguments become constants of
the caller's query, so date filters on them prune the lake's ``date=`` partitions as a literal
would. The texts below are constants of the code; nothing of a caller's is ever formatted into
them. Parameter names never equal a column name of the tables the macros read, because inside a
macro a column of that name would win over the parameter.

Time arithmetic follows the session time zone; the catalog's own connections use UTC, and a
``duckdb`` CLI session should ``SET TimeZone = 'UTC'`` before bucketing by days.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from transforms.warehouse.sqltext import sql_ident, sql_string

#: Most buckets one ``time_buckets`` call may return: a mistyped width (1 ms over a year) would
#: otherwise build billions of rows before the first one is shown.
MAX_BUCKETS = 1_000_000

#: Deepest genealogy ``unit_history`` follows; a cycle in ``parent_ids`` (bad data) stops here.
MAX_DEPTH = 32


@dataclass(frozen=True)
class Macro:
    """One table macro: its signature, what it answers, its columns and its SQL body."""

    name: str
    params: str
    doc: str
    columns: dict[str, str]
    body: str

    def create_sql(self) -> str:
        return f"CREATE OR REPLACE MACRO {sql_ident(self.name)}({self.params}) AS TABLE {self.body}"


# The UTC date of a timestamp argument, for the `date` partition column: written out rather than
# CAST(x AS DATE), which would take the session's time zone and could skip a partition.
_TIME_BUCKETS = f"""
WITH bounds AS (
    SELECT CAST(start_ts AS TIMESTAMPTZ) AS t0, CAST(stop_ts AS TIMESTAMPTZ) AS t1, CAST(width AS INTERVAL) AS w
), checked AS (
    SELECT t0, t1, w FROM bounds
    WHERE CASE
        WHEN t0 IS NULL OR t1 IS NULL OR w IS NULL
            THEN error('time_buckets: start, stop and width must not be null')
        WHEN w <= INTERVAL 0 SECOND
            THEN error('time_buckets: width must be a positive interval, got ' || CAST(w AS VARCHAR))
        WHEN (epoch(t1) - epoch(t0)) / epoch(w) > {MAX_BUCKETS}
            THEN error('time_buckets: more than {MAX_BUCKETS:,} buckets between start and stop; use a wider width')
        ELSE true END
), buckets AS (
    SELECT unnest(generate_series(t0, t1, w)) AS bucket_start, t1, w FROM checked
), samples AS (
    SELECT r.ts, r.value, r.src_partition, r.src_offset, r.src_index
    FROM readings AS r
    WHERE r.sensor_id = sensor
      AND r.date BETWEEN CAST(timezone('UTC', CAST(start_ts AS TIMESTAMPTZ)) AS DATE)
                     AND CAST(timezone('UTC', CAST(stop_ts AS TIMESTAMPTZ)) AS DATE)
      AND r.ts >= CAST(start_ts AS TIMESTAMPTZ) AND r.ts < CAST(stop_ts AS TIMESTAMPTZ)
), stats AS (
    -- Guarded as well: the planner may run this before `checked`, and time_bucket has errors of its own.
    SELECT time_bucket(CASE WHEN CAST(width AS INTERVAL) > INTERVAL 0 SECOND THEN CAST(width AS INTERVAL) END,
                       ts, CAST(start_ts AS TIMESTAMPTZ)) AS bucket_start,
           count(*) AS n, avg(value) AS mean, min(value) AS min, max(value) AS max,
           -- Ties in time go to the sample that arrived last (its position in the topic).
           arg_max(value, (ts, src_partition, src_offset, src_index)) AS last
    FROM samples
    GROUP BY 1
), filled AS (
    SELECT b.bucket_start, least(b.bucket_start + b.w, b.t1) AS bucket_end, coalesce(s.n, 0) AS n,
           s.mean, s.min, s.max, s.last,
           last_value(s.last IGNORE NULLS) OVER (ORDER BY b.bucket_start
                                                 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS value
    FROM buckets AS b LEFT JOIN stats AS s USING (bucket_start)
    WHERE b.bucket_start < b.t1
)
SELECT CAST(sensor AS VARCHAR) AS sensor_id, bucket_start, bucket_end, n, mean, min, max, last, value,
       n = 0 AND value IS NOT NULL AS filled
FROM filled
ORDER BY bucket_start
"""

_SENSOR_LAST = """
WITH latest AS (
    SELECT sensor_id,
           arg_max({'ts': ts, 'value': value, 'quality': quality},
                   (ts, src_partition, src_offset, src_index)) AS s
    FROM readings
    WHERE date >= CAST(timezone('UTC', CAST(since AS TIMESTAMPTZ)) AS DATE)
      AND ts >= CAST(since AS TIMESTAMPTZ)
      AND (line_name IS NULL OR line = line_name)
    GROUP BY sensor_id
)
SELECT m.site, m.line, m.station, m.stage, m.parameter, m.unit, m.sensor_id,
       l.s.ts AS ts, l.s.value AS value, l.s.quality AS quality, now() - l.s.ts AS age
FROM sensors AS m LEFT JOIN latest AS l USING (sensor_id)
WHERE line_name IS NULL OR m.line = line_name
ORDER BY m.line, m.station, m.sensor_id
"""

# `units` may be one id or a list of ids: to_json tells them apart at run time, where the SQL
# types of the two would make any other expression fail to bind for one of them.
_UNIT_HISTORY = f"""
WITH RECURSIVE roots AS (
    SELECT DISTINCT unnest(CASE WHEN json_type(to_json(units)) = 'ARRAY'
                                THEN from_json(to_json(units), '["VARCHAR"]')
                                ELSE [to_json(units) ->> '$'] END) AS root_id
), tree(root_id, unit_id, depth, consumed_by) AS (
    SELECT root_id, root_id, 0, CAST(NULL AS VARCHAR) FROM roots WHERE root_id IS NOT NULL
    UNION
    -- Events of the frontier first, then their parents: each step probes the events with a few
    -- ids instead of unnesting the parents of every event in the date range.
    SELECT DISTINCT t.root_id, unnest(e.parent_ids), t.depth + 1, t.unit_id
    FROM tree AS t
    JOIN production_events AS e ON e.unit_id = t.unit_id
    WHERE e.date BETWEEN coalesce(CAST(since AS DATE), DATE '-infinity')
                     AND coalesce(CAST(until AS DATE), DATE 'infinity')
      AND t.depth < {MAX_DEPTH}
), closure AS (
    -- A unit reached along two paths keeps its shortest one.
    SELECT root_id, unit_id, depth, consumed_by FROM tree
    QUALIFY row_number() OVER (PARTITION BY root_id, unit_id ORDER BY depth, consumed_by NULLS FIRST) = 1
), events AS MATERIALIZED (
    SELECT unit_id, unit_type, kind, line, stage, station, ts, reason
    FROM production_events
    WHERE date BETWEEN coalesce(CAST(since AS DATE), DATE '-infinity')
                   AND coalesce(CAST(until AS DATE), DATE 'infinity')
      AND unit_id IN (SELECT unit_id FROM closure)
    -- The dedup rule of duplicate_events: of repeated event ids, the copy that arrived first.
    QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY src_partition, src_offset) = 1
), visits AS (
    -- A visit runs from an enter to the unit's first leave or scrap at that station at or after it.
    SELECT n.unit_id, n.unit_type, n.line, n.stage, n.station, n.ts AS entered_at,
           x.ts AS left_at, x.kind AS outcome, x.reason
    FROM (SELECT * FROM events WHERE kind = 'enter') AS n
    ASOF LEFT JOIN (SELECT * FROM events WHERE kind IN ('leave', 'scrap')) AS x
        ON x.unit_id = n.unit_id AND x.station = n.station AND x.ts >= n.ts
), types AS (
    SELECT unit_id, any_value(unit_type) AS unit_type FROM events GROUP BY unit_id
)
SELECT c.root_id, c.depth, c.unit_id, coalesce(v.unit_type, k.unit_type) AS unit_type, c.consumed_by,
       v.line, v.stage, v.station, v.entered_at, v.left_at, v.outcome, v.reason
FROM closure AS c
LEFT JOIN visits AS v USING (unit_id)
LEFT JOIN types AS k USING (unit_id)
ORDER BY c.root_id, c.depth, c.unit_id, v.entered_at
"""

_UNIT_FEATURES = """
WITH visits AS MATERIALIZED (
    SELECT h.root_id, h.depth, h.unit_id, h.unit_type, h.line, h.stage, h.station, h.entered_at, h.left_at,
           s.sensor_id, s.unit
    FROM unit_history(units, since := since, until := until) AS h
    JOIN sensors AS s ON s.station = h.station AND s.parameter = parameter_name
), features AS MATERIALIZED (
    SELECT sensor_id, window_start, window_end, count, mean, min, max, out_of_spec
    FROM sensor_features_1m
    WHERE parameter = parameter_name
      AND date BETWEEN coalesce(CAST(since AS DATE), DATE '-infinity')
                   AND coalesce(CAST(until AS DATE), DATE 'infinity')
), overlap AS (
    -- Windows that overlap the visit, or hold its instant when it took no time.
    SELECT v.root_id, v.unit_id, v.station, v.entered_at, v.sensor_id,
           count(*) AS windows, sum(f.count) AS samples,
           sum(f.mean * f.count) / nullif(sum(f.count), 0) AS mean,
           min(f.min) AS min, max(f.max) AS max, sum(f.out_of_spec) AS out_of_spec
    FROM visits AS v
    JOIN features AS f
      ON f.sensor_id = v.sensor_id AND f.window_end > v.entered_at
     AND (v.left_at IS NULL OR f.window_start < v.left_at OR f.window_start <= v.entered_at)
    GROUP BY ALL
), as_of AS (
    SELECT v.root_id, v.unit_id, v.station, v.entered_at, v.sensor_id,
           f.window_start AS asof_window_start, f.mean AS asof_mean
    FROM visits AS v
    ASOF LEFT JOIN features AS f ON f.sensor_id = v.sensor_id AND f.window_start <= v.entered_at
)
SELECT v.root_id, v.depth, v.unit_id, v.unit_type, v.line, v.stage, v.station, v.entered_at, v.left_at,
       v.sensor_id, v.unit, coalesce(o.windows, 0) AS windows, coalesce(o.samples, 0) AS samples,
       o.mean, o.min, o.max, o.out_of_spec, a.asof_window_start, a.asof_mean
FROM visits AS v
LEFT JOIN overlap AS o USING (root_id, unit_id, station, entered_at, sensor_id)
LEFT JOIN as_of AS a USING (root_id, unit_id, station, entered_at, sensor_id)
ORDER BY v.root_id, v.depth, v.unit_id, v.entered_at, v.sensor_id
"""

_HISTORY_COLUMNS = {
    "root_id": "The unit whose history this is (one of the ids passed).",
    "depth": "0 for the unit itself, 1 for what it consumed, 2 for what those consumed...",
    "unit_id": "The unit of this row.",
    "unit_type": "slurry_batch, electrode_roll or cell; null when the lake holds no event of the unit "
                 "(e.g. a roll taken from stock).",
    "consumed_by": "The unit that consumed this one (one level closer to root_id); null at depth 0.",
    "line": "Production line of the visit.",
    "stage": "Process stage of the visit.",
    "station": "Station of the visit; null when the lake holds no enter event of the unit.",
    "entered_at": "Time of the enter event, UTC.",
    "left_at": "Time of the first leave or scrap at that station at or after entered_at; null while "
               "the unit is still there.",
    "outcome": "leave or scrap (how the visit ended); null while the unit is still there.",
    "reason": "Scrap reason when outcome is scrap.",
}

#: Every helper macro, in the order the docs present them.
MACROS: dict[str, Macro] = {m.name: m for m in (
    Macro(
        name="time_buckets",
        params="sensor, start_ts, stop_ts, width",
        doc="One row per time bucket of one sensor's readings between start_ts (inclusive) and stop_ts "
            "(exclusive), empty buckets included: n, mean, min, max and last of the samples, and value, "
            "the last sample carried forward into empty buckets (filled).",
        columns={
            "sensor_id": "The sensor asked for.",
            "bucket_start": "Start of the bucket: start_ts + k x width, UTC.",
            "bucket_end": "End of the bucket (exclusive); stop_ts for the last, possibly shorter, bucket.",
            "n": "Samples in the bucket (all qualities, as in sensor_features_1m); 0 for an empty bucket.",
            "mean": "Mean of the samples; null for an empty bucket.",
            "min": "Smallest sample; null for an empty bucket.",
            "max": "Largest sample; null for an empty bucket.",
            "last": "Latest sample by event time; null for an empty bucket.",
            "value": "last, or in an empty bucket the last sample of the latest earlier bucket that had "
                     "one; null before the first sample in the range.",
            "filled": "True when value was carried forward into an empty bucket.",
        },
        body=_TIME_BUCKETS,
    ),
    Macro(
        name="sensor_last",
        params="line_name, since := now() - INTERVAL 1 DAY",
        doc="The last sample of every sensor of a line (all lines when line_name is null) since a time, "
            "with its age; sensors of the asset model that sent nothing since then have null ts and value.",
        columns={
            "site": "Site.",
            "line": "Production line; 'site' for plant-wide sensors.",
            "station": "Station.",
            "stage": "Process stage.",
            "parameter": "What the sensor measures.",
            "unit": "Unit of value.",
            "sensor_id": "Sensor id.",
            "ts": "Event time of the last sample since `since`; null if none.",
            "value": "Value of that sample.",
            "quality": "Its quality: 0 good, 1 uncertain, 2 bad.",
            "age": "now() - ts, an INTERVAL.",
        },
        body=_SENSOR_LAST,
    ),
    Macro(
        name="unit_history",
        params="units, since := NULL, until := NULL",
        doc="The process history of units (one id or a list): each unit itself and every upstream unit "
            "it consumed, recursively over parent_ids, with every station visit (enter to leave or "
            "scrap). since and until (DATE, inclusive) bound the event dates searched.",
        columns=_HISTORY_COLUMNS,
        body=_UNIT_HISTORY,
    ),
    Macro(
        name="unit_features",
        params="units, parameter_name, since := NULL, until := NULL",
        doc="For every station visit of unit_history(units), each sensor of parameter_name at that "
            "station: its 1-minute features while the unit was there (windows overlapping the visit), "
            "and as of entry (the latest window starting at or before entered_at), for when no window "
            "overlaps. since and until (DATE, inclusive) bound the event and feature dates searched.",
        columns={
            **{k: _HISTORY_COLUMNS[k] for k in ("root_id", "depth", "unit_id", "unit_type", "line", "stage",
                                                "station", "entered_at", "left_at")},
            "sensor_id": "A sensor of the station measuring parameter_name (asset model).",
            "unit": "Unit of the sensor's values.",
            "windows": "1-minute windows of the sensor overlapping the visit; 0 if none.",
            "samples": "Samples in those windows.",
            "mean": "Sample-weighted mean of those windows; null if none.",
            "min": "Smallest sample in those windows.",
            "max": "Largest sample in those windows.",
            "out_of_spec": "Samples outside the spec limits in those windows.",
            "asof_window_start": "Start of the latest window of the sensor starting at or before entered_at.",
            "asof_mean": "Mean of that window: the value in force when the unit entered.",
        },
        body=_UNIT_FEATURES,
    ),
)}


def create_macros(con: duckdb.DuckDBPyConnection) -> list[str]:
    """(Re)create every helper macro on ``con`` and comment it; returns their names.

    Call after the views exist: a macro is bound when called, not when created, but the comments
    make ``duckdb_functions()`` list what each one answers.
    """
    for macro in MACROS.values():
        con.execute(macro.create_sql())
        con.execute(f"COMMENT ON MACRO TABLE {sql_ident(macro.name)} IS {sql_string(macro.doc)}")
    return list(MACROS)
