"""What each rollup is: its contract (``schemas/rollups.py``), its sources and the SQL of one day.

A rollup's SQL computes one UTC day from source relations written as ``@table`` (replaced by the
caller's relation for that table: a ``read_parquet(...)`` over the lake, or a catalog view) and bound
parameters written as ``$name`` (``$day`` and the contract codes; never text pasted into the SQL).

Why each rollup reads what it reads:

* ``quality_daily`` reads ``production_events``, not ``quality_features``: the windows hold yield and
  first-pass yield as ratios but not the counters behind first-pass yield (first-pass good, first-pass
  scrapped, reworked), and ratios cannot be added up over a day. It also counts events the stream's
  windows left out as late. Visit numbers (rework) need each unit's earlier events, so the day before
  is read as context.
* ``energy_daily`` / ``energy_shift`` sum ``energy_features`` (kWh are additive), and take the good
  cells of the station's line from the same event logic, so kWh per good cell agrees with
  ``quality_daily``.
* ``sensor_daily`` pools the 1-minute windows of ``sensor_features_1m``: (count, mean, std) per window
  are sufficient statistics for the day's mean and variance and for the pooled within-window sigma, so
  Cpk and Ppk are exact, not averages of per-window indices.
* ``sensor_health_daily`` adds up ``sensor_health``.

Float sums are ordered (``sum(x ORDER BY ...)``) so that a day rebuilt gives the same bits whatever
the thread schedule: byte-identical files depend on it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa

from schemas.contracts import EventKind, Stage
from schemas.rollups import ENERGY_DAILY, ENERGY_SHIFT, QUALITY_DAILY, SENSOR_DAILY, SENSOR_HEALTH_DAILY
from schemas.tables import TableSpec
from transforms.settings import DEFAULT_SHIFT_STARTS, parse_shift_starts

_SOURCE_RE = re.compile(r"@([a-z][a-z0-9_]*)")
_PARAM_RE = re.compile(r"\$([a-z][a-z0-9_]*)")

#: Contract codes the SQL compares with, bound as parameters.
_CONTRACT_PARAMS: dict[str, Any] = {
    "enter": EventKind.ENTER.value, "leave": EventKind.LEAVE.value, "scrap": EventKind.SCRAP.value,
    "grade": EventKind.GRADE.value, "eol": Stage.AGING_EOL.value,
    # The stream's quality windows file a scrap without a reason under this name; grades likewise here.
    "unknown": "unknown",
}


@dataclass(frozen=True)
class SourceDep:
    """Which ``date=`` directories of a source table one day of a rollup reads.

    ``days`` are offsets (in days) of the directories whose rows land in the rollup's day; ``context``
    offsets are read only to know a unit's earlier visits. Both are fingerprinted, so a change in any
    of them rebuilds the day; only ``days`` make a day a candidate for a build.
    """

    table: str
    days: tuple[int, ...] = (0,)
    context: tuple[int, ...] = ()

    @property
    def offsets(self) -> tuple[int, ...]:
        return tuple(sorted({*self.days, *self.context}))


def _day_only(day: date) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class RollupSpec:
    """One rollup: its table contract, the SQL of one day, and the sources that SQL reads.

    ``snapshots`` are undated tables read whole (the ``sensors`` asset model); a change to one rebuilds
    every kept day of the rollup. ``params`` gives the bound parameters of a day beyond ``$day`` and the
    contract codes.
    """

    table: TableSpec
    sql: str
    inputs: tuple[SourceDep, ...]
    snapshots: tuple[str, ...] = ()
    params: Callable[[date], dict[str, Any]] = field(default=_day_only, compare=False)

    def __post_init__(self) -> None:
        unknown = set(_SOURCE_RE.findall(self.sql)) - set(self.sources)
        if unknown:
            raise ValueError(f"{self.name}: SQL reads {sorted(unknown)}, not declared as inputs or snapshots")

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def grain(self) -> str:
        return self.table.grain

    @property
    def doc(self) -> str:
        return self.table.doc

    @property
    def schema(self) -> pa.Schema:
        """The logical schema, ``date`` included."""
        return self.table.schema

    @property
    def file_schema(self) -> pa.Schema:
        """The schema of the file content (``date`` lives in the directory name)."""
        return self.table.file_schema

    @property
    def sort_key(self) -> tuple[str, ...]:
        return self.table.sort_key

    def column_docs(self) -> dict[str, str]:
        return self.table.column_docs()

    @property
    def sources(self) -> tuple[str, ...]:
        """Every source table the SQL reads, dated ones first."""
        return (*dict.fromkeys(d.table for d in self.inputs), *self.snapshots)

    def render(self, sources: Mapping[str, str]) -> str:
        """The SQL with each ``@table`` replaced by the caller's relation for it."""
        missing = [t for t in self.sources if t not in sources]
        if missing:
            raise ValueError(f"{self.name}: no source relation for {missing}")
        return _SOURCE_RE.sub(lambda m: sources[m[1]], self.sql)

    def bind(self, day: date) -> dict[str, Any]:
        """The bound parameters of one day: exactly those the SQL names (DuckDB refuses extra ones)."""
        available = {"day": day, **_CONTRACT_PARAMS, **self.params(day)}
        return {name: available[name] for name in dict.fromkeys(_PARAM_RE.findall(self.sql))}

    @property
    def version(self) -> str:
        """Changes when the rollup's definition does (SQL, schema, sources, settings such as the shifts),
        so a kept day built by an older definition is rebuilt while its sources are still there."""
        reference = date(2000, 1, 1)
        text = json.dumps({
            "sql": self.sql, "schema": self.file_schema.to_string(show_field_metadata=False),
            "inputs": [[d.table, d.days, d.context] for d in self.inputs], "snapshots": self.snapshots,
            "params": {k: str(v) for k, v in self.bind(reference).items()},
        }, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]


def _flagged_events(lo: str, hi: str) -> str:
    """CTEs ``ev`` and ``flagged``: events dated ``lo``..``hi`` with their visit and scrap state.

    The rules of ``QualityWindows`` (transforms/features/quality.py), over event time: a unit's visit
    of a stage is the number of its ``enter`` events there so far (0 before the first), and
    ``scrapped_in_visit`` says a scrap of the unit at that stage came before, in the same visit.
    Ties in event time keep arrival order (partition, offset), as the stream does.
    """
    return f"""
ev AS (
    SELECT site, line, stage, unit_id, kind, reason, grade, late, ts, date, src_partition, src_offset,
           sum(CASE WHEN kind = $enter THEN 1 ELSE 0 END) OVER (
               PARTITION BY unit_id, stage ORDER BY ts, src_partition, src_offset
               ROWS UNBOUNDED PRECEDING) AS visit
    FROM @production_events
    WHERE date BETWEEN {lo} AND {hi}
),
flagged AS (
    SELECT *, bool_or(kind = $scrap) OVER (
               PARTITION BY unit_id, stage, visit ORDER BY ts, src_partition, src_offset
               ROWS UNBOUNDED PRECEDING) AS scrapped_in_visit
    FROM ev
)"""


_GOOD_LEAVE = "kind = $leave AND NOT scrapped_in_visit"


def _count_map(column: str, kind: str, alias: str) -> str:
    """CTE body: per site, line, stage, a map of ``column`` -> events of ``kind`` that day, keys sorted."""
    return f"""
    SELECT site, line, stage,
           map_from_entries(list(struct_pack(key := k, value := n) ORDER BY k)) AS {alias}
    FROM (SELECT site, line, stage, coalesce({column}, $unknown) AS k, count(*) AS n
          FROM day_events WHERE kind = {kind} GROUP BY site, line, stage, k)
    GROUP BY site, line, stage"""


QUALITY_DAILY_SQL = f"""
WITH {_flagged_events("$day - 1", "$day")},
day_events AS (SELECT * FROM flagged WHERE date = $day),
counts AS (
    SELECT site, line, stage,
           count(*) AS events,
           count(*) FILTER (WHERE late) AS late_events,
           count(*) FILTER (WHERE kind = $enter) AS units_in,
           count(*) FILTER (WHERE kind = $leave) AS units_out,
           count(*) FILTER (WHERE {_GOOD_LEAVE}) AS good,
           count(*) FILTER (WHERE kind = $scrap) AS scrapped,
           count(*) FILTER (WHERE kind = $enter AND visit = 2) AS reworked,
           count(*) FILTER (WHERE {_GOOD_LEAVE} AND visit <= 1) AS first_pass_good,
           count(*) FILTER (WHERE kind = $scrap AND visit <= 1) AS first_pass_scrapped
    FROM day_events
    GROUP BY site, line, stage
),
reasons AS ({_count_map("reason", "$scrap", "scrap_by_reason")}),
grades AS ({_count_map("grade", "$grade", "grades")})
SELECT c.site, c.line, c.stage, c.events, c.late_events, c.units_in, c.units_out, c.good, c.scrapped,
       c.reworked, c.first_pass_good, c.first_pass_scrapped,
       c.good / nullif(c.good + c.scrapped, 0) AS yield,
       greatest(c.first_pass_good - c.reworked, 0) / nullif(c.first_pass_good + c.first_pass_scrapped, 0)
           AS first_pass_yield,
       coalesce(r.scrap_by_reason, MAP {{}}::MAP(VARCHAR, BIGINT)) AS scrap_by_reason,
       coalesce(g.grades, MAP {{}}::MAP(VARCHAR, BIGINT)) AS grades
FROM counts c
LEFT JOIN reasons r ON r.site = c.site AND r.line = c.line AND r.stage = c.stage
LEFT JOIN grades g ON g.site = c.site AND g.line = c.line AND g.stage = c.stage
ORDER BY c.site, c.line, c.stage
"""

# Energy per station over a span; ``{span}`` joins the windows to it. Sums of integers are cast back
# from DuckDB's HUGEINT; the kWh sum is ordered (window, then value for two meters on one station).
_ENERGY_AGG = """
    SELECT {keys}, e.site, e.line, e.station, min(e.stage) AS stage,
           sum(e.kwh ORDER BY e.window_start, e.kwh) AS kwh,
           count(*) AS windows,
           CAST(sum(date_diff('millisecond', e.window_start, e.window_end)) AS BIGINT) / 1000 AS metered_s,
           CAST(sum(e.counter_resets) AS BIGINT) AS counter_resets,
           max(e.gap_ms) AS max_gap_ms
    FROM @energy_features e {span}
    GROUP BY {keys}, e.site, e.line, e.station"""

_ENERGY_OUT = """e.site, e.line, e.station, e.stage, e.kwh, e.windows, e.metered_s, e.counter_resets, e.max_gap_ms,
       c.good_cells, e.kwh / nullif(c.good_cells, 0) AS kwh_per_good_cell"""

ENERGY_DAILY_SQL = f"""
WITH {_flagged_events("$day - 1", "$day")},
cells AS (
    SELECT site, line, count(*) FILTER (WHERE {_GOOD_LEAVE}) AS good_cells
    FROM flagged WHERE date = $day AND stage = $eol
    GROUP BY site, line
),
energy AS ({_ENERGY_AGG.format(keys="e.date", span="WHERE e.date = $day")})
SELECT {_ENERGY_OUT}
FROM energy e LEFT JOIN cells c ON c.site = e.site AND c.line = e.line
ORDER BY e.site, e.line, e.station
"""

_IN_SHIFT = """JOIN shifts s ON e.window_start >= s.shift_start AND e.window_start < s.shift_end
    WHERE e.date BETWEEN $day AND $last_day"""

ENERGY_SHIFT_SQL = f"""
WITH shifts AS (
    SELECT unnest($shift_numbers) AS shift, unnest($shift_starts) AS shift_start, unnest($shift_ends) AS shift_end
),
{_flagged_events("$day - 1", "$last_day")},
cells AS (
    SELECT s.shift, f.site, f.line, count(*) FILTER (WHERE f.kind = $leave AND NOT f.scrapped_in_visit) AS good_cells
    FROM flagged f JOIN shifts s ON f.ts >= s.shift_start AND f.ts < s.shift_end
    WHERE f.stage = $eol
    GROUP BY s.shift, f.site, f.line
),
energy AS ({_ENERGY_AGG.format(keys="s.shift, s.shift_start, s.shift_end", span=_IN_SHIFT)})
SELECT e.shift, e.shift_start, e.shift_end, {_ENERGY_OUT}
FROM energy e LEFT JOIN cells c ON c.shift = e.shift AND c.site = e.site AND c.line = e.line
ORDER BY e.shift, e.site, e.line, e.station
"""

SENSOR_DAILY_SQL = """
WITH w AS (
    SELECT sensor_id, window_start, "count" AS n, mean, std, "min", "max", out_of_spec,
           site, line, station, stage, parameter, unit
    FROM @sensor_features_1m
    WHERE date = $day AND "count" > 0
),
per AS (
    SELECT sensor_id,
           arg_max(site, window_start) AS site, arg_max(line, window_start) AS line,
           arg_max(station, window_start) AS station, arg_max(stage, window_start) AS stage,
           arg_max(parameter, window_start) AS parameter, arg_max(unit, window_start) AS unit,
           count(*) AS windows,
           CAST(sum(n) AS BIGINT) AS n,
           sum(n * mean ORDER BY window_start) / sum(n) AS mean,
           -- Each window's sum of squares about its own mean: (count - 1) std^2 (std is null below 2).
           sum(CASE WHEN n >= 2 THEN (n - 1) * std * std ELSE 0.0 END ORDER BY window_start) AS m2_within,
           CAST(sum(n - 1) AS BIGINT) AS dof_within,
           min("min") AS "min", max("max") AS "max",
           CAST(sum(out_of_spec) AS BIGINT) AS out_of_spec
    FROM w
    GROUP BY sensor_id
),
spread AS (
    -- Between-window part of the day's sum of squares: sum of count x (window mean - day mean)^2.
    SELECT w.sensor_id, sum(w.n * (w.mean - p.mean) * (w.mean - p.mean) ORDER BY w.window_start) AS m2_between
    FROM w JOIN per p ON p.sensor_id = w.sensor_id
    GROUP BY w.sensor_id
),
stats AS (
    SELECT p.*, p.m2_within + s.m2_between AS m2,
           sqrt(p.m2_within / nullif(p.dof_within, 0)) AS sigma_within,
           sqrt((p.m2_within + s.m2_between) / nullif(p.n - 1, 0)) AS sigma_overall,
           coalesce(x.ctq, false) AS ctq, x.lsl, x.usl
    FROM per p JOIN spread s ON s.sensor_id = p.sensor_id
    LEFT JOIN @sensors x ON x.sensor_id = p.sensor_id
)
SELECT sensor_id, site, line, station, stage, parameter, unit, windows, n, mean, sigma_overall AS std,
       "min", "max", out_of_spec, out_of_spec / n AS out_of_spec_ratio, ctq, lsl, usl,
       m2, m2_within, dof_within, sigma_within, sigma_overall,
       CASE WHEN ctq AND sigma_within > 0 THEN (usl - lsl) / (6 * sigma_within) END AS cp,
       CASE WHEN ctq AND sigma_within > 0 THEN least(usl - mean, mean - lsl) / (3 * sigma_within) END AS cpk,
       CASE WHEN ctq AND sigma_overall > 0 THEN (usl - lsl) / (6 * sigma_overall) END AS pp,
       CASE WHEN ctq AND sigma_overall > 0 THEN least(usl - mean, mean - lsl) / (3 * sigma_overall) END AS ppk
FROM stats
ORDER BY sensor_id
"""

SENSOR_HEALTH_DAILY_SQL = """
WITH h AS (
    SELECT sensor_id,
           count(*) AS windows,
           CAST(sum(observed) AS BIGINT) AS observed,
           sum(expected ORDER BY window_start) AS expected,
           count(*) FILTER (WHERE observed = 0) AS silent_windows,
           count(*) FILTER (WHERE stuck) AS stuck_windows,
           max(max_gap_ms) AS max_gap_ms,
           CAST(coalesce(sum(late), 0) AS BIGINT) AS late
    FROM @sensor_health
    WHERE date = $day
    GROUP BY sensor_id
)
SELECT h.sensor_id, x.site, x.line, x.station, x.stage, x.parameter, h.windows, h.observed, h.expected,
       h.observed / nullif(h.expected, 0) AS rate_ratio, h.silent_windows, h.stuck_windows, h.max_gap_ms, h.late
FROM h LEFT JOIN @sensors x ON x.sensor_id = h.sensor_id
ORDER BY h.sensor_id
"""


@dataclass(frozen=True)
class Shift:
    """One shift of one day: its number (1 = first start after 00:00 UTC) and its span, UTC."""

    number: int
    start: datetime
    end: datetime


def shifts_of_day(day: date, starts_min: tuple[int, ...]) -> list[Shift]:
    """The shifts that start on ``day``; each ends at the next start, the last at the first of the next day."""
    if not starts_min:
        raise ValueError("at least one shift start is needed")
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    bounds = [*starts_min, starts_min[0] + 24 * 60]
    return [Shift(i + 1, midnight + timedelta(minutes=bounds[i]), midnight + timedelta(minutes=bounds[i + 1]))
            for i in range(len(starts_min))]


def _shift_params(starts_min: tuple[int, ...]) -> Callable[[date], dict[str, Any]]:
    def params(day: date) -> dict[str, Any]:
        shifts = shifts_of_day(day, starts_min)
        # The last day any shift of ``day`` reaches into (its end is exclusive).
        last_day = (shifts[-1].end - timedelta(milliseconds=1)).date()
        return {"shift_numbers": [s.number for s in shifts], "shift_starts": [s.start for s in shifts],
                "shift_ends": [s.end for s in shifts], "last_day": last_day}
    return params


def rollup_specs(shift_starts: str = DEFAULT_SHIFT_STARTS) -> dict[str, RollupSpec]:
    """Every rollup, with shifts starting at ``shift_starts`` (``RollupSettings().shift_starts``)."""
    starts = parse_shift_starts(shift_starts)
    # The night shift runs into the next day unless the first shift starts at midnight.
    crosses = starts[0] != 0
    next_day = (0, 1) if crosses else (0,)
    events = SourceDep("production_events", days=(0,), context=(-1,))
    return {
        QUALITY_DAILY.name: RollupSpec(QUALITY_DAILY, QUALITY_DAILY_SQL, (events,)),
        ENERGY_DAILY.name: RollupSpec(ENERGY_DAILY, ENERGY_DAILY_SQL, (SourceDep("energy_features"), events)),
        ENERGY_SHIFT.name: RollupSpec(
            ENERGY_SHIFT, ENERGY_SHIFT_SQL,
            (SourceDep("energy_features", days=next_day),
             SourceDep("production_events", days=next_day, context=(-1,))),
            params=_shift_params(starts)),
        SENSOR_DAILY.name: RollupSpec(SENSOR_DAILY, SENSOR_DAILY_SQL, (SourceDep("sensor_features_1m"),),
                                      snapshots=("sensors",)),
        SENSOR_HEALTH_DAILY.name: RollupSpec(SENSOR_HEALTH_DAILY, SENSOR_HEALTH_DAILY_SQL,
                                             (SourceDep("sensor_health"),), snapshots=("sensors",)),
    }


#: The rollups with the documented default shifts; commands build theirs from ``RollupSettings``.
ROLLUPS: dict[str, RollupSpec] = rollup_specs()
