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
the plan follows the lineage unit by unit (one filtered scan of the events per generation, not the
whole look-back), then each visit sums its own samples, reading only its stations over the span the
visits cover; the sums of upstream visits (rolls, batches: shared by many cells) can be kept in a
:class:`VisitCache` for the next cells. About 0.4 s for two cells on a 60M-reading lake (1.0 s
without the cache), against minutes for the day plan. All of them give bit-identical rows (tested).

Feature names are ``<station>.<parameter>.<stat>`` with the station's id within its line (``coat-c``,
not ``L1-coat-c``), ``<station>.<environment station>.<parameter>.<stat>`` for dry-room sensors
during a visit, and ``<station>.<attribute>.measured``; stats are ``oos_share``, ``mean`` and
``samples``. They sit in one ``MAP`` column so the table's schema is the same for every plant
(docs/predictive-quality.md lists them for the reference plant).
"""

from __future__ import annotations

import threading
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

#: Offsets from a stream's reference are summed as integers of 1/SCALE of the sensor's unit: exact,
#: so that a day and one cell, or two runs on different threads, give bit-identical features.
SCALE = 1_000_000_000

#: The sensors whose samples become features: those with a spec limit, energy meters aside.
_LIMITED = """\
    SELECT sensor_id, site, line, stage, station, parameter, lsl, usl,
           avg(coalesce((lsl + usl) / 2, lsl, usl)) OVER (PARTITION BY station, parameter) AS ref
    FROM sensors
    WHERE (lsl IS NOT NULL OR usl IS NOT NULL) AND NOT is_energy_meter
"""

#: The events of the look-back window. A day's plan reads them all; the few-cells plan reads only
#: those of the cells' lineage (:func:`_lineage_events`), which it finds unit by unit.
_EVENTS = """SELECT event_id, src_partition, src_offset, unit_id, unit_type, kind, site, line, stage, station, ts,
           parent_ids, attribute, value
    FROM production_events
    WHERE date BETWEEN CAST($history_from AS DATE) AND CAST($until AS DATE)
      AND ts >= $history_from AND ts < $until"""
#: Of the units in ``$units`` only: one generation of a lineage.
_UNIT_EVENTS_SQL = _EVENTS + """ AND list_contains($units, unit_id)"""
#: What the few-cells plan reads as ``raw``: the lineage's events, registered by ``_few_cells``.
_LINEAGE_RAW = "SELECT * FROM _cf_raw"
#: Where the gate events come from: the day's events, or (few cells) the lineage's, which hold them.
_GATE_FROM_EVENTS = "production_events\n    WHERE date BETWEEN CAST($since AS DATE) AND CAST($until AS DATE) AND"
_GATE_FROM_LINEAGE = "_cf_raw\n    WHERE"
#: Warming the cache for upstream units: each stands in for a cell whose gate is the warm's instant
#: (``_cf_gate``, registered by :func:`warm_upstream`), so the same visits query finds their visits.
_GATE_FROM_GIVEN = "_cf_gate\n    WHERE"

_HISTORY = """
WITH RECURSIVE gate AS (
    SELECT unit_id AS cell_id, any_value(site) AS site, any_value(line) AS line, min(ts) AS gate_ts
    FROM {gate_from}
      kind = 'leave' AND stage = 'filling' AND unit_type = 'cell'
      AND ts >= $since AND ts < $until
      AND ($cells IS NULL OR list_contains($cells, unit_id))
    GROUP BY unit_id
), raw AS MATERIALIZED (
    {raw}
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
""" + _LIMITED + """), visit_streams AS MATERIALIZED (
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

#: One row per sensor stream (station, parameter) and timestamp of the streams in ``{visits}``, over
#: the readings span: a running sum read at an instant then holds all of it.
_SAMPLES = """needed AS (
    SELECT DISTINCT station, parameter FROM {visits}
), samples AS (
    SELECT s.station, s.parameter, r.ts, count(*) AS n,
           count(*) FILTER (WHERE r.value < s.lsl OR r.value > s.usl) AS oos,
           sum(CAST(round((r.value - s.ref) * {scale}) AS HUGEINT)) AS total
    FROM readings AS r
    JOIN limited AS s USING (sensor_id)
    SEMI JOIN needed AS k ON k.station = s.station AND k.parameter = s.parameter
    WHERE r.date BETWEEN CAST($readings_from AS DATE) AND CAST($readings_until AS DATE)
      AND r.ts >= $readings_from AND r.ts < $readings_until AND r.quality <> $bad{stations}
    GROUP BY ALL
)"""

_SQL = _HISTORY + """{per_visit}), sensor_features AS (
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
_PER_VISIT_RUNNING = """, """ + _SAMPLES.format(visits="visit_streams", scale=SCALE, stations="") + """, points AS MATERIALIZED (
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

#: The columns that identify one visit of one unit seen by one sensor stream, whichever cell it is
#: in: a roll's coating visit is the same for every cell stacked from it.
VISIT_KEY = ("unit_id", "at_station", "entered_at", "left_at", "station", "parameter", "environment")

#: The few-cells plan, step 1: the distinct visit streams of the cells' histories, and whether the
#: unit is one of the cells (its own stacking and filling) or upstream of them (shared, cacheable).
_VISITS_SQL = _HISTORY + """
SELECT DISTINCT {key}, unit_id = cell_id AS own,
       (SELECT md5(string_agg(concat_ws('|', sensor_id, station, parameter, lsl, usl, ref), ';' ORDER BY sensor_id))
        FROM limited) AS limits
FROM visit_streams""".replace("{key}", ", ".join(VISIT_KEY))

#: Step 2: each visit of ``_cf_todo`` sums the samples inside it directly. Cheap when visits are few,
#: quadratic when thousands overlap, hence the running plan for a day. Both sum integers (offsets in
#: units of 1/SCALE), so they agree to the last bit whatever the order.
_SUMS_SQL = """WITH limited AS (
""" + _LIMITED + """), """ + _SAMPLES.format(
    visits="_cf_todo", scale=SCALE,
    # The stations as a list filter, not a join: the scan then skips the row groups of other
    # stations (compacted readings are sorted by hour, sensor, time), about 8x fewer bytes for a
    # cell's own visits. A reading with no station (its sensor unknown when it landed) is kept.
    stations="\n      AND (r.station IS NULL OR list_contains($stations, r.station))") + """
SELECT t.*, coalesce(sum(s.n), 0) AS n, coalesce(sum(s.oos), 0) AS oos,
       coalesce(sum(s.total), CAST(0 AS HUGEINT)) AS total
FROM _cf_todo AS t
LEFT JOIN samples AS s ON s.station = t.station AND s.parameter = t.parameter
    AND s.ts >= t.entered_at AND s.ts < t.left_at
GROUP BY ALL"""

#: Step 3: the features, from the sums of step 2 and those of ``VisitCache``.
_PER_VISIT_KNOWN = """, per_visit AS MATERIALIZED (
    SELECT vs.*, k.n, k.oos, CAST(k.total AS HUGEINT) AS total
    FROM visit_streams AS vs
    JOIN _cf_sums AS k USING ({key})
""".replace("{key}", ", ".join(VISIT_KEY))

#: Up to this many cells, ``cell_features`` sums each visit directly instead of by running sums.
DIRECT_MAX_CELLS = 64


def _template(station: str, line: str) -> str:
    """SQL for a station's id within its line: ``L1-coat-c`` -> ``coat-c``; site-wide stations keep theirs."""
    return (f"CASE WHEN starts_with({station}, {line} || '-') THEN substr({station}, length({line}) + 2) "
            f"ELSE {station} END")


_TEMPLATES = {"tmpl_at": _template("at_station", "line"), "tmpl_stream": _template("station", "stream_line"),
              "tmpl_ev": _template("e.station", "e.line")}
CELL_FEATURES_SQL = _SQL.format(per_visit=_PER_VISIT_RUNNING, scale=SCALE, raw=_EVENTS, gate_from=_GATE_FROM_EVENTS,
                                **_TEMPLATES)
FEW_CELLS_SQL = _SQL.format(per_visit=_PER_VISIT_KNOWN, scale=SCALE, raw=_LINEAGE_RAW, gate_from=_GATE_FROM_LINEAGE,
                            **_TEMPLATES)
VISITS_SQL = _VISITS_SQL.format(raw=_LINEAGE_RAW, gate_from=_GATE_FROM_LINEAGE, **_TEMPLATES)
WARM_VISITS_SQL = _VISITS_SQL.format(raw=_LINEAGE_RAW, gate_from=_GATE_FROM_GIVEN, **_TEMPLATES)
SUMS_SQL = _SUMS_SQL
SPAN_SQL = _SPAN_SQL.format(raw=_EVENTS, gate_from=_GATE_FROM_EVENTS, **_TEMPLATES)


def _utc(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("give timezone-aware times (UTC)")
        return value.astimezone(UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


class VisitCache:
    """Sums of upstream visits already computed, for the next cells that consumed the same units.

    A live score asks for each cell's history as it passes the gate. Most of that history is shared:
    an electrode roll goes into dozens of cells and a slurry batch into several rolls, and their
    visits (mixing, coating, drying) ended minutes earlier. Summing those again for every cell read
    minutes of every upstream station's readings per cell; with the cache a cell reads only its own
    stacking and filling visits once its units were seen. The sums are integers (offsets in units
    of 1/SCALE), so a cached sum gives the same feature bits as a fresh one.

    What it holds is what had landed when the first cell of a unit was scored: a reading of an
    upstream visit that lands later (a late legacy frame) is in the batch rebuild, not in the live
    row of a later cell. The cache is dropped whole when a spec limit changes (the sums count
    out-of-spec samples), and keeps the ``max_visits`` most recent visit streams.
    """

    def __init__(self, max_visits: int = 200_000):
        self.max_visits = max_visits
        self.limits: str | None = None
        self._sums: dict[tuple, tuple[int, int, int]] = {}
        self._lock = threading.Lock()  # the scorer warms it from a second thread (warm_upstream)
        self.hits = 0
        self.misses = 0
        #: Visit streams summed ahead by :func:`warm_upstream`.
        self.warmed = 0

    def __len__(self) -> int:
        return len(self._sums)

    def check_limits(self, limits: str | None) -> None:
        with self._lock:
            if limits != self.limits:
                self._sums.clear()
                self.limits = limits

    def get(self, key: tuple) -> tuple[int, int, int] | None:
        return self._sums.get(key)

    def put(self, key: tuple, sums: tuple[int, int, int]) -> None:
        with self._lock:
            self._sums[key] = sums
            while len(self._sums) > self.max_visits:  # oldest first: dicts keep insertion order
                del self._sums[next(iter(self._sums))]


_KEY_SCHEMA = [("unit_id", pa.string()), ("at_station", pa.string()), ("entered_at", pa.timestamp("us", "UTC")),
               ("left_at", pa.timestamp("us", "UTC")), ("station", pa.string()), ("parameter", pa.string()),
               ("environment", pa.bool_())]
_SUMS_SCHEMA = pa.schema([*_KEY_SCHEMA, ("n", pa.int64()), ("oos", pa.int64()), ("total", pa.decimal128(38, 0))])


#: Generations of units a lineage is followed through (the day plan's recursion stops there too).
MAX_DEPTH = 8


def _lineage_events(con: duckdb.DuckDBPyConnection, params: dict) -> pa.Table:
    """The look-back window's events of the cells and of every unit they consumed, generation by generation.

    The day plan reads the whole window's events and follows ``parent_ids`` in a recursive CTE; for
    a few cells that read grows with the look-back (a day of the reference plant holds two million
    events) while the lineage has about ten units. Each generation here is one scan of ``unit_id``
    with a list filter, and the rows are the same: every event of every unit the recursion reaches.
    """
    window = {k: params[k] for k in ("history_from", "until")}
    seen: set[str] = set(params["cells"])
    frontier, parts = sorted(seen), []
    for _ in range(MAX_DEPTH + 1):
        part = con.sql(_UNIT_EVENTS_SQL, params=window | {"units": frontier}).to_arrow_table()
        parts.append(part)
        parents = {p for ids in part.column("parent_ids").to_pylist() if ids for p in ids} - seen
        if not parents:
            break
        seen |= parents
        frontier = sorted(parents)
    return pa.concat_tables(parts)


def _few_cells(con: duckdb.DuckDBPyConnection, params: dict, cache: VisitCache | None) -> pa.Table:
    """The plan for a few cells: their lineage's events, their visit streams, the sums of those not
    cached, the features."""
    history = {k: v for k, v in params.items() if k not in ("bad", "history_from")}
    con.register("_cf_raw", _lineage_events(con, params))
    try:
        return _few_cells_features(con, params, history, cache)
    finally:
        con.unregister("_cf_raw")


def _visit_sums(con: duckdb.DuckDBPyConnection, todo: list[tuple], bad: int) -> dict[tuple, tuple[int, int, int]]:
    """(samples, out of spec, summed offset) of each visit stream of ``todo`` (keys of VISIT_KEY), read
    from ``readings`` over the span they cover and only at their stations."""
    n_key = len(VISIT_KEY)
    con.register("_cf_todo", pa.Table.from_pylist([dict(zip(VISIT_KEY, k, strict=True)) for k in todo],
                                                  schema=pa.schema(_KEY_SCHEMA)))
    try:
        fresh = con.execute(SUMS_SQL, {"readings_from": min(k[2] for k in todo),
                                       "readings_until": max(k[3] for k in todo), "bad": bad,
                                       "stations": sorted({k[4] for k in todo})}).fetchall()
    finally:
        con.unregister("_cf_todo")
    return {tuple(r[:n_key]): (int(r[n_key]), int(r[n_key + 1]), int(r[n_key + 2])) for r in fresh}


def warm_upstream(con: duckdb.DuckDBPyConnection, units: list[str], at: datetime, cache: VisitCache) -> int:
    """Sum the visits of ``units`` and of everything they consumed, as ended by ``at``, into ``cache``.

    The live scorer calls it when a cell enters stacking: its electrode rolls (and their slurry
    batches) are then finished, and their visits' sums are what the first cell of each roll would
    otherwise read at the gate, minutes of every upstream station's readings on the critical path.
    The same lineage scan, visits query and sums as :func:`cell_features`, with each unit standing
    in for a cell whose gate is ``at``; a visit's sums do not depend on which cell asks (its key holds
    the unit, the station and both instants), so a warmed sum is bit-identical to one summed at the
    gate. The caller must know that the readings up to ``at`` have landed. Returns the visit streams
    summed (those already cached are skipped).
    """
    units = sorted(set(units))
    if not units:
        return 0
    until, n = _utc(at) + timedelta(microseconds=1), len(units)
    params = {"since": until - timedelta(seconds=1), "until": until, "history_from": until - LOOKBACK,
              "cells": units, "environment_stage": ENVIRONMENT_STAGE, "dry_room_stages": list(DRY_ROOM_STAGES)}
    gate = pa.table({"unit_id": units, "site": pa.nulls(n, pa.string()), "line": pa.nulls(n, pa.string()),
                     "ts": pa.array([_utc(at)] * n, pa.timestamp("us", "UTC")), "kind": ["leave"] * n,
                     "stage": ["filling"] * n, "unit_type": ["cell"] * n})
    con.register("_cf_raw", _lineage_events(con, params))
    con.register("_cf_gate", gate)
    try:
        visits = con.execute(WARM_VISITS_SQL, {k: v for k, v in params.items() if k != "history_from"}).fetchall()
    finally:
        con.unregister("_cf_gate")
        con.unregister("_cf_raw")
    n_key = len(VISIT_KEY)
    if not visits:
        return 0
    cache.check_limits(visits[0][n_key + 1])
    todo = sorted({r[:n_key] for r in visits if cache.get(r[:n_key]) is None})
    if todo:
        for key, sums in _visit_sums(con, todo, QUALITY_CODES[Quality.BAD]).items():
            cache.put(key, sums)
        cache.warmed += len(todo)
    return len(todo)


def _few_cells_features(con: duckdb.DuckDBPyConnection, params: dict, history: dict,
                        cache: VisitCache | None) -> pa.Table:
    visits = con.execute(VISITS_SQL, history).fetchall()
    n_key = len(VISIT_KEY)
    if cache is not None and visits:
        cache.check_limits(visits[0][n_key + 1])
    known: dict[tuple, tuple[int, int, int]] = {}
    todo: list[tuple] = []
    for row in visits:
        key, own = row[:n_key], row[n_key]
        hit = None if own or cache is None else cache.get(key)
        if hit is None:
            todo.append(key)
        else:
            known[key] = hit
    if cache is not None:
        cache.hits += len(known)
        cache.misses += len(todo)
    if todo:
        own_units = {k for k, o in ((r[:n_key], r[n_key]) for r in visits) if o}
        for key, sums in _visit_sums(con, todo, params["bad"]).items():
            known[key] = sums
            if cache is not None and key not in own_units:
                cache.put(key, sums)
    sums = pa.Table.from_pylist([dict(zip(VISIT_KEY, k, strict=True)) | {"n": v[0], "oos": v[1], "total": v[2]}
                                 for k, v in known.items()], schema=_SUMS_SCHEMA)
    con.register("_cf_sums", sums)
    try:
        return con.sql(FEW_CELLS_SQL, params=history).to_arrow_table()
    finally:
        con.unregister("_cf_sums")


def cell_features(con: duckdb.DuckDBPyConnection, since: date | datetime, until: date | datetime,
                  cells: list[str] | None = None, cache: VisitCache | None = None) -> pa.Table:
    """Rows of ``cell_features`` for the cells leaving filling in ``[since, until)`` (a day: its midnights).

    As the day's file holds them: the ``date`` partition column is left to the file's directory.

    ``cells`` restricts them to those ids (live scoring asks for the cells that just passed the
    gate); up to DIRECT_MAX_CELLS of them take the few-cells plan, which keeps the sums of upstream
    visits in ``cache`` when given (the scorer keeps one for its life). ``con`` is a warehouse
    connection (its views ``production_events``, ``readings`` and ``sensors``). Every parameter is
    bound; the same call gives the same table, with or without a cache.
    """
    lo, hi = _utc(since), _utc(until)
    if hi <= lo:
        raise ValueError(f"empty gate window {lo.isoformat()} .. {hi.isoformat()}")
    params = {"since": lo, "until": hi, "history_from": lo - LOOKBACK, "cells": cells,
              "environment_stage": ENVIRONMENT_STAGE, "dry_room_stages": list(DRY_ROOM_STAGES),
              "bad": QUALITY_CODES[Quality.BAD]}
    if cells is not None and len(cells) <= DIRECT_MAX_CELLS:
        return conform(CELL_FEATURES, _few_cells(con, params, cache))
    lo_read, hi_read = con.execute(SPAN_SQL, {k: v for k, v in params.items() if k != "bad"}).fetchall()[0]
    if lo_read is None:  # no visit ended by a gate: no reading is needed
        lo_read = hi_read = lo
    params |= {"readings_from": lo_read, "readings_until": hi_read}
    return conform(CELL_FEATURES, con.sql(CELL_FEATURES_SQL, params=params).to_arrow_table())


def day_window(day: date) -> tuple[datetime, datetime]:
    """The gate window of one UTC day."""
    start = _utc(day)
    return start, start + timedelta(days=1)
