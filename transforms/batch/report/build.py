"""What the report shows, read from the warehouse: one function per section, one HTML file per plant.

Every section reads documented warehouse tables with plain SQL (bound parameters), so an analyst can
rerun what a figure shows. A section whose table holds no rows yet says which job fills it instead of
drawing an empty chart. Plants are the ``site`` values of the asset model (``sensors``); the figures
that compare plants (readiness, energy) draw every plant in each plant's report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from transforms.batch.report import figures as F
from transforms.batch.report.html import Figure, Section, render
from transforms.lake import write_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportContext:
    """What every section reads: a read-only warehouse connection, the plant, every plant, and the lake."""

    con: duckdb.DuckDBPyConnection
    site: str
    sites: tuple[str, ...]
    #: The lake, for what lives beside the warehouse (the gate models' registry); None: sections that need
    #: it say so.
    lake_root: Path | None = None

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        return self.con.execute(sql, list(params)).fetchall()

    def has_rows(self, table: str) -> bool:
        exists = self.rows("SELECT count(*) FROM duckdb_views() WHERE view_name = ?", [table])[0][0]
        if not exists:
            return False
        return bool(self.rows(f'SELECT count(*) > 0 FROM (SELECT 1 FROM "{table}" LIMIT 1)')[0][0])


def missing(title: str, table: str, how: str) -> Section:
    """A section for a table with no rows yet: what fills it."""
    return Section(title, text=f"No rows in `{table}` yet. {how}", source=table)


# --------------------------------------------------------------------------- sections

def scrap_pareto(ctx: ReportContext) -> Section:
    """Scrapped units by stage and reason over every day the warehouse holds, largest first."""
    title = "Scrap by reason and stage"
    if not ctx.has_rows("quality_daily"):
        return missing(title, "quality_daily", "Run `gigapulse lake rollup` (or the lake_compaction_job).")
    rows = ctx.rows(
        "SELECT stage, e.key AS reason, sum(e.value) AS units, min(date), max(date) "
        "FROM quality_daily, unnest(map_entries(scrap_by_reason)) AS u(e) "
        "WHERE site = ? GROUP BY ALL ORDER BY units DESC, stage, reason", [ctx.site])
    total = sum(r[2] for r in rows)
    labels = [f"{stage}: {reason}" for stage, reason, *_ in rows]
    png = F.pareto(labels, [r[2] for r in rows], f"{ctx.site}: scrapped units by stage and reason", "units")
    first = min((r[3] for r in rows), default=None)
    last = max((r[4] for r in rows), default=None)
    text = (f"{total:,} units scrapped from {first} to {last}. The bars are sorted from the largest cause; "
            "the line is their cumulative share, so the causes left of the 80% mark are where scrap "
            "is won back.") if rows else "No unit was scrapped on the days the warehouse holds."
    return Section(title, text, [Figure(f"{ctx.site}-scrap-pareto.png", png, "scrap Pareto")],
                   ("stage", "reason", "units", "share"),
                   [(s, r, n, n / total) for s, r, n, *_ in rows[:15]], source="quality_daily.scrap_by_reason")


def _latest(ctx: ReportContext, table: str) -> object:
    return ctx.rows(f'SELECT max(date) FROM "{table}"')[0][0]


def readiness(ctx: ReportContext) -> Section:
    """Every plant's bands on one radar; this plant's bands with the evidence each one rests on."""
    title = "Readiness"
    if not ctx.has_rows("readiness_scores"):
        return missing(title, "readiness_scores", "Run `gigapulse jobs run readiness_job --partition DAY`.")
    day = _latest(ctx, "readiness_scores")
    rows = ctx.rows("SELECT site, dimension, band, score, figure, evidence, thresholds, stage_label "
                    "FROM readiness_scores WHERE date = ? AND level = 'plant' ORDER BY site, dimension", [day])
    scores: dict[str, dict[str, float | None]] = {}
    for site, dim, band, *_ in rows:
        if dim != "overall":
            scores.setdefault(site, {})[dim] = band
    ordered = {ctx.site: scores.get(ctx.site, {}), **{k: v for k, v in scores.items() if k != ctx.site}}
    png = F.radar(ordered, f"Readiness bands (0-5) on {day}")
    overall = {r[0]: r for r in rows if r[1] == "overall"}
    mine = overall.get(ctx.site)
    text = (f"{ctx.site} scores {mine[3]:.2f} of 5 overall, acatech stage '{mine[7]}'. " if mine and mine[3] is not None
            else f"{ctx.site} has no overall score on {day}. ")
    text += ("Each band comes from one measured figure against fixed thresholds; the table gives the figure "
             "and what it counts, and readiness_scores keeps the query that measured it.")
    table = [(dim, band, figure, evidence, ", ".join(f"{t:g}" for t in (thresholds or [])))
             for site, dim, band, _, figure, evidence, thresholds, _ in rows if site == ctx.site and dim != "overall"]
    return Section(title, text, [Figure(f"{ctx.site}-readiness-radar.png", png, "readiness radar")],
                   ("dimension", "band", "figure", "evidence", "thresholds for bands 1-5"), table,
                   source=f"readiness_scores, {day}")


def sensor_density(ctx: ReportContext) -> Section:
    """Coverage of the reference profile per line and stage, and the largest gaps with their reasons."""
    from schemas.contracts import Stage

    title = "Sensor density"
    if not ctx.has_rows("sensor_density_audit"):
        return missing(title, "sensor_density_audit", "Run `gigapulse jobs run audits_job --partition DAY`.")
    day = _latest(ctx, "sensor_density_audit")
    cells = ctx.rows("SELECT line, stage, sum(sensors_matched), sum(sensors_expected) FROM sensor_density_audit "
                     "WHERE date = ? AND site = ? AND level = 'station' AND sensors_expected > 0 GROUP BY ALL",
                     [day, ctx.site])
    order = {s.value: i for i, s in enumerate(Stage)}
    lines = sorted({c[0] for c in cells})
    stages = sorted({c[1] for c in cells}, key=lambda s: order.get(s, len(order)))
    grid = {(c[0], c[1]): c[2] / c[3] for c in cells}
    png = F.heatmap(lines, stages, [[grid.get((ln, st)) for st in stages] for ln in lines],
                    f"{ctx.site}: sensors present / reference profile, {day}", "coverage of the profile")
    totals = ctx.rows("SELECT sensors, sensor_coverage, ctq_coverage, energy_coverage, sensors_per_million_cells "
                      "FROM sensor_density_audit WHERE date = ? AND site = ? AND level = 'plant'", [day, ctx.site])
    gaps = ctx.rows("SELECT rank, station, parameter, category, gap, reason FROM sensor_gaps "
                    "WHERE date = ? AND site = ? ORDER BY rank LIMIT 10", [day, ctx.site])
    text = ""
    if totals and totals[0][1] is not None:
        n, cov, ctq, energy, per_m = totals[0]
        text = (f"{n:,} sensors cover {cov:.0%} of what the reference profile lists for these stations; "
                f"critical-to-quality parameters {ctq or 0:.0%}, energy sub-metering {energy or 0:.0%}. ")
    text += "The largest gaps, ranked critical-to-quality first, then energy, then the rest:" if gaps else \
        "No gap against the reference profile."
    return Section(title, text, [Figure(f"{ctx.site}-sensor-density.png", png, "sensor density heatmap")],
                   ("rank", "station", "parameter", "category", "gap", "reason"), gaps,
                   source=f"sensor_density_audit and sensor_gaps, {day}")


def retrofit(ctx: ReportContext) -> Section:
    """What closing the gaps costs and what it would save, with the assumptions in words."""
    title = "Retrofit plan"
    if not ctx.has_rows("retrofit_payback"):
        return missing(title, "retrofit_payback", "Run `gigapulse jobs run readiness_job --partition DAY`.")
    day = _latest(ctx, "retrofit_payback")
    rows = ctx.rows("SELECT items, capex_eur, annual_scrap_savings_eur, annual_energy_savings_eur, payback_years, "
                    "assumptions FROM retrofit_payback WHERE date = ? AND site = ?", [day, ctx.site])
    items = ctx.rows("SELECT priority, item, station, parameter, quantity, cost_eur FROM retrofit_plan "
                     "WHERE date = ? AND site = ? ORDER BY priority LIMIT 12", [day, ctx.site])
    if not rows or not rows[0][0]:
        return Section(title, f"Nothing to retrofit at {ctx.site} against the reference profile ({day}).",
                       source="retrofit_payback")
    n, capex, scrap, energy, payback, assumptions = rows[0]
    pay = f"pays back in {payback:.1f} years" if payback is not None else "has no savings to pay it back"
    text = (f"{n} items for {capex:,.0f} EUR; expected savings {scrap or 0:,.0f} EUR a year from scrap and "
            f"{energy or 0:,.0f} EUR from energy, so the plan {pay}.\n\nAssumptions: {assumptions}")
    return Section(title, text, [], ("priority", "item", "station", "parameter", "quantity", "cost EUR"), items,
                   source=f"retrofit_plan and retrofit_payback, {day}")


def material_loss(ctx: ReportContext) -> Section:
    """Critical raw material in scrapped units, by element, every plant side by side."""
    title = "Material lost to scrap"
    if not ctx.has_rows("material_loss"):
        return missing(title, "material_loss", "Run `gigapulse jobs run material_loss_job --partition DAY`.")
    rows = ctx.rows("SELECT site, element, sum(kg), sum(value), any_value(currency), min(date), max(date) "
                    "FROM material_loss GROUP BY site, element ORDER BY element, site")
    elements = sorted({r[1] for r in rows})
    sites = [ctx.site, *[s for s in ctx.sites if s != ctx.site]]
    kg = {(r[0], r[1]): r[2] for r in rows}
    png = F.grouped_bars(elements, {s: [kg.get((s, e), 0.0) for e in elements] for s in sites},
                         "Material in scrapped units by element, kg", "kg")
    mine = [(e, kg_, value, cur) for s, e, kg_, value, cur, *_ in rows if s == ctx.site]
    total = sum(v for *_, v, _ in mine)
    cur = mine[0][3] if mine else ""
    first, last = min(r[5] for r in rows), max(r[6] for r in rows)
    text = (f"{ctx.site} lost material worth {total:,.2f} {cur} to scrap from {first} to {last}, booked from the bill "
            "of materials of its chemistry by the stage a unit was scrapped at.")
    return Section(title, text, [Figure(f"{ctx.site}-material-loss.png", png, "material loss by element")],
                   ("element", "kg", "value", "currency"), mine, source="material_loss")


def energy(ctx: ReportContext) -> Section:
    """kWh per good cell per day with the metered share of each plant beside it."""
    title = "Energy per good cell"
    if not ctx.has_rows("plant_kpis"):
        return missing(title, "plant_kpis", "Run `gigapulse jobs run plant_kpis_job --partition DAY`.")
    rows = ctx.rows("SELECT site, date, sum(kwh) / nullif(sum(output_cells), 0), any_value(plant_metered_share), "
                    "sum(output_cells) FROM plant_kpis GROUP BY site, date ORDER BY date, site")
    days = sorted({r[1] for r in rows})
    per = {(r[0], r[1]): r for r in rows}
    sites = [ctx.site, *[s for s in ctx.sites if s != ctx.site]]
    png = F.series_with_share(days, {s: [(per.get((s, d)) or (None,) * 5)[2] for d in days] for s in sites},
                              {s: [(per.get((s, d)) or (None,) * 5)[3] for d in days] for s in sites},
                              "kWh per good cell, with the metered share of each plant", "kWh per good cell",
                              "metered share")
    mine = [(d, per[(ctx.site, d)][4], per[(ctx.site, d)][2], per[(ctx.site, d)][3]) for d in days
            if (ctx.site, d) in per]
    text = ("Energy per good cell is what the meters saw divided by the cells that left end of line good. A plant "
            "with few meters reads low because most of its energy is not measured, not because it is efficient: "
            "read each line with its metered share (dashed).")
    return Section(title, text, [Figure(f"{ctx.site}-energy-per-cell.png", png, "energy per good cell")],
                   ("day", "good cells", "kWh per good cell", "metered share of the plant"), mine,
                   source="plant_kpis")


def data_quality(ctx: ReportContext) -> Section:
    """The lake's data-quality checks (lake-wide: the tables are shared by every plant)."""
    title = "Data quality"
    if not ctx.has_rows("dq_results"):
        return missing(title, "dq_results", "Run `gigapulse jobs run lake_quality_job --partition DAY`.")
    rows = ctx.rows("SELECT table_name, count(DISTINCT date), count(*), count(*) FILTER (WHERE NOT success), "
                    "count(*) FILTER (WHERE NOT success AND blocking), max(checked_at) "
                    "FROM dq_results GROUP BY table_name ORDER BY table_name")
    failures = ctx.rows("SELECT date, message FROM dq_results WHERE NOT success ORDER BY date DESC, check_name "
                        "LIMIT 10")
    labels = [r[0] for r in rows]
    png = F.grouped_bars(labels, {"passed": [r[2] - r[3] for r in rows], "failed": [r[3] for r in rows]},
                         "Checks passed and failed per lake table", "checks")
    failed = sum(r[3] for r in rows)
    text = (f"{sum(r[2] for r in rows):,} check results over {max((r[1] for r in rows), default=0)} day(s); "
            f"{failed} failed. The lake tables are shared by every plant, so this section is the same in each "
            "report.")
    if failures:
        text += "\n\nNewest failures: " + " | ".join(f"{d}: {m}" for d, m in failures)
    return Section(title, text, [Figure(f"{ctx.site}-data-quality.png", png, "data quality checks")],
                   ("table", "days", "checks", "failed", "failed, blocking", "last run"),
                   [(*r[:5], str(r[5])) for r in rows], source="dq_results")


def predictive_quality(ctx: ReportContext) -> Section:
    """The champion gate model on its own test cells (ROC, reliability, top drivers), from its training record,
    and what its gate was worth per day on this plant's lines (``quality_gate_value``)."""
    from transforms.predictive import registry as R

    title = "Predictive quality at the gate"
    source = "<lake>/models (the champion's training record) and quality_gate_value"
    if ctx.lake_root is None:
        return Section(title, "The report was built without the lake, where the gate models live.", source=source)
    version = R.champion(ctx.lake_root)
    if version is None:
        return Section(title, "No champion gate model yet. Run `gigapulse jobs run gate_model_job --partition DAY`: it "
                       "trains one on the week of cell_features ending that day and promotes the first.", source=source)
    try:
        record = R.load_record(ctx.lake_root, version)
    except R.RegistryError as exc:
        return Section(title, f"The champion cannot be read: {exc}", source=source)
    curves = record.get("test_curves") or {}
    roc, rel = curves.get("roc") or {}, record.get("reliability") or []
    drivers = [d for d in record.get("drivers") or [] if d["importance"] > 0][:10]
    auc = record.get("roc_auc")
    figures = [
        Figure(f"{ctx.site}-gate-roc.png", F.roc(roc.get("fpr", []), roc.get("tpr", []), auc,
                                                 f"{version}: ROC on its {curves.get('cells', '?')} test cells"),
               "ROC curve of the champion"),
        Figure(f"{ctx.site}-gate-reliability.png", F.reliability(
            [b["mean_score"] for b in rel], [b["observed"] for b in rel], [b["cells"] for b in rel],
            f"{version}: reliability by score decile"), "reliability curve of the champion"),
        Figure(f"{ctx.site}-gate-drivers.png", F.ranked_bars(
            [d["feature"] for d in drivers], [d["importance"] for d in drivers], [d.get("std", 0.0) for d in drivers],
            f"{version}: top drivers", "ROC AUC lost when the feature is shuffled (test cells)"), "top drivers"),
    ]
    text = (f"The champion {version} scores each cell as it leaves filling, before formation. On its "
            f"{record.get('test_cells', '?')} test cells ({record.get('test_bad', '?')} bad) its ROC AUC is "
            + (f"{auc:.3f}" if auc is not None else "unknown")
            + ". The reliability curve says whether a score of 0.1 means one bad cell in ten (points on the "
            "diagonal); the drivers are what the AUC loses when one feature is shuffled.")
    if not curves:
        text += " Its training record predates the curves: retrain it (gate_model_job) to draw them."
    if not ctx.has_rows("quality_gate_value"):
        text += ("\n\nNo rows in `quality_gate_value` yet. Run `gigapulse jobs run quality_gate_value_job "
                 "--partition DAY`.")
        return Section(title, text, figures, source=source)
    rows = ctx.rows("SELECT date, line, cells_gated, cells_flagged, true_pulls, false_pulls, bad_caught_share, "
                    "kwh_saved, false_pull_kwh, kg_false_pulls, threshold_rule FROM quality_gate_value "
                    "WHERE site = ? ORDER BY date, line", [ctx.site])
    days = sorted({r[0] for r in rows})
    per = {(r[0], r[1]): r for r in rows}
    lines = sorted({r[1] for r in rows})
    figures.append(Figure(f"{ctx.site}-gate-value.png", F.series_with_share(
        days, {ln: [(per.get((d, ln)) or (None,) * 11)[7] for d in days] for ln in lines},
        {ln: [(per.get((d, ln)) or (None,) * 11)[6] for d in days] for ln in lines},
        f"{ctx.site}: formation and aging kWh the gate saves per day", "kWh saved",
        "share of later scrap caught"), "daily value of the gate"))
    if rows:
        pulled, true, false = (sum(r[k] for r in rows) for k in (3, 4, 5))
        kwh = sum(r[7] or 0.0 for r in rows)
        text += (f"\n\nFrom {days[0]} to {days[-1]} the gate would have pulled {pulled:,} cells at {ctx.site}: "
                 f"{true:,} later bad (formation and aging energy saved: {kwh:,.1f} kWh) and {false:,} good ones, "
                 "whose loss is reported apart, never netted against the saving. A bad cell's material is lost "
                 f"either way, so the gate saves energy and formation capacity, not material. Threshold: "
                 f"{rows[-1][10]}.")
    else:
        text += f"\n\nNo line of {ctx.site} in `quality_gate_value` yet."
    table = [(str(r[0]), *r[1:10]) for r in rows[-30:]]
    return Section(title, text, figures, ("day", "line", "cells gated", "pulled", "true pulls", "false pulls",
                                          "scrap caught share", "kWh saved", "false-pull kWh", "false-pull kg"),
                   table, source=source)


#: The sections of a report, in order. Each takes the context and returns one section.
SECTIONS: list[Callable[[ReportContext], Section]] = [readiness, sensor_density, retrofit, scrap_pareto,
                                                       material_loss, energy, predictive_quality, data_quality]


# --------------------------------------------------------------------------- the files

def plant_sites(con: duckdb.DuckDBPyConnection) -> tuple[str, ...]:
    """Every site of the asset model, in name order."""
    return tuple(r[0] for r in con.execute("SELECT DISTINCT site FROM sensors ORDER BY site").fetchall())


def build_report(con: duckdb.DuckDBPyConnection, out_dir: Path, sites: Sequence[str] | None = None,
                 progress: Callable[[str], None] | None = None, lake_root: Path | None = None) -> list[Path]:
    """Write ``<out_dir>/<site>.html`` (figures embedded) and its PNGs per plant; returns the HTML paths.

    ``sites`` defaults to every plant of the asset model; an unknown one is refused. ``lake_root`` is
    where the gate models live (the predictive-quality section says so when it is not given).
    """
    every = plant_sites(con)
    chosen = tuple(sites) if sites else every
    unknown = sorted(set(chosen) - set(every))
    if unknown:
        raise ValueError(f"no plant {', '.join(unknown)} in the warehouse (plants: {', '.join(every) or 'none'})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    made = []
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    for site in chosen:
        ctx = ReportContext(con, site, every, lake_root)
        sections = []
        for section in SECTIONS:
            if progress:
                progress(f"{site}: {section.__name__.replace('_', ' ')}")
            sections.append(section(ctx))
        for s in sections:
            for fig in s.figures:
                write_atomic(out_dir / fig.name, lambda f, png=fig.png: f.write(png))
        links = [(other, f"{other}.html") for other in every if other != site]
        page = render(f"gigapulse plant report: {site}", f"Generated {stamp} from the warehouse.", sections, links)
        path = out_dir / f"{site}.html"
        write_atomic(path, lambda f, text=page: f.write(text.encode()))
        made.append(path)
        log.info("report: wrote %s", path)
    return made
