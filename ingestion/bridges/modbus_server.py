"""A Modbus TCP server of a plant: the simulated plant over the wire (``gigapulse simulate --serve modbus``).

Each station is a unit, each sensor a float32 (energy meters a float64) in holding registers at its
address (:func:`schemas.addresses.modbus_addresses`); input registers mirror the holding ones, so a
configuration may read either. :class:`RegisterStore` holds the registers as plain lists; the simulator's
ticks are written into it (:meth:`RegisterStore.apply_frame`: each sensor's newest reading of the tick)
while pymodbus's server answers from it, through a device action that copies the unit's current
registers into the response. A register written in one slice assignment cannot be read half-updated.

For tests, a unit can be made to fail (:meth:`RegisterStore.fail_unit`: every read answers an exception)
or slow (:meth:`RegisterStore.slow_unit`: every answer comes late), and a range of registers can hold a
NaN (:meth:`RegisterStore.set_raw`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable
from datetime import datetime

import numpy as np

from ingestion.bridges.modbus import encode_value
from schemas.addresses import ModbusAddress, modbus_addresses
from schemas.asset_model import Plant

log = logging.getLogger(__name__)


class RegisterStore:
    """The registers of every unit of a plant, written by the simulator and read by the server."""

    def __init__(self, plant: Plant, units: Iterable[int] | None = None):
        self.plant = plant
        self.addresses: dict[str, ModbusAddress] = modbus_addresses(plant)
        sizes: dict[int, int] = {}
        for a in self.addresses.values():
            sizes[a.unit] = max(sizes.get(a.unit, 0), a.address + a.count)
        for u in units or ():
            sizes.setdefault(u, 1)
        self.registers: dict[int, list[int]] = {u: [0] * n for u, n in sizes.items()}
        #: Units that answer every read with this Modbus exception code (tests inject read errors).
        self.failing: dict[int, int] = {}
        #: Units whose answers wait this many seconds (a slow device, or past the poller's timeout a dead one).
        self.slow: dict[int, float] = {}
        self.reads = 0
        #: Reads answered with registers, and with an exception, per unit (what a test expects downstream).
        self.served: Counter[int] = Counter()
        self.refused: Counter[int] = Counter()

    def set_value(self, sensor_id: str, value: float) -> None:
        """Write one sensor's value at its address."""
        a = self.addresses[sensor_id]
        self.registers[a.unit][a.address:a.address + a.count] = encode_value(value, a.type)

    def set_raw(self, unit: int, address: int, regs: list[int]) -> None:
        """Write registers as they are (for a value that must not decode)."""
        self.registers[unit][address:address + len(regs)] = regs

    def apply_frame(self, sensors: list[str], idx: np.ndarray, value: np.ndarray) -> None:
        """Each sensor's newest value in a simulator frame (readings are in time order per sensor)."""
        newest: dict[int, float] = {}
        for i, v in zip(idx.tolist(), value.tolist(), strict=True):
            newest[i] = v
        for i, v in newest.items():
            if sensors[i] in self.addresses and np.isfinite(v):
                self.set_value(sensors[i], v)

    def fail_unit(self, unit: int, code: int = 4) -> None:
        """Make every read of ``unit`` answer exception ``code`` (4: device failure); 0 heals it."""
        if code:
            self.failing[unit] = code
        else:
            self.failing.pop(unit, None)

    def slow_unit(self, unit: int, delay_s: float) -> None:
        """Make every answer of ``unit`` wait ``delay_s`` seconds; 0 heals it."""
        if delay_s > 0:
            self.slow[unit] = delay_s
        else:
            self.slow.pop(unit, None)

    async def _action(self, unit: int, function_code: int, start_address: int, address: int, count: int,
                      current: list[int], set_values) -> int | None:
        """pymodbus's device action: fail the unit, or copy its registers into the response."""
        from pymodbus.constants import ExcCodes

        self.reads += 1
        if unit in self.slow:
            await asyncio.sleep(self.slow[unit])
        if unit in self.failing:
            self.refused[unit] += 1
            return ExcCodes(self.failing[unit])
        self.served[unit] += 1
        regs = self.registers[unit]
        off = address - start_address
        current[off:off + count] = regs[address:address + count]
        return None

    def devices(self) -> list:
        """One pymodbus device per unit, its registers shared by the holding and input functions."""
        from pymodbus.simulator import DataType, SimData, SimDevice

        return [SimDevice(id=unit, simdata=[SimData(0, count=len(regs), values=0, datatype=DataType.REGISTERS)],
                          action=functools.partial(self._action, unit))
                for unit, regs in sorted(self.registers.items())]


async def serve_store(store: RegisterStore, host: str, port: int, stop: threading.Event,
                      started: threading.Event | None = None) -> None:
    """Answer Modbus TCP on ``host:port`` from ``store`` until ``stop`` is set."""
    from pymodbus.server import ModbusTcpServer

    logging.getLogger("pymodbus").setLevel(logging.ERROR)  # its deprecation notes and per-connection chatter
    server = ModbusTcpServer(store.devices(), address=(host, port))
    await server.serve_forever(background=True)
    log.info("modbus server of %s on %s:%d: %d unit(s)", store.plant.name, host, port, len(store.registers))
    if started is not None:
        started.set()
    try:
        while not stop.is_set():
            await asyncio.sleep(0.05)
    finally:
        await server.shutdown()


class ServerThread:
    """A Modbus server of ``store`` on its own thread and event loop (tests, the bench, ``--serve``)."""

    def __init__(self, store: RegisterStore, host: str = "127.0.0.1", port: int = 5020):
        self.store, self.host, self.port = store, host, port
        self.stop = threading.Event()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="modbus-server", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(serve_store(self.store, self.host, self.port, self.stop, self._started))
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._error = exc
            self._started.set()

    def start(self, timeout: float = 10.0) -> ServerThread:
        self._thread.start()
        if not self._started.wait(timeout) or self._error is not None:
            raise RuntimeError(f"the modbus server did not start on {self.host}:{self.port}: {self._error}")
        return self

    def close(self) -> None:
        self.stop.set()
        self._thread.join(10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def serve_plant(plant: Plant, host: str, port: int, seed: int, start: datetime, seconds: float,
                stop: threading.Event, on_tick=None) -> dict[str, int]:
    """Run the simulator in real time and serve its values over Modbus TCP until ``seconds`` pass or ``stop``.

    Registers hold each sensor's newest simulated value (written as each tick is due); returns counts.
    """
    from ingestion.pipeline import paced
    from ingestion.simulator import PlantSimulator

    store = RegisterStore(plant)
    sim = PlantSimulator(plant, seed=seed, start=start)
    ticks = values = 0
    with ServerThread(store, host, port):
        behind = max(0.0, time.time() - start.timestamp())
        for tick in paced(sim.run(seconds), start, 1.0, sleep=lambda s: stop.wait(s), behind_s=behind):
            if stop.is_set():
                break
            for frame in tick.frames:
                store.apply_frame(frame.sensors, frame.idx, frame.value)
                values += len(frame)
            ticks += 1
            if on_tick is not None:
                on_tick(ticks, values)
        return {"ticks": ticks, "values": values, "reads": store.reads}
