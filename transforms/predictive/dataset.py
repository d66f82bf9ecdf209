"""The training set: ``cell_features`` rows with each cell's verdict, as a matrix in time order.

A cell's verdict is its first ``grade`` or ``scrap`` event after the gate. The classifier's target
is *bad* = scrapped after the gate or graded C; the regressor's is the capacity measured at end of
line (cells scrapped at formation have none). Cells still in formation or aging when the data ends
have no verdict and are left out of training and evaluation, never counted as good.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb
import numpy as np
import pyarrow as pa

_LABELS_SQL = """
SELECT unit_id AS cell_id,
       arg_min(grade, ts) FILTER (WHERE kind = 'grade') AS grade,
       arg_min(stage, ts) FILTER (WHERE kind = 'scrap') AS scrap_stage,
       arg_min(reason, ts) FILTER (WHERE kind = 'scrap') AS scrap_reason,
       min(ts) FILTER (WHERE kind IN ('grade', 'scrap')) AS verdict_ts,
       avg(value) FILTER (WHERE kind = 'measure' AND attribute = 'capacity' AND stage = 'aging_eol') AS eol_capacity,
       avg(value) FILTER (WHERE kind = 'measure' AND attribute = 'dcir' AND stage = 'aging_eol') AS eol_dcir
FROM production_events
WHERE unit_type = 'cell' AND date BETWEEN CAST($since AS DATE) AND CAST($until AS DATE) + 1
  AND ts >= $since AND list_contains($cells, unit_id)
GROUP BY unit_id
"""


def read_labels(con: duckdb.DuckDBPyConnection, cells: list[str], since: datetime, until: datetime) -> pa.Table:
    """Verdicts of ``cells`` (gated in ``[since, until)``) from ``production_events``: at most a day later."""
    return con.sql(_LABELS_SQL, params={"since": since, "until": until, "cells": cells}).to_arrow_table()


@dataclass(frozen=True)
class Dataset:
    """Cells with a verdict, oldest gate first, and their features as a matrix (NaN where absent)."""

    cell_ids: list[str]
    lines: list[str]
    gate_ts: np.ndarray  # datetime64[us]
    X: np.ndarray
    names: list[str]
    bad: np.ndarray  # bool
    capacity: np.ndarray  # float, NaN without an end-of-line capacity
    reasons: list[str | None]

    def __len__(self) -> int:
        return len(self.cell_ids)

    def subset(self, mask: np.ndarray) -> Dataset:
        idx = np.flatnonzero(mask)
        return Dataset([self.cell_ids[i] for i in idx], [self.lines[i] for i in idx], self.gate_ts[idx],
                       self.X[idx], self.names, self.bad[idx], self.capacity[idx], [self.reasons[i] for i in idx])

    def columns(self, prefixes: tuple[str, ...]) -> Dataset:
        """The same cells with only the features whose names start with one of ``prefixes``."""
        keep = [i for i, n in enumerate(self.names) if n.startswith(prefixes)]
        return Dataset(self.cell_ids, self.lines, self.gate_ts, self.X[:, keep], [self.names[i] for i in keep],
                       self.bad, self.capacity, self.reasons)


def feature_matrix(features: list[list[tuple[str, float | None]] | dict], names: list[str] | None = None
                   ) -> tuple[np.ndarray, list[str]]:
    """Feature maps as a float matrix; ``names`` fixes the columns (a trained model's), else their sorted union.

    Missing entries and nulls are NaN: gradient boosting routes them on their own branch, which is
    what a missing sensor sample means.
    """
    maps = [dict(f) for f in features]
    if names is None:
        names = sorted({k for m in maps for k in m})
    col = {n: j for j, n in enumerate(names)}
    X = np.full((len(maps), len(names)), np.nan)
    for i, m in enumerate(maps):
        for k, v in m.items():
            j = col.get(k)
            if j is not None and v is not None:
                X[i, j] = v
    return X, names


def is_bad(verdict: dict) -> bool:
    """The classifier's target for one :func:`read_labels` row: scrapped after the gate, or graded C."""
    return verdict["scrap_stage"] is not None or verdict["grade"] == "C"


def build_dataset(features: pa.Table, labels: pa.Table) -> Dataset:
    """Join ``cell_features`` rows with their verdicts; cells without a verdict are dropped."""
    verdict = {r["cell_id"]: r for r in labels.to_pylist() if r["verdict_ts"] is not None}
    rows = sorted((r for r in features.select(["cell_id", "line", "gate_ts", "features"]).to_pylist()
                   if r["cell_id"] in verdict), key=lambda r: (r["gate_ts"], r["cell_id"]))
    X, names = feature_matrix([r["features"] for r in rows])
    v = [verdict[r["cell_id"]] for r in rows]
    return Dataset(
        cell_ids=[r["cell_id"] for r in rows], lines=[r["line"] for r in rows],
        gate_ts=np.array([r["gate_ts"].replace(tzinfo=None) for r in rows], dtype="datetime64[us]"),
        X=X, names=names,
        bad=np.array([is_bad(x) for x in v], dtype=bool),
        capacity=np.array([np.nan if x["eol_capacity"] is None else x["eol_capacity"] for x in v], dtype=float),
        reasons=[x["scrap_reason"] for x in v],
    )


def time_split(data: Dataset, test_share: float = 0.3) -> tuple[Dataset, Dataset, np.datetime64]:
    """Train on the earliest cells, test on the latest ``test_share``: never a random split across time.

    The split instant is a gate time; every training cell passed the gate before every test cell.
    """
    if not 0 < test_share < 1:
        raise ValueError("test_share must be between 0 and 1")
    if len(data) < 10:
        raise ValueError(f"{len(data)} cells with a verdict: too few to split")
    at = data.gate_ts[int(len(data) * (1 - test_share))]
    train = data.subset(data.gate_ts < at)
    test = data.subset(data.gate_ts >= at)
    return train, test, at
