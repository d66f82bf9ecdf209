"""The lake's own assets: the DuckDB catalog, compaction with retention, and the daily rollups.

Each writes the DuckDB file or the lake's maintenance state, so each is in the pool
:data:`orchestration.resources.DUCKDB_POOL`: the compose instance lets one such step run at a time
across all runs (infra/dagster/dagster.yaml), whichever job or backfill started it.
"""

# No ``from __future__ import annotations``: Dagster inspects the asset's parameter annotations
# (context, resources) as real types when the decorator runs.
import dagster as dg

from orchestration.resources import DUCKDB_POOL, WarehouseResource


@dg.asset(group_name="warehouse", kinds={"duckdb", "parquet"}, pool=DUCKDB_POOL)
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


@dg.asset(group_name="warehouse", kinds={"duckdb", "parquet"}, pool=DUCKDB_POOL)
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
    report = compact(paths.lake_root, paths.db_path, settings.retention_days, **settings.compaction(),
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


@dg.asset(group_name="warehouse", kinds={"duckdb", "parquet"}, deps=[lake_compaction], pool=DUCKDB_POOL)
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
