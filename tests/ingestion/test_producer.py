"""The producer against the real broker: kafka-python writes in one process, aiokafka reads in another."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from schemas.contracts import DecodedFrame, Reading, decode_reading_message

pytestmark = pytest.mark.integration

PRODUCE = textwrap.dedent("""
    import sys
    from datetime import UTC, datetime, timedelta
    import numpy as np
    from ingestion.producer import PlantProducer
    from schemas.contracts import Reading, encode_frame_arrays
    bootstrap, topic = sys.argv[1], sys.argv[2]
    p = PlantProducer(bootstrap)
    t0 = datetime(2026, 1, 5, 6, tzinfo=UTC)
    for i in range(100):
        p.send_reading(Reading(sensor_id=f"s{i % 7}", ts=t0 + timedelta(milliseconds=i), value=float(i)), topic)
    for g in range(10):
        n = 500
        p.send_frame(f"gw{g}", encode_frame_arrays(f"gw{g}", ["a", "b"], np.arange(n, dtype=np.int32) % 2,
                     np.arange(n, dtype=np.int64) + g * n, np.linspace(0, 1, n)), n, topic)
    stats = p.close()
    print(stats.sent, stats.acked, stats.failed)
""")


async def _consume(bootstrap: str, topic: str, expected: int) -> list:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    out = []
    try:
        async with asyncio.timeout(60):
            while len(out) < expected:
                batch = await consumer.getmany(timeout_ms=1000)
                for records in batch.values():
                    out.extend(records)
    finally:
        await consumer.stop()
    return out


def test_kafka_python_produces_aiokafka_consumes(bootstrap, unique_topic):
    topic = unique_topic("xproc", partitions=3)
    res = subprocess.run([sys.executable, "-c", PRODUCE, bootstrap, topic], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["110", "110", "0"]
    records = asyncio.run(_consume(bootstrap, topic, 110))
    assert len(records) == 110
    decoded = [decode_reading_message(r.value) for r in records]
    singles = [d for d in decoded if isinstance(d, Reading)]
    frames = [d for d in decoded if isinstance(d, DecodedFrame)]
    assert len(singles) == 100 and len(frames) == 10
    assert sum(len(f) for f in frames) == 5000
    # keys keep each sensor's order within its partition
    for sid in {s.sensor_id for s in singles}:
        mine = [r for r in records if r.key == sid.encode()]
        assert len({r.partition for r in mine}) == 1
        vals = [decode_reading_message(r.value).value for r in sorted(mine, key=lambda r: r.offset)]
        assert vals == sorted(vals)
    assert all(np.all(np.diff(f.ts_ms) == 1) for f in frames)
    assert records[0].headers is not None
