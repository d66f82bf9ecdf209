"""The DuckDB catalog: views over the lake, empty-table handling, read-only queries, docs."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from schemas.contracts import AssetEntry, SignalClass, Stage
from schemas.tables import TABLES, TableSpec
from transforms.lake import LakeWriter
from transforms.warehouse import (
    TABLE_DOCS,
    ReadOnlyQueryError,
    build_catalog,
    query,
    refresh_catalog,
    tables_markdown,
    write_sensors,
)

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
DOCS = Path(__file__).resolve().parents[3] / "docs" / "tables.md"


def one_row(spec: TableSpec) -> pa.Table:
    """A row with every required column set and every optional one null."""
    samples = {pa.string(): "x", pa.float64(): 1.0, pa.int8(): 0, pa.int32(): 0, pa.int64(): 1,
               pa.bool_(): False, pa.binary(): b"x", pa.timestamp("ms", tz="UTC"): T0}
    return pa.table({f.name: pa.array([None if f.nullable else samples[f.type]], f.type)
                     for f in spec.file_schema})


def sensor(sensor_id: str, unit: str = "um") -> AssetEntry:
    return AssetEntry(sensor_id=sensor_id, path=f"acme/ref/electrodes/l1/l1-coater/die/{sensor_id}",
                      enterprise="acme", site="ref", area="electrodes", line="l1", station="l1-coater",
                      equipment="die", stage=Stage.COATING, parameter="thickness", unit=unit,
                      signal_class=SignalClass.PRODUCT_FEATURE, nominal_rate_hz=10.0, lsl=80.0, usl=94.0,
                      ctq=True)


def write(root: Path, spec: TableSpec, table: pa.Table, topic: str = "plant.test.v1") -> None:
    LakeWriter.for_table(root, spec).write(topic, 0, 0, max(table.num_rows - 1, 0), table)


def count(db: Path, view: str) -> int:
    return query(db, f'SELECT count(*) FROM "{view}"')[1][0][0]


@pytest.fixture
def lake(tmp_path) -> Path:
    root = tmp_path / "lake"
    root.mkdir()
    return root


def test_empty_lake_gives_every_view_with_no_rows(lake, tmp_path):
    db = tmp_path / "gigapulse.duckdb"
    kinds = build_catalog(lake, db)
    # Date-partitioned tables read their schema file, so only the one-file table is a placeholder.
    assert {k for k, v in kinds.items() if v == "empty"} == {n for n, s in TABLES.items() if not s.partition_cols}
    for view in TABLE_DOCS:
        assert count(db, view) == 0


def test_views_count_the_rows_written(lake, tmp_path):
    ts = pa.array([T0] * 250, pa.timestamp("ms", tz="UTC"))
    readings = pa.table({"sensor_id": ["a"] * 250, "ts": ts, "value": [1.0] * 250,
                         "quality": pa.array([0] * 250, pa.int8()), "src_partition": pa.array([0] * 250, pa.int32()),
                         "src_offset": list(range(250)), "src_index": pa.array([0] * 250, pa.int32()),
                         "late": [False] * 250})
    w = LakeWriter.for_table(lake, TABLES["readings"])
    w.write("plant.readings.v1", 0, 0, 99, readings.slice(0, 100))
    w.write("plant.readings.v1", 0, 100, 249, readings.slice(100))
    write_sensors(lake, [sensor("ref.l1-coater.thickness_1"), sensor("ref.l1-coater.thickness_2")])
    db = tmp_path / "gigapulse.duckdb"
    kinds = build_catalog(lake, db)
    assert kinds["readings"] == kinds["sensors"] == "parquet"
    assert count(db, "readings") == 250
    assert count(db, "sensors") == 2
    assert query(db, "SELECT count(*) FROM readings WHERE date = ? AND src_offset >= ?",
                 [date(2024, 5, 1), 200])[1] == [(50,)]
    # Replaying the same records through a restarted writer adds nothing.
    write(lake, TABLES["readings"], readings.slice(0, 100), topic="plant.readings.v1")
    assert count(db, "readings") == 250


@pytest.mark.parametrize("name", sorted(TABLES))
def test_empty_and_parquet_views_have_the_same_columns_and_types(name, lake, tmp_path):
    spec = TABLES[name]
    db = tmp_path / "gigapulse.duckdb"
    build_catalog(lake, db)
    empty = query(db, f'DESCRIBE "{name}"')[1]
    if spec.partition_cols:
        write(lake, spec, one_row(spec))
    else:
        write_sensors(lake, [sensor("s1")])
    assert build_catalog(lake, db)[name] == "parquet"
    assert count(db, name) == 1
    assert [r[:2] for r in query(db, f'DESCRIBE "{name}"')[1]] == [r[:2] for r in empty]


def test_a_table_s_first_files_are_read_without_a_new_catalog(lake, tmp_path):
    db = tmp_path / "gigapulse.duckdb"
    build_catalog(lake, db)
    write(lake, TABLES["dead_letters"], one_row(TABLES["dead_letters"]))
    assert count(db, "dead_letters") == 1


def test_refresh_picks_up_the_sensors_table_s_first_file(lake, tmp_path):
    db = tmp_path / "gigapulse.duckdb"
    build_catalog(lake, db)
    write_sensors(lake, [sensor("s1")])
    assert count(db, "sensors") == 0  # still the placeholder
    assert refresh_catalog(db)["sensors"] == "parquet"
    assert count(db, "sensors") == 1


def test_a_lake_path_with_a_quote_is_escaped(tmp_path):
    lake = tmp_path / "o'brien's lake"
    write_sensors(lake, [sensor("s1")])
    db = tmp_path / "gigapulse.duckdb"
    build_catalog(lake, db)
    assert count(db, "sensors") == 1


def test_write_sensors_keeps_the_latest_entry_per_sensor(lake, tmp_path):
    write_sensors(lake, [sensor("b"), sensor("a", unit="mm"), sensor("a", unit="um")])
    db = tmp_path / "gigapulse.duckdb"
    build_catalog(lake, db)
    assert query(db, "SELECT sensor_id, unit, stage, signal_class FROM sensors")[1] == [
        ("a", "um", "coating", "product_feature"), ("b", "um", "coating", "product_feature")]


def test_energy_per_cell_and_scrap_reasons(lake, tmp_path):
    ts = pa.timestamp("ms", tz="UTC")
    windows = [T0, T0.replace(minute=1)]
    energy = pa.table({"window_start": pa.array(windows, ts), "window_end": pa.array(windows, ts),
                       "site": ["ref", "ref"], "line": ["l1", "l1"], "station": ["l1-coater", "l1-dryer"],
                       "kwh": [30.0, 10.0]})
    quality = pa.table({
        "window_start": pa.array(windows, ts), "window_end": pa.array(windows, ts), "site": ["ref", "ref"],
        "line": ["l1", "l1"], "stage": ["aging_eol", "coating"], "good": [8, 0], "scrapped": [2, 1],
        "scrap_by_reason": pa.array([[("ocv_drift", 2)], [("coating_defect", 1)]],
                                    pa.map_(pa.string(), pa.int64())),
    })
    write(lake, TABLES["energy_features"], energy)
    write(lake, TABLES["quality_features"], quality)
    db = tmp_path / "gigapulse.duckdb"
    build_catalog(lake, db)
    assert query(db, "SELECT line, kwh, good_cells, kwh_per_good_cell FROM energy_per_cell")[1] == [
        ("l1", 40.0, 8, 5.0)]
    assert sorted(query(db, "SELECT stage, reason, scrapped FROM scrap_reasons")[1]) == [
        ("aging_eol", "ocv_drift", 2), ("coating", "coating_defect", 1)]


@pytest.mark.parametrize("sql", ["INSERT INTO gigapulse_catalog VALUES ('a', 'b')",
                                 "CREATE VIEW x AS SELECT 1", "DROP VIEW readings",
                                 "COPY (SELECT 1) TO 'out.csv'", "SELECT 1; DROP VIEW readings"])
def test_query_is_read_only(sql, lake, tmp_path):
    db = tmp_path / "gigapulse.duckdb"
    build_catalog(lake, db)
    with pytest.raises(ReadOnlyQueryError, match="read-only|one statement"):
        query(db, sql)
    assert count(db, "readings") == 0


def test_query_returns_columns_and_binds_parameters(lake, tmp_path):
    db = tmp_path / "gigapulse.duckdb"
    build_catalog(lake, db)
    assert query(db, "SELECT ? AS a, $2 AS b", [1, "it's"]) == (["a", "b"], [(1, "it's")])


def test_every_view_is_documented_and_the_docs_are_current(lake, tmp_path):
    db = tmp_path / "gigapulse.duckdb"
    build_catalog(lake, db)
    views = {r[0] for r in query(db, "SELECT view_name FROM duckdb_views() WHERE NOT internal")[1]}
    assert views == set(TABLE_DOCS)
    assert DOCS.read_text() == tables_markdown(), "regenerate docs/tables.md from tables_markdown()"
