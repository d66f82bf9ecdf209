"""Arrow schemas of the daily rollups: the analyst-facing contract of ``<lake>/rollups/<name>/``.

Each rollup is a :class:`~schemas.tables.TableSpec` like the lake tables, so its grain, its doc and
every column's description (units included) travel in the footer of each file and drive the docs.
The SQL that fills them lives in :mod:`transforms.warehouse.rollups`; the contract lives here so a
reader needs no code to know what a column means.

``date`` is the UTC day a row belongs to (for ``energy_shift``: the day the shift starts), held in the
``date=YYYY-MM-DD`` directory name like every other table. Counts are plain numbers of rows, events
or samples; ratios are shares from 0 to 1, not percentages.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.tables import DESCRIPTION, TS, TableSpec


def _col(name: str, type_: pa.DataType, description: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={DESCRIPTION: description.encode()})


def _date(what: str) -> pa.Field:
    return _col("date", pa.date32(), f"Partition column: {what}.", nullable=False)


_COUNT_MAP = pa.map_(pa.string(), pa.int64())

QUALITY_DAILY = TableSpec(
    name="quality_daily",
    grain="one line x one stage x one UTC day",
    doc="Units, yield, first-pass yield, scrap by reason and grades of one stage of one line per day, "
        "computed from production_events (late events included) with the definitions of quality_features.",
    schema=pa.schema([
        _col("site", pa.string(), "Site.", nullable=False),
        _col("line", pa.string(), "Production line.", nullable=False),
        _col("stage", pa.string(), "Process stage.", nullable=False),
        _col("events", pa.int64(), "Production events of the line and stage that day, every kind, count.",
             nullable=False),
        _col("late_events", pa.int64(), "Of those, events that arrived after their stream window had closed "
             "(counted here, left out of quality_features), count.", nullable=False),
        _col("units_in", pa.int64(), "Units that entered the stage (enter events), count.", nullable=False),
        _col("units_out", pa.int64(), "Units that left the stage (leave events), count.", nullable=False),
        _col("good", pa.int64(), "Units that left the stage not scrapped during that visit, count.", nullable=False),
        _col("scrapped", pa.int64(), "Units scrapped at the stage (scrap events), count.", nullable=False),
        _col("reworked", pa.int64(), "Units entering the stage for the second time (rework), count.",
             nullable=False),
        _col("first_pass_good", pa.int64(), "Good leaves on a unit's first visit of the stage, count.",
             nullable=False),
        _col("first_pass_scrapped", pa.int64(), "Scraps on a unit's first visit of the stage, count.",
             nullable=False),
        _col("yield", pa.float64(), "good / (good + scrapped), ratio 0-1; null when no unit finished."),
        _col("first_pass_yield", pa.float64(), "max(first_pass_good - reworked, 0) / (first_pass_good + "
             "first_pass_scrapped), ratio 0-1; null when no unit finished its first visit."),
        _col("scrap_by_reason", _COUNT_MAP, "Scrapped units per reason, e.g. {'moisture': 3}; empty when none.",
             nullable=False),
        _col("grades", _COUNT_MAP, "Grade events per grade, e.g. {'A': 950, 'B': 40}; empty when none (only "
             "aging_eol grades cells).", nullable=False),
        _date("UTC day of the events"),
    ]),
    date_from=None,
    sort_key=("site", "line", "stage"),
)


def _energy_fields() -> list[pa.Field]:
    return [
        _col("site", pa.string(), "Site.", nullable=False),
        _col("line", pa.string(), "Production line; 'site' for plant-wide stations (dry room)."),
        _col("station", pa.string(), "Metered station.", nullable=False),
        _col("stage", pa.string(), "Process stage of the station."),
        _col("kwh", pa.float64(), "Energy drawn, kWh (sum of the station's energy_features windows)."),
        _col("windows", pa.int64(), "energy_features windows summed, count.", nullable=False),
        _col("metered_s", pa.float64(), "Time covered by those windows, s (86,400 for a whole day of "
             "1-minute windows).", nullable=False),
        _col("counter_resets", pa.int64(), "Times the station's cumulative counter went backwards, count."),
        _col("max_gap_ms", pa.int64(), "Longest gap between counter samples, ms."),
        _col("good_cells", pa.int64(), "Cells of the station's line that left aging_eol good in the same span, "
             "count (as quality_daily.good at aging_eol); null when the line reported no aging_eol event."),
        _col("kwh_per_good_cell", pa.float64(), "kwh / good_cells, kWh per cell; null when good_cells is null "
             "or 0. Summed over a line's stations it is the line's energy per good cell."),
    ]


ENERGY_DAILY = TableSpec(
    name="energy_daily",
    grain="one metered station x one UTC day",
    doc="Energy drawn by each metered station per day, from energy_features, with the good cells its line "
        "finished that day.",
    schema=pa.schema([*_energy_fields(), _date("UTC day of window_start")]),
    date_from=None,
    sort_key=("site", "line", "station"),
)

ENERGY_SHIFT = TableSpec(
    name="energy_shift",
    grain="one metered station x one shift",
    doc="Energy drawn by each metered station per shift, from energy_features. Shifts start at the UTC "
        "times of GIGAPULSE_SHIFT_STARTS (default 06:00, 14:00, 22:00); a shift belongs to the day it starts "
        "on, so the night shift of a day runs into the next one.",
    schema=pa.schema([
        _col("shift", pa.int8(), "Shift number within the day, 1 = the first start after 00:00 UTC.",
             nullable=False),
        _col("shift_start", TS, "Start of the shift (inclusive), UTC.", nullable=False),
        _col("shift_end", TS, "End of the shift (exclusive), UTC.", nullable=False),
        *_energy_fields(),
        _date("UTC day the shift starts on"),
    ]),
    date_from=None,
    sort_key=("shift", "site", "line", "station"),
)

SENSOR_DAILY = TableSpec(
    name="sensor_daily",
    grain="one sensor x one UTC day",
    doc="Daily statistics of every sensor from its 1-minute windows (sensor_features_1m), and for CTQ "
        "sensors process capability: Cp/Cpk with the within-window sigma pooled over the day's 1-minute "
        "windows, Pp/Ppk with the overall sigma of the day, against the spec limits of the sensors table.",
    schema=pa.schema([
        _col("sensor_id", pa.string(), "Sensor id as in the asset model.", nullable=False),
        _col("site", pa.string(), "Site (from the sensor's last window of the day); null if unknown."),
        _col("line", pa.string(), "Production line; null if unknown."),
        _col("station", pa.string(), "Station (work unit); null if unknown."),
        _col("stage", pa.string(), "Process stage; null if unknown."),
        _col("parameter", pa.string(), "What the sensor measures; null if unknown."),
        _col("unit", pa.string(), "Unit of mean, std, min, max, lsl, usl and the sigmas."),
        _col("windows", pa.int64(), "1-minute windows with samples, count.", nullable=False),
        _col("n", pa.int64(), "Samples, count (late samples are not in the windows, so not here).",
             nullable=False),
        _col("mean", pa.float64(), "Mean of the samples, in unit."),
        _col("std", pa.float64(), "Sample standard deviation of the day (ddof 1), in unit; null below 2 samples."),
        _col("min", pa.float64(), "Smallest sample, in unit."),
        _col("max", pa.float64(), "Largest sample, in unit."),
        _col("out_of_spec", pa.int64(), "Samples outside the spec limits when the stream judged them, count."),
        _col("out_of_spec_ratio", pa.float64(), "out_of_spec / n, ratio 0-1."),
        _col("ctq", pa.bool_(), "Critical to quality (sensors table): capability is computed for it.",
             nullable=False),
        _col("lsl", pa.float64(), "Lower spec limit used for capability, in unit (sensors table)."),
        _col("usl", pa.float64(), "Upper spec limit used for capability, in unit (sensors table)."),
        _col("m2", pa.float64(), "Sum of squared deviations from the day's mean, unit squared (std^2 x (n-1)); "
             "with n and mean it pools days or sensors exactly."),
        _col("m2_within", pa.float64(), "Sum over the windows of the squared deviations from each window's "
             "mean, unit squared."),
        _col("dof_within", pa.int64(), "Degrees of freedom of m2_within: sum over the windows of (count - 1).",
             nullable=False),
        _col("sigma_within", pa.float64(), "Within-window (short-term) sigma sqrt(m2_within / dof_within), in "
             "unit; null without a window of 2 samples."),
        _col("sigma_overall", pa.float64(), "Overall (long-term) sigma of the day sqrt(m2 / (n - 1)), in unit "
             "(the same number as std)."),
        _col("cp", pa.float64(), "CTQ only: (usl - lsl) / (6 sigma_within); null with a one-sided spec."),
        _col("cpk", pa.float64(), "CTQ only: min(usl - mean, mean - lsl) / (3 sigma_within); a one-sided spec "
             "uses its side."),
        _col("pp", pa.float64(), "CTQ only: (usl - lsl) / (6 sigma_overall)."),
        _col("ppk", pa.float64(), "CTQ only: min(usl - mean, mean - lsl) / (3 sigma_overall)."),
        _date("UTC day of window_start"),
    ]),
    date_from=None,
    sort_key=("sensor_id",),
)

SENSOR_HEALTH_DAILY = TableSpec(
    name="sensor_health_daily",
    grain="one sensor x one UTC day",
    doc="Whether each sensor delivered what the asset model promises over the day, from sensor_health.",
    schema=pa.schema([
        _col("sensor_id", pa.string(), "Sensor id as in the asset model.", nullable=False),
        _col("site", pa.string(), "Site (sensors table); null if the sensor is not in it."),
        _col("line", pa.string(), "Production line (sensors table)."),
        _col("station", pa.string(), "Station (sensors table)."),
        _col("stage", pa.string(), "Process stage (sensors table)."),
        _col("parameter", pa.string(), "What the sensor measures (sensors table)."),
        _col("windows", pa.int64(), "sensor_health windows of the sensor that day, count.", nullable=False),
        _col("observed", pa.int64(), "Samples received, count.", nullable=False),
        _col("expected", pa.float64(), "Samples expected from the nominal rate over those windows, count."),
        _col("rate_ratio", pa.float64(), "observed / expected, ratio (1 = as promised)."),
        _col("silent_windows", pa.int64(), "Windows without a sample, count.", nullable=False),
        _col("stuck_windows", pa.int64(), "Windows in which the value did not change (frozen sensor), count.",
             nullable=False),
        _col("max_gap_ms", pa.int64(), "Longest gap between consecutive samples, ms."),
        _col("late", pa.int64(), "Samples that arrived after their window had closed, count.", nullable=False),
        _date("UTC day of window_start"),
    ]),
    date_from=None,
    sort_key=("sensor_id",),
)

#: Every rollup table, in the order the docs list them.
ROLLUP_TABLES: dict[str, TableSpec] = {
    t.name: t for t in (QUALITY_DAILY, ENERGY_DAILY, ENERGY_SHIFT, SENSOR_DAILY, SENSOR_HEALTH_DAILY)
}
