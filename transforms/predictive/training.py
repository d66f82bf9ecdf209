"""One training run of the gate models for a day, its row of ``models``, and the rule that promotes it.

What the Dagster assets of ``orchestration/predictive/models.py`` call; they only wire the warehouse and
the lake to these functions.

**Training window.** A model trained for day D learns from the ``cell_features`` of the
:data:`TRAINING_DAYS` days ending with D and their verdicts, split by time (:func:`time_split`): the
latest 30% of those cells test it.

**Promotion rule** (:func:`promotion_verdict`). A new model may replace the champion only if

* its ROC AUC on its own test cells is at least the champion's on the **same cells with the same
  labels** (the champion scores them with its own feature list), and
* none of its top drivers moved between its training cells and its test cells by more than
  :data:`PSI_BOUND` (population stability index, :func:`~transforms.predictive.registry.psi`).

Why training window against test window, and not the champion's training data against today: the
test window is the most recent population, the one the model will score next; a driver whose
distribution moved between the two means the model learned a relation on a population that is no
longer there, and its test AUC (on a few hundred recent cells) is then the only evidence that it
still holds, which is too little to replace a champion on. It also needs nothing stored beyond
the model: the champion's training sample is not kept. Without a champion, the first model passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import sklearn
from sklearn.metrics import roc_auc_score

from schemas.batch import MODELS
from transforms.batch.store import day_path, write_day
from transforms.predictive.dataset import Dataset, build_dataset, read_labels, time_split
from transforms.predictive.model import GateEvaluation, evaluate_gate_models, score_curves
from transforms.predictive.registry import (
    GateModel,
    content_hash,
    feature_medians,
    model_path,
    psi,
    schema_hash,
    version_name,
)

#: Days of cell_features a model learns from, ending with the day it is trained for. A week holds
#: every shift pattern and several cycles of the slow faults (electrode lots, dry-room drift).
TRAINING_DAYS = 7
#: Fewest cells with a verdict worth training on: below this the 30% test split holds too few bad
#: cells for an AUC that can tell two models apart.
MIN_CELLS = 200
#: PSI above which a top driver counts as drifted (the customary "significant shift").
PSI_BOUND = 0.25
#: Most drivers a model records (permutation importance, positive only).
TOP_FEATURES = 20


class TooFewCells(ValueError):
    """The window holds too few cells with a verdict (or only one class) to train and test a model."""


def training_window(day: date, days: int = TRAINING_DAYS) -> tuple[date, date]:
    """First and last day (inclusive) of the cell_features a model trained for ``day`` reads."""
    return day - timedelta(days=days - 1), day


_FEATURES_SQL = """
SELECT cell_id, line, gate_ts, features FROM cell_features WHERE date BETWEEN $first AND $last
"""


def read_training_set(con: duckdb.DuckDBPyConnection, day: date, days: int = TRAINING_DAYS) -> Dataset:
    """The window's ``cell_features`` rows with their verdicts (catalog views), oldest gate first."""
    first, last = training_window(day, days)
    features = con.sql(_FEATURES_SQL, params={"first": first, "last": last}).to_arrow_table()
    since = datetime.combine(first, time(), UTC)
    until = datetime.combine(last + timedelta(days=1), time(), UTC)
    labels = read_labels(con, features["cell_id"].to_pylist(), since, until)
    return build_dataset(features, labels)


def data_version(day: date, data: Dataset) -> str:
    """The version a model trained for ``day`` on ``data`` gets: stable for the same cells, features and labels."""
    return version_name(day, content_hash(data.cell_ids, data.X, data.names, data.bad, data.capacity))


@dataclass(frozen=True)
class TrainedModel:
    """A new model, its ``models`` row, its evaluation and the split it was trained and tested on.

    ``record`` is what is saved with the model file (:func:`~transforms.predictive.registry.save_model`):
    the row, plus what the report and ``quality_gate_value`` need of its test cells without keeping
    them: ``test_curves`` (:func:`~transforms.predictive.model.score_curves`: ROC points, the flag
    curve), ``reliability`` (mean score and observed bad rate per score decile) and ``drivers``
    (permutation importance with its spread).
    """

    model: GateModel
    row: dict
    evaluation: GateEvaluation
    train: Dataset
    test: Dataset
    record: dict


def split(data: Dataset) -> tuple[Dataset, Dataset, np.datetime64]:
    """:func:`time_split`, refused with :class:`TooFewCells` where a model could not be trained or judged."""
    if len(data) < MIN_CELLS:
        raise TooFewCells(f"{len(data)} cells with a verdict in the training window, at least {MIN_CELLS} needed")
    train, test, at = time_split(data)
    for name, part in (("training", train), ("test", test)):
        if not part.bad.any() or part.bad.all():
            raise TooFewCells(f"the {name} cells ({len(part)}) are all {'bad' if part.bad.all() else 'good'}: "
                              "a model needs both")
    return train, test, at


def train_gate_model(data: Dataset, day: date, lake_root: Path, created_at: datetime,
                     days: int = TRAINING_DAYS) -> TrainedModel:
    """Train and evaluate the gate models on ``data`` (the window of ``day``); the model and its row."""
    train, test, at = split(data)
    ev, clf, reg = evaluate_gate_models(train, test, str(at), top=TOP_FEATURES)
    version = data_version(day, data)
    model = GateModel(version=version, classifier=clf, regressor=reg, names=list(data.names),
                      medians=feature_medians(train.X),
                      top_features=[d["feature"] for d in ev.drivers if d["importance"] > 0][:TOP_FEATURES],
                      schema_hash=schema_hash(data.names))
    first, last = training_window(day, days)
    row = {
        "date": day, "version": version, "train_from": first, "train_until": last,
        "split_at": at.astype("datetime64[us]").item().replace(tzinfo=UTC),
        "train_cells": len(train), "test_cells": len(test), "test_bad": ev.model.bad,
        "roc_auc": ev.model.roc_auc, "pr_auc": ev.model.pr_auc, "brier": ev.model.brier,
        "base_rate": float(train.bad.mean()), "base_rate_brier": ev.base_rate.brier if ev.base_rate else None,
        "filling_only_auc": ev.filling_only.roc_auc if ev.filling_only else None,
        "capacity_mae": ev.capacity_mae, "capacity_baseline_mae": ev.capacity_baseline_mae,
        "features": len(data.names), "schema_hash": model.schema_hash, "top_features": model.top_features,
        "path": str(model_path(lake_root, version)), "sklearn_version": sklearn.__version__,
        "created_at": created_at,
    }
    record = {**row, "test_curves": score_curves(model.score(test.X), test.bad),
              "reliability": ev.model.reliability, "drivers": ev.drivers}
    return TrainedModel(model=model, row=row, evaluation=ev, train=train, test=test, record=record)


# --------------------------------------------------------------------------- the models table

def model_rows(lake_root: Path, day: date) -> list[dict]:
    """The ``models`` rows of ``day`` (every version trained for it), oldest first."""
    path = day_path(lake_root, MODELS, day)
    return pq.read_table(path).to_pylist() if path.exists() else []


#: Columns a retrain of the same version keeps from its row: the alias may already point at it.
_KEPT_ON_RETRAIN = ("promoted_at", "promoted_by")


def land_model_row(lake_root: Path, row: dict) -> Path:
    """Add ``row`` to its day of ``models``, replacing the row of the same version (a retrain on the same
    data), whose last promotion it keeps; the promotable check fills its verdict again."""
    day = row["date"]
    old = [r for r in model_rows(lake_root, day) if r["version"] == row["version"]]
    if old:
        row = {**row, **{k: old[0][k] for k in _KEPT_ON_RETRAIN}}
    rows = [r for r in model_rows(lake_root, day) if r["version"] != row["version"]] + [row]
    return write_day(lake_root, MODELS, day, pa.Table.from_pylist(rows, schema=MODELS.file_schema))


def newest_model_row(lake_root: Path, day: date) -> dict | None:
    """The row of the version trained last for ``day``: the one a run's check and champion step act on."""
    rows = model_rows(lake_root, day)
    return max(rows, key=lambda r: r["created_at"]) if rows else None


def update_model_row(lake_root: Path, day: date, version: str, **changes) -> None:
    """Set columns of ``version``'s row of ``day`` (promotion outcome); a missing row is left missing."""
    rows = model_rows(lake_root, day)
    if not any(r["version"] == version for r in rows):
        return
    for r in rows:
        if r["version"] == version:
            r.update(changes)
    write_day(lake_root, MODELS, day, pa.Table.from_pylist(rows, schema=MODELS.file_schema))


# --------------------------------------------------------------------------- promotion

@dataclass(frozen=True)
class Promotion:
    """The promotable check's verdict on a new model, with what it measured."""

    passed: bool
    #: One line for people: why it passed or was refused.
    reason: str
    champion: str | None
    new_auc: float
    champion_auc: float | None
    #: PSI of each of the new model's top drivers, training cells against test cells.
    psi: dict[str, float]
    #: The drivers above the bound.
    drifted: dict[str, float]


def reindex(data: Dataset, names: list[str]) -> np.ndarray:
    """``data``'s matrix with ``names`` as columns (another model's), NaN where ``data`` has no such feature.

    The same matrix as :func:`~transforms.predictive.dataset.feature_matrix` with ``names`` on the cells'
    feature maps: ``data.names`` is the union of their keys, so a name it lacks is absent from every cell.
    """
    col = {n: j for j, n in enumerate(data.names)}
    X = np.full((len(data), len(names)), np.nan)
    for k, n in enumerate(names):
        j = col.get(n)
        if j is not None:
            X[:, k] = data.X[:, j]
    return X


def drift(model: GateModel, train: Dataset, test: Dataset) -> dict[str, float]:
    """PSI of each of ``model``'s top drivers, its training cells (expected) against its test cells (actual)."""
    col = {n: j for j, n in enumerate(train.names)}
    return {f: psi(train.X[:, col[f]], test.X[:, col[f]]) for f in model.top_features if f in col}


def promotion_verdict(new: GateModel, champion: GateModel | None, train: Dataset, test: Dataset,
                      bound: float = PSI_BOUND) -> Promotion:
    """May ``new`` replace ``champion``? The rule of the module docstring, on ``new``'s own split."""
    new_auc = float(roc_auc_score(test.bad, new.score(test.X)))
    shifts = drift(new, train, test)
    drifted = {f: v for f, v in shifts.items() if v > bound}
    if champion is None:
        return Promotion(True, f"no champion yet: {new.version} (test AUC {new_auc:.3f}) may become the first",
                         None, new_auc, None, shifts, drifted)
    if champion.version == new.version:
        return Promotion(True, f"{new.version} is already the champion", champion.version, new_auc, new_auc, shifts,
                         drifted)
    champion_auc = float(roc_auc_score(test.bad, champion.score(reindex(test, champion.names))))
    refusals = []
    if new_auc < champion_auc:
        refusals.append(f"test AUC {new_auc:.3f} is below the champion {champion.version}'s {champion_auc:.3f} on "
                        f"the same {len(test)} cells")
    if drifted:
        worst = sorted(drifted.items(), key=lambda kv: -kv[1])
        refusals.append(f"{len(drifted)} top driver(s) drifted between training and test cells (PSI > {bound}): "
                        + ", ".join(f"{f} {v:.2f}" for f, v in worst[:3]))
    if refusals:
        return Promotion(False, f"{new.version} refused: " + "; ".join(refusals), champion.version, new_auc,
                         champion_auc, shifts, drifted)
    return Promotion(True, f"{new.version} test AUC {new_auc:.3f} >= champion {champion.version}'s "
                     f"{champion_auc:.3f} on the same {len(test)} cells; no top driver's PSI above {bound}",
                     champion.version, new_auc, champion_auc, shifts, drifted)
