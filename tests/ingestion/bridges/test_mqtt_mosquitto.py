"""The MQTT bridge against a real Mosquitto: the simulated plant published as UNS JSON and as Sparkplug B,
read by the bridge into a recording sink; dead letters, rebirth requests and deaths over the wire."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from ingestion.bridges import mqtt
from ingestion.bridges import sparkplug as spb
from ingestion.bridges.config import MqttConfig
from ingestion.bridges.mqtt_server import MqttPlantPublisher
from ingestion.simulator import PlantSimulator
from schemas.asset_model import load_plant
from schemas.contracts import Reason
from tests.ingestion.bridges.mosquitto import mosquitto  # noqa: F401  (the fixture)
from tests.ingestion.bridges.recording_sink import RecordingSink

pytestmark = pytest.mark.timeout(90)
START = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def plant():
    return load_plant("reference")


def _bridge(server, plant, modes, sink, **sparkplug):
    config = MqttConfig.model_validate({
        "broker": {"host": server.host, "port": server.port, "client_id": f"bridge-{time.monotonic_ns()}"},
        "modes": modes, "sparkplug": sparkplug})
    bridge = mqtt.MqttBridge(config, plant, sink)
    bridge.start()
    assert bridge.wait_connected(10), "the bridge did not subscribe"
    return bridge


def _wait(predicate, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _published(plant, seconds, publisher):
    """Run the simulator, publish every frame, and return the set of readings sent."""
    sent = []
    for tick in PlantSimulator(plant, seed=7, start=START).run(seconds):
        publisher.publish_frames(tick.frames)
        for f in tick.frames:
            for i, t, v, q in zip(f.idx.tolist(), f.ts_ms.tolist(), f.value.tolist(), f.quality.tolist(), strict=True):
                sent.append((f.sensors[i], t, v, q))
    return sent


@pytest.mark.parametrize("mode", ["uns", "sparkplug"])
def test_the_plant_over_mqtt_arrives_whole(mosquitto, plant, mode):  # noqa: F811
    sink = RecordingSink()
    bridge = _bridge(mosquitto, plant, [mode], sink)
    try:
        pub = MqttPlantPublisher(plant, mosquitto.host, mosquitto.port, mode=mode)
        sent = _published(plant, 3 if mode == "uns" else 10, pub)
        stats = pub.close()
        assert stats.readings == len(sent) > 1000
        assert _wait(lambda: len(sink.readings) >= len(sent)), f"{len(sink.readings)} of {len(sent)} arrived"
        if mode == "sparkplug":  # the nodes' deaths come last
            assert _wait(lambda: bridge.sparkplug.counters.deaths >= len(pub._nodes))
        time.sleep(0.3)
    finally:
        bridge.stop()
    assert sorted(sink.readings) == sorted(sent)
    assert sink.rejects == []
    if mode == "sparkplug":
        c = bridge.sparkplug.counters
        assert c.sequence_gaps == 0 and c.rebirths_requested == 0 and c.births == 2 * len(pub._nodes)
        assert c.null_metrics == sum(len(n.names) for n in pub._nodes.values())  # births carry nulls
        assert c.deaths == len(pub._nodes)  # close() sent every node's NDEATH
        assert bridge.counters.connects == 1


def _client(server):
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{time.monotonic_ns()}", protocol=paho.MQTTv5)
    c.connect(server.host, server.port)
    c.loop_start()
    return c


def test_bad_payload_unknown_alias_gap_rebirth_and_death_over_the_wire(mosquitto, plant):  # noqa: F811
    sink = RecordingSink()
    bridge = _bridge(mosquitto, plant, ["sparkplug"], sink)
    commands: list[tuple[str, bytes]] = []
    got_command = threading.Event()
    edge = _client(mosquitto)

    def on_message(client, userdata, msg):
        commands.append((msg.topic, msg.payload))
        got_command.set()

    edge.on_message = on_message
    first = plant.sensors[0]
    ours = [e for e in plant.sensors if e.station == first.station][:2]
    group, node, device = first.site, first.station, first.equipment
    edge.subscribe(f"spBv1.0/{group}/NCMD/{node}", qos=1)
    time.sleep(0.2)
    base = f"spBv1.0/{group}"
    now = 1_767_600_000_000

    def send(mtype, payload, dev=True):
        topic = f"{base}/{mtype}/{node}" + (f"/{device}" if dev else "")
        edge.publish(topic, payload, qos=1).wait_for_publish(5)

    try:
        send("NBIRTH", spb.encode_payload([spb.MetricOut(3, spb.INT64, name="bdSeq")], now, 0), dev=False)
        send("DBIRTH", spb.encode_payload([spb.MetricOut(1.0, spb.DOUBLE, name=e.path.rsplit("/", 1)[-1], alias=i + 1)
                                           for i, e in enumerate(ours)], now, 1))
        send("DDATA", b"\x12\xff\xff not protobuf")                                               # bad payload
        send("DDATA", spb.encode_payload([spb.MetricOut(2.0, spb.DOUBLE, alias=1)], now + 1, 2))
        assert _wait(lambda: len(sink.rejects) >= 1)
        send("DDATA", spb.encode_payload([spb.MetricOut(4.0, spb.DOUBLE, alias=1)], now + 2, 4))  # seq 3 lost
        assert got_command.wait(10), "no rebirth request"
        send("DDATA", spb.encode_payload([spb.MetricOut(5.0, spb.DOUBLE, alias=77)], now + 3, 5))  # unknown alias
        assert _wait(lambda: len(sink.rejects) >= 3)
        send("NDEATH", spb.encode_payload([spb.MetricOut(3, spb.INT64, name="bdSeq")], now, None), dev=False)
        assert _wait(lambda: sink.bad)
    finally:
        edge.loop_stop()
        edge.disconnect()
        bridge.stop()
    assert sink.reasons() == [Reason.BAD_PAYLOAD, Reason.SEQUENCE_GAP, Reason.UNKNOWN_ALIAS]
    assert sink.rejects[0][2] == b"\x12\xff\xff not protobuf"
    assert "expected seq 3, got 4" in sink.rejects[1][1]
    topic, payload = commands[0]
    assert topic == f"{base}/NCMD/{node}"
    metric = spb.decode_payload(payload).metrics[0]
    assert (metric.name, metric.boolean_value) == ("Node Control/Rebirth", True)
    assert [(s, t, v) for s, t, v, _ in sink.readings] == [(ours[0].sensor_id, now, 1.0), (ours[1].sensor_id, now, 1.0),
                                                           (ours[0].sensor_id, now + 1, 2.0), (ours[0].sensor_id, now + 2, 4.0)]
    assert sink.bad[0][0] == sorted(e.sensor_id for e in ours)


def test_host_state_is_announced_and_retained(mosquitto, plant):  # noqa: F811
    sink = RecordingSink()
    bridge = _bridge(mosquitto, plant, ["sparkplug"], sink, host_id="gigapulse")
    seen: list[bytes] = []
    watcher = _client(mosquitto)
    watcher.on_message = lambda c, u, msg: seen.append(msg.payload)
    watcher.subscribe("spBv1.0/STATE/gigapulse", qos=1)
    try:
        assert _wait(lambda: seen, 10)
        bridge.stop()
        assert _wait(lambda: len(seen) >= 2, 10)
    finally:
        watcher.loop_stop()
        watcher.disconnect()
    import json
    assert [json.loads(p)["online"] for p in seen[:2]] == [True, False]


def test_the_bridge_reconnects_after_the_broker_comes_back(tmp_path, plant):
    from tests.ingestion.bridges.mosquitto import running_mosquitto

    sink = RecordingSink()
    entry = plant.sensors[0]
    with running_mosquitto(tmp_path) as first:
        config = MqttConfig.model_validate({
            "broker": {"host": first.host, "port": first.port, "client_id": "bridge-reconnect",
                       "reconnect_min_s": 1, "reconnect_max_s": 2}, "modes": ["uns"]})
        bridge = mqtt.MqttBridge(config, plant, sink)
        bridge.start()
        assert bridge.wait_connected(10)
    try:
        assert _wait(lambda: bridge.counters.disconnects == 1, 10)
        with running_mosquitto(tmp_path, port=first.port):
            assert _wait(lambda: bridge.counters.connects == 2, 20), "no reconnection"
            time.sleep(0.2)  # the subscriptions of the new session
            edge = _client(first)
            edge.publish(entry.path, b'{"value": 1.5, "ts": 1767600000000}', qos=1).wait_for_publish(5)
            assert _wait(lambda: sink.readings, 10)
            edge.loop_stop()
            edge.disconnect()
    finally:
        bridge.stop()
    assert sink.readings == [(entry.sensor_id, 1767600000000, 1.5, 0)]
