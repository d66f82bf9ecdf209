"""Each day's ``cell_features``: the training set of the gate models and the live score's input.

The asset is thin: :func:`transforms.batch.cell_features.cell_features` computes the day in SQL on the
warehouse and :func:`transforms.batch.store.write_day` lands it (replaced whole). A cell's history
starts up to a day before its gate (electrode rolls wait in stock), so a day needs the day before
it in the lake too; the asset reads both through the catalog.
"""

# No ``from __future__ import annotations``: Dagster inspects the asset's parameter annotations.
from datetime import date

import dagster as dg

from orchestration.dq import lake_keys, with_checks
from orchestration.partitions import daily_partitions
from orchestration.preview import markdown_preview
from orchestration.resources import DUCKDB_POOL, WarehouseResource


@dg.asset(group_name="predictive_quality", kinds={"duckdb", "parquet"}, partitions_def=daily_partitions,
          pool=DUCKDB_POOL, deps=lake_keys("readings", "production_events"))
def cell_features(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """One row per cell that left filling that day: the units it consumed, the sensor data of every
    station they visited while there (out-of-spec share, mean, samples) and their measured
    attributes, nothing timestamped after the gate. docs/predictive-quality.md names the features.
    """
    from schemas.batch import CELL_FEATURES
    from transforms.batch import cell_features as cf
    from transforms.batch.store import write_day
    from transforms.warehouse.reader import connect

    day = date.fromisoformat(context.partition_key)
    paths = warehouse.paths()
    since, until = cf.day_window(day)
    con = connect(paths.db_path)
    try:
        rows = cf.cell_features(con, since, until)
    finally:
        con.close()
    path = write_day(paths.lake_root, CELL_FEATURES, day, rows)
    per_line = {}
    for r in rows.select(["line", "n_features"]).to_pylist():
        d = per_line.setdefault(r["line"], {"cells": 0, "features_max": 0})
        d["cells"] += 1
        d["features_max"] = max(d["features_max"], r["n_features"])
    if rows.num_rows == 0:
        context.log.warning(f"no cell left filling on {day}: an empty day is landed")
    return dg.MaterializeResult(metadata={
        "report": paths.report_link(),
        "dagster/row_count": rows.num_rows,
        "path": dg.MetadataValue.path(str(path)),
        "preview": dg.MetadataValue.md(markdown_preview(rows, ["line", "cell_id", "gate_ts", "n_features"])),
        "per_line": dg.MetadataValue.json(per_line),
    })


cell_features_job = dg.define_asset_job(
    "cell_features_job", selection=with_checks([cell_features], "readings", "production_events"),
    description="Build one day's cell_features (process history up to the gate before formation).",
)

# Stopped by default, like every schedule of the batch side; the day before is complete by then.
cell_features_daily = dg.build_schedule_from_partitioned_job(
    cell_features_job, name="cell_features_daily", hour_of_day=1, minute_of_hour=50,
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
