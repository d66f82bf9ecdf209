"""The digital twin: plant files, determinism, physical plausibility, scrap, energy and legacy traits.

Two module-scoped runs (35 simulated minutes of each plant) feed most checks, so the whole file
stays within a few seconds per plant on a shared 2-core machine.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, timedelta

import numpy as np
import pytest

from ingestion.simulator import DEFAULT_START, PlantSimulator, SimSummary, SimTick
from schemas.asset_model import load_plant
from schemas.contracts import (
    EventKind,
    ProductionEvent,
    Stage,
    UnitType,
    decode_event,
    decode_reading_message,
    encode,
)

SEED = 42
WARMUP_S = 300  # stock rolls used up, the line's own rolls in every cell from here on
WINDOW_S = 1800


def _ms(dt) -> int:
    return int(dt.timestamp() * 1000)


@dataclass
class PlantRun:
    """What a long run left behind, reduced on the fly (frames are not kept)."""

    plant_name: str
    warm: SimSummary
    end: SimSummary
    counts: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    meters_monotone: bool
    ts_inside_tick: bool
    state_early: dict
    state_late: dict
    events: list[ProductionEvent] = field(default_factory=list)
    event_tick_ms: list[int] = field(default_factory=list)
    frame_log: list[tuple[str, int, int, int]] = field(default_factory=list)  # gateway, tick end, ts min, ts max
    readings: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # sensor, ts, value (legacy only)
    quality_counts: Counter = field(default_factory=Counter)


def _run(name: str, keep_readings: bool) -> PlantRun:
    plant = load_plant(name)
    sim = PlantSimulator(plant, seed=SEED)
    n = len(plant.sensors)
    gid = {e.sensor_id: i for i, e in enumerate(plant.sensors)}
    local_to_global: dict[str, np.ndarray] = {}
    meter = np.array([e.is_energy_meter for e in plant.sensors])
    counts = np.zeros(n, np.int64)
    lo, hi = np.full(n, np.inf), np.full(n, -np.inf)
    last_meter = np.full(n, -np.inf)
    monotone, inside = True, True
    warm = state_early = None
    events, event_tick, frame_log, kept = [], [], [], []
    quality = Counter()
    tick_ms = int(sim.tick_s * 1000)
    for tick in sim.run(WARMUP_S + WINDOW_S):
        t1 = _ms(tick.sim_time)
        gs, ts, vs = [], [], []
        for fr in tick.frames:
            m = local_to_global.get(fr.gateway)
            if m is None:
                m = local_to_global[fr.gateway] = np.array([gid[s] for s in fr.sensors])
            gs.append(m[fr.idx])
            ts.append(fr.ts_ms)
            vs.append(fr.value)
            inside &= bool(fr.ts_ms.min() >= t1 - tick_ms and fr.ts_ms.max() < t1)
            frame_log.append((fr.gateway, t1, int(fr.ts_ms.min()), int(fr.ts_ms.max())))
            quality.update(dict(enumerate(np.bincount(fr.quality, minlength=3).tolist())))
        if gs:
            g, t, v = np.concatenate(gs), np.concatenate(ts), np.concatenate(vs)
            counts += np.bincount(g, minlength=n)
            np.minimum.at(lo, g, v)
            np.maximum.at(hi, g, v)
            mm = meter[g]
            if mm.any():
                gm, tm, vm = g[mm], t[mm], v[mm]
                order = np.lexsort((tm, gm))
                gm, vm = gm[order], vm[order]
                same = gm[1:] == gm[:-1]
                monotone &= bool((np.diff(vm)[same] >= 0).all())
                first = np.r_[True, ~same]
                monotone &= bool((vm[first] >= last_meter[gm[first]]).all())
                last = np.r_[~same, True]
                last_meter[gm[last]] = vm[last]
            if keep_readings:
                kept.append((g, t, v))
        events.extend(tick.events)
        event_tick.extend([t1] * len(tick.events))
        if sim.summary.simulated_seconds == 200:
            state_early = sim.state_size()
        if sim.summary.simulated_seconds == WARMUP_S:
            warm = sim.summary.copy()
    readings = None
    if keep_readings:
        readings = tuple(np.concatenate([k[i] for k in kept]) for i in range(3))
    return PlantRun(name, warm, sim.summary.copy(), counts, lo, hi, monotone, inside, state_early,
                    sim.state_size(), events, event_tick, frame_log, readings, quality)


@pytest.fixture(scope="module")
def reference_run() -> PlantRun:
    return _run("reference", keep_readings=False)


@pytest.fixture(scope="module")
def legacy_run() -> PlantRun:
    return _run("legacy", keep_readings=True)


def _snapshot(ticks: list[SimTick]) -> list:
    """Everything a tick carries, in comparable form."""
    out = []
    for t in ticks:
        out.append(t.sim_time)
        for f in t.frames:
            out.append((f.gateway, tuple(f.sensors), f.idx.tobytes(), f.ts_ms.tobytes(), f.value.tobytes(),
                        f.quality.tobytes()))
        out.extend(encode(e) for e in t.events)
    return out


# --------------------------------------------------------------------------- plant files

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


# --------------------------------------------------------------------------- determinism

@pytest.mark.parametrize("name,seconds", [("reference", 20), ("legacy", 330)])
def test_same_seed_same_output_and_other_seed_differs(name, seconds):
    plant = load_plant(name)
    a = _snapshot(list(PlantSimulator(plant, seed=7).run(seconds)))
    b = _snapshot(list(PlantSimulator(plant, seed=7).run(seconds)))
    c = _snapshot(list(PlantSimulator(plant, seed=8).run(seconds)))
    assert a == b
    assert a != c


def test_split_runs_equal_one_run():
    plant = load_plant("legacy")
    whole = PlantSimulator(plant, seed=3)
    parts = PlantSimulator(plant, seed=3)
    one = _snapshot(list(whole.run(40)))
    two = _snapshot(list(parts.run(15)) + list(parts.run(25)))
    assert one == two
    assert whole.summary.to_dict() == parts.summary.to_dict()


def test_start_must_be_aware_and_defaults_to_fixed_time():
    plant = load_plant("reference")
    sim = PlantSimulator(plant, seed=1)
    assert sim.start == DEFAULT_START and sim.start.tzinfo is not None
    with pytest.raises(ValueError):
        PlantSimulator(plant, seed=1, start=DEFAULT_START.replace(tzinfo=None))


# --------------------------------------------------------------------------- readings

def test_reading_count_matches_nominal_rates(reference_run):
    plant = load_plant("reference")
    seconds = WARMUP_S + WINDOW_S
    expected = np.array([round(e.nominal_rate_hz * seconds) for e in plant.sensors])
    assert (reference_run.counts == expected).all()
    assert reference_run.end.readings == expected.sum()
    assert reference_run.end.readings_dropped == 0
    assert reference_run.ts_inside_tick


@pytest.mark.parametrize("tick_s", [0.5, 5.0])
def test_reading_count_does_not_depend_on_tick(tick_s):
    plant = load_plant("reference")
    sim = PlantSimulator(plant, seed=1, tick_s=tick_s)
    frames = [f for t in sim.run(60) for f in t.frames]
    assert sum(len(f) for f in frames) == round(sum(e.nominal_rate_hz for e in plant.sensors) * 60)
    assert all(len(f) < 50_000 for f in frames)


def test_readings_stay_in_physical_ranges(reference_run):
    plant = load_plant("reference")
    lo, hi = reference_run.lo, reference_run.hi
    assert np.isfinite(lo).all() and np.isfinite(hi).all()
    for i, e in enumerate(plant.sensors):
        p = e.parameter
        if p == "dryer_temp":
            assert lo[i] >= 100 and hi[i] <= 200, e.sensor_id
        elif p.startswith("dew_point") or p.endswith("dew_point"):
            assert hi[i] < -20, e.sensor_id
        elif p == "density":
            plausible = (3.2, 3.9) if e.target > 3 else (1.4, 1.8)
            assert plausible[0] <= lo[i] and hi[i] <= plausible[1], e.sensor_id
        elif p in ("coating_thickness", "areal_loading"):
            assert 0.9 * e.target <= lo[i] and hi[i] <= 1.1 * e.target, e.sensor_id
        elif p in ("particle_count", "burr_height", "residual_moisture", "residual_solvent"):
            assert lo[i] >= 0, e.sensor_id
        if e.lsl is not None and e.usl is not None:
            w = e.usl - e.lsl
            assert e.lsl - 2 * w <= lo[i] and hi[i] <= e.usl + 2 * w, e.sensor_id
    assert reference_run.meters_monotone


def test_frames_and_events_meet_the_contracts(reference_run, legacy_run):
    plant = load_plant("legacy")
    sim = PlantSimulator(plant, seed=5)
    for tick in sim.run(30):
        assert tick.sim_time.tzinfo is not None
        for fr in tick.frames:
            decoded = decode_reading_message(fr.encode())
            assert decoded.sensors == fr.sensors and len(decoded) == len(fr)
            assert set(fr.sensors) <= set(plant.by_id)
    for run in (reference_run, legacy_run):
        ids = [e.event_id for e in run.events]
        assert len(ids) == len(set(ids))
        for ev in run.events[:5000]:
            assert decode_event(encode(ev)) == ev
            assert ev.ts.utcoffset() == timedelta(0)


# --------------------------------------------------------------------------- units, scrap, energy

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


# --------------------------------------------------------------------------- legacy traits

def test_legacy_has_polling_gaps(legacy_run):
    plant = load_plant("legacy")
    assert legacy_run.end.readings_dropped > 0
    every_tick = {f"{e.site}.{e.station}" for e in plant.sensors if e.nominal_rate_hz >= 1}
    ticks_by_gw: dict[str, list[int]] = defaultdict(list)
    for gw, t1, _, _ in legacy_run.frame_log:
        ticks_by_gw[gw].append(t1)
    # Stations with 1 Hz sensors report every tick unless their gateway is silent.
    silences = [int(np.diff(sorted(set(ticks_by_gw[gw]))).max()) for gw in every_tick]
    assert max(silences) >= 10_000


def test_legacy_has_stuck_sensors(legacy_run):
    plant = load_plant("legacy")
    g, t, v = legacy_run.readings
    order = np.lexsort((t, g))
    g, v = g[order], v[order]
    per_sensor = np.split(v, np.searchsorted(g, np.arange(1, len(plant.sensors))))
    flat_runs = 0
    for (e, tmpl), vi in zip(plant.sensors_with_templates, per_sensor, strict=True):
        if not e.is_energy_meter and tmpl.sim.get("noise", 1) != 0 and vi.size >= 20:
            same = np.r_[False, np.diff(vi) == 0]
            # a run of 10 identical values in a noisy signal is a frozen sensor
            run = np.convolve(same.astype(int), np.ones(10, int), mode="valid")
            flat_runs += int((run == 10).any())
    assert flat_runs >= 2
    assert legacy_run.end.sensors_stuck >= 1


def test_legacy_has_clock_skew_and_late_out_of_order_frames(legacy_run, reference_run):
    assert legacy_run.end.frames_late > 0
    assert any(tmax >= t1 for _, t1, _, tmax in legacy_run.frame_log)  # a gateway clock runs ahead
    last_max: dict[str, int] = {}
    out_of_order = 0
    for gw, _, tmin, tmax in legacy_run.frame_log:
        if tmin < last_max.get(gw, -1):
            out_of_order += 1
        last_max[gw] = max(tmax, last_max.get(gw, tmax))
    assert out_of_order > 0
    assert not legacy_run.ts_inside_tick and reference_run.ts_inside_tick
    assert sum(c for q, c in legacy_run.quality_counts.items() if q) > 0


def test_legacy_quality_records_arrive_by_hand_in_batches(legacy_run, reference_run):
    quality_kinds = (EventKind.MEASURE, EventKind.GRADE)
    manual = [(e, t1) for e, t1 in zip(legacy_run.events, legacy_run.event_tick_ms, strict=True)
              if e.source == "manual"]
    assert manual and all(e.kind in quality_kinds for e, _ in manual)
    assert all(e.source == "manual" for e in legacy_run.events if e.kind in quality_kinds)
    assert all(t1 - _ms(e.ts) >= 60_000 for e, t1 in manual)
    batches = sorted({t1 for _, t1 in manual})
    assert len(batches) == (WARMUP_S + WINDOW_S) // 300
    assert all(e.source == "auto" for e in reference_run.events)


# --------------------------------------------------------------------------- memory

def test_state_does_not_grow_with_duration(reference_run):
    early, late = reference_run.state_early, reference_run.state_late
    assert late["array_bytes"] == early["array_bytes"]
    assert late["visits"] <= 1.3 * early["visits"] + 20
    assert late["ready_units"] <= 16  # a few batches and rolls per electrode and line
    assert late["held_frames"] == 0 and late["pending_manual"] == 0


def test_summary_window_and_dict():
    sim = PlantSimulator(load_plant("reference"), seed=1, tick_s=5.0)
    for _ in sim.run(150):
        pass
    s0 = sim.summary.copy()
    for _ in sim.run(150):
        pass
    w = sim.summary.since(s0)
    assert w.simulated_seconds == 150 and w.readings == sim.summary.readings - s0.readings
    d = sim.summary.to_dict()
    assert d["cells_graded"] > 0 and isinstance(d["scrap_by_reason"], dict)
    assert sim.sim_time == DEFAULT_START + timedelta(seconds=300)
    assert sim.sim_time.tzinfo is UTC or sim.sim_time.utcoffset() == timedelta(0)
