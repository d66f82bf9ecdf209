"""``gigapulse bench scoring``: seconds from a cell's filling ``leave`` event to its score in DuckDB.

The whole live path on a private broker, at the reference plant's own rate (``simulate --speed
realtime --start now``, so an event's timestamp is the wall-clock instant it was sent):

1. A champion is trained first, untimed: the classifier on the cached lake of ``gigapulse bench
   quality`` (built if missing), saved to the run's model registry with its top drivers.
2. ``gigapulse stream`` lands readings and events, ``gigapulse lake compact --loop`` publishes the
   catalog (as the compose services do) and ``gigapulse score`` scores each cell at the gate.
3. A poller opens the warehouse every ``poll_s`` and notes when each cell's row becomes visible in
   ``cell_risk``. Latency = that instant minus the leave event's arrival in Kafka (``arrived_at``,
   its append time): the platform's part. The twin sends a tick's events when the tick ends, up to
   a second after their timestamps, so the latency from the event's own timestamp is reported too.

Cells only reach the gate after the line has filled (about 4.5 simulated minutes from mixing to
filling), so a run of ``minutes`` measures the cells of its last ``minutes - 4.5``. The report
splits the latency at ``scored_at``: waiting for the history to land plus computing the features,
then writing the file and the poll that sees it.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from gigapulse.bench.harness import (
    BenchBroker,
    BenchError,
    bench_broker,
    child_env,
    stop_child,
    warm_bytecode,
)
from gigapulse.bench.report import console, environment, markdown_table, progress

TARGET_P99_S = 2.0


@dataclass
class ScoringOptions:
    minutes: float = 10.0
    plant: str = "reference"
    poll_s: float = 0.1
    compact_every_s: float = 10.0
    grace_s: float = 40.0
    model_hours: float = 3.0
    #: The stream worker's checkpoint interval (None: its default). A cell waits for the checkpoint
    #: that lands its gate event and readings, so this is part of the latency.
    stream_flush_s: float | None = None
    cache: Path = Path("var/bench")
    seed: int = 42


def train_champion(opts: ScoringOptions, lake: Path) -> dict[str, Any]:
    """Train the classifier on the cached quality lake and make it the champion of ``lake``'s registry."""
    import pyarrow.parquet as pq

    from gigapulse.bench.quality import START, QualityOptions, cached_quality_lake
    from schemas.batch import CELL_FEATURES
    from transforms.batch.store import BATCH_DIR
    from transforms.predictive import registry
    from transforms.predictive.dataset import build_dataset, read_labels
    from transforms.predictive.model import fit_classifier, permutation_drivers
    from transforms.warehouse.reader import connect

    root, _ = cached_quality_lake(QualityOptions(hours=opts.model_hours, plants=(opts.plant,), cache=opts.cache),
                                  opts.plant)
    features = pq.read_table(root / "lake" / BATCH_DIR / CELL_FEATURES.name)
    con = connect(root / "gigapulse.duckdb")
    try:
        labels = read_labels(con, features.column("cell_id").to_pylist(), START,
                             START + timedelta(hours=opts.model_hours))
    finally:
        con.close()
    data = build_dataset(features, labels)
    t0 = time.perf_counter()
    clf, choice = fit_classifier(data)
    top = [d["feature"] for d in permutation_drivers(clf, data.X, data.bad, data.names, "roc_auc", 20)]
    version = f"gate-{START:%Y%m%d}-{uuid.uuid4().hex[:6]}"
    model = registry.GateModel(version=version, classifier=clf, regressor=None, names=data.names,
                               medians=registry.feature_medians(data.X), top_features=top, schema_hash=registry.schema_hash(data.names))
    registry.save_model(lake, model, {"bench": "scoring", "cells": len(data)})
    registry.set_champion(lake, version, by="bench:scoring", reason="the bench's champion")
    return {"version": version, "cells": len(data), "features": len(data.names), "model": choice["chosen"],
            "train_s": time.perf_counter() - t0}


@dataclass
class Seen:
    """What the poller saw: per cell, when its row became visible, with its gate and scoring instants."""

    #: cell -> (gate ts, arrived at, scored at, visible at, complete), epoch seconds
    rows: dict[str, tuple[float, float, float, float, bool]] = field(default_factory=dict)
    polls: list[float] = field(default_factory=list)
    error: str | None = None


def _poll(db: Path, since: datetime, poll_s: float, stop: threading.Event, seen: Seen) -> None:
    from transforms.warehouse.reader import connect

    while not stop.is_set():
        t0 = time.time()
        if db.is_file():
            try:
                con = connect(db)
                try:
                    rows = con.execute("SELECT cell_id, epoch(gate_ts), epoch(arrived_at), epoch(scored_at), complete "
                                       "FROM cell_risk WHERE gate_ts >= $since", {"since": since}).fetchall()
                finally:
                    con.close()
                now = time.time()
                for cell, gate, arrived, scored, complete in rows:
                    if cell not in seen.rows:
                        seen.rows[cell] = (gate, arrived, scored, now, complete)
                seen.polls.append(now - t0)
            except Exception as exc:  # noqa: BLE001 - a catalog swap mid-poll: retry, keep the last error
                seen.error = str(exc).splitlines()[0]
        stop.wait(max(0.0, poll_s - (time.time() - t0)))


def scoring_once(bb: BenchBroker, opts: ScoringOptions) -> dict[str, Any]:
    data_dir = bb.scratch("scoring")
    lake = data_dir / "lake"
    with console.status("training the champion on the cached quality lake ..."):
        champion = train_champion(opts, lake)
    env = child_env(bb, GIGAPULSE_DATA_DIR=str(data_dir), GIGAPULSE_LAKE_INTERVAL_S=str(opts.compact_every_s),
                    GIGAPULSE_SCORE_LOG_EVERY_S="30", GIGAPULSE_SCORE_TRACE=str(data_dir / "trace.jsonl"))
    if opts.stream_flush_s is not None:
        env["GIGAPULSE_STREAM_FLUSH_SECONDS"] = str(opts.stream_flush_s)
    log = open(data_dir / "children.log", "wb")  # noqa: SIM115 - closed in finally, after the children
    cli = [sys.executable, "-m", "gigapulse.cli"]
    children = {name: psutil.Popen([*cli, *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
                for name, args in (("stream", ["stream"]), ("compactor", ["lake", "compact", "--loop"]),
                                   ("scorer", ["score"]))}
    since = datetime.now(UTC)
    sim = psutil.Popen([*cli, "simulate", "--plant", opts.plant, "--duration", f"{opts.minutes:g}m", "--speed",
                        "realtime", "--start", "now", "--seed", str(opts.seed)], env=env, stdout=log,
                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    seen, stop = Seen(), threading.Event()
    poller = threading.Thread(target=_poll, args=(data_dir / "gigapulse.duckdb", since, opts.poll_s, stop, seen),
                              daemon=True)
    poller.start()
    cpu = {}
    try:
        with progress() as bar:
            task = bar.add_task(f"{opts.plant} plant in real time", total=int(opts.minutes * 60), info="")
            t0 = time.monotonic()
            while sim.poll() is None:
                for name, proc in children.items():
                    if proc.poll() is not None:
                        log.flush()
                        opts.cache.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(data_dir / "children.log", opts.cache / "scoring-children.log")
                        raise BenchError(f"{name} exited with code {proc.returncode} (the children's log: "
                                         f"{opts.cache / 'scoring-children.log'}): "
                                         f"{(data_dir / 'children.log').read_text(errors='replace')[-800:]}")
                bar.update(task, completed=min(int(time.monotonic() - t0), int(opts.minutes * 60)),
                           info=f"{len(seen.rows):,} cells scored and visible")
                time.sleep(0.5)
            if sim.returncode != 0:
                raise BenchError(f"simulate exited with code {sim.returncode}")
            time.sleep(opts.grace_s)
        for name, proc in children.items():
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                cpu[name] = (t.user + t.system) / (time.monotonic() - t0)
    finally:
        stop.set()
        poller.join(10)
        for proc in children.values():
            stop_child(proc)
        stop_child(sim)
        log.close()
    gate = _gate_events(data_dir, since)
    rows = seen.rows
    lat = np.array([vis - a for _, a, _, vis, _ in rows.values()])
    from_ts = np.array([vis - g for g, _, _, vis, _ in rows.values()])
    twin = np.array([a - g for g, a, _, _, _ in rows.values()])
    wait = np.array([s - a for _, a, s, _, _ in rows.values()])
    land = np.array([vis - s for _, _, s, vis, _ in rows.values()])
    scorer_lines = [ln for ln in (data_dir / "children.log").read_text(errors="replace").splitlines()
                    if "transforms.scorer" in ln]
    stages = _stages(data_dir / "trace.jsonl", rows)
    if (data_dir / "trace.jsonl").is_file():  # kept beside the reports, for a closer look at the tail
        opts.cache.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data_dir / "trace.jsonl", opts.cache / "scoring-trace.jsonl")
    return {"champion": champion, "gate_cells": len(gate), "stages": stages, "scored_visible": len(rows),
            "never_visible": len(set(gate) - set(rows)), "incomplete": sum(not c for *_, c in rows.values()),
            "p50_s": _pct(lat, 50), "p99_s": _pct(lat, 99), "max_s": float(lat.max()) if len(lat) else None,
            "from_event_ts_p50_s": _pct(from_ts, 50), "from_event_ts_p99_s": _pct(from_ts, 99),
            "twin_send_delay_p50_s": _pct(twin, 50),
            "arrived_to_scored_p50_s": _pct(wait, 50), "arrived_to_scored_p99_s": _pct(wait, 99),
            "scored_to_visible_p50_s": _pct(land, 50), "scored_to_visible_p99_s": _pct(land, 99),
            "poll_p50_s": _pct(np.array(seen.polls), 50), "cpu_share": cpu, "poll_error": seen.error,
            "scorer_log": scorer_lines[-4:], "data_dir": str(data_dir)}


#: The steps of a cell's way from its event's arrival to its row in DuckDB, from the scorer's trace.
STAGES = (("arrived", "read", "read by the scorer"), ("read", "landed", "history landed (stream checkpoints)"),
          ("landed", "started", "waiting for the scorer (previous batch, next check)"),
          ("started", "computed", "features and score"), ("computed", "written", "file and checkpoint written"),
          ("written", "visible", "seen by a poll"))


def _stages(trace: Path, rows: dict[str, tuple]) -> dict[str, dict[str, float | None]]:
    """p50 / p99 / max seconds of each step of :data:`STAGES`, over the cells the poller saw."""
    import orjson

    steps: dict[str, list[float]] = {label: [] for *_, label in STAGES}
    if not trace.is_file():
        return {}
    for line in trace.read_bytes().splitlines():
        t = orjson.loads(line)
        if t["cell_id"] not in rows or t["arrived"] is None or t["landed"] is None:
            continue
        t["visible"] = rows[t["cell_id"]][3]
        t["landed"] = max(t["landed"], t["read"])  # the checkpoint may predate the read
        for a, b, label in STAGES:
            steps[label].append(t[b] - t[a])
    return {label: {"p50": _pct(np.array(v), 50), "p99": _pct(np.array(v), 99),
                    "max": float(max(v)) if v else None} for label, v in steps.items()}


def _pct(a: np.ndarray, q: float) -> float | None:
    return float(np.percentile(a, q)) if len(a) else None


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def _gate_events(data_dir: Path, since: datetime) -> list[str]:
    from transforms.warehouse import build_catalog
    from transforms.warehouse.reader import connect

    db = data_dir / "gigapulse.duckdb"
    build_catalog(data_dir / "lake", db)
    con = connect(db)
    try:
        return [r[0] for r in con.execute(
            "SELECT DISTINCT unit_id FROM production_events WHERE kind = 'leave' AND stage = 'filling' "
            "AND unit_type = 'cell' AND ts >= $since", {"since": since}).fetchall()]
    finally:
        con.close()


def run_scoring(opts: ScoringOptions) -> dict[str, Any]:
    env = environment()
    with bench_broker() as bb:
        warm_bytecode(bb, ["gigapulse.cli", "transforms.scorer", "transforms.app", "sklearn.ensemble"])
        r = scoring_once(bb, opts)
    table = markdown_table(
        ["cells at the gate", "scored and visible", "never visible", "incomplete", "p50 s", "p99 s", "max s",
         "arrived → scored p50 / p99 s", "scored → visible p50 / p99 s", "from the event's ts p50 / p99 s",
         "p99 / target"],
        [[f"{r['gate_cells']:,}", f"{r['scored_visible']:,}", f"{r['never_visible']:,}", f"{r['incomplete']:,}",
          _fmt(r["p50_s"]), _fmt(r["p99_s"]), _fmt(r["max_s"]),
          f"{_fmt(r['arrived_to_scored_p50_s'])} / {_fmt(r['arrived_to_scored_p99_s'])}",
          f"{_fmt(r['scored_to_visible_p50_s'])} / {_fmt(r['scored_to_visible_p99_s'])}",
          f"{_fmt(r['from_event_ts_p50_s'])} / {_fmt(r['from_event_ts_p99_s'])}",
          _fmt(r["p99_s"] / TARGET_P99_S if r["p99_s"] is not None else None)]])
    if r.get("stages"):
        table += "\n\n" + markdown_table(
            ["step", "p50 s", "p99 s", "max s"],
            [[label, _fmt(v["p50"]), _fmt(v["p99"]), _fmt(v["max"])] for label, v in r["stages"].items()])
    return {"bench": "scoring", "environment": env,
            "params": {"minutes": opts.minutes, "plant": opts.plant, "poll_s": opts.poll_s,
                       "compact_every_s": opts.compact_every_s, "model_hours": opts.model_hours,
                       "stream_flush_s": opts.stream_flush_s},
            "result": r, "table": table,
            "met": {"p99_le_2s": r["p99_s"] is not None and r["p99_s"] <= TARGET_P99_S and r["never_visible"] == 0}}
