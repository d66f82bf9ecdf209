"""A lake made by the simulator without Kafka: the reference plant through the stream's own partition
processors, the asset model as the sensors table, and a catalog over it.

What the warehouse tests query as "real data": every table and rollup has rows (dead letters included:
one malformed reading every ten ticks, as ``simulate --inject-faults`` sends; an event re-sent every
thirty, as a producer retrying does), and the data ends now,
so the documented examples that look at today or the last hour find it (``sim_warehouse`` of the
warehouse tests is the one to use for fixed dates, midnight and genealogy).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from ingestion.simulator import PlantSimulator
from schemas.asset_model import load_plant
from schemas.contracts import encode
from transforms import partitions as P
from transforms.settings import StreamSettings
from transforms.warehouse import build_catalog, write_sensors
from transforms.warehouse.rollups import lake_sources, refresh_rollups

#: Simulated seconds: the first cells are graded after about 90 s, the first scrap at formation later.
SECONDS = 240
BAD_READING = b'{"not": "a reading"}'


def simulation_start(seconds: float, now: datetime | None = None) -> datetime:
    """``seconds`` before now on a whole minute (no partial first window), but never before today's
    midnight (UTC), so that every row is dated today; data a few minutes ahead of the clock is fine."""
    now = now or datetime.now(UTC)
    start = (now - timedelta(seconds=seconds)).replace(second=0, microsecond=0)
    return max(start, now.replace(hour=0, minute=0, second=0, microsecond=0))


def build_simulated_lake(data_dir: Path, seconds: float = SECONDS, seed: int = 7,
                         plants: tuple[str, ...] = ("reference",)) -> Path:
    """Write ``seconds`` of each plant into ``data_dir/lake`` and build ``data_dir/gigapulse.duckdb``
    over it; returns the warehouse file. Each plant is one source partition of each topic, as two
    plants' gateways keyed by site land on different partitions."""
    lake = Path(data_dir) / "lake"
    settings = StreamSettings(publish_features=False)
    start = simulation_start(seconds)
    dead: list = []
    sensors = []
    for partition, name in enumerate(plants):
        plant = load_plant(name)
        sensors += plant.sensors
        dead += _simulate_into(lake, settings, plant, partition, seconds, seed, start)
    # The app sends refusals to plant.dlq.v1; its dead-letter partition lands them.
    letters = P.DeadLettersPartition("plant.dlq.v1", 0, lake, settings)
    for offset, letter in enumerate(dead):
        letters.add(offset, None, encode(letter))
    letters.checkpoint(final=True)
    write_sensors(lake, sensors)
    refresh_rollups(lake_sources(lake), lake)  # what `gigapulse lake rollup` does
    db = Path(data_dir) / "gigapulse.duckdb"
    build_catalog(lake, db)
    _land_batch_tables(lake, db)
    build_catalog(lake, db)  # again, so the batch tables' views read the days just landed
    return db


def _land_batch_tables(lake: Path, db: Path) -> None:
    """What the daily batch assets land (material loss, KPIs, audits, readiness, cell features, the models
    table, the gate's value), for every day of events."""
    from schemas.batch import (
        CELL_FEATURES,
        MATERIAL_LOSS,
        PLANT_KPIS,
        READINESS_SCORES,
        RETROFIT_PAYBACK,
        RETROFIT_PLAN,
        SENSOR_DENSITY_AUDIT,
        SENSOR_GAPS,
    )
    from transforms.batch.cell_features import cell_features, day_window
    from transforms.batch.density import density_tables
    from transforms.batch.kpis import plant_kpis_day
    from transforms.batch.material import load_reference, material_loss_day
    from transforms.batch.readiness import assess_day, readiness_table
    from transforms.batch.retrofit import retrofit_tables
    from transforms.batch.store import write_day
    from transforms.predictive.value import critical_kg_per_cell
    from transforms.settings import MaterialSettings
    from transforms.warehouse.reader import connect

    ref = load_reference(MaterialSettings())
    con = connect(db)
    try:
        days = [d for (d,) in con.sql("SELECT DISTINCT date FROM production_events ORDER BY date").fetchall()]
        for day in days:
            write_day(lake, MATERIAL_LOSS, day, material_loss_day(con, day, ref.products, ref.bom, ref.prices).rows)
            write_day(lake, PLANT_KPIS, day, plant_kpis_day(con, day, ref.products))
            a = assess_day(con, day)
            for spec, table in zip((SENSOR_DENSITY_AUDIT, SENSOR_GAPS, READINESS_SCORES, RETROFIT_PLAN, RETROFIT_PAYBACK),
                                   (*density_tables(a.audit), readiness_table(a.scores),
                                    *retrofit_tables(a.plan, a.paybacks)), strict=True):
                write_day(lake, spec, day, table)
            features = cell_features(con, *day_window(day))
            write_day(lake, CELL_FEATURES, day, features)
            if _land_cell_risk(lake, day, features, first_offset=days.index(day) * 1_000_000):
                _land_gate_value(con, lake, day, features, critical_kg_per_cell(ref))
    finally:
        con.close()


def _land_cell_risk(lake: Path, day, features, first_offset: int) -> bool:
    """What ``gigapulse score`` lands for these cells, with a small model trained on them as champion
    (its label, a dew point above the median, only has to give both classes). The first day's model is
    saved in the lake's registry as the champion, with its ``models`` row and a training record made by
    the training code's own functions on those cells (curves, reliability, drivers). False when the day
    has too few cells."""

    import numpy as np
    import pyarrow as pa
    import sklearn
    from sklearn.ensemble import HistGradientBoostingClassifier

    from schemas.tables import CELL_RISK, SCORED_EVENTS
    from transforms.lake import LakeWriter
    from transforms.predictive import registry
    from transforms.predictive.dataset import feature_matrix
    from transforms.predictive.model import evaluate_scores, permutation_drivers, score_curves
    from transforms.predictive.scoring import risk_rows
    from transforms.predictive.training import land_model_row

    if features.num_rows < 10:
        return False
    X, names = feature_matrix(features.column("features").to_pylist())
    j = next(i for i, n in enumerate(names) if n.endswith("dew_point.mean"))
    y = np.nan_to_num(X[:, j]) > np.nanmedian(X[:, j])
    clf = HistGradientBoostingClassifier(max_iter=20, min_samples_leaf=3, random_state=0).fit(X, y)
    medians = registry.feature_medians(X)
    model = registry.GateModel(version="gate-20260101-5a1b2c", classifier=clf, regressor=None, names=names,
                               medians=medians, top_features=[names[j]], schema_hash=registry.schema_hash(names))
    if registry.champion(lake) is None:
        score = model.score(X)
        report = evaluate_scores(score, y)
        now, note = datetime.now(UTC), "the simulated lake's model"
        row = {"date": day, "version": model.version, "train_from": day, "train_until": day,
               "train_cells": len(y), "test_cells": len(y), "test_bad": int(y.sum()), "roc_auc": report.roc_auc,
               "pr_auc": report.pr_auc, "brier": report.brier, "base_rate": float(y.mean()),
               "features": len(names), "schema_hash": model.schema_hash, "top_features": model.top_features,
               "path": str(registry.model_path(lake, model.version)), "sklearn_version": sklearn.__version__,
               "created_at": now, "promotable": True, "promotion_note": note, "promoted_at": now,
               "promoted_by": "tests"}
        record = {**row, "test_curves": score_curves(score, y), "reliability": report.reliability,
                  "drivers": permutation_drivers(clf, X, y, names, "roc_auc", 5)}
        registry.save_model(lake, model, record)
        registry.set_champion(lake, model.version, by="tests", reason=note)
        land_model_row(lake, row)
    cells = features.column("cell_id").to_pylist()
    rows = risk_rows(features, model, datetime.now(UTC), {c: True for c in cells},
                     {c: (0, first_offset + i) for i, c in enumerate(cells)})
    LakeWriter.for_table(lake, CELL_RISK).write(SCORED_EVENTS, 0, first_offset, first_offset + len(rows) - 1,
                                                pa.Table.from_pylist(rows, schema=CELL_RISK.file_schema))
    return True


def _land_gate_value(con, lake: Path, day, features, kg_per_cell: dict) -> None:
    """What ``quality_gate_value`` lands for the day, with the lake's champion at the default flag share."""
    from schemas.batch import QUALITY_GATE_VALUE
    from transforms.batch.store import write_day
    from transforms.predictive import registry
    from transforms.predictive.value import quality_gate_value_day
    from transforms.settings import GateSettings

    version = registry.champion(lake)
    model, record = registry.load_model(lake, version), registry.load_record(lake, version)
    result = quality_gate_value_day(con, day, model, record, GateSettings().flag_share, kg_per_cell, features)
    write_day(lake, QUALITY_GATE_VALUE, day, result.rows)


def _simulate_into(lake: Path, settings: StreamSettings, plant, partition: int, seconds: float, seed: int,
                   start: datetime) -> list:
    """One plant's readings and events through the stream's partition processors; returns dead letters."""
    readings = P.ReadingsPartition("plant.readings.v1", partition, lake, settings, plant.by_id)
    events = P.EventsPartition("plant.events.v1", partition, lake, settings)
    dead: list = []
    r_off = e_off = 0
    sim = PlantSimulator(plant, seed=seed, start=start)
    for i, tick in enumerate(sim.run(seconds)):
        for frame in tick.frames:
            readings.add(r_off, None, frame.encode())
            r_off += 1
        for event in tick.events:
            events.add(e_off, None, encode(event))
            e_off += 1
        if i % 30 == 0 and tick.events:  # a producer re-sending what it had sent: duplicate_events has rows
            events.add(e_off, None, encode(tick.events[0]))
            e_off += 1
        if i % 10 == 0:
            readings.add(r_off, None, BAD_READING)
            r_off += 1
            for part in (readings, events):
                result = part.checkpoint()
                dead += result.dead_letters if result else []
    for part in (readings, events):
        result = part.checkpoint(final=True)
        dead += result.dead_letters if result else []
    return dead
