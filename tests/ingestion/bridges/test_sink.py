"""The bridge sink against the real broker: samples become frames the stream accepts, refusals dead letters."""

from __future__ import annotations

import math
import time

import pytest
from kafka import KafkaConsumer

from ingestion.bridges.settings import BridgeSettings
from ingestion.bridges.sink import BridgeSink
from schemas.asset_model import load_plant
from schemas.contracts import DecodedFrame, Reason, decode_dead_letter, decode_reading_message
from tests.conftest import free_port

pytestmark = pytest.mark.integration


def consume(bootstrap: str, topic: str, n: int, timeout: float = 30.0) -> list:
    """The first ``n`` records of a fresh topic (fewer if the timeout passes)."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None, consumer_timeout_ms=1000)
    out: list = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        out.extend(consumer)
    consumer.close()
    return out


@pytest.fixture
def legacy():
    return load_plant("legacy")


@pytest.fixture
def topics(unique_topic):
    return unique_topic("bridge-readings", 3), unique_topic("bridge-dlq")


@pytest.fixture
def sink(bootstrap, tmp_path, legacy, topics):
    settings = BridgeSettings(bootstrap_servers=bootstrap, buffer_dir=tmp_path / "buf", readings_topic=topics[0],
                              dlq_topic=topics[1], flush_interval_s=0.05, max_frame_readings=50)
    s = BridgeSink.open(settings, legacy, "test")
    yield s
    s.close(timeout=5)


def test_readings_become_frames_per_gateway_that_the_stream_decodes(sink, bootstrap, topics, legacy):
    sensors = [e for e in legacy.sensors if e.protocol == "modbus"][:40]
    t0 = 1_767_000_000_000
    sent = {}
    for k in range(3):
        for i, e in enumerate(sensors):
            value = i + k / 10
            sink.reading(e.sensor_id, t0 + k * 1000, value, quality=k % 2)
            sent[(e.sensor_id, t0 + k * 1000)] = (value, k % 2)
    stats = sink.close(timeout=20)
    assert stats.received == stats.sent == 120 and stats.buffered == 0 and stats.rejected == 0
    records = consume(bootstrap, topics[0], stats.frames_sent)
    got = {}
    for r in records:
        frame = decode_reading_message(r.value)
        assert isinstance(frame, DecodedFrame)
        assert r.key.decode() == frame.gateway
        for j in range(len(frame.idx)):
            sid = frame.sensors[frame.idx[j]]
            assert frame.gateway == f"{legacy.by_id[sid].site}.{legacy.by_id[sid].station}"
            got[(sid, int(frame.ts_ms[j]))] = (float(frame.value[j]), int(frame.quality[j]))
    assert got == sent


def test_unknown_sensor_and_bad_values_are_dead_letters(sink, bootstrap, topics, legacy):
    known = legacy.sensors[5].sensor_id
    sink.reading("leg.nowhere.nothing", 1_767_000_000_000, 1.0)
    sink.reading(known, 1_767_000_000_000, math.nan)
    sink.reject(Reason.BAD_PAYLOAD, "registers 0..1 of unit 3 are NaN", b"\x7f\xc0\x00\x00")
    sink.gap([known], 1_767_000_000_000, Reason.SOURCE_ERROR, "unit 3: timeout")
    stats = sink.close(timeout=20)
    assert stats.rejected == 3 and stats.gaps == 1 and stats.dead_letters_sent == 4
    letters = [decode_dead_letter(r.value) for r in consume(bootstrap, topics[1], 4)]
    assert [(d.reason, d.stage) for d in letters] == [(Reason.UNKNOWN_SENSOR, "bridge"), (Reason.NON_FINITE, "bridge"),
                                                      (Reason.BAD_PAYLOAD, "bridge"), (Reason.SOURCE_ERROR, "bridge")]
    assert letters[2].payload() == b"\x7f\xc0\x00\x00"
    assert known in letters[3].detail and "timeout" in letters[3].detail


def test_mark_bad_repeats_the_last_value_as_bad_and_skips_never_seen_sensors(sink, bootstrap, topics, legacy):
    a, b = [e.sensor_id for e in legacy.sensors if e.station == "L1-coat-c"][:2]
    sink.reading(a, 1_767_000_000_000, 7.5)
    sink.mark_bad([a, b], 1_767_000_001_000)
    stats = sink.close(timeout=20)
    assert stats.sent == 2 and stats.marked_bad == 1
    rows = []
    for r in consume(bootstrap, topics[0], stats.frames_sent):
        f = decode_reading_message(r.value)
        rows += [(f.sensors[f.idx[j]], int(f.ts_ms[j]), float(f.value[j]), int(f.quality[j])) for j in range(len(f.idx))]
    assert sorted(rows) == [(a, 1_767_000_000_000, 7.5, 0), (a, 1_767_000_001_000, 7.5, 2)]


def test_what_kafka_did_not_take_stays_in_the_buffer_for_the_next_start(tmp_path, legacy, bootstrap, topics):
    ids = [e.sensor_id for e in legacy.sensors][:30]
    common = dict(buffer_dir=tmp_path / "buf", readings_topic=topics[0], dlq_topic=topics[1], flush_interval_s=0.05)
    away = BridgeSink.open(BridgeSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", **common), legacy, "t")
    for k, sid in enumerate(ids):
        away.reading(sid, 1_767_000_000_000 + k, float(k))
    assert away.status()["buffer"]["records"] >= 0
    stats = away.close(timeout=1)
    assert stats.sent == 0 and stats.buffered == 30
    assert list((tmp_path / "buf").glob("*.seg"))
    back = BridgeSink.open(BridgeSettings(bootstrap_servers=bootstrap, **common), legacy, "t")
    assert back.stats.buffered == 30
    stats = back.close(timeout=20)
    assert stats.sent == 30 and stats.buffered == 0
    values = sorted(float(v) for r in consume(bootstrap, topics[0], stats.frames_sent)
                    for v in decode_reading_message(r.value).value)
    assert values == [float(k) for k in range(30)]


def test_status_document_answers_on_the_health_port(bootstrap, tmp_path, legacy, topics):
    import json
    import urllib.request

    port = free_port()
    settings = BridgeSettings(bootstrap_servers=bootstrap, buffer_dir=tmp_path / "buf", readings_topic=topics[0],
                              dlq_topic=topics[1], health_port=port)
    sink = BridgeSink.open(settings, legacy, "health")
    try:
        sink.reading(legacy.sensors[0].sensor_id, 1_767_000_000_000, 1.0)
        sink.flush()
        deadline = time.monotonic() + 20
        while True:
            try:
                doc = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2).read())
                if doc["stats"]["out"] == 1:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert doc["status"] == "forwarding" and doc["ready"] and doc["stats"]["in"] == 1
        from gigapulse.cli import main

        with pytest.raises(SystemExit) as exit_:
            main(["bridge", "health", "--port", str(port)])
        assert exit_.value.code == 0
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).status == 200
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200
    finally:
        sink.close(timeout=5)


def _away(tmp_path, legacy, **extra) -> BridgeSink:
    """A sink whose Kafka never answers (a free port nobody listens on): everything stays in its buffer."""
    settings = BridgeSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", buffer_dir=tmp_path / "buf",
                              flush_interval_s=0.02, max_frame_readings=100, **extra)
    return BridgeSink.open(settings, legacy, "away")


def test_block_policy_holds_the_source_back_when_the_buffer_is_full(tmp_path, legacy):
    import threading

    sink = _away(tmp_path, legacy, buffer_max_bytes=64 * 1024, full_policy="block")
    ids = [e.sensor_id for e in legacy.sensors]
    done = []

    def source():
        for k in range(100_000):
            sink.reading(ids[k % len(ids)], 1_767_000_000_000 + k, float(k))
        done.append(True)

    t = threading.Thread(target=source, daemon=True)
    t.start()
    t.join(5)
    assert not done, "the source was not held back"
    status = sink.status()
    assert status["status"] == "buffering" and not status["ready"]
    assert status["buffer"]["bytes"] <= 64 * 1024
    assert status["stats"]["in"] < 100_000 and status["stats"]["dropped"] == 0
    stats = sink.close(timeout=0.5)
    assert stats.dropped == 0 and stats.buffered == status["stats"]["buffered"] > 0


@pytest.mark.parametrize("policy", ["drop_oldest", "reject_new"])
def test_the_other_policies_keep_reading_and_count_what_they_lose(tmp_path, legacy, policy):
    sink = _away(tmp_path, legacy, buffer_max_bytes=64 * 1024, segment_bytes=8 * 1024, full_policy=policy)
    ids = [e.sensor_id for e in legacy.sensors]
    for k in range(30_000):
        sink.reading(ids[k % len(ids)], 1_767_000_000_000 + k, float(k))
    stats = sink.close(timeout=0.5)
    assert stats.received == 30_000
    assert stats.dropped > 0 and stats.dropped + stats.buffered == 30_000


def test_status_serves_the_protocol_counters_beside_the_sinks(tmp_path, legacy):
    sink = _away(tmp_path, legacy)
    try:
        assert "protocol" not in sink.status()
        sink.protocol_status = lambda: {"births": 3, "sequence_gaps": 1}
        doc = sink.status()
        assert doc["protocol"] == {"births": 3, "sequence_gaps": 1}
        assert set(doc) >= {"stats", "buffer", "ready"}
    finally:
        sink.close(timeout=0.5)
