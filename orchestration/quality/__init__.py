"""Quality domain: the material ledger (what scrap costs in critical raw material), one file per day.

The asset is thin: :mod:`transforms.batch.material` books the scrap, :func:`transforms.batch.store.write_day`
lands the day (replaced whole, so a rerun or a backfill leaves the same rows).
"""

# No ``from __future__ import annotations``: Dagster inspects the asset's parameter annotations.
from datetime import date

import dagster as dg

from orchestration.dq import lake_keys, with_checks
from orchestration.partitions import daily_partitions
from orchestration.preview import markdown_preview
from orchestration.resources import DUCKDB_POOL, WarehouseResource

PREVIEW_COLUMNS = ["site", "line", "stage", "reason", "element", "units_scrapped", "kg", "value", "currency"]


@dg.asset(group_name="quality", kinds={"duckdb", "parquet"}, partitions_def=daily_partitions, pool=DUCKDB_POOL,
          deps=lake_keys("production_events"))
def material_loss(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Scrapped units of the day booked as kg of lithium, nickel, cobalt, manganese, graphite, copper and
    aluminium by site, line, stage and reason, valued at the configured prices.

    Each unit carries the part of its site's bill of materials it has reached (a slurry batch its
    electrode's active material, a roll that and its foil, a cell everything); docs/batch.md states the
    model and the assumptions. Sites without a plant file are reported, not guessed.
    """
    from schemas.batch import MATERIAL_LOSS
    from transforms.batch.material import load_reference, material_loss_day
    from transforms.batch.store import write_day
    from transforms.settings import MaterialSettings
    from transforms.warehouse.reader import connect

    day = date.fromisoformat(context.partition_key)
    paths = warehouse.paths()
    ref = load_reference(MaterialSettings())
    con = connect(paths.db_path)
    try:
        result = material_loss_day(con, day, ref.products, ref.bom, ref.prices)
    finally:
        con.close()
    path = write_day(paths.lake_root, MATERIAL_LOSS, day, result.rows)
    if result.unbooked:
        context.log.warning(f"scrap not booked (no plant file or unknown chemistry): {result.unbooked}")
    rows = result.rows.to_pylist()
    kg_by_element: dict[str, float] = {}
    for r in rows:
        kg_by_element[r["element"]] = round(kg_by_element.get(r["element"], 0.0) + r["kg"], 6)
    return dg.MaterializeResult(metadata={
        "report": paths.report_link(),
        "dagster/row_count": len(rows),
        "path": dg.MetadataValue.path(str(path)),
        "preview": dg.MetadataValue.md(markdown_preview(result.rows, PREVIEW_COLUMNS)),
        "total_kg": round(sum(r["kg"] for r in rows), 6),
        "total_value": round(sum(r["value"] or 0.0 for r in rows), 2),
        "currency": ref.prices.currency,
        "prices_as_of": ref.prices.as_of.isoformat(),
        "kg_by_element": dg.MetadataValue.json(dict(sorted(kg_by_element.items()))),
        "unbooked_scrap_by_site": dg.MetadataValue.json(result.unbooked),
    })


material_loss_job = dg.define_asset_job(
    "material_loss_job", selection=with_checks([material_loss], "production_events"),
    description="Book one day's scrap as kg of critical raw material and its value.",
)

# Stopped by default, like every schedule here; runs each UTC day's partition shortly after midnight.
material_loss_daily = dg.build_schedule_from_partitioned_job(
    material_loss_job, name="material_loss_daily", hour_of_day=1, minute_of_hour=30,
    default_status=dg.DefaultScheduleStatus.STOPPED,
)

defs = dg.Definitions(assets=[material_loss], jobs=[material_loss_job], schedules=[material_loss_daily])
