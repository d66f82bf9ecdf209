"""Modbus TCP into the lake, for real: a pymodbus server, ``gigapulse bridge modbus``, Kafka, the stream.

The server is the project's register server (:mod:`ingestion.bridges.modbus_server`) on a free loopback
port, holding known values and counting the reads it answered per unit. The bridge runs as its own
process into the real broker; a stream worker drains the topics into a lake, and the lake must hold, per
sensor, exactly one row per answered read with the value the server held, and one ``source_error``
dead letter per refused read. The outage test stops its own broker for 20 s mid-run: nothing lost,
nothing twice.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
import yaml

from infra import broker, faults
from infra.temporary import temporary_broker
from ingestion.bridges.config import GENERATORS
from ingestion.bridges.modbus import decode_registers
from ingestion.bridges.modbus_server import RegisterStore, ServerThread
from schemas.addresses import modbus_addresses
from schemas.asset_model import load_plant
from tests.conftest import free_port
from tests.transforms.support import drain, fresh_topics, publish_assets, stream_env

pytestmark = pytest.mark.integration

OUTAGE_S = 20.0
#: Units bridged: the incomers (one float64 meter each) and a few stations of float32 sensors.
UNITS = [1, 2, 3, 4, 5, 6]
FAILING_UNIT = 4


@pytest.fixture
def plant():
    return load_plant("legacy")


@pytest.fixture
def store(plant):
    s = RegisterStore(plant)
    for i, e in enumerate(plant.sensors):
        s.set_value(e.sensor_id, 1000.0 + i * 0.25 if not e.is_energy_meter else 123456.789 + i)
    return s


def write_config(plant, port: int, path: Path, interval_s: float) -> Path:
    generate, model = GENERATORS["modbus"]
    raw = generate(plant, [e for e in plant.sensors if e.protocol == "modbus"], "legacy")
    raw = {**raw, "port": port, "timeout_s": 0.5,
           "blocks": [{**b, "interval_s": interval_s} for b in raw["blocks"] if b["unit"] in UNITS]}
    model.model_validate(raw)
    path.write_text(yaml.safe_dump(raw))
    return path


def bridge(config: Path, env: dict[str, str], duration: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gigapulse.cli", "bridge", "modbus", "--config", str(config),
                             "--duration", duration], env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            text=True)


def counters(log: Path) -> dict[str, int]:
    line = [ln for ln in log.read_text().splitlines() if re.match(r"bridge \S+: in ", ln)][-1]
    return {k: int(v.replace(",", "")) for k, v in re.findall(r"(\w+) ([\d,]+)", line.split(": ", 1)[1])}


def lake_rows(lake: Path) -> list[tuple[str, float, int]]:
    files = str(lake / "readings" / "**" / "*.parquet")
    return duckdb.connect().execute("SELECT sensor_id, value, quality FROM read_parquet(?, hive_partitioning = true)",
                                    [files]).fetchall()


def lake_dead_letters(lake: Path) -> list[tuple[str, str, str]]:
    if not list((lake / "dead_letters").rglob("*.parquet")):
        return []
    files = str(lake / "dead_letters" / "**" / "*.parquet")
    return duckdb.connect().execute("SELECT reason, stage, detail FROM read_parquet(?, hive_partitioning = true)",
                                    [files]).fetchall()


def served_values(plant, store: RegisterStore) -> dict[str, float]:
    """What the server held for each bridged sensor, as its registers decode (float32 rounds)."""
    addrs = modbus_addresses(plant)
    out = {}
    for e in plant.sensors:
        a = addrs[e.sensor_id]
        if e.protocol == "modbus" and a.unit in UNITS:
            out[e.sensor_id] = decode_registers(store.registers[a.unit][a.address:a.address + a.count], a.type)
    return out


def check_lake(plant, store: RegisterStore, lake: Path) -> int:
    """Every answered read is in the lake once per sensor with the served value; returns the row count."""
    addrs = modbus_addresses(plant)
    expected = served_values(plant, store)
    rows = lake_rows(lake)
    per_sensor: dict[str, int] = {}
    for sensor, value, quality in rows:
        assert sensor in expected, sensor
        assert value == expected[sensor] and quality == 0, (sensor, value, expected[sensor])
        per_sensor[sensor] = per_sensor.get(sensor, 0) + 1
    for sensor in expected:
        unit = addrs[sensor].unit
        assert per_sensor.get(sensor, 0) == store.served[unit], (sensor, per_sensor.get(sensor), store.served[unit])
    return len(rows)


def test_modbus_values_reach_the_lake_and_a_read_error_is_a_gap(bootstrap, tmp_path, plant, store):
    store.fail_unit(FAILING_UNIT)
    names = fresh_topics(bootstrap, "modbus")
    publish_assets(bootstrap, names["assets"], plant)
    port = free_port()
    env = stream_env(bootstrap, tmp_path / "data", "g-modbus", GIGAPULSE_BRIDGE_READINGS_TOPIC=names["readings"],
                     GIGAPULSE_BRIDGE_DLQ_TOPIC=names["dlq"], GIGAPULSE_BRIDGE_BUFFER_DIR=str(tmp_path / "buf"))
    log = tmp_path / "bridge.log"
    with ServerThread(store, port=port):
        proc = bridge(write_config(plant, port, tmp_path / "modbus.yaml", 0.25), env, "4s", log)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    got = counters(log)
    res = drain(names, env)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = check_lake(plant, store, tmp_path / "data" / "lake")
    assert rows == got["out"] == got["in"] > 0 and got["buffered"] == 0
    gaps = [d for d in lake_dead_letters(tmp_path / "data" / "lake") if d[0] == "source_error"]
    assert len(gaps) == got["gaps"] == store.refused[FAILING_UNIT] > 0
    failing = [e.sensor_id for e in plant.sensors if modbus_addresses(plant)[e.sensor_id].unit == FAILING_UNIT]
    assert all(stage == "bridge" and "exception response 4" in detail and failing[0] in detail
               for _, stage, detail in gaps)


@pytest.fixture
def own_broker(tmp_path):
    """A broker of this test's own: the test stops and restarts it."""
    with temporary_broker(tmp_path / "kafka") as settings:
        yield settings


def _kill_broker(settings) -> None:
    faults.kill_node(settings, 1, signal.SIGKILL, timeout_s=60)


def _status(port: int) -> dict:
    import urllib.request

    try:
        return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2).read())
    except OSError:
        return {"status": "down", "stats": {"in": 0, "out": 0}}


def _wait_for(predicate, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)


def test_a_kafka_outage_of_20_s_while_bridging_loses_nothing(own_broker, tmp_path, plant, store):
    names = fresh_topics(own_broker.bootstrap, "modbus-outage")
    publish_assets(own_broker.bootstrap, names["assets"], plant)
    port = free_port()
    env = stream_env(own_broker.bootstrap, tmp_path / "data", "g-modbus-outage",
                     GIGAPULSE_BRIDGE_READINGS_TOPIC=names["readings"], GIGAPULSE_BRIDGE_DLQ_TOPIC=names["dlq"],
                     GIGAPULSE_BRIDGE_BUFFER_DIR=str(tmp_path / "buf"), GIGAPULSE_BRIDGE_STALL_S="5",
                     GIGAPULSE_BRIDGE_DRAIN_TIMEOUT_S="40")
    health = free_port()
    env["GIGAPULSE_BRIDGE_HEALTH_PORT"] = str(health)
    log = tmp_path / "bridge.log"
    with ServerThread(store, port=port):
        proc = bridge(write_config(plant, port, tmp_path / "modbus.yaml", 0.5), env, "120s", log)
        try:
            _wait_for(lambda: _status(health)["stats"]["out"] > 0, 30, proc, log)  # forwarding, then the outage
            _kill_broker(own_broker)
            time.sleep(OUTAGE_S / 2)
            assert _status(health)["status"] == "buffering"
            time.sleep(OUTAGE_S / 2)
            broker.start(own_broker)
            before = _status(health)["stats"]["in"]
            _wait_for(lambda: _status(health)["stats"]["in"] > before + 50, 30, proc, log)  # new data after it
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(90) == 0, log.read_text()[-3000:]
    got = counters(log)
    assert got["buffered"] == 0 and got["gaps"] == 0 and got["out"] == got["in"] > 0, got
    res = drain(names, env)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = check_lake(plant, store, tmp_path / "data" / "lake")
    assert rows == got["out"]
    print(f"\nRELIABILITY | modbus bridge, broker SIGKILL for {OUTAGE_S:g} s | served {rows:,} | landed {rows:,} | "
          f"lost 0 | duplicated 0")
