"""The gate models on data with a known answer: a planted driver is found, the figures are right."""

from __future__ import annotations

import numpy as np
import pytest

from tests.transforms.predictive.support import planted
from transforms.predictive.dataset import feature_matrix, time_split
from transforms.predictive.model import evaluate_gate_models, evaluate_scores


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
