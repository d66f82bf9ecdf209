"""The MQTT bridge's decoders and configuration, against a recording fake of the sink (no broker)."""

from __future__ import annotations

import json

import pytest

from ingestion.bridges import mqtt
from ingestion.bridges import sparkplug as spb
from ingestion.bridges.config import GENERATORS, BridgeConfigError, MqttConfig, dump_config, load_config
from schemas.asset_model import load_plant
from schemas.contracts import Reason
from tests.ingestion.bridges.recording_sink import RecordingSink

NOW = 1_767_225_600_000


@pytest.fixture(scope="module")
def plant():
    return load_plant("reference")


@pytest.fixture(scope="module")
def book(plant):
    return mqtt.MqttAddressBook.from_plant(plant)


@pytest.fixture(scope="module")
def station(plant):
    """The first station's sensors: (site, station, equipment, [(metric name, sensor id)])."""
    first = plant.sensors[0]
    ours = [e for e in plant.sensors if e.station == first.station]
    return first.site, first.station, first.equipment, [(e.path.rsplit("/", 1)[-1], e.sensor_id) for e in ours]


# -- Unified Namespace --------------------------------------------------------------------------------


def test_uns_json_and_bare_numbers(plant, book):
    sink = RecordingSink()
    dec = mqtt.UnsDecoder(book, sink, clock=lambda: NOW)
    a, b = plant.sensors[0], plant.sensors[1]
    assert dec.handle(a.path, json.dumps({"value": 1.25, "ts": NOW - 5, "quality": "uncertain"}).encode())
    assert dec.handle(b.path, b"42")
    assert dec.handle(b.path, b'{"value": 3}')
    assert sink.readings == [(a.sensor_id, NOW - 5, 1.25, 1), (b.sensor_id, NOW, 42.0, 0), (b.sensor_id, NOW, 3.0, 0)]
    assert sink.rejects == []


@pytest.mark.parametrize(("payload", "reason"), [
    (b"{not json", Reason.NOT_JSON), (b"\xff\xfe", Reason.NOT_JSON), (b'"text"', Reason.NOT_OBJECT),
    (b'{"ts": 1}', Reason.MISSING_FIELD), (b'{"value": "1.0"}', Reason.WRONG_TYPE),
    (b'{"value": 1, "ts": "yesterday"}', Reason.BAD_TIMESTAMP), (b'{"value": 1, "quality": "meh"}', Reason.BAD_VALUE),
])
def test_uns_bad_payloads_are_dead_letters(plant, book, payload, reason):
    sink = RecordingSink()
    assert not mqtt.UnsDecoder(book, sink, clock=lambda: NOW).handle(plant.sensors[0].path, payload)
    assert sink.readings == []
    assert [(r[0], r[2]) for r in sink.rejects] == [(reason, payload)]


def test_uns_unknown_topic(book):
    sink = RecordingSink()
    assert not mqtt.UnsDecoder(book, sink).handle("gigapulse/ref/nowhere/x", b"1")
    assert sink.reasons() == [Reason.UNKNOWN_SENSOR]
    assert sink.rejects[0][3] == "gigapulse/ref/nowhere/x"


# -- Sparkplug B --------------------------------------------------------------------------------------


class Node:
    """A scripted edge node: the bytes a real one would publish, with its own sequence numbers."""

    def __init__(self, site, station, equipment, metrics, bd_seq=0):
        self.group, self.node, self.device = site, station, equipment
        self.metrics = metrics  # [(name, sensor_id)]
        self.seq = 0
        self.bd_seq = bd_seq

    def _next(self):
        s = self.seq
        self.seq = spb.next_seq(self.seq)
        return s

    def topic(self, mtype, device=True):
        return f"spBv1.0/{self.group}/{mtype}/{self.node}" + (f"/{self.device}" if device else "")

    def nbirth(self, ts=NOW):
        self.seq = 0
        out = [spb.MetricOut(self.bd_seq, spb.INT64, name="bdSeq"),
               spb.MetricOut(False, spb.BOOLEAN, name="Node Control/Rebirth")]
        return self.topic("NBIRTH", device=False), spb.encode_payload(out, ts, self._next())

    def dbirth(self, values, ts=NOW):
        out = [spb.MetricOut(v, spb.DOUBLE, name=n, alias=i + 1) for i, ((n, _), v) in enumerate(zip(self.metrics,
                                                                                                     values, strict=True))]
        return self.topic("DBIRTH"), spb.encode_payload(out, ts, self._next())

    def ddata(self, by_alias, ts=NOW, metric_ts=None):
        out = [spb.MetricOut(v, spb.DOUBLE, alias=a, ts_ms=metric_ts) for a, v in by_alias.items()]
        return self.topic("DDATA"), spb.encode_payload(out, ts, self._next())

    def ndeath(self):
        return self.topic("NDEATH", device=False), spb.encode_payload(
            [spb.MetricOut(self.bd_seq, spb.INT64, name="bdSeq")], NOW - 60_000, None)

    def ddeath(self, ts=NOW):
        return self.topic("DDEATH"), spb.encode_payload([], ts, self._next())


def host(book, sink):
    sent = []
    clock = {"t": 0.0}
    h = mqtt.SparkplugHost(book, sink, lambda t, p: sent.append((t, spb.decode_payload(p))),
                           clock=lambda: NOW + 1000, monotonic=lambda: clock["t"])
    return h, sent, clock


@pytest.fixture
def scripted(station):
    site, st, eq, metrics = station
    return Node(site, st, eq, metrics[:3])


def test_birth_values_then_data_by_alias(book, scripted):
    sink = RecordingSink()
    h, sent, _ = host(book, sink)
    h.handle(*scripted.nbirth())
    h.handle(*scripted.dbirth([1.0, 2.0, 3.0], ts=NOW - 10))
    h.handle(*scripted.ddata({1: 1.5, 3: 3.5}, ts=NOW, metric_ts=NOW + 7))
    h.handle(*scripted.ddata({2: 2.5}, ts=NOW + 100))
    ids = [s for _, s in scripted.metrics]
    assert sink.readings == [(ids[0], NOW - 10, 1.0, 0), (ids[1], NOW - 10, 2.0, 0), (ids[2], NOW - 10, 3.0, 0),
                             (ids[0], NOW + 7, 1.5, 0), (ids[2], NOW + 7, 3.5, 0), (ids[1], NOW + 100, 2.5, 0)]
    assert sink.rejects == [] and sent == []
    assert h.counters.births == 2 and h.counters.sequence_gaps == 0


def test_sequence_wraps_without_a_gap(book, scripted):
    sink = RecordingSink()
    h, sent, _ = host(book, sink)
    h.handle(*scripted.nbirth())
    h.handle(*scripted.dbirth([0.0, 0.0, 0.0]))
    for i in range(600):
        h.handle(*scripted.ddata({1: float(i)}))
    assert sink.rejects == [] and sent == []
    assert len(sink.readings) == 603


def test_sequence_gap_is_a_dead_letter_and_a_rebirth_request(book, scripted):
    sink = RecordingSink()
    h, sent, _ = host(book, sink)
    h.handle(*scripted.nbirth())
    h.handle(*scripted.dbirth([0.0, 0.0, 0.0]))
    scripted.ddata({1: 1.0})  # published, lost upstream of the bridge
    h.handle(*scripted.ddata({1: 2.0}))
    assert sink.reasons() == [Reason.SEQUENCE_GAP]
    assert "expected seq 2, got 3" in sink.rejects[0][1]
    assert sink.readings[-1][2] == 2.0  # the message that shows the gap still counts
    (topic, cmd), = sent
    assert topic == f"spBv1.0/{scripted.group}/NCMD/{scripted.node}"
    assert (cmd.metrics[0].name, cmd.metrics[0].boolean_value) == ("Node Control/Rebirth", True)
    # the node answers: births again, sequence from 0, no further gap
    h.handle(*scripted.nbirth())
    h.handle(*scripted.dbirth([5.0, 5.0, 5.0]))
    h.handle(*scripted.ddata({1: 6.0}))
    assert sink.reasons() == [Reason.SEQUENCE_GAP] and len(sent) == 1


def test_unknown_alias_and_data_before_birth(book, scripted):
    sink = RecordingSink()
    h, sent, clock = host(book, sink)
    h.handle(*scripted.nbirth())
    h.handle(*scripted.dbirth([0.0, 0.0, 0.0]))
    h.handle(*scripted.ddata({1: 1.0, 99: 9.0}))
    assert sink.reasons() == [Reason.UNKNOWN_ALIAS] and "[99]" in sink.rejects[0][1]
    assert sink.readings[-1][2] == 1.0
    assert len(sent) == 1
    # a node the host never saw born: asked for a rebirth, but not more than once per REBIRTH_RETRY_S
    other = Node(scripted.group, "other-node", "eq", [])
    h.handle(*other.ddata({1: 1.0}))
    h.handle(*other.ddata({1: 1.0}))
    assert len(sent) == 2
    clock["t"] += mqtt.REBIRTH_RETRY_S + 1
    h.handle(*other.ddata({1: 1.0}))
    assert len(sent) == 3
    assert sink.reasons() == [Reason.UNKNOWN_ALIAS] * 4


def test_bad_protobuf_is_a_dead_letter_with_its_bytes(book, scripted):
    sink = RecordingSink()
    h, _, _ = host(book, sink)
    junk = b"\x0a\xff\xff\xff\xff\xff garbage"
    h.handle(scripted.topic("DDATA"), junk)
    assert [(r[0], r[2]) for r in sink.rejects] == [(Reason.BAD_PAYLOAD, junk)]
    h.handle("spBv1.0/ref/DDATA/only-node", b"")
    assert sink.reasons()[-1] == Reason.BAD_PAYLOAD


def test_node_death_marks_its_sensors_bad_until_rebirth(book, scripted):
    sink = RecordingSink()
    h, _, _ = host(book, sink)
    h.handle(*scripted.nbirth())
    h.handle(*scripted.dbirth([1.0, 2.0, 3.0]))
    stale = Node(scripted.group, scripted.node, scripted.device, [], bd_seq=scripted.bd_seq + 7)
    h.handle(*stale.ndeath())  # an older session's will: not this birth's
    assert sink.bad == [] and h.counters.stale_deaths == 1
    h.handle(*scripted.ndeath())
    assert sink.bad == [(sorted(s for _, s in scripted.metrics), NOW + 1000)]
    assert not h.node_state(scripted.group, scripted.node).born
    scripted.bd_seq += 1
    h.handle(*scripted.nbirth())
    h.handle(*scripted.dbirth([1.0, 2.0, 3.0]))
    assert sink.rejects == []


def test_device_death(book, scripted):
    sink = RecordingSink()
    h, sent, _ = host(book, sink)
    h.handle(*scripted.nbirth())
    h.handle(*scripted.dbirth([1.0, 2.0, 3.0]))
    h.handle(*scripted.ddeath(ts=NOW + 50))
    assert sink.bad == [(sorted(s for _, s in scripted.metrics), NOW + 50)]
    assert sink.rejects == [] and sent == []


def test_unmapped_birth_metrics_and_wrong_types(book, scripted):
    sink = RecordingSink()
    h, _, _ = host(book, sink)
    h.handle(*scripted.nbirth())
    name0, sensor0 = scripted.metrics[0]
    birth = spb.encode_payload([spb.MetricOut(1.0, spb.DOUBLE, name=name0, alias=1),
                                spb.MetricOut(2.0, spb.DOUBLE, name="no_such_sensor", alias=2),
                                spb.MetricOut("v1.2", spb.STRING, name="Properties/Firmware", alias=3)], NOW, 1)
    h.handle(scripted.topic("DBIRTH"), birth)
    assert sink.reasons() == [Reason.UNKNOWN_SENSOR] and "no_such_sensor" in sink.rejects[0][1]
    assert "Properties/" not in sink.rejects[0][1]  # the device's own properties are expected, not sensors
    assert sink.readings == [(sensor0, NOW, 1.0, 0)]
    data = spb.encode_payload([spb.MetricOut(5.0, spb.DOUBLE, alias=2), spb.MetricOut("x", spb.STRING, alias=1)],
                              NOW, 2)
    h.handle(scripted.topic("DDATA"), data)
    assert sink.reasons() == [Reason.UNKNOWN_SENSOR, Reason.WRONG_TYPE]
    assert h.counters.unmapped_metrics == 1


def test_node_level_metrics_map_to_the_station(book, station):
    site, st, _, metrics = station
    sink = RecordingSink()
    h, _, _ = host(book, sink)
    name, sensor = metrics[0]
    payload = spb.encode_payload([spb.MetricOut(0, spb.INT64, name="bdSeq"),
                                  spb.MetricOut(7, spb.INT32, name=name, alias=1)], NOW, 0)
    h.handle(f"spBv1.0/{site}/NBIRTH/{st}", payload)
    h.handle(f"spBv1.0/{site}/NDATA/{st}", spb.encode_payload([spb.MetricOut(-3, spb.INT32, alias=1)], NOW + 1, 1))
    assert sink.readings == [(sensor, NOW, 7.0, 0), (sensor, NOW + 1, -3.0, 0)]


def test_commands_are_ignored(book, scripted):
    sink = RecordingSink()
    h, sent, _ = host(book, sink)
    h.handle(f"spBv1.0/{scripted.group}/NCMD/{scripted.node}", spb.rebirth_request(NOW))
    assert sink.rejects == [] and sent == [] and h.counters.commands_ignored == 1


# -- configuration -----------------------------------------------------------------------------------


def test_generated_configs_load_and_subscribe(plant, tmp_path):
    for protocol, expected in (("mqtt", ["gigapulse/ref/#", "spBv1.0/ref/#"]), ("sparkplug", ["spBv1.0/ref/#"])):
        generate, model = GENERATORS[protocol]
        path = tmp_path / f"{protocol}.yaml"
        path.write_text(dump_config(model.model_validate(generate(plant, plant.sensors, "reference"))))
        config = load_config(path, MqttConfig)
        assert config.plant == "reference" and config.kind == "mqtt"
        assert sorted(config.subscriptions(plant)) == sorted(expected)
        assert config.client_id() == "gigapulse-mqtt-reference"


def test_defaults_follow_the_plant(plant, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("kind: mqtt\n")
    assert load_config(path, MqttConfig).subscriptions(plant) == ["gigapulse/#", "spBv1.0/ref/#"]


@pytest.mark.parametrize(("text", "message"), [
    ("broker: {port: 0}", "broker.port"),
    ("modes: [uns, opcua]", "modes.1"),
    ("modes: [uns, uns]", "at most once"),
    ("brokr: {}", "brokr"),
    ("broker: {password: hunter2}", "broker.password"),
    ("sparkplug: {host_id: a/b}", "sparkplug.host_id"),
    ("- a list", "mapping"),
    ("a: [", "not valid YAML"),
])
def test_bad_configs_are_one_line(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(BridgeConfigError) as err:
        load_config(path, MqttConfig)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert "hunter2" not in str(err.value)


def test_password_from_env_or_file_never_in_the_config(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    path = tmp_path / "c.yaml"
    path.write_text(f"broker: {{username: bridge, password_file: {secret}}}")
    config = load_config(path, MqttConfig)
    assert mqtt.broker_password(config, {}).get_secret_value() == "s3cret"
    assert mqtt.broker_password(config, {mqtt.PASSWORD_ENV: "env"}).get_secret_value() == "env"
    assert "s3cret" not in repr(mqtt.broker_password(config, {}))
    assert mqtt.broker_password(MqttConfig(), {}) is None
    missing = MqttConfig.model_validate({"broker": {"password_file": str(tmp_path / "nope")}})
    with pytest.raises(BridgeConfigError, match="broker.password_file"):
        mqtt.broker_password(missing, {})
