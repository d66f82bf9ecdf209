"""The Dagster code location of gigapulse: what ``gigapulse jobs webserver`` and ``jobs daemon`` load.

For now it holds one asset, the DuckDB catalog over the Parquet lake, because stream workers write only
Parquet (a DuckDB file has one writer) and something has to own that single writer. The batch jobs of
the platform (rollups, audits, readiness, material loss, data quality) join it here as they land.
"""

# No ``from __future__ import annotations``: Dagster inspects the asset's parameter annotations
# (context, resources) as real types when the decorator runs.
import dagster as dg

from orchestration import quality
from orchestration.resources import WarehousePaths, WarehouseResource

#: Run tag the compose instance limits to one run at a time (infra/dagster/dagster.yaml).
DUCKDB_WRITER_TAG = "gigapulse/duckdb_writer"


@dg.asset(group_name="warehouse", kinds={"duckdb", "parquet"})
def warehouse_catalog(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """The DuckDB catalog over the Parquet lake, so analysts query tables instead of files.

    Stream workers only add Parquet files (DuckDB allows one writer per file), so the catalog is rebuilt
    here, by the one process that writes the DuckDB file, to pick up the partitions written since the
    last build. Rebuilding is idempotent: the catalog is recreated over whatever the lake holds.
    """
    # Imported here so the code location loads even where the warehouse code cannot import.
    from transforms.warehouse import build_catalog

    paths = warehouse.paths()
    context.log.info(f"building the DuckDB catalog {paths.db_path} over {paths.lake_root}")
    views = build_catalog(paths.lake_root, paths.db_path)
    # view -> 'parquet' (reads files), 'empty' (no file yet) or 'derived'
    return dg.MaterializeResult(
        metadata={
            "lake_root": dg.MetadataValue.path(str(paths.lake_root)),
            "db_path": dg.MetadataValue.path(str(paths.db_path)),
            "views": dg.MetadataValue.json(dict(views)),
            "views_without_data": sum(kind == "empty" for kind in views.values()),
        }
    )


@dg.asset(group_name="warehouse", kinds={"duckdb", "parquet"})
def lake_compaction(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """The lake compacted and expired: the stream's small committed files merged per table and day.

    Runs the same maintenance step as ``gigapulse lake compact`` (settings ``GIGAPULSE_LAKE_*``), which
    publishes a new catalog by atomic rename, so it never blocks readers or the stream. It holds the
    lake's own maintenance lock, so a run overlapping a CLI step fails fast instead of waiting.
    """
    from transforms.settings import LakeSettings
    from transforms.warehouse.maintenance import compact

    paths = warehouse.paths()
    settings = LakeSettings()
    report = compact(paths.lake_root, paths.db_path, settings.retention_days, grace_s=settings.grace_s,
                     progress=lambda msg: context.log.info(f"compacting {msg}"))
    return dg.MaterializeResult(
        metadata={
            "generation": report.generation,
            "hot_files_merged": report.hot_files_merged,
            "rows_written": report.rows_written,
            "days_expired": sum(len(t.dates_expired) for t in report.tables.values()),
            "files_deleted": report.files_deleted,
            "seconds": round(report.seconds, 2),
        }
    )


@dg.asset(group_name="warehouse", kinds={"duckdb", "parquet"}, deps=[lake_compaction])
def lake_rollups(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """The daily rollups (quality, energy per day and shift, sensor statistics and Cpk/Ppk, sensor health).

    Incremental: only the days whose source files changed since their rollup was built (late data
    for an old day rebuilds that day), after the compaction of the same run.
    """
    from transforms.warehouse.rollups import lake_sources, refresh_rollups

    paths = warehouse.paths()
    report = refresh_rollups(lake_sources(paths.lake_root), paths.lake_root,
                             on_built=lambda r: context.log.info(f"built {r.name} {r.day}"))
    return dg.MaterializeResult(
        metadata={
            "rollup_days_built": len(report.built),
            "days": dg.MetadataValue.json(sorted({r.day.isoformat() for r in report.built})),
            "kept_with_expired_sources": len(report.kept),
        }
    )


lake_compaction_job = dg.define_asset_job(
    "lake_compaction_job",
    selection=[lake_compaction, lake_rollups],
    description="Merge the stream's committed files, expire old days, publish the catalog, refresh the rollups.",
    tags={DUCKDB_WRITER_TAG: "true"},
)

lake_compaction_every_5_minutes = dg.ScheduleDefinition(
    name="lake_compaction_every_5_minutes",
    job=lake_compaction_job,
    cron_schedule="*/5 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)

warehouse_catalog_job = dg.define_asset_job(
    "warehouse_catalog_job",
    selection=[warehouse_catalog],
    description="Rebuild the DuckDB catalog over the lake.",
    tags={DUCKDB_WRITER_TAG: "true"},
)

# Stopped by default: a fresh stack has an empty lake, and an operator turns the cadence on in the UI.
warehouse_catalog_every_15_minutes = dg.ScheduleDefinition(
    name="warehouse_catalog_every_15_minutes",
    job=warehouse_catalog_job,
    cron_schedule="*/15 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)

_core = dg.Definitions(
    assets=[warehouse_catalog, lake_compaction, lake_rollups],
    jobs=[warehouse_catalog_job, lake_compaction_job],
    schedules=[warehouse_catalog_every_15_minutes, lake_compaction_every_5_minutes],
    resources={"warehouse": WarehouseResource()},
)

#: The code location: the core definitions above, merged with each domain's ``defs``.
defs = dg.Definitions.merge(_core, quality.defs)

__all__ = ["DUCKDB_WRITER_TAG", "WarehousePaths", "WarehouseResource", "defs"]
