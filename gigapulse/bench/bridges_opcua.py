"""``gigapulse bench bridges opcua``: subscriptions on 1,000 nodes at 1 Hz, every change accounted for.

The server runs in its own process (``python -m gigapulse.bench.bridges_opcua serve '<json>'``), so
the bridge's CPU is measured alone: it serves the first ``nodes`` sensors of the reference plant and,
once told to go, writes every node ``rate_hz`` times a second for ``duration_s``, each write a new
value with its own source time, then reports how many it wrote. The bridge (ours, in this process)
subscribes to all of them (batched CreateMonitoredItems) and hands each change to a counting sink;
the figures are the changes written against the changes received per node (target: none missed,
none twice), the time to subscribe, and each side's CPU.

The sink here only counts: this bench measures the OPC UA path (server -> subscription -> bridge).
What the bridge's sink costs on top (frames into Kafka) is measured by the ingest bench.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import psutil

from gigapulse.bench.harness import BenchError, free_port, output_tail
from gigapulse.bench.report import console, environment, fmt_spread, markdown_table, spread


@dataclass
class OpcUaBenchOptions:
    runs: int = 1
    nodes: int = 1000
    rate_hz: float = 1.0
    duration_s: float = 30.0
    publishing_interval_ms: float = 500.0
    batch_size: int = 500


class CountingSink:
    """Counts what the bridge hands over, per sensor (no Kafka: see the module docstring)."""

    def __init__(self) -> None:
        self.per_sensor: Counter[str] = Counter()
        self.other = 0

    def reading(self, sensor_id: str, ts_ms: int, value: float, quality: int = 0) -> None:
        self.per_sensor[sensor_id] += 1

    def reject(self, reason, detail: str, payload: bytes = b"", key: str | None = None) -> None:
        self.other += 1

    def gap(self, sensor_ids, ts_ms: int, reason, detail: str, payload: bytes = b"") -> None:
        self.other += 1

    def mark_bad(self, sensor_ids, ts_ms: int) -> None:
        self.other += 1

    def flush(self) -> None:
        pass


# --------------------------------------------------------------------------- the server child

async def _serve(args: dict[str, Any]) -> None:
    from ingestion.bridges.opcua_server import PlantServer
    from schemas.asset_model import load_plant

    plant = load_plant("reference")
    ids = [e.sensor_id for e in plant.sensors[: args["nodes"]]]
    async with PlantServer(plant, ids, port=args["port"]) as server:
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.readline)  # "go"
        period = 1.0 / args["rate_hz"]
        rounds = int(round(args["duration_s"] * args["rate_hz"]))
        proc = psutil.Process()
        cpu0 = sum(proc.cpu_times()[:2])
        t0 = time.time()
        written = 0
        late = 0
        for k in range(rounds):
            due = t0 + k * period
            wait = due - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                late += 1
            ts_ms = int(due * 1000)
            for i, sid in enumerate(ids):
                await server.write(sid, k + i * 1e-4, ts_ms)
            written += len(ids)
        wall = time.time() - t0
        print(json.dumps({"written": written, "per_node": rounds, "rounds_late": late, "wall_s": wall,
                          "cpu_s": sum(proc.cpu_times()[:2]) - cpu0}), flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)  # "quit": keep serving until the bridge is done


# --------------------------------------------------------------------------- one run

async def _one_run(opts: OpcUaBenchOptions) -> dict[str, Any]:
    from ingestion.bridges.config import OpcUaConfig
    from ingestion.bridges.opcua import OpcUaBridge
    from schemas.asset_model import load_plant

    plant = load_plant("reference")
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = psutil.Popen([sys.executable, "-m", "gigapulse.bench.bridges_opcua", "serve",
                          json.dumps({"port": port, "nodes": opts.nodes, "rate_hz": opts.rate_hz,
                                      "duration_s": opts.duration_s})],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    loop = asyncio.get_running_loop()
    try:
        line = await asyncio.wait_for(loop.run_in_executor(None, child.stdout.readline), 120)
        if line.strip() != "ready":
            raise BenchError(f"the OPC UA server did not start: {output_tail(child.stderr.read())}")
        sink = CountingSink()
        cfg = OpcUaConfig(endpoint=f"opc.tcp://127.0.0.1:{port}/gigapulse/", browse_root="ref",
                            publishing_interval_ms=opts.publishing_interval_ms, batch_size=opts.batch_size,
                            reconnect_initial_s=0.5, reconnect_max_s=2.0)
        bridge = OpcUaBridge(cfg, plant, sink)
        stop = asyncio.Event()
        task = asyncio.create_task(bridge.run(stop))
        await asyncio.wait_for(bridge.ready.wait(), 120)
        me = psutil.Process()
        cpu0 = sum(me.cpu_times()[:2])
        t0 = time.perf_counter()
        child.stdin.write("go\n")
        child.stdin.flush()
        line = await asyncio.wait_for(loop.run_in_executor(None, child.stdout.readline), opts.duration_s + 120)
        try:
            served = json.loads(line)
        except ValueError:
            raise BenchError(f"the OPC UA server failed: {output_tail(child.stderr.read())}") from None
        await asyncio.sleep(2 * opts.publishing_interval_ms / 1000 + 1.0)  # the last publish
        wall = time.perf_counter() - t0
        cpu = sum(me.cpu_times()[:2]) - cpu0
        stop.set()
        await task
        child.stdin.write("quit\n")
        child.stdin.flush()
    finally:
        if child.poll() is None:
            try:
                child.wait(10)
            except psutil.TimeoutExpired:
                child.kill()
    per_node = served["per_node"]
    counts = [sink.per_sensor.get(e.sensor_id, 0) for e in plant.sensors[: opts.nodes]]
    received = sum(counts)
    return {
        "nodes": opts.nodes, "subscribed": bridge.stats.subscribed, "subscribe_s": bridge.stats.subscribe_s,
        "written": served["written"], "received": received,
        "missed": sum(max(0, per_node - c) for c in counts), "duplicated": sum(max(0, c - per_node) for c in counts),
        "nodes_short": sum(c < per_node for c in counts), "server_rounds_late": served["rounds_late"],
        "bridge_cpu_pct": 100 * cpu / wall, "server_cpu_pct": 100 * served["cpu_s"] / served["wall_s"],
        "changes_per_s": received / served["wall_s"], "reconnects": bridge.stats.reconnects,
        "other_sink_calls": sink.other,
    }


def run_bridges_opcua(opts: OpcUaBenchOptions) -> dict[str, Any]:
    """Run the bench ``opts.runs`` times; the report of :func:`gigapulse.bench.emit`."""
    import logging

    logging.getLogger("asyncua").setLevel(logging.ERROR)
    env = environment()
    runs = []
    for i in range(opts.runs):
        console.print(f"opcua run {i + 1}/{opts.runs}: {opts.nodes} nodes at {opts.rate_hz:g} Hz "
                      f"for {opts.duration_s:g} s")
        runs.append(asyncio.run(_one_run(opts)))
    keys = ("subscribe_s", "bridge_cpu_pct", "server_cpu_pct", "changes_per_s")
    summary = {k: spread([r[k] for r in runs]) for k in keys}
    missed = sum(r["missed"] for r in runs)
    dup = sum(r["duplicated"] for r in runs)
    table = markdown_table(
        ["nodes", "rate", "duration", "written", "received", "missed", "duplicated", "subscribe",
         "bridge CPU", "server CPU"],
        [[str(opts.nodes), f"{opts.rate_hz:g} Hz", f"{opts.duration_s:g} s",
          f"{sum(r['written'] for r in runs):,}", f"{sum(r['received'] for r in runs):,}", f"{missed:,}",
          f"{dup:,}", fmt_spread(summary["subscribe_s"], 2, "s"), fmt_spread(summary["bridge_cpu_pct"], 1, "%"),
          fmt_spread(summary["server_cpu_pct"], 1, "%")]])
    return {"bench": "bridges opcua", "environment": env, "options": opts.__dict__, "runs": runs,
            "summary": summary, "targets": {"missed_changes": {"target": 0, "value": missed, "met": missed == 0}},
            "table": table}


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "serve":
    import logging

    logging.basicConfig(level=logging.ERROR)
    asyncio.run(_serve(json.loads(sys.argv[2])))
