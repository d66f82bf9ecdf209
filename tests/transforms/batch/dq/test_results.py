"""dq_results: one file per checked day, a table's rows replaced by its next run, the same rows for the
same data apart from the run id and time; and the per-table summary the report shows."""

from __future__ import annotations

from datetime import UTC, date, datetime

import duckdb
import pytest

from schemas.batch import DQ_RESULTS
from transforms.batch.dq import CheckOutcome, land_results, quality_summary
from transforms.batch.dq.results import check_table_day
from transforms.batch.store import day_path

DAY = date(2026, 3, 2)


def _outcome(check: str, table: str, success: bool = True, day: date = DAY) -> CheckOutcome:
    return CheckOutcome(check=check, table=table, day=day, success=success, blocking=True, observed="null ts 0",
                        expected="null ts = 0", message=None if success else f"{table} {day} {check}: broken")


def _rows(lake, day=DAY) -> list[dict]:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con.execute("SELECT * FROM read_parquet(?) ORDER BY table_name, check_name",
                       [day_path(lake, DQ_RESULTS, day).as_posix()]).df().to_dict("records")


def test_rerunning_a_table_replaces_its_rows_and_keeps_the_others(tmp_path):
    t1, t2 = datetime(2026, 3, 3, 1, tzinfo=UTC), datetime(2026, 3, 3, 2, tzinfo=UTC)
    land_results(tmp_path, DAY, [_outcome("readings_rows_present", "readings"),
                                 _outcome("readings_keys_not_null", "readings", success=False)], "run-1", t1)
    land_results(tmp_path, DAY, [_outcome("dead_letters_keys_not_null", "dead_letters")], "run-2", t1)
    first = _rows(tmp_path)
    land_results(tmp_path, DAY, [_outcome("readings_rows_present", "readings"),
                                 _outcome("readings_keys_not_null", "readings", success=False)], "run-3", t2)
    second = _rows(tmp_path)
    assert len(first) == len(second) == 3
    run_dependent = {"run_id", "checked_at"}
    assert [{k: v for k, v in r.items() if k not in run_dependent} for r in first] == \
           [{k: v for k, v in r.items() if k not in run_dependent} for r in second]
    assert {(r["table_name"], r["run_id"]) for r in second} == {("dead_letters", "run-2"), ("readings", "run-3")}


def test_outcomes_of_another_day_are_refused(tmp_path):
    with pytest.raises(ValueError, match="another day"):
        land_results(tmp_path, DAY, [_outcome("readings_rows_present", "readings", day=date(2026, 3, 1))],
                     "run", datetime(2026, 3, 3, tzinfo=UTC))


def test_the_summary_counts_checks_failures_and_the_last_run(tmp_path):
    assert [(s.table, s.checks_run, s.last_run) for s in quality_summary(tmp_path)] == [
        ("readings", 0, None), ("production_events", 0, None), ("dead_letters", 0, None)]
    t1, t2 = datetime(2026, 3, 3, 1, tzinfo=UTC), datetime(2026, 3, 4, 1, tzinfo=UTC)
    land_results(tmp_path, DAY, [_outcome("readings_rows_present", "readings"),
                                 _outcome("readings_keys_not_null", "readings", success=False)], "r1", t1)
    land_results(tmp_path, date(2026, 3, 3), [_outcome("readings_rows_present", "readings", day=date(2026, 3, 3),
                                                       success=False)], "r2", t2)
    readings = quality_summary(tmp_path)[0]
    assert (readings.days_checked, readings.checks_run, readings.failed, readings.failed_blocking) == (2, 3, 2, 2)
    assert readings.last_run == t2
    assert readings.failures[0].startswith("readings 2026-03-03")  # newest day first
    only_first_day = quality_summary(tmp_path, until=DAY)[0]
    assert (only_first_day.checks_run, only_first_day.failed, only_first_day.last_run) == (2, 1, t1)


def test_checking_the_same_data_twice_lands_the_same_rows(corrupted_warehouse, tmp_path):
    """On real (corrupted) data: observed values and messages are functions of the data, not of the run
    (today's freshness compares with the clock, so both runs are given the same 'now': the data's end)."""
    c = corrupted_warehouse
    now = c.built_at
    rows = []
    for run in ("a", "b"):
        outcomes = check_table_day(c.db_path, c.lake_root, "production_events", c.day, now=now)
        land_results(tmp_path, c.day, outcomes, f"run-{run}", datetime.now(UTC))
        rows.append([{k: v for k, v in r.items() if k not in {"run_id", "checked_at"}} for r in _rows(tmp_path, c.day)])
    assert rows[0] == rows[1] and len(rows[0]) == 8
    assert sum(not r["success"] for r in rows[0]) == 2
