"""The lake table schemas: documented, complete against the contracts, laid out as the sink expects."""

from __future__ import annotations

import pyarrow as pa
import pytest

from schemas.contracts import AssetEntry, ProductionEvent
from schemas.tables import TABLES, TS, column_description

EXPECTED_COLUMNS = {
    "readings": ["sensor_id", "ts", "value", "quality", "site", "line", "station", "stage", "parameter", "unit",
                 "ingest_ts", "src_partition", "src_offset", "src_index", "late", "date"],
    "sensor_features_1m": ["sensor_id", "window_start", "window_end", "count", "mean", "std", "min", "max",
                           "last", "out_of_spec", "ewma", "ewma_ucl", "ewma_lcl", "ewma_alarm", "cusum_pos",
                           "cusum_neg", "cusum_alarm", "we_rule1", "we_rule2", "we_rule3", "we_rule4", "cp",
                           "cpk", "pp", "ppk", "site", "line", "station", "stage", "parameter", "unit", "date"],
    "sensor_features_1h": ["sensor_id", "window_start", "window_end", "count", "mean", "std", "min", "max",
                           "last", "out_of_spec", "site", "line", "station", "stage", "parameter", "unit", "date"],
    "quality_features": ["window_start", "window_end", "site", "line", "stage", "units_in", "units_out", "good",
                         "scrapped", "yield", "first_pass_yield", "grade_a", "grade_b", "grade_c",
                         "scrap_by_reason", "date"],
    "energy_features": ["window_start", "window_end", "site", "line", "station", "stage", "kwh",
                        "counter_resets", "gap_ms", "date"],
    "sensor_health": ["sensor_id", "window_start", "window_end", "observed", "expected", "rate_ratio",
                      "max_gap_ms", "stuck", "late", "date"],
    "dead_letters": ["reason", "detail", "stage", "source_topic", "source_partition", "source_offset", "ts",
                     "payload", "date"],
}


def test_catalog_holds_every_warehouse_table():
    assert set(TABLES) == {"readings", "production_events", "sensors", "sensor_features_1m", "sensor_features_1h",
                           "quality_features", "energy_features", "sensor_health", "dead_letters", "cell_risk"}


@pytest.mark.parametrize("name", sorted(EXPECTED_COLUMNS))
def test_column_names_are_the_agreed_ones(name):
    assert TABLES[name].schema.names == EXPECTED_COLUMNS[name]


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_table_states_its_grain_and_describes_every_column(name):
    spec = TABLES[name]
    assert spec.grain and spec.doc
    assert spec.schema.metadata[b"grain"] == spec.grain.encode()
    undocumented = [f.name for f in spec.schema if not column_description(f)]
    assert undocumented == []


@pytest.mark.parametrize("name", sorted(TABLES))
def test_layout_columns_exist_and_partitions_are_not_in_the_file(name):
    spec = TABLES[name]
    for col in (*spec.partition_cols, *spec.sort_key):
        assert col in spec.schema.names
    assert not set(spec.partition_cols) & set(spec.file_schema.names)
    if "date" in spec.partition_cols:
        assert spec.schema.field("date").type == pa.date32()
        assert spec.schema.field(spec.date_from).type == TS


@pytest.mark.parametrize(("name", "contract"), [("production_events", ProductionEvent), ("sensors", AssetEntry)])
def test_tables_carry_every_contract_field(name, contract):
    assert set(contract.model_fields) <= set(TABLES[name].schema.names)


def test_timestamps_are_utc_milliseconds():
    for spec in TABLES.values():
        for f in spec.schema:
            if pa.types.is_timestamp(f.type):
                assert f.type == pa.timestamp("ms", tz="UTC"), (spec.name, f.name)


def test_quality_code_is_int8_and_scrap_reasons_a_map():
    assert TABLES["readings"].schema.field("quality").type == pa.int8()
    assert pa.types.is_map(TABLES["quality_features"].schema.field("scrap_by_reason").type)
