"""The plant_kpis asset on a copy of the two-plant warehouse: both plants have rows, the metered share
travels with the energy figures, and a second materialization leaves the same file byte for byte."""

from __future__ import annotations

import shutil

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest

from orchestration.kpis import plant_kpis, plant_kpis_daily
from orchestration.resources import WarehouseResource
from schemas.batch import PLANT_KPIS
from transforms.batch.store import day_path
from transforms.warehouse import build_catalog


@pytest.fixture
def warehouse_copy(two_plant_warehouse, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(two_plant_warehouse.parent, root)
    with duckdb.connect(str(root / "gigapulse.duckdb"), read_only=True) as con:
        day = con.sql("SELECT max(date) FROM production_events").fetchall()[0][0]
    resource = WarehouseResource(lake_root=str(root / "lake"), db_path=str(root / "gigapulse.duckdb"))
    return resource, root, day


def test_plant_kpis_lands_the_day_and_rematerializes_identically(warehouse_copy):
    resource, root, day = warehouse_copy
    result = plant_kpis(context=dg.build_asset_context(partition_key=day.isoformat()), warehouse=resource)
    path = day_path(root / "lake", PLANT_KPIS, day)
    first = path.read_bytes()
    assert result.metadata["dagster/row_count"] == pq.read_table(path).num_rows == 4
    per_plant = result.metadata["per_plant"].value
    assert per_plant["leg"]["metered_share"] < per_plant["ref"]["metered_share"] / 4
    assert "metered_share" in result.metadata["preview"].value
    plant_kpis(context=dg.build_asset_context(partition_key=day.isoformat()), warehouse=resource)
    assert path.read_bytes() == first
    # the catalog's view shows the landed day
    build_catalog(root / "lake", root / "gigapulse.duckdb")
    with duckdb.connect(str(root / "gigapulse.duckdb"), read_only=True) as con:
        got = con.sql("SELECT site, line FROM plant_kpis WHERE date = ? ORDER BY ALL", params=[day]).fetchall()
    assert got == [("leg", "L1"), ("leg", "L2"), ("ref", "L1"), ("ref", "L2")]


def test_plant_kpis_follows_the_rollups_on_a_daily_schedule():
    assert dg.AssetKey("lake_rollups") in plant_kpis.dependency_keys
    assert plant_kpis_daily.default_status is dg.DefaultScheduleStatus.STOPPED
