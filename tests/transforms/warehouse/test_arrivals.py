"""What the lake received since a previous look: moved checkpoints and the days of newly committed files."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.committed_lake import TOPIC, commit, day_at, write_readings
from transforms.warehouse.arrivals import decode_offsets, encode_offsets, lake_arrivals


def test_an_empty_or_missing_lake_has_no_arrivals(tmp_path):
    arrivals = lake_arrivals(tmp_path / "absent", {})
    assert (arrivals.offsets, arrivals.advanced, arrivals.days, arrivals.changed) == ({}, (), (), False)


def test_only_committed_files_are_news_and_each_once(tmp_path):
    lake = tmp_path / "lake"
    write_readings(lake, 0, 0, 10, day_at("2026-11-27"))
    assert not lake_arrivals(lake, {}).changed  # written, not committed yet

    commit(lake, 0, 10)
    first = lake_arrivals(lake, {})
    assert first.advanced == (f"{TOPIC}+0",)
    assert first.days == ("2026-11-27",)
    assert first.offsets == {f"{TOPIC}+0": 10}

    again = lake_arrivals(lake, first.offsets)
    assert not again.changed and again.days == ()

    # The next batch spans midnight: two days, and only its days, not the one committed before.
    write_readings(lake, 0, 10, 10, day_at("2026-11-28", 23) + timedelta(minutes=57))
    write_readings(lake, 1, 0, 5, day_at("2026-11-30"))  # another partition, still uncommitted
    commit(lake, 0, 20)
    second = lake_arrivals(lake, first.offsets)
    assert second.advanced == (f"{TOPIC}+0",)
    assert second.days == ("2026-11-28", "2026-11-29")


def test_a_checkpoint_that_went_back_rereads_its_files(tmp_path):
    """A restored lake or a recreated topic: the files below the new checkpoint are news again."""
    lake = tmp_path / "lake"
    write_readings(lake, 0, 0, 10, day_at("2026-11-27"))
    commit(lake, 0, 10)
    arrivals = lake_arrivals(lake, {f"{TOPIC}+0": 500})
    assert arrivals.changed and arrivals.days == ("2026-11-27",)


def test_days_of_a_real_stream_lake(simulated_warehouse):
    """The simulator's lake, landed by the stream's own partition processors: everything is news once."""
    lake = simulated_warehouse.parent / "lake"
    arrivals = lake_arrivals(lake, {})
    assert arrivals.changed
    assert set(arrivals.days) == {p.name.removeprefix("date=") for p in (lake / "readings").glob("date=*")}
    assert not lake_arrivals(lake, arrivals.offsets).changed


@pytest.mark.parametrize("cursor", [None, "", "not json", "[1, 2]", '{"a+0": -1, "b+1": true, "c+2": "7"}'])
def test_an_unreadable_cursor_means_a_first_look(cursor):
    assert decode_offsets(cursor) == {}


def test_cursor_round_trip_is_order_independent():
    offsets = {"b+1": 7, "a+0": 3}
    assert decode_offsets(encode_offsets(offsets)) == offsets
    assert encode_offsets(offsets) == encode_offsets(dict(reversed(list(offsets.items()))))
