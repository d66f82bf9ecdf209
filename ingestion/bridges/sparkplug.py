"""Sparkplug B 3.0 on the wire: topics, payloads and metric values.

Pure functions over the generated protobuf classes (``sparkplug_b_pb2``, built from
``sparkplug_b.proto`` by ``make proto``): the MQTT bridge decodes with them, the simulator's
publisher (``mqtt_server``) and the tests encode with them, so both ends agree on one codec.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from ingestion.bridges import sparkplug_b_pb2 as pb

NAMESPACE = "spBv1.0"

#: Message types an edge node publishes (commands go the other way and the bridge only sends them).
NODE_TYPES = frozenset({"NBIRTH", "NDATA", "NDEATH"})
DEVICE_TYPES = frozenset({"DBIRTH", "DDATA", "DDEATH"})
COMMAND_TYPES = frozenset({"NCMD", "DCMD"})

#: The node metric a host application sets to true in an NCMD to ask the node for its births again.
REBIRTH_METRIC = "Node Control/Rebirth"
#: The birth/death sequence number: NDEATH carries the bdSeq of the NBIRTH it ends.
BDSEQ_METRIC = "bdSeq"

# DataType codes (the specification's numbers, see sparkplug_b.proto).
INT8, INT16, INT32, INT64 = pb.Int8, pb.Int16, pb.Int32, pb.Int64
UINT8, UINT16, UINT32, UINT64 = pb.UInt8, pb.UInt16, pb.UInt32, pb.UInt64
FLOAT, DOUBLE, BOOLEAN, STRING, DATETIME = pb.Float, pb.Double, pb.Boolean, pb.String, pb.DateTime

#: Datatypes whose value is one number, so a reading; the rest (strings, bytes, datasets,
#: templates, arrays) never are.
NUMERIC_TYPES = frozenset({INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64, FLOAT, DOUBLE, BOOLEAN,
                           DATETIME})
_SIGNED_BITS = {INT8: 32, INT16: 32, INT32: 32, INT64: 64}

#: The Sparkplug "Quality" metric property holds an OPC DA quality word: 192 good; 64..191 uncertain;
#: below 64 bad. We read its two top bits, as OPC DA does.
QUALITY_PROPERTY = "Quality"


class SparkplugError(ValueError):
    """A topic or payload that is not Sparkplug B; the bridge turns it into a BAD_PAYLOAD dead letter."""


@dataclass(frozen=True, slots=True)
class SparkplugTopic:
    """``spBv1.0/<group>/<type>/<node>[/<device>]``, split."""

    group: str
    message_type: str
    node: str
    device: str | None = None

    @property
    def node_key(self) -> tuple[str, str]:
        """The edge node (group, node) whose sequence numbers this message continues."""
        return (self.group, self.node)

    def __str__(self) -> str:
        tail = f"/{self.device}" if self.device is not None else ""
        return f"{NAMESPACE}/{self.group}/{self.message_type}/{self.node}{tail}"


def parse_topic(topic: str) -> SparkplugTopic:
    """Split a Sparkplug B topic; STATE topics and anything malformed raise :class:`SparkplugError`."""
    parts = topic.split("/")
    if len(parts) < 4 or parts[0] != NAMESPACE:
        raise SparkplugError(f"not a Sparkplug B edge topic: {topic!r}")
    _, group, mtype, node, *rest = parts
    device = rest[0] if rest else None
    if mtype in NODE_TYPES or mtype == "NCMD":
        if rest:
            raise SparkplugError(f"{mtype} takes no device: {topic!r}")
    elif mtype in DEVICE_TYPES or mtype == "DCMD":
        if len(rest) != 1 or not device:
            raise SparkplugError(f"{mtype} needs exactly one device: {topic!r}")
    else:
        raise SparkplugError(f"unknown Sparkplug message type {mtype!r}")
    if not group or not node:
        raise SparkplugError(f"empty group or edge node in {topic!r}")
    return SparkplugTopic(group, mtype, node, device)


def decode_payload(data: bytes) -> pb.Payload:
    """Parse a payload; bytes protobuf cannot read raise :class:`SparkplugError`."""
    payload = pb.Payload()
    try:
        payload.ParseFromString(data)
    except (DecodeError, RuntimeWarning) as exc:
        raise SparkplugError(f"not a Sparkplug B payload: {exc}") from None
    return payload


def metric_number(metric: pb.Payload.Metric, datatype: int) -> float:
    """The metric's value as a float, read by ``datatype`` (the birth's, when the data message omits it).

    Signed integers travel as unsigned two's complement (Int8..Int32 in 32 bits, Int64 in 64), so
    they are folded back here; booleans become 1.0/0.0; DateTime is its epoch milliseconds.
    Raises :class:`SparkplugError` when the datatype is not a number or the value field does not fit it.
    """
    if datatype not in NUMERIC_TYPES:
        raise SparkplugError(f"datatype {_type_name(datatype)} is not a number")
    field = metric.WhichOneof("value")
    if field is None:
        raise SparkplugError("metric has no value")
    if field == "int_value" or field == "long_value":
        raw = getattr(metric, field)
        bits = _SIGNED_BITS.get(datatype)
        if bits is not None and raw >= 1 << (bits - 1):
            raw -= 1 << bits
        return float(raw)
    if field == "float_value" or field == "double_value":
        return float(getattr(metric, field))
    if field == "boolean_value":
        return 1.0 if metric.boolean_value else 0.0
    raise SparkplugError(f"a {_type_name(datatype)} metric carries {field}")


def metric_quality(metric: pb.Payload.Metric) -> int:
    """Quality code 0/1/2 from the metric's ``Quality`` property (good when there is none)."""
    if not metric.HasField("properties"):
        return 0
    props = metric.properties
    for key, value in zip(props.keys, props.values, strict=False):
        if key == QUALITY_PROPERTY and value.WhichOneof("value") in ("int_value", "long_value"):
            word = value.int_value if value.WhichOneof("value") == "int_value" else value.long_value
            top = (word >> 6) & 0b11
            return 0 if top == 0b11 else (2 if top == 0 else 1)
    return 0


def set_metric_value(metric: pb.Payload.Metric, datatype: int, value: float | int | bool) -> None:
    """Write ``value`` into the field the datatype travels in (signed integers as two's complement)."""
    metric.datatype = datatype
    if datatype in (INT8, INT16, INT32, UINT8, UINT16, UINT32):
        metric.int_value = int(value) & 0xFFFFFFFF
    elif datatype in (INT64, UINT64, DATETIME):
        metric.long_value = int(value) & 0xFFFFFFFFFFFFFFFF
    elif datatype == FLOAT:
        metric.float_value = float(value)
    elif datatype == DOUBLE:
        metric.double_value = float(value)
    elif datatype == BOOLEAN:
        metric.boolean_value = bool(value)
    elif datatype == STRING:
        metric.string_value = str(value)
    else:
        raise SparkplugError(f"cannot encode a {_type_name(datatype)} metric")


@dataclass(frozen=True, slots=True)
class MetricOut:
    """One metric to publish: by name (births), by alias (data), or both."""

    value: float | int | bool | str
    datatype: int = DOUBLE
    name: str | None = None
    alias: int | None = None
    ts_ms: int | None = None


def encode_payload(metrics: Iterable[MetricOut], ts_ms: int, seq: int | None) -> bytes:
    """Serialize a payload (``seq`` None for NDEATH, which carries none)."""
    payload = pb.Payload(timestamp=ts_ms)
    if seq is not None:
        payload.seq = seq
    for m in metrics:
        metric = payload.metrics.add()
        if m.name is not None:
            metric.name = m.name
        if m.alias is not None:
            metric.alias = m.alias
        if m.ts_ms is not None:
            metric.timestamp = m.ts_ms
        set_metric_value(metric, m.datatype, m.value)
    return payload.SerializeToString()


def rebirth_request(ts_ms: int) -> bytes:
    """The NCMD payload that asks an edge node to publish its NBIRTH and DBIRTHs again."""
    return encode_payload([MetricOut(True, BOOLEAN, name=REBIRTH_METRIC)], ts_ms, seq=None)


def next_seq(seq: int) -> int:
    """Sequence numbers run 0..255 and wrap."""
    return (seq + 1) % 256


def float32(value: float) -> float:
    """``value`` rounded as a Float metric carries it (what the lake will read back)."""
    return struct.unpack("<f", struct.pack("<f", value))[0]


def _type_name(datatype: int) -> str:
    try:
        return pb.DataType.Name(datatype)
    except ValueError:
        return f"datatype {datatype}"
