"""Sensor signals: per-sensor dynamics (drift, waves, setpoints, faults, couplings) and sampling.

Everything is an array over all sensors, advanced once per tick with numpy; :class:`_Signals` is
mixed into :class:`~ingestion.simulator.tick.PlantSimulator` and owns the per-sensor state. Sampling
also books what the unit flow needs from the signals (value sums for unit measures, out-of-spec
shares for scrap risk) and hands the readings to the edge effects to become frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ingestion.simulator.config import _SENSOR_SIM_KEYS, SimulatorConfigError
from ingestion.simulator.output import FrameBatch
from schemas.contracts import SignalClass, Stage


@dataclass
class _Gateway:
    name: str
    station: str
    line: str
    stage: Stage
    start: int
    stop: int
    sensor_ids: list[str]


class _Signals:
    """Sensor dynamics and sampling of :class:`~ingestion.simulator.tick.PlantSimulator`."""

    def _build_sensors(self, rng: np.random.Generator) -> None:
        cfg = self._cfg
        pairs = self.plant.sensors_with_templates
        n = len(pairs)
        self.n_sensors = n
        gateways: list[_Gateway] = []
        gw_of = np.empty(n, np.int32)
        seen: dict[str, int] = {}
        for i, (e, _) in enumerate(pairs):
            g = seen.get(e.station)
            if g is None:
                g = seen[e.station] = len(gateways)
                gateways.append(_Gateway(f"{e.site}.{e.station}", e.station, e.line, e.stage, i, i, []))
            elif g != len(gateways) - 1:
                raise SimulatorConfigError(f"{self.plant.source}: sensors of {e.station} are not contiguous")
            gateways[g].stop = i + 1
            gateways[g].sensor_ids.append(e.sensor_id)
            gw_of[i] = g
        self._gateways = gateways
        self._gw_of = gw_of
        self._gw_index = seen
        G = len(gateways)
        NR = len(cfg.reasons)
        reason_ix = {r: i for i, r in enumerate(cfg.reasons)}
        tick = self._tick_ms / 1000.0

        base, noise, drift_sd, drift_tau = np.zeros(n), np.zeros(n), np.zeros(n), np.full(n, 300.0)
        wave, wave_period, sp_step, sp_every = np.zeros(n), np.full(n, 3600.0), np.zeros(n), np.full(n, 3600.0)
        fault, fault_every, fault_s = np.zeros(n), np.full(n, 3600.0), np.full(n, 120.0)
        fault_both = np.zeros(n, bool)
        lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
        lsl, usl = np.full(n, -np.inf), np.full(n, np.inf)
        power, power_noise = np.zeros(n), np.zeros(n)
        is_meter = np.zeros(n, bool)
        period = np.empty(n, np.int64)
        group_key: dict[tuple[int, str], int] = {}
        group_of = np.empty(n, np.int64)
        couples: list[tuple[int, str, float]] = []
        contrib: list[tuple[int, int, float]] = []
        for i, (e, t) in enumerate(pairs):
            sim = t.sim
            where = f"{self.plant.source}: {e.sensor_id}"
            bad = sorted(set(sim) - _SENSOR_SIM_KEYS)
            if bad:
                raise SimulatorConfigError(f"{where}: unknown sim key(s) {bad}")
            period[i] = max(1, int(round(1000.0 / e.nominal_rate_hz)))
            g = int(gw_of[i])
            group_of[i] = group_key.setdefault((g, e.parameter), len(group_key))
            if e.is_energy_meter:
                is_meter[i] = True
                if "power_kw" not in sim:
                    raise SimulatorConfigError(f"{where}: an energy meter needs sim.power_kw")
                power[i] = float(sim["power_kw"])
                power_noise[i] = float(sim.get("power_noise", 0.03))
                continue
            if e.target is not None:
                base[i] = e.target
            elif "base" in sim:
                base[i] = float(sim["base"])
            elif e.lsl is not None and e.usl is not None:
                base[i] = (e.lsl + e.usl) / 2
            else:
                raise SimulatorConfigError(f"{where}: needs a target, both spec limits or sim.base")
            if "noise" in sim:
                sd = float(sim["noise"])
            elif e.lsl is not None and e.usl is not None:
                sd = (e.usl - e.lsl) / 12
            elif e.lsl is not None or e.usl is not None:
                lim = e.lsl if e.lsl is not None else e.usl
                sd = abs(lim - base[i]) / 6
            else:
                sd = 0.01 * abs(base[i]) or 0.01
            noise[i] = sd * cfg.noise_scale
            drift_sd[i] = float(sim.get("drift", sd)) * cfg.drift_scale
            drift_tau[i] = float(sim.get("drift_tau_s", 300.0))
            wave[i] = float(sim.get("wave", 0.0))
            wave_period[i] = float(sim.get("wave_period_s", 3600.0))
            default_step = 2 * sd if e.signal_class is SignalClass.PROCESS_PARAMETER else 0.0
            sp_step[i] = float(sim.get("setpoint_step", default_step))
            sp_every[i] = float(sim.get("setpoint_every_s", 3600.0))
            fault[i] = float(sim.get("fault", 0.0))
            fault_every[i] = float(sim.get("fault_every_s", 3600.0)) / cfg.fault_rate_scale
            fault_s[i] = float(sim.get("fault_s", 120.0))
            fault_both[i] = sim.get("fault_sign") == "both"
            lo[i] = float(sim.get("min", -np.inf))
            hi[i] = float(sim.get("max", np.inf))
            if e.lsl is not None:
                lsl[i] = e.lsl
            if e.usl is not None:
                usl[i] = e.usl
            for c in sim.get("couple", ()):
                couples.append((i, str(c["source"]), float(c["gain"])))
            if "scrap" in sim:
                sc = sim["scrap"]
                reason = sc.get("reason")
                if reason not in reason_ix:
                    raise SimulatorConfigError(f"{where}: scrap reason {reason!r} is not in the plant's sim.scrap")
                if e.lsl is None and e.usl is None:
                    raise SimulatorConfigError(f"{where}: scrap needs spec limits to judge samples")
                during = [Stage(s) for s in sc.get("during", ())]
                targets = [g]
                if during:
                    own = gateways[g]
                    targets = [k for k, gw in enumerate(gateways) if gw.stage in during
                               and (own.line == "site" or gw.line == own.line)]
                for k in targets:
                    contrib.append((i, k * NR + reason_ix[reason], float(sc.get("weight", 0.0))))

        self._base, self._noise = base, noise
        a = np.exp(-tick / np.maximum(drift_tau, 1e-9))
        self._drift_a = a
        self._drift_innov = drift_sd * np.sqrt(1 - a * a)
        self._wave = wave
        self._wave_omega = 2 * np.pi / np.maximum(wave_period, 1e-9) / 1000.0  # per ms
        self._wave_phase = rng.uniform(0, 2 * np.pi, n)
        self._sp_step = sp_step
        self._sp_prob = np.where(sp_step > 0, tick / np.maximum(sp_every, 1e-9), 0.0)
        self._fault = fault
        self._fault_prob = np.where(fault != 0, tick / np.maximum(fault_every, 1e-9), 0.0)
        self._fault_mean_ms = fault_s * 1000.0
        self._fault_both = fault_both
        self._lo, self._hi = lo, hi
        self._clip = bool(np.isfinite(lo).any() or np.isfinite(hi).any())
        self._lsl, self._usl = lsl, usl
        self._power, self._power_noise, self._is_meter = power, power_noise, is_meter
        self._meter_ix = np.flatnonzero(is_meter)
        self._meter_stage = [gateways[int(gw_of[i])].stage.value for i in self._meter_ix]
        self._period = period
        self._local_idx = (np.arange(n) - np.array([gateways[g].start for g in gw_of])).astype(np.int32)

        n_groups = len(group_key)
        self._group_of = group_of
        self._group_size = np.bincount(group_of, minlength=n_groups).astype(np.float64)
        dst, src, gain = [], [], []
        for i, param, gn in couples:
            key = (int(gw_of[i]), param)
            if key not in group_key:
                raise SimulatorConfigError(f"{self.plant.source}: {pairs[i][0].sensor_id} couples to "
                                           f"{param!r}, which its station does not have")
            dst.append(i)
            src.append(group_key[key])
            gain.append(gn)
        self._cp_dst = np.array(dst, np.int64)
        self._cp_src = np.array(src, np.int64)
        self._cp_gain = np.array(gain, np.float64)
        self._n_groups = n_groups

        self._n_reasons = NR
        self._c_sensor = np.array([c[0] for c in contrib], np.int64)
        self._c_slot = np.array([c[1] for c in contrib], np.int64)
        self._c_weight = np.array([c[2] for c in contrib], np.float64)
        self._risk_sensors = np.unique(self._c_sensor)

        # state
        self._next_ms = rng.integers(0, period, dtype=np.int64)  # phase of each sensor's sampling clock
        self._drift = np.zeros(n)
        self._sp_off = np.zeros(n)
        self._fault_off = np.zeros(n)
        self._fault_left = np.zeros(n)
        self._energy = np.where(is_meter, np.round(rng.uniform(2e4, 2e6, n)), 0.0)
        self._level_now = self._levels(0)
        self._level_prev = self._level_now.copy()
        self._oos_frac = np.zeros(n)
        self._vsum = np.zeros(n)
        self._vcnt = np.zeros(n, np.int64)
        self._risk_int = np.zeros((G, NR))
        self._risk_last = np.zeros((G, NR))
        self._risk_ticks = 0
        self._stuck = np.zeros(n, bool)
        self._stuck_left = np.zeros(n)
        self._stuck_val = np.zeros(n)

    def _levels(self, t_ms: int) -> np.ndarray:
        """Noise-free level of every sensor at ``t_ms`` (energy meters: their counter)."""
        lv = self._base + self._sp_off + self._drift + self._fault_off
        lv += self._wave * np.sin(self._wave_omega * t_ms + self._wave_phase)
        if self._cp_dst.size:
            dev = np.bincount(self._group_of, weights=lv - self._base, minlength=self._n_groups) / self._group_size
            lv += np.bincount(self._cp_dst, weights=self._cp_gain * dev[self._cp_src], minlength=self.n_sensors)
        return np.where(self._is_meter, self._energy, lv)

    def _advance_dynamics(self, t1: int) -> None:
        rng = self._rng_dyn
        n = self.n_sensors
        self._drift = self._drift * self._drift_a + self._drift_innov * rng.standard_normal(n)
        change = rng.random(n) < self._sp_prob
        if change.any():
            k = int(change.sum())
            self._sp_off[change] = rng.uniform(-1, 1, k) * self._sp_step[change]
        self._fault_left -= self._tick_ms
        ended = self._fault_left <= 0
        self._fault_off[ended] = 0.0
        begin = ended & (rng.random(n) < self._fault_prob)
        if begin.any():
            k = int(begin.sum())
            sign = np.where(self._fault_both[begin] & (rng.random(k) < 0.5), -1.0, 1.0)
            self._fault_off[begin] = self._fault[begin] * rng.uniform(0.85, 1.15, k) * sign
            mean = self._fault_mean_ms[begin]
            # Capped at three means: an unbounded tail would let one fault dominate a whole shift.
            self._fault_left[begin] = np.minimum(rng.exponential(mean), 3 * mean)
        p = self._power * np.maximum(0.0, 1 + self._power_noise * rng.standard_normal(n))
        de = p * (self._tick_ms / 3_600_000.0)
        self._energy += de
        s = self.summary
        s.energy_kwh += float(de.sum())
        for stage, ix in zip(self._meter_stage, self._meter_ix, strict=True):
            s.energy_by_stage[stage] = s.energy_by_stage.get(stage, 0.0) + float(de[ix])
        self._level_prev = self._level_now
        self._level_now = self._levels(t1)
        if self._stuck_prob:
            self._advance_stuck()

    def _sample(self, t0: int, t1: int) -> list[FrameBatch]:
        """All readings due in [t0, t1), vectorised, split into one frame per gateway."""
        period = self._period
        nxt = self._next_ms
        counts = (t1 - 1 - nxt) // period + 1
        np.maximum(counts, 0, out=counts)
        ends = np.cumsum(counts)
        total = int(ends[-1])
        starts = ends - counts
        self._next_ms = nxt + counts * period
        rep = np.repeat
        ts = rep(nxt, counts)
        ts += (np.arange(total, dtype=np.int64) - rep(starts, counts)) * rep(period, counts)
        lv0 = self._level_prev
        frac = (ts - t0) * (1.0 / self._tick_ms)
        value = rep(lv0, counts) + rep(self._level_now - lv0, counts) * frac
        value += rep(self._noise, counts) * self._rng_noise.standard_normal(total)
        if self._clip:
            np.maximum(value, rep(self._lo, counts), out=value)
            np.minimum(value, rep(self._hi, counts), out=value)
        self._accumulate(value, counts, starts, ends)
        if self._stuck.any():
            m = rep(self._stuck, counts)
            value[m] = rep(self._stuck_val, counts)[m]
        quality = np.zeros(total, np.int8)
        cfg = self._cfg
        if cfg.q_uncertain or cfg.q_bad:
            u = self._rng_edge.random(total)
            quality[u < cfg.q_uncertain + cfg.q_bad] = 1
            quality[u < cfg.q_bad] = 2
        idx = rep(self._local_idx, counts)
        ts += self._start_ms
        return self._frames(t1, idx, ts, value, quality, starts, ends)

    def _accumulate(self, value: np.ndarray, counts: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        """Per-sensor value sums (unit measures) and out-of-spec shares (scrap risk) of this tick."""
        cs = np.empty(value.shape[0] + 1)
        cs[0] = 0.0
        np.cumsum(value, out=cs[1:])
        self._vsum += cs[ends] - cs[starts]
        self._vcnt += counts
        rs = self._risk_sensors
        if rs.size:
            # Only the samples of sensors that feed scrap risk are judged against their limits.
            rc = counts[rs]
            sel = np.repeat(rs, rc)
            pos = np.repeat(starts[rs] - (np.cumsum(rc) - rc), rc) + np.arange(sel.shape[0])
            v = value[pos]
            oos = ((v < self._lsl[sel]) | (v > self._usl[sel])).astype(np.float64)
            ocs = np.zeros(oos.shape[0] + 1)
            np.cumsum(oos, out=ocs[1:])
            e = np.cumsum(rc)
            cnt = ocs[e] - ocs[e - rc]
            has = rc > 0
            self._oos_frac[rs[has]] = cnt[has] / rc[has]
            w = self._c_weight * self._oos_frac[self._c_sensor]
            G, NR = self._risk_int.shape
            rate = np.bincount(self._c_slot, weights=w, minlength=G * NR).reshape(G, NR)
            self._risk_int += rate
            self._risk_last = rate
        self._risk_ticks += 1
