"""Statistical process control on closed window means: EWMA, CUSUM, Western Electric, capability."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from transforms.features.sensors import SensorTable
from transforms.features.windows import Array, Columns, _grown, _ratio, column

#: d2 for moving ranges of two consecutive points (n = 2): sigma = MR-bar / d2.
D2_MOVING_RANGE = 1.128


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


#: Per-sensor state arrays of :class:`SpcState` kept in a snapshot: dtype, and row width for the ring
#: buffers. ``ready`` is not among them: a snapshot holds exactly the ready (charted) sensors.
_SPC_ARRAYS: dict[str, tuple[Any, str | None]] = {
    "mu0": (np.float64, None), "sigma": (np.float64, None), "src": (np.int8, None),
    "base_n": (np.int64, None), "base_prev": (np.float64, None), "base_mr": (np.float64, None),
    "base_sum": (np.float64, None), "z": (np.float64, None), "t": (np.int64, None), "cpos": (np.float64, None),
    "cneg": (np.float64, None), "we": (np.float64, "we"), "cap_n": (np.float64, "cap"),
    "cap_mean": (np.float64, "cap"), "cap_m2": (np.float64, "cap"), "cap_i": (np.int64, None),
}


@dataclass(frozen=True, slots=True)
class SpcStateSnapshot:
    """The state of an :class:`SpcState`: its parameters and the charts of its charted sensors.

    Only CTQ sensors are ever charted (a few in a plant of a thousand), and every other sensor's
    state is the initial one, so ``sensors`` lists the charted sensor keys and ``arrays`` holds one
    entry per charted sensor for every name of ``_SPC_ARRAYS``: a value, or a row for the Western
    Electric buffer (8 wide) and the capability rings (``capability_windows`` wide).
    """

    lam: float
    L: float
    k: float
    h: float
    baseline_windows: int
    capability_windows: int
    given_sigma: dict[str, float]
    sensors: Array
    arrays: dict[str, Array]


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

    def snapshot(self) -> SpcStateSnapshot:
        """The state as plain values and arrays (it shares them: serialize it before the next push)."""
        ready = np.flatnonzero(self._ready)
        return SpcStateSnapshot(self.lam, self.L, self.k, self.h, self.baseline_windows, self.capability_windows,
                                dict(self._given), ready,
                                {name: getattr(self, f"_{name}")[ready] for name in _SPC_ARRAYS})

    @classmethod
    def restore(cls, snap: SpcStateSnapshot, table: SensorTable) -> SpcState:
        """The instance the snapshot was taken of, reading ``table`` (restored from the same snapshot)."""
        spc = cls(table, float(snap.lam), float(snap.L), float(snap.k), float(snap.h), int(snap.baseline_windows),
                  int(snap.capability_windows), {str(k): float(v) for k, v in snap.given_sigma.items()})
        if set(snap.arrays) != set(_SPC_ARRAYS):
            raise ValueError(f"snapshot SPC state: arrays {sorted(snap.arrays)}, expected {sorted(_SPC_ARRAYS)}")
        ready = column(snap.sensors, np.int64, what="charted sensors")
        if len(ready) and (ready.min() < 0 or ready.max() >= len(table) or len(np.unique(ready)) != len(ready)):
            raise ValueError(f"snapshot SPC state: charted sensor keys outside the table of {len(table)} or repeated")
        spc._grow()  # every sensor in its initial state, then the charted ones as they were
        spc._ready[ready] = True
        widths = {None: None, "we": 8, "cap": spc.capability_windows}
        for name, (dtype, width) in _SPC_ARRAYS.items():
            getattr(spc, f"_{name}")[ready] = column(snap.arrays[name], dtype, len(ready), name, widths[width])
        return spc

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
