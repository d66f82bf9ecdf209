"""``gigapulse bench recovery``: seconds from a worker's ``kill -9`` until freshness is back under 2 s.

Two scenarios, each run ``--runs`` times against live workers fed at a fixed rate by the freshness
bench's paced producer (:class:`~gigapulse.bench.freshness.PacedFrames`):

* **restart**: one worker, killed with SIGKILL and started again at once (what a supervisor or
  ``restart: unless-stopped`` does);
* **survivor**: two workers, one killed and not restarted: the other must take its partitions.

Freshness is what a reader sees: the age of the oldest reading not yet visible in a DuckDB query
(every reading produced longer ago is visible). The recovery time is the span from the kill to the
first poll after the outage's peak that sees freshness back under 2 s (:func:`recovered_after`);
the bench keeps watching ``settle_s`` longer, and records the whole curve in the report's JSON.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from gigapulse.bench.freshness import PacedFrames, Visibility
from gigapulse.bench.harness import (
    PLANT,
    BenchBroker,
    BenchError,
    bench_broker,
    child_env,
    delete_topics,
    new_topic,
    readings_topic_config,
    stop_child,
    stream_settings,
    warm_bytecode,
)
from gigapulse.bench.report import TARGETS, console, environment, fmt_spread, markdown_table, progress, spread

#: The freshness a recovered worker is back under, in seconds (the issue's criterion).
FRESH_S = 2.0
SCENARIOS = ("restart", "survivor")


@dataclass
class RecoveryOptions:
    runs: int = 3
    rate: int = 20_000
    warmup_s: float = 15.0
    settle_s: float = 5.0
    timeout_s: float = 90.0
    poll_s: float = 0.1
    seed: int = 42
    #: Give each worker a static group instance id (as docker-compose.yml does); off: dynamic members.
    instance_ids: bool = True


class NotSteady(BenchError):
    """The workers never held freshness under 2 s before the kill (a machine too busy for the rate)."""


class Staleness(Visibility):
    """:class:`Visibility` that also records, after every poll, how old the oldest unseen reading is."""

    def __init__(self, data_dir: Path, poll_s: float):
        super().__init__(data_dir, poll_s)
        self.samples: list[tuple[float, float]] = []  # (wall time at the end of the poll, staleness s)
        self.vanished = 0  # polls that raced a file being deleted (see _poll)

    def _poll(self) -> None:
        try:
            super()._poll()
        except Exception as exc:  # noqa: BLE001 - only the race below is forgiven
            # A worker taking a partition over deletes the files its dead owner wrote after the last
            # commit point; a query that globbed one of them just before fails. The next poll is fine.
            if "No such file" not in str(exc):
                raise
            self.vanished += 1
            return
        if not self.catalog:
            return
        now = time.time()
        oldest = self.oldest_pending_ms()
        self.samples.append((now, 0.0 if oldest is None else max(0.0, now - oldest / 1000)))

    def staleness(self) -> float | None:
        return self.samples[-1][1] if self.samples else None


def recovered_after(samples: list[tuple[float, float]], kill_at: float, fresh_s: float = FRESH_S) -> float:
    """Seconds from the kill until freshness is back under ``fresh_s`` after the outage it caused.

    The outage is where freshness peaks after the kill; it is over at the first poll after the
    peak that sees everything older than ``fresh_s`` (0 if freshness never reached ``fresh_s``).
    Steady state saws up and down by a checkpoint interval, so "back under" is taken once, not
    "never above again".
    """
    after = [(t, age) for t, age in samples if t >= kill_at]
    if not after:
        return float("nan")
    peak = max(range(len(after)), key=lambda i: after[i][1])
    if after[peak][1] < fresh_s:
        return 0.0
    back = next((t for t, age in after[peak:] if age < fresh_s), None)
    return float("nan") if back is None else back - kill_at


def steady(samples: list[tuple[float, float]], now: float, window_s: float = 5.0,
           fresh_s: float = FRESH_S) -> bool:
    """Freshness in the last ``window_s`` is under ``fresh_s`` at the median (the sawtooth may peak above)."""
    recent = sorted(age for t, age in samples if t > now - window_s)
    return len(recent) >= 5 and recent[len(recent) // 2] < fresh_s


def _worker(cmd: list[str], env: dict[str, str], log: Path) -> psutil.Popen:
    with open(log, "ab") as out:
        return psutil.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def recovery_once(bb: BenchBroker, opts: RecoveryOptions, plant, scenario: str, bar=None,
                  label: str = "") -> dict[str, Any]:
    """Workers at a steady rate, one kill -9 (and, for ``restart``, a restart at once), the recovery timed."""
    from ingestion.producer import PlantProducer
    from ingestion.settings import ProducerSettings

    topics = (new_topic(bb.bootstrap, "recovery.readings", 6, readings_topic_config()),
              new_topic(bb.bootstrap, "recovery.events", 3), new_topic(bb.bootstrap, "recovery.dlq", 1))
    data_dir = bb.scratch(f"recovery_{scenario}")
    group = f"bench-recovery-{uuid.uuid4().hex[:8]}"
    cmd = [sys.executable, "-m", "gigapulse.cli", "stream", "--loglevel", "info", "--readings-topic", topics[0],
           "--events-topic", topics[1], "--dlq-topic", topics[2]]
    n_workers = 1 if scenario == "restart" else 2
    envs = [child_env(bb, GIGAPULSE_DATA_DIR=str(data_dir), GIGAPULSE_STREAM_GROUP_ID=group,
                      **({"GIGAPULSE_STREAM_INSTANCE_ID": f"{group}-w{i}"} if opts.instance_ids else {}))
            for i in range(n_workers)]
    logs = [data_dir / f"worker{i}.log" for i in range(n_workers)]
    workers = [_worker(cmd, env, log) for env, log in zip(envs, logs, strict=True)]
    producer = PlantProducer(bb.bootstrap, ProducerSettings(), client_id="gigapulse-bench-recovery")
    frames = PacedFrames(plant, opts.rate, opts.seed)
    vis = Staleness(data_dir, opts.poll_s)
    vis.thread.start()
    victim = n_workers - 1
    kill_at = restarted_at = None
    fresh_since = None
    stale_seen = settled = False
    task = bar.add_task(label, total=None, info="warming up") if bar else None
    try:
        t0 = time.monotonic()
        k = 0
        while True:
            now = time.monotonic()
            for i, w in enumerate(workers):
                if w is not None and w.poll() is not None:
                    raise BenchError(f"stream worker {i} exited with code {w.returncode}: "
                                     f"{logs[i].read_text(errors='replace')[-600:]}")
            age = vis.staleness()
            if kill_at is None:
                if now - t0 > 60 + opts.warmup_s:
                    recent = ", ".join(f"{a:.1f}" for _, a in vis.samples[-8:])
                    raise NotSteady("the workers did not reach a steady freshness under "
                                     f"{FRESH_S:g} s within {60 + opts.warmup_s:.0f} s (last polls: {recent})")
                if (vis.first_seen is not None and time.time() - vis.first_seen >= opts.warmup_s
                        and steady(vis.samples, time.time())):
                    kill_at = time.time()
                    os.kill(workers[victim].pid, signal.SIGKILL)
                    workers[victim].wait(10)
                    if scenario == "restart":
                        restarted_at = time.time()
                        workers[victim] = _worker(cmd, envs[victim], logs[victim])
                    else:
                        workers[victim] = None
                    if task is not None:
                        bar.update(task, info="killed: waiting for freshness")
            else:
                # Watch until freshness has been back under 2 s for settle_s (a second outage, such
                # as a rebalance when a dead member's session expires, would show in that time).
                if fresh_since is None:
                    stale_seen = stale_seen or (age is not None and age >= FRESH_S)
                    if stale_seen and age is not None and age < FRESH_S:
                        fresh_since = time.time()
                elif time.time() - fresh_since >= opts.settle_s:
                    settled = True
                    break
                if time.time() - kill_at > opts.timeout_s:
                    break
            for gw, payload, n, ts_ms in frames.tick():
                vis.expect(gw, ts_ms)
                producer.send_frame(gw, payload, n, topics[0])
            k += 1
            if task is not None and k % 20 == 0 and age is not None:
                bar.update(task, info=f"freshness {age:.1f} s")
            sleep = t0 + k * frames.tick_s - time.monotonic()
            if sleep > 0:
                time.sleep(sleep)
    finally:
        vis.stop.set()
        vis.thread.join(10)
        producer.close()
        for w in workers:
            if w is not None:
                stop_child(w)
        if task is not None:
            bar.remove_task(task)
    if vis.error is not None:
        raise BenchError(f"polling DuckDB failed: {vis.error}")
    timed_out = not settled
    samples = list(vis.samples)
    recovery = recovered_after(samples, kill_at)
    timed_out = timed_out or math.isnan(recovery)
    peak = max((a for t, a in samples if t >= kill_at), default=0.0)
    delete_topics(bb.bootstrap, list(topics))
    shutil.rmtree(data_dir, ignore_errors=True)
    return {"scenario": scenario, "recovery_s": None if timed_out else recovery, "timed_out": timed_out,
            "peak_staleness_s": peak, "restart_lag_s": None if restarted_at is None else restarted_at - kill_at,
            "polls_after_kill": sum(1 for t, _ in samples if t >= kill_at), "polls_raced_a_deletion": vis.vanished,
            # (seconds since the kill, freshness) from 5 s before the kill: the curve behind the figure
            "trace": [(round(t - kill_at, 2), round(a, 2)) for t, a in samples if t >= kill_at - 5]}


def run_recovery(opts: RecoveryOptions) -> dict[str, Any]:
    """Median recovery time of each scenario over ``opts.runs`` kills, on a private broker."""
    from ingestion.pipeline import IngestRun
    from ingestion.producer import PlantProducer
    from ingestion.settings import ProducerSettings
    from schemas.asset_model import load_plant

    env = environment()
    plant = load_plant(PLANT)
    runs: list[dict[str, Any]] = []
    with bench_broker() as bb:
        producer = PlantProducer(bb.bootstrap, ProducerSettings(), client_id="gigapulse-bench-assets")
        IngestRun(plant, producer, opts.seed, datetime.now(UTC)).publish_assets()
        producer.close()
        warm_bytecode(bb, ["gigapulse.cli", "transforms.app", "faust"])
        with progress() as bar:
            for scenario in SCENARIOS:
                for i in range(opts.runs):
                    try:
                        runs.append(recovery_once(bb, opts, plant, scenario, bar,
                                                  f"{scenario} {i + 1}/{opts.runs}: {opts.rate:,} readings/s"))
                    except NotSteady as exc:
                        # A machine too busy to hold the rate cannot time a recovery; the report says so.
                        console.print(f"{scenario} run {i + 1}: {exc}")
                        runs.append({"scenario": scenario, "not_steady": str(exc)})
    target = TARGETS["recovery_s"]
    res: dict[str, Any] = {}
    met: dict[str, bool] = {}
    rows = []
    what = {"restart": "1 worker: kill -9, restarted at once",
            "survivor": "2 workers: one killed with kill -9, not restarted"}
    for scenario in SCENARIOS:
        mine = [r for r in runs if r["scenario"] == scenario and "not_steady" not in r]
        unsteady = sum(1 for r in runs if r["scenario"] == scenario and "not_steady" in r)
        done = [r["recovery_s"] for r in mine if r["recovery_s"] is not None]
        timeouts = sum(r["timed_out"] for r in mine)
        res[scenario] = {"recovery_s": spread(done) if done else None, "timed_out": timeouts, "not_steady": unsteady,
                         "peak_staleness_s": spread([r["peak_staleness_s"] for r in mine]) if mine else None}
        met[f"recovery_{scenario}_s"] = bool(done) and not timeouts and res[scenario]["recovery_s"]["median"] <= target
        rows.append([what[scenario], fmt_spread(res[scenario]["recovery_s"], 1),
                     fmt_spread(res[scenario]["peak_staleness_s"], 1),
                     f"≤ {target:g} ({'met' if met[f'recovery_{scenario}_s'] else 'MISSED'})"
                     + (f"; {timeouts} run(s) not recovered in {opts.timeout_s:g} s" if timeouts else "")
                     + (f"; {unsteady} run(s) never steady under {FRESH_S:g} s before the kill" if unsteady else "")])
    table = markdown_table(["scenario", f"kill → freshness < {FRESH_S:g} s, s: median (min–max)",
                            "worst freshness after the kill, s", "target s"], rows)
    settings = stream_settings()
    table += (f"\n\n{opts.rate:,} readings/s, {opts.runs} kill(s) per scenario; session timeout "
              f"{settings['session_timeout_s']:g} s, heartbeat {settings['heartbeat_interval_s']:g} s, rebalance "
              f"timeout {settings['rebalance_timeout_s']:g} s, "
              + ("static membership (an instance id per worker)." if opts.instance_ids else "dynamic membership."))
    return {
        "bench": "recovery", "environment": env, "targets": {k: target for k in met}, "met": met,
        "params": {"runs": opts.runs, "rate": opts.rate, "warmup_s": opts.warmup_s, "settle_s": opts.settle_s,
                   "timeout_s": opts.timeout_s, "poll_s": opts.poll_s, "plant": PLANT, "fresh_s": FRESH_S,
                   "instance_ids": opts.instance_ids, "stream_settings": settings},
        "results": res, "runs": runs, "table": table,
    }
