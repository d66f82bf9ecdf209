"""Readiness scores: each dimension banded 0-5 from one measured figure, kept beside its evidence.

After the Smart Industry Readiness Index, a dimension is in band n when its figure meets the first n
thresholds of ``schemas/reference/readiness.yaml``; the overall score is the weighted mean of the bands
(dimensions without a figure are left out of the mean, not counted as 0, and say so), and the acatech
Industrie 4.0 stage is the highest one whose minimum score the overall score reaches.

Every figure is a ratio ``numerator / denominator`` measured by one query over the warehouse, kept in
the row with its bound parameters (or, for the two figures taken from the sensor density audit, the
query over ``sensor_density_audit`` that shows them), so any band can be re-derived by hand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date

import duckdb
import pyarrow as pa

from schemas.reference_data import DimensionBands, MaturityStage, ReadinessConfig, ReferenceDataError
from transforms.batch.density import DensityAudit, SensorGap, audit_density, read_density_inputs
from transforms.batch.retrofit import Payback, PlanItem, read_outputs, retrofit
from transforms.settings import AuditSettings

#: A window is timely when its longest gap stays within this many nominal sampling periods.
GAP_PERIODS = 3
#: How far back the genealogy looks for a cell's electrode rolls and slurry batches, days.
GENEALOGY_LOOKBACK_DAYS = 30
_LINE = "($line IS NULL OR {t}line = $line)"


@dataclass(frozen=True)
class Evidence:
    """The measured figure of one dimension and how it was measured."""

    figure: float | None
    numerator: float
    denominator: float
    query: str
    params: dict
    description: str


def band(figure: float | None, bands: DimensionBands) -> int | None:
    """The number of thresholds ``figure`` meets (0-5); None without a figure."""
    if figure is None:
        return None
    if bands.higher_is_better:
        return sum(figure >= t for t in bands.thresholds)
    return sum(figure <= t for t in bands.thresholds)


def overall_score(bands: dict[str, int | None], config: ReadinessConfig) -> float | None:
    """Weighted mean of the bands that have a figure (Schumacher et al.'s M = sum(m_i g_i) / sum(g_i))."""
    pairs = [(b, config.dimensions[d].weight) for d, b in bands.items() if b is not None and d in config.dimensions]
    total = sum(w for _, w in pairs)
    return sum(b * w for b, w in pairs) / total if total else None


def maturity_stage(score: float, config: ReadinessConfig) -> MaturityStage:
    """The highest acatech stage whose ``min_score`` the overall score reaches."""
    return [s for s in config.stages if score >= s.min_score][-1]


# --------------------------------------------------------------------------- the measured figures

CONNECTIVITY_SQL = f"""
SELECT count(*) FILTER (WHERE coalesce(h.observed, 0) > 0 AND list_contains($open_protocols, s.protocol)),
       count(*)
FROM sensors s LEFT JOIN sensor_health_daily h ON h.sensor_id = s.sensor_id AND h.date = $day
WHERE s.site = $site AND {_LINE.format(t='s.')}"""

AUTOMATION_SQL = f"""
SELECT count(*) FILTER (WHERE kind IN ('measure', 'grade') AND source = 'auto'),
       count(*) FILTER (WHERE kind IN ('measure', 'grade')),
       count(*)
FROM production_events WHERE date = $day AND site = $site AND {_LINE.format(t='')}"""

COMPLETENESS_SQL = f"""
SELECT coalesce(sum(least(observed, expected)), 0), coalesce(sum(expected), 0)
FROM sensor_health_daily WHERE date = $day AND site = $site AND {_LINE.format(t='')}"""

TIMELINESS_SQL = f"""
SELECT count(*) FILTER (WHERE h.observed > 0 AND h.late = 0
                          AND h.max_gap_ms <= $gap_periods * 1000.0 / s.nominal_rate_hz),
       count(*)
FROM sensor_health h JOIN sensors s ON s.sensor_id = h.sensor_id
WHERE h.date = $day AND s.site = $site AND {_LINE.format(t='s.')}"""

FLAGGED_SQL = f"""
SELECT count(*) FILTER (WHERE quality > 0) AS flagged, count(*) AS readings
FROM readings WHERE date = $day AND site = $site AND {_LINE.format(t='')}"""

#: Flagged readings plus dead letters. Dead letters carry no site: they are the site's when their source
#: partition carried only its data that day.
PLANT_QUALITY_SQL = f"""
WITH parts AS (
    SELECT 'plant.readings.v1' AS topic, src_partition, min(site) AS site, count(DISTINCT site) AS sites
    FROM readings WHERE date = $day GROUP BY src_partition
    UNION ALL
    SELECT 'plant.events.v1', src_partition, min(site), count(DISTINCT site)
    FROM production_events WHERE date = $day GROUP BY src_partition),
dead AS (
    SELECT count(*) AS n FROM dead_letters d
    JOIN parts p ON p.topic = d.source_topic AND p.src_partition = d.source_partition
    WHERE d.date = $day AND p.sites = 1 AND p.site = $site),
flagged AS ({FLAGGED_SQL.strip()})
SELECT f.flagged + d.n, f.readings + d.n, f.flagged, d.n FROM flagged f, dead d"""

#: Optional: the data-quality checks' results, when that table exists (it has no site: plant-agnostic).
DQ_SQL = "SELECT count(*) FILTER (WHERE NOT success), count(*) FROM dq_results WHERE date = $day"

TRACEABILITY_SQL = f"""
WITH units AS (  -- every unit of the site seen in the lookback, with the parents it names
    SELECT unit_id, any_value(unit_type) AS unit_type, list_distinct(flatten(list(parent_ids))) AS parents
    FROM production_events
    WHERE site = $site AND date BETWEEN CAST($day AS DATE) - $lookback_days AND $day
    GROUP BY unit_id),
edges AS (SELECT unit_id AS child, unnest(parents) AS parent FROM units),
rolls AS (  -- complete: it names its slurry batches and each has a history of its own
    SELECT u.unit_id, len(u.parents) > 0 AND count(k.unit_id) = len(u.parents) AS complete
    FROM units u LEFT JOIN edges e ON e.child = u.unit_id LEFT JOIN units k ON k.unit_id = e.parent
    WHERE u.unit_type = 'electrode_roll' GROUP BY u.unit_id, u.parents),
cells AS (
    SELECT DISTINCT unit_id FROM production_events
    WHERE date = $day AND site = $site AND unit_type = 'cell' AND {_LINE.format(t='')}),
traced AS (  -- complete: it names its rolls and each roll is complete
    SELECT c.unit_id, len(u.parents) > 0 AND count(r.unit_id) FILTER (WHERE r.complete) = len(u.parents) AS complete
    FROM cells c JOIN units u ON u.unit_id = c.unit_id
    LEFT JOIN edges e ON e.child = c.unit_id LEFT JOIN rolls r ON r.unit_id = e.parent
    GROUP BY c.unit_id, u.parents)
SELECT count(*) FILTER (WHERE complete), count(*) FROM traced"""

AUDIT_SQL = """
SELECT {num}, {den} FROM sensor_density_audit
WHERE date = $day AND site = $site AND level = $level AND line IS NOT DISTINCT FROM $line"""


def _run(con: duckdb.DuckDBPyConnection, sql: str, params: dict) -> tuple:
    used = {k: v for k, v in params.items() if f"${k}" in sql}
    return con.execute(sql, used).fetchone()


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _ev(sql: str, params: dict, num: float, den: float, description: str, figure: float | None = None) -> Evidence:
    """Evidence of one figure: ``figure`` if given, else num / den; the parameters the query binds, dates as ISO."""
    used = {k: (v.isoformat() if isinstance(v, date) else v) for k, v in params.items() if f"${k}" in sql}
    return Evidence(_ratio(num, den) if figure is None else figure, float(num), float(den), sql.strip(),
                    used, description)


def measure(con: duckdb.DuckDBPyConnection, day: date, site: str, line: str | None, audit_row: dict,
            open_protocols: list[str]) -> dict[str, Evidence]:
    """Every dimension's figure for one site (``line`` None) or one line of it, on ``day``.

    ``audit_row`` is the matching row of :func:`transforms.batch.density.audit_density` (same numbers
    as the landed ``sensor_density_audit``, whose query is kept as the evidence).
    """
    p = {"day": day, "site": site, "line": line, "open_protocols": open_protocols, "gap_periods": GAP_PERIODS,
         "lookback_days": GENEALOGY_LOOKBACK_DAYS, "level": "plant" if line is None else "line"}
    out: dict[str, Evidence] = {}
    num, den = _run(con, CONNECTIVITY_SQL, p)
    out["connectivity"] = _ev(CONNECTIVITY_SQL, p, num, den,
                              f"{num} of {den} sensors delivered data that day over an open protocol "
                              f"({', '.join(open_protocols)}) the platform reads without a gateway")
    auto, records, events = _run(con, AUTOMATION_SQL, p)
    if records:
        out["automation"] = _ev(AUTOMATION_SQL, p, auto, records,
                                f"{auto} of {records} quality records (measure, grade) captured automatically")
    else:  # units moved but no quality record was captured automatically (or at all, yet): nothing automated
        out["automation"] = _ev(AUTOMATION_SQL, p, 0, records, f"no quality record (measure, grade) among "
                                f"{events} production events: none captured automatically",
                                figure=0.0 if events else None)
    out["sensor_density"] = _ev(AUDIT_SQL.format(num="sensors_matched", den="sensors_expected"), p,
                                audit_row["sensors_matched"], audit_row["sensors_expected"],
                                f"{audit_row['sensors_matched']} of the {audit_row['sensors_expected']} sensors "
                                "of the reference profile present (sensor_density_audit)")
    num, den = _run(con, COMPLETENESS_SQL, p)
    out["data_completeness"] = _ev(COMPLETENESS_SQL, p, num, den, f"{num:.0f} of {den:.0f} samples promised "
                                   "by the nominal rates received (each sensor capped at its promise)")
    num, den = _run(con, TIMELINESS_SQL, p)
    out["timeliness"] = _ev(TIMELINESS_SQL, p, num, den, f"{num} of {den} sensor windows on time: samples "
                            f"present, none late, no gap longer than {GAP_PERIODS} sampling periods")
    out["data_quality"] = _data_quality(con, p)
    num, den = _run(con, TRACEABILITY_SQL, p)
    out["traceability"] = _ev(TRACEABILITY_SQL, p, num, den, f"{num} of {den} cells with a complete genealogy "
                              f"(rolls and their slurry batches known, {GENEALOGY_LOOKBACK_DAYS} days back)")
    out["energy_transparency"] = _ev(AUDIT_SQL.format(num="stations_metered", den="stations_meter_expected"), p,
                                     audit_row["stations_metered"], audit_row["stations_meter_expected"],
                                     f"{audit_row['stations_metered']} of {audit_row['stations_meter_expected']} "
                                     "process stations with their own energy meter (sensor_density_audit)")
    return out


def _data_quality(con: duckdb.DuckDBPyConnection, p: dict) -> Evidence:
    """Share of records refused (dead letters, plant level only) or flagged bad/uncertain; when
    ``dq_results`` exists for the day, the worse of that and its check failure rate."""
    if p["line"] is None:
        sql = PLANT_QUALITY_SQL
        num, den, flagged, dead = _run(con, sql, p)
        text = f"{flagged} of {den - dead} readings flagged bad or uncertain, {dead} dead letters from the " \
               "site's source partitions"
    else:
        sql = FLAGGED_SQL
        num, den = _run(con, sql, p)
        text = f"{num} of {den} readings flagged bad or uncertain (dead letters cannot be attributed to a line)"
    ev = _ev(sql, p, num, den, text)
    try:
        failed, checks = _run(con, DQ_SQL, p)
    except (duckdb.CatalogException, duckdb.BinderException):  # no dq_results table (of that shape) here
        return ev
    rate = _ratio(failed, checks)
    if rate is not None and (ev.figure is None or rate > ev.figure):
        return _ev(DQ_SQL, p, failed, checks, f"{failed} of {checks} data-quality checks failed (worse than: "
                   f"{text})")
    return ev


# --------------------------------------------------------------------------- rows

def score_rows(evidence: dict[str, Evidence], config: ReadinessConfig, site: str,
               line: str | None) -> list[dict]:
    """One row per configured dimension with its band and evidence, and an ``overall`` row."""
    unknown = sorted(set(config.dimensions) - set(evidence))
    if unknown:
        raise ReferenceDataError(f"readiness config names dimensions nobody measures: {', '.join(unknown)}")
    level = "plant" if line is None else "line"
    rows, bands = [], {}
    for name, cfg in config.dimensions.items():
        ev = evidence[name]
        bands[name] = band(ev.figure, cfg)
        rows.append({"site": site, "level": level, "line": line, "dimension": name, "band": bands[name],
                     "score": None if bands[name] is None else float(bands[name]), "figure": ev.figure,
                     "numerator": ev.numerator, "denominator": ev.denominator,
                     "higher_is_better": cfg.higher_is_better, "thresholds": list(cfg.thresholds),
                     "weight": cfg.weight, "evidence": ev.description, "evidence_query": ev.query,
                     "evidence_params": json.dumps(ev.params, sort_keys=True)})
    score = overall_score(bands, config)
    stage = maturity_stage(score, config) if score is not None else None
    scored = [d for d, b in bands.items() if b is not None]
    rows.append({"site": site, "level": level, "line": line, "dimension": "overall", "band": None,
                 "score": score, "figure": score, "numerator": None, "denominator": None, "higher_is_better": True,
                 "thresholds": [s.min_score for s in config.stages], "weight": None,
                 "evidence": "weighted mean of the bands of " + ", ".join(
                     f"{d} {bands[d]} (x{config.dimensions[d].weight:g})" for d in scored)
                 + (f"; without a figure: {', '.join(sorted(set(bands) - set(scored)))}" if len(scored) < len(bands)
                    else "") + "; thresholds are the acatech stages' minimum scores",
                 "evidence_query": None, "evidence_params": None,
                 "stage": stage.stage if stage else None, "stage_label": stage.label if stage else None})
    return rows


def readiness_rows(con: duckdb.DuckDBPyConnection, day: date, audit_rows: list[dict], config: ReadinessConfig,
                   open_protocols: list[str]) -> list[dict]:
    """Scores of every plant and line the density audit covers."""
    rows: list[dict] = []
    for a in audit_rows:
        if a["level"] in ("plant", "line"):
            ev = measure(con, day, a["site"], a["line"], a, open_protocols)
            rows += score_rows(ev, config, a["site"], a["line"])
    return rows


def readiness_table(rows: list[dict]) -> pa.Table:
    from schemas.batch import READINESS_SCORES

    names = [f.name for f in READINESS_SCORES.file_schema]
    return pa.Table.from_pylist([{k: r.get(k) for k in names} for r in rows], schema=READINESS_SCORES.file_schema)


# --------------------------------------------------------------------------- one day, end to end

@dataclass(frozen=True)
class Assessment:
    """Everything the audits compute for one day: the density audit, scores, plan and payback."""

    day: date
    audit: DensityAudit
    scores: list[dict]
    plan: list[PlanItem]
    paybacks: list[Payback]


def assess_day(con: duckdb.DuckDBPyConnection, day: date, settings: AuditSettings | None = None) -> Assessment:
    """Density audit, readiness scores and retrofit plan of every site in the warehouse on ``day``.

    The reference data comes from the settings' files (the shipped ones by default); the benchmark of
    the savings is the site of ``settings.reference_plant``.
    """
    from schemas.asset_model import load_plant
    from schemas.reference_data import load_readiness_config, load_reference_profile, load_retrofit_costs

    s = settings or AuditSettings()
    costs = load_retrofit_costs(s.retrofit_costs)
    inputs = read_density_inputs(con, day)
    audit = audit_density(inputs.sensors, inputs.delivery, inputs.cells, load_reference_profile(s.reference_profile))
    scores = readiness_rows(con, day, audit.rows, load_readiness_config(s.readiness), list(costs.open_protocols))
    coverage = {r["site"]: r["energy_coverage"] for r in audit.rows if r["level"] == "plant"}
    plan, paybacks = retrofit(audit.gaps, inputs.sensors, read_outputs(con, day), coverage,
                              load_plant(s.reference_plant).template.site, costs, s)
    return Assessment(day, audit, scores, plan, paybacks)


@dataclass(frozen=True)
class PlantSummary:
    """What the demo prints per plant."""

    site: str
    score: float | None
    stage: str | None
    top_gaps: list[SensorGap]
    capex_eur: float
    annual_savings_eur: float | None
    payback_years: float | None

    def lines(self) -> list[str]:
        """The summary as a few printable lines."""
        score = "n/a" if self.score is None else f"{self.score:.2f}/5 ({self.stage})"
        pay = "no savings to pay it back" if self.payback_years is None else f"payback {self.payback_years:.1f} years"
        out = [f"{self.site}: readiness {score}; retrofit {self.capex_eur:,.0f} EUR, {pay}"]
        out += [f"  gap {g.rank}: {g.reason}" for g in self.top_gaps] or ["  no sensor gaps"]
        return out


def plant_summaries(db_path, day: date | None = None, settings: AuditSettings | None = None) -> list[PlantSummary]:
    """Per plant: overall readiness, the three largest sensor gaps and the retrofit payback.

    Computed from the warehouse directly (no batch table needs to be landed first); ``day`` defaults to
    the last day of ``sensor_health_daily``.
    """
    from transforms.warehouse.reader import connect

    con = connect(db_path)
    try:
        day = day or con.execute("SELECT max(date) FROM sensor_health_daily").fetchone()[0]
        if day is None:
            return []
        a = assess_day(con, day, settings)
    finally:
        con.close()
    overall = {r["site"]: r for r in a.scores if r["level"] == "plant" and r["dimension"] == "overall"}
    pay = {p.site: p for p in a.paybacks}
    return [PlantSummary(site, overall.get(site, {}).get("score"), overall.get(site, {}).get("stage_label"),
                         [g for g in a.audit.gaps if g.site == site][:3], pay[site].capex_eur,
                         pay[site].annual_savings_eur, pay[site].payback_years) for site in sorted(pay)]
