"""The exactly-once Parquet sink: names, atomic renames, deterministic rewrites, resumption."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.tables import READINGS, SENSOR_HEALTH
from transforms import lake
from transforms.lake import LakeOverlapError, LakeWriter, file_name, parse_file_name, should_flush

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


@pytest.mark.parametrize(("rows", "age", "due"), [(0, 1.0, False), (10, 1.0, False), (100, 0.0, True),
                                                  (10, 60.0, True), (0, 60.0, True)])
def test_should_flush(rows, age, due):
    assert should_flush(rows, age, max_rows=100, max_seconds=60.0) is due


def test_due_uses_row_and_age_limits(tmp_path):
    now = [0.0]
    w = writer(tmp_path, max_rows=5, max_seconds=10.0, clock=lambda: now[0])
    w.add(TOPIC, 0, 0, 1, readings(range(2)))
    w.add(TOPIC, 1, 0, 5, readings(range(6), partition=1))
    assert w.due() == [(TOPIC, 1)]
    now[0] = 10.0
    assert sorted(w.due()) == [(TOPIC, 0), (TOPIC, 1)]
    assert len(w.flush_due()) == 2 and w.due() == []


# ------------------------------------------------------------------ writing

def test_flush_writes_one_named_file_and_no_temporary_file(tmp_path):
    w = writer(tmp_path)
    assert w.add(TOPIC, 0, 0, 9, readings(range(10))) == 10
    [path] = w.flush(TOPIC, 0)
    assert path == tmp_path / "readings" / "date=2024-05-01" / file_name(TOPIC, 0, 0, 9)
    assert lake_files(tmp_path) == [path]
    assert count_in_duckdb(tmp_path) == (10, 10)
    assert w.flush(TOPIC, 0) == []  # nothing buffered any more


def test_files_are_zstd_compressed_and_hold_no_partition_column(tmp_path):
    w = writer(tmp_path)
    w.add(TOPIC, 0, 0, 9, readings(range(10)))
    [path] = w.flush(TOPIC, 0)
    meta = pq.ParquetFile(path).metadata
    assert {meta.row_group(0).column(i).compression for i in range(meta.num_columns)} == {"ZSTD"}
    assert "date" not in pq.read_schema(path).names


def test_rows_are_split_by_utc_date_under_one_name(tmp_path):
    # 23:59:59 and 00:00:01 UTC; given in Berlin time, which must not move them to another day.
    w = writer(tmp_path)
    w.add(TOPIC, 0, 0, 1, readings([0, 1], ts_ms=[T0 + DAY - 1000, T0 + DAY + 1000], tz="Europe/Berlin"))
    paths = w.flush(TOPIC, 0)
    assert [p.parent.name for p in paths] == ["date=2024-05-01", "date=2024-05-02"]
    assert {p.name for p in paths} == {file_name(TOPIC, 0, 0, 1)}
    con = duckdb.connect()
    got = con.execute("SELECT src_offset, date FROM read_parquet(?, hive_partitioning = true, "
                      "hive_types = {'date': DATE}) ORDER BY 1",
                      [f"{tmp_path.as_posix()}/readings/**/*.parquet"]).fetchall()
    assert got == [(0, date(2024, 5, 1)), (1, date(2024, 5, 2))]


def test_a_failed_rename_leaves_no_file_and_keeps_the_buffer(tmp_path, monkeypatch):
    w = writer(tmp_path)
    w.add(TOPIC, 0, 0, 9, readings(range(10)))

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(lake.os, "replace", crash)
    with pytest.raises(OSError):
        w.flush(TOPIC, 0)
    assert lake_files(tmp_path / "readings") == []
    monkeypatch.undo()
    assert [p.name for p in w.flush(TOPIC, 0)] == [file_name(TOPIC, 0, 0, 9)]


def test_a_temporary_file_left_by_a_crash_is_invisible_and_removed_on_recovery(tmp_path):
    day = tmp_path / "readings" / "date=2024-05-01"
    day.mkdir(parents=True)
    mine = day / lake.tmp_name(file_name(TOPIC, 0, 0, 9))
    theirs = day / lake.tmp_name(file_name(TOPIC, 1, 0, 9))  # another worker's partition, maybe in flight
    mine.write_bytes(b"half a parquet file")
    theirs.write_bytes(b"half a parquet file")
    w = writer(tmp_path)
    w.add(TOPIC, 0, 10, 19, readings(range(10, 20)))
    w.flush(TOPIC, 0)
    assert not mine.exists() and theirs.exists()
    assert count_in_duckdb(tmp_path) == (10, 10)  # the glob did not read the junk


def test_content_does_not_depend_on_buffering_order(tmp_path):
    a, b = writer(tmp_path / "a"), writer(tmp_path / "b")
    a.add(TOPIC, 0, 0, 9, readings(range(10)))
    b.add(TOPIC, 0, 0, 9, readings(reversed(range(10))))
    [pa_], [pb] = a.flush(TOPIC, 0), b.flush(TOPIC, 0)
    assert pa_.read_bytes() == pb.read_bytes()


def test_an_empty_add_still_counts_as_consumed(tmp_path):
    w = writer(tmp_path)
    w.add(TOPIC, 0, 0, 4, readings(range(5)))
    assert w.add(TOPIC, 0, 5, 9, readings([])) == 0
    [path] = w.flush(TOPIC, 0)
    assert path.name == file_name(TOPIC, 0, 0, 9)


def test_offsets_must_increase(tmp_path):
    w = writer(tmp_path)
    w.add(TOPIC, 0, 0, 9, readings(range(10)))
    with pytest.raises(ValueError, match="must increase"):
        w.add(TOPIC, 0, 5, 12, readings(range(5, 13)))


def test_rows_are_checked_against_the_schema(tmp_path):
    w = writer(tmp_path)
    with pytest.raises(ValueError, match="not in the schema"):
        w.add(TOPIC, 0, 0, 0, readings([0]).append_column("oops", pa.array([1])))
    with pytest.raises(ValueError, match="required column 'value'"):
        w.add(TOPIC, 0, 0, 0, readings([0]).drop_columns(["value"]))
    nulls = readings([0]).set_column(2, "value", pa.array([None], pa.float64()))
    with pytest.raises(ValueError, match="must not hold nulls"):
        w.add(TOPIC, 0, 0, 0, nulls)
    w.add(TOPIC, 0, 0, 0, readings([0]))
    [path] = w.flush(TOPIC, 0)
    assert pq.read_table(path).column("site").to_pylist() == [None]  # missing enrichment is null


# ------------------------------------------------------------------ resuming

def test_committed_offsets_come_from_file_names(tmp_path):
    w = writer(tmp_path)
    for partition, ranges in {0: [(0, 9), (10, 19)], 2: [(100, 149)]}.items():
        for first, last in ranges:
            w.add(TOPIC, partition, first, last, readings(range(first, last + 1), partition=partition))
            w.flush(TOPIC, partition)
    w.add("plant.other.v1", 1, 500, 500, readings([500], partition=1))
    w.flush("plant.other.v1", 1)
    (tmp_path / "readings" / "notes.txt").write_text("not a lake file")
    fresh = writer(tmp_path)
    assert fresh.committed_offsets(TOPIC) == {0: 19, 2: 149}
    assert fresh.committed_offsets("plant.other.v1") == {1: 500}
    assert fresh.committed_offsets("plant.none.v1") == {}


def test_a_file_written_by_another_tool_counts_as_committed(tmp_path):
    path = tmp_path / "readings" / "date=2024-05-01" / file_name(TOPIC, 0, 0, 99)
    path.parent.mkdir(parents=True)
    pq.write_table(pa.table({"x": [1]}), path)
    assert writer(tmp_path).committed_offsets(TOPIC) == {0: 99}


def test_replaying_what_the_lake_holds_writes_nothing_twice(tmp_path):
    w = writer(tmp_path)
    w.add(TOPIC, 0, 100, 199, readings(range(100, 200)))
    w.flush(TOPIC, 0)
    # Restart; the Kafka commit was lost, so the consumer replays from 100 with a bigger batch.
    again = writer(tmp_path)
    assert again.add(TOPIC, 0, 100, 199, readings(range(100, 200))) == 0
    assert again.add(TOPIC, 0, 150, 250, readings(range(150, 251))) == 51  # trimmed to 200..250
    [path] = again.flush(TOPIC, 0)
    assert path.name == file_name(TOPIC, 0, 200, 250)
    assert count_in_duckdb(tmp_path) == (151, 151)


def test_a_straddling_batch_without_offsets_is_refused(tmp_path):
    w = LakeWriter.for_table(tmp_path, SENSOR_HEALTH)
    row = pa.table({"sensor_id": ["s1"], "window_start": pa.array([T0], pa.timestamp("ms", tz="UTC")),
                    "window_end": pa.array([T0 + 60_000], pa.timestamp("ms", tz="UTC")), "observed": [60]})
    w.add(TOPIC, 0, 0, 99, row)
    w.flush(TOPIC, 0)
    again = LakeWriter.for_table(tmp_path, SENSOR_HEALTH)
    with pytest.raises(LakeOverlapError, match="seek to 100"):
        again.add(TOPIC, 0, 50, 120, row)


def test_a_flush_interrupted_between_dates_is_rolled_back_and_rewritten_identically(tmp_path):
    batch = readings([0, 1, 2, 3], ts_ms=[T0, T0 + 1, T0 + DAY, T0 + DAY + 1])
    w = writer(tmp_path)
    w.add(TOPIC, 0, 0, 3, batch)
    first_day, second_day = w.flush(TOPIC, 0)
    expected = {p: p.read_bytes() for p in (first_day, second_day)}
    os.remove(second_day)  # the crash: renamed the first day's file, never the second

    restarted = writer(tmp_path)
    assert restarted.committed_offsets(TOPIC) == {}  # the range is incomplete, so not committed
    assert restarted.recover(TOPIC, [0]) == {}
    assert not first_day.exists()  # its rows were never committed; the replay writes them again
    restarted.add(TOPIC, 0, 0, 3, batch)
    restarted.flush(TOPIC, 0)
    assert {p: p.read_bytes() for p in (first_day, second_day)} == expected
    assert count_in_duckdb(tmp_path) == (4, 4)


def test_an_interrupted_flush_after_committed_ones_resumes_after_the_last_complete(tmp_path):
    w = writer(tmp_path)
    w.add(TOPIC, 0, 0, 9, readings(range(10)))
    w.flush(TOPIC, 0)
    w.add(TOPIC, 0, 10, 11, readings([10, 11], ts_ms=[T0, T0 + DAY]))
    _, second_day = w.flush(TOPIC, 0)
    os.remove(second_day)
    restarted = writer(tmp_path)
    assert restarted.recover(TOPIC) == {0: 9}
    assert count_in_duckdb(tmp_path) == (10, 10)


def test_commit_offset_waits_for_buffered_records(tmp_path):
    w = writer(tmp_path)
    assert w.commit_offset(TOPIC, 0) is None
    w.add(TOPIC, 0, 0, 9, readings(range(10)))
    assert w.commit_offset(TOPIC, 0) == 0
    w.flush(TOPIC, 0)
    assert w.commit_offset(TOPIC, 0) == 10
    w.add(TOPIC, 0, 10, 19, readings([]))  # records that produced no rows
    w.flush(TOPIC, 0)
    assert w.commit_offset(TOPIC, 0) == 20
    assert writer(tmp_path).recover(TOPIC) == {0: 9}  # the lake alone says 10; replaying 10..19 is harmless


def test_discard_forgets_a_revoked_partition(tmp_path):
    w = writer(tmp_path)
    w.add(TOPIC, 0, 0, 9, readings(range(10)))
    w.discard(TOPIC, 0)
    assert w.buffered_rows(TOPIC, 0) == 0
    assert w.flush_all() == []
