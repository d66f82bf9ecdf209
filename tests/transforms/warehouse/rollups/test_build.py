"""Building rollup days: identical bytes on re-run, the incremental plan (new, late, expired, changed
definition, copied lake), empty days and the view over every kept day."""

from __future__ import annotations

import dataclasses
import shutil
from datetime import date, timedelta

import duckdb
import pyarrow.parquet as pq
import pytest

from tests.transforms.warehouse.rollups.support import at, event, health_row, sensor, write_rows
from transforms.warehouse import write_sensors
from transforms.warehouse.rollups import (
    ROLLUPS,
    build_rollup_day,
    days_to_rebuild,
    lake_sources,
    plan_rollups,
    read_record,
    refresh_rollups,
    rollup_days,
    rollup_path,
    rollup_view_sql,
)

D1, D2, D3 = date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)
SOURCES = ("production_events", "energy_features", "sensor_features_1m", "sensor_health", "sensors")


def plan(lake, **kw) -> set[tuple[str, date, str]]:
    return {(t.name, t.day, t.reason) for t in days_to_rebuild(lake, **kw)}


def refresh(lake, **kw):
    return refresh_rollups(lake_sources(lake), lake, **kw)


def health_lake(lake, days=(D1, D2, D3)) -> None:
    """Two sensors' health for a few minutes of each day, and the asset model."""
    for i, d in enumerate(days):
        rows = [health_row(s, at(d, 8, m), 60 - m) for s in ("a", "b") for m in range(3)]
        write_rows(lake, "sensor_health", rows, first=100 * i)
    write_sensors(lake, [sensor("a"), sensor("b")])


def events_lake(lake, days=(D1, D2, D3)) -> None:
    for i, d in enumerate(days):
        write_rows(lake, "production_events", [
            event(at(d, 9), f"c{i}", "enter", offset=100 * i), event(at(d, 9, 5), f"c{i}", "leave", offset=100 * i + 1)],
            first=100 * i)


# --------------------------------------------------------------------------- the simulated lake

def test_rebuilding_a_day_gives_identical_bytes(simulated_lake):
    lake, report = simulated_lake
    assert {(r.name, r.day) for r in report.built} >= {(n, d) for n in ROLLUPS for d in (D1, D2)}
    sources = lake_sources(lake)
    for r in report.built:
        before = r.path.read_bytes()
        assert build_rollup_day(sources, lake, r.name, r.day) == r.path
        assert r.path.read_bytes() == before, (r.name, r.day)
    assert days_to_rebuild(lake) == []


def test_a_copied_lake_needs_no_rebuild_and_builds_the_same_bytes(simulated_lake, tmp_path):
    lake, _ = simulated_lake
    copy = tmp_path / "copy"
    for table in (*SOURCES, "rollups"):
        shutil.copytree(lake / table, copy / table, copy_function=shutil.copy)  # new mtimes
    assert days_to_rebuild(copy) == []
    path = build_rollup_day(lake_sources(copy), copy, "quality_daily", D2)
    assert path.read_bytes() == rollup_path(lake, "quality_daily", D2).read_bytes()


def test_compaction_and_collection_change_no_rollup_row(simulated_lake, tmp_path):
    """Merged and collected, the lake reads the same rows: a rebuild after compaction gives the same rows
    (only the recorded source fingerprint differs), and a day whose hot folder collection removed is
    still a day with data, not an expired one."""
    from transforms.warehouse.maintenance import compact

    lake, report = simulated_lake
    copy = tmp_path / "copy"
    shutil.copytree(lake, copy, copy_function=shutil.copy)
    before = {(r.name, r.day): pq.read_table(r.path) for r in report.built}
    compact(copy, tmp_path / "w.duckdb", grace_s=0)
    compact(copy, tmp_path / "w.duckdb", grace_s=0)  # collects every merged hot file
    assert not any((copy / "production_events").glob("date=*/*.parquet"))
    replanned = days_to_rebuild(copy)
    assert {(t.name, t.day) for t in replanned} <= set(before)
    refresh_rollups(lake_sources(copy), copy)
    assert days_to_rebuild(copy) == []
    for (name, day), rows in before.items():
        after = pq.read_table(rollup_path(copy, name, day))
        assert after.replace_schema_metadata(None).equals(rows.replace_schema_metadata(None)), (name, day)


def test_the_view_reads_every_kept_day_with_a_typed_date(simulated_lake):
    lake, _ = simulated_lake
    con = duckdb.connect()
    for name in ROLLUPS:
        files = sum(pq.read_metadata(rollup_path(lake, name, d)).num_rows for d in rollup_days(lake, name))
        rows = con.execute(f"SELECT count(*), count(DISTINCT date), any_value(typeof(date)) "
                           f"FROM ({rollup_view_sql(lake, name)})").fetchone()
        assert rows[0] == files and (rows[2] == "DATE" or rows[0] == 0), name
    assert con.execute(f"SELECT sum(n) FROM ({rollup_view_sql(lake, 'sensor_daily')}) WHERE date = ?",
                       [D2]).fetchone()[0] > 0
    with pytest.raises(ValueError, match="unknown rollup"):
        rollup_view_sql(lake, "nope")


# --------------------------------------------------------------------------- incremental

def test_refresh_builds_new_days_then_nothing(tmp_path):
    lake = tmp_path / "lake"
    health_lake(lake)
    assert plan(lake) == {("sensor_health_daily", d, "new") for d in (D1, D2, D3)}
    built = refresh(lake).built
    assert {(r.name, r.day, r.rows) for r in built} == {("sensor_health_daily", d, 2) for d in (D1, D2, D3)}
    assert plan(lake) == set() and refresh(lake).built == []
    record = read_record(rollup_path(lake, "sensor_health_daily", D2))
    assert set(record["inputs"]) == {"sensor_health/date=2026-03-02", "sensors"}
    assert record["version"] == ROLLUPS["sensor_health_daily"].version


def test_a_late_file_for_an_old_day_rebuilds_that_day_only(tmp_path):
    lake = tmp_path / "lake"
    health_lake(lake)
    refresh(lake)
    untouched = {d: rollup_path(lake, "sensor_health_daily", d).read_bytes() for d in (D2, D3)}
    write_rows(lake, "sensor_health", [health_row("a", at(D1, 23, 59), 7, late=2)], partition=1, first=5000)
    assert plan(lake) == {("sensor_health_daily", D1, "changed")}
    refresh(lake)
    row = next(r for r in pq.read_table(rollup_path(lake, "sensor_health_daily", D1)).to_pylist()
               if r["sensor_id"] == "a")
    assert (row["windows"], row["observed"], row["late"]) == (4, 60 + 59 + 58 + 7, 2)
    assert {d: rollup_path(lake, "sensor_health_daily", d).read_bytes() for d in (D2, D3)} == untouched


def test_the_stream_rewriting_the_same_batch_rebuilds_nothing(tmp_path):
    lake = tmp_path / "lake"
    health_lake(lake)
    refresh(lake)
    health_lake(lake)  # a redone batch: same names, same content
    assert plan(lake) == set()


def test_late_events_rebuild_their_day_and_the_days_that_read_it_as_context(tmp_path):
    lake = tmp_path / "lake"
    events_lake(lake)
    refresh(lake)
    assert plan(lake) == set()
    write_rows(lake, "production_events", [event(at(D2, 9, 30), "x", "scrap", offset=900, reason="moisture")],
               first=900)
    # quality and energy of D2 hold it, D3 reads D2 to number visits, and D1's night shift ends in D2.
    assert plan(lake) == {("quality_daily", D2, "changed"), ("quality_daily", D3, "changed"),
                          ("energy_daily", D2, "changed"), ("energy_daily", D3, "changed"),
                          ("energy_shift", D1, "changed"), ("energy_shift", D2, "changed"),
                          ("energy_shift", D3, "changed")}
    refresh(lake)
    q = pq.read_table(rollup_path(lake, "quality_daily", D2)).to_pylist()[0]
    assert (q["scrapped"], dict(q["scrap_by_reason"])) == (1, {"moisture": 1})


def test_expired_sources_keep_their_rollup(tmp_path):
    lake = tmp_path / "lake"
    health_lake(lake)
    refresh(lake)
    kept = rollup_path(lake, "sensor_health_daily", D1).read_bytes()
    shutil.rmtree(lake / "sensor_health" / "date=2026-03-01")  # retention
    write_sensors(lake, [sensor("a", usl=99.0), sensor("b")])  # would otherwise rebuild every day
    assert plan(lake) == {("sensor_health_daily", D2, "changed"), ("sensor_health_daily", D3, "changed")}
    report = refresh(lake, force=True)
    assert {(r.name, r.day) for r in report.built} == {("sensor_health_daily", D2), ("sensor_health_daily", D3)}
    assert [(t.name, t.day, t.reason) for t in report.kept] == [("sensor_health_daily", D1, "kept")]
    assert rollup_path(lake, "sensor_health_daily", D1).read_bytes() == kept
    assert refresh(lake, names=["sensor_health_daily"], days=[D1]).built == []
    assert rollup_path(lake, "sensor_health_daily", D1).read_bytes() == kept


def test_a_changed_definition_or_an_unreadable_file_is_rebuilt(tmp_path):
    lake = tmp_path / "lake"
    health_lake(lake, days=(D1, D2))
    refresh(lake)
    spec = ROLLUPS["sensor_health_daily"]
    changed = {**ROLLUPS, spec.name: dataclasses.replace(spec, sql=spec.sql.replace("count(*) AS windows",
                                                                                  "count(*) + 0 AS windows"))}
    assert {(t.name, t.day, t.reason) for t in days_to_rebuild(lake, specs=changed)} == \
        {(spec.name, D1, "definition"), (spec.name, D2, "definition")}
    rollup_path(lake, spec.name, D2).write_bytes(b"not parquet")
    assert plan(lake) == {(spec.name, D2, "unreadable")}


def test_since_days_and_names_narrow_the_plan(tmp_path):
    lake = tmp_path / "lake"
    health_lake(lake)
    events_lake(lake, days=(D2,))
    assert {(t.name, t.day) for t in days_to_rebuild(lake, ["quality_daily"])} == {("quality_daily", D2)}
    assert {t.day for t in days_to_rebuild(lake, since=D3)} == {D3}
    refresh(lake)
    todo, kept = plan_rollups(lake, ["sensor_health_daily"], force=True, since=D2)
    assert [(t.day, t.reason) for t in todo] == [(D2, "requested"), (D3, "requested")] and kept == []
    with pytest.raises(ValueError, match="unknown rollup 'nope'"):
        days_to_rebuild(lake, ["nope"])


def test_a_day_without_source_rows_is_an_empty_file_that_readers_see_as_no_rows(tmp_path):
    lake = tmp_path / "lake"
    health_lake(lake, days=(D1,))
    day = D1 + timedelta(days=40)
    for name, spec in ROLLUPS.items():
        path = build_rollup_day(lake_sources(lake), lake, name, day)
        table = pq.read_table(path)
        assert table.num_rows == 0 and table.schema.names == spec.file_schema.names, name
        assert read_record(path)["date"] == day.isoformat()
        assert pq.read_table(path).schema.field(spec.file_schema.names[0]).metadata == \
            spec.file_schema.field(0).metadata
    assert plan(lake) == {("sensor_health_daily", D1, "new")}  # the empty day is done, not redone
    con = duckdb.connect()
    assert con.execute(f"SELECT count(*) FROM ({rollup_view_sql(lake, 'quality_daily')})").fetchone()[0] == 0
