"""Contracts round-trip, and every kind of bad input is refused with its specific reason."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.contracts import (
    MAX_FRAME_READINGS,
    ContractError,
    DeadLetter,
    EventKind,
    ProductionEvent,
    Quality,
    Reading,
    Reason,
    Stage,
    UnitType,
    decode_asset,
    decode_dead_letter,
    decode_event,
    decode_reading_message,
    encode,
    encode_frame_arrays,
    json_schemas,
)

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)

sensor_ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=40)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
timestamps = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                          timezones=st.just(UTC)).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))


@given(sensor_ids, timestamps, finite, st.sampled_from(list(Quality)))
def test_reading_round_trip(sensor_id, ts, value, quality):
    r = Reading(sensor_id=sensor_id, ts=ts, value=value, quality=quality)
    back = decode_reading_message(encode(r))
    assert back == r


@settings(max_examples=50)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 2**42), finite, st.integers(0, 2)),
                min_size=0, max_size=200))
def test_frame_round_trip(rows):
    sensors = [f"s{i}" for i in range(5)]
    idx = np.array([r[0] for r in rows], dtype=np.int32)
    ts = np.array([r[1] for r in rows], dtype=np.int64)
    val = np.array([r[2] for r in rows], dtype=np.float64)
    q = np.array([r[3] for r in rows], dtype=np.int8)
    f = decode_reading_message(encode_frame_arrays("gw-1", sensors, idx, ts, val, q))
    assert f.gateway == "gw-1" and f.sensors == sensors
    assert np.array_equal(f.idx, idx) and np.array_equal(f.ts_ms, ts)
    assert np.array_equal(f.value, val) and np.array_equal(f.quality, q)
    assert len(f.to_contract()) == len(rows)


def _event(**kw) -> ProductionEvent:
    base = dict(event_id="e1", ts=T0, site="ref", line="L1", stage=Stage.COATING, station="L1-coat",
                unit_id="roll-1", unit_type=UnitType.ELECTRODE_ROLL, kind=EventKind.MEASURE,
                parent_ids=["slurry-1"], attribute="areal_loading", value=21.5, unit="mg/cm2")
    base.update(kw)
    return ProductionEvent(**base)


@given(st.sampled_from(list(EventKind)), timestamps, finite)
def test_event_round_trip(kind, ts, value):
    extra = {"grade": "A"} if kind is EventKind.GRADE else {}
    extra |= {"reason": "pinholes"} if kind is EventKind.SCRAP else {}
    ev = _event(kind=kind, ts=ts, value=value, **extra)
    assert decode_event(encode(ev)) == ev


def test_dead_letter_keeps_original_bytes():
    raw = b"\x00\xffnot json"
    err = ContractError(Reason.NOT_JSON, "boom")
    dl = DeadLetter.for_payload(raw, err, "stream", "plant.readings.v1", 3, 42, now=T0)
    back = decode_dead_letter(encode(dl))
    assert back.payload() == raw and back.reason is Reason.NOT_JSON and back.source_offset == 42


GOOD = {"v": 1, "sensor_id": "ref.L1-coat.web_speed", "ts": "2026-01-05T06:00:00.000Z", "value": 1.5}


def _with(**kw):
    d = dict(GOOD)
    for k, v in kw.items():
        if v is _DROP:
            d.pop(k)
        else:
            d[k] = v
    return orjson.dumps(d)


_DROP = object()


@pytest.mark.parametrize("payload, reason", [
    (b"{not json", Reason.NOT_JSON),
    (b"", Reason.EMPTY),
    (None, Reason.EMPTY),
    (b"[1, 2]", Reason.NOT_OBJECT),
    (_with(sensor_id=_DROP), Reason.MISSING_FIELD),
    (_with(ts=_DROP), Reason.MISSING_FIELD),
    (_with(v=_DROP), Reason.MISSING_FIELD),
    (_with(value="1.5"), Reason.WRONG_TYPE),
    (_with(value=True), Reason.WRONG_TYPE),
    (_with(sensor_id=7), Reason.WRONG_TYPE),
    (_with(v="1"), Reason.WRONG_TYPE),
    (_with(extra_field=1), Reason.WRONG_TYPE),
    (b'{"v":1,"sensor_id":"a","ts":"2026-01-05T06:00:00Z","value":NaN}', Reason.NON_FINITE),
    (b'{"v":1,"sensor_id":"a","ts":"2026-01-05T06:00:00Z","value":Infinity}', Reason.NON_FINITE),
    (b'{"v":1,"sensor_id":"a","ts":"2026-01-05T06:00:00Z","value":-Infinity}', Reason.NON_FINITE),
    (b'{"v":1,"sensor_id":"a","ts":"2026-01-05T06:00:00Z","value":1e999}', Reason.NON_FINITE),
    (_with(v=2), Reason.UNKNOWN_SCHEMA_VERSION),
    (_with(v=0), Reason.UNKNOWN_SCHEMA_VERSION),
    (_with(ts="yesterday"), Reason.BAD_TIMESTAMP),
    (_with(ts="2026-01-05T06:00:00"), Reason.BAD_TIMESTAMP),
    (_with(quality="excellent"), Reason.BAD_VALUE),
    (_with(type="snapshot"), Reason.UNKNOWN_MESSAGE_TYPE),
    (b"{" + b" " * 2_000_000 + b"}", Reason.OVERSIZED),
])
def test_bad_reading_refused_with_reason(payload, reason):
    with pytest.raises(ContractError) as info:
        decode_reading_message(payload)
    assert info.value.reason is reason


def _frame(**kw) -> bytes:
    d = {"v": 1, "type": "frame", "gateway": "gw", "sensors": ["a", "b"], "idx": [0, 1, 0],
         "ts_ms": [1, 2, 3], "value": [1.0, 2.0, 3.0]}
    d.update(kw)
    return orjson.dumps(d)


@pytest.mark.parametrize("payload, reason", [
    (_frame(value=[1.0, 2.0]), Reason.FRAME_LENGTH_MISMATCH),
    (_frame(ts_ms=[1, 2]), Reason.FRAME_LENGTH_MISMATCH),
    (_frame(idx=[0, 1, 5]), Reason.BAD_VALUE),
    (_frame(idx=[0, 1, -1]), Reason.BAD_VALUE),
    (_frame(ts_ms=[1, 2, "x"]), Reason.WRONG_TYPE),
    (_frame(ts_ms=[1.5, 2, 3]), Reason.WRONG_TYPE),
    (_frame(value=[1.0, "2", 3.0]), Reason.WRONG_TYPE),
    (_frame(value=[1.0, None, 3.0]), Reason.NON_FINITE),
    (_frame(value=[1.0, 1e999, 3.0]), Reason.NON_FINITE),
    (_frame(sensors=[]), Reason.WRONG_TYPE),
    (_frame(sensors="a"), Reason.WRONG_TYPE),
    (_frame(quality=[0, 1, 7]), Reason.BAD_VALUE),
    (_frame(gateway=None), Reason.WRONG_TYPE),
    (_frame(idx=[0] * (MAX_FRAME_READINGS + 1), ts_ms=[1] * (MAX_FRAME_READINGS + 1),
            value=[1.0] * (MAX_FRAME_READINGS + 1)), Reason.OVERSIZED),
    (_frame(v=9), Reason.UNKNOWN_SCHEMA_VERSION),
])
def test_bad_frame_refused_with_reason(payload, reason):
    with pytest.raises(ContractError) as info:
        decode_reading_message(payload)
    assert info.value.reason is reason


@pytest.mark.parametrize("change, reason", [
    ({"kind": "teleport"}, Reason.BAD_VALUE),
    ({"stage": "painting"}, Reason.BAD_VALUE),
    ({"kind": "measure", "value": None}, Reason.MISSING_FIELD),
    ({"kind": "grade"}, Reason.MISSING_FIELD),
    ({"kind": "scrap"}, Reason.MISSING_FIELD),
    ({"parent_ids": [1]}, Reason.WRONG_TYPE),
    ({"unit_id": ""}, Reason.BAD_VALUE),
    ({"source": "robot"}, Reason.BAD_VALUE),
])
def test_bad_event_refused_with_reason(change, reason):
    d = orjson.loads(encode(_event()))
    d.update(change)
    with pytest.raises(ContractError) as info:
        decode_event(orjson.dumps(d))
    assert info.value.reason is reason


@settings(max_examples=200)
@given(st.one_of(st.none(), st.binary(max_size=300)))
def test_arbitrary_bytes_never_raise_anything_but_contract_error(raw):
    for decode in (decode_reading_message, decode_event, decode_asset, decode_dead_letter):
        try:
            decode(raw)
        except ContractError as exc:
            assert isinstance(exc.reason, Reason)


@settings(max_examples=200)
@given(st.dictionaries(st.sampled_from(["v", "sensor_id", "ts", "value", "quality", "unit", "type", "idx",
                                        "ts_ms", "sensors", "gateway"]),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5),
                                 st.lists(st.integers(), max_size=3))))
def test_arbitrary_objects_never_raise_anything_but_contract_error(obj):
    try:
        payload = orjson.dumps(obj)
    except TypeError:
        return
    try:
        r = decode_reading_message(payload)
    except ContractError:
        return
    if isinstance(r, Reading):
        assert math.isfinite(r.value) and r.ts.tzinfo is not None


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_VALID = {
    "reading": (decode_reading_message, {"v": 1, "sensor_id": "a", "ts": "2026-01-05T06:00:00Z", "value": 1.5}),
    "frame": (decode_reading_message, {"v": 1, "type": "frame", "gateway": "g", "sensors": ["a", "b"],
                                       "idx": [0, 1], "ts_ms": [1, 2], "value": [1.0, 2.0], "quality": [0, 2]}),
    "event": (decode_event, {"v": 1, "event_id": "e", "ts": "2026-01-05T06:00:00Z", "site": "s", "line": "l",
                             "station": "st", "stage": "coating", "unit_id": "u", "unit_type": "cell",
                             "kind": "measure", "attribute": "a", "value": 1.0, "unit": "mm"}),
    "dead_letter": (decode_dead_letter, {"v": 1, "reason": "not_json", "detail": "x", "stage": "edge",
                                         "ts": "2026-01-05T06:00:00Z", "payload_b64": "eA=="}),
}


@settings(max_examples=300)
@given(st.sampled_from(sorted(_VALID)), st.data())
def test_any_json_in_any_field_of_a_valid_message_is_decoded_or_refused_with_a_reason(kind, data):
    """Every field of every contract, replaced by arbitrary JSON (or removed): decoded, or a ContractError."""
    decode, valid = _VALID[kind]
    obj = dict(valid)
    name = data.draw(st.sampled_from(sorted(obj) + ["extra"]), label="field")
    value = data.draw(st.one_of(_JSON, st.just(KeyError)), label="value")
    if value is KeyError:
        obj.pop(name, None)
    else:
        obj[name] = value
    try:
        decode(json.dumps(obj).encode())
    except ContractError as exc:
        assert isinstance(exc.reason, Reason)


def test_timestamps_are_utc_aware():
    r = decode_reading_message(_with(ts="2026-01-05T08:00:00+02:00"))
    assert r.ts == T0 and r.ts.utcoffset() == timedelta(0)


def test_every_contract_exports_a_json_schema():
    schemas = json_schemas()
    assert set(schemas) == {"reading", "reading_frame", "production_event", "asset_entry", "dead_letter"}
    for s in schemas.values():
        assert s["$schema"].endswith("2020-12/schema") and s["type"] == "object" and s["properties"]


@pytest.mark.parametrize("obj, reason", [
    ({"v": 1, "reason": "not_json"}, Reason.MISSING_FIELD),
    ({"v": 1, "reason": 42, "detail": "x", "stage": "edge", "ts": "2026-01-05T06:00:00Z", "payload_b64": ""},
     Reason.WRONG_TYPE),
])
def test_a_broken_dead_letter_is_a_contract_error_with_a_reason(obj, reason):
    with pytest.raises(ContractError) as info:
        decode_dead_letter(orjson.dumps(obj))
    assert info.value.reason is reason
