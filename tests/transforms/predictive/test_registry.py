"""The model registry on a real lake directory: files round-trip, the champion alias moves with its history,
PSI reads stable and shifted samples right, and a file from another scikit-learn is refused in one line."""

from __future__ import annotations

from datetime import date

import joblib
import numpy as np
import pytest

from tests.transforms.predictive.support import planted
from transforms.predictive import registry as R
from transforms.predictive.dataset import time_split
from transforms.predictive.model import evaluate_gate_models


@pytest.fixture(scope="module")
def trained():
    """A model trained on the planted-driver cells, and its test cells."""
    train, test, at = time_split(planted(n=2000))
    ev, clf, reg = evaluate_gate_models(train, test, str(at))
    digest = R.content_hash(train.cell_ids, train.X, train.names, train.bad)
    model = R.GateModel(version=R.version_name(date(2026, 3, 1), digest), classifier=clf, regressor=reg,
                        names=train.names, medians=np.nanmedian(train.X, axis=0),
                        top_features=[d["feature"] for d in ev.drivers], schema_hash=R.schema_hash(train.names))
    return model, test


def test_a_saved_model_scores_identically_after_loading(tmp_path, trained):
    model, test = trained
    path = R.save_model(tmp_path, model, {"roc_auc": 0.9})
    assert path == R.models_dir(tmp_path) / f"{model.version}.joblib" and path.is_file()
    assert not [p for p in R.models_dir(tmp_path).iterdir() if p != path]  # no temporary file left behind
    loaded = R.load_model(tmp_path, model.version)
    assert np.array_equal(loaded.score(test.X), model.score(test.X))
    assert np.array_equal(loaded.regressor.predict(test.X), model.regressor.predict(test.X))
    assert loaded.names == model.names and loaded.top_features == model.top_features
    assert loaded.schema_hash == R.schema_hash(list(reversed(model.names)))  # order does not matter
    assert np.array_equal(loaded.medians, model.medians, equal_nan=True)
    assert R.load_record(tmp_path, model.version) == {"roc_auc": 0.9}
    assert R.versions(tmp_path) == [model.version]
    assert model.version.startswith("gate-20260301-")


def test_the_champion_moves_and_every_move_is_kept(tmp_path, trained):
    model, _ = trained
    assert R.champion(tmp_path) is None
    R.save_model(tmp_path, model, {})
    other = R.GateModel(**{**model.__dict__, "version": "gate-20260302-abcdef"})
    R.save_model(tmp_path, other, {})
    R.set_champion(tmp_path, model.version, by="check:promotable", reason="first model")
    R.set_champion(tmp_path, other.version, by="cli:alice", reason="rollback test")
    assert R.champion(tmp_path) == other.version
    history = R.champion_history(tmp_path)
    assert [(h["version"], h["previous"], h["by"]) for h in history] == [
        (model.version, None, "check:promotable"), (other.version, model.version, "cli:alice")]
    assert history[1]["reason"] == "rollback test"
    with pytest.raises(R.RegistryError, match="no model gate-20990101-000000"):
        R.set_champion(tmp_path, "gate-20990101-000000", by="cli:alice", reason="typo")
    with pytest.raises(R.RegistryError, match="not a model version"):
        R.set_champion(tmp_path, "../champion", by="cli:alice", reason="path")
    assert R.champion(tmp_path) == other.version


def test_a_file_from_another_scikit_learn_is_refused_in_one_line(tmp_path, trained):
    model, _ = trained
    path = R.save_model(tmp_path, model, {})
    payload = joblib.load(path)
    joblib.dump({**payload, "sklearn": "0.24.2"}, path)
    with pytest.raises(R.RegistryError, match=r"scikit-learn 0\.24\.2") as exc:
        R.load_model(tmp_path, model.version)
    assert "\n" not in str(exc.value)
    with pytest.raises(R.RegistryError, match="no model"):
        R.load_model(tmp_path, "gate-20260101-000000")


def test_psi_of_the_same_population_is_near_zero_and_of_a_shift_above_the_bound():
    rng = np.random.default_rng(3)
    a = rng.normal(size=5000)
    assert R.psi(a, a) == 0.0
    assert R.psi(a, rng.normal(size=5000)) < 0.02
    assert R.psi(a, rng.normal(loc=1.0, size=5000)) > 0.25
    # A sensor that stops sampling (NaN) is a shift too; a mostly-zero share gets fewer bins, not an error.
    gaps = a.copy()
    gaps[:2000] = np.nan
    assert R.psi(a, gaps) > 0.25
    shares = np.where(rng.random(5000) < 0.9, 0.0, rng.random(5000))
    assert R.psi(shares, shares[::-1]) == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(R.psi(a, np.array([])))
