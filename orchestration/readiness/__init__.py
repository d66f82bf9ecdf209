"""Readiness domain: readiness scores per plant and line, and the retrofit plan with its payback.

The logic lives in :mod:`transforms.batch.readiness` and :mod:`transforms.batch.retrofit`. Both assets
recompute the day's density audit from the warehouse rather than reading the landed table, so they
never read a stale audit; they depend on ``sensor_density_audit`` for lineage (their evidence queries
point at it).
"""

# No ``from __future__ import annotations``: Dagster inspects the asset's parameter annotations.
from datetime import date

import dagster as dg

from orchestration.audits import sensor_density_audit
from orchestration.dq import lake_keys, with_checks
from orchestration.partitions import daily_partitions
from orchestration.preview import markdown_preview
from orchestration.resources import DUCKDB_POOL, WarehouseResource


def _assess(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    from transforms.batch.readiness import assess_day
    from transforms.warehouse.reader import connect

    day = date.fromisoformat(context.partition_key)
    paths = warehouse.paths()
    con = connect(paths.db_path)
    try:
        return paths, assess_day(con, day)
    finally:
        con.close()


@dg.asset(partitions_def=daily_partitions, group_name="readiness", kinds={"duckdb", "parquet"}, pool=DUCKDB_POOL,
          deps=[sensor_density_audit, *lake_keys("dead_letters")])
def readiness_scores(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Readiness of each plant and line: eight dimensions banded 0-5 (SIRI style) from measured evidence
    kept in the row, a weighted overall score and the acatech Industrie 4.0 stage it reaches."""
    from schemas.batch import READINESS_SCORES
    from transforms.batch.readiness import readiness_table
    from transforms.batch.store import write_day

    paths, a = _assess(context, warehouse)
    table = readiness_table(a.scores)
    write_day(paths.lake_root, READINESS_SCORES, a.day, table)
    plants = [r for r in a.scores if r["level"] == "plant"]
    overall = {r["site"]: r for r in plants if r["dimension"] == "overall"}
    return dg.MaterializeResult(metadata={
        "report": paths.report_link(),
        "dagster/row_count": table.num_rows,
        "preview": dg.MetadataValue.md(markdown_preview(plants, ["site", "dimension", "band", "figure", "evidence"],
                                                      limit=20)),
        "overall_score": dg.MetadataValue.json({s: r["score"] for s, r in overall.items()}),
        "acatech_stage": dg.MetadataValue.json({s: r["stage_label"] for s, r in overall.items()}),
    })


@dg.asset(partitions_def=daily_partitions, group_name="readiness", kinds={"duckdb", "parquet"}, pool=DUCKDB_POOL,
          deps=[sensor_density_audit])
def retrofit_plan(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """The sensors, meters and gateways each plant lacks, by priority and priced from the cost table, and
    the payback of the CAPEX from closing part of its scrap and energy gap to the reference plant."""
    from schemas.batch import RETROFIT_PAYBACK, RETROFIT_PLAN
    from transforms.batch.retrofit import retrofit_tables
    from transforms.batch.store import write_day

    paths, a = _assess(context, warehouse)
    plan, payback = retrofit_tables(a.plan, a.paybacks)
    write_day(paths.lake_root, RETROFIT_PLAN, a.day, plan)
    write_day(paths.lake_root, RETROFIT_PAYBACK, a.day, payback)
    rows = payback.to_pylist()
    return dg.MaterializeResult(metadata={
        "report": paths.report_link(),
        "dagster/row_count": plan.num_rows,
        "preview": dg.MetadataValue.md(markdown_preview(rows, ["site", "items", "capex_eur", "annual_savings_eur",
                                                            "payback_years"])),
        "capex_eur": dg.MetadataValue.json({r["site"]: r["capex_eur"] for r in rows}),
        "payback_years": dg.MetadataValue.json({r["site"]: r["payback_years"] for r in rows}),
    })


readiness_job = dg.define_asset_job("readiness_job", selection=with_checks(
                                        [sensor_density_audit, readiness_scores, retrofit_plan],
                                        "readings", "production_events", "dead_letters"),
                                    description="The day's density audit, readiness scores and retrofit plan.")

# Stopped by default; the audit, the scores and the plan of the finished day (the job includes the audit).
readiness_daily = dg.build_schedule_from_partitioned_job(
    readiness_job, name="readiness_daily", hour_of_day=2, minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.STOPPED,
)

defs = dg.Definitions(assets=[readiness_scores, retrofit_plan], jobs=[readiness_job], schedules=[readiness_daily])
