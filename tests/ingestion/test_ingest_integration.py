"""``gigapulse simulate`` end to end on the real broker: what the summary says is exactly what Kafka holds.

The session broker's catalog topics are shared by every test, so each check records the end offsets
of the topics before a run and reads back only the range the run appended (runs are serial). The
helpers here (``offsets``, ``collect``, ``gigapulse``) are shared with ``test_replay.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from ingestion.pipeline import FAULT_KINDS, faulty_payload
from ingestion.validation import EdgeLimits, EdgeValidator
from schemas import topics
from schemas.asset_model import load_plant
from schemas.contracts import (
    ContractError,
    DecodedFrame,
    Reading,
    decode_asset,
    decode_dead_letter,
    decode_event,
    decode_reading_message,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CATALOG = (topics.READINGS, topics.EVENTS, topics.DLQ, topics.ASSETS)
START = "2026-01-05T06:00:00Z"
START_DT = datetime(2026, 1, 5, 6, tzinfo=UTC)

Collected = dict[str, dict[int, list[ConsumerRecord]]]


# --------------------------------------------------------------------------- shared helpers

def _partitions(names) -> list[TopicPartition]:
    return [TopicPartition(t, p) for t in names for p in range(topics.TOPICS_BY_NAME[t].partitions)]


def offsets(bootstrap: str, names=CATALOG) -> dict[TopicPartition, int]:
    """End offset of every partition of the given catalog topics (where the next message will land)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        return consumer.end_offsets(_partitions(names))
    finally:
        consumer.close()


def collect(bootstrap: str, before: dict[TopicPartition, int], timeout_s: float = 60.0) -> Collected:
    """Every record appended since ``before`` (up to the end offsets now), per topic and partition, in order."""
    after = offsets(bootstrap, sorted({tp.topic for tp in before}))
    out: Collected = {}
    for tp in after:
        out.setdefault(tp.topic, {})[tp.partition] = []
    todo = {tp: (before.get(tp, 0), hi) for tp, hi in after.items() if hi > before.get(tp, 0)}
    if not todo:
        return out
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             max_partition_fetch_bytes=8 << 20)
    try:
        consumer.assign(list(todo))
        for tp, (lo, _) in todo.items():
            consumer.seek(tp, lo)
        pending = set(todo)
        deadline = time.monotonic() + timeout_s
        while pending:
            assert time.monotonic() < deadline, f"timed out reading back {sorted(map(str, pending))}"
            for tp, records in consumer.poll(timeout_ms=500).items():
                hi = todo[tp][1]
                out[tp.topic][tp.partition].extend(r for r in records if r.offset < hi)
            done = {tp for tp in pending if consumer.position(tp) >= todo[tp][1]}
            if done:
                consumer.pause(*done)
                pending -= done
    finally:
        consumer.close()
    return out


def flat(got: Collected, topic: str) -> list[ConsumerRecord]:
    """All records of one topic, partition by partition (each in offset order)."""
    return [r for p in sorted(got.get(topic, {})) for r in got[topic][p]]


def gigapulse(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real CLI in its own process."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GIGAPULSE_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "gigapulse.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=REPO)


def simulate(bootstrap: str, tmp_path: Path, *args: str) -> dict:
    """``gigapulse simulate ... --summary-json`` and the summary it wrote."""
    summary = tmp_path / f"summary-{uuid.uuid4().hex[:8]}.json"
    res = gigapulse("simulate", "--bootstrap", bootstrap, "--summary-json", str(summary), *args,
                    env={"GIGAPULSE_DEBUG": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(summary.read_text())


def edge_reason(payload: bytes, validator: EdgeValidator, now: datetime) -> str | None:
    """Why the edge refuses a single-reading payload (None if it is accepted)."""
    try:
        msg = decode_reading_message(payload)
        assert isinstance(msg, Reading)
        validator.check_reading(msg, now)
    except ContractError as err:
        return err.reason.value
    return None


# --------------------------------------------------------------------------- tests

@pytest.mark.parametrize("plant_name", ["reference", "legacy"])
def test_simulate_delivers_exactly_what_the_summary_counts(bootstrap, tmp_path, plant_name):
    plant = load_plant(plant_name)
    before = offsets(bootstrap)
    s = simulate(bootstrap, tmp_path, "--plant", plant_name, "--duration", "2m", "--seed", "7", "--start", START)
    got = collect(bootstrap, before)

    assert s["failed_sends"] == 0 and s["simulated_s"] == 120
    assert s["frames"] > 0 and s["readings"] > s["frames"] and s["events"] > 0

    readings = flat(got, topics.READINGS)
    frames = [decode_reading_message(r.value) for r in readings]
    assert all(isinstance(f, DecodedFrame) for f in frames)
    assert len(frames) == s["frames"]
    assert sum(len(f) for f in frames) == s["readings"]
    assert s["single_readings"] == 0
    assert s["readings"] <= s["plant_summary"]["readings"]
    assert all(r.key == f.gateway.encode() for r, f in zip(readings, frames, strict=True))
    assert {sid for f in frames for sid in f.sensors} <= plant.by_id.keys()
    # within the edge's window around the simulated clock (legacy gateways have skewed clocks)
    lim = EdgeLimits()
    lo = int((START_DT - timedelta(seconds=lim.max_past_s)).timestamp() * 1000)
    hi = int((START_DT + timedelta(seconds=120 + lim.max_future_s)).timestamp() * 1000)
    assert all(lo <= f.ts_ms.min() and f.ts_ms.max() <= hi for f in frames if len(f))

    events = [decode_event(r.value) for r in flat(got, topics.EVENTS)]
    assert len(events) == s["events"]
    # keyed so that each unit's history stays in order in one partition
    partitions_of_unit: dict[str, set[int]] = {}
    for r, e in zip(flat(got, topics.EVENTS), events, strict=True):
        assert r.key
        partitions_of_unit.setdefault(e.unit_id, set()).add(r.partition)
    assert all(len(p) == 1 for p in partitions_of_unit.values())
    assert len({e.event_id for e in events}) == len(events)

    assets = [decode_asset(r.value) for r in flat(got, topics.ASSETS)]
    assert len(assets) == s["assets"] == len(plant.sensors)
    assert [a.sensor_id for a in assets] == [e.sensor_id for e in plant.sensors]
    assert all(r.key == a.sensor_id.encode() for r, a in zip(flat(got, topics.ASSETS), assets, strict=True))

    letters = [decode_dead_letter(r.value) for r in flat(got, topics.DLQ)]
    assert len(letters) == s["dead_letters"]
    assert Counter(x.reason.value for x in letters) == Counter(s["dead_letters_by_reason"])


def _fingerprint(got: Collected) -> dict[str, dict[int, list[tuple[bytes | None, bytes]]]]:
    return {t: {p: [(r.key, r.value) for r in recs] for p, recs in got[t].items()}
            for t in (topics.READINGS, topics.EVENTS)}


def test_same_seed_and_start_give_the_same_bytes(bootstrap, tmp_path):
    runs = []
    for seed in (7, 7, 8):
        before = offsets(bootstrap, (topics.READINGS, topics.EVENTS))
        simulate(bootstrap, tmp_path, "--plant", "reference", "--duration", "30s", "--seed", str(seed),
                 "--start", START)
        runs.append(_fingerprint(collect(bootstrap, before)))
    first, again, other = runs
    assert sum(len(v) for v in first[topics.READINGS].values()) > 0
    assert sum(len(v) for v in first[topics.EVENTS].values()) > 0
    assert first == again  # same messages, same keys, same partitions, same order
    assert first[topics.READINGS] != other[topics.READINGS]
    values = sorted(v for recs in first[topics.READINGS].values() for _, v in recs)
    other_values = sorted(v for recs in other[topics.READINGS].values() for _, v in recs)
    assert values != other_values


def test_injected_faults_are_dead_lettered_with_reason_and_original_bytes(bootstrap, tmp_path):
    plant = load_plant("reference")
    before = offsets(bootstrap)
    s = simulate(bootstrap, tmp_path, "--plant", "reference", "--duration", "30s", "--seed", "7",
                 "--start", START, "--inject-faults", "0.5")
    got = collect(bootstrap, before)

    records = flat(got, topics.DLQ)
    letters = [decode_dead_letter(r.value) for r in records]
    assert len(letters) == s["dead_letters"] >= len(FAULT_KINDS)
    assert Counter(x.reason.value for x in letters) == Counter(s["dead_letters_by_reason"])
    assert set(s["dead_letters_by_reason"]) == set(FAULT_KINDS)

    validator = EdgeValidator(plant.by_id)
    for n, (rec, letter) in enumerate(zip(records, letters, strict=True), start=1):
        kind = FAULT_KINDS[(n - 1) % len(FAULT_KINDS)]
        entry = plant.sensors[(n - 1) % len(plant.sensors)]
        assert letter.reason.value == kind
        assert letter.stage == "edge" and letter.source_topic == topics.READINGS and letter.detail
        assert rec.key == topics.READINGS.encode()
        assert START_DT < letter.ts <= START_DT + timedelta(seconds=30)
        # the original bytes, verbatim: what the fault generator made at that simulated time
        assert letter.payload() == faulty_payload(kind, entry.sensor_id, entry.unit, letter.ts, n)
        assert edge_reason(letter.payload(), validator, letter.ts) == kind

    # the good data still flows, none of it lost to the faults
    frames = [decode_reading_message(r.value) for r in flat(got, topics.READINGS)]
    assert len(frames) == s["frames"]
    assert sum(len(f) for f in frames) == s["readings"] == s["plant_summary"]["readings"]
    assert len(flat(got, topics.EVENTS)) == s["events"]


def _reading_set(msgs) -> list[tuple[str, int, float, int]]:
    out = []
    for m in msgs:
        if isinstance(m, Reading):
            out.append((m.sensor_id, int(m.ts.timestamp() * 1000), m.value, ("good", "uncertain", "bad").index(m.quality)))
        else:
            ids = m.sensor_ids()
            out.extend(zip(ids.tolist(), m.ts_ms.tolist(), m.value.tolist(), m.quality.tolist(), strict=True))
    return sorted(out)


def test_json_format_sends_one_reading_per_message_with_the_same_data(bootstrap, tmp_path):
    plant = load_plant("legacy")
    args = ("--plant", "legacy", "--duration", "30s", "--seed", "11", "--start", START)
    before = offsets(bootstrap, (topics.READINGS,))
    s = simulate(bootstrap, tmp_path, *args, "--format", "json")
    records = flat(collect(bootstrap, before), topics.READINGS)

    assert s["frames"] == 0 and s["readings"] == s["single_readings"] > 0
    assert len(records) == s["readings"]
    singles = [decode_reading_message(r.value) for r in records]
    assert all(isinstance(m, Reading) for m in singles)
    assert all(r.key == m.sensor_id.encode() for r, m in zip(records, singles, strict=True))
    assert {m.sensor_id for m in singles} <= plant.by_id.keys()

    # the fast path carries exactly the same readings
    before = offsets(bootstrap, (topics.READINGS,))
    s_frames = simulate(bootstrap, tmp_path, *args)
    frames = [decode_reading_message(r.value) for r in flat(collect(bootstrap, before), topics.READINGS)]
    assert s_frames["readings"] == s["readings"]
    assert _reading_set(frames) == _reading_set(singles)
