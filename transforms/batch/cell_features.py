"""``cell_features``: each cell's process history up to the quality gate, one row per cell, in SQL.

The gate is the moment a cell leaves electrolyte filling. Formation and aging, the longest and most
energy-hungry steps, come after it, so a cell pulled there saves them. A model scored at the gate may
only use what is known then, so every feature here comes from data timestamped before the cell's
``leave`` event at filling:

* **Genealogy.** The cell and every unit it consumed, recursively over ``parent_ids`` (electrode
  rolls, their slurry batches), and each one's visits: from an ``enter`` event to the first
  ``leave`` or ``scrap`` at that station after it. Only visits that ended by the gate count.
* **Sensor features per visit.** For every sensor with a spec limit at the visited station, the
  samples with ``entered_at <= ts < left_at`` (quality not ``bad``): their number, the share out of
  spec and their mean, pooled over the sensors of one parameter (a coater's 16 thickness gauges)
  and over the visits of one station template (both rolls of a cell pass the vacuum dryer). Cell
  assembly runs in the dry room, so visits at stacking and filling also get the dry room's sensors
  over the same interval.
* **Measured attributes.** ``measure`` events of those units before the gate (viscosity of a batch,
  areal loading of a roll, fill mass of the cell), averaged per station template and attribute.

Exact and linear in the data: readings are summed per sensor stream and timestamp (offsets from a
value typical of the stream, as integers of 1/SCALE of its unit, so sums do not depend on their
order), the instants visits start and end at are placed among them, one window accumulates the sums
in time order, and each visit takes the difference of the sums at its two ends (equi-joins). A visit
of four seconds and one of two minutes cost the same, and overlapping visits (four cells in a
stacker at once) need no range join. (Two ASOF joins did the same on a small lake, but DuckDB 2.0
planned them into minutes on a day of the reference plant.) For a few cells, the live score's case,
the readings are read only over the span their visits cover and each visit sums its own samples:
about a second for one cell on a 60M-reading lake, against a minute for the day plan. Both plans give
bit-identical rows (tested).

Feature names are ``<station>.<parameter>.<stat>`` with the station's id within its line (``coat-c``,
not ``L1-coat-c``), ``<station>.<environment station>.<parameter>.<stat>`` for dry-room sensors
during a visit, and ``<station>.<attribute>.measured``; stats are ``oos_share``, ``mean`` and
``samples``. They sit in one ``MAP`` column so the table's schema is the same for every plant
(docs/predictive-quality.md lists them for the reference plant).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import duckdb
import pyarrow as pa

from schemas.batch import CELL_FEATURES
from schemas.contracts import QUALITY_CODES, Quality
from transforms.batch.store import conform

#: How far before the gate window the history is read: electrode rolls wait in stock for minutes to
#: hours before a cell consumes them. A unit made earlier than this contributes no visits.
LOOKBACK = timedelta(days=1)
#: Stages that run inside the dry room, whose sensors describe the air a cell saw there.
DRY_ROOM_STAGES = ("stacking", "filling")
ENVIRONMENT_STAGE = "dry_room"

_HISTORY = """
WITH RECURSIVE gate AS (
    SELECT unit_id AS cell_id, any_value(site) AS site, any_value(line) AS line, min(ts) AS gate_ts
    FROM production_events
    WHERE date BETWEEN CAST($since AS DATE) AND CAST($until AS DATE)
      AND kind = 'leave' AND stage = 'filling' AND unit_type = 'cell'
      AND ts >= $since AND ts < $until
      AND ($cells IS NULL OR list_contains($cells, unit_id))
    GROUP BY unit_id
), raw AS MATERIALIZED (
    SELECT event_id, src_partition, src_offset, unit_id, kind, site, line, stage, station, ts, parent_ids,
           attribute, value
    FROM production_events
    WHERE date BETWEEN CAST($history_from AS DATE) AND CAST($until AS DATE)
      AND ts >= $history_from AND ts < $until
), parents AS (
    SELECT DISTINCT unit_id, unnest(parent_ids) AS parent_id FROM raw WHERE len(parent_ids) > 0
), lineage(cell_id, unit_id, depth) AS (
    SELECT cell_id, cell_id, 0 FROM gate
    UNION
    SELECT l.cell_id, p.parent_id, l.depth + 1 FROM lineage AS l JOIN parents AS p ON p.unit_id = l.unit_id
    WHERE l.depth < 8
), units AS (
    SELECT DISTINCT cell_id, unit_id FROM lineage
), ev AS MATERIALIZED (
    -- The dedup rule of duplicate_events: of repeated event ids, the copy that arrived first. Copies
    -- of an event share its unit, so deduplicating only the lineage's events is the same and cheaper.
    SELECT unit_id, kind, site, line, stage, station, ts, parent_ids, attribute, value
    FROM raw
    WHERE unit_id IN (SELECT unit_id FROM units)
    QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY src_partition, src_offset) = 1
), visits AS MATERIALIZED (
    SELECT u.cell_id, n.unit_id, n.site, n.line, n.stage, n.station, n.ts AS entered_at, x.ts AS left_at
    FROM (SELECT * FROM ev WHERE kind = 'enter' AND unit_id IN (SELECT unit_id FROM units)) AS n
    ASOF JOIN (SELECT * FROM ev WHERE kind IN ('leave', 'scrap')) AS x
        ON x.unit_id = n.unit_id AND x.station = n.station AND x.ts >= n.ts
    JOIN units AS u ON u.unit_id = n.unit_id
    JOIN gate AS g ON g.cell_id = u.cell_id
    WHERE x.ts <= g.gate_ts
), limited AS (
    -- ref: a value typical of the stream, subtracted before summing, so that running sums over a
    -- day stay small and the difference of two of them keeps its precision.
    SELECT sensor_id, site, line, stage, station, parameter, lsl, usl,
           avg(coalesce((lsl + usl) / 2, lsl, usl)) OVER (PARTITION BY station, parameter) AS ref
    FROM sensors
    WHERE (lsl IS NOT NULL OR usl IS NOT NULL) AND NOT is_energy_meter
), visit_streams AS MATERIALIZED (
    -- The visited station's own sensors, and the dry room's during cell assembly.
    SELECT DISTINCT v.cell_id, v.unit_id, v.line, v.station AS at_station, v.entered_at, v.left_at,
           s.station, s.line AS stream_line, s.parameter, s.ref, false AS environment
    FROM visits AS v JOIN limited AS s ON s.station = v.station
    UNION ALL
    SELECT DISTINCT v.cell_id, v.unit_id, v.line, v.station, v.entered_at, v.left_at,
           s.station, s.line, s.parameter, s.ref, true
    FROM visits AS v JOIN limited AS s ON s.site = v.site AND s.stage = $environment_stage
    WHERE list_contains($dry_room_stages, v.stage)
)"""

#: What the visits need of ``readings``: the span they cover. Bounding the scan by it is what makes a
#: few cells (the live score) cheap: their history is minutes of the day, not the whole lookback.
_SPAN_SQL = _HISTORY + """
SELECT min(entered_at) AS lo, max(left_at) AS hi FROM visit_streams"""

_SQL = _HISTORY + """, needed AS (
    SELECT DISTINCT station, parameter FROM visit_streams
), samples AS (
    -- One row per stream and timestamp, so a running sum read at an instant holds all of it.
    SELECT s.station, s.parameter, r.ts, count(*) AS n,
           count(*) FILTER (WHERE r.value < s.lsl OR r.value > s.usl) AS oos,
           sum(CAST(round((r.value - s.ref) * {scale}) AS HUGEINT)) AS total
    FROM readings AS r
    JOIN limited AS s USING (sensor_id)
    SEMI JOIN needed AS k ON k.station = s.station AND k.parameter = s.parameter
    WHERE r.date BETWEEN CAST($readings_from AS DATE) AND CAST($readings_until AS DATE)
      AND r.ts >= $readings_from AND r.ts < $readings_until AND r.quality <> $bad
    GROUP BY ALL
{per_visit}), sensor_features AS (
    SELECT cell_id,
           CASE WHEN environment THEN {tmpl_at} || '.' || {tmpl_stream} ELSE {tmpl_at} END
               || '.' || parameter AS stem,
           sum(n) AS n, sum(oos) AS oos, sum(total) AS total, any_value(ref) AS ref
    FROM per_visit
    GROUP BY ALL
), measured AS (
    SELECT u.cell_id, {tmpl_ev} || '.' || e.attribute || '.measured' AS name, avg(e.value) AS value
    FROM ev AS e JOIN units AS u USING (unit_id) JOIN gate AS g USING (cell_id)
    WHERE e.kind = 'measure' AND e.attribute IS NOT NULL AND e.ts <= g.gate_ts
    GROUP BY ALL
), named AS (
    SELECT cell_id, stem || '.samples' AS name, CAST(n AS DOUBLE) AS value FROM sensor_features
    UNION ALL SELECT cell_id, stem || '.oos_share', CAST(oos AS DOUBLE) / nullif(n, 0) FROM sensor_features
    UNION ALL SELECT cell_id, stem || '.mean', ref + CAST(total AS DOUBLE) / {scale} / nullif(n, 0) FROM sensor_features
    UNION ALL SELECT cell_id, name, value FROM measured
), packed AS (
    SELECT cell_id, map_from_entries(list({{'key': name, 'value': value}} ORDER BY name)) AS features,
           count(*) AS n_features
    FROM named GROUP BY cell_id
), upstream AS (
    SELECT cell_id, list(unit_id ORDER BY unit_id) AS upstream_ids FROM units WHERE unit_id <> cell_id GROUP BY cell_id
)
SELECT CAST(timezone('UTC', g.gate_ts) AS DATE) AS date, g.cell_id, g.site, g.line, g.gate_ts,
       coalesce(u.upstream_ids, []) AS upstream_ids, coalesce(p.n_features, 0) AS n_features,
       coalesce(p.features, MAP {{}}) AS features
FROM gate AS g
LEFT JOIN upstream AS u USING (cell_id)
LEFT JOIN packed AS p USING (cell_id)
ORDER BY g.site, g.line, g.gate_ts, g.cell_id
"""


#: Per visit and stream, the samples' count, out-of-spec count and summed offset, for a whole day:
#: running sums in time order, each visit the difference of the sums at its two ends (equi-joins).
#: Linear in the data however many visits overlap.
_PER_VISIT_RUNNING = """
), points AS MATERIALIZED (
    -- The instants the visits start and end at, per stream.
    SELECT station, parameter, entered_at AS ts FROM visit_streams
    UNION
    SELECT station, parameter, left_at FROM visit_streams
), running AS MATERIALIZED (
    -- Running sums in time order, with each instant placed before the samples taken at it: the sums
    -- read at an instant hold exactly the samples strictly before it.
    SELECT station, parameter, ts, point,
           sum(n) OVER w AS n, sum(oos) OVER w AS oos, sum(total) OVER w AS total
    FROM (SELECT station, parameter, ts, 0 AS point, 0 AS n, 0 AS oos, CAST(0 AS HUGEINT) AS total FROM points
          UNION ALL
          SELECT station, parameter, ts, 1, n, oos, total FROM samples)
    WINDOW w AS (PARTITION BY station, parameter ORDER BY ts, point ROWS UNBOUNDED PRECEDING)
), before AS (
    SELECT station, parameter, ts, n, oos, total FROM running WHERE point = 0
), per_visit AS MATERIALIZED (
    SELECT vs.*, l.n - e.n AS n, l.oos - e.oos AS oos, l.total - e.total AS total
    FROM visit_streams AS vs
    JOIN before AS e ON e.station = vs.station AND e.parameter = vs.parameter AND e.ts = vs.entered_at
    JOIN before AS l ON l.station = vs.station AND l.parameter = vs.parameter AND l.ts = vs.left_at
"""

#: The same for a few cells (the live score): each visit sums the samples inside it directly. Cheap
#: when visits are few, quadratic when thousands overlap, hence the running plan for a day. Both
#: sum integers (offsets in units of 1/SCALE), so they agree to the last bit whatever the order.
_PER_VISIT_DIRECT = """
), per_visit AS MATERIALIZED (
    SELECT vs.*, coalesce(sum(s.n), 0) AS n, coalesce(sum(s.oos), 0) AS oos,
           coalesce(sum(s.total), CAST(0 AS HUGEINT)) AS total
    FROM visit_streams AS vs
    LEFT JOIN samples AS s ON s.station = vs.station AND s.parameter = vs.parameter
        AND s.ts >= vs.entered_at AND s.ts < vs.left_at
    GROUP BY ALL
"""

#: Offsets from a stream's reference are summed as integers of 1/SCALE of the sensor's unit: exact,
#: so that a day and one cell, or two runs on different threads, give bit-identical features.
SCALE = 1_000_000_000
#: Up to this many cells, ``cell_features`` sums each visit directly instead of by running sums.
DIRECT_MAX_CELLS = 64


def _template(station: str, line: str) -> str:
    """SQL for a station's id within its line: ``L1-coat-c`` -> ``coat-c``; site-wide stations keep theirs."""
    return (f"CASE WHEN starts_with({station}, {line} || '-') THEN substr({station}, length({line}) + 2) "
            f"ELSE {station} END")


_TEMPLATES = {"tmpl_at": _template("at_station", "line"), "tmpl_stream": _template("station", "stream_line"),
              "tmpl_ev": _template("e.station", "e.line")}
CELL_FEATURES_SQL = _SQL.format(per_visit=_PER_VISIT_RUNNING, scale=SCALE, **_TEMPLATES)
FEW_CELLS_SQL = _SQL.format(per_visit=_PER_VISIT_DIRECT, scale=SCALE, **_TEMPLATES)
SPAN_SQL = _SPAN_SQL.format(**_TEMPLATES)


def _utc(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("give timezone-aware times (UTC)")
        return value.astimezone(UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def cell_features(con: duckdb.DuckDBPyConnection, since: date | datetime, until: date | datetime,
                  cells: list[str] | None = None) -> pa.Table:
    """Rows of ``cell_features`` for the cells leaving filling in ``[since, until)`` (a day: its midnights).

    As the day's file holds them: the ``date`` partition column is left to the file's directory.

    ``cells`` restricts them to those ids (live scoring asks for the cells that just passed the
    gate). ``con`` is a warehouse connection (its views ``production_events``, ``readings`` and
    ``sensors``). Every parameter is bound; the same call gives the same table.
    """
    lo, hi = _utc(since), _utc(until)
    if hi <= lo:
        raise ValueError(f"empty gate window {lo.isoformat()} .. {hi.isoformat()}")
    params = {"since": lo, "until": hi, "history_from": lo - LOOKBACK, "cells": cells,
              "environment_stage": ENVIRONMENT_STAGE, "dry_room_stages": list(DRY_ROOM_STAGES),
              "bad": QUALITY_CODES[Quality.BAD]}
    lo_read, hi_read = con.execute(SPAN_SQL, {k: v for k, v in params.items() if k != "bad"}).fetchall()[0]
    if lo_read is None:  # no visit ended by a gate: no reading is needed
        lo_read = hi_read = lo
    params |= {"readings_from": lo_read, "readings_until": hi_read}
    sql = FEW_CELLS_SQL if cells is not None and len(cells) <= DIRECT_MAX_CELLS else CELL_FEATURES_SQL
    return conform(CELL_FEATURES, con.sql(sql, params=params).to_arrow_table())


def day_window(day: date) -> tuple[datetime, datetime]:
    """The gate window of one UTC day."""
    start = _utc(day)
    return start, start + timedelta(days=1)
