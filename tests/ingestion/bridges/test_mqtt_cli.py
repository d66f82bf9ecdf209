"""``gigapulse bridge config --protocol mqtt|sparkplug``, ``bridge mqtt`` errors, ``simulate --serve mqtt``."""

from __future__ import annotations

import time

import pytest

from ingestion.bridges.config import MqttConfig, load_config
from ingestion.bridges.mqtt import MqttBridge
from schemas.asset_model import load_plant
from tests.cli_support import run_cli
from tests.conftest import free_port
from tests.ingestion.bridges.mosquitto import mosquitto  # noqa: F401  (the fixture)
from tests.ingestion.bridges.recording_sink import RecordingSink


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    return run_cli(argv, capsys)


@pytest.mark.parametrize(("protocol", "modes"), [("mqtt", ["uns", "sparkplug"]), ("sparkplug", ["sparkplug"])])
def test_bridge_config_writes_a_valid_mqtt_file(tmp_path, capsys, protocol, modes):
    out = tmp_path / "mqtt.yaml"
    rc, _, err = run(["bridge", "config", "--plant", "reference", "--protocol", protocol, "--all-sensors",
                      "--out", str(out)], capsys)
    assert rc == 0, err
    cfg = load_config(out, MqttConfig)
    assert cfg.modes == modes and cfg.sparkplug.groups == ["ref"] and cfg.broker.port == 1883


@pytest.mark.parametrize(("argv", "needle"), [
    (["bridge", "config", "--plant", "reference", "--protocol", "mqtt"], "no sensor with protocol mqtt"),
    (["bridge", "mqtt", "--config", "missing.yaml"], "bridge config not found: missing.yaml"),
])
def test_mqtt_user_errors_are_one_line(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = run(argv, capsys)
    assert rc == 1
    assert err.startswith("gigapulse: error:") and err.count("\n") == 1 and needle in err, err


def test_a_bad_mqtt_config_is_one_line_naming_the_field(capsys, tmp_path):
    bad = tmp_path / "mqtt.yaml"
    bad.write_text("kind: mqtt\nmodes: [uns, opcua]\n")
    rc, _, err = run(["bridge", "mqtt", "--config", str(bad)], capsys)
    assert rc == 1 and err.count("\n") == 1 and f"{bad}: modes.1:" in err, err


def test_an_unreadable_password_file_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("GIGAPULSE_MQTT_PASSWORD", raising=False)
    cfg = tmp_path / "mqtt.yaml"
    cfg.write_text(f"kind: mqtt\nbroker: {{username: u, password_file: {tmp_path / 'nope'}}}\n")
    rc, _, err = run(["bridge", "mqtt", "--config", str(cfg)], capsys)
    assert rc == 1 and err.count("\n") == 1 and "broker.password_file: cannot read" in err, err


def test_serve_mqtt_without_a_broker_says_it_needs_one(capsys):
    rc, _, err = run(["simulate", "--serve", "mqtt", "--port", str(free_port()), "--duration", "2s"], capsys)
    assert rc == 1 and err.count("\n") == 1 and "publishes into a broker, it is not one" in err, err


@pytest.mark.parametrize("fmt", ["sparkplug", "uns"])
def test_serve_mqtt_publishes_the_plant_in_real_time(capsys, mosquitto, fmt):  # noqa: F811
    plant = load_plant("reference")
    sink = RecordingSink()
    config = MqttConfig.model_validate({"broker": {"port": mosquitto.port}, "modes": [fmt]})
    bridge = MqttBridge(config, plant, sink)
    bridge.start()
    assert bridge.wait_connected(10)
    try:
        rc, out, err = run(["simulate", "--serve", "mqtt", "--mqtt-format", fmt, "--port", str(mosquitto.port),
                            "--duration", "2s"], capsys)
        assert rc in (0, None), err
        published = int(out.split("published ")[1].split(" values")[0].replace(",", ""))
        nodes = len({e.station for e in plant.sensors}) if fmt == "sparkplug" else 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (len(sink.readings) < published
                                               or (nodes and bridge.sparkplug.counters.deaths < nodes)):
            time.sleep(0.05)
    finally:
        bridge.stop()
    assert published > 5000
    assert len(sink.readings) == published  # (a recording sink keeps the deaths' marks apart, in sink.bad)
    assert sink.rejects == []
    if fmt == "sparkplug":
        assert len(sink.bad) == bridge.sparkplug.counters.deaths == nodes  # each node's NDEATH at the end


def test_the_compose_configuration_loads():
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[3] / "infra" / "bridges" / "mqtt.yaml", MqttConfig)
    assert cfg.broker.host == "mosquitto" and cfg.modes == ["uns", "sparkplug"]
    assert cfg.subscriptions(load_plant(cfg.plant)) == ["gigapulse/ref/#", "spBv1.0/ref/#"]
