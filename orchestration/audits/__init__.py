"""Audits domain: the sensor density audit of every plant in the warehouse, one UTC day at a time.

The logic lives in :mod:`transforms.batch.density`; the asset reads the warehouse, lands
``sensor_density_audit`` and ``sensor_gaps`` for its day (replaced whole, so a rerun leaves the same
rows) and reports the key figures as metadata.
"""

# No ``from __future__ import annotations``: Dagster inspects the asset's parameter annotations.
from datetime import date

import dagster as dg

from orchestration.dq import lake_keys, with_checks
from orchestration.partitions import daily_partitions
from orchestration.preview import markdown_preview
from orchestration.resources import DUCKDB_POOL, WarehouseResource


@dg.asset(partitions_def=daily_partitions, group_name="audits", kinds={"duckdb", "parquet"}, pool=DUCKDB_POOL,
          deps=lake_keys("readings", "production_events"))
def sensor_density_audit(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Sensors per station, line and plant against the reference profile, and the gaps ranked by impact.

    Lands two batch tables for the partition's day: ``sensor_density_audit`` (coverage of the profile, of
    critical-to-quality parameters and of energy sub-metering, achieved sampling rates, sensors per
    station and per million cells) and ``sensor_gaps`` (CTQ first, then energy, then the rest, each
    with its reason).
    """
    from schemas.batch import SENSOR_DENSITY_AUDIT, SENSOR_GAPS
    from schemas.reference_data import load_reference_profile
    from transforms.batch.density import audit_density, density_tables, read_density_inputs
    from transforms.batch.store import write_day
    from transforms.settings import AuditSettings
    from transforms.warehouse.reader import connect

    day = date.fromisoformat(context.partition_key)
    paths = warehouse.paths()
    profile = load_reference_profile(AuditSettings().reference_profile)
    con = connect(paths.db_path)
    try:
        inputs = read_density_inputs(con, day)
    finally:
        con.close()
    audit = audit_density(inputs.sensors, inputs.delivery, inputs.cells, profile)
    audit_table, gaps_table = density_tables(audit)
    write_day(paths.lake_root, SENSOR_DENSITY_AUDIT, day, audit_table)
    write_day(paths.lake_root, SENSOR_GAPS, day, gaps_table)
    plants = [r for r in audit.rows if r["level"] == "plant"]
    context.log.info(f"{day}: {len(plants)} plants, {audit_table.num_rows} audit rows, {gaps_table.num_rows} gaps")
    return dg.MaterializeResult(metadata={
        "report": paths.report_link(),
        "dagster/row_count": audit_table.num_rows,
        "gap_rows": gaps_table.num_rows,
        "preview": dg.MetadataValue.md(markdown_preview(plants, [
            "site", "sensors", "sensor_coverage", "ctq_coverage", "energy_coverage", "achieved_rate_ratio",
            "sensors_per_million_cells", "gaps"])),
        "top_gaps": dg.MetadataValue.md(markdown_preview(
            [g.__dict__ for g in audit.gaps if g.rank <= 3], ["site", "rank", "station", "parameter", "reason"])),
        "sensor_coverage": dg.MetadataValue.json({r["site"]: r["sensor_coverage"] for r in plants}),
    })


audits_job = dg.define_asset_job("audits_job", selection=with_checks([sensor_density_audit], "readings",
                                                                     "production_events"),
                                 description="The day's sensor density audit.")

defs = dg.Definitions(assets=[sensor_density_audit], jobs=[audits_job])
