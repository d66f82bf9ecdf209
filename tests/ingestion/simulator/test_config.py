"""The plant files the simulator is configured from: every stage present, the shapes of both plants."""

from __future__ import annotations

from collections import Counter

import pytest

from schemas.asset_model import load_plant
from schemas.contracts import Stage


@pytest.mark.parametrize("name", ["reference", "legacy"])
def test_builtin_plant_loads_with_every_stage(name):
    plant = load_plant(name)
    stages = {e.stage for e in plant.sensors}
    assert stages - {Stage.UTILITIES} == set(Stage) - {Stage.UTILITIES}
    # utilities are not a process stage: only meters outside the chain carry it
    assert all(e.is_energy_meter for e in plant.sensors if e.stage is Stage.UTILITIES)
    assert all(e.lsl is not None or e.usl is not None for e in plant.sensors if e.ctq)
    dry = [e for e in plant.sensors if e.stage is Stage.DRY_ROOM]
    assert {e.line for e in dry} == {"site"}
    assert {"dew_point", "room_temperature", "particle_count"} <= {e.parameter for e in dry}


def test_reference_plant_shape():
    plant = load_plant("reference")
    sensors = plant.sensors
    assert 900 <= len(sensors) <= 1100
    assert {e.line for e in sensors} == {"L1", "L2", "site"}
    assert {e.nominal_rate_hz for e in sensors} <= {10.0, 1.0, 0.2}
    assert sum(e.nominal_rate_hz == 10 for e in sensors) > 300
    stations = {e.station for e in sensors}
    metered = {e.station for e in sensors if e.is_energy_meter}
    assert metered == stations
    meters = [e for e in sensors if e.is_energy_meter]
    assert all(e.unit == "kWh" and e.parameter == "energy" and e.nominal_rate_hz in (1.0, 0.2) for e in meters)
    dryer = [e for e in sensors if e.parameter == "dryer_temp" and "coat-c" in e.station]
    assert dryer and all(e.lsl == 120 and e.usl == 180 for e in dryer)
    dew = [e for e in sensors if e.parameter == "dew_point"]
    assert all(e.usl <= -40 and e.unit == "°C" for e in dew)


def test_legacy_plant_is_sparser_slower_and_metered_per_line():
    ref, leg = load_plant("reference"), load_plant("legacy")
    assert 0.25 <= len(leg.sensors) / len(ref.sensors) <= 0.4
    assert max(e.nominal_rate_hz for e in leg.sensors) <= 1.0
    assert sum(e.nominal_rate_hz < 1.0 for e in leg.sensors) > len(leg.sensors) / 3
    meters = [e for e in leg.sensors if e.is_energy_meter]
    assert len(meters) == len(leg.template.lines) + 1
    assert sorted({e.line for e in meters}) == ["L1", "L2", "site"]
    assert Counter(e.protocol for e in leg.sensors).most_common(1)[0][0] == "modbus"
    assert leg.template.era == "legacy"
