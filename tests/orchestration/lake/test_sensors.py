"""``new_lake_partitions`` evaluated with Dagster's own sensor context over real temporary lakes."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from orchestration import lake
from orchestration.lake import lake_compaction_job, new_lake_partitions
from orchestration.lake.sensors import NEW_DAYS_TAG, build_new_lake_partitions_sensor
from orchestration.partitions import build_daily_partitions
from orchestration.resources import WarehouseResource
from tests.committed_lake import commit, day_at, write_readings


def evaluate(sensor: dg.SensorDefinition, lake, cursor: str | None = None) -> dg.SensorResult:
    resource = WarehouseResource(lake_root=str(lake), db_path=str(lake.parent / "w.duckdb"))
    with dg.build_sensor_context(cursor=cursor, resources={"warehouse": resource}) as context:
        return sensor(context)


def test_nothing_committed_skips_and_new_commits_start_maintenance_once(tmp_path):
    lake = tmp_path / "lake"
    first = evaluate(new_lake_partitions, lake)
    assert not first.run_requests and first.skip_reason

    write_readings(lake, 0, 0, 10, day_at("2026-11-27"))
    assert not evaluate(new_lake_partitions, lake, first.cursor).run_requests  # not committed yet

    commit(lake, 0, 10)
    second = evaluate(new_lake_partitions, lake, first.cursor)
    request, checks = second.run_requests
    assert request.job_name == "lake_compaction_job"
    assert request.partition_key is None
    assert request.tags[NEW_DAYS_TAG] == "2026-11-27"
    # ... and the day's data-quality checks, their day as the partition tag (a checks-only job).
    assert checks.job_name == "lake_quality_job" and checks.tags["dagster/partition"] == "2026-11-27"

    # The same arrivals seen again (a retried tick without the cursor) give the same run key: Dagster
    # launches a run key once per sensor.
    assert evaluate(new_lake_partitions, lake, first.cursor).run_requests[0].run_key == request.run_key
    assert not evaluate(new_lake_partitions, lake, second.cursor).run_requests

    write_readings(lake, 0, 10, 10, day_at("2026-11-28"))
    commit(lake, 0, 20)
    third = evaluate(new_lake_partitions, lake, second.cursor)
    assert [r.tags[NEW_DAYS_TAG] for r in third.run_requests] == ["2026-11-28"] * 2
    assert third.run_requests[0].run_key != request.run_key


def test_the_stream_lake_of_the_simulator_starts_maintenance(simulated_warehouse):
    """The lake the stream's own partition processors wrote, checkpoints and all (only read here)."""
    lake_root = simulated_warehouse.parent / "lake"
    result = evaluate(new_lake_partitions, lake_root)
    request, *checks = result.run_requests
    days = {p.name.removeprefix("date=") for p in (lake_root / "readings").glob("date=*")}
    assert set(request.tags[NEW_DAYS_TAG].split(",")) == days
    assert {c.tags["dagster/partition"] for c in checks} == days
    assert not evaluate(new_lake_partitions, lake_root, result.cursor).run_requests


def test_the_maintenance_it_starts_is_not_news(tmp_path, monkeypatch):
    """Compaction merges and deletes hot files without moving a checkpoint: no second run."""
    monkeypatch.setenv("GIGAPULSE_LAKE_SETTLE_S", "0")  # the files were written a moment ago
    lake_root = tmp_path / "lake"
    for b in range(3):
        write_readings(lake_root, 0, 10 * b, 10, day_at("2026-11-28", 8 + b))
    commit(lake_root, 0, 30)
    result = evaluate(new_lake_partitions, lake_root)
    assert result.run_requests

    resource = WarehouseResource(lake_root=str(lake_root), db_path=str(tmp_path / "w.duckdb"))
    job = dg.Definitions(assets=lake.defs.assets, jobs=[lake_compaction_job],
                         resources={"warehouse": resource}).resolve_job_def(result.run_requests[0].job_name)
    run = job.execute_in_process()
    assert run.success
    assert run.asset_materializations_for_node("lake_compaction")[0].metadata["hot_files_merged"].value == 3
    assert not evaluate(new_lake_partitions, lake_root, result.cursor).run_requests


def test_daily_jobs_get_one_run_per_new_day_with_its_partition_key(tmp_path):
    """How a domain's daily checks hang off the sensor: a partitioned job, one run per touched day."""
    parts = build_daily_partitions(day_at("2026-11-28").date())

    @dg.asset(partitions_def=parts)
    def day_checks() -> None:
        """A stand-in for a domain's daily checks."""

    checks_job = dg.define_asset_job("day_checks_job", selection=[day_checks])
    sensor = build_new_lake_partitions_sensor(lake_compaction_job, daily_jobs=[checks_job], partitions=parts)

    lake = tmp_path / "lake"
    write_readings(lake, 0, 0, 10, day_at("2026-11-27"))  # before the partitions start: left out
    write_readings(lake, 0, 10, 10, day_at("2026-11-28", 23) + timedelta(minutes=57))  # across midnight
    commit(lake, 0, 20)
    requests = evaluate(sensor, lake).run_requests
    assert requests[0].job_name == "lake_compaction_job"
    assert [(r.job_name, r.partition_key) for r in requests[1:]] == [("day_checks_job", "2026-11-28"),
                                                                    ("day_checks_job", "2026-11-29")]
    assert len({r.run_key for r in requests}) == len(requests)
