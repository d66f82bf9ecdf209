"""The gate models on data with a known answer: a planted driver is found, the figures are right."""

from __future__ import annotations

import numpy as np
import pytest

from tests.transforms.predictive.support import planted
from transforms.predictive.dataset import Dataset, feature_matrix, time_split
from transforms.predictive.model import evaluate_gate_models, evaluate_scores, fit_classifier


def test_a_planted_driver_is_found_and_beats_the_baselines():
    train, test, at = time_split(planted())
    assert train.gate_ts.max() < at <= test.gate_ts.min()
    truth = {c: 1 / (1 + np.exp(-(2.5 * np.nan_to_num(x) - 3.0))) for c, x in zip(test.cell_ids, test.X[:, 0],
                                                                                      strict=True)}
    ev, clf, reg = evaluate_gate_models(train, test, str(at), truth=truth)
    assert ev.drivers[0]["feature"] == "coat-c.areal_loading.oos_share"
    assert ev.capacity_drivers[0]["feature"] == "coat-c.areal_loading.oos_share"
    assert ev.model.roc_auc > 0.8
    assert ev.base_rate.roc_auc == 0.5
    assert ev.filling_only.roc_auc < 0.6 < ev.model.roc_auc
    assert ev.bayes_auc >= ev.model.roc_auc - 0.01
    assert ev.share_of_ceiling > 0.9
    assert ev.capacity_mae < ev.capacity_baseline_mae
    assert clf.n_features_in_ == len(train.names)


def test_scores_figures_on_a_known_case():
    bad = np.array([True] * 10 + [False] * 90)
    perfect = evaluate_scores(np.r_[np.full(10, 0.9), np.full(90, 0.1)], bad)
    assert perfect.roc_auc == 1.0 and perfect.pr_auc == 1.0
    assert perfect.brier == pytest.approx(0.01)
    assert perfect.at_share["0.05"] == {"threshold": 0.9, "flagged": 5, "precision": 1.0, "recall": 0.5}
    assert perfect.at_share["0.10"]["recall"] == 1.0
    assert sum(b["cells"] for b in perfect.reliability) == 100
    with pytest.raises(ValueError, match="both bad and good"):
        evaluate_scores(np.zeros(5), np.zeros(5, dtype=bool))


def test_feature_maps_become_a_matrix_with_fixed_columns():
    X, names = feature_matrix([{"b": 1.0, "a": None}, [("a", 2.0)]])
    assert names == ["a", "b"]
    assert np.isnan(X[0, 0]) and X[0, 1] == 1.0 and X[1, 0] == 2.0 and np.isnan(X[1, 1])
    X2, _ = feature_matrix([{"c": 5.0, "a": 1.0}], names=names)
    assert X2.tolist()[0][0] == 1.0 and np.isnan(X2[0, 1])


def _cells(X: np.ndarray, names: list[str], p: np.ndarray, seed: int) -> Dataset:
    n = len(X)
    bad = np.random.default_rng(seed).random(n) < p
    ts = np.datetime64("2026-03-01T00:00:00", "us") + np.arange(n) * np.timedelta64(1, "s")
    return Dataset([f"C{i}" for i in range(n)], ["L1"] * n, ts, X, names, bad, np.full(n, np.nan), [None] * n)


def test_rare_additive_risk_picks_the_logistic_model_and_interactions_pick_the_trees():
    """The candidate that fits the shape of the risk wins on the latest training cells."""
    rng = np.random.default_rng(4)
    n = 6000
    # Rare scrap, adding up over the out-of-spec shares of three stations (the simulator's shape).
    names = ["coat-c.areal_loading.oos_share", "fill.fill_mass.oos_share", "stack.weld_energy.oos_share",
             *[f"mix-a.noise{i}.mean" for i in range(20)]]
    X = np.column_stack([rng.beta(0.3, 8, size=(n, 3)), rng.normal(size=(n, 20))])
    additive = _cells(X, names, 1 / (1 + np.exp(-(-3.2 + 6 * X[:, :3].sum(axis=1)))), 5)
    assert fit_classifier(additive)[1]["chosen"] == "oos_logistic"
    # Risk only where two means are both high: no sum of shares says that.
    names2 = ["cal-c.density.mean", "fill.fill_mass.mean", "coat-c.areal_loading.oos_share"]
    X2 = rng.normal(size=(n, 3))
    X2[:, 2] = rng.random(n)
    inter = _cells(X2, names2, np.where((X2[:, 0] > 0.5) & (X2[:, 1] > 0.5), 0.6, 0.03), 6)
    model, choice = fit_classifier(inter)
    assert choice["chosen"] == "hist_gradient_boosting"
    assert choice["selection_auc"]["hist_gradient_boosting"] > choice["selection_auc"]["oos_logistic"] + 0.1

