"""What the simulator hands out: frames of readings, ticks and the running summary."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any

import numpy as np

from schemas.contracts import ProductionEvent, encode_frame_arrays


@dataclass(frozen=True, eq=False)
class FrameBatch:
    """One gateway's (station's) readings of one tick, columnar, as in :class:`ReadingFrame`.

    ``gateway`` is ``{site}.{station}``, the prefix of its sensors' ids. ``sensors`` is the
    station's full sensor list and is shared between ticks: treat it as read-only. ``idx`` points
    into it; readings are grouped by sensor and in time order within a sensor; ``ts_ms`` is epoch
    milliseconds UTC (the gateway's clock: skewed in legacy plants).
    """

    gateway: str
    sensors: list[str]
    idx: np.ndarray
    ts_ms: np.ndarray
    value: np.ndarray
    quality: np.ndarray

    def __len__(self) -> int:
        return int(self.idx.shape[0])

    def encode(self) -> bytes:
        """The frame as a ``plant.readings.v1`` message."""
        return encode_frame_arrays(self.gateway, self.sensors, self.idx, self.ts_ms, self.value, self.quality)


@dataclass(frozen=True, eq=False)
class SimTick:
    """What the plant emitted during one tick; ``sim_time`` is the end of the tick (aware UTC)."""

    sim_time: datetime
    frames: list[FrameBatch]
    events: list[ProductionEvent]


@dataclass
class SimSummary:
    """Running totals of a simulation; :meth:`since` gives the figures of a window (steady state).

    ``scrap_rate`` is cells scrapped / (cells graded + cells scrapped). Energy is what the meters
    integrate (physical, unaffected by dropped readings); ``cell_capacity_kwh`` sums the measured
    end-of-line capacity of graded cells (A, B and C) times the nominal voltage.
    """

    readings: int = 0
    frames: int = 0
    events: int = 0
    units_started: int = 0
    cells_started: int = 0
    cells_graded: int = 0
    cells_scrapped: int = 0
    scrap_rate: float = 0.0
    energy_kwh: float = 0.0
    cell_capacity_kwh: float = 0.0
    energy_per_cell_kwh: float = 0.0
    energy_per_kwh_cell: float = 0.0
    simulated_seconds: float = 0.0
    scrap_by_reason: dict[str, int] = field(default_factory=dict)
    grades: dict[str, int] = field(default_factory=dict)
    energy_by_stage: dict[str, float] = field(default_factory=dict)
    readings_dropped: int = 0
    frames_late: int = 0
    events_manual: int = 0
    sensors_stuck: int = 0

    def _derive(self) -> None:
        finished = self.cells_graded + self.cells_scrapped
        self.scrap_rate = self.cells_scrapped / finished if finished else 0.0
        self.energy_per_cell_kwh = self.energy_kwh / self.cells_graded if self.cells_graded else 0.0
        self.energy_per_kwh_cell = self.energy_kwh / self.cell_capacity_kwh if self.cell_capacity_kwh else 0.0

    def copy(self) -> SimSummary:
        """An independent snapshot."""
        return replace(self, scrap_by_reason=dict(self.scrap_by_reason), grades=dict(self.grades),
                       energy_by_stage=dict(self.energy_by_stage))

    def since(self, earlier: SimSummary) -> SimSummary:
        """The window between an earlier snapshot and now, with rates recomputed for the window."""
        out = SimSummary()
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(earlier, f.name)
            if isinstance(a, dict):
                setattr(out, f.name, {k: v - b.get(k, 0) for k, v in a.items()})
            elif f.name == "sensors_stuck":
                out.sensors_stuck = a
            else:
                setattr(out, f.name, a - b)
        out._derive()
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {f.name: (dict(getattr(self, f.name)) if isinstance(getattr(self, f.name), dict)
                         else getattr(self, f.name)) for f in fields(self)}
