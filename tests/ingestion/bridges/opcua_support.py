"""What the OPC UA tests share: a recording sink, a server on a free port, a running bridge.

The sink fake records the calls the bridge makes (the only fake these tests use: servers and, in
the integration tests, the broker are real).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from ingestion.bridges.config import OpcUaConfig
from ingestion.bridges.opcua import OpcUaBridge
from ingestion.bridges.opcua_server import PlantServer, ServerSecurity
from schemas.asset_model import load_plant
from tests.conftest import free_port

PLANT = load_plant("reference")
T0_MS = 1_767_600_000_000  # 2026-01-05T08:00:00Z

# asyncua logs every refused certificate with a traceback and every publish at INFO
logging.getLogger("asyncua").setLevel(logging.CRITICAL)
logging.getLogger("asyncuagds").setLevel(logging.CRITICAL)


@dataclass
class RecordingSink:
    """Records what a bridge hands to :class:`ingestion.bridges.sink.BridgeSink`."""

    readings: list[tuple[str, int, float, int]] = field(default_factory=list)
    rejects: list[tuple[str, str, bytes, str | None]] = field(default_factory=list)
    gaps: list[tuple[list[str], int, str, str]] = field(default_factory=list)
    marked_bad: list[tuple[list[str], int]] = field(default_factory=list)
    flushes: int = 0

    def reading(self, sensor_id: str, ts_ms: int, value: float, quality: int = 0) -> None:
        self.readings.append((sensor_id, ts_ms, value, quality))

    def reject(self, reason, detail: str, payload: bytes = b"", key: str | None = None) -> None:
        self.rejects.append((str(reason), detail, payload, key))

    def gap(self, sensor_ids: list[str], ts_ms: int, reason, detail: str, payload: bytes = b"") -> None:
        self.gaps.append((list(sensor_ids), ts_ms, str(reason), detail))

    def mark_bad(self, sensor_ids: list[str], ts_ms: int) -> None:
        self.marked_bad.append((list(sensor_ids), ts_ms))

    def flush(self) -> None:
        self.flushes += 1


def sensors(n: int, start: int = 0) -> list[str]:
    return [e.sensor_id for e in PLANT.sensors[start:start + n]]


@contextlib.asynccontextmanager
async def served(sensor_ids: list[str] | None, port: int | None = None,
                 security: ServerSecurity | None = None, users: dict[str, str] | None = None
                 ) -> AsyncIterator[PlantServer]:
    server = PlantServer(PLANT, sensor_ids, port=port or free_port(), security=security, users=users)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def settings(server: PlantServer, **kw) -> OpcUaConfig:
    base = dict(endpoint=server.endpoint, browse_root="ref", publishing_interval_ms=100,
                reconnect_initial_s=0.2, reconnect_max_s=1.0, watchdog_s=0.5)
    base.update(kw)
    return OpcUaConfig(**base)


@contextlib.asynccontextmanager
async def bridged(bridge: OpcUaBridge, ready_s: float = 20.0) -> AsyncIterator[OpcUaBridge]:
    """Run ``bridge`` until the block ends; enters once it has subscribed."""
    stop = asyncio.Event()
    task = asyncio.create_task(bridge.run(stop))
    ready = asyncio.ensure_future(bridge.ready.wait())
    await asyncio.wait({ready, task}, timeout=ready_s, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()  # raises what ended the bridge
    if not ready.done():
        ready.cancel()
        stop.set()
        await task
        raise AssertionError(f"bridge not subscribed after {ready_s} s: {bridge.stats.to_dict()}")
    try:
        yield bridge
    finally:
        stop.set()
        await task


async def until(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate`` every 20 ms until it holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


class ServerThread:
    """A :class:`PlantServer` on its own event loop in a thread, for tests whose bridge is another process
    (the CLI) or whose main thread blocks (Kafka reads). ``call(coro)`` runs a coroutine on that loop."""

    def __init__(self, sensor_ids: list[str] | None, port: int | None = None,
                 security: ServerSecurity | None = None):
        import threading

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="opcua-test-server", daemon=True)
        self._thread.start()
        self.server = PlantServer(PLANT, sensor_ids, port=port or free_port(), security=security)
        self.call(self.server.start())

    def call(self, coro, timeout: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def write(self, sensor_id: str, value: float | None, ts_ms: int, quality: int = 0, status: int | None = None):
        return self.call(self.server.write(sensor_id, value, ts_ms, quality, status))

    def stop(self) -> None:
        self.call(self.server.stop())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
