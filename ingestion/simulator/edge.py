"""Edge effects of legacy plants: polling gaps, stuck sensors, clock skew, late frames, manual records.

:class:`_EdgeEffects` is mixed into :class:`~ingestion.simulator.tick.PlantSimulator`; it turns a
tick's readings into per-gateway frames and damages them the way old gateways and paper do.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from ingestion.simulator.output import FrameBatch
from schemas.contracts import EventKind, ProductionEvent


class _Held:
    __slots__ = ("release_tick", "frame")

    def __init__(self, release_tick: int, frame: FrameBatch):
        self.release_tick = release_tick
        self.frame = frame


class _EdgeEffects:
    """What the edge does to readings and records on their way out of the plant."""

    def _build_edge(self, rng: np.random.Generator) -> None:
        cfg = self._cfg
        G = len(self._gateways)
        self._skew_off = rng.uniform(-cfg.skew_max_ms, cfg.skew_max_ms, G) if cfg.skew_max_ms else np.zeros(G)
        self._skew_drift = (rng.uniform(-cfg.skew_drift_ms_per_h, cfg.skew_drift_ms_per_h, G)
                            if cfg.skew_drift_ms_per_h else np.zeros(G))
        self._skewed = bool(cfg.skew_max_ms or cfg.skew_drift_ms_per_h)
        self._gap_left = np.zeros(G)
        self._gap_prob = cfg.gaps_per_hour * self.tick_s / 3600.0
        frac = min(cfg.stuck_fraction, 0.9)
        self._stuck_prob = frac / (cfg.stuck_mean_s * (1 - frac)) * self.tick_s if frac > 0 else 0.0
        if frac > 0:
            # Start in equilibrium: some sensors have been frozen for a while already.
            n = self.n_sensors
            self._stuck = rng.random(n) < frac
            self._stuck_val = self._level_now.copy()
            self._stuck_left = np.where(self._stuck, rng.exponential(cfg.stuck_mean_s * 1000.0, n), 0.0)
        self._held: deque[_Held] = deque()
        self._late_ticks = max(1, math.ceil(cfg.late_max_s / self.tick_s)) if cfg.late_probability else 0
        self._manual: deque[tuple[int, ProductionEvent]] = deque()
        self._manual_batch_ms = int(cfg.manual_batch_s * 1000)
        self._manual_lag_ms = int(cfg.manual_lag_s * 1000)
        self._manual_kinds = frozenset(EventKind(k) for k in cfg.manual_kinds)
        self._gw_first = np.array([g.start for g in self._gateways])
        self._gw_last = np.array([g.stop for g in self._gateways])

    def _advance_stuck(self) -> None:
        rng = self._rng_edge
        n = self.n_sensors
        self._stuck_left -= self._tick_ms
        self._stuck &= self._stuck_left > 0
        begin = ~self._stuck & (rng.random(n) < self._stuck_prob)
        if begin.any():
            self._stuck |= begin
            self._stuck_val[begin] = self._level_now[begin]
            self._stuck_left[begin] = rng.exponential(self._cfg.stuck_mean_s * 1000.0, int(begin.sum()))

    def _frames(self, t1: int, idx: np.ndarray, ts: np.ndarray, value: np.ndarray, quality: np.ndarray,
                starts: np.ndarray, ends: np.ndarray) -> list[FrameBatch]:
        rb = starts[self._gw_first]
        re = ends[self._gw_last - 1]
        gap_start = None
        if self._gap_prob:
            self._gap_left -= self._tick_ms
            gap_start = self._rng_edge.random(len(self._gateways)) < self._gap_prob
        late = None
        if self._late_ticks:
            late = self._rng_edge.random(len(self._gateways)) < self._cfg.late_probability
        frames: list[FrameBatch] = []
        s = self.summary
        for g, gw in enumerate(self._gateways):
            a, b = int(rb[g]), int(re[g])
            if gap_start is not None:
                if self._gap_left[g] <= 0 and gap_start[g]:
                    self._gap_left[g] = self._rng_edge.exponential(self._cfg.gap_mean_s * 1000.0)
                if self._gap_left[g] > 0:
                    s.readings_dropped += b - a
                    continue
            if a == b:
                continue
            t = ts[a:b]
            if self._skewed:
                t = t + int(self._skew_off[g] + self._skew_drift[g] * t1 / 3_600_000.0)
            fr = FrameBatch(gw.name, gw.sensor_ids, idx[a:b], t, value[a:b], quality[a:b])
            if late is not None and late[g]:
                delay = int(self._rng_edge.integers(1, self._late_ticks + 1))
                self._held.append(_Held(self._tick_no + delay, fr))
                s.frames_late += 1
                continue
            frames.append(fr)
        if self._held:
            keep: deque[_Held] = deque()
            for h in self._held:
                if h.release_tick <= self._tick_no:
                    frames.append(h.frame)
                else:
                    keep.append(h)
            self._held = keep
        return frames

    def _flush_manual(self, t1: int) -> list[ProductionEvent]:
        """Hand-entered quality records arrive in batches, some time after they were measured."""
        if not self._manual or t1 // self._manual_batch_ms == self._now_ms // self._manual_batch_ms:
            return []
        out = []
        cutoff = t1 - self._manual_lag_ms
        while self._manual and self._manual[0][0] <= cutoff:
            out.append(self._manual.popleft()[1])
        self.summary.events_manual += len(out)
        return out
