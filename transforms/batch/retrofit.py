"""Retrofit plan: the missing sensors and meters by priority, priced, against the savings they may bring.

Items follow the gap ranking of :mod:`transforms.batch.density`: a missing sensor is bought at the price
of its signal class, a missing sub-meter at the meter price, each with its engineering hours; a station
whose sensors are not all on an open protocol gets one gateway, planned with that station's first item.
Slow sensors (a nominal rate below the profile's) get no hardware: on a Modbus station the rate is a
polling setting, which the station's gateway lifts.

Savings are the share ``gap_closed_share`` of the gap between the plant's measured scrap rate and
energy per cell and the benchmark plant's on the same day, on an annual output scaled from the day's
production rate to ``operating_hours_per_year``; the payback is CAPEX over the annual savings.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import date

import duckdb
import pyarrow as pa

from schemas.reference_data import RetrofitCosts
from transforms.batch.density import SensorGap, SensorRow
from transforms.settings import AuditSettings


@dataclass(frozen=True)
class PlanItem:
    """One row of the plan: what to buy for which gap, and what it costs."""

    site: str
    priority: int
    item: str  # sensor | energy_meter | gateway
    line: str
    station: str
    stage: str
    parameter: str | None
    category: str
    quantity: int
    hardware_eur: float
    engineering_hours: float
    engineering_eur: float
    cost_eur: float
    cumulative_eur: float
    gap_rank: int | None
    reason: str


def plan_items(site: str, gaps: list[SensorGap], sensors: list[SensorRow], costs: RetrofitCosts) -> list[PlanItem]:
    """The priced items of one site, in priority order (``gaps`` ranked as the audit ranks them)."""
    closed_stations = {s.station for s in sensors if s.site == site and s.protocol not in costs.open_protocols}
    raw: list[dict] = []
    gatewayed: set[str] = set()
    for g in sorted((g for g in gaps if g.site == site), key=lambda g: g.rank):
        if g.station in closed_stations and g.station not in gatewayed:
            gatewayed.add(g.station)
            raw.append(dict(item="gateway", g=g, parameter=None, category=g.category, quantity=1,
                            hw=costs.gateway_eur, hours=costs.engineering_hours_gateway,
                            reason=f"{g.station} speaks a protocol the platform cannot read directly: one gateway "
                                   "brings its sensors online and lifts their polling rates"))
        if g.gap != "missing":
            continue
        meter = g.category == "energy"
        unit = costs.energy_meter_eur if meter else costs.sensor_eur[g.signal_class]
        hours = costs.engineering_hours_meter if meter else costs.engineering_hours_sensor
        raw.append(dict(item="energy_meter" if meter else "sensor", g=g, parameter=g.parameter,
                        category=g.category, quantity=g.sensors_missing, hw=unit * g.sensors_missing,
                        hours=hours * g.sensors_missing, reason=g.reason))
    items, total = [], 0.0
    for i, r in enumerate(raw, start=1):
        g: SensorGap = r["g"]
        eng = r["hours"] * costs.engineering_rate_eur_h
        total += r["hw"] + eng
        items.append(PlanItem(site=site, priority=i, item=r["item"], line=g.line, station=g.station, stage=g.stage,
                              parameter=r["parameter"], category=r["category"], quantity=r["quantity"],
                              hardware_eur=r["hw"], engineering_hours=r["hours"], engineering_eur=eng,
                              cost_eur=r["hw"] + eng, cumulative_eur=total, gap_rank=g.rank, reason=r["reason"]))
    return items


@dataclass(frozen=True)
class PlantOutput:
    """What a site produced and spent on the day: the basis of the savings."""

    cells: int  # cells started
    scrapped: int  # cells scrapped
    hours: float  # span of the day's production events, h
    kwh: float  # energy of the site's meters that day

    @property
    def scrap_rate(self) -> float | None:
        return self.scrapped / self.cells if self.cells else None

    @property
    def kwh_per_cell(self) -> float | None:
        return self.kwh / self.cells if self.cells else None

    def annual_cells(self, hours_per_year: float) -> float | None:
        return self.cells / self.hours * hours_per_year if self.cells and self.hours > 0 else None


@dataclass(frozen=True)
class Payback:
    """CAPEX, expected annual savings and payback of one site, with the figures they come from."""

    site: str
    items: int
    capex_eur: float
    cells: int
    production_hours: float
    annual_cells: float | None
    scrap_rate: float | None
    reference_scrap_rate: float | None
    kwh_per_cell: float | None
    reference_kwh_per_cell: float | None
    energy_coverage: float | None
    annual_scrap_savings_eur: float | None
    annual_energy_savings_eur: float | None
    annual_savings_eur: float | None
    payback_years: float | None
    assumptions: str


def payback(site: str, items: list[PlanItem], out: PlantOutput, ref: PlantOutput | None,
            energy_coverage: float | None, s: AuditSettings) -> Payback:
    """CAPEX, annual savings and payback of one site against the benchmark's output ``ref``.

    A gap in the plant's favour saves nothing (never negative); savings are None when either side
    lacks the figure (no benchmark site that day, no cells), and the payback is None without savings.
    """
    capex = sum(i.cost_eur for i in items)
    annual = out.annual_cells(s.operating_hours_per_year)

    def saving(mine: float | None, theirs: float | None, eur: float) -> float | None:
        if mine is None or theirs is None or annual is None:
            return None
        return max(mine - theirs, 0.0) * s.gap_closed_share * annual * eur

    scrap = saving(out.scrap_rate, ref.scrap_rate if ref else None, s.scrap_eur_per_cell)
    energy = saving(out.kwh_per_cell, ref.kwh_per_cell if ref else None, s.electricity_eur_kwh)
    total = None if scrap is None and energy is None else (scrap or 0.0) + (energy or 0.0)
    return Payback(
        site=site, items=len(items), capex_eur=capex, cells=out.cells, production_hours=out.hours,
        annual_cells=annual, scrap_rate=out.scrap_rate, reference_scrap_rate=ref.scrap_rate if ref else None,
        kwh_per_cell=out.kwh_per_cell, reference_kwh_per_cell=ref.kwh_per_cell if ref else None,
        energy_coverage=energy_coverage, annual_scrap_savings_eur=scrap, annual_energy_savings_eur=energy,
        annual_savings_eur=total, payback_years=capex / total if total else None,
        assumptions=(f"{s.gap_closed_share:.0%} of the gap to the benchmark plant closed; output scaled from "
                     f"{out.cells} cells in {out.hours:.2f} h to {s.operating_hours_per_year:g} h a year; "
                     f"scrapped cell {s.scrap_eur_per_cell:g} EUR; electricity {s.electricity_eur_kwh:g} EUR/kWh; "
                     "energy per cell counts the site's meters only (see energy_coverage)"))


# --------------------------------------------------------------------------- warehouse I/O

#: Cells started and scrapped, and the span of the site's production events, per site that day.
OUTPUT_SQL = """
SELECT site,
       count(DISTINCT unit_id) FILTER (WHERE unit_type = 'cell' AND kind = 'enter'),
       count(DISTINCT unit_id) FILTER (WHERE unit_type = 'cell' AND kind = 'scrap'),
       epoch(max(ts) - min(ts)) / 3600.0
FROM production_events WHERE date = ? GROUP BY site
"""
ENERGY_SQL = "SELECT site, sum(kwh) FROM energy_daily WHERE date = ? GROUP BY site"


def read_outputs(con: duckdb.DuckDBPyConnection, day: date) -> dict[str, PlantOutput]:
    """Cells started and scrapped, production span and metered energy of every site on ``day``."""
    kwh = dict(con.execute(ENERGY_SQL, [day]).fetchall())
    return {site: PlantOutput(int(cells), int(scrapped), float(hours or 0.0), float(kwh.get(site) or 0.0))
            for site, cells, scrapped, hours in con.execute(OUTPUT_SQL, [day]).fetchall()}


def retrofit(gaps: list[SensorGap], sensors: list[SensorRow], outputs: dict[str, PlantOutput],
             energy_coverage: dict[str, float | None], benchmark_site: str, costs: RetrofitCosts,
             settings: AuditSettings) -> tuple[list[PlanItem], list[Payback]]:
    """Plan items and payback of every site that has sensors."""
    sites = sorted({s.site for s in sensors})
    by_site: dict[str, list[PlanItem]] = defaultdict(list)
    for site in sites:
        by_site[site] = plan_items(site, gaps, sensors, costs)
    ref = outputs.get(benchmark_site)
    paybacks = [payback(site, by_site[site], outputs.get(site, PlantOutput(0, 0, 0.0, 0.0)), ref,
                        energy_coverage.get(site), settings) for site in sites]
    return [i for site in sites for i in by_site[site]], paybacks


def retrofit_tables(items: list[PlanItem], paybacks: list[Payback]) -> tuple[pa.Table, pa.Table]:
    """The plan and the paybacks as Arrow tables for :func:`transforms.batch.store.write_day`."""
    from schemas.batch import RETROFIT_PAYBACK, RETROFIT_PLAN

    def table(spec, rows: list[dict]) -> pa.Table:
        names = [f.name for f in spec.file_schema]
        return pa.Table.from_pylist([{k: r.get(k) for k in names} for r in rows], schema=spec.file_schema)

    return table(RETROFIT_PLAN, [asdict(i) for i in items]), table(RETROFIT_PAYBACK, [asdict(p) for p in paybacks])
