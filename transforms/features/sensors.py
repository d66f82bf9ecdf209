"""The sensor table: asset-model metadata as numpy columns, addressed by dense int32 keys."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from transforms.features.windows import _STRIDE, Array, column

if TYPE_CHECKING:
    from schemas.contracts import AssetEntry


@dataclass(frozen=True, slots=True)
class SensorTableSnapshot:
    """A sensor table in key order: the position of an id is its key, which every state array uses."""

    sensor_id: list[str]
    lsl: Array
    usl: Array
    target: Array
    nominal_rate_hz: Array
    ctq: Array
    is_energy_meter: Array
    site: list[str]
    line: list[str]
    station: list[str]
    stage: list[str]


class SensorTable:
    """Sensor metadata as numpy columns, indexed by the dense key the feature classes use.

    Keys are stable: an upsert of a known sensor updates its row in place, a new sensor is appended.
    The feature classes read the table at every push, so an asset-model update is picked up without
    rebuilding any state. Missing limits, targets or rates are NaN.
    """

    _FLOAT_FIELDS = ("lsl", "usl", "target", "nominal_rate_hz")
    _BOOL_FIELDS = ("ctq", "is_energy_meter")
    _STR_FIELDS = ("site", "line", "station", "stage")

    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self.sensor_id = np.empty(0, dtype=object)
        self.lsl = np.empty(0)
        self.usl = np.empty(0)
        self.target = np.empty(0)
        self.nominal_rate_hz = np.empty(0)
        self.ctq = np.empty(0, dtype=bool)
        self.is_energy_meter = np.empty(0, dtype=bool)
        self.site = np.empty(0, dtype=object)
        self.line = np.empty(0, dtype=object)
        self.station = np.empty(0, dtype=object)
        self.stage = np.empty(0, dtype=object)
        self._line_codes: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.sensor_id)

    @classmethod
    def from_assets(cls, assets: Iterable[AssetEntry]) -> SensorTable:
        """A table of the asset model's sensors, keyed in the order given."""
        table = cls()
        table.upsert(assets)
        return table

    @classmethod
    def from_arrays(cls, sensor_ids: Sequence[str], **columns: Sequence[Any] | np.ndarray) -> SensorTable:
        """A table from columns (``lsl=[...]``, ``ctq=[...]``...): for tests and batch code."""
        table = cls()
        table._upsert(list(sensor_ids), columns)
        return table

    def upsert(self, assets: Iterable[AssetEntry]) -> np.ndarray:
        """Add or update sensors from asset entries; returns their keys."""
        assets = list(assets)
        cols: dict[str, list[Any]] = {
            name: [getattr(a, name) for a in assets]
            for name in self._FLOAT_FIELDS + self._BOOL_FIELDS + self._STR_FIELDS
        }
        cols["stage"] = [str(s) for s in cols["stage"]]
        return self._upsert([a.sensor_id for a in assets], cols)

    def _upsert(self, ids: list[str], columns: Mapping[str, Any]) -> np.ndarray:
        unknown = set(columns) - set(self._FLOAT_FIELDS + self._BOOL_FIELDS + self._STR_FIELDS)
        if unknown:
            raise ValueError(f"unknown sensor table column(s): {sorted(unknown)}")
        keys = np.empty(len(ids), dtype=np.int32)
        new_ids: list[str] = []
        for i, sid in enumerate(ids):
            key = self._index.get(sid)
            if key is None:
                key = len(self.sensor_id) + len(new_ids)
                self._index[sid] = key
                new_ids.append(sid)
            keys[i] = key
        if len(self._index) > _STRIDE:
            raise ValueError(f"a sensor table holds at most {_STRIDE} sensors")
        if new_ids:
            grow = len(new_ids)
            self.sensor_id = np.concatenate([self.sensor_id, np.array(new_ids, dtype=object)])
            for name in self._FLOAT_FIELDS:
                setattr(self, name, np.concatenate([getattr(self, name), np.full(grow, np.nan)]))
            for name in self._BOOL_FIELDS:
                setattr(self, name, np.concatenate([getattr(self, name), np.zeros(grow, dtype=bool)]))
            for name in self._STR_FIELDS:
                setattr(self, name, np.concatenate([getattr(self, name), np.full(grow, "", dtype=object)]))
        for name, values in columns.items():
            if name in self._FLOAT_FIELDS:
                arr = np.array([np.nan if x is None else x for x in values], dtype=np.float64)
            elif name in self._BOOL_FIELDS:
                arr = np.asarray(values, dtype=bool)
            else:
                arr = np.array(["" if x is None else str(x) for x in values], dtype=object)
            getattr(self, name)[keys] = arr
        self._line_codes = None
        return keys

    def keys_of(self, sensor_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """Keys of sensor ids (int32); -1 for an id the table does not hold."""
        get = self._index.get
        return np.fromiter((get(s, -1) for s in sensor_ids), dtype=np.int32, count=len(sensor_ids))

    def line_codes(self) -> tuple[np.ndarray, np.ndarray]:
        """(code per sensor, line name per code): lets line totals be summed with bincount."""
        if self._line_codes is None:
            names, codes = np.unique(self.line.astype(str), return_inverse=True)
            self._line_codes = (codes.astype(np.int64), names.astype(object))
        return self._line_codes

    def snapshot(self) -> SensorTableSnapshot:
        """The table as plain columns (numeric ones as arrays): restore gives every sensor its key back."""
        return SensorTableSnapshot(
            self.sensor_id.tolist(), *(getattr(self, f) for f in self._FLOAT_FIELDS + self._BOOL_FIELDS),
            *(getattr(self, f).tolist() for f in self._STR_FIELDS))

    @classmethod
    def restore(cls, snap: SensorTableSnapshot) -> SensorTable:
        """A table equal to the snapshotted one, keys included."""
        table = cls()
        n = len(snap.sensor_id)
        table.sensor_id = column(snap.sensor_id, object, n, "sensor_id")
        table._index = {str(sid): key for key, sid in enumerate(snap.sensor_id)}
        if len(table._index) != n:
            raise ValueError("snapshot sensor table: sensor ids are not unique")
        for name in cls._FLOAT_FIELDS:
            setattr(table, name, column(getattr(snap, name), np.float64, n, name))
        for name in cls._BOOL_FIELDS:
            setattr(table, name, column(getattr(snap, name), bool, n, name))
        for name in cls._STR_FIELDS:
            setattr(table, name, column(getattr(snap, name), object, n, name))
        return table
