"""Typed plant configuration of the simulator: the ``sim:`` keys of a plant file, checked and defaulted.

A plant file's ``sim`` blocks are opaque to the asset model; this module is where they get a meaning
and where a wrong key or value becomes one :class:`SimulatorConfigError` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from schemas.asset_model import Plant
from schemas.contracts import EventKind, Stage

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
