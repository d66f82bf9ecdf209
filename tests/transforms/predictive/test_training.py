"""The promotion rule on planted-driver cells: a better model passes, a drifted driver or a worse AUC refuses,
the first model passes, and a window too thin to judge a model is refused before training."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime

import numpy as np
import pytest

from tests.transforms.predictive.support import planted
from transforms.predictive.training import (
    PSI_BOUND,
    TooFewCells,
    promotion_verdict,
    reindex,
    train_gate_model,
)

DRIVER = "coat-c.areal_loading.oos_share"
NOW = datetime(2026, 3, 2, tzinfo=UTC)


def _cells(seed: int, n: int = 800):
    """Planted-driver cells without capacities (no regressor: the rule judges the classifier alone)."""
    data = planted(n=n, seed=seed)
    return replace(data, capacity=np.full(n, np.nan))


def _shuffled(seed: int):
    """The planted cells with their labels shuffled: a model that learned nothing."""
    data = _cells(seed)
    return replace(data, bad=np.random.default_rng(seed).permutation(data.bad))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("lake")
    good = train_gate_model(_cells(1), date(2026, 3, 2), root, NOW)
    blind = train_gate_model(_shuffled(2), date(2026, 3, 1), root, NOW)
    return good, blind


def test_a_better_model_passes_and_a_worse_one_is_refused(models):
    good, blind = models
    better = promotion_verdict(good.model, blind.model, good.train, good.test)
    assert better.passed and better.new_auc > better.champion_auc and not better.drifted
    assert set(better.psi) == set(good.model.top_features) and max(better.psi.values()) < PSI_BOUND
    worse = promotion_verdict(blind.model, good.model, good.train, good.test)
    assert not worse.passed and worse.new_auc < worse.champion_auc
    assert "below the champion" in worse.reason


def test_a_drifted_driver_refuses_even_a_better_model(models):
    good, blind = models
    X = good.test.X.copy()
    X[:, good.test.names.index(DRIVER)] += 1.5
    verdict = promotion_verdict(good.model, blind.model, good.train, replace(good.test, X=X))
    assert not verdict.passed and DRIVER in verdict.drifted and verdict.drifted[DRIVER] > PSI_BOUND
    assert "drifted" in verdict.reason and DRIVER in verdict.reason


def test_the_first_model_passes_and_the_champion_again_passes(models):
    good, _ = models
    assert promotion_verdict(good.model, None, good.train, good.test).passed
    assert promotion_verdict(good.model, good.model, good.train, good.test).reason.endswith("already the champion")


def test_the_champion_reads_the_new_cells_with_its_own_columns(models):
    good, _ = models
    names = [good.test.names[2], "gone.sensor.mean", good.test.names[0]]
    X = reindex(good.test, names)
    assert np.array_equal(X[:, 0], good.test.X[:, 2], equal_nan=True)
    assert np.isnan(X[:, 1]).all()
    assert np.array_equal(X[:, 2], good.test.X[:, 0], equal_nan=True)


def test_a_thin_or_one_sided_window_is_refused_before_training(tmp_path):
    with pytest.raises(TooFewCells, match="150 cells with a verdict"):
        train_gate_model(_cells(1, n=150), date(2026, 3, 1), tmp_path, NOW)
    data = _cells(1, n=500)
    with pytest.raises(TooFewCells, match="all good"):
        train_gate_model(replace(data, bad=np.zeros(len(data), dtype=bool)), date(2026, 3, 1), tmp_path, NOW)


def test_the_same_data_gives_the_same_version(models, tmp_path):
    good, _ = models
    again = train_gate_model(_cells(1), date(2026, 3, 2), tmp_path, NOW)
    assert again.model.version == good.model.version
    assert np.array_equal(again.model.score(good.test.X), good.model.score(good.test.X))
    other = train_gate_model(_cells(3), date(2026, 3, 2), tmp_path, NOW)
    assert other.model.version != good.model.version


def test_the_record_keeps_what_the_report_and_the_gate_value_need_small(models):
    """The test cells' ROC points, flag curve, reliability and drivers, not the cells themselves."""
    import pickle

    from transforms.predictive.model import ROC_POINTS

    good, _ = models
    record, ev = good.record, good.evaluation
    assert {k: record[k] for k in good.row} == good.row  # the models row, and more
    curves = record["test_curves"]
    assert curves["cells"] == len(good.test) and curves["bad"] == ev.model.bad
    at5 = next(p for p in curves["flag"] if p["share"] == 0.05)
    assert {k: at5[k] for k in ("threshold", "flagged", "precision", "recall")} == ev.model.at_share["0.05"]
    fpr, tpr = np.array(curves["roc"]["fpr"]), np.array(curves["roc"]["tpr"])
    assert 2 <= len(fpr) <= ROC_POINTS and (fpr[0], fpr[-1], tpr[-1]) == (0.0, 1.0, 1.0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(ev.model.roc_auc, abs=0.01)  # the curve is the model's
    assert record["reliability"] == ev.model.reliability and record["drivers"][0]["feature"] == DRIVER
    extra = {k: record[k] for k in ("test_curves", "reliability", "drivers")}
    assert len(pickle.dumps(extra)) < 40_000
