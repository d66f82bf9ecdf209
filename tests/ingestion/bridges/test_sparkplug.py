"""The Sparkplug B codec: the shipped generated module, topics, values by datatype."""

from __future__ import annotations

import math
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from ingestion.bridges import sparkplug as spb
from ingestion.bridges import sparkplug_b_pb2 as pb

ROOT = Path(__file__).resolve().parents[3]
PROTO = "ingestion/bridges/sparkplug_b.proto"


def test_generated_module_matches_the_proto(tmp_path):
    pytest.importorskip("grpc_tools")
    # protoc names the source by its path under -I, so the copy keeps the repository's layout
    (tmp_path / "ingestion" / "bridges").mkdir(parents=True)
    shutil.copy(ROOT / PROTO, tmp_path / PROTO)
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", str(tmp_path), f"--python_out={tmp_path}",
                    str(tmp_path / PROTO)], check=True, capture_output=True)
    fresh = (tmp_path / "ingestion" / "bridges" / "sparkplug_b_pb2.py").read_text()
    shipped = (ROOT / "ingestion" / "bridges" / "sparkplug_b_pb2.py").read_text()
    assert fresh == shipped, "sparkplug_b_pb2.py is stale: run `make proto`"


def test_field_numbers_are_the_specifications():
    """The wire format is what makes us interoperable: spot-check the numbers the spec fixes."""
    metric = pb.Payload.Metric.DESCRIPTOR.fields_by_name
    assert {n: metric[n].number for n in ("name", "alias", "timestamp", "datatype", "is_historical",
                                          "is_transient", "is_null", "metadata", "properties", "int_value",
                                          "long_value", "float_value", "double_value", "boolean_value",
                                          "string_value", "bytes_value", "dataset_value", "template_value",
                                          "extension_value")} == {
        "name": 1, "alias": 2, "timestamp": 3, "datatype": 4, "is_historical": 5, "is_transient": 6,
        "is_null": 7, "metadata": 8, "properties": 9, "int_value": 10, "long_value": 11, "float_value": 12,
        "double_value": 13, "boolean_value": 14, "string_value": 15, "bytes_value": 16, "dataset_value": 17,
        "template_value": 18, "extension_value": 19}
    payload = pb.Payload.DESCRIPTOR.fields_by_name
    assert [(n, payload[n].number) for n in ("timestamp", "metrics", "seq", "uuid", "body")] == [
        ("timestamp", 1), ("metrics", 2), ("seq", 3), ("uuid", 4), ("body", 5)]
    assert (pb.Int8, pb.UInt64, pb.Float, pb.Double, pb.Boolean, pb.String, pb.DateTime, pb.Template,
            pb.DateTimeArray) == (1, 8, 9, 10, 11, 12, 13, 19, 34)


def test_known_bytes_decode():
    """A payload built by hand, field by field, decodes: no dependence on our own encoder."""
    # timestamp=1000 (field 1 varint), seq=7 (field 3), metric{alias=3, datatype=10, double_value=2.5}
    metric = b"\x10\x03\x20\x0a\x69" + struct.pack("<d", 2.5)
    raw = b"\x08\xe8\x07" + b"\x12" + bytes([len(metric)]) + metric + b"\x18\x07"
    p = spb.decode_payload(raw)
    assert (p.timestamp, p.seq, p.metrics[0].alias, p.metrics[0].datatype) == (1000, 7, 3, pb.Double)
    assert spb.metric_number(p.metrics[0], p.metrics[0].datatype) == 2.5


@pytest.mark.parametrize(("datatype", "value"), [
    (spb.INT8, -5), (spb.INT16, -30000), (spb.INT32, -2_000_000_000), (spb.INT64, -(2**62)),
    (spb.UINT8, 200), (spb.UINT16, 65000), (spb.UINT32, 4_000_000_000), (spb.UINT64, 2**63),
    (spb.FLOAT, 1.5), (spb.DOUBLE, math.pi), (spb.BOOLEAN, True), (spb.BOOLEAN, False),
    (spb.DATETIME, 1_767_225_600_000),
])
def test_numbers_round_trip_by_datatype(datatype, value):
    raw = spb.encode_payload([spb.MetricOut(value, datatype, name="m", alias=1)], ts_ms=5, seq=0)
    m = spb.decode_payload(raw).metrics[0]
    assert spb.metric_number(m, datatype) == float(value)


def test_signed_integers_travel_as_twos_complement():
    m = spb.decode_payload(spb.encode_payload([spb.MetricOut(-1, spb.INT8, name="m")], 0, 0)).metrics[0]
    assert m.int_value == 0xFFFFFFFF
    m = spb.decode_payload(spb.encode_payload([spb.MetricOut(-1, spb.INT64, name="m")], 0, 0)).metrics[0]
    assert m.long_value == 2**64 - 1


def test_non_numbers_are_refused():
    m = spb.decode_payload(spb.encode_payload([spb.MetricOut("hi", spb.STRING, name="m")], 0, 0)).metrics[0]
    with pytest.raises(spb.SparkplugError, match="String is not a number"):
        spb.metric_number(m, spb.STRING)
    m = pb.Payload.Metric(name="m", datatype=spb.DOUBLE)
    with pytest.raises(spb.SparkplugError, match="no value"):
        spb.metric_number(m, spb.DOUBLE)


def test_quality_property():
    m = pb.Payload.Metric(name="m", datatype=spb.DOUBLE, double_value=1.0)
    assert spb.metric_quality(m) == 0
    for word, code in ((192, 0), (64, 1), (0, 2), (216, 0), (28, 2)):
        m.properties.Clear()
        m.properties.keys.append("Quality")
        m.properties.values.add(type=spb.INT32, int_value=word)
        assert spb.metric_quality(m) == code


def test_garbage_is_not_a_payload():
    with pytest.raises(spb.SparkplugError):
        spb.decode_payload(b"\xff\xff\xff\xff not protobuf")


@pytest.mark.parametrize(("topic", "parsed"), [
    ("spBv1.0/ref/NBIRTH/L1-coat-c", spb.SparkplugTopic("ref", "NBIRTH", "L1-coat-c")),
    ("spBv1.0/ref/DDATA/L1-coat-c/coater", spb.SparkplugTopic("ref", "DDATA", "L1-coat-c", "coater")),
    ("spBv1.0/ref/NCMD/n1", spb.SparkplugTopic("ref", "NCMD", "n1")),
])
def test_topics(topic, parsed):
    assert spb.parse_topic(topic) == parsed
    assert str(parsed) == topic


@pytest.mark.parametrize("topic", ["spBv1.0/ref/NDATA/n1/dev", "spBv1.0/ref/DDATA/n1", "spBv1.0/STATE/host",
                                   "spBv1.0/ref/XDATA/n1", "gigapulse/ref/a/b", "spBv1.0//NDATA/n1"])
def test_bad_topics(topic):
    with pytest.raises(spb.SparkplugError):
        spb.parse_topic(topic)


def test_rebirth_request_and_seq_wrap():
    p = spb.decode_payload(spb.rebirth_request(42))
    assert not p.HasField("seq")
    assert (p.metrics[0].name, p.metrics[0].datatype, p.metrics[0].boolean_value) == (spb.REBIRTH_METRIC,
                                                                                      spb.BOOLEAN, True)
    assert [spb.next_seq(s) for s in (0, 254, 255)] == [1, 255, 0]
