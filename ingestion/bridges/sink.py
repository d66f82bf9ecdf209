"""Where every bridge puts what it read: samples become frames, frames go through the disk buffer to Kafka.

A bridge calls :meth:`BridgeSink.reading` for each sample, :meth:`~BridgeSink.gap` for a read that failed,
:meth:`~BridgeSink.reject` for bytes it could not use and :meth:`~BridgeSink.mark_bad` when a source says
its values are no longer current. The calls are cheap appends under one lock, safe from any thread
(paho's and pymodbus's threads, asyncua's event loop).

Two threads of the sink do the rest:

- the *flusher*, every ``flush_interval_s``: each gateway's samples become one frame
  (:func:`schemas.contracts.encode_frame_arrays`, gateway ``"{site}.{station}"``, keyed by the gateway,
  as the simulator's), appended with the dead letters to the :class:`~ingestion.bridges.buffer.DiskBuffer`,
  which is then committed (fsync, cursor);
- the *sender*: sends the journal in order with the platform's producer (acks=all, idempotence), at most
  ``max_in_flight_bytes`` unacknowledged, and moves the journal's cursor on each acknowledgement.

While Kafka is away the producer keeps its in-flight records and retries them itself (idempotently: the
broker drops a retry it already has), and the journal grows on disk, bounded by ``buffer_max_bytes`` and
``full_policy``. When Kafka is back the retries go through and the sender goes on from the oldest record,
so the backlog reaches Kafka in order before anything newer. A record that fails for good (past the
producer's delivery timeout) is sent again from the journal once everything in flight has settled.

Duplicates: readings are not deduplicated downstream, so the sink avoids them: a record is sent again only
after a failure the producer reported, or after a restart for records acknowledged since the last commit
(one flush interval). A record the broker wrote whose acknowledgement was lost *and* whose retries then
timed out is the remaining at-least-once window (docs/connectors.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from ingestion.bridges.buffer import Appended, DiskBuffer, Position, Record
from ingestion.bridges.settings import BridgeSettings, FullPolicy
from schemas.asset_model import Plant
from schemas.contracts import ContractError, DeadLetter, Reason, encode, encode_frame_arrays

log = logging.getLogger(__name__)

#: Sensors named in a gap's detail; the full list is in its payload when the source gave no bytes.
GAP_DETAIL_SENSORS = 10


@dataclass
class BridgeStats:
    """A bridge's counters (``/status``). Readings are single samples; a frame carries many.

    ``received`` (in): samples handed to :meth:`BridgeSink.reading`, good or refused. ``sent`` (out):
    readings Kafka acknowledged. ``buffered``: readings journalled and not yet acknowledged.
    ``rejected``: dead letters of refused samples and of :meth:`BridgeSink.reject`. ``gaps``: failed reads.
    ``dropped``: readings the full policy gave up (drop_oldest, reject_new). ``torn``: records found cut
    short in the buffer after a crash.
    """

    received: int = 0
    sent: int = 0
    buffered: int = 0
    rejected: int = 0
    gaps: int = 0
    frames_sent: int = 0
    dead_letters_sent: int = 0
    dropped: int = 0
    torn: int = 0
    marked_bad: int = 0

    @property
    def in_(self) -> int:
        return self.received

    @property
    def out(self) -> int:
        return self.sent

    def to_dict(self) -> dict[str, int]:
        d = asdict(self)
        return {"in": d.pop("received"), "out": d.pop("sent"), **d}


@dataclass
class _Pending:
    """One gateway's samples since its last frame."""

    since: float
    sensors: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    idx: list[int] = field(default_factory=list)
    ts_ms: list[int] = field(default_factory=list)
    value: list[float] = field(default_factory=list)
    quality: list[int] = field(default_factory=list)


def frame_record(gateway: str, p: _Pending, topic: str) -> Record:
    """A gateway's pending samples as one journalled frame."""
    payload = encode_frame_arrays(gateway, p.sensors, np.asarray(p.idx, dtype=np.int32),
                                  np.asarray(p.ts_ms, dtype=np.int64), np.asarray(p.value, dtype=np.float64),
                                  np.asarray(p.quality, dtype=np.int8))
    return Record(topic, gateway.encode(), payload, len(p.idx))


def dead_letter(reason: Reason, detail: str, payload: bytes, topic: str, key: str | None = None) -> Record:
    """A bridge-stage dead letter as a journalled record, keyed by ``key`` (default: the stage)."""
    letter = DeadLetter.for_payload(payload, ContractError(reason, detail), stage="bridge")  # type: ignore[arg-type]
    return Record(topic, (key or "bridge").encode(), encode(letter), 0)


def summary_line(doc: dict) -> str:
    """One line of a bridge's ``/status`` document (``gigapulse bridge health``)."""
    st, b = doc["stats"], doc["buffer"]
    line = (f"{doc['status']}: bridge {doc['bridge']} (plant {doc['plant']}): in {st['in']:,}, out {st['out']:,}, "
            f"buffered {st['buffered']:,} ({b['bytes']:,} of {b['max_bytes']:,} bytes, {b['full_policy']}), "
            f"rejected {st['rejected']:,}, gaps {st['gaps']:,}, dropped {st['dropped']:,}")
    return line + (f"; error: {doc['error']}" if doc["error"] else "")


class BridgeSink:
    """Where every bridge puts what it read. Thread-safe; see the module docstring."""

    def __init__(self, settings: BridgeSettings, plant: Plant, name: str, producer_factory: Callable[[], Any],
                 buffer: DiskBuffer):
        """``producer_factory`` makes the :class:`~ingestion.producer.PlantProducer`; it is called (and called
        again, with a growing pause, while it fails) by the sender thread, because the client cannot be made
        while no broker answers, and a bridge started during an outage must still journal what it reads."""
        self.settings = settings
        self.plant = plant
        self.name = name
        self.stats = BridgeStats(torn=buffer.stats.torn)
        #: The protocol side's own counters (births, sessions, polls...), set by the bridge's runner:
        #: served under ``protocol`` on ``/status`` beside the sink's.
        self.protocol_status: Callable[[], dict] | None = None
        self._producer_factory = producer_factory
        self._producer = None
        self._connect_failures = 0
        self._retired: list[Any] = []
        self._committed_at = 0.0
        self._buffer = buffer
        self._gateway = {e.sensor_id: f"{e.site}.{e.station}" for e in plant.sensors}
        self._last: dict[str, float] = {}
        self._pending: dict[str, _Pending] = {}
        self._pending_n = 0
        self._letters: deque[Record] = deque()
        self._lock = threading.Condition()
        #: Frames and letters made but not journalled because the buffer was full (policy block).
        self._held: deque[Record] = deque()
        self._held_n = 0
        self._late = 0
        self._max_memory = max(20_000, 10 * settings.max_frame_readings)
        self._acks: deque[tuple[Position, Record, BaseException | None]] = deque()
        self._ack_lock = threading.Lock()
        self._inflight_bytes = 0
        self._failed = False
        self._oldest_unacked: float | None = None
        self._stop = threading.Event()
        self._closed = False
        self._error: str | None = None
        self.started_at = time.time()
        self.stats.buffered = buffer.stats.pending_readings
        self._threads = [threading.Thread(target=self._run_flusher, name=f"bridge-{name}-flush", daemon=True),
                         threading.Thread(target=self._run_sender, name=f"bridge-{name}-send", daemon=True)]
        for t in self._threads:
            t.start()
        self._health_loop: asyncio.AbstractEventLoop | None = None
        if settings.health_port:
            self._start_health()

    @classmethod
    def open(cls, settings: BridgeSettings, plant: Plant, name: str) -> BridgeSink:
        """A sink with its producer and its disk buffer (``settings.buffer_path(name)``), threads started."""
        from ingestion.producer import PlantProducer
        from ingestion.settings import ProducerSettings

        buffer = DiskBuffer(settings.buffer_path(name), settings.buffer_max_bytes, settings.effective_segment_bytes,
                            settings.full_policy, settings.fsync)
        bootstrap = settings.bootstrap()
        return cls(settings, plant, name,
                   lambda: PlantProducer(bootstrap, ProducerSettings(), client_id=f"gigapulse-bridge-{name}"), buffer)

    # ------------------------------------------------------------------ the bridges' calls

    def reading(self, sensor_id: str, ts_ms: int, value: float, quality: int = 0) -> None:
        """One sample (quality 0 good, 1 uncertain, 2 bad), batched into its gateway's next frame.

        An unknown sensor is a dead letter ``unknown_sensor``, a non-finite value ``non_finite``, a
        quality outside 0..2 ``bad_value``: each counted as rejected, with the sample as JSON for payload.
        Under the ``block`` policy with the buffer full, this waits (the source is pushed back).
        """
        with self._lock:
            self.stats.received += 1
            gateway = self._gateway.get(sensor_id)
            problem = None
            if gateway is None:
                problem = (Reason.UNKNOWN_SENSOR, f"sensor {sensor_id!r} is not in plant {self.plant.name}'s asset "
                                                  "model")
            elif not isinstance(value, int | float) or not math.isfinite(value):
                problem = (Reason.NON_FINITE, f"sensor {sensor_id!r}: value {value!r} is not a finite number")
            elif quality not in (0, 1, 2):
                problem = (Reason.BAD_VALUE, f"sensor {sensor_id!r}: quality code {quality!r} is not 0, 1 or 2")
            if problem is not None:
                body = orjson.dumps({"sensor_id": sensor_id, "ts_ms": ts_ms, "value": repr(value),
                                     "quality": quality})
                self._letter(dead_letter(problem[0], problem[1], body, self.settings.dlq_topic, sensor_id))
                self.stats.rejected += 1
                return
            self._wait_for_room()
            if self._stop.is_set():
                self._late += 1  # a source still reading while the bridge stops: counted in the close log
                return
            p = self._pending.get(gateway)
            if p is None:
                p = self._pending[gateway] = _Pending(time.monotonic())
            i = p.index.get(sensor_id)
            if i is None:
                i = p.index[sensor_id] = len(p.sensors)
                p.sensors.append(sensor_id)
            p.idx.append(i)
            p.ts_ms.append(int(ts_ms))
            p.value.append(float(value))
            p.quality.append(quality)
            self._pending_n += 1
            if quality != 2:
                self._last[sensor_id] = float(value)
            if len(p.idx) >= self.settings.max_frame_readings:
                self._cut(gateway)
                self._lock.notify_all()

    def reject(self, reason: Reason, detail: str, payload: bytes = b"", key: str | None = None) -> None:
        """A dead letter (stage ``bridge``) carrying the source's bytes; counted as rejected."""
        with self._lock:
            self._letter(dead_letter(reason, detail, payload, self.settings.dlq_topic, key))
            self.stats.rejected += 1

    def gap(self, sensor_ids: list[str], ts_ms: int, reason: Reason, detail: str, payload: bytes = b"") -> None:
        """A read that failed: no value for these sensors at ``ts_ms`` (never a zero or the last value).

        One dead letter names the reason, the detail and the sensors (the first few in the detail, all of
        them in the payload when the source gave no bytes of its own); counted as one gap.
        """
        shown = ", ".join(sensor_ids[:GAP_DETAIL_SENSORS])
        more = f" and {len(sensor_ids) - GAP_DETAIL_SENSORS} more" if len(sensor_ids) > GAP_DETAIL_SENSORS else ""
        at = datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="milliseconds")
        text = f"{detail}; no value at {at} for {len(sensor_ids)} sensor(s): {shown}{more}"
        body = payload or orjson.dumps({"sensors": list(sensor_ids), "ts_ms": ts_ms, "reason": reason.value,
                                        "detail": detail})
        with self._lock:
            self._letter(dead_letter(reason, text, body, self.settings.dlq_topic, self.name))
            self.stats.gaps += 1

    def mark_bad(self, sensor_ids: list[str], ts_ms: int) -> None:
        """These sensors' values are no longer current (a Sparkplug death, a lost OPC UA session).

        Each sensor gets one reading at ``ts_ms`` with its last known value and quality 2 (bad), which holds
        until its next good reading; a sensor never seen gets nothing (there is no value to qualify).
        """
        for sensor_id in sensor_ids:
            with self._lock:
                last = self._last.get(sensor_id)
            if last is not None:
                self.reading(sensor_id, ts_ms, last, 2)
                with self._lock:
                    self.stats.marked_bad += 1

    def flush(self, timeout: float | None = None) -> None:
        """Journal every pending sample and dead letter now; the sender takes them on to Kafka.

        Under the ``block`` policy with the buffer full this waits for room, at most ``timeout`` seconds
        (None: as long as it takes).
        """
        with self._lock:
            for gateway in list(self._pending):
                self._cut(gateway)
            self._journal(wait=True, timeout=timeout)

    def close(self, timeout: float | None = None) -> BridgeStats:
        """Flush, wait (at most ``timeout``, default ``drain_timeout_s``) for Kafka to take the journal, and stop.

        What Kafka did not take stays in the disk buffer for the next start; the producer is closed.
        """
        if self._closed:
            return self.stats
        timeout = self.settings.drain_timeout_s if timeout is None else timeout
        self.flush(timeout=timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._buffer.stats.pending_records == 0 and not self._held:
                    break
                self._lock.notify_all()
            time.sleep(0.02)
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        connecting = self._producer is None
        for t in self._threads:
            # A sender still making its client (no broker answers) is left to give up on its own (_connect
            # checks the stop flag once the client's bootstrap times out); it no longer touches the buffer.
            t.join(0.5 if connecting and t is self._threads[1] else 5)
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=5)
            except Exception as exc:  # noqa: BLE001 - what is unsent stays journalled; closing must not raise
                log.warning("bridge %s: closing the producer: %s", self.name, exc)
        with self._lock:
            self._drain_acks()
            self._buffer.close()
            self._sync_stats()
            self._closed = True
            left = self._buffer.stats.pending_records
            lost = self._held_n + self._pending_n + self._late
        if lost:
            log.error("bridge %s: closed with the disk buffer full (or its source still reading): %d reading(s) "
                      "not journalled are lost", self.name, lost)
        if left:
            log.warning("bridge %s: %d record(s) (%d readings) not acknowledged by Kafka stay in %s for the next "
                        "start", self.name, left, self.stats.buffered, self._buffer.path)
        if self._health_loop is not None:
            self._health_loop.call_soon_threadsafe(self._health_loop.stop)
        return self.stats

    # ------------------------------------------------------------------ inside (lock held)

    def _letter(self, rec: Record) -> None:
        self._letters.append(rec)

    def _cut(self, gateway: str) -> None:
        p = self._pending.pop(gateway, None)
        if p is not None and p.idx:
            self._held.append(frame_record(gateway, p, self.settings.readings_topic))
            self._pending_n -= len(p.idx)
            self._held_n += len(p.idx)

    def _wait_for_room(self) -> None:
        """Policy block: with the buffer full, hold the source back once memory holds enough."""
        while (self._held and self._pending_n + self._held_n >= self._max_memory and not self._stop.is_set()
               and self.settings.full_policy is FullPolicy.BLOCK):
            self._lock.notify_all()
            self._lock.wait(0.1)

    def _journal(self, wait: bool = False, timeout: float | None = None) -> None:
        """Append held frames, then dead letters, to the buffer, in order; stop at a full buffer (block)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._letters:
            self._held.append(self._letters.popleft())
        while self._held:
            rec = self._held[0]
            result = self._buffer.append(rec)
            if result is Appended.FULL:
                if not wait or self._stop.is_set() or (deadline is not None and time.monotonic() > deadline):
                    break
                self._lock.notify_all()
                self._lock.wait(0.05)
                continue
            self._held.popleft()
            self._held_n -= rec.readings
        now = time.monotonic()
        if wait or now - self._committed_at >= self.settings.flush_interval_s:
            self._buffer.commit()  # fsync and cursor: once per flush interval, not per wake-up
            self._committed_at = now
        self._sync_stats()
        self._lock.notify_all()

    def _sync_stats(self) -> None:
        b = self._buffer.stats
        self.stats.buffered = b.pending_readings
        self.stats.dropped = b.dropped_readings + b.rejected_readings
        self.stats.torn = b.torn

    # ------------------------------------------------------------------ threads

    def _run_flusher(self) -> None:
        interval = self.settings.flush_interval_s
        while not self._stop.is_set():
            try:
                with self._lock:
                    now = time.monotonic()
                    for gateway, p in list(self._pending.items()):
                        if now - p.since >= interval:
                            self._cut(gateway)
                    self._journal()
                    self._lock.wait(interval / 4)
            except Exception as exc:  # noqa: BLE001 - reported on /healthz; the bridge must see it
                self._error = f"flusher: {type(exc).__name__}: {exc}"
                log.exception("bridge %s: the flusher failed", self.name)
                return

    def _run_sender(self) -> None:
        while not self._stop.is_set():
            try:
                self._send_step()
            except Exception as exc:  # noqa: BLE001 - reported on /healthz
                self._error = f"sender: {type(exc).__name__}: {exc}"
                log.exception("bridge %s: the sender failed", self.name)
                return

    def _connect(self) -> bool:
        """Make the producer; False (after a pause) while no broker answers."""
        producer = None
        try:
            producer = self._producer_factory()
            # Topic metadata now: a send that has to wait for it blocks, and a broker lost during that wait
            # left kafka-python without a node to ask (it never recovered in the outage test).
            for topic in (self.settings.readings_topic, self.settings.dlq_topic):
                if not producer.partitions_for(topic):
                    raise RuntimeError(f"topic {topic} has no partitions (does it exist?)")
        except Exception as exc:  # noqa: BLE001 - kafka-python's bootstrap timeout and connection errors
            if producer is not None:
                with contextlib.suppress(Exception):
                    producer.close(timeout=0)
            self._connect_failures += 1
            if self._connect_failures == 1 or self._connect_failures % 10 == 0:
                log.warning("bridge %s: Kafka not reachable (%s: %s); journalling to the disk buffer and "
                            "trying again", self.name, type(exc).__name__, exc)
            self._stop.wait(min(30.0, 0.5 * 2 ** min(self._connect_failures, 6)))
            return False
        with self._lock:
            if self._stop.is_set():
                producer.close(timeout=1)
                return False
            self._producer = producer
        if self._connect_failures:
            log.info("bridge %s: Kafka reachable again; sending the disk buffer in order", self.name)
        return True

    def _send_step(self) -> None:
        while self._retired:
            with contextlib.suppress(Exception):
                self._retired.pop().close(timeout=0)
        if self._producer is None and not self._connect():
            return
        with self._lock:
            if self._closed or self._producer is None:
                return
            producer = self._producer
            self._drain_acks()
            if self._failed and self._buffer.in_flight == 0:
                # Everything handed to this client has settled (acknowledged or failed for good), so a new
                # client loses nothing: it bootstraps afresh, where the old one may be stuck without a node.
                log.warning("bridge %s: reconnecting to Kafka and sending again from the oldest record it did "
                            "not acknowledge", self.name)
                self._buffer.rewind()
                self._inflight_bytes = 0
                self._failed = False
                self._producer = None
                self._retired.append(producer)
                return
            batch: list[tuple[Position, Record]] = []
            budget = self.settings.max_in_flight_bytes - self._inflight_bytes
            while not self._failed and budget > 0:
                nxt = self._buffer.next_unsent()
                if nxt is None:
                    break
                batch.append(nxt)
                budget -= len(nxt[1].value)
                self._inflight_bytes += len(nxt[1].value)
            if batch and self._oldest_unacked is None:
                self._oldest_unacked = time.monotonic()
            if not batch:
                self._lock.wait(0.02)
                return
        for pos, rec in batch:  # outside the lock: a send may block while the client has no metadata
            try:
                fut = producer.send_raw(rec.topic, rec.key, rec.value)
            except Exception as exc:  # noqa: BLE001 - KafkaTimeoutError and friends: the broker is away
                self._on_result(pos, rec, exc)
                continue
            fut.add_callback(lambda _md, pos=pos, rec=rec: self._on_result(pos, rec, None))
            fut.add_errback(lambda exc, pos=pos, rec=rec: self._on_result(pos, rec, exc))

    def _on_result(self, pos: Position, rec: Record, exc: BaseException | None) -> None:
        with self._ack_lock:
            self._acks.append((pos, rec, exc))

    def _drain_acks(self) -> None:
        with self._ack_lock:
            acks, self._acks = self._acks, deque()
        if not acks:
            return
        for pos, rec, exc in acks:
            self._inflight_bytes -= len(rec.value)
            if exc is None:
                self._buffer.ack(pos)
                if rec.readings:
                    self.stats.sent += rec.readings
                    self.stats.frames_sent += 1
                else:
                    self.stats.dead_letters_sent += 1
            else:
                self._buffer.unsent(pos)
                if not self._failed:
                    log.warning("bridge %s: a record to %s was not delivered (%s: %s); it stays in the disk "
                                "buffer and is sent again", self.name, rec.topic, type(exc).__name__, exc)
                self._failed = True
        self._oldest_unacked = time.monotonic() if self._buffer.in_flight else None
        self._sync_stats()
        self._lock.notify_all()

    # ------------------------------------------------------------------ health

    @property
    def stalled(self) -> bool:
        """Kafka counts as unreachable: data waited ``stall_s`` for an acknowledgement, or a send failed."""
        with self._lock:
            oldest = self._oldest_unacked
            if self._producer is None and (self._connect_failures or self._buffer.stats.pending_records):
                return True
            return self._failed or (oldest is not None and time.monotonic() - oldest > self.settings.stall_s)

    def status(self) -> dict:
        """The ``/status`` document: state, counters, and the buffer's size."""
        stalled = self.stalled
        protocol = self.protocol_status() if self.protocol_status is not None else None  # outside our lock
        with self._lock:
            self._sync_stats()
            b = self._buffer.stats
            live = self._error is None and not self._closed
            return {
                "status": "failed" if not live else "buffering" if stalled else "forwarding",
                "live": live,
                "ready": live and not stalled,
                "error": self._error,
                "bridge": self.name,
                "plant": self.plant.name,
                "uptime_s": round(time.time() - self.started_at, 3),
                "stats": self.stats.to_dict(),
                "buffer": {"path": str(self._buffer.path), "records": b.pending_records,
                           "bytes": b.pending_bytes, "max_bytes": self._buffer.max_bytes,
                           "segments": b.segments, "full_policy": self.settings.full_policy.value},
                **({"protocol": protocol} if protocol is not None else {}),
            }

    def _start_health(self) -> None:
        from transforms.health import serve

        loop = asyncio.new_event_loop()
        self._health_loop = loop

        async def snapshot() -> dict:
            return self.status()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                server = loop.run_until_complete(serve(self.settings.health_host, self.settings.health_port, snapshot))
            except OSError as exc:  # a port in use: logged, and the bridge runs on (as the stream workers do)
                log.error("bridge %s: health endpoint not started on %s:%s: %s", self.name,
                          self.settings.health_host, self.settings.health_port, exc)
                return
            loop.run_forever()  # until close() stops it
            server.close()
            loop.run_until_complete(server.wait_closed())
            loop.close()

        threading.Thread(target=run, name=f"bridge-{self.name}-health", daemon=True).start()
