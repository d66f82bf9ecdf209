"""The kafka-python producer every ingestion path shares (simulator, replay, bridges).

Durability first: ``acks=all`` with idempotence, so a retried batch is never written twice.
Throughput second: frames are large JSON documents that compress well, so zstd with big batches and
a few milliseconds of linger. A send that still fails after the client's retries is counted in
:class:`ProducerStats` and logged with its topic and key; :meth:`PlantProducer.close` raises when
anything failed, so no caller can finish "successfully" after losing data.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError
from kafka.partitioner.default import DefaultPartitioner

from ingestion.security import KafkaSecuritySettings, kafka_python_kwargs
from ingestion.settings import ProducerSettings
from schemas import topics
from schemas.contracts import DeadLetter, ProductionEvent, Reading, encode

log = logging.getLogger(__name__)


def use_compiled_crc32c() -> bool:
    """Give kafka-python a compiled CRC-32C when it has none of its own; True if it is in use.

    Every record batch carries a CRC-32C of its (compressed) bytes. kafka-python computes it with
    the optional ``crc32c`` package, else in pure Python, about 15 ms per 100 KB: that alone held a
    producer of frames to about 250k readings/s (``gigapulse bench ingest``). aiokafka, which the
    stream workers depend on anyway, ships the same checksum compiled; it is used only after both
    agree on the standard check value, so a changed library falls back to the slow path, never to
    wrong checksums (which the broker would refuse as corrupt).
    """
    from kafka.record import default_records, util

    if util.crc32c_c is not None:
        return True
    if getattr(default_records.calc_crc32c, "__name__", "") == "crc32c_cython":
        return True
    try:
        from aiokafka.record._crecords.cutil import crc32c_cython
    except ImportError:
        return False
    probe = b"123456789"
    if crc32c_cython(probe) != 0xE3069283 or util.calc_crc32c(memoryview(probe)) != 0xE3069283:
        return False
    default_records.calc_crc32c = crc32c_cython
    return True


class KeyHashPartitioner(DefaultPartitioner):
    """kafka-python's default partitioner with each key's murmur2 hash computed once.

    The hash is pure Python (about 15 µs a call) and the keys repeat: gateways, sensors, units. The
    partition is the default one (hash modulo the sorted partition list, as the Java client does),
    so records land where any other client would put them; records without a key are left to the
    default (random) choice.
    """

    def partition(self, topic, key, serialized_key, value, serialized_value, cluster):
        parts = cluster.partitions_for_topic(topic) if serialized_key is not None else None
        if not parts:  # no key, or a topic the metadata lacks: the default says what to do
            return super().partition(topic, key, serialized_key, value, serialized_value, cluster)
        return topics.key_partition(serialized_key, parts)


class ProduceError(RuntimeError):
    """Some messages could not be delivered after all retries."""


@dataclass
class ProducerStats:
    """Delivery counters, updated from the client's I/O thread."""

    sent: int = 0
    acked: int = 0
    failed: int = 0
    bytes: int = 0
    readings: int = 0
    frames: int = 0
    events: int = 0
    dead_letters: int = 0
    last_error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def to_dict(self) -> dict[str, int | str | None]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


class PlantProducer:
    """Sends readings, frames, production events and dead letters with the right keys.

    Keys: a frame by its gateway, a single reading by its sensor, an event by its line, so each
    sensor's (and each line's) messages stay ordered within one partition.
    """

    def __init__(self, bootstrap: str, settings: ProducerSettings | None = None, client_id: str = "gigapulse",
                 security: KafkaSecuritySettings | None = None):
        """``security``: as whom to connect (default: this process's GIGAPULSE_KAFKA_* identity)."""
        self.settings = settings or ProducerSettings()
        s = self.settings
        self.stats = ProducerStats()
        use_compiled_crc32c()
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap.split(","),
            client_id=client_id,
            acks="all" if s.acks in ("all", "-1") else int(s.acks),
            enable_idempotence=s.acks in ("all", "-1"),
            compression_type=None if s.compression == "none" else s.compression,
            linger_ms=s.linger_ms,
            batch_size=s.batch_size,
            max_request_size=s.max_request_size,
            # While the broker is away records wait in the buffer and are retried; after the delivery
            # timeout they fail and are counted. A send that cannot even be buffered (no metadata,
            # buffer full) gives up after the same time instead of kafka-python's fixed minute.
            delivery_timeout_ms=int(s.delivery_timeout_s * 1000),
            max_block_ms=int(s.delivery_timeout_s * 1000),
            request_timeout_ms=max(1000, min(30_000, int(s.delivery_timeout_s * 1000) - s.linger_ms - 1)),
            **({} if s.retries is None else {"retries": s.retries}),
            max_in_flight_requests_per_connection=5,
            partitioner=KeyHashPartitioner(),
            **kafka_python_kwargs(security),
        )

    def _send(self, topic: str, key: bytes | None, value: bytes):
        st = self.stats
        if st.failed:
            # A message has already failed for good (the broker stayed away past the delivery
            # timeout): producing on would only fail more, and the run's figures would be wrong.
            raise ProduceError(f"a message was not delivered within {self.settings.delivery_timeout_s:g} s "
                               f"(GIGAPULSE_PRODUCER_DELIVERY_TIMEOUT_S; {st.last_error}); stopping, is the "
                               "broker up? (gigapulse broker status)")
        st.sent += 1
        st.bytes += len(value)
        try:
            fut = self._producer.send(topic, key=key, value=value)
        except KafkaTimeoutError as exc:  # no metadata, or the buffer stayed full: the broker is away
            with st._lock:
                st.failed += 1
                st.last_error = f"{type(exc).__name__}: {exc}"
            raise ProduceError(f"the broker did not take messages for {self.settings.delivery_timeout_s:g} s "
                               f"(GIGAPULSE_PRODUCER_DELIVERY_TIMEOUT_S): {exc}; messages not delivered, is the "
                               "broker up? (gigapulse broker status)") from None
        fut.add_callback(self._on_ack)
        fut.add_errback(self._on_error, topic, key)
        return fut

    def _on_ack(self, _metadata) -> None:
        with self.stats._lock:
            self.stats.acked += 1

    def _on_error(self, topic: str, key: bytes | None, exc: BaseException) -> None:
        with self.stats._lock:
            self.stats.failed += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            first = self.stats.failed == 1
        if first:  # one line, not one per message: an outage fails thousands at once; close() counts them
            log.error("delivery to %s (key %r) failed after retries: %s; counting further failures", topic, key, exc)

    def send_frame(self, gateway: str, payload: bytes, n_readings: int, topic: str = topics.READINGS):
        """Send an already-encoded frame (see :func:`schemas.contracts.encode_frame_arrays`).

        Returns kafka-python's future (its record metadata gives the partition and offset), which
        the freshness benchmark uses to time each stage of a frame's way.
        """
        self.stats.frames += 1
        self.stats.readings += n_readings
        return self._send(topic, gateway.encode(), payload)

    def send_reading(self, reading: Reading, topic: str = topics.READINGS) -> None:
        """Send one reading as its own small JSON message (the interoperable path)."""
        self.stats.readings += 1
        self._send(topic, reading.sensor_id.encode(), encode(reading))

    def send_raw_reading(self, key: str, payload: bytes, topic: str = topics.READINGS) -> None:
        """Send an already-encoded single reading."""
        self.stats.readings += 1
        self._send(topic, key.encode(), payload)

    def send_event(self, event: ProductionEvent, topic: str = topics.EVENTS) -> None:
        """Send a production event keyed by its line (a unit never changes line)."""
        self.stats.events += 1
        self._send(topic, f"{event.site}/{event.line}".encode(), encode(event))

    def send_dead_letter(self, letter: DeadLetter, topic: str = topics.DLQ) -> None:
        """Send a refused message with its reason."""
        self.stats.dead_letters += 1
        self._send(topic, (letter.source_topic or letter.stage).encode(), encode(letter))

    def partitions_for(self, topic: str) -> set[int]:
        """The topic's partitions, fetching its metadata now (blocks up to the delivery timeout).

        A send to a topic whose metadata the client has not fetched yet waits inside ``send`` for it; a
        caller that must not block there (the bridges) fetches it once up front.
        """
        return self._producer.partitions_for(topic)

    def send_raw(self, topic: str, key: bytes | None, value: bytes):
        """Send bytes and return kafka-python's future, without this class's bookkeeping.

        For callers that keep their own ledger of what was acknowledged and send again what failed (the
        bridges' disk buffer): a failure here is not counted in :attr:`stats`, so it neither stops later
        sends nor makes :meth:`close` raise. Durability is the same (acks=all, idempotence).
        """
        return self._producer.send(topic, key=key, value=value)

    def flush(self, timeout: float | None = None) -> None:
        """Block until every send so far is acknowledged or has failed for good."""
        self._producer.flush(timeout=timeout)

    def _count_undelivered(self, exc: BaseException) -> None:
        """A flush that timed out: what is still unacknowledged now counts as not delivered."""
        with self.stats._lock:
            self.stats.failed = max(self.stats.failed, self.stats.sent - self.stats.acked)
            self.stats.last_error = f"{type(exc).__name__}: {exc}"

    def close(self, timeout: float = 60.0) -> ProducerStats:
        """Flush and close; raises :class:`ProduceError` if any message was not delivered."""
        if self.stats.failed:  # the broker is away: buffered records expire within the delivery timeout
            timeout = min(timeout, self.settings.delivery_timeout_s + 5)
        try:
            self._producer.flush(timeout=timeout)
        except KafkaTimeoutError as exc:
            self._count_undelivered(exc)
        finally:
            try:
                self._producer.close(timeout=timeout)  # kafka-python flushes again here, and may time out
            except KafkaTimeoutError as exc:
                self._count_undelivered(exc)
        if self.stats.failed:
            raise ProduceError(f"{self.stats.failed:,} of {self.stats.sent:,} messages were not delivered within "
                               f"{self.settings.delivery_timeout_s:g} s (GIGAPULSE_PRODUCER_DELIVERY_TIMEOUT_S; last "
                               f"error: {self.stats.last_error}); is the broker up? (gigapulse broker status)")
        return self.stats
