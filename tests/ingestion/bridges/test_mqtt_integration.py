"""The MQTT bridge into the lake, for real: Mosquitto, ``gigapulse bridge mqtt``, Kafka, the stream.

Mosquitto runs on a free loopback port (``tests/ingestion/bridges/mosquitto.py``); the bridge runs as its
own process into the session's Kafka broker, on fresh topics, with its health endpoint on, so the test
stops it (SIGTERM) once ``/status`` counts every value in; a stream worker then drains the topics into a
lake, which must hold exactly what was published (count and content), plus the dead letters and the
bad-quality marks the protocol calls for.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
import yaml

from ingestion.bridges import sparkplug as spb
from ingestion.bridges.config import GENERATORS
from ingestion.bridges.mqtt_server import MqttPlantPublisher
from ingestion.simulator import PlantSimulator
from schemas.asset_model import load_plant
from tests.conftest import free_port
from tests.ingestion.bridges.mosquitto import mosquitto  # noqa: F401  (the fixture)
from tests.transforms.support import drain, fresh_topics, publish_assets, stream_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
START = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def plant():
    return load_plant("reference")


def _config(plant, protocol: str, server, path: Path) -> Path:
    generate, model = GENERATORS[protocol]
    raw = generate(plant, plant.sensors, "reference")
    raw["broker"] = {**raw["broker"], "host": server.host, "port": server.port}
    model.model_validate(raw)
    path.write_text(yaml.safe_dump(raw))
    return path


class BridgeProcess:
    """``gigapulse bridge mqtt`` as a child process, watched through its /status endpoint."""

    def __init__(self, config: Path, env: dict[str, str], log: Path):
        self.health = free_port()
        self.log = log
        env = {**env, "GIGAPULSE_BRIDGE_HEALTH_PORT": str(self.health)}
        with open(log, "w") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen([sys.executable, "-m", "gigapulse.cli", "bridge", "mqtt", "--config",
                                          str(config)], env=env, stdout=out, stderr=subprocess.STDOUT, text=True)

    def wait_subscribed(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while "subscribed to" not in self.log.read_text():
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the bridge did not subscribe: " + self.log.read_text()[-3000:]
            time.sleep(0.1)

    def status(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.health}/status", timeout=5) as r:
            return json.loads(r.read())

    def wait_counts(self, received: int, rejected: int, timeout_s: float = 60) -> dict:
        deadline = time.monotonic() + timeout_s
        stats: dict = {}
        while time.monotonic() < deadline:
            stats = self.status()["stats"]
            if stats["in"] >= received and stats["rejected"] >= rejected:
                return stats
            time.sleep(0.2)
        raise AssertionError(f"bridge counters {stats}, expected in {received}, rejected {rejected}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(60) == 0, self.log.read_text()[-3000:]


def _lake(lake: Path, table: str, columns: str) -> list[tuple]:
    if not list((lake / table).rglob("*.parquet")):
        return []
    return duckdb.connect().execute(f"SELECT {columns} FROM read_parquet(?, hive_partitioning = true)",
                                    [str(lake / table / "**" / "*.parquet")]).fetchall()


def _readings(lake: Path) -> list[tuple[str, int, float, int]]:
    return [(s, int(ms), v, q) for s, ms, v, q in _lake(lake, "readings", "sensor_id, epoch_ms(ts), value, quality")]


def _published(plant, seconds: float, pub: MqttPlantPublisher) -> list[tuple[str, int, float, int]]:
    sent = []
    for tick in PlantSimulator(plant, seed=11, start=START).run(seconds):
        pub.publish_frames(tick.frames)
        for f in tick.frames:
            for i, t, v, q in zip(f.idx.tolist(), f.ts_ms.tolist(), f.value.tolist(), f.quality.tolist(), strict=True):
                sent.append((f.sensors[i], t, v, q))
    return sent


def _setup(bootstrap, tmp_path, plant, prefix):
    names = fresh_topics(bootstrap, prefix)
    publish_assets(bootstrap, names["assets"], plant)
    env = stream_env(bootstrap, tmp_path / "data", f"g-{prefix}", GIGAPULSE_BRIDGE_READINGS_TOPIC=names["readings"],
                     GIGAPULSE_BRIDGE_DLQ_TOPIC=names["dlq"], GIGAPULSE_BRIDGE_BUFFER_DIR=str(tmp_path / "buf"))
    return names, env


def test_uns_into_the_lake_with_its_dead_letters(bootstrap, tmp_path, plant, mosquitto):  # noqa: F811
    names, env = _setup(bootstrap, tmp_path, plant, "mqtt-uns")
    bridge = BridgeProcess(_config(plant, "mqtt", mosquitto, tmp_path / "mqtt.yaml"), env, tmp_path / "bridge.log")
    try:
        bridge.wait_subscribed()
        pub = MqttPlantPublisher(plant, mosquitto.host, mosquitto.port, mode="uns")
        sent = _published(plant, 2, pub)
        pub._send(plant.sensors[0].path, b"{broken json")
        pub._send("gigapulse/ref/no/such/sensor", b"1.0")
        pub.close()
        stats = bridge.wait_counts(len(sent), 2)
    finally:
        bridge.stop()
    assert stats["in"] == len(sent) and stats["rejected"] == 2
    res = drain(names, env)
    assert res.returncode == 0, res.stderr[-3000:]
    lake = tmp_path / "data" / "lake"
    assert sorted(_readings(lake)) == sorted(sent)
    letters = sorted(_lake(lake, "dead_letters", "reason, stage"))
    assert letters == [("not_json", "bridge"), ("unknown_sensor", "bridge")]


def test_sparkplug_into_the_lake_with_death_gap_alias_and_bad_payload(bootstrap, tmp_path, plant, mosquitto):  # noqa: F811
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    names, env = _setup(bootstrap, tmp_path, plant, "mqtt-spb")
    bridge = BridgeProcess(_config(plant, "sparkplug", mosquitto, tmp_path / "spb.yaml"), env, tmp_path / "bridge.log")
    commands: list[str] = []
    edge = paho.Client(CallbackAPIVersion.VERSION2, client_id="edge-x", protocol=paho.MQTTv5)
    edge.on_message = lambda c, u, msg: commands.append(msg.topic)
    edge.connect(mosquitto.host, mosquitto.port)
    edge.loop_start()
    edge.subscribe("spBv1.0/ref/NCMD/edge-x", qos=1)
    try:
        bridge.wait_subscribed()
        pub = MqttPlantPublisher(plant, mosquitto.host, mosquitto.port, mode="sparkplug")
        sent = _published(plant, 5, pub)
        pub.close()  # each node's NDEATH: every sensor marked bad with its last value
        # a scripted edge node with no sensors of its own: a bad payload, a gap, an unknown alias
        base, now = "spBv1.0/ref", 1_767_600_000_000
        for topic, payload in [
            (f"{base}/NBIRTH/edge-x", spb.encode_payload([spb.MetricOut(0, spb.INT64, name="bdSeq")], now, 0)),
            (f"{base}/NDATA/edge-x", b"\x12\xff\xff not protobuf"),
            (f"{base}/NDATA/edge-x", spb.encode_payload([], now, 5)),
            (f"{base}/NDATA/edge-x", spb.encode_payload([spb.MetricOut(1.0, spb.DOUBLE, alias=9)], now, 6)),
        ]:
            edge.publish(topic, payload, qos=1).wait_for_publish(5)
        last = {}
        for s, _, v, q in sent:
            if q != 2:  # a bad reading is no known value
                last[s] = v
        stats = bridge.wait_counts(len(sent) + len(last), 3)
        deadline = time.monotonic() + 10
        while not commands and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        edge.loop_stop()
        edge.disconnect()
        bridge.stop()
    assert commands and commands[0] == "spBv1.0/ref/NCMD/edge-x"  # the rebirth request
    assert stats["in"] == len(sent) + len(last) and stats["rejected"] == 3 and stats["marked_bad"] == len(last)
    res = drain(names, env)
    assert res.returncode == 0, res.stderr[-3000:]
    lake = tmp_path / "data" / "lake"
    rows = _readings(lake)
    assert len(rows) == len(sent) + len(last)
    published = set(sent)
    marks = [r for r in rows if r not in published]
    assert sorted((s, v, q) for s, _, v, q in marks) == sorted((s, v, 2) for s, v in last.items())
    assert sorted(r for r in rows if r in published) == sorted(sent)
    letters = sorted(_lake(lake, "dead_letters", "reason, stage"))
    assert letters == [("bad_payload", "bridge"), ("sequence_gap", "bridge"), ("unknown_alias", "bridge")]
