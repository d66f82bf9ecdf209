"""The suites: the simulated plant passes every check; each fault of the corrupted copy fails its own
check, with a message that says where and how much, and nothing else fails."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.corrupted_lake import GHOST_PARENT
from transforms.batch.dq import CHECKED_TABLES, CHECKS, check_table_day, checks_of
from transforms.settings import DataQualitySettings


def _built_at(db_path) -> datetime:
    """When the fixture's catalog was built, right after its data: the 'now' its freshness is judged at."""
    return datetime.fromtimestamp(db_path.stat().st_mtime, UTC)


def test_check_names_are_unique_and_prefixed_by_their_table():
    names = [c.name for c in CHECKS]
    assert len(names) == len(set(names))
    assert all(c.name.startswith(c.table + "_") for c in CHECKS)
    assert {c.table for c in CHECKS} == set(CHECKED_TABLES)
    # Freshness and genealogy report; they never stop the numbers downstream.
    assert {c.name for c in CHECKS if not c.blocking} == {
        "readings_freshness", "production_events_freshness", "production_events_genealogy"}


@pytest.mark.parametrize("table", CHECKED_TABLES)
def test_the_simulated_plant_passes_every_check(simulated_warehouse, table):
    day = _built_at(simulated_warehouse).date()
    outcomes = check_table_day(simulated_warehouse, simulated_warehouse.parent / "lake", table, day,
                               now=_built_at(simulated_warehouse))
    assert [o.check for o in outcomes] == [c.name for c in checks_of(table)]
    failed = [o.message for o in outcomes if not o.success]
    assert failed == []
    assert all(o.observed and o.expected and o.message is None for o in outcomes)


def _failures(c, table, day, now=None):
    outcomes = check_table_day(c.db_path, c.lake_root, table, day, now=now or c.built_at)
    return {o.check: o for o in outcomes if not o.success}


def test_the_corrupted_readings_fail_exactly_the_matching_checks(corrupted_warehouse):
    c = corrupted_warehouse
    failed = _failures(c, "readings", c.day)
    assert set(failed) == {"readings_keys_not_null", "readings_unique_source_position", "readings_physical_range",
                           "readings_offsets_complete"}
    assert all(o.blocking for o in failed.values())
    day = c.day.isoformat()
    assert failed["readings_keys_not_null"].message == f"readings {day} readings_keys_not_null: null sensor_id 1, expected = 0"
    unique = failed["readings_unique_source_position"].message
    assert f"src_partition=0 (duplicate_rows {c.duplicated_rows}" in unique
    physical = failed["readings_physical_range"].message
    assert f"sensor_id={c.cold_sensor}" in physical and "min_value -300" in physical and "phys_lo -273.15" in physical
    offsets = failed["readings_offsets_complete"].message
    assert f"src_partition=0 (missing {c.lost_offsets}," in offsets
    assert all("\n" not in o.message for o in failed.values())


def test_the_corrupted_events_fail_their_domain_and_genealogy_checks(corrupted_warehouse):
    c = corrupted_warehouse
    failed = _failures(c, "production_events", c.day)
    assert set(failed) == {"production_events_valid_values", "production_events_genealogy"}
    assert "events of an unknown kind 1, expected = 0" in failed["production_events_valid_values"].message
    genealogy = failed["production_events_genealogy"]
    assert GHOST_PARENT in genealogy.message and not genealogy.blocking


def test_a_missing_day_fails_rows_and_freshness(corrupted_warehouse):
    c = corrupted_warehouse
    for table in ("readings", "production_events"):
        failed = _failures(c, table, c.missing_day)
        assert set(failed) == {f"{table}_rows_present", f"{table}_freshness"}
        assert failed[f"{table}_rows_present"].message == (
            f"{table} {c.missing_day.isoformat()} {table}_rows_present: rows 0, expected >= 1")
    assert _failures(c, "dead_letters", c.missing_day) == {}  # a day without refusals is a good day


def test_a_stalled_stream_fails_freshness_only(simulated_warehouse):
    built = _built_at(simulated_warehouse)
    midnight = datetime.combine(built.date() + timedelta(days=1), datetime.min.time(), UTC)
    if midnight - built < timedelta(minutes=15):  # the day's end would be the reference, minutes later
        pytest.skip("fixture built minutes before midnight")
    settings = DataQualitySettings(max_lag_s=600)
    outcomes = check_table_day(simulated_warehouse, simulated_warehouse.parent / "lake", "readings", built.date(),
                               now=built + timedelta(hours=2), settings=settings)
    failed = [o for o in outcomes if not o.success]
    assert [o.check for o in failed] == ["readings_freshness"]
    assert "lags the day's end (now, for today)" in failed[0].message and "expected <= 600" in failed[0].message


def test_an_unchecked_table_is_refused_in_one_line(simulated_warehouse):
    with pytest.raises(ValueError, match="no data-quality checks for 'sensors'"):
        check_table_day(simulated_warehouse, simulated_warehouse.parent / "lake", "sensors",
                        _built_at(simulated_warehouse).date())


def test_docs_list_exactly_these_checks():
    from transforms.batch.dq.suites import checks_markdown
    from transforms.settings import REPO_ROOT

    assert checks_markdown() in (REPO_ROOT / "docs" / "batch.md").read_text()
