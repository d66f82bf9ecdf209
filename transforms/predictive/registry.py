"""The model registry in the lake: one file per trained gate model, and a champion alias.

``<lake>/models/<version>.joblib`` holds one trained model (:class:`GateModel`) with the record of
its training (window, split, figures, feature list and their schema hash); ``models/champion.json``
names the version the live score uses, and ``models/champion_history.jsonl`` keeps every move of that
alias (who, when, why). Files are written to a temporary name and renamed, so a reader (the live
scorer, ``gigapulse models list``) sees the old file or the new one, never half of one.

**Model files are trusted content of the lake.** They are pickles (joblib): loading one runs code
it names, like any scikit-learn model file. Only gigapulse's own jobs write ``<lake>/models``; give
nobody else write access to it. A file also records the scikit-learn version that wrote it, and
:func:`load_model` refuses one written by another major.minor (scikit-learn does not promise that a
fitted model unpickles, or predicts the same, across minor releases): retrain instead.

Version names are ``gate-<trained-for day as YYYYMMDD>-<6 hex digits>``: the digits are a hash of the
training data (:func:`content_hash`), so training the same day twice on the same data gives the same
version (and, the models being seeded, the same file content), and new data gives a new version.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn

from transforms.lake import write_atomic

MODELS_DIR = "models"
CHAMPION_FILE = "champion.json"
HISTORY_FILE = "champion_history.jsonl"
SUFFIX = ".joblib"
#: Layout of the dict in a model file; bumped when its keys change meaning.
FILE_FORMAT = 1
_VERSION = re.compile(r"^gate-\d{8}-[0-9a-f]{6}$")


class RegistryError(Exception):
    """A registry operation a user can act on (unknown version, incompatible file); one line."""


@dataclass(frozen=True)
class GateModel:
    """A trained gate model as the live scorer uses it: the classifier, its columns and their reference."""

    version: str
    classifier: Any
    regressor: Any | None
    names: list[str]
    #: Training median of each feature (NaN where never sampled): the reference a cell's drivers are told against.
    medians: np.ndarray
    #: The model's global top drivers (permutation importance on its test cells), at most 20, best first.
    top_features: list[str]
    schema_hash: str

    def score(self, X: np.ndarray) -> np.ndarray:
        """Probability that each row's cell ends scrapped or graded C; ``X``'s columns are :attr:`names`."""
        if X.shape[1] != len(self.names):
            raise ValueError(f"{self.version}: {X.shape[1]} columns, the model has {len(self.names)} features")
        return self.classifier.predict_proba(X)[:, 1]


def feature_medians(X: np.ndarray) -> np.ndarray:
    """Each column's median over the cells that sampled it (NaN for a column never sampled): the
    reference a :class:`GateModel`'s per-cell drivers are told against."""
    if not X.shape[1]:
        return np.array([])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column's median is NaN, as documented
        return np.nanmedian(X, axis=0)


def schema_hash(names: list[str]) -> str:
    """sha256 of the sorted feature names, one per line: equal hashes mean the same columns (in any order)."""
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()


def content_hash(cell_ids: list[str], X: np.ndarray, names: list[str], *labels: np.ndarray) -> str:
    """sha256 of a training set (cells, features, names, labels): the stable part of a version name."""
    h = hashlib.sha256()
    h.update("\n".join(cell_ids).encode())
    h.update(b"\0" + "\n".join(names).encode())
    h.update(np.ascontiguousarray(X, dtype=np.float64).tobytes())
    for y in labels:
        h.update(np.ascontiguousarray(y).tobytes())
    return h.hexdigest()


def version_name(trained_for: date, digest: str) -> str:
    return f"gate-{trained_for:%Y%m%d}-{digest[:6]}"


def models_dir(lake_root: Path) -> Path:
    """``<lake_root>/models``: the model files and the champion alias."""
    return Path(lake_root) / MODELS_DIR


def model_path(lake_root: Path, version: str) -> Path:
    if not _VERSION.match(version):
        raise RegistryError(f"not a model version: {version!r} (expected gate-YYYYMMDD-xxxxxx)")
    return models_dir(lake_root) / f"{version}{SUFFIX}"


def _minor(v: str) -> str:
    return ".".join(v.split(".")[:2])


def save_model(lake_root: Path, model: GateModel, record: dict) -> Path:
    """Write ``model`` and its training ``record`` to ``<lake>/models/<version>.joblib`` (atomic); its path."""
    path = model_path(lake_root, model.version)
    payload = {"format": FILE_FORMAT, "sklearn": sklearn.__version__, "version": model.version,
               "classifier": model.classifier, "regressor": model.regressor, "names": list(model.names),
               "medians": np.asarray(model.medians, dtype=float), "top_features": list(model.top_features),
               "schema_hash": model.schema_hash, "record": record}
    return write_atomic(path, lambda f: joblib.dump(payload, f))


def _read(lake_root: Path, version: str) -> dict:
    path = model_path(lake_root, version)
    if not path.is_file():
        raise RegistryError(f"no model {version} in {models_dir(lake_root)}")
    payload = joblib.load(path)  # trusted content of the lake: see the module docstring
    if payload.get("format") != FILE_FORMAT:
        raise RegistryError(f"{path.name}: file format {payload.get('format')}, this gigapulse reads {FILE_FORMAT}")
    if _minor(payload["sklearn"]) != _minor(sklearn.__version__):
        raise RegistryError(f"{path.name} was written by scikit-learn {payload['sklearn']}, this is "
                            f"{sklearn.__version__}: retrain the model (files do not cross minor versions)")
    return payload


def load_model(lake_root: Path, version: str) -> GateModel:
    """The model ``version`` from the lake; :class:`RegistryError` if missing or written by another scikit-learn."""
    p = _read(lake_root, version)
    return GateModel(version=p["version"], classifier=p["classifier"], regressor=p["regressor"], names=p["names"],
                     medians=p["medians"], top_features=p["top_features"], schema_hash=p["schema_hash"])


def load_record(lake_root: Path, version: str) -> dict:
    """The training record saved with ``version`` (window, split, figures)."""
    return _read(lake_root, version)["record"]


def versions(lake_root: Path) -> list[str]:
    """Every saved version, oldest trained-for day first."""
    d = models_dir(lake_root)
    return sorted(p.name.removesuffix(SUFFIX) for p in d.glob(f"gate-*{SUFFIX}")) if d.is_dir() else []


def champion(lake_root: Path) -> str | None:
    """The champion's version, or None if none was ever set: one small JSON read, cheap enough per batch."""
    path = models_dir(lake_root) / CHAMPION_FILE
    try:
        return json.loads(path.read_text())["version"]
    except FileNotFoundError:
        return None


def set_champion(lake_root: Path, version: str, by: str, reason: str) -> None:
    """Point the champion alias at ``version`` (atomic) and append the move to ``champion_history.jsonl``.

    ``by`` says who moved it (``check:promotable``, ``cli:<user>``); the version must have a file.
    """
    if not model_path(lake_root, version).is_file():
        raise RegistryError(f"no model {version} in {models_dir(lake_root)}")
    move = {"version": version, "previous": champion(lake_root), "by": by, "reason": reason,
            "at": datetime.now(UTC).isoformat(timespec="seconds")}
    d = models_dir(lake_root)
    # History first: a crash between the two leaves a logged move that did not happen, never a silent one.
    with open(d / HISTORY_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(move) + "\n")
    write_atomic(d / CHAMPION_FILE, lambda f: f.write(json.dumps(move, indent=1).encode()))


def champion_history(lake_root: Path) -> list[dict]:
    """Every move of the champion alias, oldest first."""
    path = models_dir(lake_root) / HISTORY_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


#: Share given to a bin one sample holds none of, so that its log term stays finite.
PSI_FLOOR = 1e-4


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = 10) -> float:
    """Population stability index of ``actual`` against ``expected``: sum of (a - e) x ln(a / e) over bins.

    Bins are the ``bins``-quantiles of the finite values of ``expected``, open at both ends (duplicate
    edges merged, so a feature with few distinct values, such as an out-of-spec share that is mostly
    0, gets fewer bins); NaN ("no sample") is one more bin, so a sensor that stops sampling counts as
    a shift. Shares are floored at :data:`PSI_FLOOR`. 0 means the same distribution; the customary
    reading is < 0.1 stable, 0.1-0.25 a moderate shift, > 0.25 a significant one. NaN if either
    sample is empty.
    """
    expected, actual = np.asarray(expected, dtype=float), np.asarray(actual, dtype=float)
    if not len(expected) or not len(actual):
        return float("nan")
    finite = expected[~np.isnan(expected)]
    if len(finite):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))
    else:
        edges = np.array([])

    def shares(x: np.ndarray) -> np.ndarray:
        nan = np.isnan(x)
        counts = np.bincount(np.searchsorted(edges, x[~nan], side="right"), minlength=len(edges) + 1)
        return np.maximum(np.r_[counts, nan.sum()] / len(x), PSI_FLOOR)

    e, a = shares(expected), shares(actual)
    return float(np.sum((a - e) * np.log(a / e)))
