"""The cell_features asset on a copy of the small genealogy warehouse: one row per gated cell, landed per
day, the same file on a second run, and the view shows it."""

from __future__ import annotations

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest

from orchestration.dq import lake_keys
from orchestration.predictive import cell_features, cell_features_daily
from orchestration.resources import WarehouseResource
from schemas.batch import CELL_FEATURES
from tests.transforms.warehouse.support import OUTAGE_FROM, build_sim_warehouse
from transforms.batch.store import day_path
from transforms.warehouse import build_catalog


@pytest.fixture
def warehouse(tmp_path):
    (tmp_path / "data").mkdir()
    sim = build_sim_warehouse(tmp_path / "data")
    return WarehouseResource(lake_root=str(sim.lake), db_path=str(sim.db)), sim


def test_cell_features_lands_each_day_and_rematerializes_identically(warehouse):
    resource, sim = warehouse
    day = OUTAGE_FROM.date()  # the small warehouse's second day (it crosses midnight)
    result = cell_features(context=dg.build_asset_context(partition_key=day.isoformat()), warehouse=resource)
    path = day_path(sim.lake, CELL_FEATURES, day)
    first = path.read_bytes()
    table = pq.read_table(path)
    assert result.metadata["dagster/row_count"] == table.num_rows > 10
    assert "n_features" in result.metadata["preview"].value
    cell_features(context=dg.build_asset_context(partition_key=day.isoformat()), warehouse=resource)
    assert path.read_bytes() == first
    build_catalog(sim.lake, sim.db)
    with duckdb.connect(str(sim.db), read_only=True) as con:
        got = con.sql("SELECT count(*), min(n_features) FROM cell_features WHERE date = ?", params=[day]).fetchall()
    assert got[0][0] == table.num_rows and got[0][1] > 0


def test_cell_features_runs_daily_when_switched_on():
    assert cell_features_daily.default_status is dg.DefaultScheduleStatus.STOPPED
    assert set(lake_keys("readings", "production_events")) <= cell_features.dependency_keys
