"""The density audit counts a station against its profile kind, and ranks the gaps CTQ, energy, rest."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from schemas.reference_data import ProfileParameter, ReferenceProfile, StationProfile, load_reference_profile
from transforms.batch.density import (
    CATEGORY_ORDER,
    SensorDelivery,
    SensorRow,
    audit_density,
    density_tables,
    read_density_inputs,
)
from transforms.warehouse.reader import connect

PROFILE = ReferenceProfile(derived_from="tiny", stations=[StationProfile(
    kind="mix", stage="mixing", equipment="mixer", parameters=[
        ProfileParameter(parameter="viscosity", sensors=2, rate_hz=1, signal_class="product_feature", ctq=True),
        ProfileParameter(parameter="motor_current", sensors=1, rate_hz=10, signal_class="equipment_feature"),
        ProfileParameter(parameter="energy", sensors=1, rate_hz=1, signal_class="equipment_feature",
                         energy_meter=True)])])


def sensor(sid: str, line: str, station: str, parameter: str, rate: float = 10.0, stage: str = "mixing",
           **kw) -> SensorRow:
    return SensorRow(sid, "s", line, station, stage, parameter, "process_parameter", rate, **kw)


SENSORS = [
    sensor("v1", "L1", "L1-mix", "viscosity", rate=0.5, ctq=True),
    sensor("m1", "L1", "L1-mix", "motor_current"),
    sensor("m2", "L2", "L2-mix", "motor_current"),
    sensor("e1", "L1", "L1-incomer", "energy", stage="utilities", is_energy_meter=True),
]


@pytest.fixture
def audit():
    delivery = {"v1": SensorDelivery(5, 10.0), "m1": SensorDelivery(100, 100.0), "m2": SensorDelivery(0, 100.0)}
    return audit_density(SENSORS, delivery, {("s", "L1"): 1000, ("s", "L2"): 0}, PROFILE)


def test_gaps_rank_blind_ctq_first_then_partial_then_slow_then_energy(audit):
    got = [(g.rank, g.station, g.parameter, g.category, g.gap, g.sensors_missing, g.sensors_slow) for g in audit.gaps]
    assert got == [
        (1, "L2-mix", "viscosity", "ctq", "missing", 2, 0),   # not measured at all
        (2, "L1-mix", "viscosity", "ctq", "missing", 1, 0),   # one of two positions
        (3, "L1-mix", "viscosity", "ctq", "slow", 0, 1),      # 0.5 Hz against 1 Hz
        (4, "L1-mix", "energy", "energy", "missing", 1, 0),
        (5, "L2-mix", "energy", "energy", "missing", 1, 0),
    ]
    assert "not measured at all" in audit.gaps[0].reason and "0.5 Hz against 1 Hz" in audit.gaps[2].reason


def test_station_line_and_plant_rows_count_against_the_profile(audit):
    rows = {(r["level"], r["line"], r["station"]): r for r in audit.rows}
    plant = rows[("plant", None, None)]
    assert (plant["stations"], plant["sensors"], plant["sensors_expected"], plant["sensors_matched"]) == (3, 4, 8, 3)
    assert plant["sensor_coverage"] == pytest.approx(3 / 8)
    assert plant["sensors_beyond_profile"] == 1  # the incomer: a stage the profile does not judge
    assert (plant["ctq_parameters_covered"], plant["ctq_parameters_expected"]) == (1, 2)
    assert (plant["stations_metered"], plant["stations_meter_expected"], plant["energy_coverage"]) == (0, 2, 0.0)
    assert plant["sensors_silent"] == 2  # m2 sent nothing, e1 has no health row
    assert plant["achieved_rate_ratio"] == pytest.approx(105 / 210)
    assert plant["gaps"] == 5 and plant["cells"] == 1000
    l1 = rows[("station", "L1", "L1-mix")]
    assert l1["profile_kind"] == "mix" and l1["profile_rate_ratio"] == pytest.approx((0.5 + 1) / 2)
    assert l1["sensors_per_million_cells"] == pytest.approx(2 / 1000 * 1e6)
    assert rows[("line", "L2", None)]["sensors_per_million_cells"] is None  # no cells started
    assert rows[("station", "L1", "L1-incomer")]["profile_kind"] is None


def test_a_plant_that_matches_the_profile_has_no_gaps():
    full = [sensor("v1", "L1", "L1-mix", "viscosity", rate=1, ctq=True), sensor("v2", "L1", "L1-mix", "viscosity", rate=1),
            sensor("m1", "L1", "L1-mix", "motor_current"),
            sensor("e1", "L1", "L1-mix", "energy", rate=1, is_energy_meter=True)]
    audit = audit_density(full, {}, {}, PROFILE)
    assert audit.gaps == []
    assert {r["level"]: r["sensor_coverage"] for r in audit.rows} == {"station": 1.0, "line": 1.0, "plant": 1.0}


def test_on_the_two_plants_legacy_has_ranked_gaps_and_the_reference_none(two_plant_warehouse, tmp_path):
    con = connect(two_plant_warehouse)
    try:
        day = con.execute("SELECT max(date) FROM sensor_health_daily").fetchone()[0]
        inputs = read_density_inputs(con, day)
    finally:
        con.close()
    audit = audit_density(inputs.sensors, inputs.delivery, inputs.cells, load_reference_profile())
    plants = {r["site"]: r for r in audit.rows if r["level"] == "plant"}
    assert plants["ref"]["sensor_coverage"] == 1.0 and plants["ref"]["gaps"] == 0
    assert plants["leg"]["sensor_coverage"] < 0.5 and plants["leg"]["energy_coverage"] < 0.1
    assert plants["leg"]["achieved_rate_ratio"] < plants["ref"]["achieved_rate_ratio"]
    assert plants["leg"]["sensors_per_million_cells"] > 0
    leg = [g for g in audit.gaps if g.site == "leg"]
    assert [g.rank for g in leg] == list(range(1, len(leg) + 1))
    order = [CATEGORY_ORDER[g.category] for g in leg]
    assert order == sorted(order) and leg[0].category == "ctq" and {"energy", "other"} <= {g.category for g in leg}
    audit_t, gaps_t = density_tables(audit)
    assert audit_t.num_rows == len(audit.rows) and gaps_t.num_rows == len(audit.gaps)
    pq.write_table(gaps_t, tmp_path / "g.parquet")  # the rows conform to the contract's schema
