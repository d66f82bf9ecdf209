"""Edge validation: the asset model's sensors and units, finite values, and the timestamp window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from ingestion.validation import EdgeLimits, EdgeValidator
from schemas.asset_model import load_plant
from schemas.contracts import (
    ContractError,
    DecodedFrame,
    ProductionEvent,
    Reading,
    Reason,
    decode_reading_message,
    encode_frame_arrays,
)

PLANT = load_plant("reference")
NOW = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
S0, S1 = PLANT.sensors[0], PLANT.sensors[1]


@pytest.fixture
def v() -> EdgeValidator:
    return EdgeValidator(PLANT.by_id)


def _reason(fn, *args) -> Reason | None:
    try:
        fn(*args)
    except ContractError as err:
        return err.reason
    return None


def reading(sensor_id: str = S0.sensor_id, ts: datetime = NOW, value: float = 1.0, unit: str | None = None):
    return Reading(sensor_id=sensor_id, ts=ts, value=value, unit=unit)


def frame(ts_ms=None, value=None, sensors=None) -> DecodedFrame:
    sensors = sensors or [S0.sensor_id, S1.sensor_id]
    n = 6
    base = int(NOW.timestamp() * 1000)
    ts = np.asarray(ts_ms if ts_ms is not None else base - np.arange(n)[::-1] * 100, dtype=np.int64)
    val = np.asarray(value if value is not None else np.linspace(0, 1, len(ts)), dtype=np.float64)
    return DecodedFrame("ref.L1-mix-c", sensors, np.arange(len(ts), dtype=np.int32) % len(sensors), ts, val,
                        np.zeros(len(ts), dtype=np.int8))


# --------------------------------------------------------------------------- readings

def test_known_sensor_with_or_without_its_unit_passes(v):
    assert _reason(v.check_reading, reading(), NOW) is None
    assert _reason(v.check_reading, reading(unit=S0.unit), NOW) is None


def test_unknown_sensor_is_refused(v):
    assert _reason(v.check_reading, reading("ref.nowhere.ghost"), NOW) is Reason.UNKNOWN_SENSOR
    # checked before the unit and the time
    assert _reason(v.check_reading, reading("ghost", NOW + timedelta(days=9), unit="x"), NOW) is Reason.UNKNOWN_SENSOR


def test_unit_other_than_the_models_is_refused(v):
    assert _reason(v.check_reading, reading(unit=S0.unit + "_x"), NOW) is Reason.UNIT_MISMATCH
    assert _reason(v.check_reading, reading(unit=S1.unit if S1.unit != S0.unit else "furlong"), NOW) \
        is Reason.UNIT_MISMATCH


@pytest.mark.parametrize(("offset_s", "ok"), [
    (0, True), (300, True), (300.001, False), (3600, False),
    (-7 * 86_400, True), (-7 * 86_400 - 0.001, False), (-30 * 86_400, False),
])
def test_reading_timestamp_window_is_relative_to_the_given_now(v, offset_s, ok):
    r = reading(ts=NOW + timedelta(seconds=offset_s))
    assert _reason(v.check_reading, r, NOW) is (None if ok else Reason.TIMESTAMP_OUT_OF_RANGE)


def test_custom_limits(v):
    tight = EdgeValidator(PLANT.by_id, EdgeLimits(max_future_s=1, max_past_s=10))
    assert _reason(tight.check_reading, reading(ts=NOW + timedelta(seconds=1)), NOW) is None
    assert _reason(tight.check_reading, reading(ts=NOW + timedelta(seconds=2)), NOW) is Reason.TIMESTAMP_OUT_OF_RANGE
    assert _reason(tight.check_reading, reading(ts=NOW - timedelta(seconds=10)), NOW) is None
    assert _reason(tight.check_reading, reading(ts=NOW - timedelta(seconds=11)), NOW) is Reason.TIMESTAMP_OUT_OF_RANGE
    # the default limits accept what the tight ones refuse
    assert _reason(v.check_reading, reading(ts=NOW - timedelta(seconds=11)), NOW) is None


def test_now_defaults_to_the_wall_clock(v):
    wall = datetime.now(UTC)
    assert _reason(v.check_reading, reading(ts=wall)) is None
    assert _reason(v.check_reading, reading(ts=wall - timedelta(days=30))) is Reason.TIMESTAMP_OUT_OF_RANGE
    assert _reason(v.check_reading, reading(ts=wall + timedelta(hours=1))) is Reason.TIMESTAMP_OUT_OF_RANGE


# --------------------------------------------------------------------------- frames

def test_good_frame_and_empty_frame_pass(v):
    assert _reason(v.check_frame, frame(), NOW) is None
    assert _reason(v.check_frame, frame(ts_ms=[], value=[]), NOW) is None


def test_frame_naming_an_unknown_sensor_is_refused_whole(v):
    f = frame(sensors=[S0.sensor_id, "ref.nowhere.ghost"])
    assert _reason(v.check_frame, f, NOW) is Reason.UNKNOWN_SENSOR


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_frame_with_a_non_finite_value_is_refused(v, bad):
    values = np.linspace(0, 1, 6)
    values[4] = bad
    with pytest.raises(ContractError) as exc:
        v.check_frame(frame(value=values), NOW)
    assert exc.value.reason is Reason.NON_FINITE
    assert "1 value(s)" in exc.value.detail


@pytest.mark.parametrize(("offset_ms", "ok"), [
    (300_000, True), (300_001, False), (-7 * 86_400_000, True), (-7 * 86_400_000 - 1, False),
])
def test_frame_timestamp_window(v, offset_ms, ok):
    base = int(NOW.timestamp() * 1000)
    ts = [base - 500, base, base + offset_ms, base - 100]
    assert _reason(v.check_frame, frame(ts_ms=ts, value=[1.0] * 4), NOW) is (
        None if ok else Reason.TIMESTAMP_OUT_OF_RANGE)


def test_frame_out_of_range_names_the_first_bad_reading(v):
    base = int(NOW.timestamp() * 1000)
    ts = [base, base + 3_600_000, base + 7_200_000]
    with pytest.raises(ContractError) as exc:
        v.check_frame(frame(ts_ms=ts, value=[1.0] * 3), NOW)
    assert exc.value.reason is Reason.TIMESTAMP_OUT_OF_RANGE
    assert "2 reading(s)" in exc.value.detail and str(base + 3_600_000) in exc.value.detail


def test_decoded_frame_round_trip_is_checked_like_the_arrays(v):
    f = frame()
    decoded = decode_reading_message(encode_frame_arrays(f.gateway, f.sensors, f.idx, f.ts_ms, f.value, f.quality))
    assert isinstance(decoded, DecodedFrame)
    assert _reason(v.check_frame, decoded, NOW) is None
    assert _reason(v.check_frame, decoded, NOW + timedelta(days=8)) is Reason.TIMESTAMP_OUT_OF_RANGE


# --------------------------------------------------------------------------- events

def _event(ts: datetime) -> ProductionEvent:
    return ProductionEvent(event_id="e1", ts=ts, site="ref", line="L1", stage="coating", station="L1-coat-c",
                           unit_id="roll-1", unit_type="electrode_roll", kind="enter")


@pytest.mark.parametrize(("offset_s", "ok"), [(0, True), (-86_400, True), (301, False), (-8 * 86_400, False)])
def test_event_timestamp_window(v, offset_s, ok):
    assert _reason(v.check_event, _event(NOW + timedelta(seconds=offset_s)), NOW) is (
        None if ok else Reason.TIMESTAMP_OUT_OF_RANGE)
