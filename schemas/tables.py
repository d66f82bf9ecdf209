"""Arrow schemas of the lake tables: the analyst-facing contract of the warehouse.

Every table states its grain (what one row is) and describes each column in the field metadata
under ``description``. The descriptions travel inside every Parquet file (Arrow stores its schema
in the footer), so an engine other than DuckDB still finds them, and the warehouse docs
(``docs/tables.md``) are generated from the same text, so the two cannot drift apart.

Partition columns (``date``) are part of the logical schema but not of the file content: they live
in the hive-style directory name (``date=2024-05-01``), and readers add them back from the path.
``date`` is always the UTC calendar date of the row's event time, never of its processing time,
so late data lands in the day it belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

#: Every event time in the lake: millisecond precision (what the contracts carry) and UTC.
TS = pa.timestamp("ms", tz="UTC")

DESCRIPTION = b"description"


def _col(name: str, type_: pa.DataType, description: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={DESCRIPTION: description.encode()})


def _date(source: str) -> pa.Field:
    return _col("date", pa.date32(), f"Partition column: UTC date of {source}.", nullable=False)


@dataclass(frozen=True)
class TableSpec:
    """One lake table: its schema, its grain and how the sink lays it out.

    ``date_from`` names the timestamp column the ``date`` partition is derived from. ``sort_key``
    orders rows inside a file so that a rewritten file has the same content whatever order its
    rows were buffered in.
    """

    name: str
    grain: str
    doc: str
    schema: pa.Schema
    partition_cols: tuple[str, ...] = ("date",)
    date_from: str | None = "ts"
    sort_key: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        meta = {b"table": self.name.encode(), b"grain": self.grain.encode(), b"doc": self.doc.encode()}
        object.__setattr__(self, "schema", self.schema.with_metadata(meta))

    @property
    def file_schema(self) -> pa.Schema:
        """The schema of the Parquet file content: the partition columns live in the path."""
        schema = self.schema
        for col in self.partition_cols:
            schema = schema.remove(schema.get_field_index(col))
        return schema

    def column_docs(self) -> dict[str, str]:
        """Column name to its description, in schema order."""
        return {f.name: column_description(f) for f in self.schema}


def column_description(field: pa.Field) -> str:
    """The ``description`` metadata of a field, or an empty string."""
    return (field.metadata or {}).get(DESCRIPTION, b"").decode()


_ENRICHMENT = (
    ("site", "Site of the sensor, from the asset model; null if the sensor is unknown to the model."),
    ("line", "Production line of the sensor, from the asset model; null if unknown."),
    ("station", "Station (work unit) of the sensor, from the asset model; null if unknown."),
    ("stage", "Process stage (mixing ... aging_eol, dry_room, utilities), from the asset model; null if unknown."),
    ("parameter", "What the sensor measures (web_speed, dew_point...), from the asset model; null if unknown."),
    ("unit", "Unit of value, from the asset model; null if unknown."),
)


def _enrichment() -> list[pa.Field]:
    return [_col(name, pa.string(), text) for name, text in _ENRICHMENT]


def _window() -> list[pa.Field]:
    return [
        _col("window_start", TS, "Start of the tumbling window (inclusive), UTC.", nullable=False),
        _col("window_end", TS, "End of the tumbling window (exclusive), UTC.", nullable=False),
    ]


def _window_stats() -> list[pa.Field]:
    """The per-sensor window statistics shared by the 1-minute and the 1-hour tables."""
    return [
        _col("sensor_id", pa.string(), "Sensor id as in the asset model.", nullable=False),
        *_window(),
        _col("count", pa.int64(), "Number of samples in the window.", nullable=False),
        _col("mean", pa.float64(), "Mean of the samples."),
        _col("std", pa.float64(), "Sample standard deviation; null below 2 samples."),
        _col("min", pa.float64(), "Smallest sample."),
        _col("max", pa.float64(), "Largest sample."),
        _col("last", pa.float64(), "Latest sample by event time."),
        _col("out_of_spec", pa.int64(), "Samples outside the sensor's spec limits (lsl, usl)."),
    ]


READINGS = TableSpec(
    name="readings",
    grain="one sample of one sensor",
    doc="Every accepted sensor sample, single readings and frames alike, enriched from the asset model. "
        "(src_partition, src_offset, src_index) is unique: the sample's position in plant.readings.v1.",
    schema=pa.schema([
        _col("sensor_id", pa.string(), "Sensor id as in the asset model.", nullable=False),
        _col("ts", TS, "Event time of the sample, UTC.", nullable=False),
        _col("value", pa.float64(), "Sample value in the sensor's unit.", nullable=False),
        _col("quality", pa.int8(), "Status of the sample: 0 good, 1 uncertain, 2 bad.", nullable=False),
        *_enrichment(),
        _col("ingest_ts", TS, "When the stream accepted the message (Kafka timestamp), UTC."),
        _col("src_partition", pa.int32(), "Partition of plant.readings.v1 the sample came from.", nullable=False),
        _col("src_offset", pa.int64(), "Offset of the message in that partition.", nullable=False),
        _col("src_index", pa.int32(), "Position of the sample within its frame; 0 for a single reading.",
             nullable=False),
        _col("late", pa.bool_(), "True if the sample arrived after its feature window had closed.",
             nullable=False),
        _date("ts"),
    ]),
    sort_key=("src_partition", "src_offset", "src_index"),
)

PRODUCTION_EVENTS = TableSpec(
    name="production_events",
    grain="one production event",
    doc="Units (slurry batches, electrode rolls, cells) entering, leaving, measured, graded or scrapped "
        "at a stage. parent_ids links a unit to the units it consumed (genealogy).",
    schema=pa.schema([
        _col("v", pa.int8(), "Schema version of the event contract.", nullable=False),
        _col("event_id", pa.string(), "Unique, deterministic event id: a replayed event keeps it, two different "
             "events never share it (repeats: see duplicate_events).", nullable=False),
        _col("ts", TS, "Event time, UTC.", nullable=False),
        _col("site", pa.string(), "Site.", nullable=False),
        _col("line", pa.string(), "Production line.", nullable=False),
        _col("stage", pa.string(), "Process stage.", nullable=False),
        _col("station", pa.string(), "Station (work unit).", nullable=False),
        _col("unit_id", pa.string(), "Serial of the unit the event is about, never reused across runs "
             "(simulator: <site>-<line>[-<route>]-<start>Z-S<seed>-<type><sequence>).", nullable=False),
        _col("unit_type", pa.string(), "slurry_batch, electrode_roll or cell.", nullable=False),
        _col("kind", pa.string(), "enter, leave, measure, grade or scrap.", nullable=False),
        _col("parent_ids", pa.list_(pa.string()), "Genealogy: ids of the units consumed."),
        _col("attribute", pa.string(), "measure: what was measured (areal_loading, capacity...)."),
        _col("value", pa.float64(), "measure: the measured value."),
        _col("unit", pa.string(), "measure: unit of value."),
        _col("grade", pa.string(), "grade: A, B or C (C is not sellable as first grade)."),
        _col("reason", pa.string(), "scrap: why (coating_defect, moisture, weld_failure...)."),
        _col("source", pa.string(), "auto, or manual when entered by hand (legacy plants).", nullable=False),
        _col("src_partition", pa.int32(), "Partition of plant.events.v1 the event came from.", nullable=False),
        _col("src_offset", pa.int64(), "Offset of the event in that partition.", nullable=False),
        _col("late", pa.bool_(), "True if the event arrived after its quality window had closed (kept here, "
             "left out of quality_features).", nullable=False),
        _date("ts"),
    ]),
    sort_key=("src_partition", "src_offset"),
)

_SPC = (
    ("ewma", pa.float64(), "EWMA of the window means."),
    ("ewma_ucl", pa.float64(), "Upper control limit of the EWMA."),
    ("ewma_lcl", pa.float64(), "Lower control limit of the EWMA."),
    ("ewma_alarm", pa.bool_(), "EWMA outside its control limits."),
    ("cusum_pos", pa.float64(), "Upper tabular CUSUM statistic C+."),
    ("cusum_neg", pa.float64(), "Lower tabular CUSUM statistic C-."),
    ("cusum_alarm", pa.bool_(), "A CUSUM statistic above its decision interval H."),
    ("we_rule1", pa.bool_(), "Western Electric rule 1: one point beyond 3 sigma."),
    ("we_rule2", pa.bool_(), "Western Electric rule 2: 2 of 3 beyond 2 sigma on one side."),
    ("we_rule3", pa.bool_(), "Western Electric rule 3: 4 of 5 beyond 1 sigma on one side."),
    ("we_rule4", pa.bool_(), "Western Electric rule 4: 8 in a row on one side of the centre line."),
    ("cp", pa.float64(), "Process capability Cp (within-window sigma)."),
    ("cpk", pa.float64(), "Process capability Cpk (within-window sigma)."),
    ("pp", pa.float64(), "Process performance Pp (overall sigma)."),
    ("ppk", pa.float64(), "Process performance Ppk (overall sigma)."),
)

SENSOR_FEATURES_1M = TableSpec(
    name="sensor_features_1m",
    grain="one sensor x one 1-minute window",
    doc="Per-sensor statistics of each 1-minute tumbling window. The SPC columns are filled only for "
        "critical-to-quality (CTQ) sensors and are null for all others.",
    schema=pa.schema([
        *_window_stats(),
        *(_col(name, type_, f"CTQ only: {text}") for name, type_, text in _SPC),
        *_enrichment(),
        _date("window_start"),
    ]),
    date_from="window_start",
    sort_key=("sensor_id", "window_start"),
)

SENSOR_FEATURES_1H = TableSpec(
    name="sensor_features_1h",
    grain="one sensor x one 1-hour window",
    doc="Per-sensor statistics of each 1-hour tumbling window, for shift and day views without scanning "
        "raw readings. Computed by the stream from the same samples as sensor_features_1m (late samples "
        "excluded); SPC is charted on the 1-minute windows only.",
    schema=pa.schema([
        *_window_stats(),
        *_enrichment(),
        _date("window_start"),
    ]),
    date_from="window_start",
    sort_key=("sensor_id", "window_start"),
)

QUALITY_FEATURES = TableSpec(
    name="quality_features",
    grain="one line x one stage x one window",
    doc="Throughput, yield and scrap of one stage of one line per tumbling window, from production events.",
    schema=pa.schema([
        *_window(),
        _col("site", pa.string(), "Site.", nullable=False),
        _col("line", pa.string(), "Production line.", nullable=False),
        _col("stage", pa.string(), "Process stage.", nullable=False),
        _col("units_in", pa.int64(), "Units that entered the stage."),
        _col("units_out", pa.int64(), "Units that left the stage."),
        _col("good", pa.int64(), "Units that left the stage good (not scrapped)."),
        _col("scrapped", pa.int64(), "Units scrapped at the stage."),
        _col("yield", pa.float64(), "good / (good + scrapped); null when no unit finished."),
        _col("first_pass_yield", pa.float64(), "Share of units good at the first attempt (no rework)."),
        _col("grade_a", pa.int64(), "Cells graded A."),
        _col("grade_b", pa.int64(), "Cells graded B."),
        _col("grade_c", pa.int64(), "Cells graded C."),
        _col("scrap_by_reason", pa.map_(pa.string(), pa.int64()),
             "Scrapped units per reason, e.g. {'moisture': 3}; see the scrap_reasons view."),
        _date("window_start"),
    ]),
    date_from="window_start",
    sort_key=("site", "line", "stage", "window_start"),
)

ENERGY_FEATURES = TableSpec(
    name="energy_features",
    grain="one station x one window",
    doc="Energy drawn by each metered station per tumbling window, from its cumulative kWh counter.",
    schema=pa.schema([
        *_window(),
        _col("site", pa.string(), "Site.", nullable=False),
        _col("line", pa.string(), "Production line; 'site' for plant-wide stations (dry room)."),
        _col("station", pa.string(), "Metered station.", nullable=False),
        _col("stage", pa.string(), "Process stage of the station."),
        _col("kwh", pa.float64(), "Energy drawn in the window, kWh (counter increments, resets excluded)."),
        _col("counter_resets", pa.int64(), "Times the cumulative counter went backwards (meter reset)."),
        _col("gap_ms", pa.int64(), "Longest gap between counter samples in the window, ms."),
        _date("window_start"),
    ]),
    date_from="window_start",
    sort_key=("site", "station", "window_start"),
)

SENSOR_HEALTH = TableSpec(
    name="sensor_health",
    grain="one sensor x one window",
    doc="Whether each sensor delivers what the asset model promises: rate, gaps, stuck values, lateness.",
    schema=pa.schema([
        _col("sensor_id", pa.string(), "Sensor id as in the asset model.", nullable=False),
        *_window(),
        _col("observed", pa.int64(), "Samples received in the window.", nullable=False),
        _col("expected", pa.float64(), "Samples expected from the nominal rate."),
        _col("rate_ratio", pa.float64(), "observed / expected."),
        _col("max_gap_ms", pa.int64(), "Longest gap between consecutive samples, ms."),
        _col("stuck", pa.bool_(), "The value did not change over the window (frozen sensor)."),
        _col("late", pa.int64(), "Samples that arrived after the window had closed."),
        _date("window_start"),
    ]),
    date_from="window_start",
    sort_key=("sensor_id", "window_start"),
)

DEAD_LETTERS = TableSpec(
    name="dead_letters",
    grain="one refused message",
    doc="Every message refused at the edge, in the stream or in replay, with its original bytes, its "
        "source position and a machine-readable reason.",
    schema=pa.schema([
        _col("reason", pa.string(), "Machine-readable reason code (not_json, unknown_sensor...).",
             nullable=False),
        _col("detail", pa.string(), "Human-readable explanation."),
        _col("stage", pa.string(), "Where it was refused: edge, stream or replay.", nullable=False),
        _col("source_topic", pa.string(), "Topic the message was read from, if any."),
        _col("source_partition", pa.int32(), "Partition of source_topic."),
        _col("source_offset", pa.int64(), "Offset in source_partition."),
        _col("ts", TS, "When it was dead-lettered, UTC.", nullable=False),
        _col("payload", pa.binary(), "The original bytes, verbatim."),
        _date("ts"),
    ]),
    sort_key=("source_topic", "source_partition", "source_offset", "ts"),
)

SENSORS = TableSpec(
    name="sensors",
    grain="one sensor of the asset model",
    doc="The ISA-95 asset model as a table: where each sensor sits, what it measures, its nominal rate "
        "and spec limits. A snapshot, rewritten whole when the model changes.",
    schema=pa.schema([
        _col("v", pa.int8(), "Schema version of the asset contract.", nullable=False),
        _col("sensor_id", pa.string(), "Sensor id.", nullable=False),
        _col("path", pa.string(), "ISA-95 path: enterprise/site/area/line/station/equipment/sensor.",
             nullable=False),
        _col("enterprise", pa.string(), "Enterprise.", nullable=False),
        _col("site", pa.string(), "Site.", nullable=False),
        _col("area", pa.string(), "Area.", nullable=False),
        _col("line", pa.string(), "Production line.", nullable=False),
        _col("station", pa.string(), "Station (work unit).", nullable=False),
        _col("equipment", pa.string(), "Equipment.", nullable=False),
        _col("stage", pa.string(), "Process stage.", nullable=False),
        _col("parameter", pa.string(), "What the sensor measures.", nullable=False),
        _col("unit", pa.string(), "Unit of its values.", nullable=False),
        _col("signal_class", pa.string(),
             "process_parameter, product_feature, equipment_feature or ambient_parameter.", nullable=False),
        _col("nominal_rate_hz", pa.float64(), "Sampling rate the sensor should deliver, Hz.", nullable=False),
        _col("lsl", pa.float64(), "Lower spec limit, in unit."),
        _col("usl", pa.float64(), "Upper spec limit, in unit."),
        _col("target", pa.float64(), "Nominal/target value, in unit."),
        _col("ctq", pa.bool_(), "Critical to quality: SPC and capability are computed for it.", nullable=False),
        _col("is_energy_meter", pa.bool_(), "Cumulative kWh counter of its station.", nullable=False),
        _col("protocol", pa.string(), "How the plant exposes it: opcua, modbus, mqtt, manual.", nullable=False),
    ]),
    partition_cols=(),
    date_from=None,
    sort_key=("sensor_id",),
)

#: The live score's source name in file names and checkpoints: the scorer reads ``plant.events.v1``
#: (whose own name belongs to the stream worker's files and checkpoints) and lands what it scored of
#: records first..last of a partition as ``plant.events.v1.scored+<p>+<first>+<last>.parquet``.
SCORED_EVENTS = "plant.events.v1.scored"

CELL_RISK = TableSpec(
    name="cell_risk",
    grain="one cell that passed the quality gate (left electrolyte filling)",
    doc="The live score of each cell at the gate before formation: its probability of ending scrapped or "
        "graded C under the champion model, the drivers that raised it most, and the feature vector it was "
        "scored on (the same cell_features code as training). Written by `gigapulse score`.",
    schema=pa.schema([
        _col("cell_id", pa.string(), "Serial of the cell.", nullable=False),
        _col("site", pa.string(), "Site.", nullable=False),
        _col("line", pa.string(), "Cell line.", nullable=False),
        _col("gate_ts", TS, "When the cell left filling (its leave event), UTC.", nullable=False),
        _col("score", pa.float64(), "Probability (0-1) that the cell ends scrapped or graded C; null when no "
             "model was champion."),
        _col("model_version", pa.string(), "Registry version of the model that scored it; null without a "
             "champion."),
        _col("drivers", pa.list_(pa.struct([pa.field("feature", pa.string()), pa.field("value", pa.float64()),
                                            pa.field("effect", pa.float64())])),
             "Up to three features that raised this cell's score most: its value, and how much lower the score "
             "is with the feature at its training median (effect, probability points 0-1)."),
        _col("complete", pa.bool_(), "The cell's history had landed when it was scored: its leave event and every "
             "reading in Kafka when the event was read; false when it was scored after GIGAPULSE_SCORE_MAX_WAIT_S "
             "without them.", nullable=False),
        _col("n_features", pa.int64(), "Number of entries in features.", nullable=False),
        _col("features", pa.map_(pa.string(), pa.float64()), "The feature vector scored, as cell_features names "
             "it.", nullable=False),
        _col("arrived_at", TS, "Kafka timestamp of the leave event: when the platform received it, UTC (the "
             "live score's latency runs from here)."),
        _col("scored_at", TS, "Wall-clock time the score was computed, UTC.", nullable=False),
        _col("src_partition", pa.int32(), "Partition of plant.events.v1 holding the leave event.", nullable=False),
        _col("src_offset", pa.int64(), "Offset of the leave event in src_partition.", nullable=False),
        _date("gate_ts"),
    ]),
    date_from="gate_ts",
    sort_key=("site", "line", "gate_ts", "cell_id"),
)

TABLES: dict[str, TableSpec] = {
    t.name: t
    for t in (READINGS, PRODUCTION_EVENTS, SENSORS, SENSOR_FEATURES_1M, SENSOR_FEATURES_1H, QUALITY_FEATURES,
              ENERGY_FEATURES,
              SENSOR_HEALTH, DEAD_LETTERS, CELL_RISK)
}
