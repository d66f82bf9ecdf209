"""The Modbus TCP poller: blocks of registers read at their rate, decoded by a register map, into the sink.

The register map is pure: :func:`decode_registers` turns a value's registers into a number for every
data type (int16, uint16, int32, uint32, float32, float64) and both byte orders (within a register) and
word orders (of a multi-register value); :func:`encode_value` is its inverse, which the simulated plant's
server (:mod:`ingestion.bridges.modbus_server`) and the tests use. A point's value is the decoded number
× scale + offset.

Polling is asyncio with pymodbus's async client, in one thread: one task per block on an absolute
schedule, and one connection (:class:`Link`) per endpoint, or ``connections`` per endpoint with its unit
ids dealt among them (:meth:`ModbusConfig.links`). A plant is wired that way: each PLC is its own TCP
endpoint, and a gateway holds several unit ids behind one. Modbus TCP answers one request at a time per
connection, so a thousand reads a second on one connection leave a millisecond per round trip, which two
Python ends on a busy machine do not keep; spread over the endpoints' connections, the round trips overlap
and a slow or dead device delays only the blocks that share its connection. Async rather than a thread
per connection because a poller is all waiting: a request is a fraction of a millisecond of work, and
one event loop serves every connection's timers and timeouts without threads contending for the GIL.

The schedule: block k's polls are due at ``start + phase + n × interval`` on the event loop's monotonic
clock, so a late poll does not shift the later ones. A slot that comes while the block's previous poll is
still under way (waiting behind another block on its connection, or for a slow answer) is **skipped**:
counted (:attr:`BlockState.skipped`, logged at the end), and no read is made for it. A skipped slot is not
a gap, because nothing failed: the source was being read at the time, and the read under way yields its
own readings or its own gap. Either way no value is invented for the slot. Timestamps are the time the
request went out (the connection free and connected), epoch ms.

The gap rule: a poll that fails (an exception response, a timeout, a lost connection) is
:meth:`BridgeSink.gap` with reason ``source_error`` and the error, for every sensor of the block; while the
server cannot be reached, the polls not made are one gap per block per ``reconnect_max_s`` (the detail
says how many and from when to when). A value that does not decode (a NaN or infinite float, a short
read) is a gap with reason ``bad_payload`` and the registers' bytes. Never a zero, never the last value.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ingestion.bridges.config import REGISTERS, ModbusBlock, ModbusConfig, ModbusPoint
from schemas.contracts import Reason

log = logging.getLogger(__name__)

_FORMATS = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f", "float64": ">d"}


class DecodeError(ValueError):
    """Registers that do not hold a usable value of their type (a bad_payload gap)."""


def _ordered(regs: Sequence[int], byte_order: str, word_order: str) -> bytes:
    """The value's bytes most significant first, from registers as the device sent them."""
    words = list(regs) if word_order == "big" else list(reversed(regs))
    if byte_order == "little":
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    return b"".join(w.to_bytes(2, "big") for w in words)


def decode_registers(regs: Sequence[int], type_: str, byte_order: str = "big", word_order: str = "big") -> float:
    """The number that ``regs`` hold as ``type_``; DecodeError for a wrong count or a non-finite float."""
    want = REGISTERS[type_]
    if len(regs) != want:
        raise DecodeError(f"{type_} needs {want} register(s), got {len(regs)}")
    if any(not 0 <= r <= 0xFFFF for r in regs):
        raise DecodeError(f"register values {list(regs)} are not 16-bit")
    (value,) = struct.unpack(_FORMATS[type_], _ordered(regs, byte_order, word_order))
    if not math.isfinite(value):
        raise DecodeError(f"{type_} registers {' '.join(f'{r:04x}' for r in regs)} hold {value}")
    return float(value)


def encode_value(value: float, type_: str, byte_order: str = "big", word_order: str = "big") -> list[int]:
    """The registers a device would send for ``value`` as ``type_`` (integers rounded; out of range raises)."""
    fmt = _FORMATS[type_]
    raw = struct.pack(fmt, value if type_.startswith("float") else int(round(value)))
    words = [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]
    if byte_order == "little":
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    return words if word_order == "big" else list(reversed(words))


def point_value(point: ModbusPoint, regs: Sequence[int], block_address: int) -> float:
    """A point's value from its block's registers: decoded × scale + offset."""
    start = point.address - block_address
    raw = decode_registers(regs[start:start + point.count], point.type, point.byte_order, point.word_order)
    value = raw * point.scale + point.offset
    if not math.isfinite(value):
        raise DecodeError(f"{raw} × {point.scale} + {point.offset} is not finite")
    return value


def registers_bytes(regs: Sequence[int]) -> bytes:
    """Registers as the bytes on the wire (a dead letter's payload)."""
    return b"".join((r & 0xFFFF).to_bytes(2, "big") for r in regs)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


class Link:
    """One TCP connection to an endpoint, and the reconnect state of it; shared by its units' blocks.

    ``lock`` is held from the connection check to the answer: one request at a time on a connection
    (a Modbus TCP device answers in order, and pymodbus's client would serialise them anyway), and the
    poll's timestamp is taken once the request can go out, not while it waited for the one before.
    """

    def __init__(self, host: str, port: int, index: int, units: list[int], config: ModbusConfig):
        self.host, self.port, self.index, self.units = host, port, index, units
        self.config = config
        self.client = None
        self.lock: asyncio.Lock | None = None
        self.next_attempt = 0.0
        self.backoff = config.reconnect_min_s
        self.down_since: float | None = None
        self.last_error = ""

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}" + (f" #{self.index + 1}" if self.config.connections > 1 else "")

    def _make_client(self):
        from pymodbus.client import AsyncModbusTcpClient

        # retries=0: a failed read is a gap, and the next poll is the retry; reconnect_delay=0: this class
        # reconnects itself, with its own backoff, so a gap is written for the polls the outage cost.
        return AsyncModbusTcpClient(self.host, port=self.port, timeout=self.config.timeout_s, retries=0,
                                    reconnect_delay=0, name=f"gigapulse-{self.host}-{self.index}")

    async def connected(self) -> tuple[bool, str]:
        """Whether the client is connected, connecting (with backoff) if it is not and it is time to try.

        Called with ``lock`` held, so one connect at a time per connection.
        """
        if self.client is not None and self.client.connected:
            return True, ""
        now = time.monotonic()
        if now < self.next_attempt:
            return False, self.last_error
        if self.client is None:
            self.client = self._make_client()
        where = f"{self.host}:{self.port}"
        try:
            ok = await self.client.connect()
            error = "" if ok else f"cannot connect to {where}"
        except Exception as exc:  # noqa: BLE001 - any connect failure waits for the next attempt
            ok, error = False, f"cannot connect to {where}: {exc}"
        if ok:
            if self.down_since is not None:
                log.info("modbus %s: connected again after %.1f s", self.name, now - self.down_since)
            self.down_since = None
            self.backoff = self.config.reconnect_min_s
            return True, ""
        if self.down_since is None:
            self.down_since = now
            log.warning("modbus %s: %s; its polls are gaps until it answers (next try in %.1f s)", self.name,
                        error, self.backoff)
        self.next_attempt = now + self.backoff
        self.backoff = min(self.backoff * 2, self.config.reconnect_max_s)
        self.last_error = error
        return False, error

    def lost(self, reason: str) -> None:
        """The connection broke: close it, so the next poll reconnects (with backoff)."""
        if self.client is not None and self.client.connected:
            log.warning("modbus %s: connection lost (%s)", self.name, reason)
            self.client.close()
        if self.down_since is None:
            self.down_since = time.monotonic()

    def close(self) -> None:
        """Disconnect (at the end of a run)."""
        if self.client is not None:
            self.client.close()


@dataclass
class BlockState:
    """A block's connection, schedule and outcomes; ``starts`` keeps the recent poll times (monotonic s)."""

    block: ModbusBlock
    link: Link
    polls: int = 0
    failed: int = 0
    skipped: int = 0
    missed: int = 0
    missed_first_ms: int | None = None
    missed_last_ms: int | None = None
    missed_error: str = ""
    busy: bool = False
    starts: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))

    @property
    def sensors(self) -> list[str]:
        return [p.sensor for p in self.block.points]

    def describe(self) -> str:
        b = self.block
        return f"unit {b.unit} {b.function} registers {b.address}..{b.address + b.count - 1}"


class ModbusPoller:
    """Polls the blocks of one :class:`ModbusConfig` into a sink until stopped."""

    def __init__(self, config: ModbusConfig, sink):
        self.config = config
        self.sink = sink
        self.links: dict[tuple[str, int, int], Link] = {}
        by_unit: dict[tuple[str, int, int], Link] = {}
        for (host, port, index), units in config.links().items():
            link = self.links[(host, port, index)] = Link(host, port, index, units, config)
            by_unit.update({(host, port, u): link for u in units})
        self.blocks = [BlockState(b, by_unit[(*config.endpoint(b), b.unit)]) for b in config.blocks]
        self._stopping = False

    @property
    def skipped(self) -> int:
        """Slots skipped by every block so far (a slot that came while the block's poll was under way)."""
        return sum(st.skipped for st in self.blocks)

    def _flush_missed(self, st: BlockState, force: bool = False) -> None:
        if not st.missed:
            return
        if not force and time.time() * 1000 - st.missed_first_ms < self.config.reconnect_max_s * 1000:
            return
        self.sink.gap(st.sensors, st.missed_first_ms, Reason.SOURCE_ERROR,
                      f"{st.describe()}: {st.missed} poll(s) from {_iso(st.missed_first_ms)} to "
                      f"{_iso(st.missed_last_ms)} not made: {st.missed_error}")
        st.missed, st.missed_first_ms, st.missed_last_ms = 0, None, None

    async def poll(self, st: BlockState) -> None:
        """One poll of one block: readings, or a gap with its reason."""
        link = st.link
        assert link.lock is not None
        async with link.lock:
            ok, error = await link.connected()
            ts = int(time.time() * 1000)
            st.starts.append(time.monotonic())
            st.polls += 1
            if not ok:
                st.missed += 1
                st.missed_first_ms = st.missed_first_ms or ts
                st.missed_last_ms = ts
                st.missed_error = error
                self._flush_missed(st)
                return
            self._flush_missed(st, force=True)
            b = st.block
            client = link.client
            read = client.read_holding_registers if b.function == "holding" else client.read_input_registers
            try:
                rr = await read(b.address, count=b.count, device_id=b.unit)
            except Exception as exc:  # noqa: BLE001 - timeouts, I/O and connection errors alike are gaps
                st.failed += 1
                self.sink.gap(st.sensors, ts, Reason.SOURCE_ERROR,
                              f"{st.describe()} on {link.host}:{link.port}: {type(exc).__name__}: {exc}")
                # Always a new connection after a failed read: a device that answers after the timeout
                # would otherwise have its late answer taken for the next request's on the same socket,
                # a value with the wrong time. The next poll reconnects at once.
                link.lost(f"{type(exc).__name__}: {exc}")
                return
        self._deliver(st, ts, rr)

    def _deliver(self, st: BlockState, ts: int, rr) -> None:
        """An answer's readings, or the gap of an exception response or of registers that do not decode."""
        b = st.block
        if rr.isError():
            st.failed += 1
            code = getattr(rr, "exception_code", None)
            name = _exception_name(code)
            self.sink.gap(st.sensors, ts, Reason.SOURCE_ERROR, f"{st.describe()}: exception response {code} ({name})")
            return
        regs = list(rr.registers)
        if len(regs) != b.count:
            st.failed += 1
            self.sink.gap(st.sensors, ts, Reason.BAD_PAYLOAD,
                          f"{st.describe()}: {len(regs)} register(s) answered, {b.count} asked", registers_bytes(regs))
            return
        for p in b.points:
            try:
                value = point_value(p, regs, b.address)
            except DecodeError as exc:
                start = p.address - b.address
                self.sink.gap([p.sensor], ts, Reason.BAD_PAYLOAD, f"unit {b.unit} register {p.address} ({p.type}): "
                              f"{exc}", registers_bytes(regs[start:start + p.count]))
                continue
            self.sink.reading(p.sensor, ts, value)

    async def _block_loop(self, st: BlockState, phase: float) -> None:
        loop = asyncio.get_running_loop()
        interval = st.block.interval_s
        due = loop.time() + phase  # the event loop's clock is monotonic: slot k is at start + phase + k × interval
        while not self._stopping:
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # a plain timer: stopping cancels a task that sleeps
            if self._stopping:
                break
            st.busy = True
            try:
                await self.poll(st)
            finally:
                st.busy = False
            due += interval
            behind = loop.time() - due
            if behind > 0:  # the poll was still under way at its next slot(s): those are skipped
                skipped = int(behind // interval) + 1
                st.skipped += skipped
                due += skipped * interval

    async def run(self, stop: threading.Event) -> None:
        """Poll every block until ``stop`` is set; then write the gaps of polls not made and disconnect."""
        for link in self.links.values():
            link.lock = asyncio.Lock()
        n = len(self.blocks)
        tasks = [asyncio.create_task(self._block_loop(st, i * min(st.block.interval_s, 1.0) / n))
                 for i, st in enumerate(self.blocks)]
        try:
            while not stop.is_set() and not all(t.done() for t in tasks):
                await asyncio.sleep(0.05)
        finally:
            # A poll under way finishes (its answer is a reading or a gap, not lost), within its timeout;
            # polls queued behind it on the same connection may each take one more.
            self._stopping = True
            for st, t in zip(self.blocks, tasks, strict=True):
                if not st.busy:
                    t.cancel()
            await asyncio.wait(tasks, timeout=self.config.timeout_s + 1)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for st in self.blocks:
                self._flush_missed(st, force=True)
            for link in self.links.values():
                link.close()
            if self.skipped:
                log.info("modbus: %d poll slot(s) skipped while the block's previous poll was under way",
                         self.skipped)
        for t in tasks:
            if t.done() and not t.cancelled() and t.exception() is not None:
                raise t.exception()


def _exception_name(code: int | None) -> str:
    from pymodbus.constants import ExcCodes

    try:
        return ExcCodes(code).name.lower()
    except (ValueError, TypeError):
        return "unknown"


def run_modbus(config: ModbusConfig, sink, stop: threading.Event) -> None:
    """``gigapulse bridge modbus``'s runner: poll until ``stop`` is set."""
    links = config.links()
    log.info("modbus: %d block(s), %d point(s), %d endpoint(s) over %d connection(s)", len(config.blocks),
             sum(len(b.points) for b in config.blocks), len({(h, p) for h, p, _ in links}), len(links))
    asyncio.run(ModbusPoller(config, sink).run(stop))
