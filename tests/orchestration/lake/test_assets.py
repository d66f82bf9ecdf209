"""The lake's assets, called directly and through Dagster's executor on real (temporary) lakes."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import dagster as dg

from orchestration.lake import lake_compaction, lake_rollups, warehouse_catalog
from orchestration.resources import WarehouseResource


def test_warehouse_catalog_calls_build_catalog(monkeypatch, tmp_path):
    calls: list[tuple[Path, Path]] = []
    fake = types.ModuleType("transforms.warehouse")
    def build_catalog(lake_root, db_path):
        calls.append((lake_root, db_path))
        return {"readings": "parquet", "sensors": "empty"}

    fake.build_catalog = build_catalog
    # The asset imports transforms.warehouse when it runs; a stand-in keeps this test about the wiring.
    monkeypatch.setitem(sys.modules, "transforms.warehouse", fake)

    resource = WarehouseResource(lake_root=str(tmp_path / "lake"), db_path=str(tmp_path / "w.duckdb"))
    result = warehouse_catalog(context=dg.build_asset_context(), warehouse=resource)

    assert calls == [(tmp_path / "lake", tmp_path / "w.duckdb")]
    assert result.metadata["db_path"].value == str(tmp_path / "w.duckdb")
    assert result.metadata["views_without_data"] == 1


def test_warehouse_catalog_job_builds_a_real_catalog_twice(tmp_path):
    """The real build over an empty lake, through Dagster's executor; a rebuild leaves the same views."""
    import duckdb

    resource = WarehouseResource(lake_root=str(tmp_path / "lake"), db_path=str(tmp_path / "w.duckdb"))
    views = []
    for _ in range(2):
        result = dg.materialize([warehouse_catalog], resources={"warehouse": resource})
        assert result.success
        with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
            views.append(sorted(r[0] for r in con.execute(
                "SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()))
    assert views[0] and views[0] == views[1]


def test_lake_compaction_asset_compacts_a_real_lake(tmp_path, monkeypatch):
    """The maintenance step through Dagster's executor: committed stream files merged, rows unchanged."""
    monkeypatch.setenv("GIGAPULSE_LAKE_SETTLE_S", "0")  # the files were written a moment ago
    from datetime import date

    import duckdb

    from tests.transforms.warehouse.rollups.support import at, event, write_rows
    from tests.transforms.warehouse.test_maintenance import BATCH, make_lake, set_checkpoint

    lake = tmp_path / "lake"
    truth = make_lake(lake, batches=4)
    day = date(2026, 11, 28)
    write_rows(lake, "production_events", [event(at(day, 9), "c1", "enter", offset=0),
                                           event(at(day, 9, 5), "c1", "leave", offset=1)])
    for p in (0, 1):
        set_checkpoint(lake, p, 4 * BATCH)
    resource = WarehouseResource(lake_root=str(lake), db_path=str(tmp_path / "w.duckdb"))
    result = dg.materialize([lake_compaction, lake_rollups], resources={"warehouse": resource})
    assert result.success
    assert result.asset_materializations_for_node("lake_rollups")[0].metadata["rollup_days_built"].value >= 1
    meta = result.asset_materializations_for_node("lake_compaction")[0].metadata
    assert meta["generation"].value == 1
    assert meta["hot_files_merged"].value >= 8
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*), sum(value) FROM readings").fetchone() == truth
