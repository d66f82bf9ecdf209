"""Deterministic digital twin of a cell plant: sensor frames and production events from a plant file.

Ingest benchmarks, stream tests and the demo need a plant that behaves like one (drifting dryers,
dew-point excursions, scrap that follows out-of-spec process data) and that replays bit for bit
from a seed. The simulator is driven only by a loaded :class:`schemas.asset_model.Plant`: sensors,
their rates and spec limits come from the asset model, their dynamics from the opaque ``sim:``
blocks that only this module interprets.

Speed and memory: readings are generated per tick for all sensors at once with numpy (no Python
loop per reading); state is a handful of arrays sized by the number of sensors, plus the units in
flight, so memory does not grow with the simulated duration.

Time compression: slurry batches take hours, formation and aging take days to weeks. The plant's
``sim.timing_s`` compresses them into simulated seconds (defaults: a 120 s slurry batch, a 30 s
roll, 40 s of formation and 40 s of aging), and the line starts with a few electrode rolls from
stock (``...-STOCKnn``, without history), so the first graded cells appear after about 90 simulated seconds and the electrode
genealogy of every cell made from the line's own rolls is complete after about 5 minutes. The flow
rate (cells per hour) is the plant's real one, so energy per cell and scrap rates are realistic.

Sensor ``sim`` keys (all optional):

* ``base``: value when the template has no target; ``noise``: gaussian sigma (default: a twelfth
  of the spec width, i.e. Cp 2); ``drift`` / ``drift_tau_s``: stationary sigma and time constant
  of a mean-reverting random walk; ``wave`` / ``wave_period_s``: sinusoid amplitude and period.
* ``setpoint_step`` / ``setpoint_every_s``: occasional setpoint changes of up to +-step.
* ``fault`` / ``fault_every_s`` / ``fault_s`` / ``fault_sign``: step faults of about ``fault``
  (signed; ``fault_sign: both`` picks a random sign), mean duration ``fault_s`` (at most three times).
* ``couple``: ``[{source: parameter, gain: g}]`` adds g times the mean deviation from target of that
  parameter on the same station (dryer temperature -> residual moisture, line load -> density).
  Sources contribute their own dynamics only; couplings do not chain.
* ``min`` / ``max``: physical bounds the value is clipped to.
* ``scrap``: ``{reason, weight, during}``: while a unit is at this sensor's station (or, with
  ``during``, at any station of those stages, e.g. the dry room during filling), the share of this
  sensor's samples outside its spec limits times ``weight`` adds to the unit's scrap probability for
  ``reason``.
* energy meters: ``power_kw`` (mean power of what the meter measures), ``power_noise`` (relative).

Plant ``sim`` keys: ``timing_s``, ``routes`` (station ids of each electrode and of the cell route),
``scrap`` (reason -> detection stage and base probability), ``unit_measures`` (parameter -> noise of
the per-unit measure event), ``cell_model`` (overrides of :class:`CellModel`), ``noise_scale``,
``drift_scale``, ``fault_rate_scale``, and the legacy traits ``polling_gaps``, ``stuck``,
``clock_skew``, ``late``, ``manual_quality`` and ``quality_flags``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from schemas.asset_model import Plant
from schemas.contracts import (
    EventKind,
    ProductionEvent,
    SignalClass,
    Stage,
    UnitType,
    encode_frame_arrays,
)

DEFAULT_START = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)

_SENSOR_SIM_KEYS = frozenset({
    "base", "noise", "drift", "drift_tau_s", "wave", "wave_period_s", "setpoint_step", "setpoint_every_s",
    "fault", "fault_every_s", "fault_s", "fault_sign", "couple", "min", "max", "scrap", "power_kw", "power_noise",
})
_PLANT_SIM_KEYS = frozenset({
    "timing_s", "routes", "scrap", "unit_measures", "cell_model", "noise_scale", "drift_scale",
    "fault_rate_scale", "polling_gaps", "stuck", "clock_skew", "late", "manual_quality", "quality_flags",
})
_DEFAULT_TIMING_S = {
    "slurry_batch": 120.0, "roll": 30.0, "calendering": 10.0, "slitting": 10.0, "vacuum_drying": 30.0,
    "stacking": 4.0, "filling": 8.0, "formation": 40.0, "aging_eol": 40.0,
}
_STAGE_RANK = {s: i for i, s in enumerate(Stage)}
_CELL_UNITS = {"capacity": "Ah", "dcir": "mΩ", "self_discharge": "mV/day", "ocv": "V"}


class SimulatorConfigError(ValueError):
    """A plant whose ``sim`` settings the simulator cannot run; the message names the field."""


# --------------------------------------------------------------------------- public value types

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


@dataclass(frozen=True)
class CellModel:
    """How a cell's end-of-line properties follow from its history; overridable per plant.

    Electrode risk (what the cell inherits from its rolls) lowers capacity and raises DCIR; the
    total risk raises self-discharge. Grades and measurement-based scrap use the limits below.
    """

    capacity_rel: float = 1.008
    capacity_sigma_rel: float = 0.005
    capacity_risk_rel: float = 0.06
    eol_fade_rel: float = 0.997
    dcir_mohm: float = 1.0
    dcir_sigma_rel: float = 0.04
    dcir_risk_rel: float = 0.4
    self_discharge_mv_day: float = 0.9
    self_discharge_sigma_rel: float = 0.15
    self_discharge_risk: float = 2.0
    ocv_v: float = 3.60
    min_capacity_rel: float = 0.97
    max_dcir_rel: float = 1.3
    max_self_discharge: float = 2.0
    a_capacity_rel: float = 0.997
    a_dcir_rel: float = 1.12
    a_self_discharge: float = 1.3
    b_capacity_rel: float = 0.99
    b_dcir_rel: float = 1.2
    b_self_discharge: float = 1.6


# --------------------------------------------------------------------------- plant settings

@dataclass(frozen=True)
class _Settings:
    timing_ms: dict[str, int]
    routes: dict[str, list[str]]
    reasons: list[str]
    reason_stage: list[Stage]
    reason_base: list[float]
    unit_measures: dict[str, float]
    cell: CellModel
    noise_scale: float
    drift_scale: float
    fault_rate_scale: float
    gaps_per_hour: float
    gap_mean_s: float
    stuck_fraction: float
    stuck_mean_s: float
    skew_max_ms: float
    skew_drift_ms_per_h: float
    late_probability: float
    late_max_s: float
    manual_kinds: tuple[str, ...]
    manual_batch_s: float
    manual_lag_s: float
    q_uncertain: float
    q_bad: float

    @classmethod
    def from_plant(cls, plant: Plant) -> _Settings:
        sim = dict(plant.template.sim)
        unknown = sorted(set(sim) - _PLANT_SIM_KEYS)
        if unknown:
            raise SimulatorConfigError(f"{plant.source}: unknown plant sim key(s) {unknown}")
        timing = dict(_DEFAULT_TIMING_S)
        for k, v in (sim.get("timing_s") or {}).items():
            if k not in timing or float(v) <= 0:
                raise SimulatorConfigError(f"{plant.source}: sim.timing_s.{k} is unknown or not positive")
            timing[k] = float(v)
        routes = sim.get("routes")
        if not isinstance(routes, dict) or "cell" not in routes or len(routes) < 2:
            raise SimulatorConfigError(f"{plant.source}: sim.routes needs a 'cell' route and electrode routes")
        scrap = sim.get("scrap") or {}
        reasons, stages, bases = [], [], []
        for name, spec in scrap.items():
            try:
                stages.append(Stage(spec["stage"]))
                bases.append(float(spec.get("base", 0.0)))
            except (KeyError, ValueError, TypeError):
                raise SimulatorConfigError(f"{plant.source}: sim.scrap.{name} needs a valid stage") from None
            reasons.append(str(name))
        cell_over = sim.get("cell_model") or {}
        try:
            cell = CellModel(**cell_over)
        except TypeError as exc:
            raise SimulatorConfigError(f"{plant.source}: sim.cell_model: {exc}") from None
        gaps = sim.get("polling_gaps") or {}
        stuck = sim.get("stuck") or {}
        skew = sim.get("clock_skew") or {}
        late = sim.get("late") or {}
        manual = sim.get("manual_quality") or {}
        bad_kinds = sorted(set(manual.get("kinds", ())) - {k.value for k in EventKind})
        if bad_kinds:
            raise SimulatorConfigError(f"{plant.source}: sim.manual_quality.kinds has unknown kinds {bad_kinds}")
        qf = sim.get("quality_flags") or {}
        return cls(
            timing_ms={k: int(round(v * 1000)) for k, v in timing.items()},
            routes={str(k): [str(s) for s in v] for k, v in routes.items()},
            reasons=reasons, reason_stage=stages, reason_base=bases,
            unit_measures={str(k): float(v) for k, v in (sim.get("unit_measures") or {}).items()},
            cell=cell,
            noise_scale=float(sim.get("noise_scale", 1.0)),
            drift_scale=float(sim.get("drift_scale", 1.0)),
            fault_rate_scale=float(sim.get("fault_rate_scale", 1.0)),
            gaps_per_hour=float(gaps.get("per_hour", 0.0)),
            gap_mean_s=float(gaps.get("mean_s", 10.0)),
            stuck_fraction=float(stuck.get("fraction", 0.0)),
            stuck_mean_s=float(stuck.get("mean_s", 600.0)),
            skew_max_ms=float(skew.get("max_offset_ms", 0.0)),
            skew_drift_ms_per_h=float(skew.get("max_drift_ms_per_h", 0.0)),
            late_probability=float(late.get("probability", 0.0)),
            late_max_s=float(late.get("max_delay_s", 0.0)),
            manual_kinds=tuple(str(k) for k in manual.get("kinds", ())),
            manual_batch_s=float(manual.get("batch_s", 300.0)),
            manual_lag_s=float(manual.get("lag_s", 0.0)),
            q_uncertain=float(qf.get("uncertain", 0.0)),
            q_bad=float(qf.get("bad", 0.0)),
        )


# --------------------------------------------------------------------------- internal structures

@dataclass
class _Gateway:
    name: str
    station: str
    line: str
    stage: Stage
    start: int
    stop: int
    sensor_ids: list[str]


@dataclass
class _Measure:
    attribute: str
    unit: str
    sensors: np.ndarray
    sigma: float


@dataclass
class _Step:
    gateway: int
    stage: Stage
    duration_ms: int
    measures: list[_Measure]
    queue: deque = field(default_factory=deque)


class _Unit:
    __slots__ = ("uid", "utype", "line", "parents", "risk", "n_events", "index", "data")

    def __init__(self, uid: str, utype: UnitType, line: str, parents: list[str], risk: np.ndarray, index: int):
        self.uid = uid
        self.utype = utype
        self.line = line
        self.parents = parents
        self.risk = risk
        self.n_events = 0
        self.index = index
        self.data: dict[str, float] = {}


class _Visit:
    __slots__ = ("unit", "enter_ms", "leave_ms", "r0", "n0", "m0")

    def __init__(self, unit: _Unit, enter_ms: int, leave_ms: int, r0: np.ndarray, n0: int,
                 m0: list[tuple[float, int]]):
        self.unit = unit
        self.enter_ms = enter_ms
        self.leave_ms = leave_ms
        self.r0 = r0
        self.n0 = n0
        self.m0 = m0


@dataclass
class _ElectrodeRoute:
    name: str
    steps: list[_Step]
    next_batch: int = 0
    next_roll: int = 0
    ready_batches: dict[int, _Unit] = field(default_factory=dict)
    ready_rolls: dict[int, _Unit] = field(default_factory=dict)
    stock: list[_Unit] = field(default_factory=list)


@dataclass
class _LineFlow:
    line: str
    prefix: str
    routes: list[_ElectrodeRoute]
    cell_steps: list[_Step]
    next_cell: int = 0


class _Held:
    __slots__ = ("release_tick", "frame")

    def __init__(self, release_tick: int, frame: FrameBatch):
        self.release_tick = release_tick
        self.frame = frame


# --------------------------------------------------------------------------- simulator

class PlantSimulator:
    """Runs one plant tick by tick; the same plant, seed, start and tick give identical output.

    ``run`` can be called repeatedly: each call continues where the last one stopped, so two runs
    of 60 s yield exactly what one run of 120 s yields. ``summary`` is kept up to date while the
    iterator is consumed.
    """

    def __init__(self, plant: Plant, seed: int, start: datetime = DEFAULT_START, tick_s: float = 1.0):
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")
        tick_ms = int(round(tick_s * 1000))
        if tick_ms < 1 or tick_s > 3600:
            raise ValueError(f"tick_s must be between 0.001 and 3600 s, got {tick_s}")
        self.plant = plant
        self.seed = seed
        self.start = start.astimezone(UTC)
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
        self._build_sensors(rng_init)
        self._build_flows()
        self._build_edge(rng_init)

    # ----------------------------------------------------------------------- construction

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

    def _build_flows(self) -> None:
        cfg = self._cfg
        t = self.plant.template
        tm = cfg.timing_ms
        by_name = self._gw_index

        def step(line: str, station_id: str) -> _Step:
            name = f"{line}-{station_id}"
            if name not in by_name:
                raise SimulatorConfigError(f"{self.plant.source}: route station {station_id!r} is not a per-line station")
            g = by_name[name]
            gw = self._gateways[g]
            if gw.stage is Stage.MIXING:
                dur = tm["slurry_batch"]
            elif gw.stage is Stage.COATING:
                dur = tm["roll"]
            else:
                dur = tm.get(gw.stage.value, 0)
            measures = []
            for param, sigma in cfg.unit_measures.items():
                ix = [i for i in range(gw.start, gw.stop) if self.plant.sensors[i].parameter == param]
                if ix:
                    measures.append(_Measure(param, self.plant.sensors[ix[0]].unit, np.array(ix), sigma))
            return _Step(g, gw.stage, dur, measures)

        self._roll_ms = tm["roll"]
        self._batch_ms = tm["slurry_batch"]
        cells_per_s = t.cells_per_hour_per_line / 3600.0
        self._cells_per_roll = max(1, int(round(self._roll_ms / 1000.0 * cells_per_s)))
        self._flows: list[_LineFlow] = []
        for line in t.lines:
            prefix = f"{t.site}-{line}"
            routes = []
            for rname, stations in cfg.routes.items():
                if rname == "cell":
                    continue
                steps = [step(line, s) for s in stations]
                if steps[0].stage is not Stage.MIXING or len(steps) < 2 or steps[1].stage is not Stage.COATING:
                    raise SimulatorConfigError(f"{self.plant.source}: route {rname} must start with mixing, coating")
                routes.append(_ElectrodeRoute(rname, steps))
            cell_steps = [step(line, s) for s in cfg.routes["cell"]]
            cell_stages = [s.stage for s in cell_steps]
            if Stage.FORMATION not in cell_stages or cell_stages[-1] is not Stage.AGING_EOL:
                raise SimulatorConfigError(f"{self.plant.source}: the cell route needs formation and ends at aging_eol")
            for steps in [r.steps for r in routes] + [cell_steps]:
                ranks = [_STAGE_RANK[s.stage] for s in steps]
                if ranks != sorted(ranks):
                    raise SimulatorConfigError(f"{self.plant.source}: a route is not in process-chain order")
            self._flows.append(_LineFlow(line, prefix, routes, cell_steps))
        # Rolls from stock cover the time the line's own first roll needs to get through the chain.
        first_ready = max(self._batch_ms + sum(s.duration_ms for s in r.steps[1:])
                          for f in self._flows for r in f.routes)
        self._n_stock = math.ceil(first_ready / self._roll_ms)
        zero = np.zeros(self._n_reasons)
        for f in self._flows:
            for r in f.routes:
                r.stock = [_Unit(f"{f.prefix}-{r.name}-STOCK{i:02d}", UnitType.ELECTRODE_ROLL, f.line, [],
                                 zero.copy(), -1) for i in range(self._n_stock)]
        self._reason_at: dict[Stage, list[int]] = {}
        for i, st in enumerate(cfg.reason_stage):
            self._reason_at.setdefault(st, []).append(i)
        self._reason_base = np.array(cfg.reason_base)
        # Cell measurements carry the unit the plant's own tester sensors use, if it has them.
        eol = self._gateways[self._flows[0].cell_steps[-1].gateway]
        self._cell_units = dict(_CELL_UNITS)
        for e in self.plant.sensors[eol.start:eol.stop]:
            if e.parameter in self._cell_units:
                self._cell_units[e.parameter] = e.unit

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

    # ----------------------------------------------------------------------- units and events

    def _event(self, out: list, subject: _Unit, kind: EventKind, g: int, ms: int, **extra: Any) -> None:
        gw = self._gateways[g]
        subject.n_events += 1
        manual = kind in self._manual_kinds
        # The validating constructor is both safer and faster than model_construct here.
        ev = ProductionEvent(
            event_id=f"{subject.uid}:{kind.value}:{gw.stage.value}:{subject.n_events}",
            ts=self.start + timedelta(milliseconds=ms), site=self.plant.template.site, line=subject.line,
            stage=gw.stage, station=gw.station, unit_id=subject.uid, unit_type=subject.utype, kind=kind,
            parent_ids=list(subject.parents), source="manual" if manual else "auto", **extra,
        )
        self._event_order += 1
        if manual:
            self._manual.append((ms, ev))
        else:
            out.append((ms, self._event_order, ev))

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

    def _enter(self, step: _Step, unit: _Unit, ms: int, out: list) -> None:
        m0 = [(float(self._vsum[m.sensors].sum()), int(self._vcnt[m.sensors].sum())) for m in step.measures]
        step.queue.append(_Visit(unit, ms, ms + step.duration_ms, self._risk_int[step.gateway].copy(),
                                 self._risk_ticks, m0))
        self._event(out, unit, EventKind.ENTER, step.gateway, ms)

    def _leave(self, step: _Step, visit: _Visit, out: list) -> None:
        """Book the risk the unit picked up at this station and emit its measure events."""
        unit = visit.unit
        dn = self._risk_ticks - visit.n0
        if dn > 0:
            unit.risk += (self._risk_int[step.gateway] - visit.r0) / dn
        else:
            unit.risk += self._risk_last[step.gateway]
        for m, (s0, c0) in zip(step.measures, visit.m0, strict=True):
            dc = int(self._vcnt[m.sensors].sum()) - c0
            mean = ((float(self._vsum[m.sensors].sum()) - s0) / dc if dc > 0
                    else float(self._level_now[m.sensors].mean()))
            val = mean + m.sigma * float(self._rng_units.standard_normal())
            unit.data[m.attribute] = val
            self._event(out, unit, EventKind.MEASURE, step.gateway, visit.leave_ms,
                        attribute=m.attribute, value=round(val, 4), unit=m.unit)

    def _due(self, step: _Step, t1: int) -> Iterator[_Visit]:
        q = step.queue
        while q and q[0].leave_ms < t1:
            yield q.popleft()

    def _advance_units(self, t1: int, out: list) -> None:
        for flow in self._flows:
            for route in flow.routes:
                self._advance_electrode(flow, route, t1, out)
            self._start_cells(flow, t1, out)
            self._advance_cells(flow, t1, out)

    def _advance_electrode(self, flow: _LineFlow, route: _ElectrodeRoute, t1: int, out: list) -> None:
        B, R = self._batch_ms, self._roll_ms
        mix = route.steps[0]
        s = self.summary
        while route.next_batch * B < t1:
            k = route.next_batch
            route.next_batch += 1
            u = _Unit(f"{flow.prefix}-{route.name}-SB{k:05d}", UnitType.SLURRY_BATCH, flow.line, [],
                      np.zeros(self._n_reasons), k)
            s.units_started += 1
            self._enter(mix, u, k * B, out)
        for v in self._due(mix, t1):
            self._leave(mix, v, out)
            self._event(out, v.unit, EventKind.LEAVE, mix.gateway, v.leave_ms)
            route.ready_batches[v.unit.index] = v.unit
        coat = route.steps[1]
        while B + route.next_roll * R < t1:
            j = route.next_roll
            route.next_roll += 1
            k = j * R // B
            batch = route.ready_batches[k]
            for old in [i for i in route.ready_batches if i < k]:
                del route.ready_batches[old]
            u = _Unit(f"{flow.prefix}-{route.name}-R{j:05d}", UnitType.ELECTRODE_ROLL, flow.line, [batch.uid],
                      batch.risk.copy(), j)
            s.units_started += 1
            self._enter(coat, u, B + j * R, out)
        last = len(route.steps) - 1
        for i in range(1, last + 1):
            st = route.steps[i]
            for v in self._due(st, t1):
                self._leave(st, v, out)
                self._event(out, v.unit, EventKind.LEAVE, st.gateway, v.leave_ms)
                if i < last:
                    self._enter(route.steps[i + 1], v.unit, v.leave_ms, out)
                else:
                    route.ready_rolls[v.unit.index] = v.unit

    def _start_cells(self, flow: _LineFlow, t1: int, out: list) -> None:
        cpr, R = self._cells_per_roll, self._roll_ms
        first = flow.cell_steps[0]
        while flow.next_cell * R // cpr < t1:
            n = flow.next_cell
            flow.next_cell += 1
            j = n // cpr
            rolls = []
            for route in flow.routes:
                if j < self._n_stock:
                    rolls.append(route.stock[j])
                else:
                    roll = route.ready_rolls.get(j - self._n_stock)
                    if roll is None:
                        raise RuntimeError(f"{flow.line}: roll {j - self._n_stock} of {route.name} is not ready")
                    rolls.append(roll)
                    if (n + 1) % cpr == 0:
                        del route.ready_rolls[j - self._n_stock]
            e_risk = sum(r.risk for r in rolls)
            u = _Unit(f"{flow.prefix}-C{n:08d}", UnitType.CELL, flow.line, [r.uid for r in rolls],
                      e_risk.copy(), n)
            u.data["electrode_risk"] = float(e_risk.sum())
            self.summary.units_started += 1
            self.summary.cells_started += 1
            self._enter(first, u, n * R // cpr, out)

    def _advance_cells(self, flow: _LineFlow, t1: int, out: list) -> None:
        last = len(flow.cell_steps) - 1
        for i, st in enumerate(flow.cell_steps):
            for v in self._due(st, t1):
                self._leave(st, v, out)
                u = v.unit
                if st.stage is Stage.FORMATION:
                    self._formation_measures(st, v, out)
                if st.stage is Stage.AGING_EOL:
                    self._finish_cell(st, v, out)
                    continue
                reason = self._scrap_draw(u, st.stage)
                if reason is not None:
                    self._scrap(st, v, reason, out)
                    continue
                self._event(out, u, EventKind.LEAVE, st.gateway, v.leave_ms)
                if i < last:
                    self._enter(flow.cell_steps[i + 1], u, v.leave_ms, out)

    def _scrap_draw(self, unit: _Unit, stage: Stage) -> str | None:
        hit = None
        for r in self._reason_at.get(stage, ()):
            p = self._reason_base[r] + unit.risk[r]
            if self._rng_units.random() < p and hit is None:
                hit = self._cfg.reasons[r]
        return hit

    def _scrap(self, step: _Step, visit: _Visit, reason: str, out: list) -> None:
        self._event(out, visit.unit, EventKind.SCRAP, step.gateway, visit.leave_ms, reason=reason)
        s = self.summary
        s.cells_scrapped += 1
        s.scrap_by_reason[reason] = s.scrap_by_reason.get(reason, 0) + 1

    def _formation_measures(self, step: _Step, visit: _Visit, out: list) -> None:
        cm = self._cfg.cell
        u = visit.unit
        rel = (cm.capacity_rel - cm.capacity_risk_rel * u.data["electrode_risk"]
               + cm.capacity_sigma_rel * float(self._rng_units.standard_normal()))
        u.data["capacity_rel"] = rel
        cap = rel * self.plant.template.cell_capacity_ah
        self._event(out, u, EventKind.MEASURE, step.gateway, visit.leave_ms,
                    attribute="capacity", value=round(cap, 3), unit=self._cell_units["capacity"])

    def _finish_cell(self, step: _Step, visit: _Visit, out: list) -> None:
        """End-of-line test: measure, then scrap or grade; defects found here show in the measurements."""
        cm = self._cfg.cell
        u = visit.unit
        rng = self._rng_units
        nominal = self.plant.template.cell_capacity_ah
        e_risk = u.data["electrode_risk"]
        total_risk = float(u.risk.sum())
        z = rng.standard_normal(4)
        cap_rel = u.data["capacity_rel"] * cm.eol_fade_rel * (1 + 0.001 * float(z[0]))
        dcir_rel = 1 + cm.dcir_risk_rel * e_risk + cm.dcir_sigma_rel * float(z[1])
        sd = max(0.05, cm.self_discharge_mv_day * (1 + cm.self_discharge_sigma_rel * float(z[2]))
                 + cm.self_discharge_risk * total_risk)
        forced = self._scrap_draw(u, Stage.AGING_EOL)
        if forced == "low_capacity":
            cap_rel = min(cap_rel, cm.min_capacity_rel * float(rng.uniform(0.92, 0.995)))
        elif forced == "high_dcir":
            dcir_rel = max(dcir_rel, cm.max_dcir_rel * float(rng.uniform(1.02, 1.4)))
        elif forced == "self_discharge":
            sd = max(sd, cm.max_self_discharge * float(rng.uniform(1.1, 3.0)))
        ocv = cm.ocv_v - 0.004 * (sd - cm.self_discharge_mv_day) + 0.002 * float(z[3])
        g = step.gateway
        ms = visit.leave_ms
        for attr, val in (("capacity", cap_rel * nominal), ("dcir", dcir_rel * cm.dcir_mohm),
                          ("self_discharge", sd), ("ocv", ocv)):
            self._event(out, u, EventKind.MEASURE, g, ms, attribute=attr, value=round(val, 4),
                        unit=self._cell_units[attr])
        if cap_rel < cm.min_capacity_rel:
            reason = "low_capacity"
        elif dcir_rel > cm.max_dcir_rel:
            reason = "high_dcir"
        elif sd > cm.max_self_discharge:
            reason = "self_discharge"
        else:
            reason = forced
        if reason is not None:
            self._scrap(step, visit, reason, out)
            return
        if cap_rel >= cm.a_capacity_rel and dcir_rel <= cm.a_dcir_rel and sd <= cm.a_self_discharge:
            grade = "A"
        elif cap_rel >= cm.b_capacity_rel and dcir_rel <= cm.b_dcir_rel and sd <= cm.b_self_discharge:
            grade = "B"
        else:
            grade = "C"
        self._event(out, u, EventKind.GRADE, g, ms, grade=grade)
        self._event(out, u, EventKind.LEAVE, g, ms)
        s = self.summary
        s.cells_graded += 1
        s.grades[grade] = s.grades.get(grade, 0) + 1
        s.cell_capacity_kwh += cap_rel * nominal * self.plant.template.cell_nominal_voltage_v / 1000.0
