"""``gigapulse bench ingest``: readings/s into Kafka, ours beside Kafka's ProducerPerformance."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gigapulse.bench.harness import (
    PLANT,
    BenchBroker,
    BenchError,
    bench_broker,
    child_env,
    cluster_heap,
    delete_topics,
    new_topic,
    readings_topic_config,
    run_measured,
    warm_bytecode,
)
from gigapulse.bench.report import TARGETS, console, environment, fmt_spread, markdown_table, progress, spread
from gigapulse.bench.workloads import sample_payloads, simulate_into

# --------------------------------------------------------------------------- ingest

_PERF_LINE = re.compile(r"(\d+) (steady state )?records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\)")


def producer_performance(bb: BenchBroker, topic: str, payload_file: Path, num_records: int, keys: int,
                         settings) -> dict[str, Any]:
    """Kafka's own ProducerPerformance on the same broker, messages and producer settings: the ceiling.

    It sends ``num_records`` after as many warm-up records (a JVM needs seconds of JIT before it
    shows what it can do) and the steady-state line is the one reported; records are keyed over
    ``keys`` distinct keys, as ours are by gateway or sensor.
    """
    java = shutil.which("java")
    if not java:
        raise BenchError("java is not on PATH (ProducerPerformance needs it)")
    log4j = bb.tmp / "perf-log4j2.properties"
    if not log4j.exists():
        log4j.write_text("rootLogger.level=WARN\nrootLogger.appenderRef.out.ref=OUT\nappender.out.type=Console\n"
                         "appender.out.name=OUT\nappender.out.target=SYSTEM_ERR\n"
                         "appender.out.layout.type=PatternLayout\nappender.out.layout.pattern=%p %m%n\n")
    cmd = [java, "-Xmx768m", f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{bb.settings.libs_dir}/*",
           "org.apache.kafka.tools.ProducerPerformance", "--topic", topic, "--num-records", str(2 * num_records),
           "--warmup-records", str(num_records), "--key-distribution", "range", "--record-key-range", str(keys),
           "--throughput", "-1", "--payload-file", str(payload_file), "--command-property",
           f"acks={settings.acks}", f"compression.type={settings.compression}", f"linger.ms={settings.linger_ms}",
           f"batch.size={settings.batch_size}", f"max.request.size={settings.max_request_size}",
           f"bootstrap.servers={bb.bootstrap}"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    matches = _PERF_LINE.findall(res.stdout)
    if res.returncode != 0 or not matches:
        tail = " | ".join((res.stderr + res.stdout).strip().splitlines()[-4:])
        raise BenchError(f"ProducerPerformance failed (code {res.returncode}): {tail[-600:]}")
    steady = [m for m in matches if m[1]] or matches
    records, _, rps, mibps = steady[-1]
    return {"records": int(records), "warmup_records": num_records, "keys": keys, "messages_per_s": float(rps),
            "mib_per_s": float(mibps), "summary": [ln for ln in res.stdout.splitlines() if "records sent" in ln][-1]}


def simulate_peak_rss(bb: BenchBroker, seconds: float, seed: int) -> dict[str, Any]:
    """Peak RSS of a ``gigapulse simulate`` child: bounded by the plant's sensors, not by readings."""
    summary = bb.tmp / f"simulate-{uuid.uuid4().hex[:8]}.json"
    cmd = [sys.executable, "-m", "gigapulse.cli", "simulate", "--plant", PLANT, "--duration", f"{seconds:g}s",
           "--speed", "max", "--seed", str(seed), "--summary-json", str(summary)]
    m = run_measured(cmd, child_env(bb), timeout_s=1800).check("gigapulse simulate")
    s = json.loads(summary.read_text())
    return {"simulated_s": seconds, "readings": s["readings"], "wall_s": m.wall_s,
            "peak_rss_mib": m.peak_rss_mib}


@dataclass
class IngestOptions:
    runs: int = 3
    frames_s: float = 600.0
    json_s: float = 60.0
    memory_s: tuple[float, ...] = (300.0, 1200.0)
    seed: int = 42
    sample_frames_s: float = 120.0
    sample_json_s: float = 10.0
    #: 1: one private broker; 3: a private 3-node cluster (RF 3, min ISR 2; the producer's acks=all).
    nodes: int = 1


def run_ingest(opts: IngestOptions) -> dict[str, Any]:
    """Our producer (frames, JSON singles) against ProducerPerformance, plus the simulator's memory."""
    from ingestion.settings import ProducerSettings
    from schemas.asset_model import load_plant

    env = environment()
    runs: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    with bench_broker(**cluster_heap(opts.nodes)) as bb:
        psettings = ProducerSettings()
        gateways = len({f"{e.site}.{e.station}" for e in load_plant(PLANT).sensors})
        keys = {"frames": gateways, "json": len(load_plant(PLANT).sensors)}
        payload_files = {}
        with console.status("encoding sample messages for ProducerPerformance ..."):
            for fmt, secs in (("frames", opts.sample_frames_s), ("json", opts.sample_json_s)):
                payloads = sample_payloads(fmt, secs, opts.seed, psettings.frame_max_readings)
                if any(b"\n" in p for p in payloads):
                    raise BenchError("an encoded message holds a newline; it cannot be a payload-file line")
                path = bb.tmp / f"payloads-{fmt}.txt"
                path.write_bytes(b"\n".join(payloads))
                payload_files[fmt] = (path, len(payloads), sum(map(len, payloads)) / len(payloads))
        warm_bytecode(bb, ["gigapulse.cli", "ingestion.pipeline", "ingestion.simulator"])
        with progress() as bar:
            for i in range(opts.runs):
                run: dict[str, Any] = {}
                for fmt, secs in (("frames", opts.frames_s), ("json", opts.json_s)):
                    names = (new_topic(bb.bootstrap, f"ingest.{fmt}", 6, readings_topic_config()),
                             new_topic(bb.bootstrap, f"ingest.{fmt}.events", 3), new_topic(bb.bootstrap, "dlq", 1))
                    ours = simulate_into(bb.bootstrap, names, fmt, secs, opts.seed, bar,
                                         f"run {i + 1}/{opts.runs}: ours, {fmt}")
                    delete_topics(bb.bootstrap, list(names))
                    perf_topic = new_topic(bb.bootstrap, f"ingest.perf.{fmt}", 6, readings_topic_config())
                    t = bar.add_task(f"run {i + 1}/{opts.runs}: ProducerPerformance, {fmt}", total=None, info="")
                    perf = producer_performance(bb, perf_topic, payload_files[fmt][0], ours["messages"], keys[fmt],
                                                psettings)
                    bar.remove_task(t)
                    delete_topics(bb.bootstrap, [perf_topic])
                    run[fmt] = {"ours": ours, "kafka": perf,
                                "ratio_messages": ours["messages_per_s"] / perf["messages_per_s"],
                                "ratio_mib": ours["mib_per_s"] / perf["mib_per_s"]}
                runs.append(run)
                for secs in opts.memory_s:
                    t = bar.add_task(f"run {i + 1}/{opts.runs}: simulate {secs:g}s, peak RSS", total=None, info="")
                    memory.append(simulate_peak_rss(bb, secs, opts.seed))
                    bar.remove_task(t)
    results: dict[str, Any] = {}
    for fmt in ("frames", "json"):
        rs = [r[fmt] for r in runs]
        results[fmt] = {
            "readings_per_s": spread([r["ours"]["readings_per_s"] for r in rs]),
            "messages_per_s": spread([r["ours"]["messages_per_s"] for r in rs]),
            "mib_per_s": spread([r["ours"]["mib_per_s"] for r in rs]),
            "kafka_messages_per_s": spread([r["kafka"]["messages_per_s"] for r in rs]),
            "kafka_mib_per_s": spread([r["kafka"]["mib_per_s"] for r in rs]),
            "ratio_messages": spread([r["ratio_messages"] for r in rs]),
            "ratio_mib": spread([r["ratio_mib"] for r in rs]),
            "readings": rs[0]["ours"]["readings"], "messages": rs[0]["ours"]["messages"],
            "mean_message_bytes": rs[0]["ours"]["bytes"] / max(1, rs[0]["ours"]["messages"]),
        }
    results["memory"] = [
        {"simulated_s": s, "readings": [m["readings"] for m in memory if m["simulated_s"] == s][0],
         "peak_rss_mib": spread([m["peak_rss_mib"] for m in memory if m["simulated_s"] == s])}
        for s in opts.memory_s
    ]
    fr, js = results["frames"], results["json"]
    met = {
        "ingest_frames_readings_per_s": fr["readings_per_s"]["median"] >= TARGETS["ingest_frames_readings_per_s"],
        "ingest_json_readings_per_s": js["readings_per_s"]["median"] >= TARGETS["ingest_json_readings_per_s"],
    }
    rows = []
    for fmt, label in (("frames", "frames"), ("json", "JSON singles")):
        r = results[fmt]
        target = TARGETS[f"ingest_{fmt}_readings_per_s"]
        rows.append([f"{label}: readings/s", fmt_spread(r["readings_per_s"]), "–", "–",
                     f"≥ {target:,} ({'met' if met[f'ingest_{fmt}_readings_per_s'] else 'MISSED'})"])
        rows.append([f"{label}: messages/s", fmt_spread(r["messages_per_s"]), fmt_spread(r["kafka_messages_per_s"]),
                     fmt_spread(r["ratio_messages"], 2), ""])
        rows.append([f"{label}: MiB/s", fmt_spread(r["mib_per_s"], 1), fmt_spread(r["kafka_mib_per_s"], 1),
                     fmt_spread(r["ratio_mib"], 2), ""])
    for m in results["memory"]:
        span = f"{m['simulated_s'] / 60:g} min" if m["simulated_s"] % 60 == 0 else f"{m['simulated_s']:g} s"
        rows.append([f"simulate {span} ({m['readings']:,} readings): peak RSS MiB",
                     fmt_spread(m["peak_rss_mib"], 1), "–", "–", "flat with duration"])
    table = markdown_table(["measure", "ours, median (min–max)", "Kafka ProducerPerformance", "ours / Kafka",
                            "target"], rows)
    return {
        "bench": "ingest", "environment": env, "targets": {k: TARGETS[k] for k in met}, "met": met,
        "params": {
            "runs": opts.runs, "plant": PLANT, "seed": opts.seed, "broker_nodes": opts.nodes,
            "frames_simulated_s": opts.frames_s,
            "json_simulated_s": opts.json_s, "memory_simulated_s": list(opts.memory_s),
            "producer": {"acks": psettings.acks, "compression": psettings.compression,
                         "linger_ms": psettings.linger_ms, "batch_size": psettings.batch_size,
                         "frame_max_readings": psettings.frame_max_readings},
            "payload_files": {k: {"messages": v[1], "mean_bytes": round(v[2], 1)} for k, v in payload_files.items()},
        },
        "results": results, "runs": runs, "memory_runs": memory, "table": table,
    }
