"""The DuckDB catalog: views over the lake, empty-table handling, read-only queries, docs."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ingestion.simulator import PlantSimulator
from schemas.asset_model import load_plant
from schemas.contracts import AssetEntry, ProductionEvent, SignalClass, Stage, encode
from schemas.tables import TABLES, TableSpec
from transforms.lake import LakeWriter
from transforms.partitions import EventsPartition
from transforms.settings import StreamSettings
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
               pa.bool_(): False, pa.binary(): b"x", pa.timestamp("ms", tz="UTC"): T0,
               pa.map_(pa.string(), pa.float64()): [("x", 1.0)]}
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


def test_every_documented_example_runs(lake, tmp_path):
    db = tmp_path / "gigapulse.duckdb"
    build_catalog(lake, db)
    for name, doc in TABLE_DOCS.items():
        cols, _ = query(db, doc["example"].rstrip().rstrip(";"))
        assert cols, name


# --------------------------------------------------------------------------- duplicate event ids

def _land_events(lake: Path, events: list[ProductionEvent]) -> list[tuple[int, int, ProductionEvent]]:
    """Land events as the stream does, keyed by line: L1 in partition 0, the rest in 1, offsets in order.

    Returns (partition, offset, event) of every record, what a brute-force check needs.
    """
    settings = StreamSettings()
    parts = [EventsPartition("plant.events.v1", p, lake, settings) for p in (0, 1)]
    ingest_ms = int(max(e.ts for e in events).timestamp() * 1000)
    landed = []
    for ev in events:
        p = parts[0 if ev.line == "L1" else 1]
        off = p.next_offset
        p.add(off, ingest_ms, encode(ev))
        landed.append((p.partition, off, ev))
    for p in parts:
        p.checkpoint(final=True)
    return landed


def test_duplicate_events_finds_exactly_the_repeats_of_a_lake_with_a_repeated_run(lake, tmp_path):
    """Three runs into one lake: A, a restart B with a later start, and A again (same seed and start),
    plus one event of B re-sent with another time: the view lists A's ids as identical repeats and
    B's one id as a conflict, and nothing else."""
    plant = load_plant("legacy")
    t0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)

    def run(start: datetime) -> list[ProductionEvent]:
        return [e for tick in PlantSimulator(plant, seed=7, start=start).run(150) for e in tick.events]

    a, b = run(t0), run(t0 + timedelta(seconds=75))
    forged = b[10].model_copy(update={"ts": b[10].ts + timedelta(seconds=3)})
    landed = _land_events(lake, a + b + run(t0) + [forged])
    db = tmp_path / "gigapulse.duckdb"
    build_catalog(lake, db)

    expected = {}
    by_id: dict[str, list[tuple[int, int, ProductionEvent]]] = {}
    for rec in landed:
        by_id.setdefault(rec[2].event_id, []).append(rec)
    for event_id, recs in by_id.items():
        if len(recs) > 1:
            kept = min(recs, key=lambda r: (r[0], r[1]))
            expected[event_id] = (kept[2].unit_id, len(recs), len({encode(r[2]) for r in recs}),
                                  min(r[2].ts for r in recs), max(r[2].ts for r in recs), kept[0], kept[1])
    cols, rows = query(db, "SELECT * FROM duplicate_events")
    assert cols == ["event_id", "unit_id", "copies", "payloads", "first_ts", "last_ts", "kept_partition",
                    "kept_offset"]
    assert {r[0]: tuple(r[1:]) for r in rows} == expected
    assert set(expected) == {e.event_id for e in a} | {forged.event_id}
    assert [k for k, v in expected.items() if v[2] > 1] == [forged.event_id]

    # The documented way to read events deduplicated keeps one row per id: the first to arrive.
    _, kept = query(db, "SELECT event_id, src_partition, src_offset FROM production_events QUALIFY row_number() "
                        "OVER (PARTITION BY event_id ORDER BY src_partition, src_offset) = 1")
    assert len(kept) == len(by_id) == len(a) + len(b)
    assert {r[0]: r[1:] for r in kept if r[0] in expected} == {k: v[5:] for k, v in expected.items()}
    assert sorted(query(db, TABLE_DOCS["duplicate_events"]["example"].rstrip(";"))[1]) == [
        (False, len(a), len(a)), (True, 1, 1)]


def test_duplicate_events_compares_every_contract_field(lake, tmp_path):
    """Copies that differ in any one contract field are different payloads; where they landed is not."""
    spec = TABLES["production_events"]
    base = {f.name: v for f, v in zip(spec.file_schema, one_row(spec).to_pylist()[0].values(), strict=True)}
    changed = {pa.string(): "y", pa.float64(): 2.0, pa.int8(): 2, pa.timestamp("ms", tz="UTC"): T0.replace(hour=11),
               pa.list_(pa.string()): ["p"]}
    fields = [f for f in ProductionEvent.model_fields if f != "event_id"]
    rows = [dict(base)] + [{**base, f: changed[spec.schema.field(f).type]} for f in fields]
    rows.append({**base, "src_partition": 1, "late": True})  # the same event landed elsewhere, late
    table = pa.Table.from_pylist([{**r, "src_offset": i if r["src_partition"] == 0 else 0}
                                  for i, r in enumerate(rows)], schema=spec.file_schema)
    for part in (0, 1):
        sub = table.filter(pc.equal(table["src_partition"], part))
        LakeWriter.for_table(lake, spec).write("plant.events.v1", part, 0, sub.num_rows - 1, sub)
    db = tmp_path / "gigapulse.duckdb"
    build_catalog(lake, db)
    assert query(db, "SELECT copies, payloads, kept_partition, kept_offset FROM duplicate_events")[1] == [
        (len(fields) + 2, len(fields) + 1, 0, 0)]
