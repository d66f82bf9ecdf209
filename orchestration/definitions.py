"""The Dagster code location of gigapulse: what ``dagster dev -m orchestration.definitions``,
``gigapulse jobs webserver|daemon`` and ``gigapulse jobs run`` load.

One root, merging the definitions each domain keeps in its own package (``orchestration/<domain>/``:
assets, checks, jobs, schedules, sensors) with the shared resources of :mod:`orchestration.resources`,
bound once here so no domain binds its own copy.
"""

import dagster as dg

from orchestration import audits, dq, kpis, lake, predictive, quality, readiness, report, resources
from orchestration.lake import (
    lake_compaction,
    lake_compaction_job,
    lake_rollups,
    new_lake_partitions,
    warehouse_catalog,
    warehouse_catalog_every_15_minutes,
    warehouse_catalog_job,
)
from orchestration.resources import DUCKDB_POOL, KafkaResource, WarehousePaths, WarehouseResource

#: The code location: the shared resources merged with each domain's ``defs``.
defs = dg.Definitions.merge(resources.defs, lake.defs, dq.defs, audits.defs, readiness.defs, quality.defs,
                            kpis.defs, report.defs, predictive.defs)

__all__ = ["DUCKDB_POOL", "KafkaResource", "WarehousePaths", "WarehouseResource", "defs", "lake_compaction",
           "lake_compaction_job", "lake_rollups", "new_lake_partitions", "warehouse_catalog",
           "warehouse_catalog_every_15_minutes", "warehouse_catalog_job"]
