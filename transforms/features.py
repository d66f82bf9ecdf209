"""Feature math shared by the stream and the batch side: windows, SPC, quality, energy, sensor health.

Why numpy micro-batches: a stream worker has to keep up with ~300,000 readings/s, which a Python loop
per reading cannot do. Every class here takes a whole micro-batch as arrays, and a Python loop only
ever runs over sensors, windows or production events (hundreds per second), never over readings.

Why one module for stream and batch: a Dagster recomputation must produce the numbers the stream
produced. Each state class has a pure twin (``window_stats``, ``sensor_health``, ...) that runs the
same code over a complete batch, so there is one implementation to trust and to test.

Conventions shared by every class:

* Sensors are addressed by a dense int32 key into a :class:`SensorTable` the caller builds from the
  asset model. A frame lists each sensor id once, so ids are looked up once per frame
  (``table.keys_of(frame.sensors)[frame.idx]``) and the hot path never hashes a string.
* Windows are event-time tumbling windows ``[start, start + width)`` aligned to the Unix epoch.
* Watermark = largest event time seen minus ``allowed_lateness_ms``; a window closes, and is emitted
  once, when the watermark reaches its end. A micro-batch is judged against the watermark as it stood
  before the batch (the batch arrived at once), so disorder inside a batch is always tolerated.
  The watermark belongs to an instance (one per stream partition), shared by the sensors it sees: a
  sensor lagging behind its partition shows up as late readings instead of holding every window
  open, and a silent sensor cannot stall the others. Event times must be validated upstream (the
  contracts refuse out-of-range timestamps): one far-future reading would close every window.
* An item whose window has already closed is *late*: it is not folded into any window (that row has
  gone out), it is flagged in the ``late`` mask returned by ``push`` and counted, and the caller keeps
  it in the raw table. Nothing is dropped without being reported.
* State is bounded by sensors and open windows, never by readings.
* Results are dicts of equal-length numpy columns (:data:`Columns`); NaN in a float column means null
  (:func:`to_arrow` turns it into a real null).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from schemas.contracts import AssetEntry, ProductionEvent

#: Columnar result: column name -> 1-D numpy array, all of one length.
Columns = dict[str, np.ndarray]

DEFAULT_WIDTH_MS = 60_000
#: Covers the ~1 s publishing interval of gateway frames plus broker and consumer lag with margin,
#: while delaying a 1-minute feature by only 5 s. Raise it for store-and-forward edge gateways.
DEFAULT_LATENESS_MS = 5_000
#: d2 for moving ranges of two consecutive points (n = 2): sigma = MR-bar / d2.
D2_MOVING_RANGE = 1.128

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


# --------------------------------------------------------------------------- sensor table


class SensorTable:
    """Sensor metadata as numpy columns, indexed by the dense key the feature classes use.

    Keys are stable: an upsert of a known sensor updates its row in place, a new sensor is appended.
    The feature classes read the table at every push, so an asset-model update is picked up without
    rebuilding any state. Missing limits, targets or rates are NaN.
    """

    _FLOAT_FIELDS = ("lsl", "usl", "target", "nominal_rate_hz")
    _BOOL_FIELDS = ("ctq", "is_energy_meter")
    _STR_FIELDS = ("site", "line", "station", "stage")

    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self.sensor_id = np.empty(0, dtype=object)
        self.lsl = np.empty(0)
        self.usl = np.empty(0)
        self.target = np.empty(0)
        self.nominal_rate_hz = np.empty(0)
        self.ctq = np.empty(0, dtype=bool)
        self.is_energy_meter = np.empty(0, dtype=bool)
        self.site = np.empty(0, dtype=object)
        self.line = np.empty(0, dtype=object)
        self.station = np.empty(0, dtype=object)
        self.stage = np.empty(0, dtype=object)
        self._line_codes: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.sensor_id)

    @classmethod
    def from_assets(cls, assets: Iterable[AssetEntry]) -> SensorTable:
        """A table of the asset model's sensors, keyed in the order given."""
        table = cls()
        table.upsert(assets)
        return table

    @classmethod
    def from_arrays(cls, sensor_ids: Sequence[str], **columns: Sequence[Any] | np.ndarray) -> SensorTable:
        """A table from columns (``lsl=[...]``, ``ctq=[...]``...): for tests and batch code."""
        table = cls()
        table._upsert(list(sensor_ids), columns)
        return table

    def upsert(self, assets: Iterable[AssetEntry]) -> np.ndarray:
        """Add or update sensors from asset entries; returns their keys."""
        assets = list(assets)
        cols: dict[str, list[Any]] = {
            name: [getattr(a, name) for a in assets]
            for name in self._FLOAT_FIELDS + self._BOOL_FIELDS + self._STR_FIELDS
        }
        cols["stage"] = [str(s) for s in cols["stage"]]
        return self._upsert([a.sensor_id for a in assets], cols)

    def _upsert(self, ids: list[str], columns: Mapping[str, Any]) -> np.ndarray:
        unknown = set(columns) - set(self._FLOAT_FIELDS + self._BOOL_FIELDS + self._STR_FIELDS)
        if unknown:
            raise ValueError(f"unknown sensor table column(s): {sorted(unknown)}")
        keys = np.empty(len(ids), dtype=np.int32)
        new_ids: list[str] = []
        for i, sid in enumerate(ids):
            key = self._index.get(sid)
            if key is None:
                key = len(self.sensor_id) + len(new_ids)
                self._index[sid] = key
                new_ids.append(sid)
            keys[i] = key
        if len(self._index) > _STRIDE:
            raise ValueError(f"a sensor table holds at most {_STRIDE} sensors")
        if new_ids:
            grow = len(new_ids)
            self.sensor_id = np.concatenate([self.sensor_id, np.array(new_ids, dtype=object)])
            for name in self._FLOAT_FIELDS:
                setattr(self, name, np.concatenate([getattr(self, name), np.full(grow, np.nan)]))
            for name in self._BOOL_FIELDS:
                setattr(self, name, np.concatenate([getattr(self, name), np.zeros(grow, dtype=bool)]))
            for name in self._STR_FIELDS:
                setattr(self, name, np.concatenate([getattr(self, name), np.full(grow, "", dtype=object)]))
        for name, values in columns.items():
            if name in self._FLOAT_FIELDS:
                arr = np.array([np.nan if x is None else x for x in values], dtype=np.float64)
            elif name in self._BOOL_FIELDS:
                arr = np.asarray(values, dtype=bool)
            else:
                arr = np.array(["" if x is None else str(x) for x in values], dtype=object)
            getattr(self, name)[keys] = arr
        self._line_codes = None
        return keys

    def keys_of(self, sensor_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """Keys of sensor ids (int32); -1 for an id the table does not hold."""
        get = self._index.get
        return np.fromiter((get(s, -1) for s in sensor_ids), dtype=np.int32, count=len(sensor_ids))

    def line_codes(self) -> tuple[np.ndarray, np.ndarray]:
        """(code per sensor, line name per code): lets line totals be summed with bincount."""
        if self._line_codes is None:
            names, codes = np.unique(self.line.astype(str), return_inverse=True)
            self._line_codes = (codes.astype(np.int64), names.astype(object))
        return self._line_codes


# --------------------------------------------------------------------------- shared machinery


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


# --------------------------------------------------------------------------- window statistics

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


# --------------------------------------------------------------------------- sensor health

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


# --------------------------------------------------------------------------- SPC


def ewma_halfwidth(sigma: Any, t: Any, lam: float = 0.2, L: float = 3.0) -> np.ndarray:
    """Half-width of the exact EWMA limits after ``t`` points: L sigma sqrt(lam/(2-lam) (1-(1-lam)^2t))."""
    t = np.asarray(t, dtype=np.float64)
    return L * np.asarray(sigma, dtype=np.float64) * np.sqrt(lam / (2.0 - lam) * (1.0 - (1.0 - lam) ** (2.0 * t)))


def ewma_series(x: Any, mu0: float, sigma: float, lam: float = 0.2,
                L: float = 3.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """EWMA chart of a series started at ``mu0``: (z, ucl, lcl, alarm) with the exact limits."""
    x = np.asarray(x, dtype=np.float64)
    z = np.empty(len(x))
    prev = mu0
    for i, xi in enumerate(x.tolist()):
        prev = lam * xi + (1.0 - lam) * prev
        z[i] = prev
    half = ewma_halfwidth(sigma, np.arange(1, len(x) + 1), lam, L)
    ucl, lcl = mu0 + half, mu0 - half
    return z, ucl, lcl, (z > ucl) | (z < lcl)


def cusum_series(x: Any, mu0: float, sigma: float, k: float = 0.5,
                 h: float = 5.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tabular CUSUM started at zero: (C+, C-, alarm) with K = k sigma and H = h sigma.

    No reset after an alarm: a sustained shift keeps the chart in alarm, which is the state a
    dashboard should show until the process is back.
    """
    x = np.asarray(x, dtype=np.float64)
    cpos = np.empty(len(x))
    cneg = np.empty(len(x))
    kk, hh = k * sigma, h * sigma
    p = n = 0.0
    for i, xi in enumerate(x.tolist()):
        p = max(0.0, xi - mu0 - kk + p)
        n = max(0.0, mu0 - kk - xi + n)
        cpos[i], cneg[i] = p, n
    return cpos, cneg, (cpos > hh) | (cneg > hh)


def _we_rules(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Western Electric rules on rows of the last 8 standardised points, newest last (NaN = none).

    A rule fires at the point that completes its pattern: 2 of the last 3 beyond 2 sigma on one
    side, 4 of the last 5 beyond 1 sigma on one side, the last 8 all on one side of the centre.
    """
    r1 = np.abs(buf[:, -1]) > 3.0
    last3, last5 = buf[:, -3:], buf[:, -5:]
    r2 = ((last3 > 2.0).sum(axis=1) >= 2) | ((last3 < -2.0).sum(axis=1) >= 2)
    r3 = ((last5 > 1.0).sum(axis=1) >= 4) | ((last5 < -1.0).sum(axis=1) >= 4)
    r4 = (buf > 0.0).all(axis=1) | (buf < 0.0).all(axis=1)
    return r1, r2, r3, r4


def western_electric(x: Any, mu0: float, sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Western Electric rules 1-4 at every point of a series: four boolean arrays."""
    d = (np.asarray(x, dtype=np.float64) - mu0) / sigma
    padded = np.concatenate([np.full(7, np.nan), d])
    return _we_rules(np.lib.stride_tricks.sliding_window_view(padded, 8))


def moving_range_sigma(x: Any) -> float:
    """Short-term sigma of an individuals series, MR-bar / 1.128; NaN with fewer than two points."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        return math.nan
    return float(np.abs(np.diff(x)).mean() / D2_MOVING_RANGE)


def capability_indices(mean: Any, sigma: Any, lsl: Any, usl: Any) -> tuple[np.ndarray, np.ndarray]:
    """(Cp, Cpk) for a within sigma, or (Pp, Ppk) for an overall sigma; element-wise.

    A one-sided spec has no Cp (NaN) and its Cpk is the index of the side it has; a sigma of zero
    or NaN gives NaN, not infinity, since JSON and Parquet consumers cannot carry infinity.
    """
    mean, sigma, lsl, usl = (np.asarray(a, dtype=np.float64) for a in (mean, sigma, lsl, usl))
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = sigma > 0
        cp = np.where(ok, (usl - lsl) / (6.0 * sigma), np.nan)
        cpk = np.where(ok, np.fmin((usl - mean) / (3.0 * sigma), (mean - lsl) / (3.0 * sigma)), np.nan)
    return cp, cpk


def process_capability(values: Any, subgroup: Any, lsl: float | None, usl: float | None) -> dict[str, float]:
    """Cp, Cpk (pooled within-subgroup sigma) and Pp, Ppk (overall sigma) of raw readings.

    Subgroups are the windows: within sigma is short-term noise, overall sigma adds the drift
    between windows, so Cpk >= Ppk for a drifting process.
    """
    v = np.asarray(values, dtype=np.float64)
    _, inv, n = np.unique(np.asarray(subgroup), return_inverse=True, return_counts=True)
    means = np.bincount(inv, weights=v) / n
    m2 = float(np.bincount(inv, weights=(v - means[inv]) ** 2).sum())
    df = float((n - 1).sum())
    mean = float(v.mean())
    within = math.sqrt(m2 / df) if df > 0 else math.nan
    overall = float(v.std(ddof=1)) if len(v) > 1 else math.nan
    lo = math.nan if lsl is None else lsl
    hi = math.nan if usl is None else usl
    cp, cpk = capability_indices(mean, within, lo, hi)
    pp, ppk = capability_indices(mean, overall, lo, hi)
    return {"mean": mean, "sigma_within": within, "sigma_overall": overall,
            "cp": float(cp), "cpk": float(cpk), "pp": float(pp), "ppk": float(ppk)}


#: Output columns of :class:`SpcState`.
SPC_COLUMNS = (
    "sensor_key", "sensor_id", "window_start", "window_end", "mean", "center", "sigma", "sigma_source",
    "ewma", "ewma_ucl", "ewma_lcl", "ewma_alarm", "cusum_pos", "cusum_neg", "cusum_alarm",
    "we_rule1", "we_rule2", "we_rule3", "we_rule4", "cp", "cpk", "pp", "ppk",
)

_SIGMA_NONE, _SIGMA_SPEC, _SIGMA_BASELINE, _SIGMA_GIVEN = 0, 1, 2, 3
_SIGMA_SOURCES = np.array([None, "spec", "baseline", "given"], dtype=object)


class SpcState:
    """Control charts and capability of critical-to-quality sensors, on closed window means.

    Why window means: a coater thickness gauge at 10 Hz is autocorrelated, so charting raw readings
    against their own short-term noise alarms all the time. Each window mean is charted as one
    individual observation (an I-chart of subgroup means), and the chart sigma is the spread of
    consecutive window means, which is what a real shift has to stand out from.

    Centre line mu0: the spec target, else the midpoint of two-sided limits, else (one-sided spec)
    the mean of the baseline windows. Chart sigma, in order of preference:

    1. ``given``: a per-sensor sigma passed in (a Phase I study; batch code can use
       :func:`moving_range_sigma` on history);
    2. ``baseline``: MR-bar / 1.128 over the first ``baseline_windows`` window means of the sensor
       (Phase I in the stream); the charts restart from zero when it is established;
    3. ``spec``: (usl - lsl) / 6 while the baseline is being collected: the sigma of a process that
       is just capable (Cp = 1), wide enough not to raise false alarms during warm-up.

    With no sigma yet (one-sided spec during the baseline) the chart columns are null. Centre line
    and sigma are fixed when a sensor is first charted; a new SpcState picks up changed limits
    (capability always uses the table's current limits).

    Per window and sensor it emits the EWMA (lam, L, exact time-varying limits), the tabular CUSUM
    (K = k sigma, H = h sigma, no reset after an alarm), Western Electric rules 1-4 on the last
    8 window means (bounded ring buffer per sensor), and capability over the last
    ``capability_windows`` windows (one hour of 1-minute windows by default): Cp/Cpk with the pooled
    within-window sigma, Pp/Ppk with the overall sigma of all readings in that span.
    """

    def __init__(self, table: SensorTable, lam: float = 0.2, L: float = 3.0, k: float = 0.5, h: float = 5.0,
                 baseline_windows: int = 20, capability_windows: int = 60,
                 sigma: Mapping[str, float] | None = None):
        if not 0.0 < lam <= 1.0:
            raise ValueError("lam must be in (0, 1]")
        if baseline_windows < 2 or capability_windows < 1:
            raise ValueError("baseline_windows must be >= 2 and capability_windows >= 1")
        self.table = table
        self.lam, self.L, self.k, self.h = lam, L, k, h
        self.baseline_windows = baseline_windows
        self.capability_windows = capability_windows
        self._given = dict(sigma or {})
        self._ready = np.zeros(0, dtype=bool)
        self._mu0 = np.zeros(0)
        self._sigma = np.zeros(0)
        self._src = np.zeros(0, dtype=np.int8)
        self._base_n = np.zeros(0, dtype=np.int64)
        self._base_prev = np.zeros(0)
        self._base_mr = np.zeros(0)
        self._base_sum = np.zeros(0)
        self._z = np.zeros(0)
        self._t = np.zeros(0, dtype=np.int64)
        self._cpos = np.zeros(0)
        self._cneg = np.zeros(0)
        self._we = np.zeros((0, 8))
        self._cap_n = np.zeros((0, capability_windows))
        self._cap_mean = np.zeros((0, capability_windows))
        self._cap_m2 = np.zeros((0, capability_windows))
        self._cap_i = np.zeros(0, dtype=np.int64)

    def _grow(self) -> None:
        n = len(self.table)
        if len(self._ready) >= n:
            return
        self._ready = _grown(self._ready, n, False)
        for name, fill in (("_mu0", np.nan), ("_sigma", np.nan), ("_src", 0), ("_base_n", 0),
                           ("_base_prev", np.nan), ("_base_mr", 0.0), ("_base_sum", 0.0), ("_z", np.nan),
                           ("_t", 0), ("_cpos", 0.0), ("_cneg", 0.0), ("_we", np.nan), ("_cap_n", 0.0),
                           ("_cap_mean", 0.0), ("_cap_m2", 0.0), ("_cap_i", 0)):
            setattr(self, name, _grown(getattr(self, name), n, fill))

    def _init_sensors(self, idx: np.ndarray) -> None:
        idx = idx[~self._ready[idx]]
        if not len(idx):
            return
        tb = self.table
        lsl, usl, target = tb.lsl[idx], tb.usl[idx], tb.target[idx]
        self._mu0[idx] = np.where(np.isfinite(target), target, (lsl + usl) / 2.0)
        given = np.array([self._given.get(sid, np.nan) for sid in tb.sensor_id[idx]], dtype=np.float64)
        spec = (usl - lsl) / 6.0
        has_given = np.isfinite(given) & (given > 0)
        has_spec = np.isfinite(spec) & (spec > 0)
        self._sigma[idx] = np.where(has_given, given, np.where(has_spec, spec, np.nan))
        self._src[idx] = np.where(has_given, _SIGMA_GIVEN, np.where(has_spec, _SIGMA_SPEC, _SIGMA_NONE))
        self._restart(idx)
        self._ready[idx] = True

    def _restart(self, idx: np.ndarray) -> None:
        self._z[idx] = self._mu0[idx]
        self._t[idx] = 0
        self._cpos[idx] = 0.0
        self._cneg[idx] = 0.0
        self._we[idx] = np.nan

    def push(self, windows: Columns) -> Columns:
        """Chart the closed windows of :class:`WindowStats` that belong to CTQ sensors.

        Needs the columns sensor_key, window_start, window_end, count, mean, std. Windows of one
        sensor must arrive in window order, which is the order ``WindowStats`` emits them in.
        """
        self._grow()
        sensor_all = np.asarray(windows["sensor_key"], dtype=np.int64)
        sel = np.flatnonzero(self.table.ctq[sensor_all]) if len(sensor_all) else np.empty(0, dtype=np.int64)
        sensor = sensor_all[sel]
        m = len(sel)
        x = np.asarray(windows["mean"], dtype=np.float64)[sel]
        count = np.asarray(windows["count"], dtype=np.float64)[sel]
        std = np.asarray(windows["std"], dtype=np.float64)[sel]
        m2 = np.where(count >= 2, np.nan_to_num(std) ** 2 * (count - 1), 0.0)
        self._init_sensors(np.unique(sensor))
        out: Columns = {
            "sensor_key": sensor.astype(np.int32),
            "sensor_id": self.table.sensor_id[sensor],
            "window_start": np.asarray(windows["window_start"], dtype=np.int64)[sel],
            "window_end": np.asarray(windows["window_end"], dtype=np.int64)[sel],
            "mean": x,
        }
        for name in ("center", "sigma", "ewma", "ewma_ucl", "ewma_lcl", "cusum_pos", "cusum_neg",
                     "cp", "cpk", "pp", "ppk"):
            out[name] = np.full(m, np.nan)
        for name in ("ewma_alarm", "cusum_alarm", "we_rule1", "we_rule2", "we_rule3", "we_rule4"):
            out[name] = np.zeros(m, dtype=bool)
        src = np.zeros(m, dtype=np.int8)
        # Vectorised across sensors; the loop runs once per window a sensor has in this batch.
        order = np.argsort(sensor, kind="stable")
        first = np.ones(m, dtype=bool)
        first[1:] = sensor[order][1:] != sensor[order][:-1]
        rank = np.arange(m) - np.maximum.accumulate(np.where(first, np.arange(m), 0))
        for r in range(int(rank.max()) + 1 if m else 0):
            rows = order[rank == r]
            self._step(sensor[rows], x[rows], count[rows], m2[rows], rows, out, src)
        out["sigma_source"] = _SIGMA_SOURCES[src]
        return {name: out[name] for name in SPC_COLUMNS}

    def _step(self, s: np.ndarray, x: np.ndarray, n: np.ndarray, m2: np.ndarray, rows: np.ndarray,
              out: Columns, src_out: np.ndarray) -> None:
        # Phase I: collect a baseline for sensors lacking a given sigma or a centre line.
        lacking = (self._src[s] != _SIGMA_GIVEN) | ~np.isfinite(self._mu0[s])
        base = lacking & (self._base_n[s] < self.baseline_windows)
        if base.any():
            b = s[base]
            xb = x[base]
            had = self._base_n[b] > 0
            self._base_mr[b] += np.where(had, np.abs(xb - self._base_prev[b]), 0.0)
            self._base_prev[b] = xb
            self._base_sum[b] += xb
            self._base_n[b] += 1
            done = b[self._base_n[b] == self.baseline_windows]
            if len(done):
                sig = self._base_mr[done] / (self.baseline_windows - 1) / D2_MOVING_RANGE
                new_sigma = (self._src[done] != _SIGMA_GIVEN) & (sig > 0)
                new_mu0 = ~np.isfinite(self._mu0[done])
                self._sigma[done[new_sigma]] = sig[new_sigma]
                self._src[done[new_sigma]] = _SIGMA_BASELINE
                self._mu0[done[new_mu0]] = self._base_sum[done[new_mu0]] / self.baseline_windows
                self._restart(done[new_sigma | new_mu0])
        mu0, sigma = self._mu0[s], self._sigma[s]
        charted = np.isfinite(mu0) & np.isfinite(sigma)
        lam = self.lam
        self._t[s] += charted
        z = np.where(charted, lam * x + (1.0 - lam) * self._z[s], np.nan)
        self._z[s] = np.where(charted, z, self._z[s])
        half = ewma_halfwidth(sigma, self._t[s], lam, self.L)
        kk, hh = self.k * sigma, self.h * sigma
        cpos = np.where(charted, np.maximum(0.0, x - mu0 - kk + self._cpos[s]), np.nan)
        cneg = np.where(charted, np.maximum(0.0, mu0 - kk - x + self._cneg[s]), np.nan)
        self._cpos[s] = np.where(charted, cpos, self._cpos[s])
        self._cneg[s] = np.where(charted, cneg, self._cneg[s])
        buf = self._we[s]
        buf[:, :-1] = buf[:, 1:]
        buf[:, -1] = np.where(charted, (x - mu0) / sigma, np.nan)
        self._we[s] = buf
        r1, r2, r3, r4 = _we_rules(buf)
        out["center"][rows] = mu0
        out["sigma"][rows] = sigma
        out["ewma"][rows] = z
        out["ewma_ucl"][rows] = np.where(charted, mu0 + half, np.nan)
        out["ewma_lcl"][rows] = np.where(charted, mu0 - half, np.nan)
        out["ewma_alarm"][rows] = charted & ((z > mu0 + half) | (z < mu0 - half))
        out["cusum_pos"][rows] = cpos
        out["cusum_neg"][rows] = cneg
        out["cusum_alarm"][rows] = charted & ((cpos > hh) | (cneg > hh))
        for i, rule in enumerate((r1, r2, r3, r4), start=1):
            out[f"we_rule{i}"][rows] = charted & rule
        src_out[rows] = self._src[s]
        # Capability over a ring of the last windows: (count, mean, M2) per window is enough to
        # pool within-window variance and to rebuild the overall variance exactly.
        slot = self._cap_i[s] % self.capability_windows
        self._cap_n[s, slot] = n
        self._cap_mean[s, slot] = x
        self._cap_m2[s, slot] = m2
        self._cap_i[s] += 1
        cn, cm, cm2 = self._cap_n[s], self._cap_mean[s], self._cap_m2[s]
        total = cn.sum(axis=1)
        grand = (cn * cm).sum(axis=1) / total
        within_df = np.maximum(cn - 1.0, 0.0).sum(axis=1)
        within_m2 = cm2.sum(axis=1)
        overall_m2 = within_m2 + (cn * (cm - grand[:, None]) ** 2).sum(axis=1)
        sigma_within = np.sqrt(_ratio(within_m2, within_df))
        sigma_overall = np.sqrt(_ratio(overall_m2, total - 1.0))
        lsl, usl = self.table.lsl[s], self.table.usl[s]
        out["cp"][rows], out["cpk"][rows] = capability_indices(grand, sigma_within, lsl, usl)
        out["pp"][rows], out["ppk"][rows] = capability_indices(grand, sigma_overall, lsl, usl)


# --------------------------------------------------------------------------- quality

_QUALITY_COUNTERS = (
    "units_in", "units_out", "good", "scrapped", "reworked", "first_pass_good", "first_pass_scrapped",
    "grade_a", "grade_b", "grade_c", "grade_other",
)
(_IN, _OUT, _GOOD, _SCRAP, _REWORK, _FP_GOOD, _FP_SCRAP, _GA, _GB, _GC, _GOTHER) = range(len(_QUALITY_COUNTERS))
_GRADE_SLOT = {"A": _GA, "B": _GB, "C": _GC}

#: Output columns of :class:`QualityWindows` and :func:`quality_windows`.
QUALITY_COLUMNS = ("site", "line", "stage", "window_start", "window_end", *_QUALITY_COUNTERS, "yield",
                   "first_pass_yield", "scrap_by_reason")


class QualityWindows:
    """Units, scrap, yield and first-pass yield per line and stage per window, from production events.

    Definitions, all per (window, site, line, stage), each event counted in the window of its event
    time:

    * ``units_in`` / ``units_out``: enter / leave events.
    * ``scrapped``: scrap events; ``scrap_by_reason``: the same per reason, as a dict.
    * ``good``: leave events of units not scrapped at that stage during their current visit (a
      scrap must precede the leave in event time to take the unit out of ``good``).
    * ``reworked``: units entering a stage for the second time (rework = a second visit); counted
      once per unit, at that second entry.
    * ``first_pass_good`` / ``first_pass_scrapped``: good leaves / scraps on a unit's first visit.
    * ``yield`` = good / (good + scrapped).
    * ``first_pass_yield`` = (first_pass_good - reworked) / (first_pass_good + first_pass_scrapped),
      clipped at 0: a unit that left good and came back for rework was not good first time. The
      rework is seen at the later re-entry, so the ratio is exact over any span long enough to hold
      the rework loop; rollups must recompute it from the summed counters, which are additive.
    * ``grade_a``/``grade_b``/``grade_c``/``grade_other``: grade events (the EOL grading at aging_eol).

    Visit numbers need one unit's events in event-time order. ``plant.events.v1`` is keyed by line,
    which keeps them so (a unit never changes line); disorder between units is fine. Per-unit visit state is kept for
    ``rework_memory_ms`` of event time after the unit's last event (bounded by the units passing in
    that span, not by events); a rework later than that counts as a first visit. Late events update
    the visit state but no window. Events are few (one per unit and stage, not per reading), so they
    are folded in a Python loop.
    """

    def __init__(self, width_ms: int = DEFAULT_WIDTH_MS, allowed_lateness_ms: int = DEFAULT_LATENESS_MS,
                 rework_memory_ms: int = 6 * 3_600_000):
        self._clock = _Clock(width_ms, allowed_lateness_ms)
        self.rework_memory_ms = int(rework_memory_ms)
        self._open: dict[tuple[int, str, str, str], list[int]] = {}
        self._scrap: dict[tuple[int, str, str, str], dict[str, int]] = {}
        # (unit_id, stage) -> [visits, scrapped in current visit, last event time]
        self._units: OrderedDict[tuple[str, str], list[Any]] = OrderedDict()
        self.late_total = 0

    @property
    def watermark_ms(self) -> int | None:
        return self._clock.watermark

    @property
    def tracked_units(self) -> int:
        return len(self._units)

    def push_events(self, events: Sequence[ProductionEvent]) -> Emitted:
        """Push typed production events (the stream agent's path)."""
        return self.push(
            [(e.ts - _EPOCH) // _MS for e in events], [e.line for e in events], [str(e.stage) for e in events],
            [str(e.kind) for e in events], [e.unit_id for e in events], [e.reason for e in events],
            [e.grade for e in events], [e.site for e in events],
        )

    def push(self, ts_ms: Any, line: Sequence[str], stage: Sequence[str], kind: Sequence[str],
             unit_id: Sequence[str], reason: Sequence[str | None] | None = None,
             grade: Sequence[str | None] | None = None, site: Sequence[str] | None = None) -> Emitted:
        """Fold a batch of events in (in event-time order) and return the windows that closed."""
        ts = np.asarray(ts_ms, dtype=np.int64)
        n = len(ts)
        if not (len(line) == len(stage) == len(kind) == len(unit_id) == n):
            raise ValueError("event columns must have one length")
        reason = reason if reason is not None else [None] * n
        grade = grade if grade is not None else [None] * n
        site = site if site is not None else [""] * n
        self._clock.check_range(ts)
        wins = ts // self._clock.width
        late = self._clock.late(wins)
        units = self._units
        for i in np.argsort(ts, kind="stable").tolist():
            t = int(ts[i])
            st = str(stage[i])
            k = str(kind[i])
            ukey = (str(unit_id[i]), st)
            state = units.get(ukey)
            if state is None:
                state = units[ukey] = [0, False, t]
            else:
                units.move_to_end(ukey)
                state[2] = max(state[2], t)
            counters = None
            if not late[i]:
                wkey = (int(wins[i]), str(site[i]), str(line[i]), st)
                counters = self._open.get(wkey)
                if counters is None:
                    counters = self._open[wkey] = [0] * len(_QUALITY_COUNTERS)
            if k == "enter":
                state[0] += 1
                state[1] = False
                if counters is not None:
                    counters[_IN] += 1
                    if state[0] == 2:
                        counters[_REWORK] += 1
            elif k == "leave":
                if counters is not None:
                    counters[_OUT] += 1
                    if not state[1]:
                        counters[_GOOD] += 1
                        if state[0] <= 1:
                            counters[_FP_GOOD] += 1
            elif k == "scrap":
                state[1] = True
                if counters is not None:
                    counters[_SCRAP] += 1
                    if state[0] <= 1:
                        counters[_FP_SCRAP] += 1
                    by_reason = self._scrap.setdefault(wkey, {})
                    r = str(reason[i]) if reason[i] is not None else "unknown"
                    by_reason[r] = by_reason.get(r, 0) + 1
            elif k == "grade" and counters is not None:
                counters[_GRADE_SLOT.get(str(grade[i]).upper(), _GOTHER)] += 1
        self.late_total += int(np.count_nonzero(late))
        if n:
            self._clock.advance(int(ts.max()))
            horizon = self._clock.max_ts - self.rework_memory_ms
            while units and next(iter(units.values()))[2] < horizon:
                units.popitem(last=False)
        return Emitted(self._close(self._clock.closed_before), late)

    def flush_all(self) -> Emitted:
        """Close every open window; later events for them are late."""
        if not self._open:
            return Emitted(self._close(None), np.zeros(0, dtype=bool))
        last = max(key[0] for key in self._open)
        self._clock.close_through(last)
        return Emitted(self._close(last + 1), np.zeros(0, dtype=bool))

    def _close(self, before: int | None) -> Columns:
        width = self._clock.width
        closing = sorted(k for k in self._open if before is not None and k[0] < before)
        counts = np.array([self._open.pop(k) for k in closing], dtype=np.int64).reshape(-1, len(_QUALITY_COUNTERS))
        start = np.array([k[0] * width for k in closing], dtype=np.int64)
        rows: Columns = {
            "site": np.array([k[1] for k in closing], dtype=object),
            "line": np.array([k[2] for k in closing], dtype=object),
            "stage": np.array([k[3] for k in closing], dtype=object),
            "window_start": start,
            "window_end": start + width,
        }
        for j, name in enumerate(_QUALITY_COUNTERS):
            rows[name] = counts[:, j]
        rows["yield"] = _ratio(rows["good"], rows["good"] + rows["scrapped"])
        rows["first_pass_yield"] = _ratio(np.maximum(rows["first_pass_good"] - rows["reworked"], 0),
                                          rows["first_pass_good"] + rows["first_pass_scrapped"])
        by_reason = np.empty(len(closing), dtype=object)
        by_reason[:] = [dict(sorted(self._scrap.pop(k, {}).items())) for k in closing]
        rows["scrap_by_reason"] = by_reason
        return rows


def quality_windows(ts_ms: Any, line: Sequence[str], stage: Sequence[str], kind: Sequence[str],
                    unit_id: Sequence[str], reason: Sequence[str | None] | None = None,
                    grade: Sequence[str | None] | None = None, site: Sequence[str] | None = None,
                    width_ms: int = DEFAULT_WIDTH_MS) -> Columns:
    """Quality windows of a complete batch of events, the rows the stream emits."""
    q = QualityWindows(width_ms)
    return _concat([q.push(ts_ms, line, stage, kind, unit_id, reason, grade, site).rows, q.flush_all().rows])


# --------------------------------------------------------------------------- energy

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
