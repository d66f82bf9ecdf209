"""The material_loss asset on a copy of the two-plant warehouse: it lands the day, reports it, and a
second materialization leaves the same file byte for byte."""

from __future__ import annotations

import shutil

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest

from orchestration.definitions import defs
from orchestration.quality import material_loss, material_loss_daily, material_loss_job
from orchestration.resources import WarehouseResource
from schemas.batch import MATERIAL_LOSS
from transforms.batch.store import day_path


@pytest.fixture
def warehouse_copy(two_plant_warehouse, tmp_path):
    """A writable copy of the session's two-plant warehouse: (resource, lake root, day of its data)."""
    root = tmp_path / "data"
    shutil.copytree(two_plant_warehouse.parent, root)
    with duckdb.connect(str(root / "gigapulse.duckdb"), read_only=True) as con:
        day = con.sql("SELECT max(date) FROM production_events").fetchall()[0][0]
    resource = WarehouseResource(lake_root=str(root / "lake"), db_path=str(root / "gigapulse.duckdb"))
    return resource, root / "lake", day


def test_material_loss_lands_the_day_and_rematerializes_identically(warehouse_copy):
    resource, lake, day = warehouse_copy
    result = material_loss(context=dg.build_asset_context(partition_key=day.isoformat()), warehouse=resource)
    path = day_path(lake, MATERIAL_LOSS, day)
    first = path.read_bytes()
    table = pq.read_table(path)
    assert result.metadata["dagster/row_count"] == table.num_rows > 0
    assert set(table["site"].to_pylist()) == {"ref", "leg"}
    assert result.metadata["total_kg"] == pytest.approx(sum(table["kg"].to_pylist()), abs=1e-5)
    assert result.metadata["total_value"] > 0 and result.metadata["unbooked_scrap_by_site"].value == {}
    assert "| lithium |" in result.metadata["preview"].value
    material_loss(context=dg.build_asset_context(partition_key=day.isoformat()), warehouse=resource)
    assert path.read_bytes() == first


def test_material_loss_is_daily_with_a_stopped_schedule():
    assert material_loss.partitions_def.get_partition_keys()[0] == "2024-01-01"
    assert material_loss_daily.default_status is dg.DefaultScheduleStatus.STOPPED
    assert defs.resolve_job_def(material_loss_job.name).partitions_def is not None
