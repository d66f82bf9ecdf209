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

import asyncio
import logging
import os
import re
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import faust
from aiokafka.errors import KafkaError, KafkaTimeoutError
from faust.tables import TableManager
from faust.types import TP

from ingestion.security import KafkaSecuritySettings, aiokafka_kwargs, faust_credentials, kafka_python_kwargs
from schemas import topics
from schemas.contracts import AssetEntry, DeadLetter, encode
from schemas.topics import key_partition
from transforms import health as worker_health
from transforms.assets import AssetSnapshot
from transforms.checkpoint import CheckpointError
from transforms.faust_transport import App as FaustApp
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
    """Counters for the periodic progress log and the end-of-run summary."""

    messages: int = 0
    checkpoints: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    log_every_s: float = 30.0
    #: Intake lag (now minus the Kafka timestamp) of the messages since the last progress line.
    lags: list[float] = field(default_factory=list)
    _logged_at: float = field(default_factory=time.monotonic)
    _logged_messages: int = 0
    _logged_rows: int = 0

    def note(self, kafka_ts_s: float) -> None:
        self.messages += 1
        if len(self.lags) < 100_000:
            self.lags.append(time.time() - kafka_ts_s)

    def maybe_log(self, in_flight: int) -> None:
        """One INFO line per interval: throughput, intake lag and the writer's queue, for operators."""
        now = time.monotonic()
        span = now - self._logged_at
        if span < self.log_every_s:
            return
        rows = self.rows.get("readings", 0)
        lags = sorted(self.lags)
        lag = (f"intake lag p50 {lags[len(lags) // 2]:.2f}s max {lags[-1]:.2f}s" if lags else "idle")
        log.info("%.0f messages/s, %.0f readings/s landed, %s, %d checkpoint(s) in flight",
                 (self.messages - self._logged_messages) / span, (rows - self._logged_rows) / span, lag, in_flight)
        self._logged_at, self._logged_messages, self._logged_rows = now, self.messages, rows
        self.lags = []


def load_assets(bootstrap: str, timeout_s: float = 10.0, topic: str = topics.ASSETS,
                security: KafkaSecuritySettings | None = None) -> AssetSnapshot:
    """Read the compacted asset topic to its end: the latest entry per sensor, retirements, refusals."""
    from kafka import KafkaConsumer, TopicPartition

    snapshot = AssetSnapshot(topic)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             client_id="gigapulse-assets", **kafka_python_kwargs(security))
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return snapshot
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    if snapshot.fold(rec.partition, rec.offset, rec.key, rec.value) is not None:
                        log.warning("%s[%d]@%d: asset record refused (%s); the model keeps its last valid "
                                    "entry", topic, rec.partition, rec.offset, snapshot.rejected[-1].detail)
        return snapshot
    finally:
        consumer.close()


def end_offsets(bootstrap: str, names: list[str],
                security: KafkaSecuritySettings | None = None) -> dict[tuple[str, int], int]:
    """Current end offset of every partition of the given topics."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             **kafka_python_kwargs(security))
    try:
        tps = [TopicPartition(t, p) for t in names for p in sorted(consumer.partitions_for_topic(t) or ())]
        return {(tp.topic, tp.partition): off for tp, off in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


class FeaturePublisher:
    """Feature rows to the features.*.v1 topics, one record batch per topic partition.

    A checkpoint emits thousands of feature rows at once (a closed minute of every sensor); sending
    them one ``send`` at a time costs tens of microseconds each on the event loop. Grouping them by
    partition (the default partitioner's choice for each key, so per-key order holds) into record
    batches costs a fraction of that. :meth:`publish` returns once the broker has every row
    (``acks=all``), so a checkpoint commits only after its features are out: at-least-once.
    """

    def __init__(self, bootstrap: str, security: KafkaSecuritySettings | None = None):
        self.bootstrap = bootstrap
        self.security = security
        self._producer = None
        self._starting = asyncio.Lock()
        self._partitions: dict[str, list[int]] = {}

    async def _started(self):
        async with self._starting:  # two checkpoints publishing at once must not each start a producer
            return await self._start_once()

    async def _start_once(self):
        if self._producer is None:
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap.split(","), acks="all",
                                        compression_type="zstd", max_batch_size=1_048_576, linger_ms=5,
                                        client_id="gigapulse-features", **aiokafka_kwargs(self.security))
            try:
                await producer.start()
            except BaseException:
                await producer.stop()  # the next delivery starts a fresh one
                raise
            self._producer = producer
        return self._producer

    async def publish(self, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
        if not messages:
            return
        producer = await self._started()
        parts = self._partitions.get(topic)
        if parts is None:
            parts = self._partitions[topic] = sorted(await producer.partitions_for(topic))
        by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
        for key, value in messages:
            by_partition.setdefault(key_partition(key, parts), []).append((key, value))
        deliveries = []
        for partition, rows in by_partition.items():
            batch = producer.create_batch()
            for key, value in rows:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    deliveries.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise ValueError(f"a feature row of {len(value):,} bytes exceeds the batch size")
            deliveries.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*deliveries)

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()


def topic_key(letter: DeadLetter) -> bytes:
    """Dead letters are keyed by the topic they came from."""
    return (letter.source_topic or letter.stage).encode()


def _highwater(app: faust.App, tp: tuple[str, int]) -> int | None:
    """The log-end offset the consumer last saw for ``tp`` (None before its first fetch)."""
    try:
        return app.consumer.highwater(TP(*tp))
    except Exception:  # noqa: BLE001 - a partition being revoked right now simply has no figure
        return None


class TablelessManager(TableManager):
    """Faust's table manager without its one-second wait for late table declarations.

    Faust's manager sleeps 1 s at start so that agents can still declare tables before the
    changelog topics are fixed. This app declares none (a partition's state lives in its lake
    checkpoint), so that second would only delay every start, and every restart after a crash.
    """

    async def on_start(self) -> None:
        if self:  # someone declared a table after all: keep Faust's behaviour
            await super().on_start()
            return
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class StreamWorker(faust.Worker):
    """Faust's worker, closing its loop as soon as the last task is done rather than after 1 s.

    mode's worker runs a fixed one-second sentinel before closing the event loop, so that the
    tasks it has just cancelled and the callbacks of the services' shutdown still get to run. Ours
    have usually finished by then (checkpoints settled, producers flushed and closed), so this
    sentinel waits for the remaining tasks and returns when there are none, still within the same
    second: a drain (the demo, the tests, a back-fill) and a restart end about a second sooner.
    """

    async def _sentinel_task(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.0
        me = asyncio.current_task()
        while loop.time() < deadline and any(t is not me for t in asyncio.all_tasks()):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0)  # one more turn for the callbacks of the last task to finish


def create_app(bootstrap: str, lake_root: Path, settings: StreamSettings, assets: dict[str, AssetEntry],
               drain: bool = False, readings_topic: str = topics.READINGS,
               events_topic: str = topics.EVENTS, dlq_topic: str = topics.DLQ,
               asset_rejects: list[DeadLetter] | None = None, assets_topic: str = topics.ASSETS,
               security: KafkaSecuritySettings | None = None) -> faust.App:
    """Build the Faust app; nothing connects until a worker runs it.

    ``security``: as whom every client of the worker connects (Faust's consumer and producer, the feature
    publisher, the asset and end-offset reads); default: this process's GIGAPULSE_KAFKA_* identity.

    ``asset_rejects`` are the asset topic's refused records found at start-up: the worker sends them
    to the dead-letter topic once it runs (see :mod:`transforms.assets`).
    """
    app = FaustApp(
        settings.group_id,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        broker=f"kafka://{bootstrap.split(',')[0]}" if "," not in bootstrap else
        ";".join(f"kafka://{b}" for b in bootstrap.split(",")),
        broker_credentials=faust_credentials(security),
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
        # Recovery after a crash: how soon a dead worker's partitions move on (docs/stream.md).
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        consumer_group_instance_id=settings.instance_id,
        # Faust would wait at shutdown and rebalance until every buffered message is acknowledged;
        # here a message unacknowledged is simply read again (the lake checkpoint says where to
        # resume), and after a failed checkpoint nothing is ever acknowledged again.
        stream_wait_empty=False,
        TableManager=TablelessManager,
    )
    readings = app.topic(readings_topic, value_serializer="raw", key_serializer="raw")
    events = app.topic(events_topic, value_serializer="raw", key_serializer="raw")
    dlq = app.topic(dlq_topic, value_serializer="raw", key_serializer="raw")
    stats = WorkerStats(log_every_s=settings.log_every_s)
    parts: dict[tuple[str, int], ReadingsPartition | EventsPartition | DeadLettersPartition] = {}
    unacked: dict[tuple[str, int], list] = {}
    streams: dict[str, faust.Stream] = {}
    targets: dict[tuple[str, int], int] = {}
    if drain:
        # Snapshot the end offsets before consuming: the drain processes what is there now.
        targets.update(end_offsets(bootstrap, [readings_topic, events_topic, dlq_topic], security))
        log.info("draining to the end offsets of %d partitions", len(targets))
    refreshed = [0.0]
    owned: set[tuple[str, int]] = set()  # this worker's assignment, kept by the rebalance signals
    # One writer thread: checkpoints are written in the order they were prepared, and pyarrow's
    # encoding, compression and fsyncs run there without the GIL while the loop decodes on.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gigapulse-lake")
    in_flight: dict[asyncio.Task, tuple[str, int]] = {}
    last_task: dict[tuple[str, int], asyncio.Task] = {}
    publisher = FeaturePublisher(bootstrap, security) if settings.publish_features else None
    app.gigapulse_stats = stats  # for the CLI summary
    app.gigapulse_error = None  # set when a checkpoint failed: the worker stops and exits non-zero
    health = app.gigapulse_health = worker_health.WorkerHealth(settings.group_id)

    def fail(exc: BaseException) -> None:
        """Stop the worker on a failed checkpoint: going on would only pile up work it cannot commit.

        Nothing is acknowledged after it, so no offset is committed past the last commit point; the
        supervisor (compose's restart policy) restarts the worker, which resumes from the lake.
        """
        if app.gigapulse_error is None:
            if isinstance(exc, OSError) and not isinstance(exc, LakeUnwritable | CheckpointError):
                exc = LakeUnwritable.of(lake_root, exc)
            app.gigapulse_error = exc
            # An OSError (disk full, read-only, permissions) is the environment: one line. Anything
            # else is a bug, and its traceback is what the report needs.
            log.error("checkpoint failed, stopping the worker (a restart resumes from the lake): %s", exc,
                      exc_info=None if isinstance(exc, OSError) else exc)
            os.kill(os.getpid(), signal.SIGTERM)

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
        """Sent and delivered before the commit point: a crash repeats a letter, never loses it."""
        for letter in letters:
            fut = await dlq.send(key=topic_key(letter), value=encode(letter))
            meta = await fut
            if drain:  # the drain also waits until this letter is landed in the lake
                k = (dlq_topic, meta.partition)
                targets[k] = max(targets.get(k, 0), meta.offset + 1)

    async def checkpoint(key: tuple[str, int], final: bool = False) -> None:
        """Close the partition's batch now and have it written, published and acknowledged in the background."""
        while len(in_flight) >= settings.checkpoints_in_flight:
            # Backpressure: the loop prepares batches no faster than the writer thread lands them.
            await asyncio.wait(list(in_flight), return_when=asyncio.FIRST_COMPLETED)
        # No await from here until the task is registered in in_flight: a rebalance that revokes
        # the partition either happened before (nothing is written: the new owner redoes the batch)
        # or happens after, and then waits for this task in settle() before giving the partition up.
        p = parts.get(key)
        if p is None or key not in owned:
            return
        job = p.prepare(final=final)
        events, unacked[key] = unacked[key], []
        if job is None:
            return
        task = asyncio.ensure_future(land(key, job, events, last_task.get(key)))
        in_flight[task] = key
        last_task[key] = task
        task.add_done_callback(lambda t: in_flight.pop(t, None))
        task.add_done_callback(next_due)

    async def land(key: tuple[str, int], job, events: list, previous: asyncio.Task | None) -> None:
        """Lake files, then dead letters and feature rows delivered, then the commit point, then acks."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(writer, job.write_files)
            result = job.result
            await deliver(lambda: send_dead_letters(result.dead_letters))
            if publisher is not None:
                for name, table in result.features.items():
                    messages = feature_messages(table, FEATURE_TOPICS[name][1])
                    await deliver(lambda n=name, m=messages: publisher.publish(FEATURE_TOPICS[n][0], m))
            if previous is not None:
                await asyncio.wait([previous])  # commit points of a partition go in order
            await loop.run_in_executor(writer, job.commit)
        except Exception as exc:  # noqa: BLE001 - any failure here must stop the worker, not one agent
            job.owner.failed = job.owner.failed or exc
            if isinstance(exc, Abandoned):  # stopping while the broker is away: redone after a restart
                log.warning("%s[%d]: checkpoint at offsets %d-%d abandoned at shutdown (the broker is away); a "
                            "restart redoes it", *key, job.first_offset, job.last_offset)
                return
            fail(exc)
            return
        stats.checkpoints += 1
        health.checkpointed(key, job.last_offset + 1, [d.reason.value for d in result.dead_letters])
        for name, n in result.rows.items():
            stats.rows[name] = stats.rows.get(name, 0) + n
        stream = streams[key[0]]
        for event in events:
            await stream.ack(event)

    stopping = [False]

    async def deliver(send) -> None:
        """Deliver to Kafka, waiting for the broker while it is away (stopped, restarting, unreachable).

        The batch's lake files are written but not committed, so waiting loses nothing and a retry
        can only repeat a letter or a feature row (those topics are at-least-once). Only a worker
        that is stopping gives up: the batch is redone from the lake after a restart.
        """
        delay, since = 0.5, None
        while True:
            try:
                await send()
                if since is not None:
                    log.warning("the broker is back after %.1f s; delivering again", time.monotonic() - since)
                return
            except (TimeoutError, KafkaError, ConnectionError) as exc:
                if isinstance(exc, KafkaError) and not (exc.retriable or isinstance(exc, KafkaTimeoutError)):
                    raise
                if stopping[0] or app.gigapulse_error is not None:
                    raise Abandoned(str(exc)) from exc
                if since is None:
                    since = time.monotonic()
                    log.warning("cannot deliver to Kafka (%s: %s); retrying until the broker is back",
                                type(exc).__name__, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def settle(keys: set[tuple[str, int]] | None = None) -> None:
        """Wait for the in-flight checkpoints (of ``keys``, or all) to be committed and acknowledged."""
        waiting = [t for t, k in list(in_flight.items()) if keys is None or k in keys]
        if waiting:
            await asyncio.wait(waiting)

    reported: set[tuple[int, int]] = set()  # asset records already dead-lettered by this worker

    def report_asset_rejects(letters: list[DeadLetter]) -> None:
        """Dead-letter refused asset records, each once per worker start (the topic is re-read often)."""
        new = [d for d in letters if (d.source_partition, d.source_offset) not in reported]
        if not new:
            return
        reported.update((d.source_partition, d.source_offset) for d in new)

        async def send() -> None:
            try:
                await send_dead_letters(new)
            except Exception as exc:  # noqa: BLE001 - not a checkpoint: a later start reports them again
                log.warning("could not dead-letter %d refused asset record(s): %s", len(new), exc)

        asyncio.ensure_future(send())

    def refresh_assets() -> None:
        """Re-read the asset topic when an unknown sensor shows up, at most every 5 s."""
        if time.monotonic() - refreshed[0] > 5.0:
            refreshed[0] = time.monotonic()
            snapshot = load_assets(bootstrap, topic=assets_topic, security=security)
            snapshot.apply_to(assets)
            report_asset_rejects(snapshot.rejected)

    async def consume(stream, topic: str) -> None:
        streams[topic] = stream
        async for event in stream.events():
            if app.gigapulse_error is not None:
                continue  # stopping: nothing more may be committed
            msg = event.message
            key = (msg.topic, msg.partition)
            if key not in owned:
                continue  # revoked while buffered: the new owner redoes it from the checkpoint
            try:
                p = partition_for(*key)
                if not p.accepts(msg.offset):
                    await stream.ack(event)
                    continue
                # A record's timestamp may be missing (-1) or anything a client chose: the partition
                # falls back to the worker's clock where it is unusable.
                kafka_ts = msg.timestamp
                p.add(msg.offset, None if kafka_ts is None else kafka_ts * 1000, msg.value)
                unacked[key].append(event)
                stats.note(kafka_ts if kafka_ts is not None and kafka_ts > 0 else time.time())
                final = drain and msg.offset + 1 >= targets.get(key, 0)
                if final:
                    p.closing = True  # before any await: a timer checkpoint that takes this batch closes it
                if final or p.buffered_rows >= settings.flush_rows:
                    await checkpoint(key, final=final)
            except Exception as exc:  # noqa: BLE001 - a bug must stop the worker, not silently one agent
                fail(exc)

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

    @app.task
    async def report_asset_records_refused_at_start():
        """Send the asset topic's refused records found at start-up to the dead-letter topic."""
        report_asset_rejects(list(asset_rejects or ()))

    async def flush_due() -> None:
        """Checkpoint the partitions that are due, as many as the writer has room for now."""
        if app.gigapulse_error is not None or stopping[0]:
            return
        try:
            now = time.monotonic()
            for key, p in list(parts.items()):
                if len(in_flight) >= settings.checkpoints_in_flight:
                    break  # the writer is busy: the rest go when a checkpoint finishes (next_due)
                if p.due(now):
                    await checkpoint(key)
        except Exception as exc:  # noqa: BLE001 - see consume
            fail(exc)

    def next_due(_task: asyncio.Task) -> None:
        """A checkpoint finished: the partitions due meanwhile go now, not at the next tick. A tick's
        burst makes every partition due at once, and two at a time per tick left the last of ten
        landing half a second after the first."""
        if not stopping[0] and app.gigapulse_error is None and any(p.first_offset is not None for p in parts.values()):
            asyncio.ensure_future(flush_due())

    @app.timer(0.05)
    async def flush_due_partitions():
        """Checkpoint partitions whose flush interval has passed or that went quiet (bounds freshness)."""
        if app.gigapulse_error is not None:
            return
        await flush_due()
        if app.gigapulse_error is not None:
            return
        stats.maybe_log(len(in_flight))
        try:
            drained = drain and targets and _drained()
        except OSError as exc:  # an unreadable checkpoint file: one line and a stop, like a failed write
            fail(exc)
            return
        if drained:
            log.info("drain complete: every partition's checkpoint reached its end offset")
            os.kill(os.getpid(), signal.SIGTERM)

    def _drained() -> bool:
        return not in_flight and all(committed_next_offset(lake_root, t, part) >= end
                                     for (t, part), end in targets.items())

    @app.on_partitions_assigned.connect
    async def on_assigned(app, assigned, **kwargs):  # noqa: ARG001 - signal signature
        owned.update((tp.topic, tp.partition) for tp in assigned)
        health.assign((tp.topic, tp.partition) for tp in assigned)

    @app.on_partitions_revoked.connect
    async def on_revoked(app, revoked, **kwargs):  # noqa: ARG001 - signal signature
        keys = {(tp.topic, tp.partition) for tp in revoked}
        owned.difference_update(keys)
        health.revoke(keys)
        # Checkpoints already handed to the writer are finished first, so the new owner resumes
        # from a lake that no longer changes under it.
        await settle(keys)
        for key in keys:
            if parts.pop(key, None) is not None:
                unacked.pop(key, None)
                last_task.pop(key, None)
                log.info("%s[%d]: revoked; unflushed work dropped for the new owner", *key)

    if settings.health_port is not None:
        @app.task
        async def serve_health() -> None:
            """/healthz, /readyz and /status for a supervisor (see transforms/health.py)."""
            def status():
                return worker_health.snapshot(health, app.gigapulse_error, lambda tp: _highwater(app, tp),
                                              lambda tp: committed_next_offset(lake_root, *tp))

            await worker_health.serve_forever(settings.health_host, settings.health_port, status)

    @app.on_before_shutdown.connect
    async def on_shutdown(app, **kwargs):  # noqa: ARG001 - signal signature
        stopping[0] = True  # a delivery waiting for an absent broker gives up: its batch is redone later
        await settle()
        if publisher is not None:
            await publisher.stop()
        writer.shutdown(wait=True)

    return app


class Abandoned(RuntimeError):
    """A checkpoint given up because the worker is stopping while the broker is away (not a failure)."""


class StreamFailed(RuntimeError):
    """The worker stopped because a checkpoint could not be made durable."""


class LakeUnwritable(OSError):
    """The lake directory refused a write (full, read-only, no permission): the path and the cause.

    pyarrow's own errors name neither the file nor the directory ("Error writing bytes to file"),
    and an operator's first question is which disk.
    """

    @classmethod
    def of(cls, lake_root: Path, exc: OSError) -> LakeUnwritable:
        code = exc.errno
        if code is None:  # pyarrow puts the errno in its message only: "... [errno 28] ..."
            found = re.search(r"errno (\d+)", str(exc))
            code = int(found.group(1)) if found else None
        cause = os.strerror(code) if code else (exc.strerror or str(exc))
        where = f" at {exc.filename}" if exc.filename else ""
        err = cls(code, f"cannot write the lake at {lake_root}: {cause}{where}; nothing past the last checkpoint "
                        "is committed, and a restart resumes from it once the directory is writable")
        err.__cause__ = exc
        return err

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def run_worker(app: faust.App, loglevel: str = "warn") -> None:
    """Run a Faust worker in this process until SIGTERM/SIGINT (or the end of a drain)."""
    worker = StreamWorker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    if not sys.stdout.isatty():
        worker.spinner = None  # its cursor escapes would end up in log files and pipes
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    error = getattr(app, "gigapulse_error", None)
    if isinstance(error, LakeUnwritable):
        raise StreamFailed(f"the stream worker stopped: {error}") from error
    if error is not None:
        raise StreamFailed(f"the stream worker stopped: a checkpoint failed: {error}") from error
