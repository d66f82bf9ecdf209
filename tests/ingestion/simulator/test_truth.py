"""The ground truth at the quality gate: one row per cell leaving filling, exact probabilities, no side effects."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from ingestion.simulator import CellModel, PlantSimulator
from ingestion.simulator.truth import gate_truth, measured_good, write_truth
from schemas.asset_model import load_plant
from schemas.contracts import EventKind, Stage
from schemas.predictive import CELL_TRUTH
from tests.ingestion.simulator.support import SEED, snapshot

START = datetime(2026, 3, 2, 6, tzinfo=UTC)


def test_recording_the_truth_changes_no_output():
    plant = load_plant("reference")
    plain = PlantSimulator(plant, seed=SEED, start=START)
    judged = PlantSimulator(plant, seed=SEED, start=START, record_truth=True)
    assert plain.truth_rows is None
    assert snapshot(list(plain.run(90))) == snapshot(list(judged.run(90)))
    assert len(judged.truth_rows) > 100


def test_one_row_per_cell_leaving_filling_at_its_leave_time(reference_run):
    gate = {e.unit_id: e.ts for e in reference_run.events
            if e.stage is Stage.FILLING and e.kind is EventKind.LEAVE}
    truth = {r["cell_id"]: r for r in reference_run.truth}
    assert set(truth) == set(gate)
    assert all(truth[c]["gate_ts"] == ts for c, ts in gate.items())
    assert all(0.0 <= r["p_bad"] <= 1.0 for r in reference_run.truth)
    scrapped_before = {e.unit_id for e in reference_run.events
                       if e.kind is EventKind.SCRAP and e.stage in (Stage.STACKING, Stage.FILLING)}
    assert not scrapped_before & set(truth)


def test_the_truth_ranks_the_verdicts_and_is_of_their_size(reference_run):
    """Cells judged within the run: the true probability separates bad from good and matches their rate.

    It leaves out the risk added after the gate (formation and aging faults), so it may fall short
    of the observed rate, never far above it.
    """
    bad: dict[str, bool] = {}
    for e in reference_run.events:
        if e.kind is EventKind.SCRAP and e.stage in (Stage.FORMATION, Stage.AGING_EOL):
            bad[e.unit_id] = True
        elif e.kind is EventKind.GRADE:
            bad[e.unit_id] = e.grade == "C"
    rows = [r for r in reference_run.truth if r["cell_id"] in bad]
    assert len(rows) > 2000
    p = np.array([r["p_bad"] for r in rows])
    y = np.array([bad[r["cell_id"]] for r in rows])
    assert y.sum() > 30
    assert roc_auc_score(y, p) > 0.6
    assert 0.6 * y.mean() < p.mean() < 1.2 * y.mean()


def test_no_risk_leaves_only_the_base_rates():
    cell = CellModel()
    reasons = ["a", "b", "c"]
    stages = [Stage.STACKING, Stage.FORMATION, Stage.AGING_EOL]
    t = gate_truth(cell, reasons, stages, [0.5, 0.01, 0.02], np.zeros(3), 0.0)
    assert t.reason_p == {"b": 0.01, "c": 0.02}  # the stacking draw is behind the cell
    assert t.p_formation_scrap == pytest.approx(0.01)
    assert t.p_bad == pytest.approx(1 - 0.99 * 0.98 * measured_good(cell, 0.0, 0.0))
    riskier = gate_truth(cell, reasons, stages, [0.5, 0.01, 0.02], np.array([0.0, 0.1, 0.0]), 0.05)
    assert riskier.p_bad > t.p_bad
    assert riskier.risk == {"a": 0.0, "b": 0.1, "c": 0.0}


@pytest.mark.parametrize("electrode_risk,total_risk", [(0.0, 0.0), (0.05, 0.1), (0.2, 0.3)])
def test_measured_good_matches_the_simulators_draws(electrode_risk, total_risk):
    """The closed form against the simulator's own formulas, drawn 400,000 times."""
    cell = CellModel()
    rng = np.random.default_rng(7)
    n = 400_000
    z = rng.standard_normal((5, n))
    cap_form = cell.capacity_rel - cell.capacity_risk_rel * electrode_risk + cell.capacity_sigma_rel * z[4]
    cap = cap_form * cell.eol_fade_rel * (1 + 0.001 * z[0])
    dcir = 1 + cell.dcir_risk_rel * electrode_risk + cell.dcir_sigma_rel * z[1]
    sd = np.maximum(0.05, cell.self_discharge_mv_day * (1 + cell.self_discharge_sigma_rel * z[2])
                    + cell.self_discharge_risk * total_risk)
    good = (cap >= cell.b_capacity_rel) & (dcir <= cell.b_dcir_rel) & (sd <= cell.b_self_discharge)
    expected = good.mean()
    assert measured_good(cell, electrode_risk, total_risk) == pytest.approx(expected, abs=4 * math.sqrt(
        expected * (1 - expected) / n) + 1e-4)


def test_the_truth_file_has_the_contract(reference_run, tmp_path):
    path = tmp_path / "truth" / "cells.parquet"
    assert write_truth(path, reference_run.truth[:50]) == 50
    table = pq.read_table(path)
    assert table.schema.equals(CELL_TRUTH, check_metadata=False)
    assert dict(table.column("reason_p")[0].as_py()).keys() == {"moisture", "formation_failure", "low_capacity",
                                                                "high_dcir", "self_discharge"}
