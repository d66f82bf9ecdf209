"""Planning and running jobs in-process: the request checked against the definitions, runs in day order."""

from __future__ import annotations

from datetime import date

import dagster as dg
import pytest

from orchestration.definitions import defs as gigapulse_defs
from orchestration.partitions import build_daily_partitions
from orchestration.runs import (
    JobRunError,
    RunOutcome,
    RunPlan,
    execute_plan,
    failed_summary,
    launchable_jobs,
    parse_day,
    plan_runs,
)

PARTS = build_daily_partitions(date(2026, 2, 27))


@dg.asset(partitions_def=PARTS)
def daily_thing():
    """Partitioned."""


DEFS = dg.Definitions(assets=[daily_thing], jobs=[dg.define_asset_job("daily_job", [daily_thing])])


def test_a_range_is_one_run_per_day_oldest_first_across_month_ends():
    plan = plan_runs(DEFS, "daily_job", start="2026-02-27", end="2026-03-02")
    assert plan == RunPlan("daily_job", ("2026-02-27", "2026-02-28", "2026-03-01", "2026-03-02"))
    assert plan_runs(DEFS, "daily_job", partition="2026-03-01").partition_keys == ("2026-03-01",)


def test_the_lake_jobs_run_whole():
    assert {"lake_compaction_job", "warehouse_catalog_job"} <= {j.name for j in launchable_jobs(gigapulse_defs)}
    assert plan_runs(gigapulse_defs, "lake_compaction_job") == RunPlan("lake_compaction_job", (None,))


@pytest.mark.parametrize("text", ["2026-2-27", "27.02.2026", "2026-02-30", "", "2026-02-27T00:00"])
def test_only_iso_days_are_days(text):
    with pytest.raises(JobRunError, match="--to .* is not a date YYYY-MM-DD"):
        parse_day(text, "--to")


def test_execute_plan_reports_each_run_in_order():
    seen: list[str | None] = []
    with dg.DagsterInstance.ephemeral() as instance:
        outcomes = execute_plan(DEFS, RunPlan("daily_job", ("2026-03-01", "2026-02-28")), instance,
                                on_start=seen.append)
        assert instance.get_materialized_partitions(daily_thing.key) == {"2026-03-01", "2026-02-28"}
    assert seen == ["2026-03-01", "2026-02-28"]
    assert [(o.partition_key, o.success, o.materializations) for o in outcomes] == [("2026-03-01", True, 1),
                                                                                   ("2026-02-28", True, 1)]
    assert failed_summary(outcomes) is None


def test_failed_summary_names_the_failed_days():
    outcomes = [RunOutcome("2026-03-01", "a", True, 1, 0.1), RunOutcome("2026-03-02", "b", False, 0, 0.1, "step x: boom"),
                RunOutcome("2026-03-03", "c", False, 0, 0.1, "step x: bang")]
    assert failed_summary(outcomes) == "2 of 3 run(s) failed (2026-03-02, 2026-03-03); first: step x: boom"
    assert failed_summary([RunOutcome(None, "d", False, 0, 0.1, "step y: no")]) == "1 of 1 run(s) failed; first: step y: no"


def test_a_checks_only_daily_job_takes_its_day_as_a_tag():
    """lake_quality_job has no partitions of its own (checks only): --partition still names its day."""
    assert plan_runs(gigapulse_defs, "lake_quality_job", partition="2026-03-01") == RunPlan(
        "lake_quality_job", ("2026-03-01",))
