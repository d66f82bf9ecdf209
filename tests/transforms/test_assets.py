"""The asset topic folded record by record: no bad record can poison the model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.contracts import Reason, encode
from transforms.assets import AssetSnapshot

TOPIC = "plant.assets.v1"


@pytest.fixture(scope="module")
def entries(reference_plant):
    return reference_plant.sensors[:3]


def test_tombstone_retires_and_a_later_entry_brings_back(entries):
    a = entries[0]
    snap = AssetSnapshot(TOPIC)
    assert snap.fold(0, 0, a.sensor_id.encode(), encode(a)) is None
    assert snap.fold(0, 1, a.sensor_id.encode(), None) is None
    assert a.sensor_id not in snap.entries and a.sensor_id in snap.retired
    snap.fold(0, 2, a.sensor_id.encode(), encode(a))
    assert snap.entries[a.sensor_id] == a and not snap.retired


@pytest.mark.parametrize("key, value, reason", [
    (b"x", b"not json", Reason.NOT_JSON),
    (b"x", b"", Reason.EMPTY),
    (None, None, Reason.EMPTY),
    (b"\xff\xfe", None, Reason.BAD_VALUE),
    (b"x", b'{"v":1,"sensor_id":"x"}', Reason.MISSING_FIELD),
])
def test_a_bad_record_changes_nothing_and_is_refused_with_its_position(entries, key, value, reason):
    snap = AssetSnapshot(TOPIC)
    for i, e in enumerate(entries):
        snap.fold(0, i, e.sensor_id.encode(), encode(e))
    before = dict(snap.entries)
    letter = snap.fold(0, 99, key, value)
    assert letter is not None and letter.reason is reason
    assert (letter.source_topic, letter.source_partition, letter.source_offset, letter.stage) == (TOPIC, 0, 99, "stream")
    assert snap.entries == before and snap.rejected == [letter]


def test_a_bad_update_keeps_the_last_valid_entry(entries):
    a = entries[0]
    snap = AssetSnapshot(TOPIC)
    snap.fold(0, 0, a.sensor_id.encode(), encode(a))
    broken = encode(a).replace(b'"unit"', b'"unit":7,"x"')
    assert snap.fold(0, 1, a.sensor_id.encode(), broken) is not None
    assert snap.entries[a.sensor_id] == a


def test_apply_to_keeps_other_entries_unless_retired(entries):
    a, b, c = entries
    live = {c.sensor_id: c, b.sensor_id: b}
    snap = AssetSnapshot(TOPIC)
    snap.fold(0, 0, a.sensor_id.encode(), encode(a))
    snap.fold(0, 1, b.sensor_id.encode(), None)
    snap.apply_to(live)
    assert set(live) == {a.sensor_id, c.sensor_id}


@settings(max_examples=200)
@given(st.lists(st.tuples(st.one_of(st.none(), st.binary(max_size=30)), st.one_of(st.none(), st.binary(max_size=200))),
                max_size=10))
def test_any_records_only_ever_add_valid_entries(records):
    snap = AssetSnapshot(TOPIC)
    for i, (key, value) in enumerate(records):
        snap.fold(0, i, key, value)  # never raises
    assert all(e.sensor_id for e in snap.entries.values())
    assert len(snap.rejected) + sum(1 for _, v in records if v is None) >= len(records) - len(snap.entries)
