"""Plant KPIs per line and day, from the rollups that already hold the counts.

Output, yield, first-pass yield and scrap come from ``quality_daily`` (one row per stage); energy
from ``energy_daily``; samples received from ``sensor_health_daily``; which stations carry an energy
meter from the ``sensors`` table; the ideal rate and the cell's energy from the plant file. Nothing
here recounts events, except the line's first and last event time (planned time for OEE), which no
rollup keeps.

Every kWh figure travels with the metered share of stations beside it: a plant with one meter per
line divides a fraction of its energy by all of its cells, and a low kWh per cell from it is
missing meters, not efficiency. :func:`compute_plant_kpis` is pure (small Arrow tables in, rows
out); :func:`read_kpi_inputs` is the queries; :func:`summarize` is the short per-plant view the demo
prints.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from math import prod
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.batch import MATERIAL_LOSS, PLANT_KPIS
from schemas.materials import SiteProduct
from transforms.batch.store import day_path

#: Stages a cell passes; the rest of the chain (mixing to vacuum drying) handles batches and rolls.
CELL_STAGES = ("stacking", "filling", "formation", "aging_eol")
ELECTRODE_STAGES = ("mixing", "coating", "calendering", "slitting", "vacuum_drying")
END_OF_LINE = "aging_eol"
#: Line of the stations that serve the whole plant (dry room), as the asset model names it.
SITE_LINE = "site"
OEE_NOTE = ("quality computed (yield); availability and performance not separable: the events carry no machine "
            "states or downtime, so only their product is computed, over planned_hours = span of the line's events")


@dataclass(frozen=True)
class KpiInputs:
    """The day's rollup rows the KPIs are computed from (each a small Arrow table)."""

    quality: pa.Table   # site, line, stage, good, scrapped, first_pass_yield, scrap_by_reason
    energy: pa.Table    # site, line, station, kwh
    stations: pa.Table  # site, line, stations, metered_stations
    readings: pa.Table  # site, line, observed
    spans: pa.Table     # site, line, first_ts, last_ts


def read_kpi_inputs(con: duckdb.DuckDBPyConnection, day: date) -> KpiInputs:
    """The rollups of ``day`` and the asset model, from the warehouse behind ``con``."""
    def q(sql: str, params: list) -> pa.Table:
        return con.sql(sql, params=params).to_arrow_table()

    return KpiInputs(
        quality=q("SELECT site, line, stage, good, scrapped, first_pass_yield, scrap_by_reason "
                  "FROM quality_daily WHERE date = ? ORDER BY site, line, stage", [day]),
        energy=q("SELECT site, line, station, kwh FROM energy_daily WHERE date = ? "
                 "ORDER BY site, line, station", [day]),
        stations=q("SELECT site, line, count(DISTINCT station) AS stations, "
                   "count(DISTINCT station) FILTER (WHERE is_energy_meter) AS metered_stations "
                   "FROM sensors GROUP BY site, line ORDER BY site, line", []),
        readings=q("SELECT site, line, sum(observed)::BIGINT AS observed FROM sensor_health_daily "
                   "WHERE date = ? GROUP BY site, line ORDER BY site, line", [day]),
        spans=q("SELECT site, line, min(ts) AS first_ts, max(ts) AS last_ts FROM production_events "
                "WHERE date = ? GROUP BY site, line ORDER BY site, line", [day]),
    )


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def _by_key(table: pa.Table) -> dict[tuple[str, str], dict]:
    return {(r["site"], r["line"]): r for r in table.to_pylist()}


def compute_plant_kpis(inputs: KpiInputs, products: dict[str, SiteProduct]) -> pa.Table:
    """One row per site and line that had production events or metered energy that day (see PLANT_KPIS)."""
    quality: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in inputs.quality.to_pylist():
        quality[(r["site"], r["line"])].append(r)
    kwh: dict[tuple[str, str], float] = defaultdict(float)
    for r in inputs.energy.to_pylist():  # sorted by station: the same sum on every run
        if r["kwh"] is not None:
            kwh[(r["site"], r["line"])] += r["kwh"]
    stations, readings, spans = _by_key(inputs.stations), _by_key(inputs.readings), _by_key(inputs.spans)
    keys = sorted({k for k in (*quality, *kwh) if k[1] != SITE_LINE})

    per_line = {k: _line_counts(quality.get(k, [])) for k in keys}
    site_output: dict[str, int] = defaultdict(int)
    plant_st: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (site, _), c in per_line.items():
        site_output[site] += c["output_cells"]
    for (site, _line), r in stations.items():
        plant_st[site][0] += r["stations"]
        plant_st[site][1] += r["metered_stations"]

    rows = []
    for site, line in keys:
        c = per_line[(site, line)]
        product = products.get(site)
        share = _ratio(c["output_cells"], site_output[site])  # of the plant-wide meters and sensors
        site_kwh = kwh.get((site, SITE_LINE))
        line_kwh = kwh.get((site, line))
        allocated = site_kwh * share if site_kwh is not None and share is not None else None
        total_kwh = None if line_kwh is None and allocated is None else (line_kwh or 0.0) + (allocated or 0.0)
        own, shared = stations.get((site, line), {}), stations.get((site, SITE_LINE), {})
        n_st = own.get("stations", 0) + shared.get("stations", 0)
        n_met = own.get("metered_stations", 0) + shared.get("metered_stations", 0)
        observed = (readings.get((site, line)) or {}).get("observed") or 0
        site_observed = (readings.get((site, SITE_LINE)) or {}).get("observed") or 0
        n_readings = observed + (round(site_observed * share) if share is not None else 0)
        cell_kwh = product.cell_kwh if product else None
        output_kwh = c["output_cells"] * cell_kwh if cell_kwh is not None else None
        finished = c["output_cells"] + c["cells_scrapped"]
        span = spans.get((site, line))
        hours = (span["last_ts"] - span["first_ts"]).total_seconds() / 3600 if span else None
        rate = product.cells_per_hour_per_line if product else None
        a_x_p = _ratio(finished, rate * hours if rate and hours else None)
        q_rate = _ratio(c["output_cells"], finished)
        rows.append({
            "site": site, "line": line, "plant": product.plant if product else None,
            "chemistry": product.chemistry if product else None, "cell_kwh": cell_kwh,
            **c, "output_kwh": output_kwh,
            "yield": q_rate, "scrap_rate": _ratio(c["cells_scrapped"], finished),
            "cell_scrap_rate_by_reason": [(k, n / finished) for k, n in c["cell_scrap_by_reason"]] if finished else [],
            "planned_hours": hours or None, "nominal_cells_per_hour": rate,
            "oee_availability": None, "oee_performance": None, "oee_availability_x_performance": a_x_p,
            "oee_quality": q_rate, "oee": a_x_p * q_rate if a_x_p is not None and q_rate is not None else None,
            "oee_note": OEE_NOTE,
            "kwh_line": line_kwh, "kwh_site_allocated": allocated, "kwh": total_kwh,
            "kwh_per_good_cell": _ratio(total_kwh, c["output_cells"]),
            "kwh_per_kwh_cell": _ratio(total_kwh, output_kwh),
            "stations": n_st, "metered_stations": n_met, "metered_share": _ratio(n_met, n_st),
            "plant_stations": plant_st[site][0], "plant_metered_stations": plant_st[site][1],
            "plant_metered_share": _ratio(plant_st[site][1], plant_st[site][0]),
            "readings": n_readings, "readings_per_kwh_cell": _ratio(n_readings, output_kwh),
        })
    schema = pa.schema([f for f in PLANT_KPIS.file_schema])
    return pa.Table.from_pylist(rows, schema=schema)


def _line_counts(stage_rows: list[dict]) -> dict:
    """Output, scrap and first-pass yield of one line from its quality_daily rows (one per stage)."""
    by_stage = {r["stage"]: r for r in stage_rows}
    cell_reasons: dict[str, int] = defaultdict(int)
    electrode_reasons: dict[str, int] = defaultdict(int)
    for r in stage_rows:
        target = cell_reasons if r["stage"] in CELL_STAGES else electrode_reasons
        for reason, n in r["scrap_by_reason"] or []:
            target[reason] += n
    cell_rows = [by_stage[s] for s in CELL_STAGES if s in by_stage]
    fpys = [r["first_pass_yield"] for r in cell_rows]
    return {
        "output_cells": (by_stage.get(END_OF_LINE) or {}).get("good") or 0,
        "cells_scrapped": sum(r["scrapped"] or 0 for r in cell_rows),
        "electrode_units_scrapped": sum(r["scrapped"] or 0 for r in stage_rows if r["stage"] in ELECTRODE_STAGES),
        "first_pass_yield": prod(fpys) if fpys and None not in fpys else None,
        "cell_scrap_by_reason": sorted(cell_reasons.items()),
        "electrode_scrap_by_reason": sorted(electrode_reasons.items()),
    }


def plant_kpis_day(con: duckdb.DuckDBPyConnection, day: date, products: dict[str, SiteProduct]) -> pa.Table:
    """The KPI rows of one UTC day, read from the warehouse behind ``con``."""
    return compute_plant_kpis(read_kpi_inputs(con, day), products)


# --------------------------------------------------------------------------- the demo's summary


@dataclass(frozen=True)
class PlantSummary:
    """One plant's day in a line: yield, energy per good cell with the metered share, material lost."""

    site: str
    plant: str | None
    output_cells: int
    yield_: float | None
    kwh_per_good_cell: float | None
    metered_share: float | None
    material_loss_value: float
    currency: str | None

    def text(self) -> str:
        def fmt(v: float | None, spec: str) -> str:
            return "n/a" if v is None else format(v, spec)

        return (f"{self.plant or self.site} ({self.site}): {self.output_cells} good cells, yield "
                f"{fmt(self.yield_, '.1%')}, {fmt(self.kwh_per_good_cell, '.2f')} kWh per good cell with "
                f"{fmt(self.metered_share, '.0%')} of stations metered, material lost to scrap "
                f"{self.material_loss_value:,.2f} {self.currency or ''}".rstrip())


def summarize(kpis: pa.Table, loss: pa.Table) -> list[PlantSummary]:
    """Per site: the lines' KPIs added up (ratios from the summed counts) and the ledger's total value."""
    value: dict[str, float] = defaultdict(float)
    currency: dict[str, str] = {}
    for r in loss.to_pylist():
        value[r["site"]] += r["value"] or 0.0
        currency[r["site"]] = r["currency"]
    by_site: dict[str, list[dict]] = defaultdict(list)
    for r in kpis.to_pylist():
        by_site[r["site"]].append(r)
    out = []
    for site in sorted(set(by_site) | set(value)):
        rows = by_site.get(site, [])
        good = sum(r["output_cells"] for r in rows)
        scrapped = sum(r["cells_scrapped"] for r in rows)
        metered = [r["kwh"] for r in rows if r["kwh"] is not None]
        out.append(PlantSummary(
            site=site, plant=rows[0]["plant"] if rows else None, output_cells=good,
            yield_=_ratio(good, good + scrapped), kwh_per_good_cell=_ratio(sum(metered), good) if metered else None,
            metered_share=rows[0]["plant_metered_share"] if rows else None,
            material_loss_value=value.get(site, 0.0), currency=currency.get(site)))
    return out


def plant_summaries(lake_root: Path, day: date) -> list[PlantSummary]:
    """The summary of ``day`` from the landed plant_kpis and material_loss files (empty if not built)."""
    def read(spec) -> pa.Table:
        path = day_path(lake_root, spec, day)
        return pq.read_table(path) if path.exists() else spec.file_schema.empty_table()

    return summarize(read(PLANT_KPIS), read(MATERIAL_LOSS))
