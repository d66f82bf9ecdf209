"""Per-partition stream processing with exactly-once checkpoints into the lake.

One :class:`ReadingsPartition` (or :class:`EventsPartition`) exists per assigned source partition.
It decodes and validates messages (bad ones become dead-letter rows), enriches readings from the
asset model, feeds the pure feature classes of :mod:`transforms.features`, and buffers lake rows.
A checkpoint hands those rows and a snapshot of the feature state to :mod:`transforms.checkpoint`,
which owns the commit point: lake files first, then the partition's checkpoint file. On
(re)assignment a partition resumes from that file, features included.

No Faust or Kafka import here: the Faust app (:mod:`transforms.app`) only wires messages in and
acknowledgements out, so all of this is tested without a broker.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from schemas import tables as T
from schemas.contracts import (
    MAX_TS_MS,
    AssetEntry,
    ContractError,
    DeadLetter,
    DecodedFrame,
    ProductionEvent,
    Reading,
    Reason,
    decode_dead_letter,
    decode_event,
    decode_reading_message,
)
from transforms import features as F
from transforms.checkpoint import (
    Checkpoint,
    CheckpointFailed,
    CheckpointJob,
    CheckpointResult,
    DeadLettersState,
    EventsState,
    ReadingsState,
    checkpoint_path,
    committed_next_offset,
    drop_uncommitted,
    dump_snapshot,
    legacy_checkpoint_path,
    load_checkpoint,
    load_snapshot,
    state_line,
)
from transforms.lake import LakeWriter
from transforms.settings import StreamSettings

log = logging.getLogger(__name__)

_MS_TS = pa.timestamp("ms", tz="UTC")
_QUALITY_CODE = {"good": 0, "uncertain": 1, "bad": 2}
# The checkpoint names the app and the tests use, kept importable from here.
__all__ = ["CheckpointFailed", "CheckpointJob", "CheckpointResult", "DeadLettersPartition", "EventsPartition",
           "ReadingsPartition", "checkpoint_path", "committed_next_offset", "drop_uncommitted", "feature_messages"]


def _dead_letter(err: ContractError, topic: str, partition: int, offset: int, payload: bytes | None) -> DeadLetter:
    return DeadLetter.for_payload(payload, err, "stream", topic, partition, offset)


def sane_ingest_ms(kafka_ms: int | float | None, max_future_ms: int, now_ms: int | None = None) -> int:
    """The record's Kafka timestamp in ms, or the worker's clock when the record has none usable.

    Kafka uses -1 for "no timestamp", and a client may write any 64-bit value (year 1970 or 2200
    alike). Before 1970, beyond ``max_future_ms`` ahead of the worker's clock, or past year 9999, it
    says nothing about when the record arrived, and a year-2200 ``ingest_ts`` would also let a
    year-2200 reading through the future check below: the worker's own clock stands in for it.
    """
    now = int(time.time() * 1000) if now_ms is None else now_ms
    try:
        ms = int(kafka_ms)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return now
    if ms < 0 or ms > MAX_TS_MS or (max_future_ms > 0 and ms > now + max_future_ms):
        return now
    return ms


def _check_future(event_ms: int, ingest_ms: int, limit_ms: int) -> None:
    """Refuse an event time more than ``limit_ms`` ahead of both the record's arrival and the worker's clock.

    Either may lag legitimately (a client may stamp its records with 1970, a simulator runs ahead of
    the wall clock), so only a time ahead of both counts. The worker's clock makes the verdict
    depend on when a record is processed only for event times about ``limit_ms`` ahead of it.
    """
    if limit_ms > 0 and event_ms > max(ingest_ms, int(time.time() * 1000)) + limit_ms:
        raise ContractError(Reason.TIMESTAMP_OUT_OF_RANGE,
                            f"event time {event_ms} ms is more than {limit_ms // 1000:,} s ahead of the record's "
                            f"Kafka timestamp and of the worker's clock (GIGAPULSE_STREAM_MAX_FUTURE_S)")


def internal_error(exc: BaseException, attempts: int) -> ContractError:
    """A worker bug on one record as a refusal: the exception and where it was raised, for the report."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
    return ContractError(Reason.INTERNAL_ERROR,
                         f"{type(exc).__name__}: {exc}{where} (failed {attempts} time(s); set aside)")


class _Partition:
    """Shared checkpoint mechanics of one source partition."""

    TABLES: tuple[T.TableSpec, ...] = ()
    #: The checkpoint's state document of this kind of partition.
    STATE: type = DeadLettersState

    def __init__(self, topic: str, partition: int, lake_root: Path, settings: StreamSettings):
        self.topic = topic
        self.partition = partition
        self.lake_root = Path(lake_root)
        self.settings = settings
        self.writers = {spec.name: LakeWriter.for_table(self.lake_root, spec) for spec in self.TABLES}
        self.pending: dict[str, list[pa.Table]] = {spec.name: [] for spec in self.TABLES}
        self.dead: list[DeadLetter] = []
        self.first_offset: int | None = None
        self.last_offset: int | None = None
        self.opened_at = time.monotonic()
        self.next_offset = 0
        self.state: dict[str, Any] = {}
        #: The error of a failed checkpoint write; set, it stops every later write of this partition.
        self.failed: BaseException | None = None
        #: A legacy pickled checkpoint this partition resumed from, removed at its first commit.
        self.legacy_checkpoint: Path | None = None
        #: Messages taken since the last prepared checkpoint, as received: replayed one at a time
        #: when processing them raised (see :meth:`_isolate`). References only, no copies.
        self._batch: list[tuple[int, int, bytes | None]] = []
        #: Records set aside with ``internal_error`` (a worker bug) since the worker started.
        self.internal_errors = 0
        self._load()
        #: The state as of the last prepared checkpoint, as its snapshot's JSON: where
        #: :meth:`_isolate` restarts (the same typed snapshot a checkpoint file holds).
        self._boundary = self._snapshot()

    # ------------------------------------------------------------------ state
    def _new_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _snapshot(self) -> bytes:
        """The state as its typed snapshot's JSON: a copy that later processing cannot change."""
        return dump_snapshot(self.STATE.capture(self.state))

    def _restore(self, snapshot: bytes) -> None:
        self.state = load_snapshot(self.STATE, snapshot).restore()

    def _load(self) -> None:
        """Resume from the checkpoint (raises CheckpointError, naming the file, if it cannot be trusted)."""
        loaded = load_checkpoint(self.lake_root, self.topic, self.partition, self.STATE)
        if loaded is None:
            self.next_offset, self.state = 0, self._new_state()
        else:
            self.next_offset, self.state = loaded
            legacy = legacy_checkpoint_path(self.lake_root, self.topic, self.partition)
            self.legacy_checkpoint = legacy if legacy.exists() else None
        drop_uncommitted(self.lake_root, self.topic, self.partition, self.next_offset)

    # ------------------------------------------------------------------ intake
    def add(self, offset: int, ingest_ms: int | float | None, payload: bytes | None) -> None:
        """Take one message: it is landed or dead-lettered with a reason, and never raises.

        ``ingest_ms`` is the record's Kafka timestamp (see :func:`sane_ingest_ms`). A refusal by
        contract or asset model becomes a dead letter; any other exception is the worker's own
        failure and is isolated to the record that caused it (:meth:`_isolate`).
        """
        if not self._take(offset):
            return
        ingest = sane_ingest_ms(ingest_ms, self.settings.max_future_ms)
        self._batch.append((offset, ingest, payload))
        try:
            self._add_one(offset, ingest, payload)
        except ContractError as err:
            self.dead.append(_dead_letter(err, self.topic, self.partition, offset, payload))
        except Exception as exc:  # noqa: BLE001 - a bug on one record must not stop the partition
            self._isolate(exc)

    def _add_one(self, offset: int, ingest_ms: int, payload: bytes | None) -> None:
        """Decode and buffer one message; raise :class:`ContractError` to refuse it."""
        raise NotImplementedError

    def _reset_buffers(self) -> None:
        """Forget everything buffered since the last checkpoint, and caches derived from the state."""

    def _isolate(self, exc: BaseException) -> None:
        """Redo the batch since the last checkpoint one message at a time, setting aside what fails.

        Processing raised something other than a refusal: a bug, on some message of the batch (a
        micro-batch holds many). The state is restored as of the last prepared checkpoint and the
        batch's messages are taken again, each computed on its own; one that still fails after
        ``GIGAPULSE_STREAM_INTERNAL_RETRIES`` more tries is restored away and dead-lettered as
        ``internal_error`` with the exception, and the partition goes on. Lateness is judged per
        message, so computing one message at a time gives the rows a micro-batch would have.
        """
        log.error("%s[%d]: processing failed (%s: %s); redoing the batch since offset %s one message at a "
                  "time to set the cause aside", self.topic, self.partition, type(exc).__name__, exc,
                  self._batch[0][0] if self._batch else "?", exc_info=exc)
        batch, self._batch = self._batch, []
        self._restore(self._boundary)
        self._reset_buffers()
        for tables in self.pending.values():
            tables.clear()
        self.dead.clear()
        self.first_offset = self.last_offset = None
        for offset, ingest, payload in batch:
            self._note_offset(offset)
            self._batch.append((offset, ingest, payload))
            self._add_alone(offset, ingest, payload)

    def _add_alone(self, offset: int, ingest_ms: int, payload: bytes | None) -> None:
        """Take and compute one message on its own; restore and dead-letter it if it keeps failing."""
        before = self._snapshot()
        marks = {name: len(tables) for name, tables in self.pending.items()}
        error: BaseException | None = None
        for attempt in range(1, self.settings.internal_retries + 2):
            try:
                self._add_one(offset, ingest_ms, payload)
                self._compute()
                return
            except ContractError as err:
                self.dead.append(_dead_letter(err, self.topic, self.partition, offset, payload))
                return
            except Exception as exc:  # noqa: BLE001 - see _isolate
                error = exc
                self._restore(before)
                self._reset_buffers()
                for name, tables in self.pending.items():
                    del tables[marks[name]:]
                log.warning("%s[%d]@%d: attempt %d failed: %s: %s", self.topic, self.partition, offset,
                            attempt, type(exc).__name__, exc)
        self.internal_errors += 1
        log.error("%s[%d]@%d: set aside as internal_error after %d attempts: %s: %s", self.topic, self.partition,
                  offset, self.settings.internal_retries + 1, type(error).__name__, error)
        self.dead.append(_dead_letter(internal_error(error, self.settings.internal_retries + 1),
                                      self.topic, self.partition, offset, payload))

    def accepts(self, offset: int) -> bool:
        """False for a message already made durable by an earlier checkpoint (skip it)."""
        return offset >= self.next_offset

    def _take(self, offset: int) -> bool:
        """Note a message as part of the next checkpoint; False if an earlier one already holds it."""
        if not self.accepts(offset):
            return False
        self._note_offset(offset)
        return True

    def _note_offset(self, offset: int) -> None:
        if self.first_offset is None:
            self.first_offset = offset
            self.opened_at = time.monotonic()
        self.last_offset = offset

    @property
    def buffered_messages(self) -> int:
        return 0 if self.first_offset is None else self.last_offset - self.first_offset + 1

    def due(self) -> bool:
        """True when the flush interval has passed since the first unflushed message."""
        return self.first_offset is not None and time.monotonic() - self.opened_at >= self.settings.flush_seconds

    # ------------------------------------------------------------------ checkpoint
    def _compute(self, final: bool = False) -> None:
        raise NotImplementedError

    def prepare(self, final: bool = False) -> CheckpointJob | None:
        """Close the current batch: compute it, snapshot the state, and hand back the write to do.

        Runs on the event loop and is cheap (feature arithmetic, one JSON snapshot of the state); the
        returned job does the slow part (Parquet encoding, fsyncs) and may run in another thread
        while this partition goes on taking messages. Jobs of one partition must be written in the order they were
        prepared, and a job must not be written after an earlier one failed (see
        :class:`CheckpointJob`). Returns None when nothing was taken since the previous checkpoint.
        ``final`` also closes every open window (end of a drain).
        """
        if self.first_offset is None:
            return None
        try:
            self._compute(final=final)
        except Exception as exc:  # noqa: BLE001 - a bug on one message must not stop the partition
            self._isolate(exc)
            if final:
                self._compute(final=True)  # only closes the open windows now: a failure here is no record's
        first, last = self.first_offset, self.last_offset
        tables = {}
        for name, parts in self.pending.items():
            kept = [t for t in parts if t.num_rows]
            if kept:
                tables[name] = kept[0] if len(kept) == 1 else pa.concat_tables(kept)
            parts.clear()
        dead, self.dead = self.dead, []
        snapshot = self.STATE.capture(self.state)
        state = Checkpoint(self.topic, self.partition, last + 1, snapshot).encode()
        self._boundary = state_line(state)
        self.next_offset = last + 1
        self.first_offset = self.last_offset = None
        self._batch = []
        return CheckpointJob(self, first, last, tables, state, dead)

    def checkpoint(self, final: bool = False) -> CheckpointResult | None:
        """Prepare and write a checkpoint in the caller's thread; None when nothing was pending."""
        job = self.prepare(final=final)
        return None if job is None else job.write()

    FEATURE_TABLES: frozenset[str] = frozenset()


def _ms_ts(arr: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(arr, dtype="int64"), type=pa.int64()).cast(_MS_TS)


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


class EventsPartition(_Partition):
    """One partition of ``plant.events.v1``: raw production events and quality features."""

    TABLES = (T.PRODUCTION_EVENTS, T.QUALITY_FEATURES)
    STATE = EventsState
    FEATURE_TABLES = frozenset({"quality_features"})

    def __init__(self, topic: str, partition: int, lake_root: Path, settings: StreamSettings):
        super().__init__(topic, partition, lake_root, settings)
        self._events: list[tuple[int, ProductionEvent]] = []

    def _new_state(self) -> dict[str, Any]:
        return {"quality": F.QualityWindows(self.settings.window_ms, self.settings.lateness_ms)}

    @property
    def buffered_rows(self) -> int:
        return len(self._events)

    def _add_one(self, offset: int, ingest_ms: int, payload: bytes | None) -> None:
        """Decode one event; raise ContractError to refuse it (see ReadingsPartition._check_event_time)."""
        ev = decode_event(payload)
        _check_future(int(ev.ts.timestamp() * 1000), ingest_ms, self.settings.max_future_ms)
        self._events.append((offset, ev))

    def _reset_buffers(self) -> None:
        self._events = []

    def _compute(self, final: bool = False) -> None:
        events, self._events = self._events, []
        q: F.QualityWindows = self.state["quality"]
        if events:
            rows = []
            for off, ev in events:
                # One push per event: lateness is judged per message, so the lake does not depend on
                # how messages were grouped into micro-batches (events are few; this loop is cheap).
                emitted = q.push_events([ev])
                rows.append({**_event_row(ev), "src_partition": self.partition, "src_offset": off,
                             "late": bool(emitted.late[0])})
                self._add_quality(emitted.rows)
            self.pending["production_events"].append(
                pa.Table.from_pylist(rows, schema=T.PRODUCTION_EVENTS.file_schema))
        if final:
            self._add_quality(q.flush_all().rows)

    def _add_quality(self, rows: F.Columns) -> None:
        if not len(rows.get("line", ())):
            return
        n = len(rows["line"])
        out = {
            "window_start": _ms_ts(rows["window_start"]), "window_end": _ms_ts(rows["window_end"]),
            "site": pa.array(rows["site"], pa.string()), "line": pa.array(rows["line"], pa.string()),
            "stage": pa.array(rows["stage"], pa.string()),
        }
        for c in ("units_in", "units_out", "good", "scrapped", "grade_a", "grade_b", "grade_c"):
            out[c] = pa.array(rows[c], pa.int64())
        for c in ("yield", "first_pass_yield"):
            out[c] = pa.array(rows[c], pa.float64(), from_pandas=True)
        out["scrap_by_reason"] = pa.array([sorted((rows["scrap_by_reason"][i] or {}).items()) for i in range(n)],
                                          pa.map_(pa.string(), pa.int64()))
        self.pending["quality_features"].append(pa.table(out))


class DeadLettersPartition(_Partition):
    """One partition of ``plant.dlq.v1``: every refused message (edge, replay, stream) into the lake."""

    TABLES = (T.DEAD_LETTERS,)

    def __init__(self, topic: str, partition: int, lake_root: Path, settings: StreamSettings):
        super().__init__(topic, partition, lake_root, settings)
        self._rows: list[dict[str, Any]] = []

    def _new_state(self) -> dict[str, Any]:
        return {}

    @property
    def buffered_rows(self) -> int:
        return len(self._rows)

    def _add_one(self, offset: int, ingest_ms: int, payload: bytes | None) -> None:
        """Land one dead letter; one that breaks its own contract is landed with that reason, at stage stream.

        Never re-sent to the dead-letter topic: a broken letter there would be read again, refused
        again and re-sent forever. It goes straight into the lake's dead_letters table instead.
        """
        try:
            dl = decode_dead_letter(payload)
            row = {"reason": dl.reason.value, "detail": dl.detail, "stage": dl.stage,
                   "source_topic": dl.source_topic, "source_partition": dl.source_partition,
                   "source_offset": dl.source_offset, "ts": dl.ts, "payload": dl.payload()}
        except Exception as exc:  # noqa: BLE001 - nothing that arrives is dropped, however broken
            reason = exc.reason if isinstance(exc, ContractError) else Reason.NOT_JSON
            row = {"reason": reason.value, "detail": f"unreadable dead letter: {exc}"[:1000],
                   "stage": "stream", "source_topic": self.topic, "source_partition": self.partition,
                   "source_offset": offset, "ts": datetime.fromtimestamp(ingest_ms / 1000, UTC),
                   "payload": payload}
        self._rows.append(row)

    def _reset_buffers(self) -> None:
        self._rows = []

    def _compute(self, final: bool = False) -> None:
        rows, self._rows = self._rows, []
        if rows:
            self.pending["dead_letters"].append(pa.Table.from_pylist(rows, schema=T.DEAD_LETTERS.file_schema))


def _event_row(ev: ProductionEvent) -> dict[str, Any]:
    d = dict(ev.__dict__)
    for k in ("stage", "unit_type", "kind"):
        d[k] = str(d[k].value)
    return d


def feature_messages(table: pa.Table, key_cols: tuple[str, ...]) -> list[tuple[bytes, bytes]]:
    """Feature rows as (key, JSON value) pairs for the features.*.v1 topics."""
    out = []
    for row in table.to_pylist():
        key = "/".join(str(row.get(c)) for c in key_cols).encode()
        out.append((key, orjson.dumps(row, default=_json_default, option=orjson.OPT_NON_STR_KEYS)))
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return obj.isoformat().replace("+00:00", "Z")
    if isinstance(obj, bytes):
        return obj.hex()
    raise TypeError(type(obj).__name__)
