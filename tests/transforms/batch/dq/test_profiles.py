"""DuckDB's side of the checks: the day reduced to small frames, exact where it counts.

Hand-made tables in an in-memory DuckDB (named like the warehouse views) for the edge cases; the
simulated and the corrupted fixture warehouses for the real thing.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import duckdb
import pytest

from transforms.batch.dq import profiles as P
from transforms.warehouse.reader import connect

DAY = date(2026, 3, 2)


def _lake(readings: list[tuple], dead: list[tuple] = ()) -> duckdb.DuckDBPyConnection:
    """readings (date, src_partition, src_offset, src_index) and dead letters (topic, partition, offset)."""
    con = duckdb.connect()
    con.execute("CREATE TABLE readings (date DATE, src_partition INTEGER, src_offset BIGINT, src_index INTEGER)")
    con.execute("CREATE TABLE dead_letters (source_topic VARCHAR, source_partition INTEGER, source_offset BIGINT)")
    if readings:
        con.executemany("INSERT INTO readings VALUES (?, ?, ?, ?)", readings)
    if dead:
        con.executemany("INSERT INTO dead_letters VALUES (?, ?, ?)", list(dead))
    return con


def _frames(offsets: range, size: int, day: date = DAY, partition: int = 0) -> list[tuple]:
    return [(day, partition, o, i) for o in offsets for i in range(size)]


def _positions(con) -> dict:
    frame = P.source_positions(con, P.SOURCES["readings"], DAY)
    return {row["src_partition"]: row for row in frame.to_dict("records")}


def test_a_complete_day_has_nothing_missing_or_repeated():
    # offsets 0..9, offset 4 refused (dead letter), offset 7 dated the next day (late data)
    rows = _frames(range(0, 4), 3) + _frames(range(5, 7), 3) + _frames(range(8, 10), 3)
    rows += _frames(range(7, 8), 3, day=DAY + timedelta(days=1))
    p0 = _positions(_lake(rows, [("plant.readings.v1", 0, 4)]))[0]
    assert (p0["first_offset"], p0["last_offset"], p0["offsets"]) == (0, 9, 8)
    assert (p0["other_days"], p0["dead_lettered"], p0["missing"], p0["duplicate_rows"]) == (1, 1, 0, 0)


def test_lost_offsets_are_counted_and_other_topics_dead_letters_do_not_hide_them():
    rows = _frames(range(0, 3), 2) + _frames(range(6, 8), 2)
    p0 = _positions(_lake(rows, [("plant.events.v1", 0, 3)]))[0]
    assert p0["missing"] == 3  # offsets 3, 4, 5


@pytest.mark.parametrize(("indices", "extra"), [
    ([0, 1, 2, 0, 1, 2], 3),  # a frame landed twice
    ([0, 1, 1, 2], 1),         # one sample twice
    ([0, 0, 2], 1),            # a repeat hiding a gap: count = max + 1, caught by the sums
    ([0, 0, 3, 3], 2),         # count, min, max and sum as 0..3: caught by the sum of squares
    ([1, 2, 3], 0),            # a frame missing its first sample: irregular, but no repeat
])
def test_repeated_source_positions_are_counted_exactly(indices, extra):
    rows = _frames(range(0, 5), 4) + [(DAY, 0, 5, i) for i in indices]
    assert _positions(_lake(rows))[0]["duplicate_rows"] == extra


def test_events_count_repeated_offsets_without_an_index():
    con = duckdb.connect()
    con.execute("CREATE TABLE production_events AS SELECT DATE '2026-03-02' AS date, 1 AS src_partition, "
                "o::BIGINT AS src_offset FROM range(10) t(o) UNION ALL SELECT DATE '2026-03-02', 1, 3")
    con.execute("CREATE TABLE dead_letters (source_topic VARCHAR, source_partition INTEGER, source_offset BIGINT)")
    row = P.source_positions(con, P.SOURCES["production_events"], DAY).to_dict("records")[0]
    assert (row["src_partition"], row["duplicate_rows"], row["missing"]) == (1, 1, 0)


def test_freshness_measures_against_the_day_end_or_now():
    newest = datetime(2026, 3, 2, 23, 50, tzinfo=UTC)
    past = P.freshness(newest, DAY, now=datetime(2026, 3, 5, tzinfo=UTC)).iloc[0]
    assert past["lag_s"] == 600.0 and past["reference"].startswith("2026-03-03T00:00")
    today = P.freshness(datetime(2026, 3, 2, 12, tzinfo=UTC), DAY, now=datetime(2026, 3, 2, 12, 5, tzinfo=UTC))
    assert today.iloc[0]["lag_s"] == 300.0
    assert P.freshness(None, DAY, now=newest).iloc[0]["lag_s"] is None


def test_genealogy_skips_stock_rolls_and_names_unknown_parents():
    con = duckdb.connect()
    con.execute("""CREATE TABLE production_events AS SELECT * FROM (VALUES
        (DATE '2026-03-01', 'roll-1', []::VARCHAR[]),
        (DATE '2026-03-02', 'cell-1', ['roll-1', 'ref-L1-anode-20260301T000000Z-S1-STOCK01']),
        (DATE '2026-03-02', 'cell-2', ['roll-9']),
        (DATE '2026-03-03', 'roll-7', [])) t(date, unit_id, parent_ids)""")
    row = P.genealogy(con, DAY, examples=5).iloc[0]
    assert (row["parents"], row["unknown_parents"], row["unknown_examples"]) == (3, 1, "roll-9")
    # roll-7 appears only later: a parent cannot be made after its child
    con.execute("INSERT INTO production_events VALUES (DATE '2026-03-02', 'cell-3', ['roll-7'])")
    assert P.genealogy(con, DAY, examples=5).iloc[0]["unknown_parents"] == 2


def test_footers_prove_clean_keys_and_leave_the_broken_one_to_the_scan(simulated_warehouse, corrupted_warehouse):
    c = corrupted_warehouse
    con = duckdb.connect()
    keys = P.KEY_COLUMNS["readings"]
    clean_files = P.day_files(simulated_warehouse.parent / "lake", "readings", c.day)
    assert P.footer_nulls(con, clean_files, keys) == set(keys)
    proven = P.footer_nulls(con, P.day_files(c.lake_root, "readings", c.day), keys)
    assert proven == set(keys) - {"sensor_id"}


def test_the_corrupted_day_in_figures(corrupted_warehouse):
    c = corrupted_warehouse
    con = connect(c.db_path)
    try:
        per_source = {r["src_partition"]: r for r in
                      P.source_positions(con, P.SOURCES["readings"], c.day).to_dict("records")}
        per_sensor = P.readings_per_sensor(con, c.day)
        schema = P.schema_frame(con, c.lake_root, P.READINGS, c.day)
    finally:
        con.close()
    assert per_source[0]["duplicate_rows"] == c.duplicated_rows
    assert per_source[0]["missing"] == c.lost_offsets
    assert per_source[0]["dead_lettered"] > 0  # the fixture's malformed readings account for their offsets
    cold = per_sensor.set_index("sensor_id").loc[c.cold_sensor]
    assert cold["min_value"] == -300.0 and cold["unphysical"] == 1
    assert int(per_sensor.loc[per_sensor["sensor_id"].isna(), "rows"].sum()) == c.null_sensor_rows
    assert (schema["actual_type"] == schema["expected_type"]).all() and (schema["files_missing"] == 0).all()
