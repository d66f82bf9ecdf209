"""Bridge configurations: generated from the asset model, validated, and every problem one line."""

from __future__ import annotations

import pytest
import yaml

from ingestion.bridges.config import GENERATORS, BridgeConfigError, ModbusConfig, dump_config, load_config
from schemas.addresses import modbus_addresses
from schemas.asset_model import load_plant


def write(tmp_path, text: str):
    p = tmp_path / "bridge.yaml"
    p.write_text(text)
    return p


def valid() -> dict:
    return {"kind": "modbus", "plant": "legacy", "port": 5020,
            "blocks": [{"unit": 1, "address": 0, "count": 4,
                        "points": [{"sensor": "leg.L1-mix-c.planetary_speed", "address": 0}]}]}


def test_a_valid_file_loads(tmp_path):
    cfg = load_config(write(tmp_path, yaml.safe_dump(valid())), ModbusConfig)
    assert cfg.blocks[0].points[0].type == "float32" and cfg.bridge_name("modbus") == "modbus-legacy"


@pytest.mark.parametrize(("text", "expected"), [
    ("port: [1\n", "not valid YAML at line"),
    ("- a\n- b\n", "expected a mapping"),
    (yaml.safe_dump({**valid(), "prot": 1}), "prot: unknown key (the ModbusConfig keys are"),
    (yaml.safe_dump({**valid(), "port": "x"}), "port: Input should be a valid integer"),
    (yaml.safe_dump({**valid(), "blocks": [{**valid()["blocks"][0], "count": 1}]}),
     "blocks.0: Value error, points.0 (leg.L1-mix-c.planetary_speed, registers 0..1) lies outside"),
    (yaml.safe_dump({**valid(), "blocks": [{**valid()["blocks"][0], "points": [
        {"sensor": "x", "address": 0, "type": "float16"}]}]}), "blocks.0.points.0.type: Input should be"),
])
def test_every_problem_is_one_line_naming_the_file_and_the_field(tmp_path, text, expected):
    with pytest.raises(BridgeConfigError) as err:
        load_config(write(tmp_path, text), ModbusConfig)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(tmp_path / "bridge.yaml")) and expected in msg, msg


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(BridgeConfigError, match="bridge config not found"):
        load_config(tmp_path / "nope.yaml", ModbusConfig)


def test_the_generated_modbus_config_covers_the_legacy_plants_modbus_sensors(tmp_path):
    plant = load_plant("legacy")
    sensors = [e for e in plant.sensors if e.protocol == "modbus"]
    generate, model = GENERATORS["modbus"]
    cfg = model.model_validate(generate(plant, sensors, "legacy"))
    points = [p for b in cfg.blocks for p in b.points]
    assert sorted(p.sensor for p in points) == sorted(e.sensor_id for e in sensors)
    addrs = modbus_addresses(plant)
    assert all((b.unit, p.address, p.type) == (addrs[p.sensor].unit, addrs[p.sensor].address, addrs[p.sensor].type)
               for b in cfg.blocks for p in b.points)
    again = load_config(write(tmp_path, dump_config(cfg)), ModbusConfig)
    assert again == cfg


def test_modbus_addresses_follow_the_scheme():
    plant = load_plant("legacy")
    addrs = modbus_addresses(plant)
    stations = list(dict.fromkeys(e.station for e in plant.sensors))
    for e in plant.sensors:
        assert addrs[e.sensor_id].unit == stations.index(e.station) + 1
    first = [e for e in plant.sensors if e.station == stations[0]]
    regs = [addrs[e.sensor_id] for e in first]
    assert regs[0].address == 0
    for a, b in zip(regs, regs[1:], strict=False):
        assert b.address == a.address + a.count
    meters = [e for e in plant.sensors if e.is_energy_meter]
    assert meters and all(addrs[e.sensor_id].type == "float64" and addrs[e.sensor_id].count == 4 for e in meters)


def _blocks(*specs):
    return [{"unit": u, "address": 0, "count": 2, "points": [{"sensor": f"s{u}", "address": 0}], **extra}
            for u, extra in specs]


def test_each_endpoint_gets_its_connections_and_a_unit_always_the_same_one():
    cfg = ModbusConfig(host="10.0.0.1", port=502, connections=2,
                       blocks=_blocks((1, {}), (2, {}), (3, {}), (1, {}), (7, {"host": "10.0.0.2"}),
                                      (8, {"host": "10.0.0.2", "port": 5020})))
    assert cfg.links() == {("10.0.0.1", 502, 0): [1, 3], ("10.0.0.1", 502, 1): [2],
                           ("10.0.0.2", 502, 0): [7], ("10.0.0.2", 5020, 0): [8]}
    assert cfg.endpoint(cfg.blocks[4]) == ("10.0.0.2", 502)
    single = ModbusConfig(blocks=_blocks((1, {}), (2, {})))
    assert single.links() == {("127.0.0.1", 502, 0): [1, 2]}  # one connection per endpoint by default
