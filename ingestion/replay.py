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


def _header(path: Path) -> list[str]:
    """The CSV's column names, from its first line (a UTF-8 byte-order mark is dropped)."""
    # csv refuses a cell over 128 KiB with csv.Error; a header of MBs is read, then refused by detect_kind
    # for naming no known column. (The limit is process-wide; nothing else here reads CSV with csv.)
    csv.field_size_limit(1 << 26)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return next(csv.reader(fh), [])
    except UnicodeDecodeError as exc:
        raise ReplayError(f"{path}: not UTF-8 text (byte {exc.start} of the header); re-encode it, e.g. "
                          "iconv -f latin1 -t utf-8") from None
    except csv.Error as exc:
        raise ReplayError(f"{path}: not a CSV header ({exc})") from None


def _batches(path: Path, batch_rows: int) -> Iterator[pa.RecordBatch]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            yield from pq.ParquetFile(path).iter_batches(batch_size=batch_rows)
        elif suffix in (".csv", ".txt"):
            # A block holds whole rows: a row longer than the block is refused by Arrow, so a block is
            # bigger than any sensible row; a longer one is named in the error below.
            opts = pacsv.ReadOptions(block_size=1 << 24)
            # Arrow reads "NaN"/"nan" as null by default, which would dead-letter a NaN value as
            # missing_field; kept as NaN, it is refused as non_finite, as from a Parquet file.
            nulls = [v for v in pacsv.ConvertOptions().null_values if v.lstrip("-").lower() != "nan"]
            # Every column is read as text and converted row by row: Arrow infers types from the first
            # block only, so one odd value further down would otherwise abort the whole replay.
            header = _header(path)
            convert = pacsv.ConvertOptions(strings_can_be_null=True, null_values=nulls,
                                           column_types={name: pa.string() for name in header})
            with pacsv.open_csv(path, read_options=opts, convert_options=convert) as reader:
                yield from reader
        else:
            raise ReplayError(f"{path}: unsupported file type {suffix!r} (use .csv or .parquet)")
    except FileNotFoundError:
        raise ReplayError(f"file not found: {path}") from None
    except (pa.ArrowException, OSError) as exc:
        reason = getattr(exc, "strerror", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ReplayError(f"{path}: cannot read ({reason[:300]})") from None
    except ValueError as exc:  # a NUL in the name; ReplayError (a ValueError too) passes through
        if isinstance(exc, ReplayError):
            raise
        raise ReplayError(f"{str(path)!r}: cannot read ({exc})") from None


def _rows(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """The batch's rows as dicts. A value Python cannot hold (a Parquet timestamp beyond year 9999, a
    decimal of odd scale) fails the whole conversion, so the batch is converted column by column and
    such a column's values are given as text, which the decoders refuse row by row with a reason."""
    try:
        return batch.to_pylist()
    except (pa.ArrowException, ValueError, OverflowError):
        pass
    columns = {}
    for name, col in zip(batch.schema.names, batch.columns, strict=True):
        try:
            columns[name] = col.to_pylist()
        except (pa.ArrowException, ValueError, OverflowError):
            columns[name] = [None if v is None else str(v) for v in col.cast(pa.string(), safe=False).to_pylist()] \
                if pa.types.is_timestamp(col.type) or pa.types.is_decimal(col.type) or pa.types.is_date(col.type) \
                else [f"<{col.type} value not readable>"] * len(col)
    return [dict(zip(columns, vals, strict=True)) for vals in zip(*columns.values(), strict=True)]


def probe(path: Path, mapping: dict[str, str] | None = None) -> str:
    """What the file holds ("readings", "events", or "empty"), read from its first batch: the CLI asks this
    before it connects to Kafka, so a file that cannot be replayed is refused at once, broker or not."""
    for batch in _batches(path, 16):
        return detect_kind(batch.schema.names, mapping or {})
    return "empty"


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


def _int(text: str) -> int | None:
    """The text as an int when it is a plain decimal one: ``str.isdigit`` also accepts "²" and other
    digits ``int`` refuses, and ``int`` refuses more than 4,300 digits."""
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 30:
        return None
    return int(text)


def _ts_to_iso(raw: Any) -> Any:
    if isinstance(raw, str) and _int(raw) is not None:
        raw = _int(raw)
    if isinstance(raw, datetime):
        ts = raw if raw.tzinfo else raw.replace(tzinfo=UTC)
        return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(raw, int) and not isinstance(raw, bool):
        try:
            return datetime.fromtimestamp(raw / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        except (OverflowError, OSError, ValueError):
            return str(raw)  # epoch milliseconds beyond datetime's years 1-9999: refused by the decoder
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
            rows = [{rename.get(k, k): v for k, v in r.items()} for r in _rows(batch)]
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
            v = row.get("v", 1)
            row["v"] = _int(v) if isinstance(v, str) and _int(v) is not None else v
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
