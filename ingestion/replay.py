"""Replay readings or production events from CSV or Parquet files into the same topics.

Files are streamed in record batches (memory bounded by the batch, not the file). Columns are found
by their contract names (``sensor_id, ts, value[, quality, unit]`` for readings; the fields of
:class:`schemas.contracts.ProductionEvent` for events); ``--map contract=column`` renames a file's
columns. ``ts`` may be an ISO 8601 string with offset, a Parquet timestamp (naive ones are taken as
UTC, which is how Parquet writers store instants), or epoch milliseconds. A row that cannot become
a valid message goes to the dead-letter topic with its reason and the row as JSON; the rest flows.
"""

from __future__ import annotations

import csv
import math
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ingestion.producer import PlantProducer
from schemas import topics
from schemas.contracts import (
    AssetEntry,
    ContractError,
    DeadLetter,
    DecodedFrame,
    Reading,
    Reason,
    decode_event,
    decode_reading_obj,
    encode,
    encode_frame_arrays,
)

READING_COLUMNS = ("sensor_id", "ts", "value", "quality", "unit")
EVENT_REQUIRED = ("event_id", "ts", "site", "line", "stage", "station", "unit_id", "unit_type", "kind")
QUALITY_CODE = {"good": 0, "uncertain": 1, "bad": 2}


class ReplayError(ValueError):
    """The file cannot be replayed at all (unreadable, or required columns missing)."""


@dataclass
class ReplaySummary:
    """What a replay sent."""

    path: str
    kind: str
    rows: int = 0
    readings: int = 0
    events: int = 0
    frames: int = 0
    dead_letters: int = 0
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def parse_mapping(items: list[str]) -> dict[str, str]:
    """``["ts=timestamp", "value=val"]`` → ``{"ts": "timestamp", "value": "val"}``."""
    out = {}
    for item in items:
        key, sep, col = item.partition("=")
        if not sep or not key or not col:
            raise ReplayError(f"invalid --map {item!r}: use contract_field=file_column, e.g. ts=timestamp")
        out[key.strip()] = col.strip()
    return out


def _batches(path: Path, batch_rows: int) -> Iterator[pa.RecordBatch]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            yield from pq.ParquetFile(path).iter_batches(batch_size=batch_rows)
        elif suffix in (".csv", ".txt"):
            opts = pacsv.ReadOptions(block_size=1 << 22)
            # Arrow reads "NaN"/"nan" as null by default, which would dead-letter a NaN value as
            # missing_field; kept as NaN, it is refused as non_finite, as from a Parquet file.
            nulls = [v for v in pacsv.ConvertOptions().null_values if v.lstrip("-").lower() != "nan"]
            # Every column is read as text and converted row by row: Arrow infers types from the first
            # block only, so one odd value further down would otherwise abort the whole replay.
            with open(path, newline="") as fh:
                header = next(csv.reader(fh), [])
            convert = pacsv.ConvertOptions(strings_can_be_null=True, null_values=nulls,
                                           column_types={name: pa.string() for name in header})
            with pacsv.open_csv(path, read_options=opts, convert_options=convert) as reader:
                yield from reader
        else:
            raise ReplayError(f"{path}: unsupported file type {suffix!r} (use .csv or .parquet)")
    except FileNotFoundError:
        raise ReplayError(f"file not found: {path}") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise ReplayError(f"{path}: cannot read ({str(exc).splitlines()[0]})") from None


def detect_kind(columns: list[str], mapping: dict[str, str]) -> Literal["readings", "events"]:
    """Events if the file has the event columns, readings if it has the reading columns."""
    cols = set(columns)
    has = {k for k in set(READING_COLUMNS) | set(EVENT_REQUIRED) if mapping.get(k, k) in cols}
    if {"event_id", "kind", "unit_id"} <= has:
        return "events"
    if {"sensor_id", "ts", "value"} <= has:
        return "readings"
    raise ReplayError("the file has neither reading columns (sensor_id, ts, value) nor event columns "
                      f"({', '.join(EVENT_REQUIRED)}); found {sorted(cols)[:10]}; use --map to rename")


def _number(raw: Any) -> Any:
    """A CSV cell read as text becomes a number when it is one; otherwise it is left for the decoder."""
    if isinstance(raw, str):
        try:
            return float(raw)
        except ValueError:
            return raw
    return raw


def _ts_to_iso(raw: Any) -> Any:
    if isinstance(raw, str) and raw.strip().isdigit():
        raw = int(raw.strip())
    if isinstance(raw, datetime):
        ts = raw if raw.tzinfo else raw.replace(tzinfo=UTC)
        return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(raw, int) and not isinstance(raw, bool):
        return datetime.fromtimestamp(raw / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return raw


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if v is not None}


class Replayer:
    """Streams one file into Kafka, optionally checking sensors against an asset model."""

    def __init__(self, producer: PlantProducer, sensors: dict[str, AssetEntry] | None = None,
                 fmt: Literal["frames", "json"] = "frames", frame_max: int = 2000, speed: float | None = None,
                 batch_rows: int = 50_000):
        self.producer = producer
        self.sensors = sensors
        self.fmt = fmt
        self.frame_max = frame_max
        self.speed = speed
        self.batch_rows = batch_rows
        self.dlq: Counter[str] = Counter()

    def _dead(self, row: dict[str, Any], err: ContractError) -> None:
        self.dlq[err.reason.value] += 1
        payload = orjson.dumps(row, default=str)
        self.producer.send_dead_letter(DeadLetter.for_payload(payload, err, "replay", None))

    def _gateway(self, sensor_id: str) -> str:
        entry = self.sensors.get(sensor_id) if self.sensors else None
        if entry is not None:
            return entry.station
        return f"replay-{zlib.crc32(sensor_id.encode()) % 64:02d}"

    def run(self, path: Path, mapping: dict[str, str] | None = None,
            progress=None) -> ReplaySummary:
        """Replay the file; ``progress(rows)`` is called after each batch."""
        mapping = mapping or {}
        t0 = time.monotonic()
        summary: ReplaySummary | None = None
        first_ts_ms: int | None = None
        for batch in _batches(path, self.batch_rows):
            if summary is None:
                kind = detect_kind(batch.schema.names, mapping)
                summary = ReplaySummary(str(path), kind)
            rename = {v: k for k, v in mapping.items()}
            rows = [{rename.get(k, k): v for k, v in r.items()} for r in batch.to_pylist()]
            summary.rows += len(rows)
            if summary.kind == "events":
                self._events(rows, summary)
            else:
                first_ts_ms = self._readings(rows, summary, t0, first_ts_ms)
            if progress:
                progress(len(rows))
        if summary is None:
            summary = ReplaySummary(str(path), "empty")
        summary.dead_letters = sum(self.dlq.values())
        summary.dead_letters_by_reason = dict(self.dlq)
        summary.wall_s = time.monotonic() - t0
        return summary

    def _events(self, rows: list[dict[str, Any]], summary: ReplaySummary) -> None:
        for row in rows:
            row = _clean(row)
            row["v"] = int(row["v"]) if isinstance(row.get("v"), str) and row["v"].isdigit() else row.get("v", 1)
            if "ts" in row:
                row["ts"] = _ts_to_iso(row["ts"])
            if "value" in row:
                row["value"] = _number(row["value"])
                if isinstance(row["value"], float) and not math.isfinite(row["value"]):
                    self._dead(row, ContractError(Reason.NON_FINITE, "field 'value' is not finite"))
                    continue
            if isinstance(row.get("parent_ids"), str):
                row["parent_ids"] = [p for p in row["parent_ids"].split("|") if p]
            try:
                ev = decode_event(orjson.dumps(row, default=str))
            except ContractError as err:
                self._dead(row, err)
                continue
            self.producer.send_event(ev)
            summary.events += 1

    def _check(self, r: Reading) -> None:
        if self.sensors is None:
            return
        entry = self.sensors.get(r.sensor_id)
        if entry is None:
            raise ContractError(Reason.UNKNOWN_SENSOR, f"sensor {r.sensor_id!r} is not in the asset model")
        if r.unit is not None and r.unit != entry.unit:
            raise ContractError(Reason.UNIT_MISMATCH, f"{r.sensor_id!r} reports {r.unit!r}, model says {entry.unit!r}")

    def _readings(self, rows: list[dict[str, Any]], summary: ReplaySummary, t0: float,
                  first_ts_ms: int | None) -> int | None:
        good: list[Reading] = []
        for row in rows:
            row = {k: v for k, v in _clean(row).items() if k in READING_COLUMNS}
            row["v"] = 1
            if "ts" in row:
                row["ts"] = _ts_to_iso(row["ts"])
            if "value" in row:
                row["value"] = _number(row["value"])
            try:
                r = decode_reading_obj(row)
                self._check(r)
            except ContractError as err:
                self._dead(row, err)
                continue
            good.append(r)
        if not good:
            return first_ts_ms
        ts_ms = np.array([int(r.ts.timestamp() * 1000) for r in good], dtype=np.int64)
        if first_ts_ms is None:
            first_ts_ms = int(ts_ms[0])
        if self.speed is not None:
            self._pace(ts_ms, good, first_ts_ms, t0, summary)
        else:
            self._send(good, summary)
        return first_ts_ms

    def _pace(self, ts_ms: np.ndarray, good: list[Reading], first: int, t0: float,
              summary: ReplaySummary) -> None:
        """Send in one-second slices of file time, sleeping to keep the original pace × speed."""
        order = np.argsort(ts_ms, kind="stable")
        sec = (ts_ms[order] - first) // 1000
        for s in np.unique(sec):
            due = float(s) / self.speed - (time.monotonic() - t0)
            if due > 0:
                time.sleep(due)
            self._send([good[i] for i in order[sec == s]], summary)

    def _send(self, readings: list[Reading], summary: ReplaySummary) -> None:
        summary.readings += len(readings)
        if self.fmt == "json":
            for r in readings:
                self.producer.send_raw_reading(r.sensor_id, encode(r))
            return
        by_gw: dict[str, list[Reading]] = {}
        for r in readings:
            by_gw.setdefault(self._gateway(r.sensor_id), []).append(r)
        for gw, rs in by_gw.items():
            for lo in range(0, len(rs), self.frame_max):
                part = rs[lo:lo + self.frame_max]
                sensors = sorted({r.sensor_id for r in part})
                pos = {s: i for i, s in enumerate(sensors)}
                frame = DecodedFrame(
                    gw, sensors,
                    np.array([pos[r.sensor_id] for r in part], dtype=np.int32),
                    np.array([int(r.ts.timestamp() * 1000) for r in part], dtype=np.int64),
                    np.array([r.value for r in part], dtype=np.float64),
                    np.array([QUALITY_CODE[r.quality.value] for r in part], dtype=np.int8),
                )
                payload = encode_frame_arrays(frame.gateway, frame.sensors, frame.idx, frame.ts_ms,
                                              frame.value, frame.quality)
                self.producer.send_frame(gw, payload, len(part), topics.READINGS)
                summary.frames += 1
