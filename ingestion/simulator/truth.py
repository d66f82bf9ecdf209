"""Ground truth at the quality gate: each cell's true probability of ending scrapped or graded C.

Predictive quality scores a cell when it leaves electrolyte filling, before formation. The
simulator knows what no model can see: the scrap risk each cell carries per reason (picked up from
out-of-spec process data at every station its units went through) and the cell model that turns
risk into end-of-line measurements. From them this module computes, for a cell at the gate, the
probability that it will be scrapped at formation or end of line, or graded C. Ranking cells by it
is the best any model can do, so its ROC AUC on a test set is the ceiling a model is held to.

Only what is fixed at the gate enters: risk that stations after filling will add (a formation rack
fault, an aging-room temperature excursion) is unknown then and taken as none. It lowers every
probability alike for cells processed at the same time, which barely moves the ranking, and no model
scored at the gate could know it either. The random draws still ahead (scrap draws, measurement
noise) are integrated exactly, except that end-of-line capacity, a normal variable times a factor
within 0.1% of one, is taken as normal.

Pure functions of the plant's settings and the cell's state: the simulator calls
:func:`gate_truth` without touching its random generators, so asking for the truth changes no
output of a seeded run.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ingestion.simulator.config import CellModel
from schemas.contracts import Stage
from schemas.predictive import CELL_TRUTH

#: The stages after the gate whose scrap draws the truth integrates.
AFTER_GATE = (Stage.FORMATION, Stage.AGING_EOL)


def _normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


@dataclass(frozen=True)
class GateTruth:
    """One cell's truth at the gate. ``p_bad`` = 1 - p(no scrap draw fires) * p(measures grade A or B)."""

    p_bad: float
    #: Probability that some scrap draw at formation fires.
    p_formation_scrap: float
    #: Probability that some end-of-line scrap draw fires (it forces a measurement past its limit).
    p_eol_draw: float
    #: Probability that, with no draw firing, the end-of-line measurements fall short of grade B.
    p_measured_bad: float
    #: Per reason (those drawn after the gate): the chance of that one draw firing.
    reason_p: dict[str, float]
    #: Per reason (all of them): the risk the cell carries at the gate.
    risk: dict[str, float]
    electrode_risk: float
    total_risk: float


def measured_good(cell: CellModel, electrode_risk: float, total_risk: float) -> float:
    """Probability that a cell's end-of-line capacity, DCIR and self-discharge all meet grade B.

    Mirrors the simulator's draws: capacity at formation is normal around
    ``capacity_rel - capacity_risk_rel * electrode_risk`` and fades by ``eol_fade_rel`` (times a
    factor of sd 0.001); DCIR is normal around ``1 + dcir_risk_rel * electrode_risk``;
    self-discharge is normal around its mean and rises with the total risk. Grade B's limits are
    inside the scrap limits, so meeting them also means not scrapped on measurement.
    """
    mean_form = cell.capacity_rel - cell.capacity_risk_rel * electrode_risk
    cap_mean = mean_form * cell.eol_fade_rel
    cap_sd = cell.eol_fade_rel * math.sqrt(cell.capacity_sigma_rel ** 2 + (0.001 * mean_form) ** 2)
    p_cap = _normal_cdf((cap_mean - cell.b_capacity_rel) / cap_sd) if cap_sd > 0 else float(cap_mean >= cell.b_capacity_rel)
    dcir_mean = 1.0 + cell.dcir_risk_rel * electrode_risk
    p_dcir = (_normal_cdf((cell.b_dcir_rel - dcir_mean) / cell.dcir_sigma_rel) if cell.dcir_sigma_rel > 0
              else float(dcir_mean <= cell.b_dcir_rel))
    sd_mean = cell.self_discharge_mv_day + cell.self_discharge_risk * total_risk
    sd_sd = cell.self_discharge_mv_day * cell.self_discharge_sigma_rel
    # The simulator floors self-discharge at 0.05 mV/day, below any sensible grade-B limit.
    p_sd = _normal_cdf((cell.b_self_discharge - sd_mean) / sd_sd) if sd_sd > 0 else float(sd_mean <= cell.b_self_discharge)
    return p_cap * p_dcir * p_sd


def gate_truth(cell: CellModel, reasons: Sequence[str], reason_stage: Sequence[Stage],
               reason_base: Sequence[float], risk: np.ndarray, electrode_risk: float) -> GateTruth:
    """The truth for one cell leaving filling with per-reason ``risk`` (aligned with ``reasons``)."""
    reason_p: dict[str, float] = {}
    survive = {stage: 1.0 for stage in AFTER_GATE}
    for name, stage, base, r in zip(reasons, reason_stage, reason_base, risk, strict=True):
        if stage in survive:
            p = min(1.0, max(0.0, float(base) + float(r)))
            reason_p[name] = p
            survive[stage] *= 1.0 - p
    total = float(np.sum(risk))
    good_measure = measured_good(cell, electrode_risk, total)
    p_good = survive[Stage.FORMATION] * survive[Stage.AGING_EOL] * good_measure
    return GateTruth(
        p_bad=1.0 - p_good, p_formation_scrap=1.0 - survive[Stage.FORMATION],
        p_eol_draw=1.0 - survive[Stage.AGING_EOL], p_measured_bad=1.0 - good_measure,
        reason_p=reason_p, risk={n: float(r) for n, r in zip(reasons, risk, strict=True)},
        electrode_risk=float(electrode_risk), total_risk=total,
    )


def truth_row(cell_id: str, site: str, line: str, gate_ts: datetime, truth: GateTruth) -> dict:
    """One row of :data:`schemas.predictive.CELL_TRUTH`."""
    return {"cell_id": cell_id, "site": site, "line": line, "gate_ts": gate_ts, "p_bad": truth.p_bad,
            "p_formation_scrap": truth.p_formation_scrap, "p_eol_draw": truth.p_eol_draw,
            "p_measured_bad": truth.p_measured_bad, "reason_p": list(truth.reason_p.items()),
            "risk": list(truth.risk.items()), "electrode_risk": truth.electrode_risk,
            "total_risk": truth.total_risk}


def write_truth(path: Path, rows: list[dict]) -> int:
    """Write ``rows`` as one Parquet file at ``path`` (replaced whole, by rename); returns the row count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=CELL_TRUTH)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return table.num_rows
