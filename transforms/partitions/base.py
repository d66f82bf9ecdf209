"""What every partition processor shares: intake and isolation of bad records, and the checkpoint mechanics."""

from __future__ import annotations

import logging
import os
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from schemas import tables as T
from schemas.contracts import MAX_TS_MS, ContractError, DeadLetter, Reason
from transforms.checkpoint import (
    Checkpoint,
    CheckpointJob,
    CheckpointResult,
    DeadLettersState,
    drop_uncommitted,
    dump_snapshot,
    legacy_checkpoint_path,
    load_checkpoint,
    load_snapshot,
    state_line,
)
from transforms.lake import LakeWriter
from transforms.settings import StreamSettings

log = logging.getLogger("transforms.partitions")  # the name it had before the package split

_MS_TS = pa.timestamp("ms", tz="UTC")


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
        self.opened_at = self.last_at = time.monotonic()
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
        #: Set when the message that ends a drain was taken: the next prepared checkpoint closes the
        #: windows, whoever prepares it (see :meth:`prepare`).
        self.closing = False
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
        now = time.monotonic()
        if self.first_offset is None:
            self.first_offset = offset
            self.opened_at = now
        self.last_offset = offset
        self.last_at = now

    @property
    def buffered_messages(self) -> int:
        return 0 if self.first_offset is None else self.last_offset - self.first_offset + 1

    def due(self, now: float | None = None) -> bool:
        """True when the flush interval has passed since the first unflushed message, or when the
        partition has gone quiet: no message for ``flush_idle_ms`` after at least ``flush_min_seconds``.

        Gateways send a tick's readings in one burst, so the quiet after it means the burst is all
        here: landing it then, instead of ``flush_seconds`` after its first message, is what makes it
        queryable (and a cell's history complete for the live score) within a fraction of a second.
        A steady stream is never quiet and keeps the interval; ``flush_min_seconds`` bounds the files
        a trickle of single messages can make.
        """
        if self.first_offset is None:
            return False
        now = time.monotonic() if now is None else now
        age = now - self.opened_at
        if age >= self.settings.flush_seconds:
            return True
        idle = self.settings.flush_idle_ms
        return idle > 0 and age >= self.settings.flush_min_seconds and (now - self.last_at) * 1000 >= idle

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
        # Whichever checkpoint takes the batch that holds the drain's last message closes the windows:
        # the flush timer may take it while the message's own final checkpoint waits for the writer.
        final, self.closing = final or self.closing, False
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
