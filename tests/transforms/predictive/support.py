"""Cells with a known answer, shared by the predictive tests: risk follows one planted upstream feature."""

from __future__ import annotations

import numpy as np

from transforms.predictive.dataset import Dataset


def planted(n: int = 6000, seed: int = 1) -> Dataset:
    """Cells whose risk follows one upstream feature; the filling station's features are noise."""
    rng = np.random.default_rng(seed)
    names = ["coat-c.areal_loading.oos_share", "fill.fill_mass.measured", "fill.dew_point.mean",
             *[f"mix-a.noise{i}.mean" for i in range(6)]]
    X = rng.normal(size=(n, len(names)))
    X[rng.random(X.shape) < 0.02] = np.nan  # sensor gaps
    driver = np.nan_to_num(X[:, 0])
    p = 1 / (1 + np.exp(-(2.5 * driver - 3.0)))
    bad = rng.random(n) < p
    capacity = 50 - 0.4 * np.clip(driver, 0, None) + rng.normal(0, 0.05, n)
    ts = np.datetime64("2026-03-01T00:00:00", "us") + np.arange(n) * np.timedelta64(1, "s")
    return Dataset([f"C{i:05d}" for i in range(n)], ["L1"] * n, ts, X, names, bad, capacity, [None] * n)
