"""Train and evaluate the gate models: a classifier for "scrapped or graded C", a capacity regressor.

Two candidate classifiers, both scikit-learn, chosen per training run on the latest fifth of the
training period (a split in time, never the test cells):

* **Histogram gradient boosting on every feature.** It takes NaN as "no sample" without imputation
  (a sensor gap is information, not a zero), finds interactions and thresholds by itself, and
  trains on a hundred thousand cells in seconds on two cores. LightGBM is the same family of model
  and would add a native library.
* **An L2 logistic regression on the out-of-spec shares only** (no sample counts as none out of
  spec). Scrap is rare (about 6% of cells) and mostly noise; what is predictable in it adds up, out-
  of-spec time at one station plus out-of-spec time at another. A model of that shape learns it
  from far fewer bad cells than trees do: on 3 simulated hours of the reference plant it reached
  0.71 ROC AUC where boosting reached 0.60, against a ceiling of 0.72. Its coefficients read as
  "risk per unit of out-of-spec share", which is how a process engineer reasons.

The capacity regressor is gradient boosting (capacity moves with measured attributes, not only with
violations). Everything is seeded: the same data gives the same model and the same report.

The evaluation always carries its baselines, computed on the same test cells: the base rate (a
constant score), and the same model trained on the features of the filling station alone (what a
plant gets from the last station before the gate without genealogy). With the simulator's ground
truth (``simulate --truth-out``), it also carries the best achievable AUC: the ranking by each
cell's true probability.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    mean_absolute_error,
    roc_auc_score,
    roc_curve,
)
from sklearn.pipeline import Pipeline

from transforms.predictive.dataset import Dataset

SEED = 42
#: The filling station's features (its own sensors, the dry room during filling, its measures).
FILLING_ONLY = ("fill.",)
FLAG_SHARES = (0.05, 0.10)
#: Flag shares of the flag curve a training record keeps: 0.5% to 50% in steps of 0.5%.
FLAG_CURVE_SHARES = tuple(round(0.005 * i, 3) for i in range(1, 101))
#: Most points of the ROC curve a training record keeps.
ROC_POINTS = 200


#: Inverse L2 strength of the logistic candidate: shares lie in 0-1, so weak regularisation.
LOGISTIC_C = 10.0
#: Latest share of the training cells the candidates are compared on.
SELECTION_SHARE = 0.2


def oos_columns(names: list[str]) -> list[int]:
    """Columns of the out-of-spec shares (``<station>.<parameter>.oos_share``, dry-room ones included)."""
    return [i for i, n in enumerate(names) if n.endswith(".oos_share")]


def oos_logistic(names: list[str]) -> Pipeline:
    """The logistic candidate over the full feature matrix: it selects the out-of-spec shares itself,
    so it scores the same ``X`` as the boosted trees (and a registered model needs no other input)."""
    select = ColumnTransformer([("oos", SimpleImputer(strategy="constant", fill_value=0.0, keep_empty_features=True),
                                 oos_columns(names))], remainder="drop")
    return Pipeline([("select", select), ("logit", LogisticRegression(C=LOGISTIC_C, max_iter=5000))])


def fit_classifier(train: Dataset) -> tuple[Any, dict[str, Any]]:
    """Fit both candidates on the earlier training cells, keep the one with the better ROC AUC on the
    latest ``SELECTION_SHARE`` of them, and refit it on all of ``train``; returns it and the choice."""
    candidates = {"hist_gradient_boosting": lambda: classifier(),
                  "oos_logistic": lambda: oos_logistic(train.names)}
    if not oos_columns(train.names):
        candidates.pop("oos_logistic")
    at = int(len(train) * (1 - SELECTION_SHARE))
    fit_part, check_part = train.subset(np.arange(len(train)) < at), train.subset(np.arange(len(train)) >= at)
    scores: dict[str, float | None] = {}
    for name, make in candidates.items():
        if fit_part.bad.any() and not fit_part.bad.all() and check_part.bad.any() and not check_part.bad.all():
            model = make().fit(fit_part.X, fit_part.bad)
            scores[name] = float(roc_auc_score(check_part.bad, model.predict_proba(check_part.X)[:, 1]))
        else:
            scores[name] = None
    chosen = max(candidates, key=lambda n: -1.0 if scores[n] is None else scores[n])
    return candidates[chosen]().fit(train.X, train.bad), {"chosen": chosen, "selection_auc": scores,
                                                          "selection_cells": len(check_part)}


def classifier() -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=40,
                                          l2_regularization=1.0, early_stopping=True, validation_fraction=0.15,
                                          n_iter_no_change=20, random_state=SEED)


def regressor() -> HistGradientBoostingRegressor:
    return HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=40,
                                         l2_regularization=1.0, early_stopping=True, validation_fraction=0.15,
                                         n_iter_no_change=20, random_state=SEED)


@dataclass(frozen=True)
class ClassifierReport:
    """How well a score ranks and is calibrated on the test cells."""

    cells: int
    bad: int
    roc_auc: float
    pr_auc: float
    brier: float
    #: Per flag share (0.05, 0.10): threshold, precision and recall when that share of cells is flagged.
    at_share: dict[str, dict[str, float]]
    #: Reliability curve: mean score and observed bad rate per score decile (bins with cells only).
    reliability: list[dict[str, float]]


def evaluate_scores(score: np.ndarray, bad: np.ndarray) -> ClassifierReport:
    """Ranking, calibration and flagging figures of ``score`` (a probability) against ``bad``."""
    if bad.all() or not bad.any():
        raise ValueError("the test cells need both bad and good cells to evaluate a ranking")
    at_share = {}
    for share in FLAG_SHARES:
        at = flag_at(score, bad, share)
        at_share[f"{share:.2f}"] = {k: at[k] for k in ("threshold", "flagged", "precision", "recall")}
    edges = np.quantile(score, np.linspace(0, 1, 11))
    bins = np.clip(np.searchsorted(edges, score, side="right") - 1, 0, 9)
    reliability = [{"mean_score": float(score[bins == b].mean()), "observed": float(bad[bins == b].mean()),
                    "cells": int((bins == b).sum())} for b in range(10) if (bins == b).any()]
    return ClassifierReport(cells=len(score), bad=int(bad.sum()), roc_auc=float(roc_auc_score(bad, score)),
                            pr_auc=float(average_precision_score(bad, score)),
                            brier=float(brier_score_loss(bad, score)), at_share=at_share, reliability=reliability)


def flag_at(score: np.ndarray, bad: np.ndarray, share: float) -> dict[str, float]:
    """Threshold, cells flagged, precision and recall when the top ``share`` of ``score`` is flagged.

    The top ``k = max(1, round(share x cells))`` scores are flagged; the threshold is the lowest of them.
    """
    order = np.argsort(-score, kind="mergesort")
    k = max(1, int(round(share * len(score))))
    tp = int(bad[order[:k]].sum())
    return {"share": share, "threshold": float(score[order[k - 1]]), "flagged": k, "precision": tp / k,
            "recall": tp / int(bad.sum()) if bad.any() else float("nan")}


def score_curves(score: np.ndarray, bad: np.ndarray) -> dict:
    """What a training record keeps of a model's test scores to draw and use it later, small by design.

    * ``roc``: the ROC curve's corner points (false and true positive rates), at most :data:`ROC_POINTS`
      of them, evenly thinned (the first and last kept), so a report can draw it without the scores;
    * ``flag``: :func:`flag_at` for every share of :data:`FLAG_CURVE_SHARES`, from which the quality gate's
      value takes its threshold for any configured share (``GIGAPULSE_GATE_FLAG_SHARE``);
    * ``cells`` and ``bad``: how many test cells the curves rest on.

    About 2,000 numbers whatever the number of test cells: the record stays small.
    """
    fpr, tpr, _ = roc_curve(bad, score)
    if len(fpr) > ROC_POINTS:
        keep = np.unique(np.round(np.linspace(0, len(fpr) - 1, ROC_POINTS)).astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return {"cells": len(score), "bad": int(bad.sum()),
            "roc": {"fpr": [float(x) for x in fpr], "tpr": [float(x) for x in tpr]},
            "flag": [flag_at(score, bad, s) for s in FLAG_CURVE_SHARES]}


@dataclass
class GateEvaluation:
    """One training run: its model's figures beside the baselines' and (if known) the ceiling."""

    train_cells: int
    test_cells: int
    split_at: str
    features: int
    model: ClassifierReport
    base_rate: ClassifierReport | None
    filling_only: ClassifierReport | None
    drivers: list[dict[str, float]]
    capacity_mae: float | None = None
    capacity_baseline_mae: float | None = None
    capacity_drivers: list[dict[str, float]] = field(default_factory=list)
    bayes_auc: float | None = None
    #: Share of the way from 0.5 to the best achievable AUC the model got.
    share_of_ceiling: float | None = None
    #: Which candidate classifier was kept, and the selection AUCs of both (:func:`fit_classifier`).
    model_choice: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


#: Test cells permutation importance is computed on, at most: a fixed random sample. Its cost is
#: features x repeats x cells; on 400 features a whole day of test cells took minutes for a ranking
#: that a few thousand cells already settle.
IMPORTANCE_CELLS = 6000


def permutation_drivers(model, X: np.ndarray, y: np.ndarray, names: list[str], scoring: str,
                        top: int) -> list[dict[str, float]]:
    """Permutation importance on the test cells: what the score loses when one feature is shuffled."""
    if len(X) > IMPORTANCE_CELLS:
        keep = np.sort(np.random.default_rng(SEED).choice(len(X), IMPORTANCE_CELLS, replace=False))
        X, y = X[keep], y[keep]
    res = permutation_importance(model, X, y, scoring=scoring, n_repeats=5, random_state=SEED, n_jobs=1)
    order = np.argsort(-res.importances_mean)[:top]
    return [{"feature": names[i], "importance": float(res.importances_mean[i]), "std": float(res.importances_std[i])}
            for i in order]


def evaluate_gate_models(train: Dataset, test: Dataset, split_at: str, truth: dict[str, float] | None = None,
                         top: int = 10) -> tuple[GateEvaluation, HistGradientBoostingClassifier,
                                                 HistGradientBoostingRegressor | None]:
    """Fit the classifier (and the capacity regressor) on ``train``; evaluate all of it on ``test``.

    ``truth`` maps cell id to the simulator's true probability at the gate; with it the report gives
    the best achievable AUC on the same test cells and the model's share of the way to it.
    """
    if not train.bad.any() or train.bad.all():
        raise ValueError("the training cells need both bad and good cells")
    clf, choice = fit_classifier(train)
    score = clf.predict_proba(test.X)[:, 1]
    report = evaluate_scores(score, test.bad)
    base = evaluate_scores(np.full(len(test), train.bad.mean()), test.bad)
    fill_train, fill_test = train.columns(FILLING_ONLY), test.columns(FILLING_ONLY)
    filling = None
    if fill_train.X.shape[1]:  # the same choice of model, on the filling station's features alone
        filling = evaluate_scores(fit_classifier(fill_train)[0].predict_proba(fill_test.X)[:, 1], test.bad)
    ev = GateEvaluation(train_cells=len(train), test_cells=len(test), split_at=split_at, features=len(train.names),
                        model=report, base_rate=base, filling_only=filling,
                        drivers=permutation_drivers(clf, test.X, test.bad, test.names, "roc_auc", top),
                        model_choice=choice)
    reg = None
    has_cap_train, has_cap_test = ~np.isnan(train.capacity), ~np.isnan(test.capacity)
    if has_cap_train.sum() >= 50 and has_cap_test.any():
        reg = regressor().fit(train.X[has_cap_train], train.capacity[has_cap_train])
        Xt, yt = test.X[has_cap_test], test.capacity[has_cap_test]
        ev.capacity_mae = float(mean_absolute_error(yt, reg.predict(Xt)))
        ev.capacity_baseline_mae = float(mean_absolute_error(yt, np.full(len(yt), np.median(
            train.capacity[has_cap_train]))))
        ev.capacity_drivers = permutation_drivers(reg, Xt, yt, test.names, "neg_mean_absolute_error", top)
    if truth is not None:
        p = np.array([truth.get(c, np.nan) for c in test.cell_ids])
        known = ~np.isnan(p)
        if known.sum() and test.bad[known].any() and not test.bad[known].all():
            ev.bayes_auc = float(roc_auc_score(test.bad[known], p[known]))
            model_auc = float(roc_auc_score(test.bad[known], score[known]))
            ev.share_of_ceiling = (model_auc - 0.5) / (ev.bayes_auc - 0.5) if ev.bayes_auc > 0.5 else None
    return ev, clf, reg
