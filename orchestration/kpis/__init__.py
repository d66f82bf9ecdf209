"""KPIs domain: the daily plant KPIs per line, computed from the rollups and landed one file per day.

The asset is thin: :mod:`transforms.batch.kpis` computes, :func:`transforms.batch.store.write_day` lands
the day (replaced whole). It depends on ``lake_rollups``, whose daily rollups hold the counts.
"""

# No ``from __future__ import annotations``: Dagster inspects the asset's parameter annotations.
from datetime import date

import dagster as dg

from orchestration.dq import lake_keys, with_checks
from orchestration.partitions import daily_partitions
from orchestration.preview import markdown_preview
from orchestration.resources import DUCKDB_POOL, WarehouseResource

PREVIEW_COLUMNS = ["site", "line", "output_cells", "yield", "first_pass_yield", "oee", "kwh_per_good_cell",
                   "metered_share", "readings_per_kwh_cell"]


@dg.asset(group_name="kpis", kinds={"duckdb", "parquet"}, partitions_def=daily_partitions, pool=DUCKDB_POOL,
          deps=[dg.AssetKey("lake_rollups"), *lake_keys("readings", "production_events")])
def plant_kpis(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Daily KPIs per plant and line: output, yield, first-pass yield, scrap by reason, the OEE parts the
    events allow, energy per good cell and per kWh of cells with the metered share of stations beside it,
    and measurements per kWh of cells.

    A low kWh per cell next to a low metered share means missing meters, not efficiency; docs/batch.md
    says which OEE parts cannot be computed and why.
    """
    from schemas.batch import MATERIAL_LOSS, PLANT_KPIS
    from transforms.batch.kpis import plant_kpis_day, summarize
    from transforms.batch.material import load_reference
    from transforms.batch.store import write_day
    from transforms.settings import MaterialSettings
    from transforms.warehouse.reader import connect

    day = date.fromisoformat(context.partition_key)
    paths = warehouse.paths()
    products = load_reference(MaterialSettings()).products
    con = connect(paths.db_path)
    try:
        rows = plant_kpis_day(con, day, products)
    finally:
        con.close()
    path = write_day(paths.lake_root, PLANT_KPIS, day, rows)
    missing = sorted({r["site"] for r in rows.to_pylist() if r["plant"] is None})
    if missing:
        context.log.warning(f"sites without a plant file (no per-kWh figures): {', '.join(missing)}")
    per_plant = {s.site: {"yield": s.yield_, "kwh_per_good_cell": s.kwh_per_good_cell,
                          "metered_share": s.metered_share}
                 for s in summarize(rows, MATERIAL_LOSS.file_schema.empty_table())}
    return dg.MaterializeResult(metadata={
        "report": paths.report_link(),
        "dagster/row_count": rows.num_rows,
        "path": dg.MetadataValue.path(str(path)),
        "preview": dg.MetadataValue.md(markdown_preview(rows, PREVIEW_COLUMNS)),
        "per_plant": dg.MetadataValue.json(per_plant),
        "sites_without_plant_file": dg.MetadataValue.json(missing),
    })


plant_kpis_job = dg.define_asset_job(
    "plant_kpis_job", selection=with_checks([plant_kpis], "readings", "production_events"),
    description="Compute one day's plant KPIs per line from the rollups.",
)

# Stopped by default; after the rollups of the day before are complete.
plant_kpis_daily = dg.build_schedule_from_partitioned_job(
    plant_kpis_job, name="plant_kpis_daily", hour_of_day=1, minute_of_hour=45,
    default_status=dg.DefaultScheduleStatus.STOPPED,
)

defs = dg.Definitions(assets=[plant_kpis], jobs=[plant_kpis_job], schedules=[plant_kpis_daily])
