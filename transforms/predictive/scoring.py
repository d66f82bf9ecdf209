"""The live score of cells at the gate: ``cell_features`` rows in, ``cell_risk`` rows out.

Pure: the scorer worker (:mod:`transforms.scorer`) computes the features with
:func:`transforms.batch.cell_features.cell_features`, the very function that builds the training
set, and hands the rows here with the champion model. So a cell is scored on the vector it would
have had in training, to the bit (tested).

Each score carries the few features that raised it most, because an operator holding a cell before
formation asks "why this one?". A feature's *effect* is how much lower the cell's score is with that
feature set to its training median, everything else kept: cheap (one batched prediction per
candidate feature, the model's global top drivers), and in probability points a person can read.
It is not a Shapley value: features that only matter together share no credit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from transforms.predictive.dataset import feature_matrix

#: Drivers kept per cell.
TOP_DRIVERS = 3


def local_drivers(model: Any, X: np.ndarray, top: int = TOP_DRIVERS) -> tuple[np.ndarray, list[list[dict]]]:
    """Scores of ``X`` (columns: ``model.names``) and, per row, the features that raised them most.

    Candidates are the model's global top drivers; a driver is kept only if putting it at the
    training median lowers the score (effect > 0). Values are the cell's own (None where absent).
    """
    score = model.score(X)
    col = {n: j for j, n in enumerate(model.names)}
    cand = [col[f] for f in model.top_features if f in col and not np.isnan(model.medians[col[f]])]
    if not cand or not len(X):
        return score, [[] for _ in range(len(X))]
    k = len(cand)
    alt = np.repeat(X, k, axis=0)
    for i, j in enumerate(cand):
        alt[i::k, j] = model.medians[j]
    effect = score[:, None] - model.score(alt).reshape(len(X), k)
    drivers = []
    for r in range(len(X)):
        order = [i for i in np.argsort(-effect[r], kind="stable")[:top] if effect[r, i] > 0]
        drivers.append([{"feature": model.names[cand[i]],
                         "value": None if np.isnan(X[r, cand[i]]) else float(X[r, cand[i]]),
                         "effect": float(effect[r, i])} for i in order])
    return score, drivers


def risk_rows(features: pa.Table, model: Any | None, scored_at: datetime, complete: dict[str, bool],
              positions: dict[str, tuple[int, int]], arrived: dict[str, datetime] | None = None) -> list[dict]:
    """``cell_risk`` rows for the ``cell_features`` rows in ``features`` (one per cell).

    ``model`` is the champion (None: rows are landed unscored, so a missing champion shows as null
    scores rather than as cells that never passed); ``complete`` and ``positions`` (partition,
    offset of the leave event) and ``arrived`` (its Kafka timestamp) are per cell id.
    """
    rows = features.select(["cell_id", "site", "line", "gate_ts", "n_features", "features"]).to_pylist()
    if model is not None and rows:
        X, _ = feature_matrix([r["features"] for r in rows], names=list(model.names))
        scores, drivers = local_drivers(model, X)
    else:
        scores, drivers = [None] * len(rows), [[] for _ in rows]
    arrived = arrived or {}
    out = []
    for r, s, d in zip(rows, scores, drivers, strict=True):
        part, offset = positions[r["cell_id"]]
        out.append({"cell_id": r["cell_id"], "site": r["site"], "line": r["line"], "gate_ts": r["gate_ts"],
                    "score": None if s is None else float(s),
                    "model_version": None if model is None else model.version, "drivers": d,
                    "complete": complete[r["cell_id"]], "n_features": r["n_features"], "features": r["features"],
                    "arrived_at": arrived.get(r["cell_id"]), "scored_at": scored_at, "src_partition": part,
                    "src_offset": offset})
    return out
