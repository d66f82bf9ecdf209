"""``gigapulse bench bridges modbus``: its blocks and its figures (a short real run is the smoke test)."""

from __future__ import annotations

import pytest

from gigapulse.bench.bridges import BridgeBenchOptions, CountingSink, bench_blocks, one_run
from ingestion.bridges.config import ModbusConfig
from schemas.asset_model import load_plant


def test_a_hundred_blocks_of_ten_registers_over_the_reference_plants_units():
    plant = load_plant("reference")
    blocks = bench_blocks(plant, 100, 0.1)
    assert len(blocks) == 100
    assert len({b["unit"] for b in blocks}) > 20  # spread over the units, not one unit's registers
    ModbusConfig(plant="reference", blocks=blocks)  # a valid configuration: every point inside its block
    assert all(b["points"] and b["count"] == 10 for b in blocks)


def test_too_many_blocks_for_the_plant_is_one_clear_error():
    from gigapulse.bench.harness import BenchError

    with pytest.raises(BenchError, match="ask for fewer --blocks"):
        bench_blocks(load_plant("legacy"), 10_000, 0.1)


def test_units_are_dealt_over_the_endpoints_each_unit_on_one():
    from gigapulse.bench.bridges import assign_endpoints

    blocks = assign_endpoints(bench_blocks(load_plant("reference"), 100, 0.1), [7001, 7002, 7003])
    port_of: dict[int, set[int]] = {}
    for b in blocks:
        port_of.setdefault(b["unit"], set()).add(b["port"])
    assert all(len(ports) == 1 for ports in port_of.values())
    assert {p for ports in port_of.values() for p in ports} == {7001, 7002, 7003}
    cfg = ModbusConfig(plant="reference", blocks=blocks)
    assert {(h, p) for h, p, _ in cfg.links()} == {("127.0.0.1", p) for p in (7001, 7002, 7003)}


def test_a_short_run_measures_rate_jitter_and_the_ceiling():
    r = one_run(BridgeBenchOptions(blocks=10, rate_hz=5, duration_s=2, warmup_s=1, endpoints=2, peer_s=0.5))
    assert r["target_polls_per_s"] == 50 and r["links"] == 2
    assert 25 < r["polls_per_s"] <= 55
    assert 150 < r["interval_p50_ms"] < 250
    assert r["deviation_p50_ms"] <= r["deviation_p99_ms"] <= r["deviation_max_ms"]
    assert r["gaps"] == 0 and r["values"] > 0
    assert r["ceiling_reads_per_s"] > 50 and r["poller_cpu"] > 0 and r["servers_cpu"] > 0
    assert CountingSink().readings == 0
