"""``gigapulse bench bridges modbus``: how evenly the Modbus poller keeps its schedule under load.

The target (issue #13): 100 register blocks polled at 10 Hz, with the achieved rate and the jitter
reported. The plant is wired as a real one is: ``--endpoints`` PLCs (or gateways), each its own TCP
endpoint, each a ``gigapulse simulate --serve modbus`` process of the reference plant with the simulator
writing its registers in real time (same seed, so they hold the same values). The blocks of a unit are
read from one endpoint, the units dealt round-robin over them, so each endpoint answers for about
27 / endpoints stations. The poller (:class:`ingestion.bridges.modbus.ModbusPoller`) runs in this process
into a counting sink, with ``--connections`` connections per endpoint: the figure is the Modbus side's,
not Kafka's (the sink's own cost is the MQTT bench's subject).

Blocks are 10 registers (5 float32 values) each, spread round-robin over the plant's units. Reported
per run: polls per second against the target; the poll interval from each block's consecutive polls
(p50, p99, max) and its deviation from the configured interval, the jitter (p50, p99, max); the slots
skipped because the block's previous poll was still under way; gaps; the CPU the poller and the
servers used (share of one core), which says which end is short of time; the machine's load, which
on a shared machine says more about a skipped slot than either.

The ceiling, in the same run: a bare pymodbus loop on the same endpoints and connections, reading the
same blocks back to back with no schedule and no decoding, for ``peer_s``: the reads per second the
wire and the servers allow. The poller needs blocks × rate of them.
"""

from __future__ import annotations

import asyncio
import os
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
    endpoints: int = 4
    connections: int = 1
    peer_s: float = 5.0
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


def assign_endpoints(blocks: list[dict[str, Any]], ports: list[int]) -> list[dict[str, Any]]:
    """Each unit's blocks on one endpoint: the units, in order, dealt round-robin over ``ports``."""
    units = sorted({b["unit"] for b in blocks})
    port_of = {u: ports[i % len(ports)] for i, u in enumerate(units)}
    return [{**b, "port": port_of[b["unit"]]} for b in blocks]


def _serve(opts: BridgeBenchOptions, port: int, seconds: float) -> psutil.Popen:
    return psutil.Popen([sys.executable, "-m", "gigapulse.cli", "simulate", "--serve", "modbus", "--plant",
                         opts.plant, "--port", str(port), "--seed", str(opts.seed), "--duration", f"{seconds:g}s"],
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _cpu_s(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        t = p.cpu_times()
        total += t.user + t.system
    return total


async def raw_ceiling(config, seconds: float) -> float:
    """Reads/s of a bare pymodbus loop per connection of ``config``, its blocks back to back, no decoding."""
    from pymodbus.client import AsyncModbusTcpClient

    groups: dict[tuple[str, int, int], list] = {}
    unit_link = {(h, p, u): (h, p, i) for (h, p, i), units in config.links().items() for u in units}
    for b in config.blocks:
        groups.setdefault(unit_link[(*config.endpoint(b), b.unit)], []).append(b)
    clients = []
    for host, port, _ in groups:
        c = AsyncModbusTcpClient(host, port=port, timeout=config.timeout_s, retries=0, reconnect_delay=0)
        if not await c.connect():
            raise BenchError(f"the ceiling's client cannot connect to {host}:{port}")
        clients.append(c)
    reads = 0
    end = time.monotonic() + seconds

    async def loop(client, blocks) -> None:
        nonlocal reads
        while time.monotonic() < end:
            for b in blocks:
                await client.read_holding_registers(b.address, count=b.count, device_id=b.unit)
                reads += 1
    t0 = time.monotonic()
    try:
        await asyncio.gather(*(loop(c, bs) for c, bs in zip(clients, groups.values(), strict=True)))
    finally:
        for c in clients:
            c.close()
    return reads / (time.monotonic() - t0)


def one_run(opts: BridgeBenchOptions) -> dict[str, Any]:
    """Serve the plant from ``endpoints`` children, poll it for warm-up + duration, measure the measured part,
    then run the ceiling on the same servers."""
    from ingestion.bridges.config import ModbusConfig
    from ingestion.bridges.modbus import ModbusPoller
    from schemas.asset_model import load_plant

    plant = load_plant(opts.plant)
    ports = [free_port() for _ in range(opts.endpoints)]
    total = opts.warmup_s + opts.duration_s
    servers = [_serve(opts, port, total + opts.peer_s + 120) for port in ports]
    try:
        for port, server in zip(ports, servers, strict=True):
            _wait_for_port(port, server)
        blocks = assign_endpoints(bench_blocks(plant, opts.blocks, 1.0 / opts.rate_hz), ports)
        config = ModbusConfig(plant=opts.plant, port=ports[0], timeout_s=1.0, connections=opts.connections,
                              blocks=blocks)
        sink = CountingSink()
        poller = ModbusPoller(config, sink)
        stop = threading.Event()
        me = psutil.Process()
        cpu: dict[str, float] = {}

        def snapshot(tag: str) -> None:
            cpu[f"load_{tag}"] = os.getloadavg()[0]
            cpu[f"poller_{tag}"] = _cpu_s([me])
            cpu[f"servers_{tag}"] = _cpu_s(servers)
            cpu[f"wall_{tag}"] = time.monotonic()

        t0 = time.monotonic() + opts.warmup_s
        timers = [threading.Timer(opts.warmup_s, snapshot, ("start",)), threading.Timer(total, snapshot, ("end",)),
                  threading.Timer(total, stop.set)]
        for t in timers:
            t.start()
        asyncio.run(poller.run(stop))
        for t in timers:
            t.join()
        t1 = min(time.monotonic(), t0 + opts.duration_s)
        ceiling = asyncio.run(raw_ceiling(config, opts.peer_s)) if opts.peer_s > 0 else float("nan")
    finally:
        for server in servers:
            stop_child(server)
    out = summarize(poller, sink, opts, t0, t1)
    wall = cpu["wall_end"] - cpu["wall_start"]
    out.update({"poller_cpu": (cpu["poller_end"] - cpu["poller_start"]) / wall,
                "servers_cpu": (cpu["servers_end"] - cpu["servers_start"]) / wall,
                "ceiling_reads_per_s": ceiling, "links": len(poller.links),
                "load_start": cpu["load_start"], "load_end": cpu["load_end"]})
    return out


def summarize(poller, sink: CountingSink, opts: BridgeBenchOptions, t0: float, t1: float) -> dict[str, Any]:
    """Rate and jitter of the polls made in [t0, t1] (monotonic seconds)."""
    interval = 1.0 / opts.rate_hz
    gaps: list[float] = []
    polls = 0
    for st in poller.blocks:
        starts = np.array([s for s in st.starts if t0 <= s <= t1])
        polls += len(starts)
        if len(starts) > 1:
            gaps.extend(np.diff(starts).tolist())
    d = np.array(gaps) if gaps else np.array([np.nan])
    dev = np.abs(d - interval)
    return {
        "polls_per_s": polls / (t1 - t0),
        "target_polls_per_s": opts.blocks * opts.rate_hz,
        "interval_p50_ms": float(np.nanpercentile(d, 50) * 1000),
        "interval_p99_ms": float(np.nanpercentile(d, 99) * 1000),
        "interval_max_ms": float(np.nanmax(d) * 1000),
        "deviation_p50_ms": float(np.nanpercentile(dev, 50) * 1000),
        "deviation_p99_ms": float(np.nanpercentile(dev, 99) * 1000),
        "deviation_max_ms": float(np.nanmax(dev) * 1000),
        "skipped": poller.skipped,
        "gaps": sink.gaps,
        "values": sink.readings,
    }


def run_bridges(opts: BridgeBenchOptions) -> dict[str, Any]:
    """``--runs`` runs; the report's table gives each figure as median (min–max)."""
    env = environment()
    results = []
    for i in range(opts.runs):
        console.print(f"run {i + 1}/{opts.runs}: {opts.blocks} blocks at {opts.rate_hz:g} Hz for {opts.duration_s:g} s "
                      f"from {opts.endpoints} endpoint(s), {opts.connections} connection(s) each")
        results.append(one_run(opts))
    keys = ("polls_per_s", "interval_p50_ms", "interval_p99_ms", "interval_max_ms", "deviation_p50_ms",
            "deviation_p99_ms", "deviation_max_ms", "skipped", "gaps", "poller_cpu", "servers_cpu",
            "ceiling_reads_per_s", "load_start", "load_end")
    figures = {k: spread([r[k] for r in results]) for k in keys}
    target = opts.blocks * opts.rate_hz
    pct = {k: {**figures[k], **{m: 100 * figures[k][m] for m in ("median", "min", "max")}}
           for k in ("poller_cpu", "servers_cpu")}
    rows = [
        ["polls/s (target)", f"{fmt_spread(figures['polls_per_s'], 1)} ({target:,.0f})"],
        ["poll interval p50 / p99 / max, ms", " / ".join(fmt_spread(figures[f"interval_{q}_ms"], 2)
                                                        for q in ("p50", "p99", "max"))],
        ["jitter (deviation from the interval) p50 / p99 / max, ms",
         " / ".join(fmt_spread(figures[f"deviation_{q}_ms"], 2) for q in ("p50", "p99", "max"))],
        ["slots skipped", fmt_spread(figures["skipped"])],
        ["gaps", fmt_spread(figures["gaps"])],
        ["CPU, poller / servers (% of one core)", f"{fmt_spread(pct['poller_cpu'])} / {fmt_spread(pct['servers_cpu'])}"],
        ["ceiling: bare pymodbus reads/s, same connections", fmt_spread(figures["ceiling_reads_per_s"])],
        ["machine load (1 min) at the start / end of the measured part",
         f"{fmt_spread(figures['load_start'], 2)} / {fmt_spread(figures['load_end'], 2)}"],
    ]
    return {"bench": "bridges-modbus", "environment": env, "options": opts.__dict__,
            "runs": results, "figures": figures,
            "table": markdown_table([f"Modbus: {opts.blocks} blocks × {opts.rate_hz:g} Hz, {opts.duration_s:g} s, "
                                     f"{opts.endpoints} endpoint(s) × {opts.connections} connection(s)",
                                     "median (min–max)"], rows)}
