"""Per-sensor delivery health per window (``sensor_health``) and its pure twin."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from transforms.features.sensors import SensorTable
from transforms.features.windows import (
    _NO_TS,
    _SENSOR_MASK,
    DEFAULT_LATENESS_MS,
    DEFAULT_WIDTH_MS,
    Array,
    ClockSnapshot,
    Columns,
    Emitted,
    OpenWindowsSnapshot,
    _Clock,
    _concat,
    _group,
    _grown,
    _OpenWindows,
    _ratio,
    _readings,
    column,
)

_HEALTH_DTYPES = {"count": np.int64, "min": np.float64, "max": np.float64, "max_gap": np.float64,
                  "max_ts": np.int64}

_HEALTH_ROW_DTYPES = {
    "sensor_key": np.int32, "sensor_id": object, "window_start": np.int64, "window_end": np.int64,
    "observed": np.int64, "expected": np.float64, "rate_ratio": np.float64, "max_gap_ms": np.float64,
    "since_last_ms": np.float64, "stuck": bool, "late": np.int64,
}
#: Output columns of :class:`SensorHealth` and :func:`sensor_health`.
SENSOR_HEALTH_COLUMNS = tuple(_HEALTH_ROW_DTYPES)


def _merge_health(a: Columns, b: Columns) -> Columns:
    return {
        "count": a["count"] + b["count"],
        "min": np.minimum(a["min"], b["min"]),
        "max": np.maximum(a["max"], b["max"]),
        "max_gap": np.fmax(a["max_gap"], b["max_gap"]),
        "max_ts": np.maximum(a["max_ts"], b["max_ts"]),
    }


@dataclass(frozen=True, slots=True)
class SensorHealthSnapshot:
    """The state of a :class:`SensorHealth`; per-sensor arrays are indexed by sensor key."""

    clock: ClockSnapshot
    open: OpenWindowsSnapshot
    stuck_min_count: int
    active: Array
    seen: Array
    first_win: Array
    last_ts: Array
    last_closed_ts: Array
    late_pending: Array
    late_total: int


_HEALTH_SENSOR_ARRAYS = {"seen": bool, "first_win": np.int64, "last_ts": np.int64, "last_closed_ts": np.float64,
                         "late_pending": np.int64}


class SensorHealth:
    """Per-sensor delivery health per window, for ``sensor_health`` and the readiness evidence.

    A sensor that has reported once keeps getting a row for every window the worker closes, so a
    sensor that falls silent shows up as ``observed == 0`` with a growing ``since_last_ms`` instead of
    vanishing. Windows in which no sensor of this worker reported at all (a stopped plant or feed)
    produce no rows: that outage is visible as the jump in ``since_last_ms`` afterwards.

    Columns: ``observed`` readings in the window; ``expected`` = nominal rate x width;
    ``rate_ratio`` = observed / expected; ``max_gap_ms`` = largest event-time step between consecutive readings
    whose later reading is in the window (the earlier may be in a previous window; null with no
    step); ``since_last_ms`` = window end minus the sensor's last reading at or before it;
    ``stuck`` = at least ``stuck_min_count`` readings, all identical (flat-lined; setpoint echoes
    are legitimately flat, so consumers read it with the signal class); ``late`` = readings of the
    sensor that arrived after their window had closed, since its previous row.

    Gaps are exact for readings that arrive in event-time order per sensor; a reading that arrives
    behind a later one of a previous micro-batch contributes a step of 0 (it cannot split a step
    already recorded), so ``max_gap_ms`` is then an upper bound.
    """

    def __init__(self, table: SensorTable, width_ms: int = DEFAULT_WIDTH_MS,
                 allowed_lateness_ms: int = DEFAULT_LATENESS_MS, stuck_min_count: int = 10):
        if stuck_min_count < 2:
            raise ValueError("stuck_min_count must be at least 2")
        self.table = table
        self.stuck_min_count = stuck_min_count
        self._clock = _Clock(width_ms, allowed_lateness_ms)
        self._open = _OpenWindows(_HEALTH_DTYPES)
        self._active = np.empty(0, dtype=np.int64)
        self._seen = np.zeros(0, dtype=bool)
        self._first_win = np.zeros(0, dtype=np.int64)
        self._last_ts = np.zeros(0, dtype=np.int64)
        self._last_closed_ts = np.zeros(0, dtype=np.float64)
        self._late_pending = np.zeros(0, dtype=np.int64)
        self.late_total = 0

    @property
    def watermark_ms(self) -> int | None:
        return self._clock.watermark

    def _grow(self) -> None:
        n = len(self.table)
        self._seen = _grown(self._seen, n, False)
        self._first_win = _grown(self._first_win, n, 0)
        self._last_ts = _grown(self._last_ts, n, _NO_TS)
        self._last_closed_ts = _grown(self._last_closed_ts, n, np.nan)
        self._late_pending = _grown(self._late_pending, n, 0)

    def push(self, sensor: Any, ts_ms: Any, value: Any) -> Emitted:
        """Fold a micro-batch in and return health rows of the windows the watermark closed."""
        s, t, v = _readings(len(self.table), sensor, ts_ms, value)
        self._clock.check_range(t)
        self._grow()
        width = self._clock.width
        late = self._clock.late(t // width)
        if late.any():
            ls = s[late]
            self._late_pending += np.bincount(ls, minlength=len(self._late_pending))
            # A sensor heard of only through late readings still gets rows, so its count is reported.
            fresh = np.unique(ls[~self._seen[ls]])
            self._first_win[fresh] = self._clock.closed_before
            self._seen[fresh] = True
            self.late_total += len(ls)
            keep = ~late
            s, t, v = s[keep], t[keep], v[keep]
        if len(t):
            g = _group(s, t, width)
            vs = v[g.order]
            prev = np.empty(len(g.ts), dtype=np.int64)
            prev[1:] = g.ts[:-1]
            prev[g.run_first] = self._last_ts[g.sensor[g.run_first]]
            first_ever = prev == _NO_TS
            prev[first_ever] = g.ts[first_ever]
            gap = np.where(first_ever, np.nan, np.maximum(g.ts - prev, 0).astype(np.float64))
            run_sensor = g.sensor[g.run_first]
            run_last = np.append(np.flatnonzero(g.run_first)[1:], len(g.ts)) - 1
            self._last_ts[run_sensor] = np.maximum(self._last_ts[run_sensor], g.ts[run_last])
            run_first_win = g.win[g.run_first]
            seen = self._seen[run_sensor]
            self._first_win[run_sensor] = np.where(
                seen, np.minimum(self._first_win[run_sensor], run_first_win), run_first_win)
            self._seen[run_sensor] = True
            self._active = np.union1d(self._active, np.unique(g.win[g.starts]))
            last = g.starts + g.counts - 1
            self._open.merge(g.keys, {
                "count": g.counts,
                "min": np.minimum.reduceat(vs, g.starts),
                "max": np.maximum.reduceat(vs, g.starts),
                "max_gap": np.fmax.reduceat(gap, g.starts),
                "max_ts": g.ts[last],
            }, _merge_health)
            self._clock.advance(int(t.max()))
        return Emitted(self._close(self._clock.closed_before), late)

    def flush_all(self) -> Emitted:
        """Close every open window; later readings for them are late."""
        if not len(self._active):
            return Emitted(self._close(None), np.zeros(0, dtype=bool))
        last = int(self._active[-1])
        self._clock.close_through(last)
        return Emitted(self._close(last + 1), np.zeros(0, dtype=bool))

    def snapshot(self) -> SensorHealthSnapshot:
        """The state as plain values and arrays (it shares them: serialize it before the next push)."""
        return SensorHealthSnapshot(self._clock.snapshot(), self._open.snapshot(), self.stuck_min_count,
                                    self._active, *(getattr(self, f"_{n}") for n in _HEALTH_SENSOR_ARRAYS),
                                    self.late_total)

    @classmethod
    def restore(cls, snap: SensorHealthSnapshot, table: SensorTable) -> SensorHealth:
        """The instance the snapshot was taken of, reading ``table`` (restored from the same snapshot)."""
        health = cls(table, snap.clock.width_ms, snap.clock.lateness_ms, int(snap.stuck_min_count))
        health._clock = _Clock.restore(snap.clock)
        health._open = _OpenWindows.restore(snap.open, _HEALTH_DTYPES)
        health._active = column(snap.active, np.int64, what="active windows")
        n = len(snap.seen)
        if n > len(table):
            raise ValueError(f"snapshot sensor health: {n} sensors, the sensor table has {len(table)}")
        for name, dtype in _HEALTH_SENSOR_ARRAYS.items():
            setattr(health, f"_{name}", column(getattr(snap, name), dtype, n, name))
        health.late_total = int(snap.late_total)
        return health

    def _close(self, before: int | None) -> Columns:
        parts = []
        if before is not None:
            cut = int(np.searchsorted(self._active, before))
            closing, self._active = self._active[:cut], self._active[cut:]
            parts = [self._window_rows(win) for win in closing.tolist()]
        if not parts:
            return {name: np.empty(0, dtype=dt) for name, dt in _HEALTH_ROW_DTYPES.items()}
        return _concat(parts)

    def _window_rows(self, win: int) -> Columns:
        width = self._clock.width
        sensors = np.flatnonzero(self._seen & (self._first_win <= win))
        keys, c = self._open.pop_before(win + 1)
        n = len(sensors)
        at = np.searchsorted(sensors, keys & _SENSOR_MASK)
        count = np.zeros(n, dtype=np.int64)
        count[at] = c["count"]
        max_gap = np.full(n, np.nan)
        max_gap[at] = c["max_gap"]
        stuck = np.zeros(n, dtype=bool)
        stuck[at] = (c["count"] >= self.stuck_min_count) & (c["min"] == c["max"])
        self._last_closed_ts[sensors[at]] = c["max_ts"]
        end = (win + 1) * width
        expected = self.table.nominal_rate_hz[sensors] * (width / 1000.0)
        late = self._late_pending[sensors]
        self._late_pending[sensors] = 0
        return {
            "sensor_key": sensors.astype(np.int32),
            "sensor_id": self.table.sensor_id[sensors],
            "window_start": np.full(n, end - width, dtype=np.int64),
            "window_end": np.full(n, end, dtype=np.int64),
            "observed": count,
            "expected": expected,
            "rate_ratio": _ratio(count, expected),
            "max_gap_ms": max_gap,
            "since_last_ms": end - self._last_closed_ts[sensors],
            "stuck": stuck,
            "late": late,
        }


def sensor_health(sensor: Any, ts_ms: Any, value: Any, nominal_rate_hz: Any,
                  width_ms: int = DEFAULT_WIDTH_MS, stuck_min_count: int = 10,
                  sensor_ids: Sequence[str] | None = None) -> Columns:
    """Sensor health of a complete batch, the same rows the stream emits (see :class:`SensorHealth`)."""
    rate = np.asarray(nominal_rate_hz, dtype=np.float64)
    ids = list(sensor_ids) if sensor_ids is not None else [str(i) for i in range(len(rate))]
    health = SensorHealth(SensorTable.from_arrays(ids, nominal_rate_hz=rate), width_ms,
                          stuck_min_count=stuck_min_count)
    return _concat([health.push(sensor, ts_ms, value).rows, health.flush_all().rows])
