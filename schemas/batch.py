"""Arrow schemas of the batch side's tables: what the Dagster assets land, one file per UTC day.

Each is a :class:`~schemas.tables.TableSpec` like the lake tables and rollups, so its grain, doc and
column descriptions (units included) drive the warehouse views and ``docs/tables.md``. The code that
fills them lives in :mod:`transforms.batch`; they are written by :func:`transforms.batch.store.write_day`
to ``<lake>/batch/<table>/date=YYYY-MM-DD/<table>.parquet``, replaced whole, so materializing a day
twice leaves the same rows.

Each domain adds its specs in its own section below and lists them in ``BATCH_TABLES``, with an
example query in ``BATCH_EXAMPLES``.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.tables import DESCRIPTION, TableSpec


def col(name: str, type_: pa.DataType, description: str, nullable: bool = True) -> pa.Field:
    """A column with its description (units included) in the field metadata."""
    return pa.field(name, type_, nullable=nullable, metadata={DESCRIPTION: description.encode()})


def date_col(what: str = "the UTC day the row describes") -> pa.Field:
    return col("date", pa.date32(), f"Partition column: {what}.", nullable=False)


def batch_spec(name: str, grain: str, doc: str, fields: list[pa.Field], sort_key: tuple[str, ...]) -> TableSpec:
    """A daily batch table: partitioned by ``date``, rows sorted by ``sort_key`` for identical rewrites."""
    return TableSpec(name=name, grain=grain, doc=doc, schema=pa.schema(fields), partition_cols=("date",),
                     date_from=None, sort_key=sort_key)


# --------------------------------------------------------------------------- data quality (issue #11)

#: Results of the data-quality checks (transforms/batch/dq): one row per check, checked table and day.
DQ_RESULTS = batch_spec(
    "dq_results",
    grain="one check x one checked table x one UTC day (the lake partition checked)",
    doc=("Outcome of each data-quality check (Great Expectations suites over DuckDB aggregates, run as "
         "Dagster asset checks) of a lake table's daily partition. The day file holds the latest run of "
         "each table's checks: rerunning a table's checks replaces that table's rows of the day and keeps "
         "the other tables'. Apart from run_id and checked_at, the rows depend only on the data checked, "
         "except the freshness check of today, which compares with the time of the run."),
    fields=[
        date_col("the UTC day (lake partition) that was checked"),
        col("table_name", pa.string(), "Lake table checked (readings, production_events, dead_letters).",
            nullable=False),
        col("check_name", pa.string(), "Name of the check, as the Dagster asset check (readings_keys_not_null...).",
            nullable=False),
        col("success", pa.bool_(), "True if the partition passed the check.", nullable=False),
        col("blocking", pa.bool_(), "True if a failure stops the assets downstream of the table in the same run.",
            nullable=False),
        col("observed", pa.string(), "What was measured, readable (counts, offending keys, newest timestamp)."),
        col("expected", pa.string(), "What the check requires, readable."),
        col("message", pa.string(), "One line for people: the table, the day and what failed; null on success."),
        col("run_id", pa.string(), "Dagster run id of the check run (or the caller's id outside Dagster)."),
        col("checked_at", pa.timestamp("us", tz="UTC"),
            "When the checks of this table and day were evaluated (one value per run and table), UTC."),
    ],
    sort_key=("table_name", "check_name"),
)

# --------------------------------------------------------------------------- the registry

#: Every batch table by name, in the order the docs list them.
BATCH_TABLES: dict[str, TableSpec] = {}

#: One example query per batch table, shown in docs/tables.md.
BATCH_EXAMPLES: dict[str, str] = {}


# --------------------------------------------------------------------------- audits and readiness (issue #11)
# Filled by transforms/batch/density.py, readiness.py and retrofit.py; docs/batch.md explains the choices.

_I64, _F64, _STR, _BOOL = pa.int64(), pa.float64(), pa.string(), pa.bool_()

SENSOR_DENSITY_AUDIT = batch_spec(
    "sensor_density_audit", "one station, line or plant x one UTC day (level says which)",
    "What each station measures against the reference profile of its kind (schemas/reference/"
    "reference_profile.yaml, derived from the reference plant), summed to lines and plants: sensors present, "
    "critical-to-quality and energy sub-metering coverage, nominal rates against the profile, samples delivered "
    "against the nominal rates (sensor_health_daily), sensors per station and per million cells started. Stations "
    "of a stage the profile does not cover (utilities) are counted but not judged.",
    [col("level", _STR, "station, line or plant.", nullable=False),
     col("site", _STR, "Site.", nullable=False),
     col("line", _STR, "Production line ('site' for plant-wide stations); null on plant rows."),
     col("station", _STR, "Station; null on line and plant rows."),
     col("stage", _STR, "Process stage of the station; null on line and plant rows."),
     col("profile_kind", _STR, "Station kind of the reference profile the station is held against; null if none."),
     col("stations", _I64, "Stations summed in the row, count."),
     col("sensors", _I64, "Sensors in the asset model, count."),
     col("sensors_expected", _I64, "Sensors the reference profile lists for those stations, count."),
     col("sensors_matched", _I64, "Sensors present that the profile lists (per parameter at most the profile's "
         "number), count."),
     col("sensors_beyond_profile", _I64, "Sensors present beyond the profile (other parameters, extra copies, "
         "unprofiled stations), count."),
     col("sensor_coverage", _F64, "sensors_matched / sensors_expected, ratio 0-1; null without a profile."),
     col("profile_rate_ratio", _F64, "Mean over matched sensors of min(nominal rate / profile rate, 1), ratio 0-1."),
     col("ctq_parameters_expected", _I64, "Critical-to-quality parameters the profile lists, count."),
     col("ctq_parameters_covered", _I64, "Of those, parameters with at least one sensor, count."),
     col("ctq_coverage", _F64, "ctq_parameters_covered / ctq_parameters_expected, ratio 0-1."),
     col("stations_meter_expected", _I64, "Stations whose profile has an energy meter, count."),
     col("stations_metered", _I64, "Of those, stations with their own energy meter, count."),
     col("energy_coverage", _F64, "stations_metered / stations_meter_expected, ratio 0-1 (sub-metering coverage)."),
     col("sensors_silent", _I64, "Sensors that delivered no sample that day, count."),
     col("samples_observed", _I64, "Samples received that day (sensor_health_daily.observed), count."),
     col("samples_expected", _F64, "Samples the nominal rates promise over the same windows, count."),
     col("achieved_rate_ratio", _F64, "samples_observed / samples_expected, ratio (1 = as promised)."),
     col("sensors_per_station", _F64, "sensors / stations."),
     col("cells", _I64, "Cells started that day on the line (plant: all lines; plant-wide stations: the plant), "
         "count; null if none."),
     col("sensors_per_million_cells", _F64, "sensors per million cells started; null without cells."),
     col("gaps", _I64, "sensor_gaps rows of the stations summed, count."),
     date_col()],
    sort_key=("site", "level", "line", "station"))

SENSOR_GAPS = batch_spec(
    "sensor_gaps", "one station x one parameter x one gap kind x one UTC day",
    "What a station lacks against the reference profile, ranked per site by impact: critical-to-quality first, "
    "then energy sub-metering, then the rest; missing sensors before slow ones, a parameter with no sensor "
    "at all before a partly measured one, then the larger shortfall, then flow order. Each gap says why it matters.",
    [col("site", _STR, "Site.", nullable=False),
     col("rank", _I64, "Rank within the site, 1 = the largest gap.", nullable=False),
     col("line", _STR, "Production line ('site' for plant-wide stations)."),
     col("station", _STR, "Station."),
     col("stage", _STR, "Process stage."),
     col("parameter", _STR, "Parameter the profile lists."),
     col("category", _STR, "ctq, energy or other."),
     col("gap", _STR, "missing (fewer sensors than the profile) or slow (nominal rate below the profile's)."),
     col("signal_class", _STR, "Signal class of the parameter (prices the retrofit)."),
     col("sensors_present", _I64, "Sensors of the parameter on the station, count."),
     col("sensors_expected", _I64, "Sensors of the parameter in the profile, count."),
     col("sensors_missing", _I64, "missing: sensors to add, count; 0 for slow."),
     col("sensors_slow", _I64, "slow: sensors below the profile's rate, count; 0 for missing."),
     col("nominal_rate_hz", _F64, "Slowest nominal rate of the sensors present, Hz; null if none."),
     col("profile_rate_hz", _F64, "Nominal rate in the profile, Hz."),
     col("reason", _STR, "Why the gap matters, in words."),
     date_col()],
    sort_key=("site", "rank"))

BATCH_TABLES.update({t.name: t for t in (SENSOR_DENSITY_AUDIT, SENSOR_GAPS)})
BATCH_EXAMPLES.update({
    "sensor_density_audit": """SELECT site, line, sensors, sensor_coverage, ctq_coverage, energy_coverage,
       achieved_rate_ratio, sensors_per_million_cells
FROM sensor_density_audit
WHERE date = (SELECT max(date) FROM sensor_density_audit) AND level <> 'station'
ORDER BY site, level DESC, line;""",
    "sensor_gaps": """SELECT site, rank, station, parameter, category, gap, reason
FROM sensor_gaps
WHERE date = (SELECT max(date) FROM sensor_gaps) AND rank <= 3
ORDER BY site, rank;""",
})

READINESS_SCORES = batch_spec(
    "readiness_scores", "one plant or line x one dimension (or overall) x one UTC day",
    "Legacy-factory readiness after the Smart Industry Readiness Index: each dimension banded 0-5 from one "
    "measured figure (numerator / denominator) against the thresholds of schemas/reference/readiness.yaml, "
    "with the query that measured it; an overall row holds the weighted mean of the bands and the acatech "
    "Industrie 4.0 maturity stage it reaches.",
    [col("site", _STR, "Site.", nullable=False),
     col("level", _STR, "plant or line.", nullable=False),
     col("line", _STR, "Production line; null on plant rows."),
     col("dimension", _STR, "connectivity, automation, sensor_density, data_completeness, timeliness, "
         "data_quality, traceability, energy_transparency, or overall.", nullable=False),
     col("band", pa.int8(), "Band 0-5 (0 undefined ... 5 intelligent); null without a figure and on overall."),
     col("score", _F64, "The band as a number; on overall, the weighted mean of the bands, 0-5."),
     col("figure", _F64, "Measured figure, numerator / denominator (ratio 0-1); on overall, the score."),
     col("numerator", _F64, "What the figure counts (samples, sensors, windows, cells...)."),
     col("denominator", _F64, "What it is counted against."),
     col("higher_is_better", _BOOL, "Whether the figure must reach (true) or stay under (false) the thresholds."),
     col("thresholds", pa.list_(_F64), "Figures bands 1 to 5 require; on overall, the minimum scores of "
         "acatech stages 1 to 6."),
     col("weight", _F64, "Weight of the dimension in the overall score."),
     col("evidence", _STR, "The figure in words."),
     col("evidence_query", _STR, "The SQL that measured it over the warehouse (named parameters)."),
     col("evidence_params", _STR, "The query's bound parameters, JSON."),
     col("stage", pa.int8(), "overall: acatech stage 1-6."),
     col("stage_label", _STR, "overall: computerisation, connectivity, visibility, transparency, predictive "
         "capacity or adaptability."),
     date_col()],
    sort_key=("site", "level", "line", "dimension"))

BATCH_TABLES[READINESS_SCORES.name] = READINESS_SCORES
BATCH_EXAMPLES[READINESS_SCORES.name] = """SELECT site, dimension, band, round(figure, 3) AS figure, evidence
FROM readiness_scores
WHERE date = (SELECT max(date) FROM readiness_scores) AND level = 'plant'
ORDER BY site, dimension;"""

RETROFIT_PLAN = batch_spec(
    "retrofit_plan", "one site x one retrofit item x one UTC day",
    "The sensors, energy meters and gateways a site lacks against the reference profile, in the priority of "
    "sensor_gaps, priced with the cost table (schemas/reference/retrofit_costs.yaml; its defaults are assumptions). "
    "Slow sensors get no hardware: the station's gateway lifts their polling rate.",
    [col("site", _STR, "Site.", nullable=False),
     col("priority", _I64, "Order of purchase, 1 first.", nullable=False),
     col("item", _STR, "sensor, energy_meter or gateway."),
     col("line", _STR, "Production line of the station."),
     col("station", _STR, "Station."),
     col("stage", _STR, "Process stage."),
     col("parameter", _STR, "Parameter the sensors measure; null for a gateway."),
     col("category", _STR, "ctq, energy or other (the gap's; a gateway takes its station's first gap's)."),
     col("quantity", _I64, "Units to install, count."),
     col("hardware_eur", _F64, "Hardware, EUR."),
     col("engineering_hours", _F64, "Engineering and installation, h."),
     col("engineering_eur", _F64, "engineering_hours x the hourly rate, EUR."),
     col("cost_eur", _F64, "hardware_eur + engineering_eur, EUR."),
     col("cumulative_eur", _F64, "CAPEX of this item and every one before it, EUR."),
     col("gap_rank", _I64, "sensor_gaps.rank of the gap the item closes (a gateway: its station's first gap)."),
     col("reason", _STR, "Why, in words."),
     date_col()],
    sort_key=("site", "priority"))

RETROFIT_PAYBACK = batch_spec(
    "retrofit_payback", "one site x one UTC day",
    "The retrofit plan's CAPEX against the annual savings of closing part of the gap between the site's measured "
    "scrap rate and energy per cell and the benchmark plant's (GIGAPULSE_AUDIT_REFERENCE_PLANT) on the same day, "
    "and the payback period; the assumptions are in the row.",
    [col("site", _STR, "Site.", nullable=False),
     col("items", _I64, "retrofit_plan rows, count."),
     col("capex_eur", _F64, "Sum of the plan's cost_eur, EUR."),
     col("cells", _I64, "Cells started that day, count."),
     col("production_hours", _F64, "Span of the day's production events, h."),
     col("annual_cells", _F64, "cells / production_hours x operating hours a year, count."),
     col("scrap_rate", _F64, "Cells scrapped / cells started that day, ratio 0-1."),
     col("reference_scrap_rate", _F64, "The benchmark plant's, ratio 0-1."),
     col("kwh_per_cell", _F64, "kWh of the site's meters (energy_daily) per cell started, kWh."),
     col("reference_kwh_per_cell", _F64, "The benchmark plant's, kWh."),
     col("energy_coverage", _F64, "Share of process stations with their own meter (sensor_density_audit), 0-1: "
         "how far kwh_per_cell can be attributed."),
     col("annual_scrap_savings_eur", _F64, "Expected savings from lower scrap, EUR a year."),
     col("annual_energy_savings_eur", _F64, "Expected savings from lower energy per cell, EUR a year."),
     col("annual_savings_eur", _F64, "Their sum, EUR a year; null without a benchmark."),
     col("payback_years", _F64, "capex_eur / annual_savings_eur, years; null without savings."),
     col("assumptions", _STR, "The assumptions behind the savings, in words."),
     date_col()],
    sort_key=("site",))

BATCH_TABLES.update({t.name: t for t in (RETROFIT_PLAN, RETROFIT_PAYBACK)})
BATCH_EXAMPLES.update({
    "retrofit_plan": """SELECT site, priority, item, station, parameter, quantity, cost_eur, cumulative_eur
FROM retrofit_plan
WHERE date = (SELECT max(date) FROM retrofit_plan) AND priority <= 5
ORDER BY site, priority;""",
    "retrofit_payback": """SELECT site, capex_eur, annual_savings_eur, payback_years, assumptions
FROM retrofit_payback
WHERE date = (SELECT max(date) FROM retrofit_payback)
ORDER BY site;""",
})

# --------------------------------------------------------------------------- material ledger and plant KPIs
# (transforms/batch/material.py, transforms/batch/kpis.py; docs/batch.md, "Material loss" and "Plant KPIs")

MATERIAL_LOSS = batch_spec(
    "material_loss",
    "one site x line x stage x scrap reason x element x UTC day",
    "Scrapped units booked as kilograms of critical raw material and their value: each scrap event's unit "
    "(slurry batch, electrode roll or cell) times the part of the site's bill of materials it carries at its "
    "stage, at the configured element prices. Elements a unit holds none of have no row.",
    [
        col("site", pa.string(), "Site.", nullable=False),
        col("line", pa.string(), "Production line.", nullable=False),
        col("stage", pa.string(), "Process stage where the units were scrapped.", nullable=False),
        col("reason", pa.string(), "Scrap reason ('unknown' when the event gave none).", nullable=False),
        col("element", pa.string(), "lithium, nickel, cobalt, manganese, graphite, copper or aluminium.",
            nullable=False),
        col("chemistry", pa.string(), "Cell chemistry of the site (its plant file's product block), e.g. NMC811."),
        col("units_scrapped", pa.int64(), "Scrap events of the site, line, stage and reason that day, count "
            "(the same on each element's row of the group)."),
        col("cell_equivalents", pa.float64(), "Those units in cells' worth (a cell 1, a batch or roll the plant's "
            "stated size), cells (the same on each element's row)."),
        col("kg", pa.float64(), "Mass of the element the scrapped units held, kg."),
        col("price_per_kg", pa.float64(), "Price of the element used, currency per kg (price list)."),
        col("value", pa.float64(), "kg x price_per_kg, in currency."),
        col("currency", pa.string(), "Currency of price_per_kg and value (ISO 4217)."),
        date_col("the UTC day of the scrap events"),
    ],
    sort_key=("site", "line", "stage", "reason", "element"),
)

PLANT_KPIS = batch_spec(
    "plant_kpis",
    "one site x line x UTC day",
    "Daily plant KPIs per line: output, yield, first-pass yield, scrap by reason, the parts of OEE the events "
    "allow, energy per good cell and per kWh of cells with the metered share of stations beside it, and "
    "measurements per kWh of cells. From the rollups quality_daily, energy_daily and sensor_health_daily, "
    "the sensors table and the plant files; a kWh figure is only as complete as metered_share says.",
    [
        col("site", pa.string(), "Site.", nullable=False),
        col("line", pa.string(), "Production line.", nullable=False),
        col("plant", pa.string(), "Plant file of the site; null when no plant file names the site."),
        col("chemistry", pa.string(), "Cell chemistry (plant file)."),
        col("cell_kwh", pa.float64(), "Nominal energy of one cell, kWh (capacity x nominal voltage)."),
        col("output_cells", pa.int64(), "Cells that left aging_eol good (end of line), count."),
        col("output_kwh", pa.float64(), "output_cells x cell_kwh, kWh of cells produced."),
        col("cells_scrapped", pa.int64(), "Cells scrapped at the cell stages (stacking to aging_eol), count."),
        col("electrode_units_scrapped", pa.int64(), "Slurry batches and electrode rolls scrapped (mixing to "
            "vacuum_drying), count; their material is in material_loss."),
        col("yield", pa.float64(), "output_cells / (output_cells + cells_scrapped), ratio 0-1; null when none."),
        col("first_pass_yield", pa.float64(), "Product of the cell stages' first-pass yields (quality_daily), "
            "ratio 0-1: the share of cells through every stage right the first time; null when a stage has none."),
        col("scrap_rate", pa.float64(), "cells_scrapped / (output_cells + cells_scrapped), ratio 0-1."),
        col("cell_scrap_by_reason", pa.map_(pa.string(), pa.int64()), "Cells scrapped per reason, count."),
        col("cell_scrap_rate_by_reason", pa.map_(pa.string(), pa.float64()),
            "Cells scrapped per reason / (output_cells + cells_scrapped), ratio 0-1."),
        col("electrode_scrap_by_reason", pa.map_(pa.string(), pa.int64()),
            "Slurry batches and electrode rolls scrapped per reason, count."),
        col("planned_hours", pa.float64(), "Planned production time assumed for OEE: from the line's first to "
            "its last production event of the day, h."),
        col("nominal_cells_per_hour", pa.float64(), "Ideal rate of the line (plant file), cells per hour."),
        col("oee_availability", pa.float64(), "Always null: needs machine states or downtime, which the events "
            "do not carry (oee_note)."),
        col("oee_performance", pa.float64(), "Always null: needs run time, i.e. availability (oee_note)."),
        col("oee_availability_x_performance", pa.float64(), "(output_cells + cells_scrapped) / (nominal rate x "
            "planned_hours), ratio: the two parts the events cannot separate, together."),
        col("oee_quality", pa.float64(), "output_cells / (output_cells + cells_scrapped), ratio 0-1 (= yield)."),
        col("oee", pa.float64(), "oee_availability_x_performance x oee_quality = output_cells / (nominal rate x "
            "planned_hours), ratio."),
        col("oee_note", pa.string(), "Which OEE parts are computed, which are not and why."),
        col("kwh_line", pa.float64(), "Energy of the line's metered stations, kWh (energy_daily); null when the "
            "line has no meter with data."),
        col("kwh_site_allocated", pa.float64(), "The line's share of plant-wide meters (dry room), by its share "
            "of the site's output_cells, kWh."),
        col("kwh", pa.float64(), "kwh_line + kwh_site_allocated, kWh: what the meters saw, not what the line used."),
        col("kwh_per_good_cell", pa.float64(), "kwh / output_cells, kWh per cell; read it with metered_share."),
        col("kwh_per_kwh_cell", pa.float64(), "kwh / output_kwh, kWh of production per kWh of cells; read it "
            "with metered_share."),
        col("stations", pa.int64(), "Stations of the line plus plant-wide stations (sensors table), count."),
        col("metered_stations", pa.int64(), "Of those, stations with an energy meter, count."),
        col("metered_share", pa.float64(), "metered_stations / stations, ratio 0-1: how much of the plant the kWh "
            "figures cover. A low kWh per cell with a low share is missing meters, not efficiency."),
        col("plant_stations", pa.int64(), "Stations of the whole site (every line and plant-wide), count."),
        col("plant_metered_stations", pa.int64(), "Of those, stations with an energy meter, count."),
        col("plant_metered_share", pa.float64(), "plant_metered_stations / plant_stations, ratio 0-1: the metered "
            "share of the plant, the same on every line of the site."),
        col("readings", pa.int64(), "Samples received from the line's sensors plus its share of plant-wide "
            "sensors' (sensor_health_daily.observed, allocated as kwh_site_allocated), count."),
        col("readings_per_kwh_cell", pa.float64(), "readings / output_kwh: the plant's data-to-energy ratio, "
            "measurements per kWh of cells produced."),
        date_col("the UTC day of the rollups"),
    ],
    sort_key=("site", "line"),
)

BATCH_TABLES[MATERIAL_LOSS.name] = MATERIAL_LOSS
BATCH_TABLES[PLANT_KPIS.name] = PLANT_KPIS
BATCH_EXAMPLES[MATERIAL_LOSS.name] = """SELECT site, stage, element, round(sum(kg), 3) AS kg, round(sum(value), 2) AS value, any_value(currency) AS currency
FROM material_loss
WHERE date >= (SELECT max(date) FROM material_loss) - 6 AND element IN ('lithium', 'nickel', 'cobalt')
GROUP BY ALL ORDER BY value DESC;"""
BATCH_EXAMPLES[PLANT_KPIS.name] = """SELECT date, site, line, output_cells, round(yield, 4) AS yield, round(kwh_per_good_cell, 2) AS kwh_per_cell,
       round(metered_share, 2) AS metered_share, round(readings_per_kwh_cell) AS readings_per_kwh
FROM plant_kpis
ORDER BY date DESC, site, line;"""

BATCH_TABLES[DQ_RESULTS.name] = DQ_RESULTS
BATCH_EXAMPLES[DQ_RESULTS.name] = """SELECT count(*) AS checks_run, count(*) FILTER (WHERE NOT success) AS failed,
       count(*) FILTER (WHERE NOT success AND blocking) AS failed_blocking,
       list(message ORDER BY date DESC) FILTER (WHERE NOT success) AS failures
FROM dq_results
WHERE date >= current_date - 7;"""


# --------------------------------------------------------------------------- predictive quality (issue #12)
# Filled by transforms/batch/cell_features.py; docs/predictive-quality.md explains the features.

CELL_FEATURES = batch_spec(
    "cell_features", "one cell x the UTC day it left filling (the quality gate before formation)",
    "Each cell's process history up to the quality gate: the units it consumed (recursively over parent_ids), "
    "the sensor data of every station they visited while they were there (share of samples out of spec, mean, "
    "samples, pooled per station and parameter; dry-room air during stacking and filling) and their measured "
    "attributes. Nothing timestamped after the cell left filling enters. The training set of predictive "
    "quality and the input of its live score; a day rebuilds identically.",
    fields=[
        date_col("the UTC day the cell left filling"),
        col("cell_id", _STR, "Serial of the cell.", nullable=False),
        col("site", _STR, "Site code.", nullable=False),
        col("line", _STR, "Cell line.", nullable=False),
        col("gate_ts", pa.timestamp("us", tz="UTC"), "When the cell left filling (its leave event), UTC.",
            nullable=False),
        col("upstream_ids", pa.list_(_STR), "Every unit the cell consumed, at any depth (rolls, batches), sorted.",
            nullable=False),
        col("n_features", _I64, "Number of entries in features.", nullable=False),
        col("features", pa.map_(_STR, _F64),
            "Feature name -> value. Names: <station>.<parameter>.oos_share|mean|samples (station id within its "
            "line, e.g. coat-c.areal_loading.oos_share: share 0-1, mean in the sensor's unit, samples a count), "
            "<station>.dry_room.<parameter>.<stat> for the dry room's sensors during a visit, and "
            "<station>.<attribute>.measured (a measure event's value, in its unit). A stat with no sample is null.",
            nullable=False),
    ],
    sort_key=("site", "line", "gate_ts", "cell_id"),
)

BATCH_TABLES[CELL_FEATURES.name] = CELL_FEATURES
BATCH_EXAMPLES[CELL_FEATURES.name] = """SELECT site, line, count(*) AS cells, round(avg(n_features)) AS features_per_cell,
       round(avg(features['fill.fill_mass.measured']), 2) AS fill_mass_g,
       round(avg(features['stack.dry_room.dew_point.oos_share']), 4) AS dry_room_dew_point_oos
FROM cell_features
WHERE date = (SELECT max(date) FROM cell_features)
GROUP BY ALL ORDER BY site, line;"""

#: Filled by the gate_model asset (transforms/predictive/training.py); the files are in <lake>/models
#: (transforms/predictive/registry.py). docs/predictive-quality.md, "Model registry", explains promotion.
MODELS = batch_spec(
    "models", "one trained gate model version x the UTC day it was trained for",
    "Every trained version of the gate classifier (and capacity regressor): its training window and time split, "
    "its figures on its own test cells beside the baselines', its feature list's hash and top drivers, and "
    "whether the promotable check let it become the champion and why. A day's file holds every version trained "
    "for that day (training the same data again replaces its row); the model itself is the file in path.",
    fields=[
        date_col("the UTC day the model was trained for: the last day of its training window"),
        col("version", _STR, "gate-<YYYYMMDD>-<6 hex digits of the training data's hash>; the same data gives the "
            "same version.", nullable=False),
        col("train_from", pa.date32(), "First day of cell_features read (the cells' gate day)."),
        col("train_until", pa.date32(), "Last day of cell_features read (= date)."),
        col("split_at", pa.timestamp("us", tz="UTC"), "Gate time of the time split: cells gated earlier trained "
            "the model, the others tested it, UTC."),
        col("train_cells", _I64, "Cells with a verdict that trained the model, count."),
        col("test_cells", _I64, "Cells with a verdict that tested it, count."),
        col("test_bad", _I64, "Test cells scrapped after the gate or graded C, count."),
        col("roc_auc", _F64, "ROC AUC of the model on its test cells, 0-1 (0.5 = chance)."),
        col("pr_auc", _F64, "Average precision on the test cells, 0-1."),
        col("brier", _F64, "Brier score on the test cells (mean squared error of the probability), lower is better."),
        col("base_rate", _F64, "Share of bad cells among the training cells: the constant score of the base-rate "
            "baseline, ratio 0-1."),
        col("base_rate_brier", _F64, "Brier score of that constant on the test cells."),
        col("filling_only_auc", _F64, "ROC AUC of the same model on the filling station's features alone (baseline); "
            "null without such features."),
        col("capacity_mae", _F64, "End-of-line capacity regressor's mean absolute error on the test cells, in the "
            "capacity's unit (Ah); null without a regressor."),
        col("capacity_baseline_mae", _F64, "Mean absolute error of the training median capacity, Ah."),
        col("features", _I64, "Number of features (columns of the model's matrix)."),
        col("schema_hash", _STR, "sha256 of the sorted feature names: equal hashes mean the same columns."),
        col("top_features", pa.list_(_STR), "The model's global top drivers (permutation importance on the test "
            "cells, positive only), at most 20, best first."),
        col("path", _STR, "The model file (<lake>/models/<version>.joblib)."),
        col("sklearn_version", _STR, "scikit-learn that trained it; another major.minor refuses to load the file."),
        col("created_at", pa.timestamp("us", tz="UTC"), "When this version was trained, UTC."),
        col("promotable", _BOOL, "Outcome of the promotable check: true if it may become champion; null before "
            "the check ran."),
        col("promotion_note", _STR, "Why the check passed or refused it (AUC against the champion's on the same "
            "test cells, features whose PSI is over the bound)."),
        col("promoted_at", pa.timestamp("us", tz="UTC"), "When the champion alias last moved to it, UTC; null if "
            "never."),
        col("promoted_by", _STR, "Who moved it: check:promotable (the gate_champion asset) or cli:<user>."),
    ],
    sort_key=("created_at", "version"),
)

BATCH_TABLES[MODELS.name] = MODELS
BATCH_EXAMPLES[MODELS.name] = """SELECT date, version, train_cells, test_cells, round(roc_auc, 3) AS auc,
       round(filling_only_auc, 3) AS filling_only_auc, promotable, promotion_note, promoted_at
FROM models
ORDER BY created_at DESC LIMIT 10;"""

#: Filled by the quality_gate_value asset (transforms/predictive/value.py); docs/predictive-quality.md,
#: "What it is worth", explains the threshold, the energy per cell and what a false pull costs.
QUALITY_GATE_VALUE = batch_spec(
    "quality_gate_value", "one site x line x the UTC day its cells left filling (the quality gate)",
    "What the gate before formation is worth: the champion gate model scores the day's gated cells, those at "
    "or above the threshold are the cells it would have pulled, and their verdicts say which pulls were right. "
    "Per line: cells pulled, true and false pulls, the share of later bad cells caught, the formation and aging "
    "energy the true pulls would not have spent, and the critical material involved. A false pull loses a good "
    "cell: its count, material and unspent energy are reported apart, never netted against the saving. Verdicts "
    "are those landed when the asset ran (events of the gate day and the two days after, as training reads them); "
    "a rerun later counts the ones that came since.",
    fields=[
        date_col("the UTC day the cells left filling"),
        col("site", _STR, "Site.", nullable=False),
        col("line", _STR, "Cell line.", nullable=False),
        col("model_version", _STR, "The champion that scored the cells (gate-<YYYYMMDD>-<hash>), at the run.",
            nullable=False),
        col("threshold", _F64, "Score (probability 0-1 of scrapped or graded C) at and above which a cell is "
            "pulled; null on a day without cells."),
        col("flag_share", _F64, "Share of cells the threshold is set to flag (GIGAPULSE_GATE_FLAG_SHARE), ratio 0-1."),
        col("threshold_source", _STR, "champion_test_cells (flag curve of the champion's training record) or "
            "day_scores (the record has none: that share of the day's cells)."),
        col("threshold_rule", _STR, "How the threshold was chosen, in words."),
        col("cells_gated", _I64, "Cells that left filling that day on the line (cell_features rows), count."),
        col("cells_with_verdict", _I64, "Of those, cells graded or scrapped by the time of the run, count."),
        col("cells_bad", _I64, "Of those, cells scrapped after the gate or graded C, count."),
        col("cells_flagged", _I64, "Cells at or above the threshold: pulled before formation, count."),
        col("true_pulls", _I64, "Flagged cells that were later scrapped or graded C, count."),
        col("false_pulls", _I64, "Flagged cells that were later graded A or B: good cells the gate would lose, count."),
        col("flagged_without_verdict", _I64, "Flagged cells with no verdict yet, judged neither way, count."),
        col("bad_caught_share", _F64, "true_pulls / cells_bad: share of later scrap the gate catches (recall), "
            "ratio 0-1; null without bad cells."),
        col("precision", _F64, "true_pulls / (true_pulls + false_pulls), ratio 0-1; null without a judged pull."),
        col("formation_kwh_per_cell", _F64, "kWh the line's formation stations drew that day (energy_features) / "
            "cells that entered them that day, kWh per cell; null without meter data or cells."),
        col("aging_kwh_per_cell", _F64, "The same for the aging and end-of-line stations, kWh per cell."),
        col("kwh_saved", _F64, "Energy the true pulls would have spent after the gate: formation for a cell "
            "scrapped at formation, formation and aging for one scrapped at end of line or graded C, kWh; "
            "unmetered stages add nothing; null when neither stage is metered."),
        col("false_pull_kwh", _F64, "Formation and aging energy the false pulls would not have spent, kWh: not a "
            "saving (a good cell is lost), reported apart from kwh_saved."),
        col("kg_per_cell", _F64, "Critical raw material in one cell of the site (bill of materials of its "
            "chemistry, every element), kg; null without a bill of materials for the site."),
        col("kg_in_true_pulls", _F64, "true_pulls x kg_per_cell: material of the bad cells caught, kg, lost "
            "either way."),
        col("kg_saved", _F64, "Critical material the pulls saved, kg: 0, because a bad cell's material is lost "
            "whether it is pulled at the gate or scrapped after formation (both are recycled as filled cells); "
            "null without a bill of materials."),
        col("kg_false_pulls", _F64, "false_pulls x kg_per_cell: material of the good cells pulled, kg, a loss."),
    ],
    sort_key=("site", "line"),
)

BATCH_TABLES[QUALITY_GATE_VALUE.name] = QUALITY_GATE_VALUE
BATCH_EXAMPLES[QUALITY_GATE_VALUE.name] = """SELECT date, site, line, cells_gated, cells_flagged, true_pulls, false_pulls,
       round(bad_caught_share, 3) AS bad_caught_share, round(kwh_saved, 2) AS kwh_saved,
       round(false_pull_kwh, 2) AS false_pull_kwh, round(kg_false_pulls, 3) AS kg_false_pulls, threshold_source
FROM quality_gate_value
WHERE date = (SELECT max(date) FROM quality_gate_value)
ORDER BY site, line;"""
