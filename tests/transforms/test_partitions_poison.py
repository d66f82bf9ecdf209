"""Whatever a Kafka client writes, a partition processor lands it or dead-letters it, and goes on.

Property-based (hypothesis): poison records (null values, empty and arbitrary bytes, arbitrary JSON,
valid messages with one field replaced by arbitrary JSON, deep nesting, any Kafka timestamp) are
mixed into real traffic of the reference plant at random places, with checkpoints at random places.
Every record must come out exactly once, landed or dead-lettered, and the valid records must land
exactly as they do without the poison. ``docs/RELIABILITY.md`` reports how many cases run.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import orjson
import pyarrow.dataset as ds
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.contracts import MAX_DEAD_LETTER_PAYLOAD, DeadLetter, Reason, decode_dead_letter, encode
from transforms import features as F
from transforms import partitions as P
from transforms.settings import StreamSettings

READINGS, EVENTS, DLQ = "plant.readings.v1", "plant.events.v1", "plant.dlq.v1"
#: Kafka timestamps a client may set: none (-1), the epoch, year 2200, the int64 extremes.
KAFKA_TIMESTAMPS = [None, -1, 0, 1, 1_500_000_000_000, 7_258_118_400_000, 2**63 - 1, -(2**63)]
#: Examples per property; the sum over this file is what docs/RELIABILITY.md reports.
EXAMPLES = 40

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
DELETE = object()


def _dumps(value) -> bytes:
    """JSON as any client may write it: integers beyond 64 bits included (orjson refuses to write those)."""
    return json.dumps(value).encode()


def _mutated(valid: list[bytes]):
    """A valid message of ``valid`` with one field replaced by arbitrary JSON, or removed."""
    def build(args) -> bytes:
        payload, field_pick, value = args
        obj = orjson.loads(payload)
        name = sorted(obj)[field_pick % len(obj)]
        if value is DELETE:
            del obj[name]
        else:
            obj[name] = value
        return _dumps(obj)
    return st.tuples(st.sampled_from(valid), st.integers(0, 50), json_values | st.just(DELETE)).map(build)


def poison(valid: list[bytes]):
    return st.one_of(
        st.none(),
        st.just(b""),
        st.binary(max_size=200),
        json_values.map(_dumps),
        _mutated(valid),
        st.integers(1, 2000).map(lambda n: b"[" * n + b"]" * n),
        st.integers(1, 400).map(lambda n: b'{"v":1,"a":' * n + b"1" + b"}" * n),
    )


def _settings(**kw) -> StreamSettings:
    return StreamSettings(microbatch_rows=kw.pop("microbatch_rows", 4000), **kw)


def _table(lake: Path, name: str):
    path = lake / name
    if not path.exists():
        return None
    return ds.dataset(path, format="parquet", partitioning="hive").to_table()


def _feed(partition, records, checkpoints: set[int]) -> list[DeadLetter]:
    """Add (offset, kafka_ms, payload) records, checkpointing after the given positions."""
    letters: list[DeadLetter] = []
    for i, (off, kafka_ms, payload) in enumerate(records):
        partition.add(off, kafka_ms, payload)
        if i in checkpoints and i < len(records) - 1:  # the final checkpoint below closes the windows
            result = partition.checkpoint()
            letters += result.dead_letters if result else []
    result = partition.checkpoint(final=True)
    return letters + (result.dead_letters if result else [])


def _interleave(valid: list[bytes], bad: list[tuple[int, bytes | None, int | None]], valid_ts: list[int | None]):
    """Offsets for a run with the poison at the given places, and the valid records' offsets."""
    records, valid_offsets, bad_offsets = [], [], []
    at = {}
    for place, payload, ts in bad:
        at.setdefault(place % (len(valid) + 1), []).append((payload, ts))
    off = 0
    for i in range(len(valid) + 1):
        for payload, ts in at.get(i, []):
            records.append((off, ts, payload))
            bad_offsets.append(off)
            off += 1
        if i < len(valid):
            records.append((off, valid_ts[i % len(valid_ts)], valid[i]))
            valid_offsets.append(off)
            off += 1
    return records, valid_offsets, bad_offsets


RAW_COLUMNS = ["src_offset", "src_index", "sensor_id", "ts", "value", "quality"]


def _raw_rows(lake: Path) -> list[tuple]:
    t = _table(lake, "readings")
    if t is None:
        return []
    return sorted(zip(*(t[c].to_pylist() for c in RAW_COLUMNS), strict=True))


def _features(lake: Path, name: str) -> list:
    t = _table(lake, name)
    return [] if t is None else sorted(t.to_pylist(), key=repr)


@pytest.fixture(scope="module")
def frames(reference_traffic):
    return reference_traffic[0][:24]


@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_readings_partition_lands_or_dead_letters_every_record(data, frames, reference_plant):
    bad = data.draw(st.lists(st.tuples(st.integers(0, 10_000), poison(frames), st.sampled_from(KAFKA_TIMESTAMPS)),
                             min_size=1, max_size=6), label="poison")
    valid_ts = data.draw(st.lists(st.sampled_from([0, 1_700_000_000_000, None, -1, 7_258_118_400_000]),
                                  min_size=1, max_size=3), label="valid kafka timestamps")
    cuts = data.draw(st.sets(st.integers(0, len(frames) + len(bad)), max_size=2), label="checkpoints")
    records, valid_offsets, bad_offsets = _interleave(frames, bad, valid_ts)
    with tempfile.TemporaryDirectory() as tmp:
        lake, clean = Path(tmp) / "poisoned", Path(tmp) / "clean"
        p = P.ReadingsPartition(READINGS, 0, lake, _settings(), reference_plant.by_id)
        letters = _feed(p, records, cuts)  # never raises
        assert p.next_offset == len(records)
        landed = {r[0] for r in _raw_rows(lake)}
        dead = [d.source_offset for d in letters]
        assert len(dead) == len(set(dead)), "a record was dead-lettered twice"
        assert landed.isdisjoint(dead), "a record was both landed and dead-lettered"
        assert landed | set(dead) == {off for off, _, _ in records}, "a record was neither landed nor dead-lettered"
        assert set(valid_offsets) <= landed
        assert all(d.reason is not Reason.INTERNAL_ERROR for d in letters), [d.detail for d in letters]
        for d in letters:  # each letter fits the dead-letter topic and says where its record was
            assert d.source_topic == READINGS and d.source_partition == 0 and d.stage == "stream"
            assert len(encode(d)) < 2_097_152
        # The valid records land as they do without the poison.
        q = P.ReadingsPartition(READINGS, 0, clean, _settings(), reference_plant.by_id)
        _feed(q, [r for r in records if r[0] in set(valid_offsets)], set())
        ours = [r for r in _raw_rows(lake) if r[0] in set(valid_offsets)]
        assert ours == _raw_rows(clean)
        if set(dead) == set(bad_offsets):  # every poison refused: the features are untouched too
            for name in ("sensor_features_1m", "sensor_health", "energy_features"):
                assert _features(lake, name) == _features(clean, name), name


@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_events_partition_lands_or_dead_letters_every_record(data, reference_traffic):
    events = reference_traffic[1][:40]
    bad = data.draw(st.lists(st.tuples(st.integers(0, 10_000), poison(events), st.sampled_from(KAFKA_TIMESTAMPS)),
                             min_size=1, max_size=6), label="poison")
    cuts = data.draw(st.sets(st.integers(0, len(events) + len(bad)), max_size=2), label="checkpoints")
    records, valid_offsets, bad_offsets = _interleave(events, bad, [0])
    with tempfile.TemporaryDirectory() as tmp:
        lake, clean = Path(tmp) / "poisoned", Path(tmp) / "clean"
        p = P.EventsPartition(EVENTS, 0, lake, _settings())
        letters = _feed(p, records, cuts)
        t = _table(lake, "production_events")
        landed = set(t["src_offset"].to_pylist()) if t is not None else set()
        dead = [d.source_offset for d in letters]
        assert len(dead) == len(set(dead)) and landed.isdisjoint(dead)
        assert landed | set(dead) == {off for off, _, _ in records}
        assert set(valid_offsets) <= landed
        q = P.EventsPartition(EVENTS, 0, clean, _settings())
        _feed(q, [r for r in records if r[0] in set(valid_offsets)], set())
        if set(dead) == set(bad_offsets):
            assert _features(lake, "quality_features") == _features(clean, "quality_features")


@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(payloads=st.lists(st.tuples(poison([encode(DeadLetter.for_payload(
    b"x", P.ContractError(Reason.NOT_JSON, "x"), "edge"))]), st.sampled_from(KAFKA_TIMESTAMPS)), min_size=1,
    max_size=8))
def test_dead_letter_partition_lands_every_record_and_sends_nothing_back(payloads):
    with tempfile.TemporaryDirectory() as tmp:
        lake = Path(tmp)
        p = P.DeadLettersPartition(DLQ, 0, lake, _settings())
        letters = _feed(p, [(i, ts, payload) for i, (payload, ts) in enumerate(payloads)], set())
        assert letters == []  # nothing goes back to the dead-letter topic, however broken
        t = _table(lake, "dead_letters")
        assert sorted(t.filter(ds.field("stage") == "stream")["source_offset"].to_pylist()
                      + [i for i, (pl, _) in enumerate(payloads) if _valid_letter(pl)]) == list(range(len(payloads)))


def _valid_letter(payload: bytes | None) -> bool:
    try:
        decode_dead_letter(payload)
        return True
    except P.ContractError:
        return False


def test_tombstone_and_other_named_poison_get_their_reasons(tmp_path, frames, reference_plant):
    """The records of the issue, one by one, with the reason each is refused for."""
    huge = b'{"v":1,"type":"frame","gateway":"' + b"x" * 1_500_000 + b'"}'
    cases = [
        (None, Reason.EMPTY), (b"", Reason.EMPTY), (b"\x00\xff\xfe binary", Reason.NOT_JSON),
        (huge, Reason.OVERSIZED), (b"[" * 100_000 + b"]" * 100_000, Reason.NOT_JSON),
        (b'{"v":1,"sensor_id":"ref.L1-coat-c.web_speed","ts":"2200-01-01T00:00:00Z","value":60}',
         Reason.TIMESTAMP_OUT_OF_RANGE),
        (b'{"v":1,"sensor_id":"ref.L1-coat-c.web_speed","ts":"0001-01-01T00:00:00+01:00","value":60}',
         Reason.BAD_TIMESTAMP),
        (b'{"v":1,"type":"frame","gateway":"g","sensors":["ref.L1-coat-c.web_speed"],"idx":[0],'
         b'"ts_ms":[253402300800000],"value":[1]}', Reason.BAD_TIMESTAMP),
    ]
    records = [(i, ts, payload) for i, ((payload, _), ts) in enumerate(zip(cases, [None, -1, 0, 2**63 - 1] * 2,
                                                                            strict=True))]
    records.append((len(records), -1, frames[0]))  # a valid frame whose record has no timestamp: landed
    p = P.ReadingsPartition(READINGS, 0, tmp_path, _settings(), reference_plant.by_id)
    letters = _feed(p, records, set())
    assert [(d.source_offset, d.reason) for d in letters] == [(i, r) for i, (_, r) in enumerate(cases)]
    big = letters[3]
    assert len(big.payload()) == MAX_DEAD_LETTER_PAYLOAD and "truncated" in big.detail and "sha256" in big.detail
    assert _table(tmp_path, "readings")["src_offset"].unique().to_pylist() == [len(cases)]


def test_a_worker_bug_on_one_record_sets_it_aside_and_the_rest_lands_as_without_it(tmp_path, frames,
                                                                                    reference_plant, monkeypatch):
    """A bug that raises on one record's data: bounded retries, an internal_error letter, nothing else changes."""
    target = frames[7]
    marker = float(orjson.loads(target)["value"][0])
    push = F.WindowStats.push
    calls = []

    def buggy(self, keys, ts, values):
        if (values == marker).any():
            calls.append(1)
            raise ZeroDivisionError("a bug that only this record's data triggers")
        return push(self, keys, ts, values)

    clean_records = [(i, 0, f) for i, f in enumerate(frames) if i != 7]
    ref = P.ReadingsPartition(READINGS, 0, tmp_path / "clean", _settings(), reference_plant.by_id)
    _feed(ref, clean_records, {20})
    monkeypatch.setattr(F.WindowStats, "push", buggy)
    p = P.ReadingsPartition(READINGS, 0, tmp_path / "buggy", _settings(internal_retries=2), reference_plant.by_id)
    letters = _feed(p, [(i, 0, f) for i, f in enumerate(frames)], {20})
    monkeypatch.undo()
    assert [(d.source_offset, d.reason) for d in letters] == [(7, Reason.INTERNAL_ERROR)]
    assert "ZeroDivisionError" in letters[0].detail and "3 time(s)" in letters[0].detail
    assert letters[0].payload() == target
    assert p.internal_errors == 1
    assert _raw_rows(tmp_path / "buggy") == _raw_rows(tmp_path / "clean")
    for name in ("sensor_features_1m", "sensor_features_1h", "sensor_health", "energy_features"):
        assert _features(tmp_path / "buggy", name) == _features(tmp_path / "clean", name), name
