"""Simulator → edge validation → Kafka: the loop behind ``gigapulse simulate``.

The simulator yields one tick at a time (frames per station, production events). Each message is
checked at the edge against the contract and the asset model, with the *plant's* clock as "now"
(a simulated plant lives in simulated time); what fails goes to the dead-letter topic with its
reason, the rest is produced. Pacing sleeps so that simulated time runs at ``speed`` times real
time; ``speed=None`` runs as fast as possible.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
import orjson

from ingestion.producer import PlantProducer
from ingestion.validation import EdgeLimits, EdgeValidator
from schemas import topics
from schemas.asset_model import Plant
from schemas.contracts import (
    ContractError,
    DeadLetter,
    DecodedFrame,
    Reading,
    Reason,
    decode_reading_message,
    encode,
    encode_frame_arrays,
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str) -> float:
    """'90s', '10m', '1.5h', '2d' (or plain seconds) to seconds; ValueError with a readable message."""
    m = _DURATION.match(text)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"invalid duration {text!r}: use a positive number with ms, s, m, h or d (e.g. 10m)")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def parse_speed(text: str) -> float | None:
    """'max' → None (as fast as possible), 'realtime' → 1, '60' or '60x' → 60."""
    t = text.strip().lower()
    if t == "max":
        return None
    if t == "realtime":
        return 1.0
    t = t.removesuffix("x")
    try:
        v = float(t)
    except ValueError:
        raise ValueError(f"invalid speed {text!r}: use max, realtime or a factor such as 60") from None
    if not 0 < v < float("inf"):  # also refuses nan and inf, which float() accepts
        raise ValueError(f"invalid speed {text!r}: must be a positive, finite factor")
    return v


_QUALITY = ("good", "uncertain", "bad")
_EXACT_ISO_MS = 4_000_000_000_000  # |epoch ms| below which _iso_ms and numpy's ISO text agree

FAULT_KINDS = ("not_json", "unknown_sensor", "non_finite", "unit_mismatch", "wrong_type")


def faulty_payload(kind: str, sensor_id: str, unit: str, ts: datetime, n: int) -> bytes:
    """A deliberately malformed reading, for exercising the dead-letter path end to end."""
    iso = ts.isoformat().replace("+00:00", "Z")
    if kind == "not_json":
        return b'{"v":1,"sensor_id":"' + sensor_id.encode() + b'","ts":'
    if kind == "unknown_sensor":
        return orjson.dumps({"v": 1, "sensor_id": f"unknown.sensor.{n}", "ts": iso, "value": 1.0})
    if kind == "non_finite":
        return b'{"v":1,"sensor_id":"' + sensor_id.encode() + b'","ts":"' + iso.encode() + b'","value":NaN}'
    if kind == "unit_mismatch":
        return orjson.dumps({"v": 1, "sensor_id": sensor_id, "ts": iso, "value": 1.0, "unit": unit + "_x"})
    return orjson.dumps({"v": 1, "sensor_id": sensor_id, "ts": iso, "value": "high"})


@dataclass
class IngestSummary:
    """What one simulate run did; ``--summary-json`` writes it for machines."""

    plant: str
    seed: int
    simulated_s: float
    wall_s: float = 0.0
    readings: int = 0
    frames: int = 0
    single_readings: int = 0
    events: int = 0
    assets: int = 0
    dead_letters: int = 0
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)
    failed_sends: int = 0
    plant_summary: dict = field(default_factory=dict)
    #: Cells whose ground truth at the gate was written (``simulate --truth-out``); None without it.
    truth_cells: int | None = None

    @property
    def readings_per_s(self) -> float:
        return self.readings / self.wall_s if self.wall_s else 0.0

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        if d["truth_cells"] is None:
            del d["truth_cells"]
        d["readings_per_s"] = round(self.readings_per_s, 1)
        return d


class IngestRun:
    """One simulate run: owns the counters, the validator and the pacing."""

    def __init__(self, plant: Plant, producer: PlantProducer, seed: int, start: datetime,
                 fmt: Literal["frames", "json"] = "frames", frame_max: int = 2000,
                 fault_rate: float = 0.0, limits: EdgeLimits | None = None):
        self.plant = plant
        self.producer = producer
        self.seed = seed
        self.start = start
        self.fmt = fmt
        self.frame_max = frame_max
        self.fault_rate = fault_rate
        self.validator = EdgeValidator(plant.by_id, limits)
        self.dlq = Counter()
        self._fault_rng = np.random.default_rng(seed + 7919)
        self._fault_n = 0

    def _dead(self, payload: bytes, err: ContractError, now: datetime) -> None:
        self.dlq[err.reason.value] += 1
        self.producer.send_dead_letter(DeadLetter.for_payload(payload, err, "edge", topics.READINGS, now=now))

    def publish_assets(self) -> int:
        """Publish the asset model to the compacted assets topic, keyed by sensor id."""
        for entry in self.plant.sensors:
            self.producer._send(topics.ASSETS, entry.sensor_id.encode(), encode(entry))
        return len(self.plant.sensors)

    def emit_frames(self, frames, now: datetime) -> None:
        """Validate and produce one tick's frames (split above ``frame_max`` readings)."""
        for fr in frames:
            n = len(fr.idx)
            for lo in range(0, n, self.frame_max):
                hi = min(n, lo + self.frame_max)
                if self.fmt == "frames":
                    # The arrays are checked directly (no encode/decode round trip on the fast path).
                    part = DecodedFrame(fr.gateway, fr.sensors, fr.idx[lo:hi], fr.ts_ms[lo:hi],
                                        fr.value[lo:hi], fr.quality[lo:hi])
                    payload = encode_frame_arrays(part.gateway, part.sensors, part.idx, part.ts_ms,
                                                  part.value, part.quality)
                    try:
                        self.validator.check_frame(part, now)
                    except ContractError as err:
                        self._dead(payload, err, now)
                        continue
                    self.producer.send_frame(fr.gateway, payload, hi - lo)
                else:
                    self._emit_singles(fr, lo, hi, now)

    def _emit_singles(self, fr, lo: int, hi: int, now: datetime) -> None:
        """Produce readings ``lo:hi`` of a frame as single JSON messages.

        What the edge would check per message (known sensor, finite value, timestamp inside the
        window) is checked for the whole slice with numpy first. Readings that pass with room to
        spare skip the encode → decode → validate round trip, which cost more than the send itself
        (``gigapulse bench ingest``); the rest, and every reading of a frame naming a sensor the
        model lacks, take the full per-message path, so what is sent or dead-lettered, and why, is
        the same either way.
        """
        sensors = fr.sensors
        known = all(isinstance(s, str) and s and s in self.validator.sensors for s in sensors)
        ts = fr.ts_ms[lo:hi]
        value = fr.value[lo:hi]
        if known and len(ts):
            win_lo, win_hi = self.validator._window_ms(now)
            # check_reading compares the ms re-read from the ISO text, which float rounding can put
            # 1 ms early; the margin keeps every reading near a limit on the full path. Beyond about
            # 2096, _iso_ms's float seconds no longer round back to the exact ms that numpy prints.
            fast = (np.isfinite(value) & (ts >= win_lo + 2) & (ts <= win_hi - 2)
                    & (np.abs(ts) < _EXACT_ISO_MS))
            iso = np.datetime_as_string(ts.astype("datetime64[ms]"), unit="ms").tolist() if fast.any() else None
        else:
            fast = np.zeros(len(ts), dtype=bool)
            iso = None
        fast_l = fast.tolist()
        idx_l = fr.idx[lo:hi].tolist()
        ts_l = ts.tolist()
        value_l = value.tolist()
        quality_l = fr.quality[lo:hi].tolist()
        dumps = orjson.dumps
        send = self.producer.send_raw_reading
        for i, ok in enumerate(fast_l):
            sid = sensors[idx_l[i]]
            if ok:
                send(sid, dumps({"v": 1, "sensor_id": sid, "ts": iso[i] + "Z", "value": value_l[i],
                                 "quality": _QUALITY[quality_l[i]]}))
                continue
            payload = dumps({"v": 1, "sensor_id": sid, "ts": _iso_ms(ts_l[i]), "value": value_l[i],
                             "quality": _QUALITY[quality_l[i]]})
            if not math.isfinite(value_l[i]):
                # orjson writes NaN and Infinity as null, which would decode as wrong_type: refuse it as what
                # it is, the reason a frame holding it gets
                self._dead(payload, ContractError(Reason.NON_FINITE, f"value of {sid!r} is NaN or infinite"), now)
                continue
            if self._edge_ok(payload, now):
                send(sid, payload)

    def emit_events(self, events, now: datetime) -> None:
        for ev in events:
            try:
                self.validator.check_event(ev, now)
            except ContractError as err:
                self._dead(encode(ev), err, now)
                continue
            self.producer.send_event(ev)

    def maybe_inject_fault(self, now: datetime) -> None:
        """With probability ``fault_rate`` per tick, send one malformed reading through the edge."""
        if self.fault_rate <= 0 or self._fault_rng.random() >= self.fault_rate:
            return
        kind = FAULT_KINDS[self._fault_n % len(FAULT_KINDS)]
        entry = self.plant.sensors[self._fault_n % len(self.plant.sensors)]
        self._fault_n += 1
        payload = faulty_payload(kind, entry.sensor_id, entry.unit, now, self._fault_n)
        if self._edge_ok(payload, now):
            raise AssertionError(f"fault {kind} passed validation")  # a fault that passes is a validator bug

    def _edge_ok(self, payload: bytes, now: datetime) -> bool:
        """Check one single-reading message at the edge; a refused one is dead-lettered here."""
        try:
            reading = decode_reading_message(payload)
            assert isinstance(reading, Reading)
            self.validator.check_reading(reading, now)
        except ContractError as err:
            self._dead(payload, err, now)
            return False
        return True


def _iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def paced(ticks: Iterator, start: datetime, speed: float | None,
          sleep: Callable[[float], None] = time.sleep, behind_s: float = 0.0) -> Iterator:
    """Yield ticks no faster than ``speed`` × real time (``None``: as fast as possible).

    ``behind_s``: how long ago, in real time, the simulated ``start`` was. A twin started ``now``
    spends a moment connecting before its first tick; counting it keeps each tick going out when
    the wall clock reaches its end, so an event stamped now arrives now, not a second later.
    """
    t0 = time.monotonic() - behind_s
    for tick in ticks:
        if speed is not None:
            ahead = (tick.sim_time - start) / timedelta(seconds=1) / speed - (time.monotonic() - t0)
            if ahead > 0:
                sleep(ahead)
        yield tick
