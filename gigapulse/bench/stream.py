"""``gigapulse bench stream``: readings/s from a pre-filled topic to features in the lake, with peers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from gigapulse.bench.harness import (
    PLANT,
    BenchBroker,
    BenchError,
    bench_broker,
    child_env,
    cluster_heap,
    delete_topics,
    end_offsets,
    new_topic,
    readings_topic_config,
    run_measured,
    stop_child,
    stream_settings,
    warm_bytecode,
)
from gigapulse.bench.report import (
    TARGETS,
    environment,
    fmt_spread,
    markdown_table,
    profile_top,
    progress,
    spread,
)
from gigapulse.bench.workloads import simulate_into

# --------------------------------------------------------------------------- stream

@dataclass
class StreamOptions:
    runs: int = 3
    prefill_s: float = 900.0
    quix_readings: int = 1_000_000
    quix_variant: str = "key"
    seed: int = 42
    profile: Path | None = None
    timeout_s: float = 1800.0
    #: Also drain with `gigapulse lake compact --loop` at this interval beside the worker; None: skip.
    compact_every_s: float | None = 10.0
    #: 1: one private broker; 3: a private 3-node cluster (RF 3, min ISR 2).
    nodes: int = 1


def lake_counts(data_dir: Path) -> dict[str, int]:
    """Rows our worker committed, read back through the DuckDB catalog as an analyst would."""
    from transforms.warehouse import build_catalog, query

    db = data_dir / "gigapulse.duckdb"
    build_catalog(data_dir / "lake", db)
    _, rows = query(db, "SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM sensor_features_1m), "
                        "(SELECT coalesce(sum(count), 0) FROM sensor_features_1m)")
    readings, feature_rows, feature_count = rows[0]
    return {"readings": int(readings), "feature_rows": int(feature_rows), "feature_readings": int(feature_count)}


_DONE_LINE = re.compile(r"stream worker done: ([\d,]+) messages.* in ([\d.]+)s")


class DrainWatchdog:
    """Fails a drain that stopped moving, instead of waiting out the timeout.

    A worker whose agent crashed keeps running without progress; a worker that committed every
    end offset but does not exit is stuck in shutdown. Both are read from the lake checkpoints,
    the drain's own notion of done.
    """

    def __init__(self, lake_root: Path, topic: str, ends: dict[int, int], stall_s: float = 120.0,
                 exit_s: float = 60.0, every_s: float = 2.0):
        self.lake_root, self.topic, self.ends = lake_root, topic, ends
        self.stall_s, self.exit_s, self.every_s = stall_s, exit_s, every_s
        self.last_check = self.last_move = self.done_at = None
        self.last_sum = -1

    def __call__(self) -> None:
        from transforms.partitions import committed_next_offset

        now = time.monotonic()
        if self.last_check is not None and now - self.last_check < self.every_s:
            return
        self.last_check = now
        if self.last_move is None:
            self.last_move = now
        offs = {p: committed_next_offset(self.lake_root, self.topic, p) for p in self.ends}
        total = sum(offs.values())
        if total != self.last_sum:
            self.last_sum, self.last_move = total, now
        if all(offs[p] >= end for p, end in self.ends.items()):
            self.done_at = self.done_at or now
            if now - self.done_at > self.exit_s:
                raise BenchError(f"the drain reached every end offset but the worker did not exit in {self.exit_s:.0f}s")
        elif now - self.last_move > self.stall_s:
            raise BenchError(f"the drain made no progress for {self.stall_s:.0f}s (checkpoints at {offs}, "
                             f"end offsets {self.ends}); see the worker's log")


def stream_ours(bb: BenchBroker, topics: tuple[str, str, str], expected: int, timeout_s: float,
                profile: Path | None = None, ends: dict[int, int] | None = None,
                compact_every_s: float | None = None) -> dict[str, Any]:
    """``gigapulse stream --drain`` as a child: wall from start to exit, readings found in the lake.

    With ``compact_every_s``, a maintenance loop (what the compose service runs) merges and
    collects the lake's files while the worker writes; the count check then also proves that
    compaction neither lost nor doubled a row.
    """
    data_dir = bb.scratch("lake")
    env = child_env(bb, GIGAPULSE_DATA_DIR=str(data_dir),
                    GIGAPULSE_STREAM_GROUP_ID=f"bench-stream-{uuid.uuid4().hex[:8]}")
    prefix = [sys.executable, "-m", "cProfile", "-o", str(profile)] if profile else [sys.executable]
    cmd = [*prefix, "-m", "gigapulse.cli", "stream", "--drain", "--readings-topic", topics[0],
           "--events-topic", topics[1], "--dlq-topic", topics[2]]
    watchdog = DrainWatchdog(data_dir / "lake", topics[0], ends) if ends else None
    compactor = None
    if compact_every_s:
        compactor = psutil.Popen([sys.executable, "-m", "gigapulse.cli", "lake", "compact", "--loop", "--grace-s", "5"],
                                 env={**env, "GIGAPULSE_LAKE_INTERVAL_S": str(compact_every_s)},
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    try:
        m = run_measured(cmd, env, timeout_s, on_poll=watchdog).check("gigapulse stream --drain")
    finally:
        steps = 0
        if compactor is not None:
            stop_child(compactor)
            steps = sum(1 for line in (compactor.stdout.read() or "").splitlines() if line.startswith("generation "))
    counts = lake_counts(data_dir)
    if counts["readings"] != expected:
        raise BenchError(f"the lake holds {counts['readings']:,} readings, the topic {expected:,}")
    done = _DONE_LINE.search(m.stdout)
    shutil.rmtree(data_dir, ignore_errors=True)
    return {"readings": counts["readings"], "feature_rows": counts["feature_rows"], "wall_s": m.wall_s,
            "worker_s": float(done.group(2)) if done else None, "peak_rss_mib": m.peak_rss_mib,
            "readings_per_s": counts["readings"] / m.wall_s, "compaction_steps": steps}


def stream_peer(bb: BenchBroker, peer: str, args: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """A peer in its own process (``python -m gigapulse.bench <peer>``), measured like ours."""
    result = bb.tmp / f"{peer}-{uuid.uuid4().hex[:8]}.json"
    cmd = [sys.executable, "-m", "gigapulse.bench", peer, json.dumps({**args, "result": str(result)})]
    m = run_measured(cmd, child_env(bb), timeout_s).check(f"the {peer} peer")
    r = json.loads(result.read_text())
    r.update(wall_s=m.wall_s, peak_rss_mib=m.peak_rss_mib, readings_per_s=r["readings"] / m.wall_s)
    return r


def run_stream(opts: StreamOptions) -> dict[str, Any]:
    """Our drain against Quix Streams and the aiokafka decode-only ceiling, on one pre-filled topic."""
    env = environment()
    runs: list[dict[str, Any]] = []
    with bench_broker(**cluster_heap(opts.nodes)) as bb:
        topics = (new_topic(bb.bootstrap, "stream.readings", 6, readings_topic_config()),
                  new_topic(bb.bootstrap, "stream.events", 3), new_topic(bb.bootstrap, "stream.dlq", 1))
        with progress() as bar:
            fill = simulate_into(bb.bootstrap, topics, "frames", opts.prefill_s, opts.seed, bar,
                                 "pre-filling the readings topic", with_events=False)
        total = fill["readings"]
        ends = end_offsets(bb.bootstrap, topics[0])
        warm_bytecode(bb, ["gigapulse.cli", "transforms.app", "faust", "aiokafka", "quixstreams", "gigapulse.bench"])
        quix_limit = min(opts.quix_readings, total) if opts.quix_readings > 0 else total
        with progress() as bar:
            for i in range(opts.runs):
                run: dict[str, Any] = {}
                names = ["ceiling", "ours", "ours+compaction", "start-up", "quix"]
                if not opts.compact_every_s:
                    names.remove("ours+compaction")
                for name in names:
                    t = bar.add_task(f"run {i + 1}/{opts.runs}: {name}", total=None, info="")
                    if name == "ours":
                        run[name] = stream_ours(bb, topics, total, opts.timeout_s, ends=ends)
                    elif name == "ours+compaction":
                        run[name] = stream_ours(bb, topics, total, opts.timeout_s, ends=ends,
                                                compact_every_s=opts.compact_every_s)
                        run["compaction_ratio"] = run[name]["readings_per_s"] / run["ours"]["readings_per_s"]
                    elif name == "start-up":
                        # The same drain over empty topics: what a run pays before and after its data.
                        empty = (new_topic(bb.bootstrap, "stream.empty", 6), new_topic(bb.bootstrap, "stream.empty", 3),
                                 new_topic(bb.bootstrap, "stream.empty", 1))
                        run["ours"]["startup_s"] = stream_ours(bb, empty, 0, opts.timeout_s)["wall_s"]
                        run["ours"]["net_readings_per_s"] = total / (run["ours"]["wall_s"] - run["ours"]["startup_s"])
                        delete_topics(bb.bootstrap, list(empty))
                    elif name == "quix":
                        run[name] = stream_peer(bb, "quix", {
                            "bootstrap": bb.bootstrap, "topic": topics[0], "end_offsets": ends, "limit": quix_limit,
                            "variant": opts.quix_variant, "out_dir": str(bb.scratch("quix")),
                        }, opts.timeout_s)
                    else:
                        run[name] = stream_peer(bb, "ceiling", {"bootstrap": bb.bootstrap, "topic": topics[0],
                                                                "end_offsets": ends}, opts.timeout_s)
                    bar.remove_task(t)
                run["ratio_vs_quix"] = run["ours"]["readings_per_s"] / run["quix"]["readings_per_s"]
                run["ratio_vs_ceiling"] = run["ours"]["readings_per_s"] / run["ceiling"]["readings_per_s"]
                runs.append(run)
            profile_text = None
            if opts.profile:
                t = bar.add_task("profiling ours (cProfile, untimed)", total=None, info="")
                opts.profile.parent.mkdir(parents=True, exist_ok=True)
                stream_ours(bb, topics, total, opts.timeout_s, profile=opts.profile.resolve(), ends=ends)
                profile_text = profile_top(opts.profile)
                bar.remove_task(t)
    res = {
        name: {"readings_per_s": spread([r[name]["readings_per_s"] for r in runs]),
               "wall_s": spread([r[name]["wall_s"] for r in runs]),
               "peak_rss_mib": spread([r[name]["peak_rss_mib"] for r in runs]),
               "readings": runs[0][name]["readings"]}
        for name in ("ours", "quix", "ceiling")
    }
    res["ours"]["worker_s"] = spread([r["ours"]["worker_s"] for r in runs if r["ours"]["worker_s"] is not None])
    res["ours"]["startup_s"] = spread([r["ours"]["startup_s"] for r in runs])
    res["ours"]["net_readings_per_s"] = spread([r["ours"]["net_readings_per_s"] for r in runs])
    res["ours"]["feature_rows"] = runs[0]["ours"]["feature_rows"]
    res["quix"]["feature_rows"] = runs[0]["quix"].get("feature_rows")
    if opts.compact_every_s:
        res["ours_compacting"] = {"readings_per_s": spread([r["ours+compaction"]["readings_per_s"] for r in runs]),
                                  "steps": [r["ours+compaction"]["compaction_steps"] for r in runs]}
        res["compaction_ratio"] = spread([r["compaction_ratio"] for r in runs])
    res["ratio_vs_quix"] = spread([r["ratio_vs_quix"] for r in runs])
    res["ratio_vs_ceiling"] = spread([r["ratio_vs_ceiling"] for r in runs])
    met = {"stream_readings_per_s": res["ours"]["readings_per_s"]["median"] >= TARGETS["stream_readings_per_s"],
           "stream_net_readings_per_s": res["ours"]["net_readings_per_s"]["median"] >= TARGETS["stream_readings_per_s"],
           "stream_ratio_vs_quix": res["ratio_vs_quix"]["median"] >= TARGETS["stream_ratio_vs_quix"]}
    published = "" if stream_settings()["publish_features"] else ", features not published to Kafka"
    label = {"ours": f"ours: `gigapulse stream --drain` (raw lake and every feature table{published})",
             "quix": f"Quix Streams {env['libraries'].get('quixstreams')} (1-min window per sensor → Parquet, "
                     f"{'rows re-keyed by sensor' if opts.quix_variant == 'group_by' else 'windowed by gateway key'})",
             "ceiling": "aiokafka consumer, decode only (Python ceiling)"}
    rows = []
    for name in ("ours", "quix", "ceiling"):
        r = res[name]
        ratio = "1" if name == "ours" else fmt_spread(res[f"ratio_vs_{name}"], 2)
        rows.append([label[name], f"{r['readings']:,}", fmt_spread(r["readings_per_s"]), fmt_spread(r["wall_s"], 1),
                     fmt_spread(r["peak_rss_mib"], 0), ratio])
    table = markdown_table(["worker", "readings", "readings/s, median (min–max)", "wall s", "peak RSS MiB",
                            "ours / it"], rows)
    ours = res["ours"]
    table += (f"\n\nOurs net of start-up: {fmt_spread(ours['net_readings_per_s'])} readings/s (the same drain over "
              f"empty topics takes {fmt_spread(ours['startup_s'], 1)} s: interpreter, imports, asset model, Faust "
              f"start, group join, shutdown).\n\nTargets: ≥ {TARGETS['stream_readings_per_s']:,} readings/s per worker: "
              f"end to end {'met' if met['stream_readings_per_s'] else 'MISSED'}, net of start-up "
              f"{'met' if met['stream_net_readings_per_s'] else 'MISSED'}; ≥ {TARGETS['stream_ratio_vs_quix']:g}× Quix "
              f"{'met' if met['stream_ratio_vs_quix'] else 'MISSED'}.")
    if opts.compact_every_s:
        oc = res["ours_compacting"]
        table += (f"\n\nWith `gigapulse lake compact --loop` every {opts.compact_every_s:g} s beside the worker "
                  f"({', '.join(map(str, oc['steps']))} steps per run, every lake count exact): "
                  f"{fmt_spread(oc['readings_per_s'])} readings/s, {fmt_spread(res['compaction_ratio'], 2)}× the "
                  "drain without it (same runs, back to back).")
    return {
        "bench": "stream", "environment": env, "targets": {k: TARGETS[k] for k in met}, "met": met,
        "params": {"runs": opts.runs, "plant": PLANT, "seed": opts.seed, "broker_nodes": opts.nodes,
                   "prefill_simulated_s": opts.prefill_s,
                   "prefill": {k: fill[k] for k in ("readings", "messages", "bytes", "wall_s")},
                   "partitions": 6, "compact_every_s": opts.compact_every_s, "quix_readings": quix_limit, "quix_variant": opts.quix_variant,
                   "stream_settings": stream_settings()},
        "results": res, "runs": runs, "table": table, "profile_top": profile_text,
    }
