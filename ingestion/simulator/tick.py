"""The tick loop: :class:`PlantSimulator` builds its parts from a plant and advances them tick by tick.

The parts are mixins that share the simulator's state: :class:`~ingestion.simulator.signals._Signals`
(sensor dynamics and sampling), :class:`~ingestion.simulator.edge._EdgeEffects` (gaps, skew, late
frames, manual records) and :class:`~ingestion.simulator.units._UnitFlow` (units, genealogy, scrap).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np

from ingestion.simulator.config import DEFAULT_START, _Settings
from ingestion.simulator.edge import _EdgeEffects
from ingestion.simulator.output import SimSummary, SimTick
from ingestion.simulator.serials import run_code
from ingestion.simulator.signals import _Signals
from ingestion.simulator.units import _UnitFlow
from schemas.asset_model import Plant
from schemas.contracts import ProductionEvent


class PlantSimulator(_Signals, _EdgeEffects, _UnitFlow):
    """Runs one plant tick by tick; the same plant, seed, start and tick give identical output.

    ``run`` can be called repeatedly: each call continues where the last one stopped, so two runs
    of 60 s yield exactly what one run of 120 s yields. ``summary`` is kept up to date while the
    iterator is consumed.

    Unit ids (and so event ids and ``parent_ids``) are serials carrying :attr:`run_code`, the start
    and the seed: runs with another start or seed, restarts included, never reuse an id
    (:mod:`ingestion.simulator.serials`).
    """

    def __init__(self, plant: Plant, seed: int, start: datetime = DEFAULT_START, tick_s: float = 1.0,
                 record_truth: bool = False):
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")
        tick_ms = int(round(tick_s * 1000))
        if tick_ms < 1 or tick_s > 3600:
            raise ValueError(f"tick_s must be between 0.001 and 3600 s, got {tick_s}")
        self.plant = plant
        self.seed = seed
        self.start = start.astimezone(UTC)
        #: In every unit id: ids of runs with another start or seed cannot collide (see ``serials``).
        self.run_code = run_code(self.start, seed)
        self.tick_s = tick_ms / 1000.0
        self.summary = SimSummary()
        self._tick_ms = tick_ms
        self._start_ms = int(round(self.start.timestamp() * 1000))
        self._cfg = _Settings.from_plant(plant)
        root = np.random.Generator(np.random.PCG64(seed))
        rng_init, self._rng_dyn, self._rng_noise, self._rng_units, self._rng_edge = root.spawn(5)
        self._now_ms = 0
        self._tick_no = 0
        self._event_order = 0
        #: With ``record_truth``: one row per cell passing the gate before formation, for evaluation
        #: only (:mod:`ingestion.simulator.truth`); never sent to Kafka. Callers take and clear it.
        self.truth_rows: list[dict] | None = [] if record_truth else None
        self._build_sensors(rng_init)
        self._build_flows()
        self._build_edge(rng_init)

    # ----------------------------------------------------------------------- public

    @property
    def sim_time(self) -> datetime:
        """The simulation clock (end of the last tick)."""
        return self.start + timedelta(milliseconds=self._now_ms)

    def run(self, duration_s: float) -> Iterator[SimTick]:
        """Advance the plant by ``duration_s`` (rounded up to whole ticks), yielding every tick.

        Frames held back (late data) and hand-entered records not yet due stay pending and come
        out in a later tick, possibly of a later call.
        """
        n_ticks = math.ceil(round(duration_s * 1000) / self._tick_ms)
        for _ in range(n_ticks):
            yield self._step()

    def inject_fault(self, station: str, parameter: str, offset: float, duration_s: float) -> int:
        """Shift every sensor of ``parameter`` on ``station`` by ``offset`` for ``duration_s``.

        For demos and tests: the fault acts on the process like a random one (coupled sensors move,
        units processed meanwhile carry the scrap risk). Returns the number of sensors affected.
        """
        ix = [i for i, e in enumerate(self.plant.sensors)
              if e.station == station and e.parameter == parameter and not e.is_energy_meter]
        if not ix:
            raise KeyError(f"no sensor {parameter!r} on station {station!r}")
        self._fault_off[ix] = offset
        self._fault_left[ix] = duration_s * 1000.0 + self._tick_ms
        return len(ix)

    def state_size(self) -> dict[str, int]:
        """Sizes of the internal state: bytes of the per-sensor arrays and counts of held items.

        Used by tests to show that memory is bounded by sensors and units in flight, not duration.
        """
        arrays = sum(v.nbytes for v in self.__dict__.values() if isinstance(v, np.ndarray))
        visits = sum(len(s.queue) for f in self._flows for s in f.cell_steps)
        visits += sum(len(s.queue) for f in self._flows for r in f.routes for s in r.steps)
        ready = sum(len(r.ready_batches) + len(r.ready_rolls) for f in self._flows for r in f.routes)
        return {"array_bytes": int(arrays), "visits": visits, "ready_units": ready,
                "held_frames": len(self._held), "pending_manual": len(self._manual)}

    # ----------------------------------------------------------------------- one tick

    def _step(self) -> SimTick:
        t0 = self._now_ms
        t1 = t0 + self._tick_ms
        self._advance_dynamics(t1)
        frames = self._sample(t0, t1)
        events: list[tuple[int, int, ProductionEvent]] = []
        self._advance_units(t1, events)
        events.sort(key=lambda e: (e[0], e[1]))
        out_events = [e[2] for e in events]
        out_events.extend(self._flush_manual(t1))
        self._now_ms = t1
        self._tick_no += 1
        s = self.summary
        s.frames += len(frames)
        s.readings += sum(len(f) for f in frames)
        s.events += len(out_events)
        s.simulated_seconds = t1 / 1000.0
        s.sensors_stuck = int(self._stuck.sum())
        s._derive()
        return SimTick(self.start + timedelta(milliseconds=t1), frames, out_events)
