"""Data quality of the lake in Dagster: the lake tables as external assets, their checks, a daily job.

The stream writes ``readings``, ``production_events`` and ``dead_letters``; Dagster does not
materialize them, so they are declared as external assets (``AssetSpec``), daily-partitioned like the
lake, and the checks of :mod:`transforms.batch.dq` attach to them: one multi-asset check per table, one
Dagster check per named rule. Blocking checks fail with ERROR severity, so in a run that also holds an
asset downstream of the table (``deps=["readings"]``), that asset does not run on a day whose data
would make its numbers wrong. Every run lands its outcomes in ``dq_results``.
"""

# No ``from __future__ import annotations``: Dagster inspects the check's parameter annotations.
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg

from orchestration.partitions import TAG_PARTITIONED_JOBS, daily_partitions
from orchestration.resources import DUCKDB_POOL, WarehouseResource
from transforms.batch.dq.suites import CHECKED_TABLES, checks_of

_DESCRIPTIONS = {
    "readings": "Every accepted sensor sample, landed by the stream workers (docs/tables.md).",
    "production_events": "Units entering, leaving, measured, graded or scrapped, landed by the stream workers.",
    "dead_letters": "Every message refused at the edge, in the stream or in replay.",
}

#: The lake tables the stream writes, as external assets the checks attach to.
LAKE_TABLES = {
    name: dg.AssetSpec(name, group_name="lake", description=_DESCRIPTIONS[name], kinds={"parquet"},
                       partitions_def=daily_partitions)
    for name in CHECKED_TABLES
}

with warnings.catch_warnings():
    # Partitioned check specs are a Dagster preview; the checks are per day, so they must be partitioned.
    warnings.simplefilter("ignore", category=dg.PreviewWarning)
    CHECK_SPECS = {
        table: [dg.AssetCheckSpec(c.name, asset=table, description=c.doc, blocking=c.blocking,
                                  partitions_def=daily_partitions) for c in checks_of(table)]
        for table in CHECKED_TABLES
    }


def _results(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource,
             table: str) -> Iterator[dg.AssetCheckResult]:
    """Check ``table``'s day (the run's partition), land the outcomes, report each to Dagster."""
    from transforms.batch.dq import check_table_day, land_results

    day = datetime.strptime(context.partition_key, "%Y-%m-%d").date()
    paths = warehouse.paths()
    checked_at = datetime.now(UTC)
    outcomes = check_table_day(paths.db_path, paths.lake_root, table, day, now=checked_at)
    land_results(paths.lake_root, day, outcomes, context.run.run_id, checked_at)
    for o in outcomes:
        if not o.success:
            context.log.warning(o.message)
        yield dg.AssetCheckResult(
            asset_key=table, check_name=o.check, passed=o.success,
            severity=dg.AssetCheckSeverity.ERROR if o.blocking else dg.AssetCheckSeverity.WARN,
            description=o.message or o.observed,
            metadata={"observed": o.observed, "expected": o.expected, "day": day.isoformat()},
        )


@dg.multi_asset_check(specs=CHECK_SPECS["readings"], name="readings_quality", pool=DUCKDB_POOL)
def readings_quality(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource):
    """Schema, missing day, null keys, unique source positions, physical ranges, lost offsets, freshness."""
    yield from _results(context, warehouse, "readings")


@dg.multi_asset_check(specs=CHECK_SPECS["production_events"], name="production_events_quality", pool=DUCKDB_POOL)
def production_events_quality(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource):
    """Schema, missing day, null keys, unique positions, valid values, lost offsets, freshness, genealogy."""
    yield from _results(context, warehouse, "production_events")


@dg.multi_asset_check(specs=CHECK_SPECS["dead_letters"], name="dead_letters_quality", pool=DUCKDB_POOL)
def dead_letters_quality(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource):
    """Schema and null keys of the refused messages (a day without refusals is fine)."""
    yield from _results(context, warehouse, "dead_letters")


ASSET_CHECKS = [readings_quality, production_events_quality, dead_letters_quality]

#: The day's checks of the three tables. Dagster 1.13 gives a job of asset checks alone no partitions
#: (it infers them from assets), so a run names its day with the partition tag:
#: ``RunRequest(job_name="lake_quality_job", tags={"dagster/partition": "2026-03-02"})`` or
#: ``execute_in_process(tags=...)``; the checks read it as their partition key.
lake_quality_job = dg.define_asset_job(
    "lake_quality_job",
    selection=dg.AssetSelection.checks_for_assets(*[spec.key for spec in LAKE_TABLES.values()]),
    description="Data-quality checks of one day of the lake tables; results land in dq_results.",
)

TAG_PARTITIONED_JOBS.add(lake_quality_job.name)


def lake_keys(*tables: str) -> list[dg.AssetKey]:
    """Keys of lake tables, for a batch asset's ``deps``: its day then waits for their blocking checks."""
    return [LAKE_TABLES[t].key for t in tables]


def with_checks(assets: list, *tables: str) -> dg.AssetSelection:
    """``assets`` plus the checks of the lake ``tables`` they read, for a daily job: a blocking check that
    fails on the day skips the assets downstream of its table in the same run, so a number computed
    from broken data is never landed."""
    return dg.AssetSelection.assets(*assets) | dg.AssetSelection.checks_for_assets(*lake_keys(*tables))

defs = dg.Definitions(assets=list(LAKE_TABLES.values()), asset_checks=ASSET_CHECKS, jobs=[lake_quality_job])

__all__ = ["ASSET_CHECKS", "LAKE_TABLES", "daily_partitions", "defs", "lake_keys", "lake_quality_job", "with_checks"]
