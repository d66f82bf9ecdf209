"""What the quality gate is worth, per day: ``quality_gate_value``, scored by the champion of the registry.

The asset is thin: :func:`transforms.predictive.value.quality_gate_value_day` scores the day's gated cells,
picks the threshold from the champion's training record and counts pulls, energy and material per line;
:func:`transforms.batch.store.write_day` lands the day (replaced whole). docs/predictive-quality.md,
"What it is worth", states the rules.
"""

# No ``from __future__ import annotations``: Dagster inspects the asset's parameter annotations.
from datetime import date

import dagster as dg

from orchestration.partitions import daily_partitions
from orchestration.predictive.features import cell_features
from orchestration.predictive.models import gate_champion
from orchestration.preview import markdown_preview
from orchestration.resources import DUCKDB_POOL, WarehouseResource

PREVIEW_COLUMNS = ["site", "line", "cells_gated", "cells_flagged", "true_pulls", "false_pulls", "bad_caught_share",
                   "kwh_saved", "false_pull_kwh", "kg_false_pulls"]


def _total(rows: list[dict], column: str) -> float:
    """Sum of a column over the lines; NaN when every line has it null (nothing measured, not zero)."""
    values = [r[column] for r in rows if r[column] is not None]
    return round(sum(values), 6) if values else float("nan")


@dg.asset(group_name="predictive_quality", kinds={"sklearn", "parquet"}, partitions_def=daily_partitions,
          pool=DUCKDB_POOL, deps=[cell_features, gate_champion])
def quality_gate_value(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """What pulling the champion's flagged cells before formation would have been worth that day, per line:
    cells pulled, true and false pulls, the share of later scrap caught, the formation and aging kWh saved,
    and the critical material involved (false pulls reported apart). The threshold flags
    GIGAPULSE_GATE_FLAG_SHARE (5%) of the champion's test cells. Without a champion an empty day is landed.
    """
    from schemas.asset_model import AssetModelError
    from schemas.batch import QUALITY_GATE_VALUE
    from schemas.materials import MaterialDataError
    from transforms.batch.material import load_reference
    from transforms.batch.store import write_day
    from transforms.predictive import registry as R
    from transforms.predictive.value import critical_kg_per_cell, quality_gate_value_day
    from transforms.settings import GateSettings, MaterialSettings
    from transforms.warehouse.reader import connect

    day = date.fromisoformat(context.partition_key)
    paths = warehouse.paths()
    version = R.champion(paths.lake_root)
    if version is None:
        path = write_day(paths.lake_root, QUALITY_GATE_VALUE, day, QUALITY_GATE_VALUE.file_schema.empty_table())
        context.log.warning(f"no champion gate model in {R.models_dir(paths.lake_root)} yet: an empty day is landed "
                            f"for {day} (materialize gate_model_job, or `gigapulse models promote VERSION`)")
        return dg.MaterializeResult(metadata={"dagster/row_count": 0, "path": dg.MetadataValue.path(str(path)),
                                              "champion": ""})
    try:
        model, record = R.load_model(paths.lake_root, version), R.load_record(paths.lake_root, version)
    except R.RegistryError as exc:
        raise dg.Failure(description=f"the champion cannot score: {exc}") from None
    try:
        kg_per_cell = critical_kg_per_cell(load_reference(MaterialSettings()))
    except (MaterialDataError, AssetModelError, OSError) as exc:
        context.log.warning(f"no material reference ({exc}): kg columns are null")
        kg_per_cell = {}
    settings = GateSettings()
    con = connect(paths.db_path)
    try:
        result = quality_gate_value_day(con, day, model, record, settings.flag_share, kg_per_cell)
    finally:
        con.close()
    path = write_day(paths.lake_root, QUALITY_GATE_VALUE, day, result.rows)
    rows = result.rows.to_pylist()
    if not rows:
        context.log.warning(f"no cell left filling on {day}: an empty day is landed")
    if result.threshold.source != "champion_test_cells":
        context.log.warning(f"threshold of {version}: {result.threshold.rule}")
    if kg_per_cell and any(r["kg_per_cell"] is None for r in rows):
        context.log.warning("sites without a bill of materials (kg columns null): "
                            + ", ".join(sorted({r["site"] for r in rows if r["kg_per_cell"] is None})))
    bad = sum(r["cells_bad"] for r in rows)
    caught = sum(r["true_pulls"] for r in rows)
    return dg.MaterializeResult(metadata={
        "report": paths.report_link(),
        "dagster/row_count": len(rows),
        "path": dg.MetadataValue.path(str(path)),
        "champion": version,
        "threshold": result.threshold.value if result.threshold.value is not None else float("nan"),
        "threshold_rule": result.threshold.rule,
        "cells_gated": sum(r["cells_gated"] for r in rows),
        "cells_pulled": sum(r["cells_flagged"] for r in rows),
        "true_pulls": caught,
        "false_pulls": sum(r["false_pulls"] for r in rows),
        "scrap_caught_share": caught / bad if bad else float("nan"),
        "kwh_saved": _total(rows, "kwh_saved"),
        "false_pull_kwh": _total(rows, "false_pull_kwh"),
        "kg_saved": _total(rows, "kg_saved"),
        "kg_false_pulls": _total(rows, "kg_false_pulls"),
        "preview": dg.MetadataValue.md(markdown_preview(result.rows, PREVIEW_COLUMNS)),
    })


quality_gate_value_job = dg.define_asset_job(
    "quality_gate_value_job", selection=[quality_gate_value],
    description="Judge one day's gated cells with the champion: pulls, scrap caught, kWh and kg saved.",
)

# Stopped by default like gate_model_daily, and 20 minutes after it, so a champion it promoted scores the day.
quality_gate_value_daily = dg.build_schedule_from_partitioned_job(
    quality_gate_value_job, name="quality_gate_value_daily", hour_of_day=3, minute_of_hour=5,
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
