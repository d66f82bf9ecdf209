"""kWh per energy meter and per line per window, from cumulative counters; energy intensity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from transforms.features.sensors import SensorTable
from transforms.features.windows import (
    _NO_TS,
    _SENSOR_BITS,
    _SENSOR_MASK,
    _STRIDE,
    DEFAULT_LATENESS_MS,
    DEFAULT_WIDTH_MS,
    Array,
    ClockSnapshot,
    Columns,
    EnergyEmitted,
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

_ENERGY_DTYPES = {"kwh": np.float64, "readings": np.int64, "counter_resets": np.int64, "gaps": np.int64,
                  "gap_ms": np.float64, "out_of_order": np.int64}

#: Output columns of :class:`EnergyWindows` rows and line rows.
ENERGY_COLUMNS = ("sensor_key", "sensor_id", "site", "line", "station", "stage", "window_start", "window_end",
                  "kwh", "readings", "counter_resets", "gaps", "gap_ms", "out_of_order", "late_kwh")
ENERGY_LINE_COLUMNS = ("line", "window_start", "window_end", "kwh", "late_kwh", "meters")


def _merge_energy(a: Columns, b: Columns) -> Columns:
    out = {k: a[k] + b[k] for k in a}
    out["gap_ms"] = np.fmax(a["gap_ms"], b["gap_ms"])
    return out


@dataclass(frozen=True, slots=True)
class EnergyWindowsSnapshot:
    """The state of an :class:`EnergyWindows`; per-meter arrays are indexed by sensor key."""

    clock: ClockSnapshot
    open: OpenWindowsSnapshot
    gap_factor: float
    last_ts: Array
    last_v: Array
    late_kwh: Array
    late_total: int


class EnergyWindows:
    """kWh per energy meter (station) and per line per window, from cumulative kWh counters.

    Only sensors flagged ``is_energy_meter`` are used; other readings in the batch are ignored, so
    a whole frame can be pushed. Per meter, readings are taken in event-time order and:

    * the energy of a step is the counter difference, attributed to the window of the later
      reading (no interpolation: a counter says how much, not when);
    * a drop is a counter reset (rollover, meter swap, PLC restart): the new value is the energy
      since zero; counted in ``counter_resets``;
    * a step longer than ``gap_factor`` nominal sampling periods is still attributed whole to the
      later reading's window and counted in ``gaps``, so a window that absorbed an outage's energy
      can be recognised; ``gap_ms`` is the longest step ending in the window (null with none);
    * the first reading of a meter only sets the baseline;
    * a reading older than (or as old as) one already seen for that meter is skipped and counted in
      ``out_of_order``: a cumulative counter's later value already includes it, and a difference
      against it would look like a reset;
    * a reading whose window has already closed still advances the counter, and its energy is
      reported as ``late_kwh`` on the meter's next row, so kwh + late_kwh conserves the meter total.
    """

    def __init__(self, table: SensorTable, width_ms: int = DEFAULT_WIDTH_MS,
                 allowed_lateness_ms: int = DEFAULT_LATENESS_MS, gap_factor: float = 5.0):
        self.table = table
        self.gap_factor = float(gap_factor)
        self._clock = _Clock(width_ms, allowed_lateness_ms)
        self._open = _OpenWindows(_ENERGY_DTYPES)
        self._last_ts = np.zeros(0, dtype=np.int64)
        self._last_v = np.zeros(0)
        self._late_kwh = np.zeros(0)
        self.late_total = 0

    @property
    def watermark_ms(self) -> int | None:
        return self._clock.watermark

    def push(self, sensor: Any, ts_ms: Any, value: Any) -> EnergyEmitted:
        """Fold a micro-batch in and return the closed energy windows."""
        s, t, v = _readings(len(self.table), sensor, ts_ms, value)
        n = len(self.table)
        self._last_ts = _grown(self._last_ts, n, _NO_TS)
        self._last_v = _grown(self._last_v, n, np.nan)
        self._late_kwh = _grown(self._late_kwh, n, 0.0)
        late = np.zeros(len(s), dtype=bool)
        meters = np.flatnonzero(self.table.is_energy_meter[s])
        if len(meters):
            s, t, v = s[meters], t[meters], v[meters]
            self._clock.check_range(t)
            width = self._clock.width
            is_late = self._clock.late(t // width)
            late[meters] = is_late
            self.late_total += int(np.count_nonzero(is_late))
            self._fold(s, t, v, is_late, width)
            self._clock.advance(int(t.max()))
        rows, line_rows = self._rows(*self._open.pop_before(self._clock.closed_before))
        return EnergyEmitted(rows, line_rows, late)

    def _fold(self, s: np.ndarray, t: np.ndarray, v: np.ndarray, is_late: np.ndarray, width: int) -> None:
        g = _group(s, t, width)
        ss, ts, vs, ls = g.sensor, g.ts, v[g.order], is_late[g.order]
        prev_t = np.empty(len(ts), dtype=np.int64)
        prev_t[1:] = ts[:-1]
        prev_t[g.run_first] = _NO_TS
        kept = (ts > prev_t) & (ts > self._last_ts[ss])
        k = np.flatnonzero(kept)
        ks, kt, kv = ss[k], ts[k], vs[k]
        kfirst = np.ones(len(k), dtype=bool)
        kfirst[1:] = ks[1:] != ks[:-1]
        pv = np.empty(len(k))
        pv[1:] = kv[:-1]
        pv[kfirst] = self._last_v[ks[kfirst]]
        pt = np.empty(len(k), dtype=np.int64)
        pt[1:] = kt[:-1]
        pt[kfirst] = self._last_ts[ks[kfirst]]
        baseline = np.isnan(pv)
        pt[baseline] = kt[baseline]
        delta = kv - pv
        reset = delta < 0
        delta = np.where(reset, kv, delta)
        delta[baseline] = 0.0
        period_ms = 1000.0 / self.table.nominal_rate_hz[ks]
        step = np.where(baseline, np.nan, (kt - pt).astype(np.float64))
        gap = ~baseline & (step > self.gap_factor * period_ms)
        klast = np.append(np.flatnonzero(kfirst)[1:], len(k)) - 1 if len(k) else k
        self._last_ts[ks[klast]] = kt[klast]
        self._last_v[ks[klast]] = kv[klast]
        kl = ls[k]
        if kl.any():
            self._late_kwh += np.bincount(ks[kl], weights=delta[kl], minlength=len(self._late_kwh))
        d_all = np.zeros(len(ts))
        d_all[k] = delta
        r_all = np.zeros(len(ts), dtype=np.int64)
        r_all[k] = reset
        gap_all = np.zeros(len(ts), dtype=np.int64)
        gap_all[k] = gap
        step_all = np.full(len(ts), np.nan)
        step_all[k] = step
        f = np.flatnonzero(~ls)
        if not len(f):
            return
        fs, fw = ss[f], g.win[f]
        brk = np.ones(len(f), dtype=bool)
        brk[1:] = (fs[1:] != fs[:-1]) | (fw[1:] != fw[:-1])
        starts = np.flatnonzero(brk)
        kept_f = kept[f].astype(np.int64)
        self._open.merge(fw[starts] * _STRIDE + fs[starts], {
            "kwh": np.add.reduceat(d_all[f], starts),
            "readings": np.add.reduceat(kept_f, starts),
            "counter_resets": np.add.reduceat(r_all[f], starts),
            "gaps": np.add.reduceat(gap_all[f], starts),
            "gap_ms": np.fmax.reduceat(step_all[f], starts),
            "out_of_order": np.add.reduceat(1 - kept_f, starts),
        }, _merge_energy)

    def flush_all(self) -> EnergyEmitted:
        """Close every open window; later readings for them are late."""
        keys, cols = self._open.pop_all()
        if len(keys):
            self._clock.close_through(int(keys[-1] >> _SENSOR_BITS))
        rows, line_rows = self._rows(keys, cols)
        return EnergyEmitted(rows, line_rows, np.zeros(0, dtype=bool))

    def snapshot(self) -> EnergyWindowsSnapshot:
        """The state as plain values and arrays (it shares them: serialize it before the next push)."""
        return EnergyWindowsSnapshot(self._clock.snapshot(), self._open.snapshot(), self.gap_factor,
                                     self._last_ts, self._last_v, self._late_kwh, self.late_total)

    @classmethod
    def restore(cls, snap: EnergyWindowsSnapshot, table: SensorTable) -> EnergyWindows:
        """The instance the snapshot was taken of, reading ``table`` (restored from the same snapshot)."""
        energy = cls(table, snap.clock.width_ms, snap.clock.lateness_ms, float(snap.gap_factor))
        energy._clock = _Clock.restore(snap.clock)
        energy._open = _OpenWindows.restore(snap.open, _ENERGY_DTYPES)
        n = len(snap.last_ts)
        if n > len(table):
            raise ValueError(f"snapshot energy windows: {n} meters, the sensor table has {len(table)}")
        energy._last_ts = column(snap.last_ts, np.int64, n, "last_ts")
        energy._last_v = column(snap.last_v, np.float64, n, "last_v")
        energy._late_kwh = column(snap.late_kwh, np.float64, n, "late_kwh")
        energy.late_total = int(snap.late_total)
        return energy

    @property
    def pending_late_kwh(self) -> np.ndarray:
        """Late energy per sensor key not yet reported on a row."""
        return self._late_kwh.copy()

    def _rows(self, keys: np.ndarray, c: Columns) -> tuple[Columns, Columns]:
        width = self._clock.width
        sensor = (keys & _SENSOR_MASK).astype(np.int64)
        win = keys >> _SENSOR_BITS
        start = win * width
        late_kwh = np.zeros(len(keys))
        if len(keys):
            # Pending late energy goes on the meter's first row of this emission, then is cleared.
            _, first = np.unique(sensor, return_index=True)
            late_kwh[first] = self._late_kwh[sensor[first]]
            self._late_kwh[sensor[first]] = 0.0
        rows: Columns = {
            "sensor_key": sensor.astype(np.int32),
            "sensor_id": self.table.sensor_id[sensor],
            "site": self.table.site[sensor],
            "line": self.table.line[sensor],
            "station": self.table.station[sensor],
            "stage": self.table.stage[sensor],
            "window_start": start,
            "window_end": start + width,
            "kwh": c["kwh"],
            "readings": c["readings"],
            "counter_resets": c["counter_resets"],
            "gaps": c["gaps"],
            "gap_ms": c["gap_ms"],
            "out_of_order": c["out_of_order"],
            "late_kwh": late_kwh,
        }
        codes, names = self.table.line_codes()
        n_lines = max(len(names), 1)
        lkey = win * n_lines + codes[sensor]
        ukey, at, inv = np.unique(lkey, return_index=True, return_inverse=True)
        lstart = (ukey // n_lines) * width
        line_rows: Columns = {
            "line": names[codes[sensor[at]]] if len(ukey) else np.empty(0, dtype=object),
            "window_start": lstart,
            "window_end": lstart + width,
            "kwh": np.bincount(inv, weights=c["kwh"], minlength=len(ukey)),
            "late_kwh": np.bincount(inv, weights=late_kwh, minlength=len(ukey)),
            "meters": np.bincount(inv, minlength=len(ukey)).astype(np.int64),
        }
        return rows, line_rows


def energy_windows(table: SensorTable, sensor: Any, ts_ms: Any, value: Any, width_ms: int = DEFAULT_WIDTH_MS,
                   gap_factor: float = 5.0) -> tuple[Columns, Columns]:
    """Energy windows of a complete batch: (rows per meter, rows per line), as the stream emits them."""
    e = EnergyWindows(table, width_ms, gap_factor=gap_factor)
    a = e.push(sensor, ts_ms, value)
    b = e.flush_all()
    return _concat([a.rows, b.rows]), _concat([a.line_rows, b.line_rows])


def cell_capacity_kwh(capacity_ah: float, nominal_voltage_v: float) -> float:
    """Energy content of one cell in kWh (Ah x V / 1000), the denominator of kWh per kWh of capacity."""
    return capacity_ah * nominal_voltage_v / 1000.0


def energy_intensity(kwh: Any, good_cells: Any, cell_capacity: float | Any) -> tuple[np.ndarray, np.ndarray]:
    """(kWh per good cell, kWh of production energy per kWh of good cell capacity), element-wise.

    ``kwh`` and ``good_cells`` must cover the same span and scope (a line's energy over a window
    with the good cells that left its last stage in it); NaN where no good cell was produced.
    The second figure is the one benchmarked in the literature (20-40 kWh_prod/kWh_cell today).
    """
    kwh = np.asarray(kwh, dtype=np.float64)
    good = np.asarray(good_cells, dtype=np.float64)
    per_cell = _ratio(kwh, good)
    return per_cell, _ratio(per_cell, np.asarray(cell_capacity, dtype=np.float64))
