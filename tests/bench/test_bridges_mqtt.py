"""The MQTT bridge bench, small: pre-filled sessions, ours into Kafka and the ceiling, every value accounted for."""

from __future__ import annotations

import pytest

from gigapulse.bench.bridges_mqtt import BridgeMqttOptions, run_bridges_mqtt

pytestmark = pytest.mark.timeout(180)


def test_small_run_moves_every_value_into_kafka():
    report = run_bridges_mqtt(BridgeMqttOptions(runs=1, sim_s=2.0))
    (run,) = report["runs"]
    sink = run["counters"]["sink"]
    assert run["values"] > 10_000
    assert sink["in"] == sink["out"] == run["values"] and sink["rejected"] == 0 and sink["buffered"] == 0
    assert run["counters"]["sparkplug"]["sequence_gaps"] == 0
    assert run["ours_values_per_s"] > 0 and run["ceiling_values_per_s"] > 0
    assert "ours: Mosquitto → bridge → Kafka (sparkplug)" in report["table"]
