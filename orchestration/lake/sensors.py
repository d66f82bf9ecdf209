"""``new_lake_partitions``: start the lake's maintenance when the stream has committed new data.

The cursor is the lake's committed offsets (:mod:`transforms.warehouse.arrivals`), so a look costs one
header line per Kafka partition while nothing moves. When something moved, the sensor requests one
maintenance run, keyed by the new offsets (a repeated evaluation cannot start it twice), tagged with
the UTC days the new files belong to.

Daily checks hang off the same look. :func:`build_new_lake_partitions_sensor` takes ``daily_jobs``:
jobs over assets partitioned by :data:`orchestration.partitions.daily_partitions`, each of which gets
one run per touched day, ``partition_key`` set to that day, e.g. the data-quality checks of the day
that just received rows::

    build_new_lake_partitions_sensor(lake_compaction_job, daily_jobs=[quality_daily_job])

A day the partitions do not hold (before ``GIGAPULSE_BATCH_START_DATE``) is skipped with a log line.
"""

# No ``from __future__ import annotations``: Dagster inspects the sensor's resource annotation.
import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import dagster as dg

from orchestration.resources import WarehouseResource

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

SENSOR_NAME = "new_lake_partitions"
#: Run tag listing the UTC days that received committed files since the sensor's previous look.
NEW_DAYS_TAG = "gigapulse/new_days"
#: One look a minute: the stream commits every second, so this batches a minute of arrivals per run.
MINIMUM_INTERVAL_S = 60


def arrival_run_requests(maintenance_job: str, daily_jobs: Sequence[tuple[str, dg.PartitionsDefinition, bool]],
                         offsets: dict[str, int], days: Sequence[str]) -> tuple[list[dg.RunRequest], list[str]]:
    """The runs to request for new committed offsets touching ``days``, and the days left out.

    Run keys carry a digest of the offsets: Dagster launches a run key once per sensor, so the same
    arrivals seen twice (a retried tick) start nothing more. A daily job flagged ``by_tag`` gets its day
    as the ``dagster/partition`` tag instead of a partition key: Dagster 1.13 gives a job made only of
    asset checks no partitions of its own, and such checks read their day from that tag.
    """
    from transforms.warehouse.arrivals import encode_offsets

    digest = hashlib.sha256(encode_offsets(offsets).encode()).hexdigest()[:16]
    tags = {NEW_DAYS_TAG: ",".join(days)}
    requests = [dg.RunRequest(run_key=f"{maintenance_job}@{digest}", job_name=maintenance_job, tags=tags)]
    skipped = []
    for job_name, partitions, by_tag in daily_jobs:
        for day in days:
            if not partitions.has_partition_key(day):
                skipped.append(f"{job_name}:{day}")
                continue
            key = f"{job_name}:{day}@{digest}"
            if by_tag:
                requests.append(dg.RunRequest(run_key=key, job_name=job_name,
                                              tags={**tags, "dagster/partition": day}))
            else:
                requests.append(dg.RunRequest(run_key=key, job_name=job_name, partition_key=day, tags=tags))
    return requests, skipped


def build_new_lake_partitions_sensor(maintenance_job: "UnresolvedAssetJobDefinition",
                                     daily_jobs: Sequence["UnresolvedAssetJobDefinition"] = (),
                                     partitions: dg.PartitionsDefinition | None = None,
                                     check_jobs: Sequence["UnresolvedAssetJobDefinition"] = (),
                                     default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
                                     ) -> dg.SensorDefinition:
    """The sensor over ``maintenance_job`` and, per touched day, each of ``daily_jobs``.

    ``partitions`` is what the daily jobs' assets are partitioned by, the shared daily partitions
    unless given (an asset job learns its partitions from its assets only when the definitions
    resolve it, after the sensor is built). ``check_jobs`` are daily jobs made only of asset checks,
    which get their day as a tag (:func:`arrival_run_requests`).
    """
    if partitions is None:
        from orchestration.partitions import daily_partitions as partitions
    daily = [(job.name, partitions, False) for job in daily_jobs] + [(job.name, partitions, True) for job in check_jobs]

    @dg.sensor(name=SENSOR_NAME, jobs=[maintenance_job, *daily_jobs, *check_jobs], minimum_interval_seconds=MINIMUM_INTERVAL_S,
               default_status=default_status)
    def new_lake_partitions(context: dg.SensorEvaluationContext, warehouse: WarehouseResource) -> dg.SensorResult:
        """Start the lake's maintenance (and the day's checks) when the stream has committed new files."""
        from transforms.warehouse.arrivals import decode_offsets, encode_offsets, lake_arrivals

        previous = decode_offsets(context.cursor)
        arrivals = lake_arrivals(warehouse.paths().lake_root, previous)
        cursor = encode_offsets(arrivals.offsets)
        if not arrivals.changed:
            return dg.SensorResult(skip_reason="no new committed files in the lake", cursor=cursor)
        requests, skipped = arrival_run_requests(maintenance_job.name, daily, arrivals.offsets, arrivals.days)
        if skipped:
            context.log.info(f"days outside the daily partitions, not requested: {', '.join(skipped)}")
        context.log.info(f"{len(arrivals.advanced)} partition(s) advanced; new days: "
                         f"{', '.join(arrivals.days) or 'none listed (already compacted)'}")
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return new_lake_partitions
