"""The report asset writes a page per plant from the warehouse, and the batch assets link to it."""

from __future__ import annotations

import shutil

import dagster as dg

from orchestration.definitions import defs
from orchestration.report import plant_report, report_daily, report_job
from orchestration.resources import WarehouseResource
from transforms.batch.report import figures as F


def test_the_report_asset_writes_both_plants_pages(two_plant_warehouse, tmp_path):
    data = shutil.copytree(two_plant_warehouse.parent, tmp_path / "data")
    warehouse = WarehouseResource(lake_root=str(data / "lake"), db_path=str(data / "gigapulse.duckdb"))
    result = plant_report(context=dg.build_asset_context(), warehouse=warehouse)
    pages = result.metadata["pages"].data
    assert set(pages) == {"leg", "ref"}
    assert result.metadata["report"].path == str(data / "report")
    radar = (data / "report" / "leg-readiness-radar.png").read_bytes()
    assert F.ink_share(radar) > 0.03


def test_the_report_runs_daily_after_the_batch_schedules_and_reads_their_assets():
    assert defs.resolve_job_def("report_job").name == report_job.name
    assert report_daily.cron_schedule == "30 2 * * *"
    upstream = {k.to_user_string() for k in defs.resolve_assets_def("plant_report").asset_deps[dg.AssetKey("plant_report")]}
    assert {"readiness_scores", "material_loss", "plant_kpis"} <= upstream
