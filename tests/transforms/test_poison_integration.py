"""Poison records on every topic a worker reads, written by an ordinary Kafka client, on the real broker.

The defect this guards against: one record with a null value on ``plant.readings.v1`` stopped every
worker for good. Here each topic (readings, events, dead letters, assets) gets valid traffic and
records with null, empty, binary, huge and deeply nested values, odd keys and headers, and Kafka
timestamps of -1, 1970 and 2200; one ``gigapulse stream --drain`` must exit 0 with every valid
reading landed once and every bad record in ``dead_letters`` with its reason and source position.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import duckdb
import pytest
from kafka import KafkaProducer
from kafka.errors import InvalidTimestampError

from schemas.contracts import decode_reading_message, encode
from tests.transforms.support import drain, fresh_topics, report

pytestmark = pytest.mark.integration

YEAR_2200_MS = 7_258_118_400_000
HUGE = b'{"v":1,"type":"frame","gateway":"' + b"x" * 1_500_000 + b'"}'
#: (value, key, headers, Kafka timestamp ms, reason it is refused for)
POISON = [
    (None, b"gw", None, None, "empty"),
    (b"", None, None, -1, "empty"),
    (b"\x00\xff\x10binary", b"\xff\xfe", [("h", b"\x00" * 100)], 0, "not_json"),
    (HUGE, b"gw", None, None, "oversized"),
    (b"[" * 50_000 + b"]" * 50_000, b"", [("", b"")], None, "not_json"),
    (b'{"v":1,"sensor_id":"ref.L1-coat-c.web_speed","ts":"2200-01-01T00:00:00Z","value":60}', b"k", None,
     YEAR_2200_MS, "timestamp_out_of_range"),
    (b'"just a string"', None, None, 1, "not_object"),
]


def test_no_record_stops_the_worker(bootstrap, tmp_path, reference_plant, reference_traffic):
    frames, events = reference_traffic[0][:60], reference_traffic[1][:30]
    names = fresh_topics(bootstrap, "poison")
    def new_producer() -> KafkaProducer:
        return KafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 * 1024 * 1024, acks="all")

    producer = new_producer()
    sent: list[tuple[str, int, int, str]] = []  # (topic, partition, offset, expected reason)

    refused_by_broker: list[int] = []

    def send(topic, value, key=None, headers=None, ts=None, reason=None):
        nonlocal producer
        try:
            meta = producer.send(topic, value=value, key=key, headers=headers, timestamp_ms=ts).get(timeout=30)
        except InvalidTimestampError:  # the broker's log.message.timestamp.*.max.ms: no client gets it in
            refused_by_broker.append(ts)
            producer.close()  # its idempotent sequence is broken now: later sends would fail too
            producer = new_producer()
            return None
        if reason:
            sent.append((topic, meta.partition, meta.offset, reason))
        return meta

    # A sensor that exists, then is retired by a tombstone: its reading is refused as unknown.
    retired = reference_plant.sensors[0].model_copy(update={"sensor_id": "ref.retired.sensor"})
    for e in [*reference_plant.sensors, retired]:
        send(names["assets"], encode(e), e.sensor_id.encode())
    send(names["assets"], None, retired.sensor_id.encode())
    send(names["assets"], b"not an asset", b"x", reason="not_json")
    send(names["assets"], b'{"v":1,"sensor_id":"ref.L1-coat-c.web_speed"}', b"ref.L1-coat-c.web_speed",
         reason="missing_field")  # must not replace the valid entry: its readings still land
    send(names["assets"], None, b"", reason="empty")  # a tombstone with an empty key retires nothing

    landed_frames = []
    for i, frame in enumerate(frames):
        if send(names["readings"], frame, key=b"gw-%d" % (i % 5), ts=[None, -1, 0, YEAR_2200_MS][i % 4]):
            landed_frames.append(frame)
        if i % 10 == 3:
            value, key, headers, ts, reason = POISON[(i // 10) % len(POISON)]
            send(names["readings"], value, key, headers, ts, reason)
    for value, key, headers, ts, reason in POISON[:3]:
        send(names["events"], value, key, headers, ts, reason)
    for ev in events:
        send(names["events"], ev, key=b"ref/L1")
    send(names["readings"], encode_single(retired.sensor_id), key=b"r", reason="unknown_sensor")
    for value in (None, b"", b"junk", b'{"v":1,"reason":"nope"}'):  # broken letters on the dead-letter topic
        send(names["dlq"], value, key=b"x", reason="landed")
    producer.flush()
    producer.close()

    data = tmp_path / "data"
    env = dict(os.environ, GIGAPULSE_BOOTSTRAP_SERVERS=bootstrap, GIGAPULSE_DATA_DIR=str(data),
               GIGAPULSE_STREAM_GROUP_ID=f"g-poison-{uuid.uuid4().hex[:6]}",
               GIGAPULSE_STREAM_PUBLISH_FEATURES="false")
    res = drain(names, env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]

    con = _connect(data / "lake")
    assert set(refused_by_broker) <= {YEAR_2200_MS}  # -1 and 1970 get in, and are handled
    expected = sum(len(decode_reading_message(f)) for f in landed_frames)
    n, unique = con.execute("SELECT count(*), count(DISTINCT (src_partition, src_offset, src_index)) "
                            "FROM read_parquet(?, hive_partitioning = true)",
                            [str(data / "lake" / "readings" / "**" / "*.parquet")]).fetchone()
    assert n == unique == expected
    report(f"{len(sent)} poison records on the 4 topics a worker reads", expected, n, unique,
           "no stop: every bad record dead-lettered with its reason and position")
    letters = con.execute("SELECT source_topic, source_partition, source_offset, reason, stage "
                          "FROM read_parquet(?, hive_partitioning = true)",
                          [str(data / "lake" / "dead_letters" / "**" / "*.parquet")]).fetchall()
    by_position = {}
    for topic, partition, offset, reason, stage in letters:
        assert stage == "stream"
        by_position.setdefault((topic, partition, offset), []).append(reason)
    for topic, partition, offset, reason in sent:
        found = by_position.get((topic, partition, offset))
        assert found, f"{topic}[{partition}]@{offset} ({reason}) was neither landed nor dead-lettered"
        if topic == names["assets"]:
            assert reason in found, (topic, offset, found)  # reported once per worker start
        elif topic == names["dlq"]:
            assert len(found) == 1  # landed as it is, never sent back to its own topic
        else:
            assert found == [reason], (topic, offset, found)
    events_landed = con.execute("SELECT count(*) FROM read_parquet(?, hive_partitioning = true)",
                                [str(data / "lake" / "production_events" / "**" / "*.parquet")]).fetchone()[0]
    assert events_landed == len(events)


def encode_single(sensor_id: str) -> bytes:
    return b'{"v":1,"sensor_id":"%s","ts":"2026-03-02T06:00:01Z","value":1.0}' % sensor_id.encode()


def _connect(lake: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect()
