"""``gigapulse bench bridges modbus``: how evenly the Modbus poller keeps its schedule under load.

The target (issue #13): 100 register blocks polled at 10 Hz, with the achieved rate and the jitter
reported. The server is the simulated reference plant over Modbus TCP (``gigapulse simulate --serve
modbus``) in its own process, as a PLC would be, with the simulator writing its registers in real time.
The poller (:class:`ingestion.bridges.modbus.ModbusPoller`) runs in this process into a counting sink:
the figure is the Modbus side's, not Kafka's (the sink's own cost is the MQTT bench's subject).

Blocks are 10 registers (5 float32 values) each, spread round-robin over the plant's units. Reported
per run: polls per second against the target, the poll interval's p50/p99 (from each block's
consecutive poll starts), the p99 of its deviation from the configured interval, overruns (slots
skipped because a poll ran past the next one) and gaps.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import psutil

from gigapulse.bench.harness import BenchError, free_port, stop_child
from gigapulse.bench.report import console, environment, fmt_spread, markdown_table, spread

REGISTERS_PER_BLOCK = 10


@dataclass
class BridgeBenchOptions:
    runs: int = 1
    blocks: int = 100
    rate_hz: float = 10.0
    duration_s: float = 30.0
    warmup_s: float = 3.0
    plant: str = "reference"
    seed: int = 42


class CountingSink:
    """The sink's methods, counting: the bench measures the poller and the server, not Kafka."""

    def __init__(self) -> None:
        self.readings = 0
        self.gaps = 0
        self._lock = threading.Lock()

    def reading(self, sensor_id: str, ts_ms: int, value: float, quality: int = 0) -> None:
        with self._lock:
            self.readings += 1

    def gap(self, sensor_ids, ts_ms, reason, detail, payload=b"") -> None:
        with self._lock:
            self.gaps += 1


def bench_blocks(plant, n: int, interval_s: float) -> list[dict[str, Any]]:
    """``n`` blocks of 10 registers, round-robin over the plant's units, each with the sensors inside it."""
    from schemas.addresses import modbus_addresses

    addrs = modbus_addresses(plant)
    by_unit: dict[int, list[tuple[str, Any]]] = {}
    for sensor, a in addrs.items():
        by_unit.setdefault(a.unit, []).append((sensor, a))
    starts = {u: 0 for u in by_unit}
    ends = {u: max(a.address + a.count for _, a in items) for u, items in by_unit.items()}
    blocks: list[dict[str, Any]] = []
    while len(blocks) < n:
        progressed = False
        for unit in sorted(by_unit):
            start = starts[unit]
            if start + REGISTERS_PER_BLOCK > ends[unit] or len(blocks) >= n:
                continue
            points = [{"sensor": s, "address": a.address, "type": a.type} for s, a in by_unit[unit]
                      if start <= a.address and a.address + a.count <= start + REGISTERS_PER_BLOCK]
            starts[unit] = start + REGISTERS_PER_BLOCK
            progressed = True
            if points:
                blocks.append({"unit": unit, "address": start, "count": REGISTERS_PER_BLOCK,
                               "interval_s": interval_s, "points": points})
        if not progressed:
            raise BenchError(f"plant {plant.name} has registers for only {len(blocks)} blocks of "
                             f"{REGISTERS_PER_BLOCK}; ask for fewer --blocks")
    return blocks


def _wait_for_port(port: int, proc: psutil.Popen, timeout: float = 60.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the Modbus server exited: {proc.stdout.read() if proc.stdout else ''}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise BenchError(f"the Modbus server did not listen on {port} within {timeout:g} s")


def one_run(opts: BridgeBenchOptions) -> dict[str, Any]:
    """Serve the plant in a child, poll it for warm-up + duration, and measure the measured part."""
    from ingestion.bridges.config import ModbusConfig
    from ingestion.bridges.modbus import ModbusPoller
    from schemas.asset_model import load_plant

    plant = load_plant(opts.plant)
    port = free_port()
    total = opts.warmup_s + opts.duration_s
    server = psutil.Popen([sys.executable, "-m", "gigapulse.cli", "simulate", "--serve", "modbus", "--plant",
                               opts.plant, "--port", str(port), "--seed", str(opts.seed), "--duration",
                               f"{total + 60:g}s"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_port(port, server)
        config = ModbusConfig(plant=opts.plant, port=port, timeout_s=1.0,
                              blocks=bench_blocks(plant, opts.blocks, 1.0 / opts.rate_hz))
        sink = CountingSink()
        poller = ModbusPoller(config, sink)
        stop = threading.Event()
        t0 = time.monotonic() + opts.warmup_s
        threading.Timer(total, stop.set).start()
        asyncio.run(poller.run(stop))
        t1 = min(time.monotonic(), t0 + opts.duration_s)
    finally:
        stop_child(server)
    return summarize(poller, sink, opts, t0, t1)


def summarize(poller, sink: CountingSink, opts: BridgeBenchOptions, t0: float, t1: float) -> dict[str, Any]:
    """Rate and jitter of the polls that started in [t0, t1] (monotonic seconds)."""
    interval = 1.0 / opts.rate_hz
    gaps: list[float] = []
    polls = 0
    for st in poller.blocks:
        starts = np.array([s for s in st.starts if t0 <= s <= t1])
        polls += len(starts)
        if len(starts) > 1:
            gaps.extend(np.diff(starts).tolist())
    d = np.array(gaps) if gaps else np.array([np.nan])
    return {
        "polls_per_s": polls / (t1 - t0),
        "target_polls_per_s": opts.blocks * opts.rate_hz,
        "interval_p50_ms": float(np.nanpercentile(d, 50) * 1000),
        "interval_p99_ms": float(np.nanpercentile(d, 99) * 1000),
        "deviation_p99_ms": float(np.nanpercentile(np.abs(d - interval), 99) * 1000),
        "overruns": sum(st.overruns for st in poller.blocks),
        "gaps": sink.gaps,
        "values": sink.readings,
    }


def run_bridges(opts: BridgeBenchOptions) -> dict[str, Any]:
    """``--runs`` runs; the report's table gives each figure as median (min–max)."""
    results = []
    for i in range(opts.runs):
        console.print(f"run {i + 1}/{opts.runs}: {opts.blocks} blocks at {opts.rate_hz:g} Hz for {opts.duration_s:g} s")
        results.append(one_run(opts))
    keys = ("polls_per_s", "interval_p50_ms", "interval_p99_ms", "deviation_p99_ms", "overruns", "gaps")
    figures = {k: spread([r[k] for r in results]) for k in keys}
    target = opts.blocks * opts.rate_hz
    rows = [
        ["polls/s (target)", f"{fmt_spread(figures['polls_per_s'], 1)} ({target:,.0f})"],
        ["poll interval p50, ms", fmt_spread(figures["interval_p50_ms"], 2)],
        ["poll interval p99, ms", fmt_spread(figures["interval_p99_ms"], 2)],
        ["deviation from the configured interval p99, ms", fmt_spread(figures["deviation_p99_ms"], 2)],
        ["overruns (slots skipped)", fmt_spread(figures["overruns"])],
        ["gaps", fmt_spread(figures["gaps"])],
    ]
    return {"bench": "bridges-modbus", "environment": environment(), "options": opts.__dict__,
            "runs": results, "figures": figures,
            "table": markdown_table([f"Modbus: {opts.blocks} blocks × {opts.rate_hz:g} Hz, {opts.duration_s:g} s",
                                     "median (min–max)"], rows)}
