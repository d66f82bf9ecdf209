"""Helpers of the stream integration tests: catalog-shaped fresh topics, traffic, workers, lake counts.

Plain functions (fixtures live in ``conftest.py``), imported by the test modules that need them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from schemas.contracts import decode_reading_message, encode
from schemas.topics import TOPICS_BY_NAME

ROLES = {"readings": "plant.readings.v1", "events": "plant.events.v1", "dlq": "plant.dlq.v1",
         "assets": "plant.assets.v1"}


def fresh_topics(bootstrap: str, prefix: str, partitions: int = 2) -> dict[str, str]:
    """New topics for readings, events, dead letters and assets, configured as the catalog says."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    names: dict[str, str] = {}
    try:
        new = []
        for role, catalog in ROLES.items():
            names[role] = f"{prefix}.{role}.{uuid.uuid4().hex[:8]}"
            n = partitions if role in ("readings", "events") else 1
            new.append(NewTopic(names[role], n, 1, topic_configs=TOPICS_BY_NAME[catalog].config()))
        admin.create_topics(new, wait_for_metadata=True)
    finally:
        admin.close()
    return names


def produce(bootstrap: str, topic: str, payloads: list[bytes], key_of=lambda i: b"gw-%d" % (i % 7)) -> None:
    """Send and wait for every payload (acks=all)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        for i, payload in enumerate(payloads):
            producer.send(topic, value=payload, key=key_of(i))
        producer.flush(timeout=60)
    finally:
        producer.close()


def publish_assets(bootstrap: str, topic: str, plant) -> None:
    produce(bootstrap, topic, [encode(e) for e in plant.sensors], key_of=lambda i: plant.sensors[i].sensor_id.encode())


def readings_in(frames: list[bytes]) -> int:
    return sum(len(decode_reading_message(f)) for f in frames)


def stream_args(names: dict[str, str], *extra: str) -> list[str]:
    """The command line of a worker on these topics."""
    return [sys.executable, "-m", "gigapulse.cli", "stream", "--readings-topic", names["readings"],
            "--events-topic", names["events"], "--dlq-topic", names["dlq"], "--assets-topic", names["assets"],
            *extra]


def stream_env(bootstrap: str, data_dir: Path, group: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ, GIGAPULSE_BOOTSTRAP_SERVERS=bootstrap, GIGAPULSE_DATA_DIR=str(data_dir),
               GIGAPULSE_STREAM_GROUP_ID=group, GIGAPULSE_STREAM_PUBLISH_FEATURES="false")
    env.update(extra)
    return env


def drain(names: dict[str, str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(stream_args(names, "--drain"), capture_output=True, text=True, env=env, timeout=timeout)


def lake_readings(lake: Path) -> tuple[int, int]:
    """(rows, distinct (src_partition, src_offset, src_index)) of the lake's readings table."""
    files = str(lake / "readings" / "**" / "*.parquet")
    if not list((lake / "readings").rglob("*.parquet")):
        return 0, 0
    return duckdb.connect().execute(
        "SELECT count(*), count(DISTINCT (src_partition, src_offset, src_index)) "
        "FROM read_parquet(?, hive_partitioning = true)", [files]).fetchone()


@contextmanager
def small_filesystem(path: Path, size: str):
    """A tmpfs of ``size`` mounted at ``path`` for the duration (root only); skips where mounting is refused."""
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield path
    finally:
        for _ in range(50):
            if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)


def remount(path: Path, options: str) -> None:
    """Remount ``path`` with ``options``; retried while a writer still holds a file open."""
    for _ in range(100):
        res = subprocess.run(["mount", "-o", f"remount,{options}", str(path)], capture_output=True, text=True)
        if res.returncode == 0:
            return
        time.sleep(0.05)
    raise RuntimeError(f"remount {options} {path}: {res.stderr.strip()}")


def committed_group_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """Offsets the consumer group committed to Kafka for ``topic`` (partitions without one left out)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        got = {tp.partition: consumer.committed(tp) for tp in tps}
        return {p: off for p, off in got.items() if off is not None}
    finally:
        consumer.close()


def report(fault: str, produced: int, rows: int, distinct: int, recovery: str) -> None:
    """One line for docs/RELIABILITY.md (shown with ``pytest -s``): produced, landed, lost, duplicated."""
    print(f"\nRELIABILITY | {fault} | produced {produced:,} | landed {distinct:,} | lost {produced - distinct:,} | "
          f"duplicated {rows - distinct:,} | {recovery}")
