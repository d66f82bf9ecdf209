"""The Parquet sink: names, schema conformance, date split, atomic renames, deterministic rewrites.

Which files count (the commit point, resuming) is tested in test_checkpoint.py."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.tables import READINGS
from transforms import lake
from transforms.lake import LakeWriter, file_name, parse_file_name

TOPIC = "plant.readings.v1"
DAY = 86_400_000
T0 = 19_844 * DAY  # 2024-05-01T00:00:00Z


def readings(offsets, ts_ms=None, partition=0, tz="UTC") -> pa.Table:
    """One reading per offset, with required columns only (enrichment left to the writer's nulls)."""
    offsets = list(offsets)
    ts_ms = list(ts_ms) if ts_ms is not None else [T0 + 1000 * o for o in offsets]
    n = len(offsets)
    return pa.table({
        "sensor_id": [f"s{o % 3}" for o in offsets],
        "ts": pa.array(ts_ms, pa.timestamp("ms", tz=tz)),
        "value": [float(o) for o in offsets],
        "quality": pa.array([0] * n, pa.int8()),
        "src_partition": pa.array([partition] * n, pa.int32()),
        "src_offset": offsets,
        "src_index": pa.array([0] * n, pa.int32()),
        "late": [False] * n,
    })


def writer(root: Path, **kwargs) -> LakeWriter:
    return LakeWriter.for_table(root, READINGS, **kwargs)


def lake_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def count_in_duckdb(root: Path, table: str = "readings") -> tuple[int, int]:
    """(rows, distinct source positions) as an analyst's glob sees them."""
    glob = f"{root.as_posix()}/{table}/**/*.parquet"
    con = duckdb.connect()
    try:
        return con.execute(
            "SELECT count(*), count(DISTINCT (src_partition, src_offset, src_index)) "
            "FROM read_parquet(?, hive_partitioning = true)", [glob]
        ).fetchone()
    finally:
        con.close()


# ------------------------------------------------------------------ names and policy

def test_file_name_round_trips_and_sorts_like_offsets():
    name = file_name(TOPIC, 3, 1200, 1299)
    assert name == "plant.readings.v1+3+00000000000000001200+00000000000000001299.parquet"
    assert parse_file_name(name) == (TOPIC, 3, 1200, 1299)
    assert file_name(TOPIC, 0, 9, 9) < file_name(TOPIC, 0, 10, 10)


@pytest.mark.parametrize("name", ["sensors.parquet", ".x.parquet", "a+0+1+2.parquet",
                                  f".{file_name(TOPIC, 0, 0, 1)}.{'a' * 32}.tmp"])
def test_other_names_are_not_lake_files(name):
    assert parse_file_name(name) is None


def test_temporary_names_never_match_the_parquet_glob():
    assert not lake.tmp_name(file_name(TOPIC, 0, 0, 1)).endswith(".parquet")


# ------------------------------------------------------------------ writing

def test_write_gives_one_named_file_and_no_temporary_file(tmp_path):
    [path] = writer(tmp_path).write(TOPIC, 0, 0, 9, readings(range(10)))
    assert path == tmp_path / "readings" / "date=2024-05-01" / file_name(TOPIC, 0, 0, 9)
    assert lake_files(tmp_path) == [path]
    assert count_in_duckdb(tmp_path) == (10, 10)


def test_files_are_zstd_compressed_and_hold_no_partition_column(tmp_path):
    [path] = writer(tmp_path).write(TOPIC, 0, 0, 9, readings(range(10)))
    meta = pq.ParquetFile(path).metadata
    assert {meta.row_group(0).column(i).compression for i in range(meta.num_columns)} == {"ZSTD"}
    assert "date" not in pq.read_schema(path).names


def test_rows_are_split_by_utc_date_under_one_name(tmp_path):
    # 23:59:59 and 00:00:01 UTC; given in Berlin time, which must not move them to another day.
    batch = readings([0, 1], ts_ms=[T0 + DAY - 1000, T0 + DAY + 1000], tz="Europe/Berlin")
    paths = writer(tmp_path).write(TOPIC, 0, 0, 1, batch)
    assert [p.parent.name for p in paths] == ["date=2024-05-01", "date=2024-05-02"]
    assert {p.name for p in paths} == {file_name(TOPIC, 0, 0, 1)}
    con = duckdb.connect()
    got = con.execute("SELECT src_offset, date FROM read_parquet(?, hive_partitioning = true, "
                      "hive_types = {'date': DATE}) ORDER BY 1",
                      [f"{tmp_path.as_posix()}/readings/**/*.parquet"]).fetchall()
    assert got == [(0, date(2024, 5, 1)), (1, date(2024, 5, 2))]


def test_a_failed_rename_leaves_no_file_and_a_retry_writes_the_batch(tmp_path, monkeypatch):
    w = writer(tmp_path)

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(lake.os, "replace", crash)
    with pytest.raises(OSError):
        w.write(TOPIC, 0, 0, 9, readings(range(10)))
    assert lake_files(tmp_path / "readings") == []
    monkeypatch.undo()
    assert [p.name for p in w.write(TOPIC, 0, 0, 9, readings(range(10)))] == [file_name(TOPIC, 0, 0, 9)]


def test_a_date_directory_removed_by_the_collector_mid_write_is_recreated(tmp_path, monkeypatch):
    """The lake collector prunes empty date= directories while the stream writes (a CI run caught it)."""
    w = writer(tmp_path)
    real = lake.make_dirs_durable
    races = []

    def create_then_lose(path):
        real(path)
        if len(races) < 2:  # the collector wins the race twice in a row
            races.append(path)
            path.rmdir()

    monkeypatch.setattr(lake, "make_dirs_durable", create_then_lose)
    [written] = w.write(TOPIC, 0, 0, 9, readings(range(10)))
    assert len(races) == 2 and written.name == file_name(TOPIC, 0, 0, 9)
    assert count_in_duckdb(tmp_path) == (10, 10)


def test_a_directory_that_keeps_vanishing_is_an_error_not_a_loop(tmp_path, monkeypatch):
    real = lake.make_dirs_durable

    def always_lose(path):
        real(path)
        path.rmdir()

    monkeypatch.setattr(lake, "make_dirs_durable", always_lose)
    with pytest.raises(FileNotFoundError):
        writer(tmp_path).write(TOPIC, 0, 0, 9, readings(range(10)))


def test_content_does_not_depend_on_row_order_and_a_rewrite_gives_the_same_bytes(tmp_path):
    [pa_] = writer(tmp_path / "a").write(TOPIC, 0, 0, 9, readings(range(10)))
    [pb] = writer(tmp_path / "b").write(TOPIC, 0, 0, 9, readings(reversed(range(10))))
    assert pa_.read_bytes() == pb.read_bytes()
    first = pa_.read_bytes()
    assert writer(tmp_path / "a").write(TOPIC, 0, 0, 9, readings(range(10))) == [pa_]
    assert pa_.read_bytes() == first


def test_a_batch_without_rows_writes_no_file(tmp_path):
    assert writer(tmp_path).write(TOPIC, 0, 0, 4, readings([])) == []
    assert lake_files(tmp_path) == []


def test_bad_offset_ranges_are_refused(tmp_path):
    with pytest.raises(ValueError, match="bad offset range"):
        writer(tmp_path).write(TOPIC, 0, 9, 5, readings(range(5)))


def test_rows_are_checked_against_the_schema(tmp_path):
    w = writer(tmp_path)
    with pytest.raises(ValueError, match="not in the schema"):
        w.write(TOPIC, 0, 0, 0, readings([0]).append_column("oops", pa.array([1])))
    with pytest.raises(ValueError, match="required column 'value'"):
        w.write(TOPIC, 0, 0, 0, readings([0]).drop_columns(["value"]))
    nulls = readings([0]).set_column(2, "value", pa.array([None], pa.float64()))
    with pytest.raises(ValueError, match="must not hold nulls"):
        w.write(TOPIC, 0, 0, 0, nulls)
    [path] = w.write(TOPIC, 0, 0, 0, readings([0]))
    assert pq.read_table(path).column("site").to_pylist() == [None]  # missing enrichment is null
