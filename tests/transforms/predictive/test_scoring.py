"""The live score's pure part: scores, per-cell drivers, rows; and the scorer picking up a new champion."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from schemas.batch import CELL_FEATURES
from transforms.predictive import registry
from transforms.predictive.scoring import local_drivers, risk_rows
from transforms.scorer import Scorer
from transforms.settings import ScoreSettings

NAMES = ["coat-c.areal_loading.oos_share", "fill.fill_mass.measured", "mix-a.noise.mean"]


def _model(version: str = "gate-20260301-aaaaaa", seed: int = 1) -> registry.GateModel:
    """Risk follows the first feature only."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(3000, 3))
    bad = rng.random(3000) < 1 / (1 + np.exp(-(3 * X[:, 0] - 2)))
    clf = HistGradientBoostingClassifier(max_iter=50, random_state=0).fit(X, bad)
    return registry.GateModel(version=version, classifier=clf, regressor=None, names=NAMES,
                              medians=np.median(X, axis=0), top_features=list(NAMES),
                              schema_hash=registry.schema_hash(NAMES))


def test_a_risky_cell_is_blamed_on_the_planted_driver():
    model = _model()
    X = np.array([[2.5, 0.1, -0.2], [-2.0, 0.0, 0.0], [np.nan, 1.0, 1.0]])
    score, drivers = local_drivers(model, X)
    assert np.array_equal(score, model.score(X))
    assert drivers[0][0]["feature"] == NAMES[0] and drivers[0][0]["value"] == 2.5
    assert drivers[0][0]["effect"] == pytest.approx(score[0] - model.score(np.array([[model.medians[0], 0.1, -0.2]]))[0])
    assert all(d["feature"] != NAMES[0] for d in drivers[1])  # a low value lowers risk: not a driver
    assert all(d["effect"] > 0 for ds in drivers for d in ds)
    assert all(d["value"] is None for d in drivers[2] if d["feature"] == NAMES[0])


def _features(cells: list[str]) -> pa.Table:
    ts = datetime(2026, 3, 1, 6, tzinfo=UTC)
    return pa.Table.from_pylist([{"date": ts.date(), "cell_id": c, "site": "ref", "line": "L1", "gate_ts": ts,
                                  "upstream_ids": [], "n_features": 2,
                                  "features": [(NAMES[0], 1.5), (NAMES[2], 0.0)]} for c in cells],
                                schema=CELL_FEATURES.schema)


def test_rows_carry_the_model_version_and_the_vector_scored():
    model = _model()
    now = datetime.now(UTC)
    rows = risk_rows(_features(["C1", "C2"]), model, now, {"C1": True, "C2": False}, {"C1": (0, 7), "C2": (1, 3)})
    assert [r["model_version"] for r in rows] == [model.version] * 2
    assert rows[0]["score"] == model.score(np.array([[1.5, np.nan, 0.0]]))[0]
    assert (rows[1]["complete"], rows[1]["src_partition"], rows[1]["src_offset"]) == (False, 1, 3)
    assert dict(rows[0]["features"]) == {NAMES[0]: 1.5, NAMES[2]: 0.0}
    unscored = risk_rows(_features(["C3"]), None, now, {"C3": True}, {"C3": (0, 9)})
    assert unscored[0]["score"] is None and unscored[0]["model_version"] is None


def test_the_scorer_follows_the_champion_without_a_restart(tmp_path):
    lake = tmp_path / "lake"
    first, second = _model("gate-20260301-aaaaaa"), _model("gate-20260302-bbbbbb", seed=2)
    for m in (first, second):
        registry.save_model(lake, m, {})
    scorer = Scorer("127.0.0.1:1", lake, tmp_path / "gigapulse.duckdb", ScoreSettings())
    assert scorer._champion() is None
    registry.set_champion(lake, first.version, by="test", reason="first")
    assert scorer._champion().version == first.version
    registry.set_champion(lake, second.version, by="test", reason="better")
    assert scorer._champion().version == second.version

