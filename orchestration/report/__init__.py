"""The plant report as an asset: one HTML page per plant, rebuilt after the day's batch tables.

The batch assets link to the report directory in their metadata (``report``); this asset writes it,
after the daily assets of the same schedule, with the same code as ``gigapulse report``.
"""

# No ``from __future__ import annotations``: Dagster inspects the asset's parameter annotations.
import dagster as dg

from orchestration.resources import WarehouseResource

#: The daily assets the report reads (their keys: the report depends on every partition of each).
REPORT_INPUTS = ("readiness_scores", "retrofit_plan", "sensor_density_audit", "material_loss", "plant_kpis",
                 "quality_gate_value")


@dg.asset(group_name="report", kinds={"html"}, deps=[dg.AssetKey(k) for k in REPORT_INPUTS])
def plant_report(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """A self-contained HTML page per plant with PNG figures: readiness radar, sensor density, retrofit
    plan, scrap Pareto, material loss, energy per good cell with the metered share, the champion gate model's
    ROC, reliability and drivers with the daily value of its gate, data quality.

    Only reads the warehouse, so it needs no pool: it runs beside compaction and the stream.
    """
    from transforms.batch.report import build_report
    from transforms.warehouse.reader import connect

    paths = warehouse.paths()
    con = connect(paths.db_path)
    try:
        pages = build_report(con, paths.report_dir, progress=context.log.info, lake_root=paths.lake_root)
    finally:
        con.close()
    return dg.MaterializeResult(metadata={
        "report": paths.report_link(),
        "pages": dg.MetadataValue.json({p.stem: str(p) for p in pages}),
        "dagster/row_count": len(pages),
    })


report_job = dg.define_asset_job("report_job", selection=[plant_report],
                                 description="Rebuild the HTML plant reports from the warehouse.")

# Stopped by default; after the daily batch schedules (01:30-02:00 UTC).
report_daily = dg.ScheduleDefinition(name="report_daily", job=report_job, cron_schedule="30 2 * * *",
                                     execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.STOPPED)

defs = dg.Definitions(assets=[plant_report], jobs=[report_job], schedules=[report_daily])

__all__ = ["defs", "plant_report", "report_daily", "report_job"]
