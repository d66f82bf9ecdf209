"""The faust-streaming app behind ``gigapulse stream``.

Two agents, one per source topic, hand every message to the per-partition processors of
:mod:`transforms.partitions`; a timer checkpoints partitions whose flush interval has passed. The
agents read with manual acknowledgement (``stream.noack()``): a message is acknowledged, and so
becomes committable to Kafka, only after the checkpoint that made it durable in the lake. Workers
scale out through the consumer group: partitions are the unit of parallelism, and a revoked
partition's unflushed work is dropped (never written) so that its new owner, resuming from the
lake checkpoint, is the only writer.

``--drain`` snapshots the end offsets at start-up and stops the worker once every partition's
lake checkpoint has reached them (whichever worker of the group wrote it).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import faust
from faust.types import TP

from schemas import topics
from schemas.contracts import AssetEntry, DeadLetter, decode_asset, encode
from transforms.partitions import (
    DeadLettersPartition,
    EventsPartition,
    ReadingsPartition,
    committed_next_offset,
    feature_messages,
)
from transforms.settings import StreamSettings

log = logging.getLogger(__name__)

FEATURE_TOPICS = {
    "sensor_features_1m": (topics.FEATURES_SENSOR_1M, ("sensor_id",)),
    "sensor_features_1h": (topics.FEATURES_SENSOR_1H, ("sensor_id",)),
    "sensor_health": (topics.FEATURES_SENSOR_HEALTH, ("sensor_id",)),
    "energy_features": (topics.FEATURES_ENERGY, ("station",)),
    "quality_features": (topics.FEATURES_QUALITY, ("line", "stage")),
}


@dataclass
class WorkerStats:
    """Counters for logs and the end-of-drain summary."""

    messages: int = 0
    readings: int = 0
    checkpoints: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)


def load_assets(bootstrap: str, timeout_s: float = 10.0) -> dict[str, AssetEntry]:
    """Read the compacted asset topic to its end: the latest entry per sensor."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             client_id="gigapulse-assets")
    try:
        parts = consumer.partitions_for_topic(topics.ASSETS) or set()
        tps = [TopicPartition(topics.ASSETS, p) for p in parts]
        if not tps:
            return {}
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        assets: dict[str, AssetEntry] = {}
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    try:
                        entry = decode_asset(rec.value)
                    except Exception:  # noqa: BLE001 - a bad asset entry must not stop the worker
                        log.warning("skipping invalid asset entry at offset %d", rec.offset)
                        continue
                    assets[entry.sensor_id] = entry
        return assets
    finally:
        consumer.close()


def end_offsets(bootstrap: str, names: list[str]) -> dict[tuple[str, int], int]:
    """Current end offset of every partition of the given topics."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        tps = [TopicPartition(t, p) for t in names for p in sorted(consumer.partitions_for_topic(t) or ())]
        return {(tp.topic, tp.partition): off for tp, off in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def topic_key(letter: DeadLetter) -> bytes:
    """Dead letters are keyed by the topic they came from."""
    return (letter.source_topic or letter.stage).encode()


def create_app(bootstrap: str, lake_root: Path, settings: StreamSettings, assets: dict[str, AssetEntry],
               drain: bool = False, readings_topic: str = topics.READINGS,
               events_topic: str = topics.EVENTS, dlq_topic: str = topics.DLQ) -> faust.App:
    """Build the Faust app; nothing connects until a worker runs it."""
    app = faust.App(
        settings.group_id,
        broker=f"kafka://{bootstrap.split(',')[0]}" if "," not in bootstrap else
        ";".join(f"kafka://{b}" for b in bootstrap.split(",")),
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        store="memory://",
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=10_000,
        broker_commit_interval=1.0,
        producer_max_request_size=4_194_304,
        consumer_max_fetch_size=8 * 1024 * 1024,
        stream_buffer_maxsize=16_384,
        broker_max_poll_records=2_000,
    )
    readings = app.topic(readings_topic, value_serializer="raw", key_serializer="raw")
    events = app.topic(events_topic, value_serializer="raw", key_serializer="raw")
    feature_topics = {name: app.topic(t, value_serializer="raw", key_serializer="raw")
                      for name, (t, _) in FEATURE_TOPICS.items()}
    dlq = app.topic(dlq_topic, value_serializer="raw", key_serializer="raw")
    stats = WorkerStats()
    parts: dict[tuple[str, int], ReadingsPartition | EventsPartition] = {}
    unacked: dict[tuple[str, int], list] = {}
    streams: dict[str, faust.Stream] = {}
    targets: dict[tuple[str, int], int] = {}
    if drain:
        # Snapshot the end offsets before consuming: the drain processes what is there now.
        targets.update(end_offsets(bootstrap, [readings_topic, events_topic, dlq_topic]))
        log.info("draining to the end offsets of %d partitions", len(targets))
    refreshed = [0.0]
    inflight = [0]
    app.gigapulse_stats = stats  # for the CLI summary

    def assigned(topic: str, partition: int) -> bool:
        try:
            return TP(topic, partition) in app.consumer.assignment()
        except Exception:  # noqa: BLE001 - before the consumer exists, nothing is assigned
            return False

    def partition_for(topic: str, partition: int):
        key = (topic, partition)
        p = parts.get(key)
        if p is None:
            if topic == readings_topic:
                p = ReadingsPartition(topic, partition, lake_root, settings, assets, refresh_assets)
            elif topic == dlq_topic:
                p = DeadLettersPartition(topic, partition, lake_root, settings)
            else:
                p = EventsPartition(topic, partition, lake_root, settings)
            parts[key] = p
            unacked[key] = []
            log.info("%s[%d]: resuming at offset %d", topic, partition, p.next_offset)
        return p

    async def send_dead_letters(letters: list[DeadLetter]) -> None:
        """Sent before the acks: a crash here repeats a letter (at-least-once), never loses it."""
        for letter in letters:
            fut = await dlq.send(key=topic_key(letter), value=encode(letter))
            if drain:
                meta = await fut  # the drain also waits until this letter is landed in the lake
                k = (dlq_topic, meta.partition)
                targets[k] = max(targets.get(k, 0), meta.offset + 1)

    async def checkpoint(key: tuple[str, int], final: bool = False) -> None:
        p = parts[key]
        result = p.checkpoint(final=final)
        pending = unacked[key]
        unacked[key] = []
        if result is None:
            return
        stats.checkpoints += 1
        inflight[0] += 1  # the drain must not finish while letters are on their way to the DLQ
        try:
            await send_dead_letters(result.dead_letters)
        finally:
            inflight[0] -= 1
        for name, n in result.rows.items():
            stats.rows[name] = stats.rows.get(name, 0) + n
        if settings.publish_features:
            for name, table in result.features.items():
                topic, key_cols = FEATURE_TOPICS[name]
                for k, v in feature_messages(table, key_cols):
                    await feature_topics[name].send(key=k, value=v)
        stream = streams[key[0]]
        for event in pending:
            await stream.ack(event)

    def refresh_assets() -> None:
        """Re-read the asset topic when an unknown sensor shows up, at most every 5 s."""
        if time.monotonic() - refreshed[0] > 5.0:
            refreshed[0] = time.monotonic()
            assets.update(load_assets(bootstrap))

    async def consume(stream, topic: str) -> None:
        streams[topic] = stream
        async for event in stream.events():
            msg = event.message
            key = (msg.topic, msg.partition)
            if not assigned(*key):
                continue  # revoked while buffered: the new owner redoes it from the checkpoint
            p = partition_for(*key)
            if not p.accepts(msg.offset):
                await stream.ack(event)
                continue
            p.add(msg.offset, int(msg.timestamp * 1000), msg.value)
            unacked[key].append(event)
            stats.messages += 1
            final = drain and msg.offset + 1 >= targets.get(key, 0)
            if final or p.buffered_rows >= settings.flush_rows:
                await checkpoint(key, final=final)

    @app.agent(readings, name="compute_reading_features")
    async def compute_reading_features(stream):
        """Decode, validate and enrich readings; window features, SPC, health and energy to the lake."""
        await consume(stream.noack(), readings_topic)

    @app.agent(events, name="compute_quality_features")
    async def compute_quality_features(stream):
        """Decode production events; quality per line and stage to the lake."""
        await consume(stream.noack(), events_topic)

    @app.agent(dlq, name="land_dead_letters")
    async def land_dead_letters(stream):
        """Land every dead letter (edge, replay and stream rejects) in the lake's dead_letters table."""
        await consume(stream.noack(), dlq_topic)

    @app.timer(0.2)
    async def flush_due_partitions():
        """Checkpoint partitions whose flush interval has passed (bounds freshness)."""
        for key, p in list(parts.items()):
            if p.due():
                await checkpoint(key)
        if drain and targets and _drained():
            log.info("drain complete: every partition's checkpoint reached its end offset")
            os.kill(os.getpid(), signal.SIGTERM)

    def _drained() -> bool:
        return not inflight[0] and all(committed_next_offset(lake_root, t, part) >= end for (t, part), end in targets.items())

    @app.on_partitions_revoked.connect
    async def on_revoked(app, revoked, **kwargs):  # noqa: ARG001 - signal signature
        for tp in revoked:
            key = (tp.topic, tp.partition)
            if parts.pop(key, None) is not None:
                unacked.pop(key, None)
                log.info("%s[%d]: revoked; unflushed work dropped for the new owner", *key)

    return app


def run_worker(app: faust.App, loglevel: str = "warn") -> None:
    """Run a Faust worker in this process until SIGTERM/SIGINT (or the end of a drain)."""
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
