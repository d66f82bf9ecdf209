"""The retrofit plan prices the gaps in their rank order, and the payback follows the stated assumptions."""

from __future__ import annotations

import pytest

from schemas.reference_data import load_retrofit_costs
from transforms.batch.density import SensorGap, SensorRow
from transforms.batch.retrofit import PlantOutput, payback, plan_items, retrofit, retrofit_tables
from transforms.settings import AuditSettings

COSTS = load_retrofit_costs()


def gap(rank: int, station: str, parameter: str, category: str, kind: str = "missing", missing: int = 1,
        signal_class: str = "product_feature") -> SensorGap:
    return SensorGap(site="s", line="L1", station=station, stage="coating", parameter=parameter, category=category,
                     gap=kind, signal_class=signal_class, sensors_present=0, sensors_expected=missing,
                     sensors_missing=missing if kind == "missing" else 0, sensors_slow=int(kind == "slow"),
                     nominal_rate_hz=None, profile_rate_hz=1.0, reason=f"why {rank}", rank=rank)


SENSORS = [SensorRow("a", "s", "L1", "L1-coat", "coating", "web_speed", "process_parameter", 1.0, protocol="modbus"),
           SensorRow("b", "s", "L1", "L1-cal", "calendering", "line_load", "process_parameter", 1.0, protocol="opcua")]
GAPS = [gap(3, "L1-cal", "energy", "energy", signal_class="equipment_feature"),
        gap(1, "L1-coat", "thickness", "ctq", missing=2),
        gap(2, "L1-coat", "thickness", "ctq", kind="slow"),
        gap(4, "L1-coat", "energy", "energy", signal_class="equipment_feature")]


def test_items_follow_the_gap_rank_with_one_gateway_per_closed_station():
    items = plan_items("s", GAPS, SENSORS, COSTS)
    assert [(i.priority, i.item, i.station, i.quantity, i.gap_rank) for i in items] == [
        (1, "gateway", "L1-coat", 1, 1),     # Modbus station: bought with its first item
        (2, "sensor", "L1-coat", 2, 1),
        (3, "energy_meter", "L1-cal", 1, 3),  # OPC UA already: no gateway; the slow gap buys nothing
        (4, "energy_meter", "L1-coat", 1, 4),
    ]
    rate = COSTS.engineering_rate_eur_h
    assert items[1].hardware_eur == 2 * COSTS.sensor_eur["product_feature"]
    assert items[1].cost_eur == pytest.approx(items[1].hardware_eur + 2 * COSTS.engineering_hours_sensor * rate)
    assert items[0].cost_eur == pytest.approx(COSTS.gateway_eur + COSTS.engineering_hours_gateway * rate)
    assert items[-1].cumulative_eur == pytest.approx(sum(i.cost_eur for i in items))


def test_payback_closes_the_stated_share_of_the_gap_on_an_annual_output():
    s = AuditSettings(gap_closed_share=0.5, operating_hours_per_year=1000, scrap_eur_per_cell=10,
                      electricity_eur_kwh=0.2)
    items = plan_items("s", GAPS, SENSORS, COSTS)
    mine, ref = PlantOutput(cells=100, scrapped=10, hours=2.0, kwh=600.0), PlantOutput(200, 4, 2.0, 1000.0)
    p = payback("s", items, mine, ref, 0.25, s)
    annual = 100 / 2.0 * 1000
    assert p.annual_cells == annual
    assert p.annual_scrap_savings_eur == pytest.approx((0.10 - 0.02) * 0.5 * annual * 10)
    assert p.annual_energy_savings_eur == pytest.approx((6.0 - 5.0) * 0.5 * annual * 0.2)
    assert p.payback_years == pytest.approx(p.capex_eur / p.annual_savings_eur)
    assert "50% of the gap" in p.assumptions and p.energy_coverage == 0.25
    better = payback("s", items, PlantOutput(100, 0, 2.0, 100.0), ref, 1.0, s)
    assert better.annual_savings_eur == 0 and better.payback_years is None  # never negative savings
    alone = payback("s", items, mine, None, 0.25, s)
    assert alone.annual_savings_eur is None and alone.payback_years is None


def test_every_site_gets_a_payback_row_and_the_rows_fit_the_contract():
    items, paybacks = retrofit(GAPS, SENSORS, {"s": PlantOutput(10, 1, 1.0, 10.0)}, {"s": 0.5}, "ref", COSTS,
                               AuditSettings())
    plan_t, pay_t = retrofit_tables(items, paybacks)
    assert plan_t.num_rows == 4 and pay_t.num_rows == 1
    assert pay_t["reference_scrap_rate"].to_pylist() == [None]  # the benchmark site is not in the warehouse
