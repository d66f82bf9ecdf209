"""The one daily partitioning of the batch side, shared by every daily-partitioned asset and job.

One definition, not one per domain, so a day's audits, readiness scores, material loss, KPIs and
data-quality checks are the same partition keys: a backfill or a sensor names ``2026-11-28`` once and
every domain understands it. Keys are UTC dates (``YYYY-MM-DD``), the same days as the lake's
``date=`` directories, which the stream derives from event times in UTC.

``end_offset=1`` makes today a partition as soon as the day starts, not tomorrow: the lake fills
today's directory while the day runs, and a check or a KPI of the day so far is worth running
(a later run of the same partition replaces it, since the batch tables are written per day whole).
"""

from __future__ import annotations

from datetime import date

import dagster as dg


def build_daily_partitions(start: date | None = None) -> dg.DailyPartitionsDefinition:
    """Daily UTC partitions from ``start`` (default: ``GIGAPULSE_BATCH_START_DATE``, else 2024-01-01)."""
    if start is None:
        from transforms.settings import BatchPartitionSettings

        start = BatchPartitionSettings().start_date
    return dg.DailyPartitionsDefinition(start_date=start.isoformat(), timezone="UTC", end_offset=1)


#: Built when the code location loads, which is its start-up: Dagster needs a fixed partitions
#: definition to attach to assets, and every process loading the definitions reads the same setting.
daily_partitions = build_daily_partitions()

#: Daily jobs made only of asset checks. Dagster 1.13 gives such a job no partitions of its own (it
#: learns them from assets), so a run names its day with the ``dagster/partition`` tag, which the
#: checks read as their partition key; ``gigapulse jobs run`` and the lake sensor do that for these.
TAG_PARTITIONED_JOBS: set[str] = set()
PARTITION_TAG = "dagster/partition"
