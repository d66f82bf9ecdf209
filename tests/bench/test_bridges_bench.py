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


def test_a_short_run_measures_rate_and_jitter():
    r = one_run(BridgeBenchOptions(blocks=10, rate_hz=5, duration_s=2, warmup_s=1))
    assert r["target_polls_per_s"] == 50
    assert 25 < r["polls_per_s"] <= 55
    assert 150 < r["interval_p50_ms"] < 250
    assert r["gaps"] == 0 and r["values"] > 0
    assert CountingSink().readings == 0
