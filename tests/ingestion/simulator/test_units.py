"""Unit flow: genealogy, scrap rates, energy per cell and scrap that follows out-of-spec process data."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import timedelta

import numpy as np
import pytest

from ingestion.simulator import DEFAULT_START, PlantSimulator, SimulatorConfigError, UnitSerial
from schemas.asset_model import Plant, load_plant
from schemas.contracts import EventKind, ProductionEvent, Stage, UnitType
from tests.ingestion.simulator.support import SEED, WARMUP_S


def test_genealogy_links_cells_to_rolls_and_rolls_to_batches(reference_run):
    by_unit: dict[str, list[ProductionEvent]] = defaultdict(list)
    for ev in reference_run.events:
        by_unit[ev.unit_id].append(ev)
    graded = [u for u, evs in by_unit.items() if any(e.kind is EventKind.GRADE for e in evs)]
    assert graded
    for uid in graded:
        evs = by_unit[uid]
        assert len(evs[0].parent_ids) == 2  # one cathode and one anode roll
        assert [e.stage for e in evs if e.kind is EventKind.ENTER] == [
            Stage.STACKING, Stage.FILLING, Stage.FORMATION, Stage.AGING_EOL]
        attrs = {e.attribute for e in evs if e.kind is EventKind.MEASURE}
        assert {"fill_mass", "capacity", "dcir", "self_discharge"} <= attrs
        for roll in evs[0].parent_ids:
            if "STOCK" not in roll:
                roll_evs = by_unit[roll]
                assert roll_evs and roll_evs[0].parent_ids and roll_evs[0].parent_ids[0] in by_unit
                assert {"areal_loading", "residual_moisture"} <= {e.attribute for e in roll_evs}
    grades = Counter(e.grade for e in reference_run.events if e.kind is EventKind.GRADE)
    assert set(grades) == {"A", "B", "C"} and grades["A"] > grades["B"] > grades["C"]
    scraps = [e for e in reference_run.events if e.kind is EventKind.SCRAP]
    assert scraps and all(e.reason and e.stage in (Stage.STACKING, Stage.FILLING, Stage.FORMATION,
                                                   Stage.AGING_EOL) for e in scraps)


def test_reference_scrap_rate_at_steady_state(reference_run):
    window = reference_run.end.since(reference_run.warm)
    assert window.cells_graded + window.cells_scrapped > 2500
    assert 0.05 <= window.scrap_rate <= 0.12
    assert len(window.scrap_by_reason) >= 5


def test_legacy_scrap_rate_is_higher(reference_run, legacy_run):
    ref = reference_run.end.since(reference_run.warm)
    leg = legacy_run.end.since(legacy_run.warm)
    assert leg.scrap_rate > ref.scrap_rate + 0.03


def test_reference_energy_per_kwh_of_cells(reference_run):
    window = reference_run.end.since(reference_run.warm)
    assert 20 <= window.energy_per_kwh_cell <= 40
    plant = load_plant("reference")
    kwh_per_cell = plant.template.cell_capacity_ah * plant.template.cell_nominal_voltage_v / 1000
    assert window.energy_per_cell_kwh == pytest.approx(window.energy_per_kwh_cell * kwh_per_cell, rel=0.03)
    by_stage = window.energy_by_stage
    drying = by_stage["coating"] + by_stage["vacuum_drying"] + by_stage["dry_room"]
    assert 0.4 <= drying / window.energy_kwh <= 0.7


def test_out_of_spec_coating_raises_scrap_of_its_cells():
    """A thickness fault on one coater shows up in its rolls' measurements and its cells' scrap."""
    plant = load_plant("reference")
    sim = PlantSimulator(plant, seed=SEED)
    events = [e for t in sim.run(WARMUP_S) for e in t.events]
    assert sim.inject_fault("L1-coat-c", "coating_thickness", -4.0, 240) == 16
    t_fault = sim.sim_time
    events += [e for t in sim.run(540) for e in t.events]
    coated = {e.unit_id: e.ts for e in events if e.stage is Stage.COATING and e.kind is EventKind.ENTER}
    hit = {u for u, ts in coated.items() if "L1-cathode" in u and t_fault + timedelta(seconds=1) <= ts
           and ts + timedelta(seconds=30) <= t_fault + timedelta(seconds=240)}
    assert len(hit) >= 6
    thickness = {e.unit_id: e.value for e in events if e.attribute == "coating_thickness"}
    assert all(thickness[u] < 85.3 for u in hit)
    outcome: dict[str, bool] = {}
    parents: dict[str, list[str]] = {}
    for e in events:
        if e.kind is EventKind.ENTER and e.stage is Stage.STACKING:
            parents[e.unit_id] = e.parent_ids
        if e.kind in (EventKind.SCRAP, EventKind.GRADE) and e.unit_type is UnitType.CELL:
            outcome[e.unit_id] = e.kind is EventKind.SCRAP
    affected = [s for u, s in outcome.items() if set(parents[u]) & hit]
    others = [s for u, s in outcome.items() if not set(parents[u]) & hit]
    assert len(affected) >= 150 and len(others) >= 500
    assert np.mean(affected) > 2 * np.mean(others)


# --------------------------------------------------------------------------- unit ids across runs

RUN_S = 150  # long enough for slurry batches, the first rolls and cells


def _ids(start, seed: int = 7, plant: str = "legacy") -> tuple[list[str], list[str], list[list[str]], str]:
    """(event ids, unit ids, parent ids) of one run, in order, and the run's run code."""
    sim = PlantSimulator(load_plant(plant), seed=seed, start=start)
    events = [e for t in sim.run(RUN_S) for e in t.events]
    return ([e.event_id for e in events], [e.unit_id for e in events], [e.parent_ids for e in events],
            sim.run_code)


def test_five_runs_with_other_starts_or_seeds_share_no_id():
    """Five `simulate` runs into one lake (same seed, another start each) plus one with another seed."""
    runs = [_ids(DEFAULT_START + timedelta(minutes=7 * k)) for k in range(5)] + [_ids(DEFAULT_START, seed=8)]
    all_events = [i for r in runs for i in r[0]]
    assert len(all_events) == len(set(all_events)) > 5 * 500
    units_per_run = [set(r[1]) for r in runs]
    assert sum(len(u) for u in units_per_run) == len(set().union(*units_per_run))
    for event_ids, unit_ids, parents, code in runs:
        assert len(event_ids) == len(set(event_ids))
        types = Counter(UnitSerial.parse(u).unit_type for u in set(unit_ids))
        assert set(types) == set(UnitType)
        # genealogy stays inside the run: every unit and every parent carries the run's code
        for uid, ps in zip(unit_ids, parents, strict=True):
            assert UnitSerial.parse(uid).run == code
            assert all(UnitSerial.parse(p).run == code for p in ps)


def test_same_seed_and_start_give_the_same_ids_byte_for_byte():
    start = DEFAULT_START + timedelta(days=3, milliseconds=250)
    assert _ids(start) == _ids(start)
    assert _ids(start, plant="reference") == _ids(start, plant="reference")


def test_a_restart_with_a_later_start_reuses_no_id():
    """A run, then a restart from `now` while the first run's simulated time is still going on."""
    first = _ids(DEFAULT_START)
    restart = _ids(DEFAULT_START + timedelta(seconds=RUN_S // 2))
    assert first[3] != restart[3]
    assert not set(first[0]) & set(restart[0])
    assert not set(first[1]) & set(restart[1])
    assert not {p for ps in first[2] for p in ps} & {p for ps in restart[2] for p in ps}


@pytest.mark.parametrize("where,value", [("route", "cath:ode"), ("line", "L 1")])
def test_a_plant_whose_names_cannot_be_in_a_serial_is_refused(where, value):
    plant = load_plant("legacy")
    t = plant.template
    if where == "route":
        routes = dict(t.sim["routes"])
        routes[value] = routes.pop("cathode")
        t = t.model_copy(update={"sim": {**t.sim, "routes": routes}})
    else:
        t = t.model_copy(update={"lines": [value, *t.lines[1:]]})
    with pytest.raises(SimulatorConfigError, match="cannot be part of a unit id"):
        PlantSimulator(Plant(t, plant.source), seed=1)
