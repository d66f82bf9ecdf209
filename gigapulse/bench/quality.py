"""``gigapulse bench quality``: the gate model on a long run of a plant, against the simulator's truth.

1. **Build once, cache.** ``<cache>/quality-<plant>-<hours>h/`` holds a lake of ``--hours`` of the
   plant (seed 42, from a midnight, with the warehouse bench's hourly gateway outages), built without
   a broker by :mod:`gigapulse.bench.lakebuild` with the simulator's ground truth at the gate beside
   it (``truth.parquet``), compacted, and each day's ``cell_features`` landed as the Dagster asset
   lands it. ``build.json`` records the plan and the time each step took.
2. **Train and evaluate.** Cells with a verdict, in gate order; the earliest ``1 - test_share`` train
   the classifier and the capacity regressor, the latest are the test cells
   (:mod:`transforms.predictive.model`). The report gives the model's figures beside the base rate,
   the filling-only model and the best achievable AUC (the ranking by true probability), and
   whether the drivers the simulator really uses (the ``scrap`` weights of the plant file) are among
   the model's top five.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gigapulse.bench.harness import BenchError
from gigapulse.bench.report import console, environment, markdown_table, progress

#: A midnight: a run of up to 24 hours is one UTC day; longer runs span several.
START = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
TARGET_SHARE_OF_CEILING = 0.9


@dataclass
class QualityOptions:
    hours: float = 12.0
    plants: tuple[str, ...] = ("reference", "legacy")
    test_share: float = 0.3
    rebuild: bool = False
    workers: int = 2
    seed: int = 42
    cache: Path = Path("var/bench")


def scrap_drivers(plant: Any) -> dict[str, float]:
    """``<station>.<parameter>`` -> summed scrap weight, from the plant file's ``sim.scrap`` of each sensor.

    What the simulator really uses to make cells bad: the stems a good model's top drivers should
    start with. Station ids are those within a line (``coat-c``), as the feature names use them.
    """
    weights: dict[str, float] = {}
    for st in plant.template.stations:
        for sensor in st.sensors:
            scrap = (sensor.sim or {}).get("scrap")
            if scrap:
                key = f"{st.id}.{sensor.parameter}"
                weights[key] = weights.get(key, 0.0) + float(scrap.get("weight", 0.0))
    return weights


def names_driver(feature: str, stem: str) -> bool:
    """True if ``feature`` is computed from the sensors ``stem`` (``<station>.<parameter>``) names.

    Either at the station itself (``coat-c.areal_loading.oos_share``) or, for the dry room's sensors,
    during a visit elsewhere (``fill.dry_room.dew_point_filling.oos_share``).
    """
    station, parameter = stem.split(".", 1)
    return feature.startswith(stem + ".") or f".{station}.{parameter}." in feature


def cached_quality_lake(opts: QualityOptions, plant_name: str) -> tuple[Path, dict[str, Any]]:
    """The bench lake of ``plant_name`` with its truth and its ``cell_features`` days (built if not cached)."""
    from gigapulse.bench.lakebuild import LakePlan, build_lake, reuse_or_clear
    from schemas.asset_model import load_plant
    from schemas.batch import CELL_FEATURES
    from transforms.batch.cell_features import cell_features, day_window
    from transforms.batch.store import write_day
    from transforms.warehouse import build_catalog
    from transforms.warehouse.maintenance import compact
    from transforms.warehouse.reader import connect

    plant = load_plant(plant_name)
    plan = LakePlan(seconds=int(round(opts.hours * 3600)), start=START, seed=opts.seed)
    root = Path(opts.cache) / f"quality-{plant_name}-{opts.hours:g}h"
    record_path = root / "build.json"
    record = reuse_or_clear(root, plan, opts.rebuild)
    if record is not None:
        console.print(f"reusing the lake in {root} (built {record['built_at']}; --rebuild to start over)")
        return root, record
    lake, db = root / "lake", root / "gigapulse.duckdb"
    with progress() as bar:
        task = bar.add_task(f"building {opts.hours:g} h of the {plant_name} plant", total=plan.seconds,
                            info="simulated s")
        build = build_lake(plant, lake, plan, workers=opts.workers, on_progress=lambda s: bar.update(task, completed=s),
                           truth_out=root / "truth.parquet")
    with console.status("compacting ..."):
        rep = compact(lake, db, grace_s=0)
    build_catalog(lake, db)
    days, t0 = [], time.perf_counter()
    day = START.date()
    end = plan.start + timedelta(seconds=plan.seconds)
    with progress() as bar:
        n_days = (end.date() - day).days + 1
        task = bar.add_task("cell_features per day", total=n_days, info="")
        while datetime(day.year, day.month, day.day, tzinfo=UTC) < end:
            con = connect(db)
            try:
                t_day = time.perf_counter()
                rows = cell_features(con, *day_window(day))
            finally:
                con.close()
            write_day(lake, CELL_FEATURES, day, rows)
            days.append({"date": day.isoformat(), "cells": rows.num_rows, "seconds": time.perf_counter() - t_day})
            bar.update(task, advance=1, info=f"{day}: {rows.num_rows:,} cells")
            day += timedelta(days=1)
    record = {"plan": plan.to_dict(), "complete": True, "plant": plant_name,
              "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
              "build": {"readings": build.readings, "events": build.events, "wall_s": build.wall_s,
                        "workers": build.workers},
              "compaction_s": rep.seconds, "features": {"days": days, "wall_s": time.perf_counter() - t0}}
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return root, record


def evaluate_plant(opts: QualityOptions, plant_name: str) -> dict[str, Any]:
    """Train and evaluate on one plant's cached lake; returns the evaluation and the bench's own figures."""
    import pyarrow.parquet as pq

    from schemas.asset_model import load_plant
    from schemas.batch import CELL_FEATURES
    from transforms.batch.store import BATCH_DIR
    from transforms.predictive.dataset import build_dataset, read_labels, time_split
    from transforms.predictive.model import evaluate_gate_models
    from transforms.warehouse.reader import connect

    root, record = cached_quality_lake(opts, plant_name)
    features = pq.read_table(root / "lake" / BATCH_DIR / CELL_FEATURES.name)
    if features.num_rows == 0:
        raise BenchError(f"{plant_name}: no cell passed the gate in {opts.hours:g} h")
    cells = features.column("cell_id").to_pylist()
    con = connect(root / "gigapulse.duckdb")
    try:
        labels = read_labels(con, cells, START, START + timedelta(hours=opts.hours))
    finally:
        con.close()
    data = build_dataset(features, labels)
    train, test, at = time_split(data, opts.test_share)
    truth_table = pq.read_table(root / "truth.parquet", columns=["cell_id", "p_bad"])
    truth = dict(zip(truth_table.column("cell_id").to_pylist(), truth_table.column("p_bad").to_pylist(), strict=True))
    t0 = time.perf_counter()
    with console.status(f"{plant_name}: training on {len(train):,} cells, evaluating on {len(test):,} ..."):
        ev, _, _ = evaluate_gate_models(train, test, str(at), truth=truth)
    train_s = time.perf_counter() - t0
    weights = scrap_drivers(load_plant(plant_name))
    top5 = [d["feature"] for d in ev.drivers[:5]]
    named = sorted({w for w in weights if any(names_driver(f, w) for f in top5)})
    return {"plant": plant_name, "record": record, "evaluation": ev.to_dict(), "train_and_evaluate_s": train_s,
            "cells_with_verdict": len(data), "cells_gated": features.num_rows, "scrap_weights": weights,
            "top5": top5, "top5_scrap_drivers": named,
            "met": {"share_of_ceiling": ev.share_of_ceiling is not None
                    and ev.share_of_ceiling >= TARGET_SHARE_OF_CEILING,
                    "beats_base_rate": ev.model.roc_auc > ev.base_rate.roc_auc,
                    "beats_filling_only": ev.filling_only is None or ev.model.roc_auc > ev.filling_only.roc_auc}}


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def run_quality(opts: QualityOptions) -> dict[str, Any]:
    env = environment()
    results = [evaluate_plant(opts, p) for p in opts.plants]
    rows = []
    for r in results:
        ev = r["evaluation"]
        m, b, f = ev["model"], ev["base_rate"], ev["filling_only"]
        rows.append([r["plant"], f"{ev['train_cells']:,} / {ev['test_cells']:,} ({m['bad']:,} bad)",
                     _fmt(m["roc_auc"]), _fmt(ev["bayes_auc"]), _fmt(ev["share_of_ceiling"], 2),
                     _fmt(f["roc_auc"] if f else None), _fmt(b["roc_auc"]), _fmt(m["pr_auc"]), _fmt(b["pr_auc"]),
                     _fmt(m["brier"], 4), f"{m['at_share']['0.05']['precision']:.2f} / {m['at_share']['0.05']['recall']:.2f}",
                     f"{m['at_share']['0.10']['precision']:.2f} / {m['at_share']['0.10']['recall']:.2f}",
                     f"{_fmt(ev['capacity_mae'], 3)} ({_fmt(ev['capacity_baseline_mae'], 3)})"])
    table = markdown_table(["plant", "train / test cells", "ROC AUC", "best achievable", "share of the way",
                            "filling only", "base rate", "PR AUC", "PR AUC base", "Brier", "P / R at 5%",
                            "P / R at 10%", "capacity MAE Ah (median's)"], rows)
    drivers = {r["plant"]: r["evaluation"]["drivers"][:5] for r in results}
    return {"bench": "quality", "environment": env,
            "params": {"hours": opts.hours, "plants": list(opts.plants), "test_share": opts.test_share,
                       "seed": opts.seed},
            "results": results, "table": table, "drivers": drivers,
            "met": {r["plant"]: r["met"] for r in results}}
