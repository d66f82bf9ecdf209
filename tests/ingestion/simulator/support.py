"""Helpers of the simulator tests: the constants of the long runs, one run reduced on the fly, snapshots.

Plain functions; the fixtures that use them live in ``conftest.py``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ingestion.simulator import PlantSimulator, SimSummary, SimTick
from schemas.asset_model import load_plant
from schemas.contracts import ProductionEvent, encode

SEED = 42
WARMUP_S = 300  # stock rolls used up, the line's own rolls in every cell from here on
WINDOW_S = 1800


def ms(dt) -> int:
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
    #: SHA-256 over every frame's arrays and every encoded event, in order (pins the seeded output).
    digest: str = ""
    #: The simulator's ground truth at the gate (record_truth=True, which changes no output).
    truth: list[dict] = field(default_factory=list)


def run_plant(name: str, keep_readings: bool) -> PlantRun:
    plant = load_plant(name)
    sim = PlantSimulator(plant, seed=SEED, record_truth=True)
    digest = hashlib.sha256()
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
        t1 = ms(tick.sim_time)
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
            digest.update(fr.gateway.encode())
            for part in (fr.idx, fr.ts_ms, fr.value, fr.quality):
                digest.update(np.ascontiguousarray(part).tobytes())
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
        for e in tick.events:
            digest.update(encode(e))
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
                    sim.state_size(), events, event_tick, frame_log, readings, quality, digest.hexdigest(),
                    sim.truth_rows)



def snapshot(ticks: list[SimTick]) -> list:
    """Everything a tick carries, in comparable form."""
    out = []
    for t in ticks:
        out.append(t.sim_time)
        for f in t.frames:
            out.append((f.gateway, tuple(f.sensors), f.idx.tobytes(), f.ts_ms.tobytes(), f.value.tobytes(),
                        f.quality.tobytes()))
        out.extend(encode(e) for e in t.events)
    return out
