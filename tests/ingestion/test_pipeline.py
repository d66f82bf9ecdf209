"""The simulate loop without a broker: argument parsing, fault payloads, edge routing and pacing."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import orjson
import pytest

from ingestion import pipeline
from ingestion.pipeline import FAULT_KINDS, IngestRun, faulty_payload, paced, parse_duration, parse_speed
from ingestion.simulator import FrameBatch, PlantSimulator
from ingestion.validation import EdgeValidator
from schemas import topics
from schemas.asset_model import load_plant
from schemas.contracts import (
    DecodedFrame,
    ProductionEvent,
    Reading,
    Reason,
    decode_asset,
    decode_event,
    decode_reading_message,
    encode,
    encode_frame_arrays,
)
from tests.ingestion.test_ingest_integration import edge_reason

NOW = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


# --------------------------------------------------------------------------- argument parsing

@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("10m", 600), ("1.5h", 5400), ("2d", 172_800), ("500ms", 0.5), ("45", 45), (" 3 m ", 180),
    ("0.5s", 0.5),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "forever", "0", "0s", "-5s", "10 minutes", "1e3s", "10w", "s", "nan",
                                  "1h30m", "inf"])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(("text", "speed"), [
    ("max", None), ("MAX", None), (" max ", None), ("realtime", 1.0), ("60", 60.0), ("60x", 60.0),
    ("0.5", 0.5), (" 2X ", 2.0), ("1e3", 1000.0),
])
def test_parse_speed(text, speed):
    assert parse_speed(text) == speed


@pytest.mark.parametrize("text", ["", "fast", "0", "-3", "0x", "x", "nan", "inf", "-inf", "Infinity", "60xx"])
def test_parse_speed_refuses(text):
    with pytest.raises(ValueError, match="invalid speed"):
        parse_speed(text)


# --------------------------------------------------------------------------- fault payloads

@pytest.mark.parametrize("plant_name", ["reference", "legacy"])
@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_every_fault_kind_is_refused_with_its_reason_for_every_sensor(plant_name, kind):
    plant = load_plant(plant_name)
    validator = EdgeValidator(plant.by_id)
    reasons = Counter(edge_reason(faulty_payload(kind, e.sensor_id, e.unit, NOW, n), validator, NOW)
                      for n, e in enumerate(plant.sensors, start=1))
    assert reasons == {kind: len(plant.sensors)}


def test_fault_kinds_are_the_edge_reasons():
    assert set(FAULT_KINDS) <= {r.value for r in Reason}
    assert len(set(FAULT_KINDS)) == len(FAULT_KINDS)


# --------------------------------------------------------------------------- IngestRun with a fake producer

class FakeProducer:
    """Records what IngestRun sends, in order."""

    def __init__(self):
        self.frames: list[tuple[str, bytes, int]] = []
        self.singles: list[tuple[str, bytes]] = []
        self.events: list[ProductionEvent] = []
        self.dead = []
        self.raw: list[tuple[str, bytes | None, bytes]] = []

    def send_frame(self, gateway, payload, n_readings, topic=topics.READINGS):
        self.frames.append((gateway, payload, n_readings))

    def send_raw_reading(self, key, payload, topic=topics.READINGS):
        self.singles.append((key, payload))

    def send_event(self, event, topic=topics.EVENTS):
        self.events.append(event)

    def send_dead_letter(self, letter, topic=topics.DLQ):
        self.dead.append(letter)

    def _send(self, topic, key, value):
        self.raw.append((topic, key, value))


@pytest.fixture(scope="module")
def ref_ticks():
    plant = load_plant("reference")
    return plant, list(PlantSimulator(plant, seed=3, start=NOW).run(3))


def _rows(frames) -> list[tuple[str, int, float, int]]:
    out = []
    for f in frames:
        ids = np.asarray(f.sensors, dtype=object)[f.idx]
        out.extend(zip(ids.tolist(), f.ts_ms.tolist(), f.value.tolist(), f.quality.tolist(), strict=True))
    return out


def test_frames_are_split_above_frame_max_and_keep_every_reading(ref_ticks):
    plant, ticks = ref_ticks
    fake = FakeProducer()
    run = IngestRun(plant, fake, 3, NOW, "frames", frame_max=100)
    for t in ticks:
        run.emit_frames(t.frames, t.sim_time)
    original = [f for t in ticks for f in t.frames]
    assert not fake.dead and not fake.singles
    assert len(fake.frames) > len(original)  # some stations sample more than 100 readings a tick
    decoded = [decode_reading_message(p) for _, p, _ in fake.frames]
    assert all(isinstance(d, DecodedFrame) and 0 < len(d) <= 100 for d in decoded)
    assert all(n == len(d) and gw == d.gateway for (gw, _, n), d in zip(fake.frames, decoded, strict=True))
    assert _rows(decoded) == _rows(original)  # same readings, same order


def test_json_format_sends_each_reading_once_with_the_same_data(ref_ticks):
    plant, ticks = ref_ticks
    fake = FakeProducer()
    run = IngestRun(plant, fake, 3, NOW, "json", frame_max=100)
    for t in ticks:
        run.emit_frames(t.frames, t.sim_time)
    assert not fake.dead and not fake.frames
    singles = [decode_reading_message(p) for _, p in fake.singles]
    assert all(isinstance(r, Reading) for r in singles)
    assert all(key == r.sensor_id for (key, _), r in zip(fake.singles, singles, strict=True))
    got = [(r.sensor_id, int(r.ts.timestamp() * 1000), r.value, ("good", "uncertain", "bad").index(r.quality))
           for r in singles]
    assert got == _rows(f for t in ticks for f in t.frames)


def _frame(ts_ms, value, sensors=None) -> FrameBatch:
    plant = load_plant("reference")
    sensors = sensors or [plant.sensors[0].sensor_id, plant.sensors[1].sensor_id]
    n = len(ts_ms)
    return FrameBatch("ref.L1-mix-c", sensors, np.arange(n, dtype=np.int32) % len(sensors),
                      np.asarray(ts_ms, dtype=np.int64), np.asarray(value, dtype=np.float64),
                      np.zeros(n, dtype=np.int8))


def test_json_format_refuses_single_readings_at_the_window_limits_like_the_edge():
    plant = load_plant("reference")
    fake = FakeProducer()
    run = IngestRun(plant, fake, 1, NOW, "json")
    hi, lo = NOW_MS + 300_000, NOW_MS - 7 * 86_400_000
    ts = [NOW_MS, hi, hi - 1, hi + 1, lo, lo + 1, lo - 1, NOW_MS, NOW_MS]
    value = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, np.nan, np.inf]
    run.emit_frames([_frame(ts, value)], NOW)
    sent = sorted(decode_reading_message(p).value for _, p in fake.singles)
    assert sent == [1.0, 2.0, 3.0, 5.0, 6.0]
    assert sorted(d.reason.value for d in fake.dead) == ["non_finite", "non_finite", "timestamp_out_of_range",
                                                         "timestamp_out_of_range"]
    assert all(d.stage == "edge" and d.source_topic == topics.READINGS for d in fake.dead)
    assert dict(run.dlq) == {"non_finite": 2, "timestamp_out_of_range": 2}


def test_json_format_refuses_every_reading_of_an_unknown_sensor():
    plant = load_plant("reference")
    fake = FakeProducer()
    run = IngestRun(plant, fake, 1, NOW, "json")
    run.emit_frames([_frame([NOW_MS] * 4, [1.0] * 4, [plant.sensors[0].sensor_id, "ref.nowhere.ghost"])], NOW)
    assert len(fake.singles) == 2 and len(fake.dead) == 2
    assert {d.reason for d in fake.dead} == {Reason.UNKNOWN_SENSOR}
    assert {orjson.loads(d.payload())["sensor_id"] for d in fake.dead} == {"ref.nowhere.ghost"}


@pytest.mark.parametrize(("ts", "value", "reason"), [
    ([NOW_MS] * 4, [1.0, np.nan, 2.0, 3.0], Reason.NON_FINITE),
    ([NOW_MS, NOW_MS + 3_600_000, NOW_MS, NOW_MS], [1.0] * 4, Reason.TIMESTAMP_OUT_OF_RANGE),
])
def test_a_bad_frame_is_dead_lettered_whole_with_its_bytes(ts, value, reason):
    plant = load_plant("reference")
    fake = FakeProducer()
    run = IngestRun(plant, fake, 1, NOW, "frames")
    good = _frame([NOW_MS] * 4, [1.0] * 4)
    bad = _frame(ts, value)
    run.emit_frames([good, bad], NOW)
    assert len(fake.frames) == 1 and fake.frames[0][2] == 4
    [letter] = fake.dead
    assert letter.reason is reason and letter.stage == "edge" and letter.ts == NOW
    assert letter.payload() == encode_frame_arrays(bad.gateway, bad.sensors, bad.idx, bad.ts_ms, bad.value,
                                                   bad.quality)


def test_events_outside_the_window_are_dead_lettered():
    plant = load_plant("reference")
    fake = FakeProducer()
    run = IngestRun(plant, fake, 1, NOW, "frames")

    def ev(n, ts):
        return ProductionEvent(event_id=f"e{n}", ts=ts, site="ref", line="L1", stage="coating", station="L1-coat-c",
                               unit_id="roll-1", unit_type="electrode_roll", kind="enter")

    run.emit_events([ev(1, NOW), ev(2, NOW + timedelta(hours=1)), ev(3, NOW - timedelta(minutes=5))], NOW)
    assert [e.event_id for e in fake.events] == ["e1", "e3"]
    [letter] = fake.dead
    assert letter.reason is Reason.TIMESTAMP_OUT_OF_RANGE
    assert decode_event(letter.payload()).event_id == "e2"
    assert letter.payload() == encode(ev(2, NOW + timedelta(hours=1)))


def test_injected_faults_cycle_through_the_kinds_and_sensors():
    plant = load_plant("reference")
    fake = FakeProducer()
    run = IngestRun(plant, fake, 5, NOW, fault_rate=1.0)
    for i in range(12):
        run.maybe_inject_fault(NOW + timedelta(seconds=i))
    assert [d.reason.value for d in fake.dead] == [FAULT_KINDS[i % 5] for i in range(12)]
    for n, d in enumerate(fake.dead, start=1):
        e = plant.sensors[n - 1]
        assert d.payload() == faulty_payload(FAULT_KINDS[(n - 1) % 5], e.sensor_id, e.unit, d.ts, n)
    assert dict(run.dlq) == dict(Counter(d.reason.value for d in fake.dead))
    assert not fake.singles and not fake.frames


def test_fault_rate_zero_sends_nothing_and_a_rate_is_seeded():
    plant = load_plant("reference")
    none = FakeProducer()
    run = IngestRun(plant, none, 5, NOW, fault_rate=0.0)
    for i in range(50):
        run.maybe_inject_fault(NOW + timedelta(seconds=i))
    assert none.dead == []

    def pattern(seed):
        fake = FakeProducer()
        r = IngestRun(plant, fake, seed, NOW, fault_rate=0.3)
        hits = []
        for i in range(200):
            before = len(fake.dead)
            r.maybe_inject_fault(NOW + timedelta(seconds=i))
            hits.append(len(fake.dead) > before)
        return hits

    a = pattern(5)
    assert a == pattern(5) and a != pattern(6)
    assert 30 <= sum(a) <= 90


def test_publish_assets_sends_the_model_keyed_by_sensor():
    plant = load_plant("legacy")
    fake = FakeProducer()
    assert IngestRun(plant, fake, 1, NOW).publish_assets() == len(plant.sensors)
    assert [t for t, _, _ in fake.raw] == [topics.ASSETS] * len(plant.sensors)
    assert [decode_asset(v) for _, _, v in fake.raw] == plant.sensors
    assert [k for _, k, _ in fake.raw] == [e.sensor_id.encode() for e in plant.sensors]


# --------------------------------------------------------------------------- pacing

class FakeClock:
    def __init__(self):
        self.now = 100.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        assert s > 0
        self.sleeps.append(s)
        self.now += s


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    c = FakeClock()
    monkeypatch.setattr(pipeline, "time", SimpleNamespace(monotonic=c.monotonic, sleep=c.sleep))
    return c


def _ticks(n: int, step_s: float = 1.0):
    return [SimpleNamespace(sim_time=NOW + timedelta(seconds=step_s * (i + 1))) for i in range(n)]


def test_paced_max_speed_never_sleeps(clock):
    ticks = _ticks(5)
    assert list(paced(iter(ticks), NOW, None, sleep=clock.sleep)) == ticks
    assert clock.sleeps == []


@pytest.mark.parametrize("speed", [1.0, 2.0, 60.0])
def test_paced_holds_simulated_time_to_speed_times_real_time(clock, speed):
    ticks = _ticks(6)
    t0 = clock.now
    seen = []
    for tick in paced(iter(ticks), NOW, speed, sleep=clock.sleep):
        seen.append(tick)
        elapsed_sim = (tick.sim_time - NOW).total_seconds()
        assert clock.now - t0 == pytest.approx(elapsed_sim / speed)  # never early, never late
    assert seen == ticks
    assert clock.sleeps == pytest.approx([1.0 / speed] * 6)


def test_paced_does_not_sleep_while_behind(clock):
    ticks = _ticks(6)
    sleeps_at = []
    for i, _ in enumerate(paced(iter(ticks), NOW, 1.0, sleep=clock.sleep)):
        n = len(clock.sleeps)
        sleeps_at.append(n)
        if i == 0:
            clock.now += 3.5  # the consumer was slow: the next ticks are already due
    # tick 1 waited 1 s; ticks 2-4 (due at 2, 3, 4 s) were late at 4.5 s; tick 5 waits 0.5 s, tick 6 1 s
    assert sleeps_at == [1, 1, 1, 1, 2, 3]
    assert clock.sleeps == pytest.approx([1.0, 0.5, 1.0])


def test_paced_uses_the_real_sleep_by_default():
    ticks = [SimpleNamespace(sim_time=NOW + timedelta(milliseconds=10 * (i + 1))) for i in range(3)]
    import time

    t0 = time.monotonic()
    assert list(paced(iter(ticks), NOW, 1.0)) == ticks
    assert time.monotonic() - t0 >= 0.029


def test_paced_counts_the_time_already_behind_a_start_of_now(clock):
    """A twin started 'now' that took 0.7 s to connect sends its first tick 0.3 s later, not 1 s."""
    ticks = _ticks(3)
    list(paced(iter(ticks), NOW, 1.0, sleep=clock.sleep, behind_s=0.7))
    assert clock.sleeps == pytest.approx([0.3, 1.0, 1.0])

