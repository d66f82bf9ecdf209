"""The bench lake built without Kafka: outages, work sharing, and a lake equal to the stream's."""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import pytest

from gigapulse.bench.lakebuild import READINGS_PARTITIONS, LakePlan, _split, build_lake, in_outage
from schemas.asset_model import load_plant

START = datetime(2026, 1, 5, 23, 59, tzinfo=UTC)


@pytest.fixture(scope="module")
def plant():
    return load_plant("reference")


@pytest.mark.parametrize(("gateway", "t_s", "silent"), [
    (0, 29, False), (0, 30, True), (0, 39, True), (0, 40, False),  # outage 0: gateway 0, 30 s to 40 s
    (1, 35, False), (1, 90, True), (2, 150, True), (1, 210, False),  # outage k silences gateway k
    (0, 30 + 3 * 60, True),  # three gateways: outage 3 is gateway 0's again
])
def test_outages_take_the_gateways_in_turn(gateway, t_s, silent):
    plan = LakePlan(seconds=600, start=START, outage_every_s=60, outage_s=10)
    assert in_outage(gateway, 3, t_s, plan) is silent


def test_no_outage_when_switched_off():
    plan = LakePlan(seconds=600, start=START, outage_every_s=0)
    assert not any(in_outage(0, 1, t, plan) for t in range(600))


@pytest.mark.parametrize("workers", [1, 2, 3, 9])
def test_work_is_shared_without_losing_a_partition(plant, workers):
    split = _split(plant, workers)
    assert len(split) == min(workers, READINGS_PARTITIONS)
    parts = sorted(p for ps, _ in split for p in ps)
    assert parts == list(range(READINGS_PARTITIONS))
    assert [events for _, events in split].count(True) == 1


def _summary(lake) -> list[tuple]:
    con = duckdb.connect()
    out = []
    for table, cols in (("readings", "count(*), sum(value), count(DISTINCT sensor_id), max(ts)"),
                        ("sensor_features_1m", "count(*), sum(\"count\"), max(window_start)"),
                        ("production_events", "count(*), count(DISTINCT event_id)")):
        out.append(con.execute(f"SELECT {cols} FROM read_parquet(?, hive_partitioning = true)",
                               [str(lake / table / "**" / "*.parquet")]).fetchone())
    return out


def test_the_lake_does_not_depend_on_the_workers_and_closes_the_last_window(plant, tmp_path):
    plan = LakePlan(seconds=120, start=START, checkpoint_s=60, outage_every_s=40, outage_s=5)
    one = build_lake(plant, tmp_path / "one", plan, workers=1)
    two = build_lake(plant, tmp_path / "two", plan, workers=2)
    assert one.readings == two.readings > 0 and one.events == two.events > 0
    assert one.frames_dropped == two.frames_dropped > 0
    a, b = _summary(tmp_path / "one"), _summary(tmp_path / "two")
    assert a[0][0] == b[0][0] and a[0][1] == pytest.approx(b[0][1]) and a[1:] == b[1:]
    # A checkpoint interval ends on the last tick: the final checkpoint still takes the last
    # messages and closes every window, so the minute before the end has its features.
    assert a[1][2] == datetime(2026, 1, 6, 0, 0, tzinfo=UTC)
    assert a[1][1] == a[0][0]  # every reading is in exactly one 1-minute window
    assert a[2][0] == a[2][1]  # event ids unique within one build


def test_a_lake_is_built_into_an_empty_directory_only(plant, tmp_path):
    (tmp_path / "lake").mkdir()
    (tmp_path / "lake" / "something").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        build_lake(plant, tmp_path / "lake", LakePlan(seconds=1, start=START))
