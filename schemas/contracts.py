"""Event contracts every part of gigapulse speaks, and their strict decoders.

The classes are pydantic models so that a JSON Schema can be exported for producers in other
languages (``gigapulse schemas export``). The decoders do not go through pydantic validation on
the hot path: a frame carries thousands of readings, so it is checked with numpy in bulk and then
built with ``model_construct``. Every rejection is a :class:`ContractError` carrying a
machine-readable :class:`Reason`, never an arbitrary exception, so the dead-letter topic can say
exactly why a message was refused.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})

#: A frame larger than this many readings is refused: it would stall a worker and exceed the
#: broker's default message size long before it is useful.
MAX_FRAME_READINGS = 50_000
#: Largest message accepted by the decoders, in bytes (Kafka's default max.message.bytes is ~1 MiB).
MAX_MESSAGE_BYTES = 1_000_000
#: Largest original payload a dead letter carries verbatim. Its base64 (4/3 of it) plus the envelope
#: must fit the dead-letter topic's max.message.bytes (2 MiB in the catalog), or the letter itself
#: could never be delivered and would stop whoever sends it. A larger payload keeps its first bytes,
#: and the detail says so with its full size and SHA-256; the original stays at its source position.
MAX_DEAD_LETTER_PAYLOAD = 1_048_576
#: Event times outside year 1..9999 cannot be represented as a date by Python, Arrow's converters or
#: DuckDB's date functions alike; such a reading would break every reader of the lake.
MIN_TS_MS = -62_135_596_800_000
MAX_TS_MS = 253_402_300_799_999


class Reason(StrEnum):
    """Why a message was refused. Stable codes: dashboards and alerts group by them."""

    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    NON_FINITE = "non_finite"
    UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
    UNKNOWN_MESSAGE_TYPE = "unknown_message_type"
    OVERSIZED = "oversized"
    FRAME_LENGTH_MISMATCH = "frame_length_mismatch"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_VALUE = "bad_value"
    UNKNOWN_SENSOR = "unknown_sensor"
    UNIT_MISMATCH = "unit_mismatch"
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    #: A record with no value: a null (a Kafka tombstone, as a compacting or misconfigured client
    #: writes) or zero bytes. Refused on every topic but the compacted asset topic, where a tombstone
    #: retires its key.
    EMPTY = "empty"
    #: The worker's own failure (a bug) on this record, after bounded retries; the detail holds the
    #: exception. The record is set aside so that the partition goes on.
    INTERNAL_ERROR = "internal_error"
    # The factory connectors' own refusals (``gigapulse bridge``): what a plant protocol delivered, or
    # failed to deliver, before anything became a Kafka message. Their ``payload`` is the source's bytes.
    #: A read that failed: a Modbus exception or timeout, a lost OPC UA session, a server's bad status.
    #: The poll or sample is a gap: no value is invented for it (never a zero, never the last value).
    SOURCE_ERROR = "source_error"
    #: Bytes the protocol layer cannot parse: a Sparkplug B payload that is not valid protobuf, a
    #: registers' data type that does not decode (a float32 that is NaN, a short read).
    BAD_PAYLOAD = "bad_payload"
    #: A Sparkplug B metric sent by alias before any birth certificate named that alias.
    UNKNOWN_ALIAS = "unknown_alias"
    #: A Sparkplug B sequence number skipped: messages of that edge node were lost upstream of the
    #: bridge, which then asks the node for a rebirth.
    SEQUENCE_GAP = "sequence_gap"


#: Reasons only a bridge gives: they describe a plant protocol, so no Kafka message shows them.
BRIDGE_REASONS = frozenset({Reason.SOURCE_ERROR, Reason.BAD_PAYLOAD, Reason.UNKNOWN_ALIAS, Reason.SEQUENCE_GAP})


class ContractError(ValueError):
    """A message that breaks its contract; ``reason`` is the machine-readable code."""

    def __init__(self, reason: Reason, detail: str):
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class Quality(StrEnum):
    """OPC UA style status of a sample; frames carry it as the integer code of :data:`QUALITY_CODES`."""

    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


QUALITY_CODES: dict[Quality, int] = {Quality.GOOD: 0, Quality.UNCERTAIN: 1, Quality.BAD: 2}
QUALITY_BY_CODE: dict[int, Quality] = {v: k for k, v in QUALITY_CODES.items()}


class SignalClass(StrEnum):
    """What kind of signal a sensor carries (domain.md, "Signal classes")."""

    PROCESS_PARAMETER = "process_parameter"
    PRODUCT_FEATURE = "product_feature"
    EQUIPMENT_FEATURE = "equipment_feature"
    AMBIENT_PARAMETER = "ambient_parameter"


class Stage(StrEnum):
    """The process chain of a cell plant, in flow order."""

    MIXING = "mixing"
    COATING = "coating"
    CALENDERING = "calendering"
    SLITTING = "slitting"
    VACUUM_DRYING = "vacuum_drying"
    STACKING = "stacking"
    FILLING = "filling"
    FORMATION = "formation"
    AGING_EOL = "aging_eol"
    DRY_ROOM = "dry_room"
    #: Site utilities outside the process chain (incomers, chillers, compressed air): their meters
    #: count toward a line's or the site's energy, never toward a process stage's.
    UTILITIES = "utilities"


class _Contract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Reading(_Contract):
    """One sample of one sensor: the interoperable path any Kafka client can write."""

    v: Literal[1] = Field(1, description="Schema version.")
    sensor_id: str = Field(min_length=1, max_length=200, description="Sensor id as in the asset model.")
    ts: datetime = Field(description="Event time of the sample, ISO 8601 with a UTC offset.")
    value: float = Field(description="Sample value in the sensor's unit; finite.")
    quality: Quality = Field(Quality.GOOD, description="Status of the sample.")
    unit: str | None = Field(None, description="Optional unit; if given it must equal the asset model's.")


class ReadingFrame(_Contract):
    """Many readings of one gateway in columnar arrays: the fast path.

    ``sensors`` lists each sensor id once; ``idx[i]`` points into it for reading ``i``, whose
    event time is ``ts_ms[i]`` (epoch milliseconds, UTC), value ``value[i]`` and quality code
    ``quality[i]`` (0 good, 1 uncertain, 2 bad; omitted means all good).
    """

    v: Literal[1] = Field(1, description="Schema version.")
    type: Literal["frame"] = "frame"
    gateway: str = Field(min_length=1, max_length=200, description="Gateway or machine that sampled.")
    sensors: list[str] = Field(min_length=1, description="Distinct sensor ids referenced by idx.")
    idx: list[int] = Field(description="Index into sensors, one per reading.")
    ts_ms: list[int] = Field(description="Event time per reading, epoch milliseconds UTC.")
    value: list[float] = Field(description="Value per reading; finite.")
    quality: list[int] | None = Field(None, description="Quality code per reading; omitted = all good.")

    def __len__(self) -> int:
        return len(self.idx)


class EventKind(StrEnum):
    """What happened to a unit."""

    ENTER = "enter"
    LEAVE = "leave"
    MEASURE = "measure"
    GRADE = "grade"
    SCRAP = "scrap"


class UnitType(StrEnum):
    """The units that flow through the chain, from slurry to graded cell."""

    SLURRY_BATCH = "slurry_batch"
    ELECTRODE_ROLL = "electrode_roll"
    CELL = "cell"


class ProductionEvent(_Contract):
    """A unit enters or leaves a stage, is measured, graded or scrapped.

    ``parent_ids`` carries genealogy: a roll names its slurry batch, a cell names its electrode
    rolls, so a graded cell traces back through every stage.
    """

    v: Literal[1] = Field(1, description="Schema version.")
    event_id: str = Field(min_length=1, max_length=200,
                          description="Unique and deterministic: a re-sent or replayed event keeps its id, and "
                                      "no two different events share one, across runs, restarts and sources.")
    ts: datetime = Field(description="Event time, ISO 8601 with a UTC offset.")
    site: str
    line: str
    stage: Stage
    station: str
    unit_id: str = Field(min_length=1, max_length=200,
                         description="Serial of the unit: never reused, across runs and restarts (the "
                                     "simulator's serials: site, line, route, run code, type and sequence).")
    unit_type: UnitType
    kind: EventKind
    parent_ids: list[str] = Field(default_factory=list, description="Genealogy: ids of the units consumed.")
    attribute: str | None = Field(None, description="measure: what was measured (areal_loading, capacity...).")
    value: float | None = Field(None, description="measure: the measured value; finite.")
    unit: str | None = Field(None, description="measure: unit of value.")
    grade: str | None = Field(None, description="grade: A, B, C (C is not sellable as first grade).")
    reason: str | None = Field(None, description="scrap: why (coating_defect, moisture, weld_failure...).")
    source: Literal["auto", "manual"] = Field("auto", description="manual = entered by hand (legacy plants).")


class AssetEntry(_Contract):
    """One sensor of the ISA-95 asset model, with what the stream needs to enrich its readings."""

    v: Literal[1] = Field(1, description="Schema version.")
    sensor_id: str
    path: str = Field(description="ISA-95 path: enterprise/site/area/line/station/equipment/sensor.")
    enterprise: str
    site: str
    area: str
    line: str
    station: str
    equipment: str
    stage: Stage
    parameter: str
    unit: str
    signal_class: SignalClass
    nominal_rate_hz: float = Field(gt=0, description="Sampling rate the sensor should deliver.")
    lsl: float | None = Field(None, description="Lower spec limit, in unit.")
    usl: float | None = Field(None, description="Upper spec limit, in unit.")
    target: float | None = Field(None, description="Nominal/target value, in unit.")
    ctq: bool = Field(False, description="Critical to quality: SPC and capability are computed for it.")
    is_energy_meter: bool = Field(False, description="Cumulative kWh counter of its station.")
    protocol: str = Field("opcua", description="How the plant exposes it: opcua, modbus, mqtt, manual.")


class DeadLetter(_Contract):
    """A refused message, kept with its original bytes and the reason it was refused."""

    v: Literal[1] = Field(1, description="Schema version.")
    reason: Reason
    detail: str = Field(description="Human-readable explanation.")
    stage: Literal["edge", "stream", "replay", "bridge"] = Field(description="Where it was refused.")
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    ts: datetime = Field(description="When it was dead-lettered (UTC).")
    payload_b64: str = Field(description="The original bytes, base64.")

    @classmethod
    def for_payload(
        cls,
        payload: bytes | None,
        error: ContractError,
        stage: Literal["edge", "stream", "replay"],
        source_topic: str | None = None,
        source_partition: int | None = None,
        source_offset: int | None = None,
        now: datetime | None = None,
    ) -> DeadLetter:
        """Wrap refused bytes with their reason; the bytes are kept verbatim (base64).

        A null payload (a tombstone) is kept as zero bytes, its reason and detail say which it was.
        A payload over :data:`MAX_DEAD_LETTER_PAYLOAD` keeps only its head (see there).
        """
        detail = error.detail
        raw = b"" if payload is None else bytes(payload)
        if len(raw) > MAX_DEAD_LETTER_PAYLOAD:
            digest = hashlib.sha256(raw).hexdigest()
            note = (f" [payload truncated to its first {MAX_DEAD_LETTER_PAYLOAD:,} of {len(raw):,} bytes, "
                    f"sha256 {digest}]")
            detail = detail[: 1000 - len(note)] + note
            raw = raw[:MAX_DEAD_LETTER_PAYLOAD]
        return cls.model_construct(
            v=1,
            reason=error.reason,
            detail=detail[:1000],
            stage=stage,
            source_topic=source_topic,
            source_partition=source_partition,
            source_offset=source_offset,
            ts=now or datetime.now(UTC),
            payload_b64=base64.b64encode(raw).decode("ascii"),
        )

    def payload(self) -> bytes:
        """The original bytes."""
        return base64.b64decode(self.payload_b64)


# --------------------------------------------------------------------------- encoding

def _default(obj: Any) -> Any:
    if isinstance(obj, StrEnum):
        return obj.value
    raise TypeError(type(obj).__name__)


def encode(msg: _Contract) -> bytes:
    """Serialise a contract object to compact JSON bytes; UTC timestamps as ISO 8601 with Z.

    Optional fields that are unset (None) are left out, which keeps single readings small.
    """
    return orjson.dumps(
        {k: _ts_out(v) for k, v in msg.__dict__.items() if v is not None},
        default=_default,
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def _ts_out(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return v


def encode_frame_arrays(
    gateway: str,
    sensors: list[str],
    idx: np.ndarray,
    ts_ms: np.ndarray,
    value: np.ndarray,
    quality: np.ndarray | None = None,
) -> bytes:
    """Encode a frame straight from numpy arrays (the simulator's fast path)."""
    body: dict[str, Any] = {
        "v": 1,
        "type": "frame",
        "gateway": gateway,
        "sensors": sensors,
        "idx": idx,
        "ts_ms": ts_ms,
        "value": value,
    }
    if quality is not None and quality.any():
        body["quality"] = quality
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


# --------------------------------------------------------------------------- decoding

_NON_FINITE_TOKEN = re.compile(rb"(?<![\"\w])-?(NaN|Infinity|inf|nan)(?![\"\w])")


def _loads(payload: bytes | None, max_bytes: int) -> dict[str, Any]:
    if payload is None:
        raise ContractError(Reason.EMPTY, "the record has a null value (a tombstone)")
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise ContractError(Reason.WRONG_TYPE, f"expected bytes, got {type(payload).__name__}")
    if not payload:
        raise ContractError(Reason.EMPTY, "the record's value is empty (zero bytes)")
    if len(payload) > max_bytes:
        raise ContractError(Reason.OVERSIZED, f"message of {len(payload)} bytes exceeds {max_bytes}")
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        if _NON_FINITE_TOKEN.search(payload) or "infinity" in str(exc):
            raise ContractError(Reason.NON_FINITE, "NaN or Infinity is not a valid value") from None
        raise ContractError(Reason.NOT_JSON, f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ContractError(Reason.NOT_OBJECT, f"expected a JSON object, got {type(obj).__name__}")
    _check_version(obj)
    return obj


def _check_version(obj: dict[str, Any]) -> None:
    if "v" not in obj:
        raise ContractError(Reason.MISSING_FIELD, "field 'v' (schema version) is missing")
    v = obj["v"]
    if type(v) is not int:
        raise ContractError(Reason.WRONG_TYPE, f"field 'v' must be an integer, got {type(v).__name__}")
    if v not in SUPPORTED_VERSIONS:
        raise ContractError(Reason.UNKNOWN_SCHEMA_VERSION, f"schema version {v} is not supported")


def _require(obj: dict[str, Any], name: str, types: type | tuple[type, ...], optional: bool = False) -> Any:
    if name not in obj or (optional and obj[name] is None):
        if optional:
            return None
        raise ContractError(Reason.MISSING_FIELD, f"field '{name}' is missing")
    val = obj[name]
    if isinstance(val, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ContractError(Reason.WRONG_TYPE, f"field '{name}' must be {_tname(types)}, got bool")
    if not isinstance(val, types):
        raise ContractError(Reason.WRONG_TYPE, f"field '{name}' must be {_tname(types)}, got {type(val).__name__}")
    return val


def _tname(types: type | tuple[type, ...]) -> str:
    if isinstance(types, tuple):
        return " or ".join(t.__name__ for t in types)
    return types.__name__


def _string(obj: dict[str, Any], name: str, optional: bool = False) -> str | None:
    val = _require(obj, name, str, optional)
    if val is not None and not val:
        raise ContractError(Reason.BAD_VALUE, f"field '{name}' must not be empty")
    return val


def _finite(obj: dict[str, Any], name: str, optional: bool = False) -> float | None:
    val = _require(obj, name, (int, float), optional)
    if val is None:
        return None
    val = float(val)
    if not math.isfinite(val):
        raise ContractError(Reason.NON_FINITE, f"field '{name}' is not finite")
    return val


def parse_ts(raw: Any, name: str = "ts") -> datetime:
    """Parse an ISO 8601 timestamp that carries its offset; naive times are refused (ambiguous)."""
    if not isinstance(raw, str):
        raise ContractError(Reason.WRONG_TYPE, f"field '{name}' must be an ISO 8601 string")
    try:
        ts = datetime.fromisoformat(raw)
    except ValueError:
        raise ContractError(Reason.BAD_TIMESTAMP, f"field '{name}' is not ISO 8601: {raw[:40]!r}") from None
    if ts.tzinfo is None:
        raise ContractError(Reason.BAD_TIMESTAMP, f"field '{name}' has no UTC offset: {raw[:40]!r}")
    try:
        return ts.astimezone(UTC)
    except OverflowError:  # year 1 with a positive offset, or year 9999 with a negative one
        raise ContractError(Reason.BAD_TIMESTAMP, f"field '{name}' is outside the years 1 to 9999 in UTC: "
                                                  f"{raw[:40]!r}") from None


def _check_keys(obj: dict[str, Any], allowed: frozenset[str], what: str) -> None:
    extra = obj.keys() - allowed
    if extra:
        raise ContractError(Reason.WRONG_TYPE, f"unknown field(s) in {what}: {sorted(extra)[:5]}")


_READING_KEYS = frozenset(Reading.model_fields)
_FRAME_KEYS = frozenset(ReadingFrame.model_fields)
_EVENT_KEYS = frozenset(ProductionEvent.model_fields)
_ASSET_KEYS = frozenset(AssetEntry.model_fields)


def decode_reading_obj(obj: dict[str, Any]) -> Reading:
    """Validate an already-parsed single reading."""
    _check_keys(obj, _READING_KEYS, "reading")
    sensor_id = _string(obj, "sensor_id")
    ts = parse_ts(_require(obj, "ts", str))
    value = _finite(obj, "value")
    q = _require(obj, "quality", str, optional=True)
    try:
        quality = Quality(q) if q is not None else Quality.GOOD
    except ValueError:
        raise ContractError(Reason.BAD_VALUE, f"quality must be good, uncertain or bad, got {q!r}") from None
    unit = _string(obj, "unit", optional=True)
    return Reading.model_construct(v=1, sensor_id=sensor_id, ts=ts, value=value, quality=quality, unit=unit)


def _int_array(raw: list, name: str, n: int) -> np.ndarray:
    """A column of integers; numpy infers the dtype in C, so a float or string anywhere shows up
    as a non-integer dtype without a Python loop over the readings."""
    if len(raw) != n:
        raise ContractError(Reason.FRAME_LENGTH_MISMATCH, f"'{name}' has {len(raw)} entries, 'idx' has {n}")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    try:
        arr = np.array(raw)
    except (TypeError, ValueError, OverflowError):
        raise ContractError(Reason.WRONG_TYPE, f"'{name}' must hold integers only") from None
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise ContractError(Reason.WRONG_TYPE, f"'{name}' must be a flat array of integers")
    return arr.astype(np.int64, copy=False)


def _float_array(raw: list, name: str, n: int) -> np.ndarray:
    if len(raw) != n:
        raise ContractError(Reason.FRAME_LENGTH_MISMATCH, f"'{name}' has {len(raw)} entries, 'idx' has {n}")
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    try:
        arr = np.array(raw)
    except (TypeError, ValueError, OverflowError):
        raise ContractError(Reason.WRONG_TYPE, f"'{name}' must hold numbers only") from None
    if arr.ndim != 1:
        raise ContractError(Reason.WRONG_TYPE, f"'{name}' must be a flat array")
    if arr.dtype.kind == "O" and any(x is None for x in raw):
        raise ContractError(Reason.NON_FINITE, f"'{name}' holds null (NaN is not allowed)")
    if arr.dtype.kind not in "iuf":
        raise ContractError(Reason.WRONG_TYPE, f"'{name}' must hold numbers only")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise ContractError(Reason.NON_FINITE, f"'{name}' holds NaN or Infinity")
    return arr


class DecodedFrame:
    """A validated frame as numpy columns, ready for vectorised feature math."""

    __slots__ = ("gateway", "sensors", "idx", "ts_ms", "value", "quality")

    def __init__(self, gateway: str, sensors: list[str], idx: np.ndarray, ts_ms: np.ndarray,
                 value: np.ndarray, quality: np.ndarray):
        self.gateway = gateway
        self.sensors = sensors
        self.idx = idx
        self.ts_ms = ts_ms
        self.value = value
        self.quality = quality

    def __len__(self) -> int:
        return int(self.idx.shape[0])

    def sensor_ids(self) -> np.ndarray:
        """Sensor id per reading (object array)."""
        return np.asarray(self.sensors, dtype=object)[self.idx]

    def to_contract(self) -> ReadingFrame:
        """The frame as its typed contract class."""
        return ReadingFrame.model_construct(
            v=1, type="frame", gateway=self.gateway, sensors=list(self.sensors),
            idx=self.idx.tolist(), ts_ms=self.ts_ms.tolist(), value=self.value.tolist(),
            quality=self.quality.tolist(),
        )


def decode_frame_obj(obj: dict[str, Any], max_readings: int = MAX_FRAME_READINGS) -> DecodedFrame:
    """Validate an already-parsed frame in bulk with numpy."""
    _check_keys(obj, _FRAME_KEYS, "frame")
    gateway = _string(obj, "gateway")
    sensors = _require(obj, "sensors", list)
    if not sensors or not all(isinstance(s, str) and s for s in sensors):
        raise ContractError(Reason.WRONG_TYPE, "'sensors' must be a non-empty list of non-empty strings")
    idx_raw = _require(obj, "idx", list)
    n = len(idx_raw)
    if n > max_readings:
        raise ContractError(Reason.OVERSIZED, f"frame holds {n} readings, the limit is {max_readings}")
    idx = _int_array(idx_raw, "idx", n)
    if n and (idx.min() < 0 or idx.max() >= len(sensors)):
        raise ContractError(Reason.BAD_VALUE, "'idx' points outside 'sensors'")
    ts_ms = _int_array(_require(obj, "ts_ms", list), "ts_ms", n)
    if n and (ts_ms.min() < MIN_TS_MS or ts_ms.max() > MAX_TS_MS):
        raise ContractError(Reason.BAD_TIMESTAMP, "'ts_ms' holds a time outside the years 1 to 9999")
    value = _float_array(_require(obj, "value", list), "value", n)
    q_raw = _require(obj, "quality", list, optional=True)
    if q_raw is None:
        quality = np.zeros(n, dtype=np.int8)
    else:
        q = _int_array(q_raw, "quality", n)
        if n and (q.min() < 0 or q.max() > 2):
            raise ContractError(Reason.BAD_VALUE, "'quality' codes must be 0, 1 or 2")
        quality = q.astype(np.int8)
    return DecodedFrame(gateway, list(sensors), idx.astype(np.int32), ts_ms, value, quality)


def decode_reading_message(payload: bytes | None, max_bytes: int = MAX_MESSAGE_BYTES) -> Reading | DecodedFrame:
    """Decode a message of ``plant.readings.v1``: a single reading or a frame."""
    obj = _loads(payload, max_bytes)
    kind = obj.get("type")
    if kind == "frame":
        return decode_frame_obj(obj)
    if kind is not None:
        raise ContractError(Reason.UNKNOWN_MESSAGE_TYPE, f"unknown message type {kind!r}")
    return decode_reading_obj(obj)


def decode_event(payload: bytes | None, max_bytes: int = MAX_MESSAGE_BYTES) -> ProductionEvent:
    """Decode a message of ``plant.events.v1``; per-kind fields are required (measure needs a value)."""
    obj = _loads(payload, max_bytes)
    _check_keys(obj, _EVENT_KEYS, "production event")
    fields: dict[str, Any] = {"v": 1}
    for name in ("event_id", "site", "line", "station", "unit_id"):
        fields[name] = _string(obj, name)
    fields["ts"] = parse_ts(_require(obj, "ts", str))
    for name, enum in (("stage", Stage), ("unit_type", UnitType), ("kind", EventKind)):
        raw = _require(obj, name, str)
        try:
            fields[name] = enum(raw)
        except ValueError:
            raise ContractError(Reason.BAD_VALUE, f"field '{name}' has unknown value {raw!r}") from None
    parents = _require(obj, "parent_ids", list, optional=True) or []
    if not all(isinstance(p, str) and p for p in parents):
        raise ContractError(Reason.WRONG_TYPE, "'parent_ids' must be a list of non-empty strings")
    fields["parent_ids"] = parents
    fields["attribute"] = _string(obj, "attribute", optional=True)
    fields["value"] = _finite(obj, "value", optional=True)
    fields["unit"] = _string(obj, "unit", optional=True)
    fields["grade"] = _string(obj, "grade", optional=True)
    fields["reason"] = _string(obj, "reason", optional=True)
    source = _require(obj, "source", str, optional=True) or "auto"
    if source not in ("auto", "manual"):
        raise ContractError(Reason.BAD_VALUE, f"field 'source' must be auto or manual, got {source!r}")
    fields["source"] = source
    kind = fields["kind"]
    if kind is EventKind.MEASURE:
        for name in ("attribute", "value", "unit"):
            if fields[name] is None:
                raise ContractError(Reason.MISSING_FIELD, f"a measure event needs '{name}'")
    elif kind is EventKind.GRADE and fields["grade"] is None:
        raise ContractError(Reason.MISSING_FIELD, "a grade event needs 'grade'")
    elif kind is EventKind.SCRAP and fields["reason"] is None:
        raise ContractError(Reason.MISSING_FIELD, "a scrap event needs 'reason'")
    return ProductionEvent.model_construct(**fields)


def _validated(cls: type[BaseModel], obj: dict[str, Any]) -> Any:
    """Full pydantic validation, its first error turned into a :class:`ContractError` with a reason."""
    try:
        return cls.model_validate(obj)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        reason = Reason.MISSING_FIELD if err["type"] == "missing" else Reason.WRONG_TYPE
        raise ContractError(reason, f"field '{loc}': {err['msg']}") from None


def decode_asset(payload: bytes | None, max_bytes: int = MAX_MESSAGE_BYTES) -> AssetEntry:
    """Decode a message of ``plant.assets.v1`` (full pydantic validation: assets are few)."""
    return _validated(AssetEntry, _loads(payload, max_bytes))


def decode_dead_letter(payload: bytes | None) -> DeadLetter:
    """Decode a message of ``plant.dlq.v1``; a broken letter raises :class:`ContractError` like any other.

    Beyond its types: ``ts`` must carry its offset (a naive time is ambiguous), and ``payload_b64``
    must be valid base64, since the original bytes are the point of a dead letter.
    """
    obj = _loads(payload, 10 * MAX_MESSAGE_BYTES)
    if "ts" in obj:
        obj["ts"] = parse_ts(obj["ts"])
    letter = _validated(DeadLetter, obj)
    try:
        base64.b64decode(letter.payload_b64, validate=True)
    except ValueError:
        raise ContractError(Reason.BAD_VALUE, "field 'payload_b64' is not valid base64") from None
    return letter


CONTRACTS: dict[str, type[BaseModel]] = {
    "reading": Reading,
    "reading_frame": ReadingFrame,
    "production_event": ProductionEvent,
    "asset_entry": AssetEntry,
    "dead_letter": DeadLetter,
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema (draft 2020-12) of every contract, keyed by contract name."""
    out = {}
    for name, cls in CONTRACTS.items():
        schema = cls.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://gigapulse.dev/schemas/{name}.v1.json"
        out[name] = schema
    return out


def utc_from_ms(ms: int) -> datetime:
    """Epoch milliseconds to an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC)
