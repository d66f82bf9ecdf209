"""Unit flow: slurry batches, electrode rolls and cells moving through their routes, with genealogy.

:class:`_UnitFlow` is mixed into :class:`~ingestion.simulator.tick.PlantSimulator`. Units pick up
scrap risk from the signals while they are at a station, are measured, graded or scrapped, and every
step becomes a :class:`~schemas.contracts.ProductionEvent`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np

from ingestion.simulator.config import _CELL_UNITS, _STAGE_RANK, SimulatorConfigError
from ingestion.simulator.serials import check_part, unit_serial
from ingestion.simulator.truth import gate_truth, truth_row
from schemas.contracts import EventKind, ProductionEvent, Stage, UnitType


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
    prefix: str  # site-line-route: where its units' serials start
    steps: list[_Step]
    next_batch: int = 0
    next_roll: int = 0
    ready_batches: dict[int, _Unit] = field(default_factory=dict)
    ready_rolls: dict[int, _Unit] = field(default_factory=dict)
    stock: list[_Unit] = field(default_factory=list)


@dataclass
class _LineFlow:
    line: str
    prefix: str  # site-line: where its cells' serials start
    routes: list[_ElectrodeRoute]
    cell_steps: list[_Step]
    next_cell: int = 0


class _UnitFlow:
    """Units, routes, scrap and grading of :class:`~ingestion.simulator.tick.PlantSimulator`."""

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
            for what, part in (("site", t.site), ("line", line)):
                try:
                    check_part(what, part)
                except ValueError as exc:
                    raise SimulatorConfigError(f"{self.plant.source}: {exc}") from None
            routes = []
            for rname, stations in cfg.routes.items():
                if rname == "cell":
                    continue
                steps = [step(line, s) for s in stations]
                if steps[0].stage is not Stage.MIXING or len(steps) < 2 or steps[1].stage is not Stage.COATING:
                    raise SimulatorConfigError(f"{self.plant.source}: route {rname} must start with mixing, coating")
                try:
                    check_part("route", rname)
                except ValueError as exc:
                    raise SimulatorConfigError(f"{self.plant.source}: sim.routes: {exc}") from None
                routes.append(_ElectrodeRoute(rname, f"{prefix}-{rname}", steps))
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
                r.stock = [_Unit(unit_serial(r.prefix, self.run_code, "STOCK", i), UnitType.ELECTRODE_ROLL, f.line, [],
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
            u = _Unit(unit_serial(route.prefix, self.run_code, "SB", k), UnitType.SLURRY_BATCH, flow.line, [],
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
            u = _Unit(unit_serial(route.prefix, self.run_code, "R", j), UnitType.ELECTRODE_ROLL, flow.line, [batch.uid],
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
            u = _Unit(unit_serial(flow.prefix, self.run_code, "C", n), UnitType.CELL, flow.line, [r.uid for r in rolls],
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
                if st.stage is Stage.FILLING and self.truth_rows is not None:
                    self._record_truth(u, v.leave_ms)
                if i < last:
                    self._enter(flow.cell_steps[i + 1], u, v.leave_ms, out)

    def _record_truth(self, unit: _Unit, ms: int) -> None:
        """The cell's truth as it passes the gate (no random draw: seeded output is unchanged)."""
        cfg = self._cfg
        t = gate_truth(cfg.cell, cfg.reasons, cfg.reason_stage, cfg.reason_base, unit.risk,
                       unit.data["electrode_risk"])
        self.truth_rows.append(truth_row(unit.uid, self.plant.template.site, unit.line,
                                         self.start + timedelta(milliseconds=ms), t))

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
