"""Legacy edge effects: polling gaps, stuck sensors, clock skew, late frames, records entered by hand."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from schemas.asset_model import load_plant
from schemas.contracts import EventKind
from tests.ingestion.simulator.support import WARMUP_S, WINDOW_S, ms


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
    assert all(t1 - ms(e.ts) >= 60_000 for e, t1 in manual)
    batches = sorted({t1 for _, t1 in manual})
    assert len(batches) == (WARMUP_S + WINDOW_S) // 300
    assert all(e.source == "auto" for e in reference_run.events)
