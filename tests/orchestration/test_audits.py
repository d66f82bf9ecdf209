"""The sensor density audit asset lands its two tables for its day, and a rerun leaves the same bytes."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import dagster as dg
import pyarrow.parquet as pq
import pytest

from orchestration.audits import sensor_density_audit
from orchestration.definitions import defs
from orchestration.partitions import daily_partitions
from orchestration.resources import WarehouseResource
from schemas.batch import SENSOR_DENSITY_AUDIT, SENSOR_GAPS
from transforms.batch.store import day_path
from transforms.warehouse.reader import connect


@pytest.fixture
def warehouse_copy(two_plant_warehouse, tmp_path):
    data = shutil.copytree(two_plant_warehouse.parent, tmp_path / "data")
    con = connect(data / "gigapulse.duckdb")
    try:
        day = con.execute("SELECT max(date) FROM sensor_health_daily").fetchone()[0]
    finally:
        con.close()
    return WarehouseResource(lake_root=str(data / "lake"), db_path=str(data / "gigapulse.duckdb")), day


def test_the_audit_lands_its_day_and_a_rerun_leaves_the_same_bytes(warehouse_copy):
    warehouse, day = warehouse_copy
    lake = warehouse.paths().lake_root
    result = sensor_density_audit(context=dg.build_asset_context(partition_key=day.isoformat()), warehouse=warehouse)
    files = [day_path(lake, spec, day) for spec in (SENSOR_DENSITY_AUDIT, SENSOR_GAPS)]
    first = [f.read_bytes() for f in files]
    audit = pq.read_table(files[0])
    assert result.metadata["dagster/row_count"] == audit.num_rows > 0
    assert result.metadata["gap_rows"] == pq.read_table(files[1]).num_rows > 0
    assert "| leg |" in result.metadata["preview"].md_str and "| ref |" in result.metadata["preview"].md_str
    assert set(result.metadata["sensor_coverage"].data) == {"leg", "ref"}
    sensor_density_audit(context=dg.build_asset_context(partition_key=day.isoformat()), warehouse=warehouse)
    assert [f.read_bytes() for f in files] == first


def test_the_asset_is_daily_partitioned_and_in_the_code_location():
    assert sensor_density_audit.partitions_def == daily_partitions and daily_partitions.timezone == "UTC"
    assert "2026-01-02" in daily_partitions.get_partition_keys(current_time=datetime(2026, 1, 5, tzinfo=UTC))
    job = defs.resolve_job_def("audits_job")
    assert job.partitions_def == daily_partitions
