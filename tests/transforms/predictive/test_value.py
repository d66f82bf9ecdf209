"""What the gate is worth on a hand-made day whose answer is known: pulls, scrap caught, kWh and kg exactly;
the threshold from the champion's record (or, without one, from the day); energy per cell per stage."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from transforms.batch.material import book_material_loss, load_reference
from transforms.predictive.model import score_curves
from transforms.predictive.value import (
    RULE_DAY,
    RULE_RECORD,
    Threshold,
    choose_threshold,
    critical_kg_per_cell,
    energy_per_cell,
    gate_value,
    stages_spent,
)
from transforms.settings import MaterialSettings

T = datetime(2026, 3, 1, 12, tzinfo=UTC)

# (cell, site, line, score, verdict): verdict is (grade, scrap_stage), or None for no verdict yet.
CELLS = [
    ("c1", "ref", "L1", 0.90, (None, "formation")),  # true pull: formation only
    ("c2", "ref", "L1", 0.80, ("C", None)),  # true pull: formation and aging
    ("c3", "ref", "L1", 0.70, (None, "aging_eol")),  # true pull: formation and aging
    ("c4", "ref", "L1", 0.60, ("A", None)),  # false pull
    ("c5", "ref", "L1", 0.55, None),  # flagged, no verdict yet
    ("c6", "ref", "L1", 0.20, ("C", None)),  # bad, missed
    ("c7", "ref", "L1", 0.10, ("B", None)),  # good, passed
    ("c8", "ref", "L1", 0.50, ("B", None)),  # at the threshold: a false pull
    ("d1", "ref", "L2", 0.95, ("C", None)),  # true pull; L2's aging is not metered
    ("d2", "ref", "L2", 0.30, ("A", None)),
    ("d3", "ref", "L2", 0.99, ("A", None)),  # false pull
    ("e1", "leg", "L1", 0.10, ("A", None)),  # no meters, no bill of materials
    ("e2", "leg", "L1", 0.20, ("B", None)),
]
ENERGY = {("ref", "L1"): {"formation": 2.0, "aging_eol": 0.5}, ("ref", "L2"): {"formation": 3.0, "aging_eol": None}}
KG = {"ref": 1.25, "leg": None}
THRESHOLD = Threshold(0.5, 0.05, RULE_RECORD, "score flagging 5.0% of the champion's test cells")


def _day():
    features = pa.Table.from_pylist([{"cell_id": c, "site": s, "line": ln} for c, s, ln, _, _ in CELLS])
    scores = np.array([x for *_, x, _ in CELLS])
    labels = pa.Table.from_pylist([{"cell_id": c, "grade": v[0], "scrap_stage": v[1], "verdict_ts": T}
                                   for c, *_, v in CELLS if v is not None])
    return features, scores, labels


def test_a_hand_made_day_gives_the_known_pulls_energy_and_material():
    features, scores, labels = _day()
    rows = {(r["site"], r["line"]): r for r in gate_value(features, scores, labels, THRESHOLD, "gate-20260301-abcdef",
                                                          ENERGY, KG)}
    assert list(rows) == [("leg", "L1"), ("ref", "L1"), ("ref", "L2")]
    l1 = rows[("ref", "L1")]
    assert {k: l1[k] for k in ("cells_gated", "cells_with_verdict", "cells_bad", "cells_flagged", "true_pulls",
                               "false_pulls", "flagged_without_verdict")} == {
        "cells_gated": 8, "cells_with_verdict": 7, "cells_bad": 4, "cells_flagged": 6, "true_pulls": 3,
        "false_pulls": 2, "flagged_without_verdict": 1}
    assert l1["bad_caught_share"] == 0.75 and l1["precision"] == 0.6
    # c1 would have spent formation (2.0), c2 and c3 formation and aging (2.5 each)
    assert l1["kwh_saved"] == pytest.approx(7.0) and l1["false_pull_kwh"] == pytest.approx(5.0)
    assert l1["kg_per_cell"] == 1.25 and l1["kg_in_true_pulls"] == pytest.approx(3.75)
    assert l1["kg_saved"] == 0.0 and l1["kg_false_pulls"] == pytest.approx(2.5)
    assert l1["threshold"] == 0.5 and l1["threshold_source"] == RULE_RECORD and l1["flag_share"] == 0.05
    assert l1["model_version"] == "gate-20260301-abcdef"

    l2 = rows[("ref", "L2")]
    assert (l2["cells_flagged"], l2["true_pulls"], l2["false_pulls"]) == (2, 1, 1)
    assert l2["aging_kwh_per_cell"] is None  # an unmetered stage adds nothing, and the row shows it
    assert l2["kwh_saved"] == pytest.approx(3.0) and l2["false_pull_kwh"] == pytest.approx(3.0)
    assert l2["bad_caught_share"] == 1.0 and l2["precision"] == 0.5

    leg = rows[("leg", "L1")]
    assert (leg["cells_gated"], leg["cells_flagged"], leg["cells_bad"]) == (2, 0, 0)
    assert leg["bad_caught_share"] is None and leg["precision"] is None
    assert leg["kwh_saved"] is None and leg["false_pull_kwh"] is None  # no meter: unknown, not zero
    assert leg["kg_per_cell"] is None and leg["kg_saved"] is None and leg["kg_false_pulls"] is None


def test_a_higher_threshold_pulls_fewer_cells_and_saves_less():
    features, scores, labels = _day()
    strict = Threshold(0.85, 0.01, RULE_RECORD, "strict")
    rows = {(r["site"], r["line"]): r for r in gate_value(features, scores, labels, strict, "v", ENERGY, KG)}
    assert (rows[("ref", "L1")]["true_pulls"], rows[("ref", "L1")]["false_pulls"]) == (1, 0)
    assert rows[("ref", "L1")]["kwh_saved"] == pytest.approx(2.0)  # c1 alone, scrapped at formation
    assert rows[("ref", "L2")]["cells_flagged"] == 2


def test_scores_must_match_the_cells():
    features, scores, labels = _day()
    with pytest.raises(ValueError, match="13 cells, 12 scores"):
        gate_value(features, scores[:-1], labels, THRESHOLD, "v", ENERGY, KG)


@pytest.mark.parametrize(("scrap_stage", "stages"), [
    (None, ("formation", "aging_eol")),
    ("formation", ("formation",)),
    ("aging_eol", ("formation", "aging_eol")),
    ("filling", ()),
])
def test_a_bad_cell_spends_the_stages_up_to_its_scrap(scrap_stage, stages):
    assert stages_spent(scrap_stage) == stages


def test_energy_per_cell_is_the_stage_kwh_over_the_cells_that_entered():
    rows = [{"site": "ref", "line": "L1", "stage": "formation", "kwh": 300.0, "cells": 120},
            {"site": "ref", "line": "L1", "stage": "aging_eol", "kwh": None, "cells": 118},
            {"site": "ref", "line": "L2", "stage": "formation", "kwh": 50.0, "cells": 0}]
    assert energy_per_cell(rows) == {("ref", "L1"): {"formation": 2.5, "aging_eol": None},
                                     ("ref", "L2"): {"formation": None}}


def _record() -> dict:
    score = np.arange(1000)[::-1] / 1000  # 0.999, 0.998, ... 0.000
    return {"test_curves": score_curves(score, score > 0.9)}


def test_the_threshold_flags_the_share_of_the_champions_test_cells():
    record = _record()
    t = choose_threshold(record, np.array([0.1, 0.2]), 0.05)  # the day's scores do not matter
    assert t.source == RULE_RECORD and t.value == pytest.approx(0.950)  # the 50th of 1000 scores
    assert "1000 test cells" in t.rule
    between = choose_threshold(record, np.array([]), 0.0525)  # between the curve's 0.5% steps
    assert between.value == pytest.approx(0.9475)


def test_without_a_flag_curve_the_threshold_flags_the_share_of_the_day():
    day = np.linspace(0.0, 0.95, 20)
    t = choose_threshold({"roc_auc": 0.8}, day, 0.1)
    assert t.source == RULE_DAY and t.value == pytest.approx(day[-2]) and "no flag curve" in t.rule
    assert choose_threshold(None, day, 0.05).value == pytest.approx(0.95)  # at least one cell
    assert choose_threshold(None, np.array([]), 0.05).value is None


def test_a_cells_critical_material_is_what_the_ledger_books_for_one_scrapped_cell():
    ref = load_reference(MaterialSettings())
    kg = critical_kg_per_cell(ref)
    for site in ("ref", "leg"):
        scrap = pa.Table.from_pylist([{"site": site, "line": "L1", "stage": "formation", "station": "form-1",
                                       "unit_id": "c", "unit_type": "cell", "reason": "moisture",
                                       "stations_visited": []}])
        booked = book_material_loss(scrap, ref.products, ref.bom, ref.prices).rows
        assert kg[site] == pytest.approx(sum(booked.column("kg").to_pylist())) and kg[site] > 0
