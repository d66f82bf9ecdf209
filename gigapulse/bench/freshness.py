"""``gigapulse bench freshness``: seconds from a reading's timestamp to its visibility in DuckDB."""

from __future__ import annotations

import bisect
import contextlib
import functools
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from gigapulse.bench.harness import (
    MIB,
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
from gigapulse.bench.report import (
    TARGETS,
    environment,
    fmt_spread,
    markdown_table,
    profile_top,
    progress,
    spread,
)

# --------------------------------------------------------------------------- freshness

@dataclass
class FreshnessOptions:
    runs: int = 3
    rate: int = 20_000
    duration_s: float = 60.0
    warmup_s: float = 15.0
    poll_s: float = 0.1
    grace_s: float = 20.0
    seed: int = 42
    profile: Path | None = None
    #: Seconds between maintenance steps run beside the worker (as the compose service does); None: none.
    compact_every_s: float | None = 10.0


class Stages:
    """Where a frame's time goes: producer to broker ack, ack to its lake file, file to a query seeing it.

    The producer's future gives each frame's partition and offset at its ack; the hot file whose
    offset range holds it (its modification time is when the worker finished writing it, just
    before the rename) gives the worker's share; the rest is the commit and the poller.
    """

    def __init__(self, lake: Path):
        self.table_dir = lake / "readings"
        self.acks: dict[tuple[str, int], tuple[float, int, int]] = {}
        self.files: dict[int, list[tuple[int, int, float]]] = {}
        self.samples: list[tuple[float, float, float, float]] = []  # ts_s, produce, worker, visible

    def on_ack(self, gateway: str, ts_ms: int, metadata) -> None:
        self.acks[(gateway, ts_ms)] = (time.time(), metadata.partition, metadata.offset)

    def _refresh(self) -> None:
        from transforms.lake import parse_file_name

        files: dict[int, list[tuple[int, int, float]]] = {}
        for ddir in self.table_dir.glob("date=*"):
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(ddir):
                    rng = parse_file_name(entry.name)
                    if rng is not None:
                        with contextlib.suppress(FileNotFoundError):
                            files.setdefault(rng.partition, []).append(
                                (rng.first_offset, rng.last_offset, entry.stat().st_mtime))
        self.files = {p: sorted(v) for p, v in files.items()}

    def _file_time(self, partition: int, offset: int) -> float | None:
        ranges = self.files.get(partition, [])
        i = bisect.bisect_right(ranges, (offset, float("inf"), float("inf"))) - 1
        if i >= 0 and ranges[i][0] <= offset <= ranges[i][1]:
            return ranges[i][2]
        return None

    def seen(self, gateway: str, ts_ms: int, visible_at: float) -> None:
        ack = self.acks.pop((gateway, ts_ms), None)
        if ack is None:
            return
        ack_t, partition, offset = ack
        file_t = self._file_time(partition, offset)
        if file_t is None:
            self._refresh()
            file_t = self._file_time(partition, offset)
        if file_t is None:
            return
        ts = ts_ms / 1000
        self.samples.append((ts, ack_t - ts, file_t - ack_t, visible_at - file_t))


class PacedFrames:
    """Frames of the reference plant's sensors at a fixed rate, time-stamped when produced.

    One reading per sensor per tick, grouped into one frame per gateway (station) and keyed by it,
    as a plant's edge gateways send them; the tick length makes the rate exact (sensors / rate).
    ``ts_ms`` is the wall clock at the moment the frame is encoded, so what the poller measures is
    everything after the plant: produce, broker, worker, Parquet, DuckDB.
    """

    def __init__(self, plant, rate: int, seed: int):
        import numpy as np

        self.rate = rate
        by_gw: dict[str, list] = {}
        for e in plant.sensors:
            by_gw.setdefault(f"{e.site}.{e.station}", []).append(e)
        self.gateways = []
        rng = np.random.default_rng(seed)
        for gw, entries in by_gw.items():
            ids = [e.sensor_id for e in entries]
            base = np.array([e.target if e.target is not None else
                             ((e.lsl + e.usl) / 2 if e.lsl is not None and e.usl is not None else 1.0)
                             for e in entries], dtype=np.float64)
            noise = np.array([abs(e.usl - e.lsl) / 12 if e.lsl is not None and e.usl is not None else 0.01
                              for e in entries], dtype=np.float64)
            meter = np.array([e.is_energy_meter for e in entries], dtype=bool)
            self.gateways.append((gw, ids, np.arange(len(ids), dtype=np.int32), base, noise, meter))
        self.n_sensors = sum(len(g[1]) for g in self.gateways)
        self.tick_s = self.n_sensors / rate
        self._rng = rng
        self._kwh = 0.0

    def tick(self) -> list[tuple[str, bytes, int, int]]:
        """(gateway, payload, readings, ts_ms) of one tick, stamped with the current wall clock."""
        import numpy as np

        from schemas.contracts import encode_frame_arrays

        out = []
        self._kwh += 0.001
        for gw, ids, idx, base, noise, meter in self.gateways:
            value = base + noise * self._rng.standard_normal(len(ids))
            value[meter] = self._kwh
            ts_ms = int(time.time() * 1000)
            ts = np.full(len(ids), ts_ms, dtype=np.int64)
            out.append((gw, encode_frame_arrays(gw, ids, idx, ts, value), len(ids), ts_ms))
        return out


class Visibility:
    """Polls DuckDB for the newest reading visible per gateway, and times each frame's first sighting.

    Frames of one gateway go to one partition in order, and a worker commits a partition's lake
    files in offset order, so a frame is visible exactly when its gateway's newest visible ``ts``
    has reached the frame's ``ts``. The time credited is the end of the poll that first saw it
    (never earlier than true visibility).
    """

    SQL = ("SELECT site || '.' || station AS gateway, epoch_ms(max(ts)) FROM readings "
           "WHERE ts >= make_timestamptz(? * 1000) GROUP BY ALL")

    def __init__(self, data_dir: Path, poll_s: float):
        self.lake = data_dir / "lake"
        self.db = data_dir / "gigapulse.duckdb"
        self.poll_s = poll_s
        self.pending: dict[str, deque] = {}
        self.latencies: list[tuple[float, float]] = []  # (ts_s, latency_s)
        self.poll_times: list[float] = []
        self.poll_at: list[float] = []
        self.stages = Stages(self.lake)
        self.first_seen: float | None = None
        self.catalog = False
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="visibility", daemon=True)

    def expect(self, gateway: str, ts_ms: int) -> None:
        self.pending.setdefault(gateway, deque()).append(ts_ms)

    def oldest_pending_ms(self) -> int | None:
        heads = [q[0] for q in list(self.pending.values()) if q]
        return min(heads) if heads else None

    def _poll(self) -> None:
        from transforms.warehouse import build_catalog, query

        if not self.catalog:
            if not any((self.lake / "readings").rglob("*.parquet")):
                return
            build_catalog(self.lake, self.db)  # once: the view's glob picks up every later file
            self.catalog = True
        since = self.oldest_pending_ms()
        if since is None:
            return
        t0 = time.time()
        _, rows = query(self.db, self.SQL, [since])
        t1 = time.time()
        self.poll_times.append(t1 - t0)
        self.poll_at.append(t1)
        for gw, max_ms in rows:
            q = self.pending.get(gw)
            while q and q[0] <= max_ms:
                ts = q.popleft()
                self.latencies.append((ts / 1000, t1 - ts / 1000))
                self.stages.seen(gw, ts, t1)
                if self.first_seen is None:
                    self.first_seen = t1

    def _loop(self) -> None:
        nxt = time.monotonic()
        try:
            while not self.stop.is_set():
                self._poll()
                nxt += self.poll_s
                self.stop.wait(max(0.0, nxt - time.monotonic()))
        except BaseException as exc:  # noqa: BLE001 - surfaced by the caller after join
            self.error = exc


_INTAKE = re.compile(r"intake lag p50 ([\d.]+)s")


def _percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def freshness_once(bb: BenchBroker, opts: FreshnessOptions, plant, bar=None, label: str = "",
                   profile: Path | None = None) -> dict[str, Any]:
    """One worker, one paced producer, one poller: latency from reading ts to DuckDB visibility."""
    from ingestion.producer import PlantProducer
    from ingestion.settings import ProducerSettings

    topics = (new_topic(bb.bootstrap, "fresh.readings", 6, readings_topic_config()),
              new_topic(bb.bootstrap, "fresh.events", 3), new_topic(bb.bootstrap, "fresh.dlq", 1))
    data_dir = bb.scratch("fresh")
    env = child_env(bb, GIGAPULSE_DATA_DIR=str(data_dir),
                    GIGAPULSE_STREAM_GROUP_ID=f"bench-fresh-{uuid.uuid4().hex[:8]}",
                    GIGAPULSE_STREAM_LOG_EVERY_S="5")  # its intake lag, for the breakdown
    prefix = [sys.executable, "-m", "cProfile", "-o", str(profile)] if profile else [sys.executable]
    cmd = [*prefix, "-m", "gigapulse.cli", "stream", "--readings-topic", topics[0],
           "--events-topic", topics[1], "--dlq-topic", topics[2], "--loglevel", "info"]
    log = open(data_dir / "worker.log", "wb")  # noqa: SIM115 - closed in finally, after the child
    worker = psutil.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    compactor = None
    if opts.compact_every_s:
        # What the compose service lake-maintenance runs, beside the worker.
        compactor = psutil.Popen([sys.executable, "-m", "gigapulse.cli", "lake", "compact", "--loop"],
                                 env={**env, "GIGAPULSE_LAKE_INTERVAL_S": str(opts.compact_every_s)},
                                 stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    producer = PlantProducer(bb.bootstrap, ProducerSettings(), client_id="gigapulse-bench-fresh")
    frames = PacedFrames(plant, opts.rate, opts.seed)
    vis = Visibility(data_dir, opts.poll_s)
    vis.thread.start()
    peak_rss = 0
    cpu0 = 0.0
    worker_cpu = float("nan")
    measured_from = None
    produced = 0
    task = bar.add_task(label, total=int(opts.duration_s), info="waiting for the worker") if bar else None
    try:
        t0 = time.monotonic()
        k = 0
        deadline_first = t0 + 120.0
        while True:
            now = time.monotonic()
            if worker.poll() is not None:
                raise BenchError(f"the stream worker exited with code {worker.returncode}: "
                                 f"{(data_dir / 'worker.log').read_text(errors='replace')[-600:]}")
            if measured_from is None:
                if vis.first_seen is not None and time.time() - vis.first_seen >= opts.warmup_s:
                    # The worker starts (group join, asset load) while frames already flow; its
                    # catch-up after the first sighting is start-up, not steady-state freshness.
                    measured_from = time.time()
                    produced = 0
                    t_measure = now
                    with contextlib.suppress(psutil.Error):
                        cpu = worker.cpu_times()
                        cpu0 = cpu.user + cpu.system
                elif now > deadline_first:
                    raise BenchError("no reading became visible in DuckDB within 120 s of starting the worker")
            elif now - t_measure >= opts.duration_s:
                break
            for gw, payload, n, ts_ms in frames.tick():
                vis.expect(gw, ts_ms)
                fut = producer.send_frame(gw, payload, n, topics[0])
                fut.add_callback(functools.partial(vis.stages.on_ack, gw, ts_ms))
                produced += n
            k += 1
            if k % 20 == 0:
                with contextlib.suppress(psutil.Error):
                    peak_rss = max(peak_rss, worker.memory_info().rss)
                if task is not None and measured_from is not None:
                    bar.update(task, completed=int(now - t_measure), info=f"{len(vis.latencies):,} frames seen")
            sleep = t0 + k * frames.tick_s - time.monotonic()
            if sleep > 0:
                time.sleep(sleep)
        produced_rate = produced / (time.monotonic() - t_measure)
        with contextlib.suppress(psutil.Error):
            cpu = worker.cpu_times()
            worker_cpu = (cpu.user + cpu.system - cpu0) / (time.monotonic() - t_measure)
        producer.flush()
        grace_end = time.monotonic() + opts.grace_s
        while vis.oldest_pending_ms() is not None and time.monotonic() < grace_end and vis.error is None:
            time.sleep(0.1)
    finally:
        vis.stop.set()
        vis.thread.join(10)
        producer.close()
        stop_child(worker)
        if compactor is not None:
            stop_child(compactor)
        log.close()
        if task is not None:
            bar.remove_task(task)
    if vis.error is not None:
        raise BenchError(f"polling DuckDB failed: {vis.error}")
    lat = [latency for ts, latency in vis.latencies if ts >= measured_from]
    never = sum(1 for q in vis.pending.values() for ts in q if ts / 1000 >= measured_from)
    stages = [s for s in vis.stages.samples if s[0] >= measured_from]
    polls = [(at, took) for at, took in zip(vis.poll_at, vis.poll_times, strict=True) if at >= measured_from]
    window = min(60.0, opts.duration_s / 4)
    poll_first = [took for at, took in polls if at < measured_from + window]
    poll_last = [took for at, took in polls if at >= polls[-1][0] - window] if polls else []
    intake = [float(m.group(1)) for m in _INTAKE.finditer((data_dir / "worker.log").read_text(errors="replace"))]
    delete_topics(bb.bootstrap, list(topics))
    shutil.rmtree(data_dir, ignore_errors=True)
    return {"frames": len(lat), "never_visible": never, "rate": produced_rate,
            "p50_s": _percentile(lat, 50), "p99_s": _percentile(lat, 99), "max_s": max(lat) if lat else None,
            "poll_p50_s": _percentile(vis.poll_times, 50), "worker_peak_rss_mib": peak_rss / MIB,
            "poll_first_p50_s": _percentile(poll_first, 50), "poll_last_p50_s": _percentile(poll_last, 50),
            "stage_samples": len(stages),
            # The worker's own progress lines: Kafka timestamp to the worker taking the message.
            "intake_p50_s": _percentile(intake[1:], 50),
            **{f"{name}_{q}_s": _percentile([st[i] for st in stages], pct)
               for i, name in ((1, "produce"), (2, "worker"), (3, "visible")) for q, pct in (("p50", 50), ("p99", 99))},
            "worker_cpu_pct": 100 * worker_cpu}


def run_freshness(opts: FreshnessOptions) -> dict[str, Any]:
    """p50/p99 of reading-ts → visible-in-DuckDB at a fixed rate, against a live worker."""
    from ingestion.pipeline import IngestRun
    from ingestion.producer import PlantProducer
    from ingestion.settings import ProducerSettings
    from schemas.asset_model import load_plant

    env = environment()
    plant = load_plant(PLANT)
    runs = []
    with bench_broker() as bb:
        # The worker refuses readings of sensors it does not know: publish the model as simulate does.
        producer = PlantProducer(bb.bootstrap, ProducerSettings(), client_id="gigapulse-bench-assets")
        IngestRun(plant, producer, opts.seed, datetime.now(UTC)).publish_assets()
        producer.close()
        warm_bytecode(bb, ["gigapulse.cli", "transforms.app", "faust"])
        with progress() as bar:
            for i in range(opts.runs):
                runs.append(freshness_once(bb, opts, plant, bar, f"run {i + 1}/{opts.runs}: {opts.rate:,} readings/s"))
            profile_text = None
            if opts.profile:
                opts.profile.parent.mkdir(parents=True, exist_ok=True)
                freshness_once(bb, opts, plant, bar, "profiling the worker (cProfile, not in the figures)",
                               profile=opts.profile.resolve())
                profile_text = profile_top(opts.profile)
    stage_keys = [f"{n}_{q}_s" for n in ("produce", "worker", "visible") for q in ("p50", "p99")]
    res = {k: spread([r[k] for r in runs]) for k in ("p50_s", "p99_s", "max_s", "rate", "poll_p50_s",
                                                     "poll_first_p50_s", "poll_last_p50_s", "intake_p50_s",
                                                     "worker_peak_rss_mib", "worker_cpu_pct", *stage_keys)}
    res["frames"] = [r["frames"] for r in runs]
    res["never_visible"] = [r["never_visible"] for r in runs]
    met = {"freshness_p99_s": res["p99_s"]["median"] <= TARGETS["freshness_p99_s"]
           and not any(res["never_visible"])}
    rows = [["p50 s", fmt_spread(res["p50_s"], 2), ""],
            ["p99 s", fmt_spread(res["p99_s"], 2),
             f"≤ {TARGETS['freshness_p99_s']:g} ({'met' if met['freshness_p99_s'] else 'MISSED'})"],
            ["max s", fmt_spread(res["max_s"], 2), ""],
            ["achieved rate, readings/s", fmt_spread(res["rate"]), f"{opts.rate:,} asked"],
            ["frames measured per run", ", ".join(f"{n:,}" for n in res["frames"]),
             f"never visible: {sum(res['never_visible'])}"],
            ["DuckDB poll, median s", fmt_spread(res["poll_p50_s"], 3), f"every {opts.poll_s:g} s"],
            ["DuckDB poll, median s, first / last minute", f"{fmt_spread(res['poll_first_p50_s'], 3)} / "
             f"{fmt_spread(res['poll_last_p50_s'], 3)}",
             f"compaction every {opts.compact_every_s:g} s" if opts.compact_every_s else "no compaction"],
            *[[f"{label} p50 / p99 s", f"{fmt_spread(res[f'{key}_p50_s'], 2)} / {fmt_spread(res[f'{key}_p99_s'], 2)}",
               note] for key, label, note in (
                ("produce", "stage: reading ts → broker ack", "encode, producer linger, broker append"),
                ("worker", "stage: ack → lake file written", "worker intake, batch up to the flush, Parquet write; "
                 f"of which intake (Kafka ts → worker) p50 {fmt_spread(res['intake_p50_s'], 2)} s"),
                ("visible", "stage: file → seen by a query", "checkpoint commit, poll interval, DuckDB query"))],
            ["worker peak RSS MiB", fmt_spread(res["worker_peak_rss_mib"], 0), ""],
            ["worker CPU, % of one core", fmt_spread(res["worker_cpu_pct"], 0), "while measured"]]
    table = markdown_table(["measure", "median (min–max) over runs", "target / note"], rows)
    return {
        "bench": "freshness", "environment": env, "targets": {k: TARGETS[k] for k in met}, "met": met,
        "params": {"runs": opts.runs, "rate": opts.rate, "duration_s": opts.duration_s, "warmup_s": opts.warmup_s,
                   "poll_s": opts.poll_s, "compact_every_s": opts.compact_every_s, "plant": PLANT, "sensors": sum(1 for _ in plant.sensors),
                   "stream_settings": stream_settings()},
        "results": res, "runs": runs, "table": table, "profile_top": profile_text,
    }
