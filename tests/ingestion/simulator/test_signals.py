"""Sensor signals: reading counts at nominal rates, whatever the tick, within physical ranges."""

from __future__ import annotations

import numpy as np
import pytest

from ingestion.simulator import PlantSimulator
from schemas.asset_model import load_plant
from tests.ingestion.simulator.support import WARMUP_S, WINDOW_S


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
