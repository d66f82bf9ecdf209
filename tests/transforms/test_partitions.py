"""Partition processors without a broker: checkpoints, crash recovery, dead letters, lateness."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import orjson
import pyarrow.dataset as ds
import pytest

from ingestion.simulator import PlantSimulator
from schemas.asset_model import load_plant
from schemas.contracts import Reason, encode_frame_arrays
from transforms import checkpoint as C
from transforms import partitions as P
from transforms.settings import StreamSettings

TOPIC = "plant.readings.v1"


@pytest.fixture(scope="module")
def plant():
    return load_plant("reference")


@pytest.fixture(scope="module")
def messages(plant):
    """100 simulated seconds of the reference plant as (offset, payload) of one pseudo-partition."""
    sim = PlantSimulator(plant, seed=3, start=datetime(2026, 1, 5, 6, tzinfo=UTC))
    out = []
    for tick in sim.run(100):
        for fr in tick.frames:
            out.append(fr.encode())
    return list(enumerate(out))


def _settings(**kw) -> StreamSettings:
    return StreamSettings(microbatch_rows=kw.pop("microbatch_rows", 5000), **kw)


def _run(lake, plant, messages, settings, checkpoint_every: int, final: bool = True):
    p = P.ReadingsPartition(TOPIC, 0, lake, settings, plant.by_id)
    for i, (off, payload) in enumerate(messages):
        p.add(off, 0, payload)
        if (i + 1) % checkpoint_every == 0:
            p.checkpoint()
    p.checkpoint(final=final)
    return p


def _table(lake, name):
    path = lake / name
    if not path.exists():
        return None
    return ds.dataset(path, format="parquet", partitioning="hive").to_table()


def test_lake_is_independent_of_checkpoint_and_batch_sizes(tmp_path, plant, messages):
    a, b = tmp_path / "a", tmp_path / "b"
    _run(a, plant, messages, _settings(microbatch_rows=3000), checkpoint_every=7)
    _run(b, plant, messages, _settings(microbatch_rows=50_000), checkpoint_every=500)
    for name, key in (("readings", ["src_offset", "src_index"]), ("sensor_features_1m", ["sensor_id", "window_start"]),
                      ("sensor_health", ["sensor_id", "window_start"])):
        ta, tb = _table(a, name).sort_by([(k, "ascending") for k in key]), \
            _table(b, name).sort_by([(k, "ascending") for k in key])
        assert ta.num_rows == tb.num_rows > 0
        for col in ("count", "observed", "late", "value", "out_of_spec"):
            if col in ta.column_names:
                assert ta[col].to_pylist() == tb[col].to_pylist(), (name, col)


def test_crash_between_files_and_commit_point_repeats_without_duplicates(tmp_path, plant, messages, monkeypatch):
    lake = tmp_path / "lake"
    half = len(messages) // 2
    p = P.ReadingsPartition(TOPIC, 0, lake, _settings(), plant.by_id)
    for off, payload in messages[:half]:
        p.add(off, 0, payload)
    p.checkpoint()
    committed = p.next_offset
    for off, payload in messages[half:]:
        p.add(off, 0, payload)

    def crash(*_a, **_k):
        raise OSError("power cut")

    monkeypatch.setattr(C, "write_atomic", crash)
    with pytest.raises(OSError):
        p.checkpoint()  # files renamed, commit point never written
    monkeypatch.undo()
    assert _table(lake, "readings").num_rows > sum(1 for _ in messages[:half])  # the orphan files are there
    # restart: loads the checkpoint, drops the uncommitted files, replays the rest
    q = P.ReadingsPartition(TOPIC, 0, lake, _settings(), plant.by_id)
    assert q.next_offset == committed
    for off, payload in messages:  # a consumer may redeliver from before the checkpoint: skipped
        q.add(off, 0, payload)
    q.checkpoint(final=True)
    readings = _table(lake, "readings")
    pairs = list(zip(readings["src_offset"].to_pylist(), readings["src_index"].to_pylist(), strict=True))
    assert len(pairs) == len(set(pairs))
    ref = _run(tmp_path / "ref", plant, messages, _settings(), checkpoint_every=10)
    assert ref.next_offset == q.next_offset
    assert readings.num_rows == _table(tmp_path / "ref", "readings").num_rows


def test_pipelined_checkpoints_equal_inline_ones_and_commit_only_at_the_commit_point(tmp_path, plant, messages):
    """prepare() snapshots a batch; its files and commit point may be written later (as the app's
    writer thread does) while the partition takes the next messages, with the same lake as inline."""
    lake = tmp_path / "piped"
    p = P.ReadingsPartition(TOPIC, 0, lake, _settings(), plant.by_id)
    jobs = []
    for i, (off, payload) in enumerate(messages):
        p.add(off, 0, payload)
        if (i + 1) % 40 == 0:
            jobs.append(p.prepare())
    jobs.append(p.prepare(final=True))
    assert P.committed_next_offset(lake, TOPIC, 0) == 0  # nothing written yet
    first = jobs[0]
    first.write_files()
    assert _table(lake, "readings").num_rows > 0  # readable before the commit point ...
    assert P.committed_next_offset(lake, TOPIC, 0) == 0  # ... but not committed
    first.commit()
    assert P.committed_next_offset(lake, TOPIC, 0) == first.last_offset + 1
    for job in jobs[1:]:
        job.write()
    assert P.committed_next_offset(lake, TOPIC, 0) == len(messages)
    _run(tmp_path / "inline", plant, messages, _settings(), checkpoint_every=40)
    for name in ("readings", "sensor_features_1m", "sensor_health", "energy_features"):
        a, b = _table(lake, name), _table(tmp_path / "inline", name)
        assert a.num_rows == b.num_rows > 0, name
        assert sorted(a.to_pylist(), key=repr) == sorted(b.to_pylist(), key=repr), name


def test_a_failed_checkpoint_blocks_every_later_commit_of_its_partition(tmp_path, plant, messages, monkeypatch):
    lake = tmp_path / "lake"
    p = P.ReadingsPartition(TOPIC, 0, lake, _settings(), plant.by_id)
    for off, payload in messages[:30]:
        p.add(off, 0, payload)
    broken = p.prepare()
    for off, payload in messages[30:60]:
        p.add(off, 0, payload)
    later = p.prepare()

    def disk_full(*_a, **_k):
        raise OSError("no space left on device")

    monkeypatch.setattr(p.writers["readings"], "write", disk_full)
    with pytest.raises(OSError):
        broken.write_files()
    monkeypatch.undo()
    # the later batch would commit offset 60 although rows 0..29 never landed: refused
    with pytest.raises(P.CheckpointFailed, match="earlier checkpoint failed"):
        later.write()
    assert P.committed_next_offset(lake, TOPIC, 0) == 0
    # a restarted worker resumes from the last commit point and lands everything once
    q = P.ReadingsPartition(TOPIC, 0, lake, _settings(), plant.by_id)
    for off, payload in messages[:60]:
        q.add(off, 0, payload)
    q.checkpoint()
    readings = _table(lake, "readings")
    _run(tmp_path / "ref", plant, messages[:60], _settings(), checkpoint_every=1000, final=False)
    assert readings.num_rows == _table(tmp_path / "ref", "readings").num_rows > 0
    pairs = list(zip(readings["src_offset"].to_pylist(), readings["src_index"].to_pylist(), strict=True))
    assert len(pairs) == len(set(pairs)) and max(readings["src_offset"].to_pylist()) == 59


def test_bad_messages_become_dead_letters_and_never_raise(tmp_path, plant):
    p = P.ReadingsPartition(TOPIC, 2, tmp_path, _settings(), plant.by_id)
    sid = plant.sensors[0].sensor_id
    good = orjson.dumps({"v": 1, "sensor_id": sid, "ts": "2026-01-05T06:00:00Z", "value": 1.0})
    cases = {
        b"\xff\xfe": Reason.NOT_JSON,
        b'{"v":1,"sensor_id":"ghost","ts":"2026-01-05T06:00:00Z","value":1}': Reason.UNKNOWN_SENSOR,
        orjson.dumps({"v": 1, "sensor_id": sid, "ts": "2026-01-05T06:00:00Z", "value": 1.0,
                      "unit": "furlong"}): Reason.UNIT_MISMATCH,
        encode_frame_arrays("gw", [sid], np.zeros(2, np.int32), np.arange(2), np.array([1.0, 2.0]))[:-5]:
            Reason.NOT_JSON,
    }
    for off, payload in enumerate([good, *cases]):
        p.add(off, 0, payload)
    result = p.checkpoint()
    assert [d.reason for d in result.dead_letters] == list(cases.values())
    assert [d.source_offset for d in result.dead_letters] == [1, 2, 3, 4]
    assert all(d.payload() == raw for d, raw in zip(result.dead_letters, cases, strict=True))
    assert result.rows["readings"] == 1
    assert result.last_offset == 4 and p.next_offset == 5


def test_late_reading_is_kept_in_raw_and_left_out_of_windows(tmp_path, plant):
    sid = plant.sensors[0].sensor_id
    p = P.ReadingsPartition(TOPIC, 0, tmp_path, _settings(lateness_ms=5000), plant.by_id)
    t0 = int(datetime(2026, 1, 5, 6, tzinfo=UTC).timestamp() * 1000)

    def reading(ms, value):
        return orjson.dumps(
            {"v": 1, "sensor_id": sid, "ts": datetime.fromtimestamp(ms / 1000, UTC).isoformat(), "value": value})

    p.add(0, 0, reading(t0 + 1000, 1.0))
    p.add(1, 0, reading(t0 + 70_000, 2.0))  # watermark passes the end of the first minute
    p.add(2, 0, reading(t0 + 2000, 99.0))  # belongs to the closed first minute: late
    p.checkpoint(final=True)
    raw = _table(tmp_path, "readings").sort_by("src_offset")
    assert raw["late"].to_pylist() == [False, False, True]
    feats = _table(tmp_path, "sensor_features_1m").sort_by("window_start")
    assert feats["count"].to_pylist() == [1, 1] and feats["max"].to_pylist() == [1.0, 2.0]
    health = _table(tmp_path, "sensor_health")
    assert sum(health["late"].to_pylist()) == 1


def test_a_batch_marked_closing_closes_the_windows_whoever_checkpoints_it(tmp_path, plant, messages):
    """The drain's last message marks its partition closing; the flush timer's checkpoint may take that
    batch before the message's own final checkpoint runs, and must close the windows all the same."""
    marked = P.ReadingsPartition(TOPIC, 0, tmp_path / "marked", _settings(), plant.by_id)
    for off, payload in messages:
        marked.add(off, 0, payload)
    marked.closing = True
    marked.checkpoint()  # the timer's checkpoint: final=False
    assert marked.checkpoint(final=True) is None  # the message's own final checkpoint finds nothing left
    _run(tmp_path / "final", plant, messages, _settings(), checkpoint_every=len(messages) + 1, final=True)
    for name in ("sensor_features_1m", "sensor_features_1h", "sensor_health", "energy_features"):
        a, b = _table(tmp_path / "marked", name), _table(tmp_path / "final", name)
        assert a.num_rows == b.num_rows > 0, name


def test_a_partition_is_due_when_its_interval_passes_or_when_it_goes_quiet(tmp_path, plant, messages):
    """A burst lands once it is complete (quiet for flush_idle_ms), a steady stream every flush_seconds,
    and a trickle no more often than every flush_min_seconds."""
    s = _settings(flush_seconds=0.5, flush_idle_ms=50, flush_min_seconds=0.1)
    p = P.ReadingsPartition(TOPIC, 0, tmp_path, s, plant.by_id)
    assert not p.due()  # nothing taken
    p.add(messages[0][0], 0, messages[0][1])
    t0 = p.opened_at
    assert p.last_at == t0
    assert not p.due(t0 + 0.04)  # quiet for 40 ms, batch 40 ms old
    assert not p.due(t0 + 0.08)  # quiet long enough, but the batch is younger than flush_min_seconds
    assert p.due(t0 + 0.1)  # quiet for 100 ms at 100 ms: the burst is complete
    # A steady stream (a message every 20 ms) is never quiet: due at the interval only.
    p.last_at = t0 + 0.48
    assert not p.due(t0 + 0.49)
    assert p.due(t0 + 0.5)
    # Idle checkpoints off: the interval alone.
    off = P.ReadingsPartition(TOPIC, 0, tmp_path / "off", _settings(flush_seconds=0.5, flush_idle_ms=0), plant.by_id)
    off.add(messages[0][0], 0, messages[0][1])
    assert not off.due(off.opened_at + 0.4)
    assert off.due(off.opened_at + 0.5)
    off.checkpoint()
    assert not off.due(off.opened_at + 10)  # nothing taken since
