"""The readings partition: raw readings, window features, SPC, sensor health and energy."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from schemas import tables as T
from schemas.contracts import AssetEntry, ContractError, DecodedFrame, Reading, Reason, decode_reading_message
from transforms import features as F
from transforms.checkpoint import ReadingsState
from transforms.partitions.base import _check_future, _ms_ts, _Partition
from transforms.settings import StreamSettings

_QUALITY_CODE = {"good": 0, "uncertain": 1, "bad": 2}


class ReadingsPartition(_Partition):
    """One partition of ``plant.readings.v1``: raw readings, window features, SPC, health, energy."""

    TABLES = (T.READINGS, T.SENSOR_FEATURES_1M, T.SENSOR_FEATURES_1H, T.SENSOR_HEALTH, T.ENERGY_FEATURES)
    STATE = ReadingsState
    FEATURE_TABLES = frozenset({"sensor_features_1m", "sensor_features_1h", "sensor_health", "energy_features"})

    def __init__(self, topic: str, partition: int, lake_root: Path, settings: StreamSettings,
                 assets: Mapping[str, AssetEntry], refresh_assets: Callable[[], None] | None = None):
        self.assets = assets
        self.refresh_assets = refresh_assets
        super().__init__(topic, partition, lake_root, settings)
        self._frames: list[tuple[int, int, DecodedFrame]] = []  # (offset, ingest ms, frame)
        self._rows = 0
        # Sensor lists already seen (all in the asset model, unit-checked) -> their keys.
        self._known_lists: dict[tuple[str, ...], np.ndarray] = {}
        self._dictionaries: tuple[int, dict[str, pa.Array]] | None = None

    def _new_state(self) -> dict[str, Any]:
        s = self.settings
        table = F.SensorTable()
        return {
            "table": table,
            "param": np.empty(0, dtype=object),
            "unit": np.empty(0, dtype=object),
            "windows": F.WindowStats(table, s.window_ms, s.lateness_ms),
            "windows_long": F.WindowStats(table, s.long_window_ms, s.lateness_ms),
            "health": F.SensorHealth(table, s.window_ms, s.lateness_ms),
            "energy": F.EnergyWindows(table, s.window_ms, s.lateness_ms),
            "spc": F.SpcState(table),
            "max_ts": np.iinfo(np.int64).min,  # latest event time seen, for per-message lateness
            "late_by_window": {},  # (sensor key, window start) -> late readings, for sensor_health.late
        }

    def _keys(self, sensors: list[str]) -> np.ndarray:
        """Keys of a frame's sensors in this partition's table, adding sensors seen for the first time."""
        cache_key = tuple(sensors)
        keys = self._known_lists.get(cache_key)
        if keys is not None:
            return keys
        keys = self._new_keys(sensors)
        if len(self._known_lists) < 4096:  # gateways repeat their lists; a bound keeps odd senders cheap
            self._known_lists[cache_key] = keys
        return keys

    def _new_keys(self, sensors: list[str]) -> np.ndarray:
        table: F.SensorTable = self.state["table"]
        keys = table.keys_of(sensors)
        if (keys < 0).any():
            new = [self.assets[s] for s, k in zip(sensors, keys, strict=True) if k < 0]
            table.upsert(new)
            st = self.state
            n = len(table)
            param = np.empty(n, dtype=object)
            unit = np.empty(n, dtype=object)
            param[: len(st["param"])] = st["param"]
            unit[: len(st["unit"])] = st["unit"]
            for e in new:
                k = int(table.keys_of([e.sensor_id])[0])
                param[k], unit[k] = e.parameter, e.unit
            st["param"], st["unit"] = param, unit
            keys = table.keys_of(sensors)
        return keys

    def _add_one(self, offset: int, ingest_ms: int, payload: bytes | None) -> None:
        """Decode one message and check it against the asset model; raise ContractError to refuse it."""
        msg = decode_reading_message(payload)
        if isinstance(msg, Reading):
            msg = _single_as_frame(msg)
        self._check_event_time(msg, ingest_ms)
        units = getattr(msg, "units", None)
        if units or tuple(msg.sensors) not in self._known_lists:
            # A gateway sends the same sensor list frame after frame: checked once, keyed once.
            unknown = [s for s in msg.sensors if s not in self.assets]
            if unknown and self.refresh_assets is not None:
                self.refresh_assets()  # the model may have grown since start-up (rate-limited by the caller)
                unknown = [s for s in msg.sensors if s not in self.assets]
            if unknown:
                raise ContractError(Reason.UNKNOWN_SENSOR,
                                    f"{len(unknown)} sensor(s) not in the asset model, e.g. {unknown[0]!r}")
            if units:
                for sid, unit in units.items():
                    if unit != self.assets[sid].unit:
                        raise ContractError(Reason.UNIT_MISMATCH,
                                            f"{sid!r} reports {unit!r}, model says {self.assets[sid].unit!r}")
        self._frames.append((offset, ingest_ms, msg))
        self._rows += len(msg)
        if self._rows >= self.settings.microbatch_rows:
            self._compute()

    def _check_event_time(self, frame: DecodedFrame, ingest_ms: int) -> None:
        """Refuse event times too far ahead of the record's arrival: one would close every window early.

        A single year-2200 reading would move the partition's watermark (kept in its checkpoint) to
        2200, and every later reading would count as late, for good. Past times are not limited here:
        replays of old files are legitimate, and lateness already handles them.
        """
        if len(frame):
            _check_future(int(frame.ts_ms.max()), ingest_ms, self.settings.max_future_ms)

    def _reset_buffers(self) -> None:
        self._frames, self._rows = [], 0
        self._known_lists = {}
        self._dictionaries = None

    @property
    def buffered_rows(self) -> int:
        return self._rows + sum(t.num_rows for t in self.pending["readings"])

    def _compute(self, final: bool = False) -> None:
        """Run the buffered frames through the feature classes as one vectorised micro-batch."""
        frames, self._frames, self._rows = self._frames, [], 0
        st = self.state
        if frames:
            keys = np.concatenate([self._keys(f.sensors)[f.idx] for _, _, f in frames])
            ts = np.concatenate([f.ts_ms for _, _, f in frames])
            val = np.concatenate([f.value for _, _, f in frames])
            qual = np.concatenate([f.quality for _, _, f in frames])
            lens = np.array([len(f) for _, _, f in frames])
            src_off = np.repeat(np.array([o for o, _, _ in frames], dtype=np.int64), lens)
            ingest = np.repeat(np.array([i for _, i, _ in frames], dtype=np.int64), lens)
            src_idx = np.concatenate([np.arange(n, dtype=np.int32) for n in lens])
            table: F.SensorTable = st["table"]
            late, late_window = self._late_mask(ts, lens)
            ok = ~late
            k_ok, t_ok, v_ok = keys[ok], ts[ok], val[ok]
            win = st["windows"].push(k_ok, t_ok, v_ok)
            # Not late for its 1-minute window means not late for the (aligned, longer) hour either.
            self._add_window_rows(st["windows_long"].push(k_ok, t_ok, v_ok).rows, long=True)
            health = st["health"].push(k_ok, t_ok, v_ok)
            meters = table.is_energy_meter[k_ok]
            energy = st["energy"].push(k_ok[meters], t_ok[meters], v_ok[meters]) if meters.any() else None
            if late.any():
                pending = st["late_by_window"]
                for k, w in zip(keys[late].tolist(), late_window[late].tolist(), strict=True):
                    pending[(k, w)] = pending.get((k, w), 0) + 1
            self.pending["readings"].append(self._raw_table(keys, ts, val, qual, ingest, src_off, src_idx, late))
            self._add_window_rows(win.rows)
            self._add_health_rows(health.rows)
            if energy is not None:
                self._add_energy_rows(energy.rows)
        if final:
            self._add_window_rows(st["windows"].flush_all().rows)
            self._add_window_rows(st["windows_long"].flush_all().rows, long=True)
            self._add_health_rows(st["health"].flush_all().rows)
            self._add_energy_rows(st["energy"].flush_all().rows)

    def _late_mask(self, ts: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which readings are late, judged per *message* against the watermark before it.

        Judging per message rather than per micro-batch makes the result a function of the message
        sequence alone, so any split into micro-batches, checkpoints or workers gives the same lake.
        A late reading is kept in ``readings`` (late = true) and left out of every window; it is
        counted in the health row of the window that was current when it arrived.
        """
        st = self.state
        width, lateness = self.settings.window_ms, self.settings.lateness_ms
        starts = np.concatenate(([0], np.cumsum(lens)[:-1]))
        nonempty = lens > 0
        msg_max = np.full(len(lens), np.iinfo(np.int64).min, dtype=np.int64)
        msg_max[nonempty] = np.maximum.reduceat(ts, starts[nonempty]) if nonempty.any() else msg_max[nonempty]
        prev = st.get("max_ts", np.iinfo(np.int64).min)
        before = np.maximum.accumulate(np.concatenate(([prev], msg_max[:-1])))
        st["max_ts"] = int(max(prev, msg_max.max())) if len(msg_max) else prev
        seen = np.repeat(before, lens)
        no_history = seen == np.iinfo(np.int64).min
        late = ~no_history & ((ts // width + 1) * width <= seen - lateness)
        current_window = np.where(no_history, 0, seen // width * width)
        return late, current_window

    def _enrichment(self) -> dict[str, pa.Array]:
        """The sensor table's text columns as Arrow arrays, rebuilt only when sensors were added."""
        table: F.SensorTable = self.state["table"]
        if self._dictionaries is None or self._dictionaries[0] != len(table):
            st = self.state
            cols = {"sensor_id": table.sensor_id, "site": table.site, "line": table.line, "station": table.station,
                    "stage": table.stage, "parameter": st["param"], "unit": st["unit"]}
            self._dictionaries = (len(table), {c: pa.array(v, type=pa.string()) for c, v in cols.items()})
        return self._dictionaries[1]

    def _raw_table(self, keys, ts, val, qual, ingest, src_off, src_idx, late) -> pa.Table:
        """Raw rows; the text columns are dictionary-encoded by sensor key (no per-row strings).

        The lake writes them as Parquet dictionary columns straight from these indices, which is
        what Parquet would build from plain strings anyway, after hashing every one of them.
        """
        indices = pa.array(keys.astype(np.int32, copy=False))
        text = {c: pa.DictionaryArray.from_arrays(indices, d) for c, d in self._enrichment().items()}
        return pa.table({
            "sensor_id": text["sensor_id"], "ts": _ms_ts(ts), "value": pa.array(val, pa.float64()),
            "quality": pa.array(qual, pa.int8()), "site": text["site"], "line": text["line"],
            "station": text["station"], "stage": text["stage"], "parameter": text["parameter"],
            "unit": text["unit"], "ingest_ts": _ms_ts(ingest),
            "src_partition": pa.array(np.full(len(keys), self.partition, dtype=np.int32)),
            "src_offset": pa.array(src_off), "src_index": pa.array(src_idx), "late": pa.array(late, pa.bool_()),
        })

    def _add_window_rows(self, rows: F.Columns, long: bool = False) -> None:
        if not len(rows.get("sensor_key", ())):
            return
        st = self.state
        if long:
            self.pending["sensor_features_1h"].append(self._window_table(rows, T.SENSOR_FEATURES_1H))
            return
        spc = st["spc"].push(rows)
        keys = rows["sensor_key"].astype(np.int64)
        n = len(keys)
        spc_cols = ("ewma", "ewma_ucl", "ewma_lcl", "ewma_alarm", "cusum_pos", "cusum_neg", "cusum_alarm",
                    "we_rule1", "we_rule2", "we_rule3", "we_rule4", "cp", "cpk", "pp", "ppk")
        joined: dict[str, list] = {c: [None] * n for c in spc_cols}
        if len(spc.get("sensor_key", ())):
            pos = {(int(k), int(w)): i for i, (k, w) in enumerate(zip(keys, rows["window_start"], strict=True))}
            for j in range(len(spc["sensor_key"])):
                i = pos.get((int(spc["sensor_key"][j]), int(spc["window_start"][j])))
                if i is None:
                    continue
                for c in spc_cols:
                    v = spc[c][j]
                    joined[c][i] = None if isinstance(v, float) and np.isnan(v) else v.item() if hasattr(v, "item") else v
        table_out = self._window_table(rows, T.SENSOR_FEATURES_1M)
        schema = T.SENSOR_FEATURES_1M.file_schema
        for c in spc_cols:
            table_out = table_out.set_column(schema.get_field_index(c), c, pa.array(joined[c], schema.field(c).type))
        self.pending["sensor_features_1m"].append(table_out)

    def _window_table(self, rows: F.Columns, spec: T.TableSpec) -> pa.Table:
        """Window statistics as a table of ``spec``'s file schema (SPC columns null), enriched."""
        st = self.state
        table: F.SensorTable = st["table"]
        keys = rows["sensor_key"].astype(np.int64)
        out = {
            "sensor_id": pa.array(rows["sensor_id"], pa.string()),
            "window_start": _ms_ts(rows["window_start"]), "window_end": _ms_ts(rows["window_end"]),
            "count": pa.array(rows["count"], pa.int64()),
            **{c: pa.array(rows[c], pa.float64(), from_pandas=True) for c in ("mean", "std", "min", "max", "last")},
            "out_of_spec": pa.array(rows["out_of_spec"], pa.int64()),
        }
        for c, arr in (("site", table.site), ("line", table.line), ("station", table.station),
                       ("stage", table.stage), ("parameter", st["param"]), ("unit", st["unit"])):
            out[c] = pa.array(arr[keys], pa.string())
        schema = spec.file_schema
        n = len(keys)
        return pa.table([out[f.name] if f.name in out else pa.nulls(n, f.type) for f in schema], schema=schema)

    def _add_health_rows(self, rows: F.Columns) -> None:
        if not len(rows.get("sensor_key", ())):
            return
        self.pending["sensor_health"].append(pa.table({
            "sensor_id": pa.array(rows["sensor_id"], pa.string()),
            "window_start": _ms_ts(rows["window_start"]), "window_end": _ms_ts(rows["window_end"]),
            "observed": pa.array(rows["observed"], pa.int64()),
            "expected": pa.array(rows["expected"], pa.float64(), from_pandas=True),
            "rate_ratio": pa.array(rows["rate_ratio"], pa.float64(), from_pandas=True),
            "max_gap_ms": pa.array(np.round(rows["max_gap_ms"]), pa.float64(), from_pandas=True).cast(pa.int64()),
            "stuck": pa.array(rows["stuck"], pa.bool_()),
            "late": pa.array(self._late_counts(rows), pa.int64()),
        }))

    def _late_counts(self, rows: F.Columns) -> np.ndarray:
        """Late readings per emitted health row, from the per-message attribution of _late_mask."""
        pending = self.state["late_by_window"]
        own = np.asarray(rows["late"], dtype=np.int64)
        if not pending:
            return own
        extra = [pending.pop((int(k), int(w)), 0) for k, w in
                 zip(rows["sensor_key"], rows["window_start"], strict=True)]
        return own + np.asarray(extra, dtype=np.int64)

    def _add_energy_rows(self, rows: F.Columns) -> None:
        if not len(rows.get("sensor_key", ())):
            return
        self.pending["energy_features"].append(pa.table({
            "window_start": _ms_ts(rows["window_start"]), "window_end": _ms_ts(rows["window_end"]),
            "site": pa.array(rows["site"], pa.string()), "line": pa.array(rows["line"], pa.string()),
            "station": pa.array(rows["station"], pa.string()), "stage": pa.array(rows["stage"], pa.string()),
            "kwh": pa.array(rows["kwh"], pa.float64(), from_pandas=True),
            "counter_resets": pa.array(rows["counter_resets"], pa.int64()),
            "gap_ms": pa.array(np.round(rows["gap_ms"]), pa.float64(), from_pandas=True).cast(pa.int64()),
        }))


class _SingleFrame(DecodedFrame):
    """A single reading in frame form, carrying its optional unit for the unit check."""

    __slots__ = ("units",)


def _single_as_frame(r: Reading) -> _SingleFrame:
    f = _SingleFrame(r.sensor_id, [r.sensor_id], np.zeros(1, np.int32),
                     np.array([int(round(r.ts.timestamp() * 1000))], np.int64),
                     np.array([r.value], np.float64), np.array([_QUALITY_CODE[r.quality.value]], np.int8))
    f.units = {r.sensor_id: r.unit} if r.unit else None
    return f
