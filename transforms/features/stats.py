"""Per-sensor tumbling-window statistics (``sensor_features_1m`` and ``_1h``) and their pure twin."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from transforms.features.sensors import SensorTable
from transforms.features.windows import (
    _SENSOR_BITS,
    _SENSOR_MASK,
    DEFAULT_LATENESS_MS,
    DEFAULT_WIDTH_MS,
    ClockSnapshot,
    Columns,
    Emitted,
    OpenWindowsSnapshot,
    _Clock,
    _concat,
    _group,
    _OpenWindows,
    _readings,
)

_STATS_DTYPES = {
    "count": np.int64, "mean": np.float64, "m2": np.float64, "min": np.float64, "max": np.float64,
    "last_ts": np.int64, "last": np.float64, "out_of_spec": np.int64,
}

#: Output columns of :class:`WindowStats` and :func:`window_stats`.
WINDOW_STATS_COLUMNS = (
    "sensor_key", "sensor_id", "window_start", "window_end", "count", "mean", "std",
    "min", "max", "last", "out_of_spec",
)


def _merge_stats(a: Columns, b: Columns) -> Columns:
    # Chan et al.'s pairwise update: sums of squares would lose every digit on a signal whose
    # variance is tiny against its level (a 87.000 +- 0.002 um coating, a 3.6 V OCV).
    na = a["count"].astype(np.float64)
    nb = b["count"].astype(np.float64)
    n = na + nb
    delta = b["mean"] - a["mean"]
    newer = b["last_ts"] >= a["last_ts"]
    return {
        "count": a["count"] + b["count"],
        "mean": a["mean"] + delta * (nb / n),
        "m2": a["m2"] + b["m2"] + delta * delta * (na * nb / n),
        "min": np.minimum(a["min"], b["min"]),
        "max": np.maximum(a["max"], b["max"]),
        "last_ts": np.where(newer, b["last_ts"], a["last_ts"]),
        "last": np.where(newer, b["last"], a["last"]),
        "out_of_spec": a["out_of_spec"] + b["out_of_spec"],
    }


@dataclass(frozen=True, slots=True)
class WindowStatsSnapshot:
    """The state of a :class:`WindowStats`: its clock, its open windows and its late count."""

    clock: ClockSnapshot
    open: OpenWindowsSnapshot
    late_total: int


class WindowStats:
    """Per-sensor tumbling-window statistics over event time, for ``sensor_features_1m``.

    Per (sensor, window): count, mean, sample std (ddof=1, null below two readings), min, max, last
    value by event time (ties go to the later arrival) and the number of readings outside the
    sensor's spec limits. Mean and variance are merged with a pairwise (Chan) update across
    micro-batches so chunking does not change the result beyond rounding.
    """

    def __init__(self, table: SensorTable, width_ms: int = DEFAULT_WIDTH_MS,
                 allowed_lateness_ms: int = DEFAULT_LATENESS_MS):
        self.table = table
        self._clock = _Clock(width_ms, allowed_lateness_ms)
        self._open = _OpenWindows(_STATS_DTYPES)
        self.late_total = 0

    @property
    def width_ms(self) -> int:
        return self._clock.width

    @property
    def watermark_ms(self) -> int | None:
        """Largest event time seen minus the allowed lateness; None before the first reading."""
        return self._clock.watermark

    @property
    def open_windows(self) -> int:
        return len(self._open)

    def push(self, sensor: Any, ts_ms: Any, value: Any) -> Emitted:
        """Fold a micro-batch in and return the windows the advanced watermark closed."""
        s, t, v = _readings(len(self.table), sensor, ts_ms, value)
        self._clock.check_range(t)
        width = self._clock.width
        late = self._clock.late(t // width)
        n_late = int(np.count_nonzero(late))
        if n_late:
            keep = ~late
            s, t, v = s[keep], t[keep], v[keep]
            self.late_total += n_late
        if len(t):
            keys, agg = _stats_aggregate(s, t, v, width, self.table.lsl, self.table.usl)
            self._open.merge(keys, agg, _merge_stats)
            self._clock.advance(int(t.max()))
        return Emitted(self._rows(*self._open.pop_before(self._clock.closed_before)), late)

    def flush_all(self) -> Emitted:
        """Close every open window (end of a drain or a replay); later readings for them are late."""
        keys, cols = self._open.pop_all()
        if len(keys):
            self._clock.close_through(int(keys[-1] >> _SENSOR_BITS))
        return Emitted(self._rows(keys, cols), np.zeros(0, dtype=bool))

    def snapshot(self) -> WindowStatsSnapshot:
        """The state as plain values and arrays (it shares them: serialize it before the next push)."""
        return WindowStatsSnapshot(self._clock.snapshot(), self._open.snapshot(), self.late_total)

    @classmethod
    def restore(cls, snap: WindowStatsSnapshot, table: SensorTable) -> WindowStats:
        """The instance the snapshot was taken of, reading ``table`` (restored from the same snapshot)."""
        stats = cls(table, snap.clock.width_ms, snap.clock.lateness_ms)
        stats._clock = _Clock.restore(snap.clock)
        stats._open = _OpenWindows.restore(snap.open, _STATS_DTYPES)
        stats.late_total = int(snap.late_total)
        return stats

    def _rows(self, keys: np.ndarray, c: Columns) -> Columns:
        sensor = (keys & _SENSOR_MASK).astype(np.int32)
        start = (keys >> _SENSOR_BITS) * self._clock.width
        count = c["count"]
        std = np.full(len(keys), np.nan)
        many = count >= 2
        std[many] = np.sqrt(c["m2"][many] / (count[many] - 1))
        return {
            "sensor_key": sensor,
            "sensor_id": self.table.sensor_id[sensor],
            "window_start": start,
            "window_end": start + self._clock.width,
            "count": count,
            "mean": c["mean"],
            "std": std,
            "min": c["min"],
            "max": c["max"],
            "last": c["last"],
            "out_of_spec": c["out_of_spec"],
        }


def _stats_aggregate(s: np.ndarray, t: np.ndarray, v: np.ndarray, width: int,
                     lsl: np.ndarray, usl: np.ndarray) -> tuple[np.ndarray, Columns]:
    g = _group(s, t, width)
    vs = v[g.order]
    starts, counts = g.starts, g.counts
    # Shift each group by its first value so the sums stay small: the mean keeps its digits on
    # a signal with a large offset.
    shifted = vs - np.repeat(vs[starts], counts)
    offset = np.add.reduceat(shifted, starts) / counts
    mean = vs[starts] + offset
    dev = shifted - np.repeat(offset, counts)
    last = starts + counts - 1
    # NaN limits compare False: a missing limit never counts a reading out of spec.
    oos = (vs < lsl[g.sensor]) | (vs > usl[g.sensor])
    return g.keys, {
        "count": counts,
        "mean": mean,
        "m2": np.add.reduceat(dev * dev, starts),
        "min": np.minimum.reduceat(vs, starts),
        "max": np.maximum.reduceat(vs, starts),
        "last_ts": g.ts[last],
        "last": vs[last],
        "out_of_spec": np.add.reduceat(oos.astype(np.int64), starts),
    }


def window_stats(sensor: Any, ts_ms: Any, value: Any, lsl: Any, usl: Any,
                 width_ms: int = DEFAULT_WIDTH_MS, sensor_ids: Sequence[str] | None = None) -> Columns:
    """Window statistics of a complete batch: the stream's numbers, recomputed in one call.

    ``lsl``/``usl`` are per-sensor arrays indexed by sensor key; ``sensor_ids`` names the keys in
    the output (``str(key)`` when omitted). Rows are sorted by window start, then sensor key.
    """
    lsl = np.asarray(lsl, dtype=np.float64)
    ids = list(sensor_ids) if sensor_ids is not None else [str(i) for i in range(len(lsl))]
    table = SensorTable.from_arrays(ids, lsl=lsl, usl=np.asarray(usl, dtype=np.float64))
    stats = WindowStats(table, width_ms)
    return _concat([stats.push(sensor, ts_ms, value).rows, stats.flush_all().rows])
