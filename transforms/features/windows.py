"""Shared machinery of the windowed feature classes: watermark clock, open windows, grouping.

Every windowed class (:mod:`.stats`, :mod:`.health`, :mod:`.energy`, :mod:`.quality`) keeps its
open windows in an :class:`_OpenWindows` keyed by (window index, sensor key) packed into one int64,
and judges lateness with a :class:`_Clock`; the conventions are in the package docstring.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

#: Columnar result: column name -> 1-D numpy array, all of one length.
Columns = dict[str, np.ndarray]

DEFAULT_WIDTH_MS = 60_000
#: Covers the ~1 s publishing interval of gateway frames plus broker and consumer lag with margin,
#: while delaying a 1-minute feature by only 5 s. Raise it for store-and-forward edge gateways.
DEFAULT_LATENESS_MS = 5_000

# A window key packs (window index, sensor key) into one int64 so that open windows sort by window
# first: the windows a watermark closes are then always a prefix of the sorted keys.
_SENSOR_BITS = 24
_STRIDE = 1 << _SENSOR_BITS
_SENSOR_MASK = _STRIDE - 1
_MAX_WINDOW_INDEX = 1 << 38
_MIN_WIDTH_MS = 100
_NO_TS = np.iinfo(np.int64).min
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class Emitted:
    """What one ``push`` produced: rows of the windows it closed, and which inputs were late."""

    rows: Columns
    late: np.ndarray


@dataclass(frozen=True, slots=True)
class EnergyEmitted:
    """Closed energy windows per meter (``rows``) and per line (``line_rows``), and the late mask."""

    rows: Columns
    line_rows: Columns
    late: np.ndarray


#: A snapshot's array: a numpy array in memory, a JSON list on disk (restore accepts either).
Array = np.ndarray | list


def column(values: Any, dtype: Any, n: int | None = None, what: str = "column", width: int | None = None) -> np.ndarray:
    """A fresh array of ``dtype`` from a snapshot's list or array, checked for its length.

    Restoring never shares memory with the snapshot, and a list of the wrong length (a snapshot
    of another table, a hand-edited file) fails here with its name instead of deep in numpy later.
    JSON has no NaN: a null in a float column comes back as NaN.
    """
    arr = np.array(values, dtype=dtype)
    if width is not None and arr.shape == (0,):
        arr = arr.reshape(0, width)  # JSON writes an empty (0, width) array as []
    shape_ok = arr.ndim == 1 if width is None else (arr.ndim == 2 and arr.shape[1] == width)
    if not shape_ok or (n is not None and len(arr) != n):
        want = (n if n is not None else "n",) + (() if width is None else (width,))
        raise ValueError(f"snapshot {what}: expected shape {want}, got {arr.shape}")
    return arr


@dataclass(frozen=True, slots=True)
class ClockSnapshot:
    """A watermark clock: its parameters and how far it has advanced."""

    width_ms: int
    lateness_ms: int
    max_ts: int | None
    closed_before: int | None


@dataclass(frozen=True, slots=True)
class OpenWindowsSnapshot:
    """Open windows: packed (window, sensor) keys, sorted, and one aggregate column per name."""

    keys: Array
    cols: dict[str, Array]


class _Clock:
    """Watermark bookkeeping shared by every windowed class (see the module docstring)."""

    __slots__ = ("width", "lateness", "max_ts", "closed_before")

    def __init__(self, width_ms: int, lateness_ms: int):
        if int(width_ms) < _MIN_WIDTH_MS:
            raise ValueError(f"window width must be at least {_MIN_WIDTH_MS} ms, got {width_ms}")
        if int(lateness_ms) < 0:
            raise ValueError(f"allowed lateness must not be negative, got {lateness_ms}")
        self.width = int(width_ms)
        self.lateness = int(lateness_ms)
        self.max_ts: int | None = None
        #: Windows with an index below this are closed; None until anything was seen.
        self.closed_before: int | None = None

    @property
    def watermark(self) -> int | None:
        return None if self.max_ts is None else self.max_ts - self.lateness

    def snapshot(self) -> ClockSnapshot:
        return ClockSnapshot(self.width, self.lateness, self.max_ts, self.closed_before)

    @classmethod
    def restore(cls, snap: ClockSnapshot) -> _Clock:
        clock = cls(snap.width_ms, snap.lateness_ms)
        clock.max_ts = None if snap.max_ts is None else int(snap.max_ts)
        clock.closed_before = None if snap.closed_before is None else int(snap.closed_before)
        return clock

    def late(self, win: np.ndarray) -> np.ndarray:
        if self.closed_before is None:
            return np.zeros(len(win), dtype=bool)
        return win < self.closed_before

    def advance(self, ts_max: int) -> None:
        self.max_ts = ts_max if self.max_ts is None else max(self.max_ts, ts_max)
        closed = (self.max_ts - self.lateness) // self.width
        self.closed_before = closed if self.closed_before is None else max(self.closed_before, closed)

    def close_through(self, win: int) -> None:
        """After a flush: later items for the flushed windows must count as late, not reopen them."""
        self.closed_before = win + 1 if self.closed_before is None else max(self.closed_before, win + 1)

    def check_range(self, ts: np.ndarray) -> None:
        if len(ts) and (ts.max() >= _MAX_WINDOW_INDEX * self.width or ts.min() < -_MAX_WINDOW_INDEX * self.width):
            raise ValueError("event time outside the supported range (validate timestamps before the features)")


class _OpenWindows:
    """Aggregates of the windows not yet closed, as columns sorted by window key."""

    def __init__(self, dtypes: Mapping[str, Any]):
        self.keys = np.empty(0, dtype=np.int64)
        self.cols: Columns = {name: np.empty(0, dtype=dt) for name, dt in dtypes.items()}

    def __len__(self) -> int:
        return len(self.keys)

    def merge(self, keys: np.ndarray, values: Columns, combine: Callable[[Columns, Columns], Columns]) -> None:
        """Fold one batch's per-window aggregates in; ``keys`` are unique within the batch."""
        if not len(keys):
            return
        o = np.argsort(keys)
        keys = keys[o]
        values = {k: v[o] for k, v in values.items()}
        pos = np.searchsorted(self.keys, keys)
        if len(self.keys):
            found = self.keys[np.minimum(pos, len(self.keys) - 1)] == keys
        else:
            found = np.zeros(len(keys), dtype=bool)
        if found.any():
            at = pos[found]
            merged = combine({k: c[at] for k, c in self.cols.items()}, {k: v[found] for k, v in values.items()})
            for k, c in self.cols.items():
                c[at] = merged[k]
        if not found.all():
            new = ~found
            at = pos[new]
            self.keys = np.insert(self.keys, at, keys[new])
            for k in self.cols:
                self.cols[k] = np.insert(self.cols[k], at, values[k][new])

    def pop_before(self, win: int | None) -> tuple[np.ndarray, Columns]:
        """Remove and return every window whose index is below ``win`` (a sorted prefix)."""
        cut = 0 if win is None else int(np.searchsorted(self.keys, win * _STRIDE, side="left"))
        out_keys, self.keys = self.keys[:cut], self.keys[cut:]
        out = {}
        for k, c in self.cols.items():
            out[k], self.cols[k] = c[:cut], c[cut:]
        return out_keys, out

    def pop_all(self) -> tuple[np.ndarray, Columns]:
        return self.pop_before(None if not len(self.keys) else int(self.keys[-1] >> _SENSOR_BITS) + 1)

    def snapshot(self) -> OpenWindowsSnapshot:
        """The open windows; shares the live arrays, so serialize it before the next push."""
        return OpenWindowsSnapshot(self.keys, dict(self.cols))

    @classmethod
    def restore(cls, snap: OpenWindowsSnapshot, dtypes: Mapping[str, Any]) -> _OpenWindows:
        if set(snap.cols) != set(dtypes):
            raise ValueError(f"snapshot open windows: columns {sorted(snap.cols)}, expected {sorted(dtypes)}")
        out = cls(dtypes)
        out.keys = column(snap.keys, np.int64, what="open window keys")
        if len(out.keys) > 1 and not (np.diff(out.keys) > 0).all():
            raise ValueError("snapshot open window keys are not sorted and unique")
        out.cols = {k: column(snap.cols[k], dt, len(out.keys), f"open window column {k!r}")
                    for k, dt in dtypes.items()}
        return out


@dataclass(slots=True)
class _Groups:
    """A batch sorted by (sensor, event time), cut into (sensor, window) groups."""

    order: np.ndarray
    sensor: np.ndarray
    ts: np.ndarray
    win: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    run_first: np.ndarray

    @property
    def keys(self) -> np.ndarray:
        return self.win[self.starts] * _STRIDE + self.sensor[self.starts]


def _order_by_sensor_time(sensor: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Stable order by (sensor, event time), so ties in event time keep their arrival order."""
    if not len(ts):
        return np.empty(0, dtype=np.int64)
    t0 = ts.min()
    if ts.max() - t0 < (1 << 38):
        # One int64 sort key instead of a two-key lexsort: about twice as fast on a frame.
        return np.argsort((sensor << 38) | (ts - t0), kind="stable")
    return np.lexsort((ts, sensor))


def _group(sensor: np.ndarray, ts: np.ndarray, width: int) -> _Groups:
    order = _order_by_sensor_time(sensor, ts)
    s = sensor[order]
    t = ts[order]
    w = t // width
    n = len(t)
    run_first = np.empty(n, dtype=bool)
    run_first[:1] = True
    np.not_equal(s[1:], s[:-1], out=run_first[1:])
    brk = run_first.copy()
    brk[1:] |= w[1:] != w[:-1]
    starts = np.flatnonzero(brk)
    counts = np.diff(np.append(starts, n))
    return _Groups(order, s, t, w, starts, counts, run_first)


def _readings(n_sensors: int, sensor: Any, ts_ms: Any, value: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = np.asarray(sensor)
    if s.size == 0:
        s = s.astype(np.int64)
    if s.dtype.kind not in "iu":
        raise TypeError("sensor must be integer keys of the SensorTable (see SensorTable.keys_of)")
    s = s.astype(np.int64, copy=False)
    t = np.asarray(ts_ms, dtype=np.int64)
    v = np.asarray(value, dtype=np.float64)
    if not (s.ndim == t.ndim == v.ndim == 1 and len(s) == len(t) == len(v)):
        raise ValueError("sensor, ts_ms and value must be 1-D arrays of one length")
    if len(s) and (s.min() < 0 or s.max() >= n_sensors):
        raise ValueError("sensor key outside the sensor table")
    return s, t, v


def _grown(arr: np.ndarray, n: int, fill: Any) -> np.ndarray:
    if len(arr) >= n:
        return arr
    extra = np.full((n - len(arr),) + arr.shape[1:], fill, dtype=arr.dtype)
    return np.concatenate([arr, extra])


def _concat(parts: Sequence[Columns]) -> Columns:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def to_arrow(columns: Columns) -> pa.Table:
    """A pyarrow Table of result columns; NaN floats and None strings become nulls.

    Object columns are strings, except columns of dicts (``scrap_by_reason``), which become
    ``map<string, int64>``. Times stay int64 epoch milliseconds; the sink casts them to timestamps.
    """
    arrays = {}
    for name, arr in columns.items():
        if arr.dtype.kind == "f":
            arrays[name] = pa.array(arr, mask=np.isnan(arr))
        elif arr.dtype == object and any(isinstance(x, dict) for x in arr.tolist()):
            arrays[name] = pa.array(arr.tolist(), type=pa.map_(pa.string(), pa.int64()))
        elif arr.dtype == object:
            arrays[name] = pa.array(arr.tolist(), type=pa.string())
        else:
            arrays[name] = pa.array(arr)
    return pa.table(arrays)
