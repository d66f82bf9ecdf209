"""Sensor density audit: what each station measures against the reference profile, and the gaps.

A station is held against the profile of its kind (:meth:`ReferenceProfile.for_station`). Per profiled
parameter a station has ``min(present, expected)`` matched sensors; the rest of what the profile lists
is a gap. Gaps are ranked by what they cost a plant that wants to be steered by data: a missing
critical-to-quality sensor first (the quality characteristic is blind), then a missing energy
sub-meter (energy per cell cannot be attributed), then everything else; within a category a sensor
that is missing outright comes before one that is present but slower than the profile, then the
larger shortfall, then flow order. A parameter with no sensor at all ranks above a partly measured one
of the same category: a blind characteristic is worse than a sparsely measured one.

Inputs are read from the warehouse by :func:`read_density_inputs` (``sensors``, ``sensor_health_daily``,
``production_events``); :func:`audit_density` is pure and is what the tests exercise on tiny inputs.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import date

import duckdb
import pyarrow as pa

from schemas.contracts import Stage
from schemas.reference_data import ProfileParameter, ReferenceProfile, StationProfile, station_kind

#: Line of plant-wide stations (the dry room) in the asset model.
SITE_LINE = "site"
CATEGORY_ORDER = {"ctq": 0, "energy": 1, "other": 2}
GAP_ORDER = {"missing": 0, "slow": 1}
STAGE_ORDER = {s.value: i for i, s in enumerate(Stage)}


@dataclass(frozen=True)
class SensorRow:
    """One sensor of the asset model (a row of the ``sensors`` table)."""

    sensor_id: str
    site: str
    line: str
    station: str
    stage: str
    parameter: str
    signal_class: str
    nominal_rate_hz: float
    ctq: bool = False
    is_energy_meter: bool = False
    protocol: str = "opcua"


@dataclass(frozen=True)
class SensorDelivery:
    """What a sensor delivered that day (``sensor_health_daily``): samples received and promised."""

    observed: int
    expected: float


@dataclass
class _Tally:
    """Counts summed from stations up to lines and the plant."""

    stations: int = 0
    sensors: int = 0
    sensors_expected: int = 0
    sensors_matched: int = 0
    sensors_beyond_profile: int = 0
    rate_weighted: float = 0.0  # sum over matched sensors of min(nominal / profile rate, 1)
    ctq_parameters_expected: int = 0
    ctq_parameters_covered: int = 0
    stations_meter_expected: int = 0
    stations_metered: int = 0
    sensors_silent: int = 0
    samples_observed: int = 0
    samples_expected: float = 0.0
    gaps: int = 0

    def add(self, other: _Tally) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


@dataclass(frozen=True)
class SensorGap:
    """One parameter of one station short of the reference profile."""

    site: str
    line: str
    station: str
    stage: str
    parameter: str
    category: str  # ctq | energy | other
    gap: str  # missing | slow
    signal_class: str
    sensors_present: int
    sensors_expected: int
    sensors_missing: int
    sensors_slow: int
    nominal_rate_hz: float | None
    profile_rate_hz: float
    reason: str
    rank: int = 0

    def sort_key(self) -> tuple:
        return (CATEGORY_ORDER[self.category], GAP_ORDER[self.gap], self.sensors_present > 0, -self.sensors_missing,
                STAGE_ORDER.get(self.stage, len(STAGE_ORDER)), self.station, self.parameter)


@dataclass
class DensityAudit:
    """The audit's two tables as rows: per station/line/plant, and the ranked gaps."""

    rows: list[dict] = field(default_factory=list)
    gaps: list[SensorGap] = field(default_factory=list)


def _category(p: ProfileParameter) -> str:
    return "ctq" if p.ctq else "energy" if p.energy_meter else "other"


def _station_gaps(sensors: list[SensorRow], prof: StationProfile) -> tuple[_Tally, list[SensorGap]]:
    """Tally of one station against its profile, and its gaps (unranked)."""
    first = sensors[0]
    by_param: dict[str, list[SensorRow]] = defaultdict(list)
    for s in sensors:
        by_param[s.parameter].append(s)
    t = _Tally(stations=1, sensors=len(sensors), sensors_expected=prof.sensors)
    t.stations_meter_expected = int(prof.metered)
    t.stations_metered = int(prof.metered and any(s.is_energy_meter for s in sensors))
    profiled = {p.parameter for p in prof.parameters}
    t.sensors_beyond_profile = sum(len(v) for k, v in by_param.items() if k not in profiled)
    gaps: list[SensorGap] = []
    for p in prof.parameters:
        present = by_param.get(p.parameter, [])
        matched = min(len(present), p.sensors)
        t.sensors_matched += matched
        t.sensors_beyond_profile += len(present) - matched
        slowest = min((s.nominal_rate_hz for s in present), default=None)
        t.rate_weighted += sum(min(s.nominal_rate_hz / p.rate_hz, 1.0)
                               for s in sorted(present, key=lambda s: -s.nominal_rate_hz)[:matched])
        if p.ctq:
            t.ctq_parameters_expected += 1
            t.ctq_parameters_covered += int(bool(present))
        common = dict(site=first.site, line=first.line, station=first.station, stage=first.stage,
                      parameter=p.parameter, category=_category(p), signal_class=p.signal_class.value,
                      sensors_present=len(present), sensors_expected=p.sensors, profile_rate_hz=p.rate_hz,
                      nominal_rate_hz=slowest)
        if matched < p.sensors:
            gaps.append(SensorGap(**common, gap="missing", sensors_missing=p.sensors - matched, sensors_slow=0,
                                  reason=_missing_reason(p, first.station, prof.kind, len(present))))
        slow = sum(s.nominal_rate_hz < p.rate_hz for s in present)
        if slow:
            gaps.append(SensorGap(**common, gap="slow", sensors_missing=0, sensors_slow=slow,
                                  reason=f"{p.parameter} at {first.station}: {slow} sensor(s) sampled at "
                                         f"{slowest:g} Hz against {p.rate_hz:g} Hz in the reference {prof.kind}, "
                                         "so excursions shorter than a sampling period go unseen"))
    t.gaps = len(gaps)
    return t, gaps


def _missing_reason(p: ProfileParameter, station: str, kind: str, present: int) -> str:
    have = f"{present} of {p.sensors} sensors of the reference {kind}"
    if p.ctq:
        what = "not measured at all: SPC and capability are blind to it" if present == 0 else \
            "partly measured: the positions without a sensor are blind"
        return f"critical-to-quality {p.parameter} at {station} ({have}): {what}"
    if p.energy_meter:
        return (f"no energy sub-meter at {station}: its energy is known only inside a line or site total, "
                "so energy per cell cannot be attributed to the station")
    return f"{p.parameter} ({p.signal_class.value}) at {station}: {have}"


def audit_density(sensors: list[SensorRow], delivery: dict[str, SensorDelivery],
                  cells: dict[tuple[str, str], int], profile: ReferenceProfile) -> DensityAudit:
    """The density audit of every site in ``sensors``.

    ``delivery`` is keyed by sensor id (a sensor without an entry sent nothing that day: it counts as
    silent, and its promised samples are unknown, so it adds nothing to ``samples_expected``);
    ``cells`` by (site, line) holds the cells started that day.
    """
    audit = DensityAudit()
    stations: dict[tuple[str, str, str], list[SensorRow]] = defaultdict(list)
    for s in sensors:
        stations[(s.site, s.line, s.station)].append(s)
    line_tallies: dict[tuple[str, str], _Tally] = defaultdict(_Tally)
    site_tallies: dict[str, _Tally] = defaultdict(_Tally)
    site_gaps: dict[str, list[SensorGap]] = defaultdict(list)
    for (site, line, station), members in sorted(stations.items()):
        first = members[0]
        kind = station_kind(station, line)
        prof = profile.for_station(first.stage, kind, {m.parameter for m in members})
        if prof is None:  # a stage the profile does not cover (utilities): counted, not judged
            tally, gaps = _Tally(stations=1, sensors=len(members), sensors_beyond_profile=len(members)), []
        else:
            tally, gaps = _station_gaps(members, prof)
        for m in members:
            d = delivery.get(m.sensor_id)
            tally.sensors_silent += int(d is None or d.observed == 0)
            if d is not None:
                tally.samples_observed += d.observed
                tally.samples_expected += d.expected
        station_cells = cells.get((site, line)) if line != SITE_LINE else \
            sum(n for (s, _), n in cells.items() if s == site)
        audit.rows.append(_row("station", site, line, station, first.stage, prof.kind if prof else None,
                               tally, station_cells))
        site_gaps[site] += gaps
        site_tallies[site].add(tally)
        if line != SITE_LINE:
            line_tallies[(site, line)].add(tally)
    for (site, line), tally in sorted(line_tallies.items()):
        audit.rows.append(_row("line", site, line, None, None, None, tally, cells.get((site, line))))
    for site, tally in sorted(site_tallies.items()):
        site_cells = [n for (s, _), n in cells.items() if s == site]
        audit.rows.append(_row("plant", site, None, None, None, None, tally, sum(site_cells) if site_cells else None))
    for _site, gaps in sorted(site_gaps.items()):
        audit.gaps += [SensorGap(**{**asdict(g), "rank": i}) for i, g in
                       enumerate(sorted(gaps, key=SensorGap.sort_key), start=1)]
    return audit


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _row(level: str, site: str, line: str | None, station: str | None, stage: str | None,
         profile_kind: str | None, t: _Tally, cells: int | None) -> dict:
    return {
        "level": level, "site": site, "line": line, "station": station, "stage": stage,
        "profile_kind": profile_kind, **asdict(t),
        "sensor_coverage": _ratio(t.sensors_matched, t.sensors_expected),
        "profile_rate_ratio": _ratio(t.rate_weighted, t.sensors_matched),
        "ctq_coverage": _ratio(t.ctq_parameters_covered, t.ctq_parameters_expected),
        "energy_coverage": _ratio(t.stations_metered, t.stations_meter_expected),
        "achieved_rate_ratio": _ratio(t.samples_observed, t.samples_expected),
        "sensors_per_station": _ratio(t.sensors, t.stations),
        "cells": cells,
        "sensors_per_million_cells": _ratio(t.sensors * 1e6, cells or 0),
    }


# --------------------------------------------------------------------------- warehouse I/O

SENSORS_SQL = """
SELECT sensor_id, site, line, station, stage, parameter, signal_class, nominal_rate_hz,
       coalesce(ctq, false), coalesce(is_energy_meter, false), protocol
FROM sensors ORDER BY sensor_id
"""
DELIVERY_SQL = "SELECT sensor_id, observed, expected FROM sensor_health_daily WHERE date = ?"
#: Cells started: finished cells lag by the weeks of formation and aging, started ones do not.
CELLS_SQL = """
SELECT site, line, count(DISTINCT unit_id) FROM production_events
WHERE date = ? AND unit_type = 'cell' AND kind = 'enter' GROUP BY site, line
"""


@dataclass(frozen=True)
class DensityInputs:
    """What the audit reads from the warehouse for one day."""

    sensors: list[SensorRow]
    delivery: dict[str, SensorDelivery]
    cells: dict[tuple[str, str], int]


def read_density_inputs(con: duckdb.DuckDBPyConnection, day: date) -> DensityInputs:
    """The asset model, the day's sensor delivery and cells started, from a warehouse connection."""
    sensors = [SensorRow(*r) for r in con.execute(SENSORS_SQL).fetchall()]
    delivery = {sid: SensorDelivery(int(obs or 0), float(exp or 0.0))
                for sid, obs, exp in con.execute(DELIVERY_SQL, [day]).fetchall()}
    cells = {(site, line): int(n) for site, line, n in con.execute(CELLS_SQL, [day]).fetchall()}
    return DensityInputs(sensors, delivery, cells)


def density_tables(audit: DensityAudit) -> tuple[pa.Table, pa.Table]:
    """The audit rows and the gaps as Arrow tables for :func:`transforms.batch.store.write_day`."""
    from schemas.batch import SENSOR_DENSITY_AUDIT, SENSOR_GAPS

    def table(spec, rows: list[dict]) -> pa.Table:
        names = [f.name for f in spec.file_schema]
        return pa.Table.from_pylist([{k: r.get(k) for k in names} for r in rows], schema=spec.file_schema)

    return table(SENSOR_DENSITY_AUDIT, audit.rows), table(SENSOR_GAPS, [asdict(g) for g in audit.gaps])
