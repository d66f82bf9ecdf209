"""Compaction, retention and collection: every answer exact before, during and after, and after a kill -9."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.tables import TABLES
from transforms.checkpoint import FORMAT_VERSION, CheckpointHeader, checkpoint_path, drop_uncommitted
from transforms.lake import LakeWriter
from transforms.warehouse import build_catalog
from transforms.warehouse.maintenance import FOLDED, compact, hot_files, lake_status, level_of, plan_merge
from transforms.warehouse.manifest import MaintenanceBusy, Manifest, load_manifest, maintenance_lock

TOPIC = "plant.readings.v1"
DAY0 = datetime(2026, 11, 28, 22, 0, tzinfo=UTC)
BATCH = 50


def set_checkpoint(lake: Path, partition: int, next_offset: int) -> None:
    """A checkpoint with only its header: all that compaction reads of it."""
    path = checkpoint_path(lake, TOPIC, partition)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = CheckpointHeader(FORMAT_VERSION, "readings", TOPIC, partition, next_offset)
    path.write_bytes(orjson.dumps(header) + b"\n{}\n")


def readings_batch(partition: int, first: int, n: int, start: datetime) -> pa.Table:
    ts = [start + timedelta(seconds=30 * i) for i in range(n)]
    return pa.table({
        "sensor_id": [f"s{(first + i) % 5}" for i in range(n)],
        "ts": pa.array(ts, pa.timestamp("ms", tz="UTC")),
        "value": [float(first + i) for i in range(n)],
        "quality": pa.array([0] * n, pa.int8()),
        "src_partition": pa.array([partition] * n, pa.int32()),
        "src_offset": list(range(first, first + n)),
        "src_index": pa.array([0] * n, pa.int32()),
        "late": [False] * n,
    })


def make_lake(lake: Path, batches: int = 12, partitions: int = 2) -> tuple[int, float]:
    """Hot files of ``batches`` batches per partition spanning two UTC dates; returns (rows, sum)."""
    writer = LakeWriter.for_table(lake, TABLES["readings"])
    rows, total = 0, 0.0
    for p in range(partitions):
        for b in range(batches):
            first = b * BATCH
            t = readings_batch(p, first, BATCH, DAY0 + timedelta(minutes=10 * b))
            writer.write(TOPIC, p, first, first + BATCH - 1, t)
            rows += t.num_rows
            total += sum(t["value"].to_pylist())
    return rows, total


def answer(db: Path) -> tuple[int, float]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        n, s = con.execute("SELECT count(*), coalesce(sum(value), 0) FROM readings").fetchone()
    finally:
        con.close()
    return n, s


@pytest.fixture
def lake(tmp_path) -> Path:
    root = tmp_path / "lake"
    root.mkdir()
    return root


def test_compaction_merges_committed_files_and_keeps_every_row(lake, tmp_path):
    db = tmp_path / "gigapulse.duckdb"
    truth = make_lake(lake)
    build_catalog(lake, db)
    assert answer(db) == truth
    set_checkpoint(lake, 0, 8 * BATCH)  # partition 0: 8 of 12 batches committed
    set_checkpoint(lake, 1, 12 * BATCH)
    report = compact(lake, db, grace_s=3600)
    assert report.generation == 1
    assert report.hot_files_merged > 0
    assert answer(db) == truth
    manifest = load_manifest(lake)
    assert manifest.watermarks["readings"] == {f"{TOPIC}+0": 8 * BATCH - 1, f"{TOPIC}+1": 12 * BATCH - 1}
    # One compacted file per date; the uncommitted batches of partition 0 stay hot.
    assert sorted(manifest.files["readings"]) == ["2026-11-28", "2026-11-29"]
    _, status = lake_status(lake)
    readings = next(s for s in status if s.table == "readings")
    assert readings.hot_files == 6  # 4 batches, two of them across midnight
    assert readings.compacted_files == 2
    # Merged hot files stay for running readers until the grace period is over.
    assert readings.covered_files == report.hot_files_merged


def test_compacted_readings_are_sorted_by_hour_then_sensor_then_time(lake, tmp_path):
    db = tmp_path / "gigapulse.duckdb"
    make_lake(lake)
    for p in (0, 1):
        set_checkpoint(lake, p, 12 * BATCH)
    compact(lake, db, grace_s=3600)
    hours = set()
    for rel in [r for segments in load_manifest(lake).files["readings"].values() for r in segments]:
        t = pq.read_table(lake / rel)
        keys = [(ts.replace(minute=0, second=0, microsecond=0), s, ts)
                for s, ts in zip(t["sensor_id"].to_pylist(), t["ts"].to_pylist(), strict=True)]
        assert keys == sorted(keys)
        hours |= {k[0] for k in keys}
        assert pq.ParquetFile(lake / rel).metadata.row_group(0).column(0).statistics.has_min_max
    assert len(hours) == 3  # 22:00, 23:00 and 00:00


def test_collection_after_grace_deletes_merged_files_and_answers_stay_exact(lake, tmp_path):
    """(fanout 2: the second step merges the first step's segments, which then await collection)"""
    db = tmp_path / "gigapulse.duckdb"
    truth = make_lake(lake)
    for p in (0, 1):
        set_checkpoint(lake, p, 6 * BATCH)
    clock = [datetime(2026, 11, 30, 12, 0, tzinfo=UTC)]
    compact(lake, db, grace_s=60, fanout=2, now=lambda: clock[0])
    first_files = set(load_manifest(lake).referenced())
    held = duckdb.connect(str(db), read_only=True)  # a notebook holding generation 1
    for p in (0, 1):
        set_checkpoint(lake, p, 12 * BATCH)
    clock[0] += timedelta(seconds=30)
    compact(lake, db, grace_s=60, fanout=2, now=lambda: clock[0])
    assert answer(db) == truth
    # Within the grace period the held connection still reads its own generation exactly.
    assert held.execute("SELECT count(*), sum(value) FROM readings").fetchone() == truth
    clock[0] += timedelta(seconds=61)
    report = compact(lake, db, grace_s=60, fanout=2, now=lambda: clock[0])
    assert report.files_deleted >= 2 * 12 + len(first_files)
    assert not any((lake / rel).exists() for rel in first_files)
    assert hot_files(lake, "readings") == []
    # Past the grace period the held connection fails loudly; it never answers from a partial lake.
    with pytest.raises(duckdb.IOException, match="schema.parquet"):
        held.execute("SELECT count(*), sum(value) FROM readings").fetchone()
    held.close()  # (in one process DuckDB shares the open file: close it to see the new catalog)
    assert answer(db) == truth


def test_stream_recovery_never_deletes_compacted_data(lake, tmp_path):
    db = tmp_path / "gigapulse.duckdb"
    truth = make_lake(lake)
    for p in (0, 1):
        set_checkpoint(lake, p, 12 * BATCH)
    compact(lake, db, grace_s=0)
    compact(lake, db, grace_s=0)  # collected: only compacted files left
    # A worker resuming from the checkpoint drops files at or after it: none of them.
    for p in (0, 1):
        assert drop_uncommitted(lake, TOPIC, p, 12 * BATCH) == 0
    assert answer(db) == truth
    # New batches after compaction are read beside the compacted files.
    writer = LakeWriter.for_table(lake, TABLES["readings"])
    extra = readings_batch(0, 12 * BATCH, BATCH, DAY0 + timedelta(hours=3))
    writer.write(TOPIC, 0, 12 * BATCH, 13 * BATCH - 1, extra)
    assert answer(db) == (truth[0] + BATCH, truth[1] + sum(extra["value"].to_pylist()))


def test_retention_expires_old_days_from_views_then_from_disk(lake, tmp_path):
    db = tmp_path / "gigapulse.duckdb"
    make_lake(lake)
    for p in (0, 1):
        set_checkpoint(lake, p, 12 * BATCH)
    clock = [datetime(2026, 11, 29, 12, 0, tzinfo=UTC)]
    compact(lake, db, grace_s=10, now=lambda: clock[0])
    con = duckdb.connect(str(db), read_only=True)
    on_29th = con.execute("SELECT count(*) FROM readings WHERE date = DATE '2026-11-29'").fetchone()[0]
    con.close()
    report = compact(lake, db, {"readings": 1}, grace_s=10, expire_only=True, now=lambda: clock[0])
    assert report.tables["readings"].dates_expired == ["2026-11-28"]
    assert answer(db)[0] == on_29th
    clock[0] += timedelta(seconds=11)
    compact(lake, db, {"readings": 1}, grace_s=10, now=lambda: clock[0])
    assert not (lake / "readings" / "compacted" / "date=2026-11-28").exists()
    assert not (lake / "readings" / "date=2026-11-28").exists()
    assert answer(db)[0] == on_29th


def test_one_maintenance_step_at_a_time(lake, tmp_path):
    with maintenance_lock(lake), pytest.raises(MaintenanceBusy):
        compact(lake, tmp_path / "gigapulse.duckdb")


# --------------------------------------------------------------------------- other processes

_COMPACTOR = """
import sys, time
from pathlib import Path
from tests.transforms.warehouse.test_maintenance import set_checkpoint, BATCH
from transforms.warehouse.maintenance import compact
lake, db, rounds, grace = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
start, total = int(sys.argv[5]), int(sys.argv[6])
for r in range(1, rounds + 1):
    for p in (0, 1):
        set_checkpoint(lake, p, min(total, start + r) * BATCH)
    compact(lake, db, grace_s=grace)
print("done", flush=True)
"""

_READER = """
import sys, time, duckdb
db, want_n, want_s, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
deadline, checked = time.monotonic() + seconds, 0
while time.monotonic() < deadline:
    con = duckdb.connect(db, read_only=True)
    n, s = con.execute("SELECT count(*), sum(value) FROM readings").fetchone()
    con.close()
    if (n, s) != (want_n, want_s):
        print(f"WRONG {n} {s}", flush=True)
        sys.exit(1)
    checked += 1
print(f"checked {checked}", flush=True)
"""


def _env() -> dict[str, str]:
    root = Path(__file__).resolve().parents[3]
    return {**os.environ, "PYTHONPATH": str(root)}


def test_readers_in_other_processes_always_get_the_exact_answer_during_compaction(lake, tmp_path):
    db = tmp_path / "gigapulse.duckdb"
    n, s = make_lake(lake, batches=12)
    build_catalog(lake, db)
    readers = [subprocess.Popen([sys.executable, "-c", _READER, str(db), str(n), repr(s), "12"],
                                stdout=subprocess.PIPE, text=True, env=_env()) for _ in range(2)]
    # Twelve steps, each merging one more batch per partition and collecting right after (grace 1 s).
    subprocess.run([sys.executable, "-c", _COMPACTOR, str(lake), str(db), "12", "1.0", "0", "12"], check=True, env=_env(),
                   timeout=120)
    results = [r.communicate(timeout=60)[0] for r in readers]
    assert all(r.returncode == 0 for r in readers), results
    assert all(int(out.split()[1]) > 5 for out in results), results
    assert answer(db) == (n, s)


def test_a_compactor_killed_at_any_point_leaves_the_lake_exact(lake, tmp_path):
    db = tmp_path / "gigapulse.duckdb"
    truth = make_lake(lake, batches=48)
    build_catalog(lake, db)
    rng = random.Random(7)
    kills = 0
    for attempt in range(8):
        # Each attempt commits further: 6 more batches per partition, one per step.
        proc = subprocess.Popen([sys.executable, "-c", _COMPACTOR, str(lake), str(db), "6", "0", str(6 * attempt), "48"],
                                stdout=subprocess.PIPE, text=True, env=_env())
        time.sleep(rng.uniform(0.6, 2.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        # What readers see right after the kill, through whatever catalog is published, is exact...
        assert answer(db) == truth, f"attempt {attempt}"
        # ...and so is what the next step makes of the leftovers.
        compact(lake, db, grace_s=0)
        assert answer(db) == truth, f"attempt {attempt}"
        assert not list(lake.rglob(".*.tmp"))
    assert kills >= 3


# --------------------------------------------------------------------------- segments

def test_plan_merge_counts_in_base_fanout():
    seg = [f"r-g{g:08d}-L{lvl}.parquet" for g, lvl in enumerate([0, 0, 0, 1, 1, 1, 2])]
    assert plan_merge([], 4) == ([], 0)
    assert plan_merge(seg[:2], 4) == ([], 0)  # a third L0 segment
    assert plan_merge(seg, 4) == (seg[:6], 2)  # 3 x L0 + new -> L1, 3 x L1 + that -> L2 beside the L2 there
    assert plan_merge(["old.parquet", *seg[:3]], 4) == (seg[:3], 1)  # a folded (format 1) file stays out
    with pytest.raises(ValueError, match="fanout"):
        plan_merge(seg, 1)


def _step(lake: Path, db: Path, partitions: int, committed: int, **kw) -> None:
    for p in range(partitions):
        set_checkpoint(lake, p, committed)
    compact(lake, db, grace_s=3600, **kw)


def test_a_busy_day_keeps_a_few_segments_and_every_row(lake, tmp_path):
    """8 steps of one day with fanout 2 (a binary counter): one L3 segment; a ninth adds one L0."""
    db = tmp_path / "gigapulse.duckdb"
    writer = LakeWriter.for_table(lake, TABLES["readings"])
    day = datetime(2026, 11, 29, 8, tzinfo=UTC)
    truth_n, truth_s, counts = 0, 0.0, []
    for b in range(9):
        t = readings_batch(0, b * BATCH, BATCH, day + timedelta(minutes=b))
        writer.write(TOPIC, 0, b * BATCH, (b + 1) * BATCH - 1, t)
        truth_n, truth_s = truth_n + t.num_rows, truth_s + sum(t["value"].to_pylist())
        _step(lake, db, 1, (b + 1) * BATCH, fanout=2)
        segments = load_manifest(lake).files["readings"]["2026-11-29"]
        counts.append(len(segments))
        assert answer(db) == (truth_n, truth_s)
    assert [level_of(r) for r in segments] == [3, 0]
    assert counts == [1, 1, 2, 1, 2, 2, 3, 1, 2]  # the bits of the step count
    _, status = lake_status(lake)
    assert next(s for s in status if s.table == "readings").files_per_date_max == 2


def test_dates_older_than_fold_after_days_become_one_file(lake, tmp_path):
    db = tmp_path / "gigapulse.duckdb"
    writer = LakeWriter.for_table(lake, TABLES["readings"])
    start = datetime(2026, 11, 26, 8, tzinfo=UTC)
    truth = (0, 0.0)
    for b in range(3):  # three steps on 11-26
        t = readings_batch(0, b * BATCH, BATCH, start + timedelta(minutes=b))
        writer.write(TOPIC, 0, b * BATCH, (b + 1) * BATCH - 1, t)
        truth = (truth[0] + t.num_rows, truth[1] + sum(t["value"].to_pylist()))
        _step(lake, db, 1, (b + 1) * BATCH)
    assert len(load_manifest(lake).files["readings"]["2026-11-26"]) == 3
    t = readings_batch(0, 3 * BATCH, BATCH, start + timedelta(days=1))  # 11-27: not yet two days newer
    writer.write(TOPIC, 0, 3 * BATCH, 4 * BATCH - 1, t)
    truth = (truth[0] + t.num_rows, truth[1] + sum(t["value"].to_pylist()))
    _step(lake, db, 1, 4 * BATCH)
    assert len(load_manifest(lake).files["readings"]["2026-11-26"]) == 3
    t = readings_batch(0, 4 * BATCH, BATCH, start + timedelta(days=2))  # 11-28 folds 11-26
    writer.write(TOPIC, 0, 4 * BATCH, 5 * BATCH - 1, t)
    truth = (truth[0] + t.num_rows, truth[1] + sum(t["value"].to_pylist()))
    _step(lake, db, 1, 5 * BATCH)
    files = load_manifest(lake).files["readings"]
    assert [level_of(r) for r in files["2026-11-26"]] == [FOLDED]
    assert len(files["2026-11-27"]) == 1 and len(files["2026-11-28"]) == 1
    assert answer(db) == truth
    report = compact(lake, db, grace_s=3600)  # nothing new: nothing rewritten
    assert report.rows_written == 0


def test_a_format_1_manifest_reads_as_one_folded_segment_per_date():
    doc = {"format": 1, "generation": 3, "committed_at": None, "watermarks": {}, "cutoffs": {}, "retired": {},
           "history": [], "files": {"readings": {"2026-11-29": "readings/compacted/date=2026-11-29/readings-g00000003.parquet"}}}
    m = Manifest.from_json(orjson.dumps(doc), "test")
    [rel] = m.files["readings"]["2026-11-29"]
    assert level_of(rel) == FOLDED and m.referenced() == {rel}
    assert orjson.loads(m.to_json())["format"] == 2


def test_files_younger_than_settle_s_stay_hot_and_answers_stay_exact(lake, tmp_path):
    """The newest seconds stay out of compacted files, so a query of them reads only hot files."""
    db = tmp_path / "gigapulse.duckdb"
    truth = make_lake(lake, batches=4)
    for p in (0, 1):
        set_checkpoint(lake, p, 4 * BATCH)
    old = time.time() - 60
    settled = [h.path for h in hot_files(lake, "readings") if h.range.first_offset < 2 * BATCH]
    for path in settled:
        os.utime(path, (old, old))
    report = compact(lake, db, grace_s=3600, settle_s=30)
    assert report.hot_files_merged == len(settled) > 0
    assert answer(db) == truth
    young = [h for h in hot_files(lake, "readings") if h.path not in settled]
    assert young and all(h.range.first_offset > load_manifest(lake).watermark("readings", h.source) for h in young)
