"""The lake domain: the DuckDB catalog, compaction with retention, the daily rollups, their jobs,
schedules, and the sensor that starts maintenance when the stream commits new files.

Every asset here writes the DuckDB file or the lake's maintenance state and sits in the pool
:data:`orchestration.resources.DUCKDB_POOL`. Schedules and the sensor are stopped by default: a fresh
stack has an empty lake, and an operator turns on the cadence (or the sensor) in the UI.
"""

import dagster as dg

from orchestration.dq import lake_quality_job
from orchestration.lake.assets import lake_compaction, lake_rollups, warehouse_catalog
from orchestration.lake.sensors import build_new_lake_partitions_sensor

lake_compaction_job = dg.define_asset_job(
    "lake_compaction_job",
    selection=[lake_compaction, lake_rollups],
    description="Merge the stream's committed files, expire old days, publish the catalog, refresh the rollups.",
)

warehouse_catalog_job = dg.define_asset_job(
    "warehouse_catalog_job",
    selection=[warehouse_catalog],
    description="Rebuild the DuckDB catalog over the lake.",
)

lake_compaction_every_5_minutes = dg.ScheduleDefinition(
    name="lake_compaction_every_5_minutes",
    job=lake_compaction_job,
    cron_schedule="*/5 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)

warehouse_catalog_every_15_minutes = dg.ScheduleDefinition(
    name="warehouse_catalog_every_15_minutes",
    job=warehouse_catalog_job,
    cron_schedule="*/15 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)

#: The day's data-quality checks start with the maintenance run for every day that received rows.
new_lake_partitions = build_new_lake_partitions_sensor(lake_compaction_job, check_jobs=[lake_quality_job])

defs = dg.Definitions(
    assets=[warehouse_catalog, lake_compaction, lake_rollups],
    jobs=[warehouse_catalog_job, lake_compaction_job],
    schedules=[warehouse_catalog_every_15_minutes, lake_compaction_every_5_minutes],
    sensors=[new_lake_partitions],
)

__all__ = ["defs", "lake_compaction", "lake_compaction_every_5_minutes", "lake_compaction_job", "lake_rollups",
           "new_lake_partitions", "warehouse_catalog", "warehouse_catalog_every_15_minutes", "warehouse_catalog_job"]
