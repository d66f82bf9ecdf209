"""The gate model job on a real small lake (cell_features days, grade events, a DuckDB catalog over them):
the first model becomes champion; a model trained on shuffled labels is refused by the blocking check
and the champion stays where it was."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestration import predictive
from orchestration.resources import WarehouseResource
from schemas.batch import CELL_FEATURES
from schemas.tables import PRODUCTION_EVENTS
from transforms.batch.store import write_day
from transforms.predictive import registry as R
from transforms.predictive.training import model_rows
from transforms.warehouse import build_catalog

GOOD_DAY = date(2026, 3, 1)
#: More than TRAINING_DAYS after GOOD_DAY, so its window holds its own cells only.
SHUFFLED_DAY = date(2026, 3, 20)
CELLS = 1000
#: Not an out-of-spec share, so both models are boosted trees: a logistic fit on the one driver alone
#: could rank the test cells well even from shuffled labels (any positive weight does).
DRIVER = "coat-c.areal_loading.mean"
NAMES = [DRIVER, "fill.fill_mass.measured", "fill.dew_point.mean", *[f"mix-a.noise{i}.mean" for i in range(4)]]


def _land_day(lake, day: date, seed: int, shuffle_training_labels: bool) -> list[dict]:
    """``CELLS`` cells gated through ``day`` whose risk follows ``DRIVER``; their grade events, two hours later."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(CELLS, len(NAMES)))
    bad = rng.random(CELLS) < 1 / (1 + np.exp(-(2.5 * X[:, 0] - 3.0)))
    if shuffle_training_labels:  # the earliest 70% (the training cells of the time split) get each other's labels
        k = int(CELLS * 0.7)
        bad[:k] = rng.permutation(bad[:k])
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    step = timedelta(days=1) / CELLS
    rows, events = [], []
    for i in range(CELLS):
        cell, gate = f"ref-L1-{day:%m%d}-C{i:05d}", start + i * step
        rows.append({"cell_id": cell, "site": "ref", "line": "L1", "gate_ts": gate, "upstream_ids": [],
                     "n_features": len(NAMES), "features": list(zip(NAMES, X[i].tolist(), strict=True))})
        events.append({"v": 1, "event_id": f"E-{cell}", "ts": gate + timedelta(hours=2), "site": "ref", "line": "L1",
                       "stage": "aging_eol", "station": "L1-eol", "unit_id": cell, "unit_type": "cell",
                       "kind": "grade", "grade": "C" if bad[i] else "A", "source": "auto", "src_partition": 0,
                       "src_offset": i, "late": False})
    write_day(lake, CELL_FEATURES, day, pa.Table.from_pylist(rows, schema=CELL_FEATURES.file_schema))
    return events


@pytest.fixture
def lake(tmp_path):
    """Two days of cell_features and their verdicts, cataloged; the resource the assets use."""
    lake = tmp_path / "lake"
    events = (_land_day(lake, GOOD_DAY, 1, shuffle_training_labels=False)
              + _land_day(lake, SHUFFLED_DAY, 2, shuffle_training_labels=True))
    for d in sorted({e["ts"].date() for e in events}):
        path = lake / "production_events" / f"date={d}" / "events-0.parquet"
        path.parent.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist([e for e in events if e["ts"].date() == d],
                                            schema=PRODUCTION_EVENTS.file_schema), path)
    build_catalog(lake, tmp_path / "gigapulse.duckdb")
    return WarehouseResource(lake_root=str(lake), db_path=str(tmp_path / "gigapulse.duckdb"))


def _run(resource: WarehouseResource, day: date) -> dg.ExecuteInProcessResult:
    defs = dg.Definitions.merge(predictive.defs, dg.Definitions(resources={"warehouse": resource}))
    return defs.resolve_job_def(predictive.gate_model_job.name).execute_in_process(
        partition_key=day.isoformat(), raise_on_error=False)


def _materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def test_the_first_model_becomes_champion_and_a_worse_one_is_refused(lake):
    lake_root = lake.paths().lake_root
    first = _run(lake, GOOD_DAY)
    assert first.success
    assert _materialized(first) == {"gate_model", "gate_champion"}
    [row] = model_rows(lake_root, GOOD_DAY)
    assert row["roc_auc"] > 0.75 and row["top_features"][0] == DRIVER
    assert row["train_cells"] == 700 and row["test_cells"] == 300 and row["features"] == len(NAMES)
    assert row["promotable"] is True and row["promoted_by"] == "check:promotable"
    champion = row["version"]
    assert R.champion(lake_root) == champion and champion.startswith("gate-20260301-")

    second = _run(lake, SHUFFLED_DAY)
    assert not second.success
    [check] = second.get_asset_check_evaluations()
    assert check.check_name == predictive.PROMOTABLE and not check.passed
    assert check.severity is dg.AssetCheckSeverity.ERROR
    meta = {k: v.value for k, v in check.metadata.items()}
    assert meta["champion"] == champion
    assert meta["new_auc"] < meta["champion_auc"] - 0.1  # shuffled labels really gave a worse model
    assert "below the champion" in check.description
    assert _materialized(second) == {"gate_model"}  # blocked: gate_champion did not run
    assert R.champion(lake_root) == champion
    assert [h["version"] for h in R.champion_history(lake_root)] == [champion]
    [refused] = model_rows(lake_root, SHUFFLED_DAY)
    assert refused["promotable"] is False and "below the champion" in refused["promotion_note"]
    assert refused["promoted_at"] is None and R.versions(lake_root) == [champion, refused["version"]]


def test_the_same_data_gives_the_same_version_and_a_thin_window_fails_clearly(lake, tmp_path):
    lake_root = lake.paths().lake_root
    assert _run(lake, GOOD_DAY).success
    assert _run(lake, GOOD_DAY).success
    [row] = model_rows(lake_root, GOOD_DAY)  # replaced, not added
    assert len(R.champion_history(lake_root)) == 1  # already champion: the alias did not move again
    assert row["promotable"] is True and row["promoted_by"] == "check:promotable"  # and the row still says so
    empty = _run(lake, date(2026, 3, 12))
    assert not empty.success and not _materialized(empty)
    failure = next(e for e in empty.all_events if e.event_type_value == "STEP_FAILURE")
    assert "cells with a verdict in the training window, at least 200 needed" in str(failure.event_specific_data)


def test_gate_model_runs_daily_when_switched_on():
    assert predictive.gate_model_daily.default_status is dg.DefaultScheduleStatus.STOPPED
    assert predictive.cell_features.key in predictive.gate_model.dependency_keys
