"""``gigapulse score``: the live score of every cell at the quality gate, landed exactly once.

A consumer of ``plant.events.v1`` (its own group, beside the stream workers). When a cell leaves
electrolyte filling, it waits until the lake holds the cell's history up to that instant: the
stream workers' checkpoints have passed the leave event and every reading that was in Kafka when
the event was read (checkpoint files, no query). Then it computes the cell's features with
:func:`transforms.batch.cell_features.cell_features`, the function that builds the training set,
scores them with the champion of the model registry, lands the row in ``cell_risk`` and publishes
it to ``features.cell_risk.v1``. The sums of upstream visits (an electrode roll's coating, a slurry
batch's mixing) are kept for the scorer's life (:class:`~transforms.batch.cell_features.VisitCache`),
so each cell after the first of its rolls reads only its own stacking and filling.

Exactly once into the lake, the stream's way (:mod:`transforms.lake`, :mod:`transforms.checkpoint`):
what it scored of records ``first..last`` of an events partition becomes one file named by that
range under the source name ``<events topic>.scored``, then that source's checkpoint moves past
``last``. On (re)assignment a partition resumes at its checkpoint and deletes files at or after it.
Cells are scored in offset order per partition, so a range holds every gate event in it. The topic
is at least once: a crash after publishing and before the checkpoint publishes those scores again.

The champion is read from the registry's alias before every batch, so promoting a model takes
effect at the next cell, without a restart.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa

from ingestion.security import KafkaSecuritySettings
from schemas import topics
from schemas.contracts import ContractError, decode_event
from schemas.tables import CELL_RISK
from transforms import checkpoint as ckpt
from transforms.lake import LakeWriter
from transforms.settings import ScoreSettings
from transforms.warmer import Warmer, catalog_key

log = logging.getLogger(__name__)

#: Seconds the scorer goes on with a replaced catalog while the warm thread opens the new one; then it
#: opens it itself. Far below the lake's grace period, so the old catalog's files are all still there.
STALE_S = 10.0

#: Published fields of a ``cell_risk`` row (the feature vector stays in the table).
_MESSAGE_FIELDS = ("cell_id", "site", "line", "gate_ts", "score", "model_version", "drivers", "complete",
                   "n_features", "arrived_at", "scored_at", "src_partition", "src_offset")


def scored_source(events_topic: str) -> str:
    """The source name of the scorer's files and checkpoints for ``events_topic``."""
    return f"{events_topic}.scored"


@dataclass
class GateCell:
    """A cell that left filling, waiting for its history to land."""

    cell_id: str
    site: str
    line: str
    station: str
    ts: datetime
    partition: int
    offset: int
    seen: float  # monotonic time it was read
    arrived_at: datetime | None = None  # the event's Kafka timestamp
    seen_wall: float = 0.0  # epoch seconds it was read (for the trace)
    #: Epoch seconds by which its history had landed (the newest checkpoint file it waited for).
    landed: float | None = None
    #: End offsets of the readings partitions when the event was read: what must land first.
    readings_end: dict[int, int] = field(default_factory=dict)
    #: For a warm job (a cell's first event, naming the units it consumed): those units.
    parents: list[str] = field(default_factory=list)


@dataclass
class ScorerStats:
    scored: int = 0
    incomplete: int = 0
    unscored: int = 0
    batches: int = 0
    #: Seconds from the leave event's timestamp to its row landing, of the cells since the last log line.
    latencies: list[float] = field(default_factory=list)
    #: (cells, seconds) of each batch's features and score since the last log line.
    computes: list[tuple[int, float]] = field(default_factory=list)


class Scorer:
    """One scorer process; several share the events partitions through their consumer group."""

    def __init__(self, bootstrap: str, lake_root: Path, db_path: Path, settings: ScoreSettings,
                 events_topic: str = topics.EVENTS, out_topic: str = topics.FEATURES_CELL_RISK,
                 readings_topic: str = topics.READINGS, security: KafkaSecuritySettings | None = None):
        """``security``: as whom to connect (default: this process's GIGAPULSE_KAFKA_* identity)."""
        self.bootstrap = bootstrap
        self.security = security
        self.lake_root = Path(lake_root)
        self.db_path = Path(db_path)
        self.settings = settings
        self.events_topic = events_topic
        self.readings_topic = readings_topic
        self.out_topic = out_topic
        self.source = scored_source(events_topic)
        self.writer = LakeWriter.for_table(self.lake_root, CELL_RISK)
        self.pending: dict[int, deque[GateCell]] = {}
        self.done: dict[int, int] = {}  # next offset per partition: everything before it is landed
        self.read: dict[int, int] = {}  # next offset to read per partition
        self.stats = ScorerStats()
        self.model = None
        self._con = None
        self._con_key: tuple[int, int] | None = None
        self._con_path: Path | None = None  # the private copy of the catalog it reads (with the warm thread)
        self._stale_since: float | None = None  # when the catalog was found replaced, until the swap
        self._preparing: tuple[int, int] | None = None  # the catalog the warm thread was asked to open
        self._last_batch: tuple[datetime, datetime, list[str]] | None = None  # what a new catalog is warmed with
        self._new: list[GateCell] = []  # gate cells of the current poll, waiting for the readings' end offsets
        self._consumer = None
        self._producer = None
        self._readings_parts = None
        self._trace = None  # the open trace file (settings.trace), while run() runs
        #: Units whose visits are being or were warmed, oldest first (a dict as an ordered set).
        self._warm_seen: dict[str, None] = {}
        self._warm_pending: deque[GateCell] = deque()  # warm jobs waiting for their history to land
        self.warmer: Warmer | None = Warmer(self) if settings.warm else None
        self._reopened = False  # the last batch opened a new catalog (for the trace)
        self._said_no_catalog = False
        from transforms.batch.cell_features import VisitCache

        #: Sums of the upstream visits (rolls, batches) already read: each cell then reads its own.
        self.visits = VisitCache(settings.visit_cache)

    # ----------------------------------------------------------------- Kafka side

    def _on_assigned(self, assigned) -> None:
        for tp in assigned:
            nxt = ckpt.committed_next_offset(self.lake_root, self.source, tp.partition)
            ckpt.drop_uncommitted(self.lake_root, self.source, tp.partition, nxt)
            self._consumer.seek(tp, nxt)
            self.pending[tp.partition] = deque()
            self.done[tp.partition] = self.read[tp.partition] = nxt
        log.info("scorer: partitions %s assigned", sorted(tp.partition for tp in assigned))

    def _on_revoked(self, revoked) -> None:
        for tp in revoked:
            for d in (self.pending, self.done, self.read):
                d.pop(tp.partition, None)

    def _take(self, partition: int, offset: int, value: bytes | None, kafka_ms: int | None = None) -> None:
        if partition not in self.read:
            return
        self.read[partition] = offset + 1
        try:
            ev = decode_event(value)
        except ContractError:
            return  # the stream worker dead-letters it; the scorer has nothing to score
        if ev.kind == "leave" and ev.stage == "filling" and ev.unit_type == "cell":
            cell = GateCell(ev.unit_id, ev.site, ev.line, ev.station, ev.ts, partition, offset, time.monotonic(),
                            None if kafka_ms is None else datetime.fromtimestamp(kafka_ms / 1000, UTC), time.time())
            self.pending[partition].append(cell)
            self._new.append(cell)
        elif ev.unit_type == "cell" and ev.parent_ids and self.warmer is not None:
            new = [u for u in ev.parent_ids if u not in self._warm_seen]
            if new:  # the first cell made from these units: sum their visits ahead of its gate
                for u in new:
                    self._warm_seen[u] = None
                while len(self._warm_seen) > 100_000:
                    del self._warm_seen[next(iter(self._warm_seen))]
                job = GateCell(ev.unit_id, ev.site, ev.line, ev.station, ev.ts, partition, offset, time.monotonic(),
                               parents=new)
                self._warm_pending.append(job)
                self._new.append(job)

    def _stamp_new(self) -> None:
        """Give the cells just read the readings' end offsets now: one request per poll, not per cell."""
        if not self._new:
            return
        from kafka import TopicPartition

        if self._readings_parts is None:
            parts = self._consumer.partitions_for_topic(self.readings_topic) or set()
            self._readings_parts = [TopicPartition(self.readings_topic, p) for p in sorted(parts)]
        end = {tp.partition: o for tp, o in self._consumer.end_offsets(self._readings_parts).items()}
        for cell in self._new:
            cell.readings_end = end
        self._new = []

    # ----------------------------------------------------------------- the lake side

    def _connection(self):
        """A read-only warehouse connection, renewed when the catalog file is replaced (compaction).

        With the warm thread, the new catalog is opened and warmed there (:meth:`Warmer.prepare`):
        a fresh connection reads every file's footer again, which made the first batch after each
        compaction (every 10 s) up to 1.5 s slower. Until it is handed over, batches go on with the
        old catalog, which stays exact while its files are kept (``GIGAPULSE_LAKE_GRACE_S``); after
        :data:`STALE_S` the scorer opens the new one itself.
        """
        from transforms.warehouse.reader import connect

        key = catalog_key(self.db_path)
        if self._con is not None and key == self._con_key:
            return self._con
        if self._con is not None and self.warmer is not None and self.warmer.running:
            ready = self.warmer.take_prepared(key)
            if ready is not None:
                self._swap(*ready, key)
                return self._con
            if self._stale_since is None:
                self._stale_since = time.monotonic()
            if self._preparing != key:  # asked once per catalog; again if it was replaced meanwhile
                self._preparing = key
                self.warmer.prepare(key, self._last_batch)
            if time.monotonic() - self._stale_since < STALE_S:
                return self._con
        if self.warmer is not None and self.warmer.running:
            con, path = self.warmer.open_private(key)
            self._swap(con, path, key)
        else:  # the old connection is closed first, or connect() would hand its instance back
            self._swap(None, None, None)
            self._swap(connect(self.db_path), None, key)
        return self._con

    def _swap(self, con, path: Path | None, key: tuple[int, int]) -> None:
        old, old_path = self._con, self._con_path
        self._con, self._con_path, self._con_key = con, path, key
        self._stale_since = None
        self._reopened = True
        if old is not None:
            old.close()
        if old_path is not None:
            old_path.unlink(missing_ok=True)

    def _ready(self, cells: list[GateCell], now: float) -> list[tuple[GateCell, bool]]:
        """The cells of ``cells`` (one partition's queue, in order) that can be scored now, with
        whether their history is complete; stops at the first one that must still wait.

        Complete means landed by the stream workers, read from their checkpoints (no query): the
        leave event itself, and every reading that was in Kafka when the event was read. A gateway
        sends a tick's frames before its events, so that covers the readings up to the gate; one that
        buffered its readings (an outage) sends them later, and the cell is scored without them.
        """
        if not cells:
            return []
        if not self.db_path.is_file():  # no catalog published yet: nothing can be read
            if not self._said_no_catalog:
                self._said_no_catalog = True
                log.warning("scorer: no warehouse catalog at %s yet; cells at the gate wait until the stream "
                            "has landed data and `gigapulse lake compact` (or `gigapulse warehouse`) has "
                            "published one", self.db_path)
            return []
        events_done = {p: self._progress(self.events_topic, p) for p in {c.partition for c in cells}}
        readings_done: dict[int, tuple[int, float]] = {}
        out = []
        for c in cells:
            done, landed = events_done[c.partition]
            complete = done > c.offset
            for p, end in c.readings_end.items():
                if not complete:
                    break
                if p not in readings_done:
                    readings_done[p] = self._progress(self.readings_topic, p)
                done, at = readings_done[p]
                complete, landed = done >= end, max(landed, at)
            if not complete and now - c.seen < self.settings.max_wait_s:
                break
            c.landed = landed if complete else None
            out.append((c, complete))
        return out

    def _progress(self, topic: str, partition: int) -> tuple[int, float]:
        """The partition's committed next offset, and when that checkpoint was written (epoch seconds,
        for the trace only: a later checkpoint may have replaced the one that first passed a cell)."""
        done = ckpt.committed_next_offset(self.lake_root, topic, partition)
        if self._trace is None:  # no extra stat per partition and check when nobody reads it
            return done, 0.0
        try:
            return done, os.stat(ckpt.checkpoint_path(self.lake_root, topic, partition)).st_mtime
        except FileNotFoundError:
            return done, 0.0

    def _champion(self):
        from transforms.predictive import registry

        version = registry.champion(self.lake_root)
        if version is None:
            if self.model is not None:
                log.warning("scorer: the registry has no champion any more; cells are landed unscored")
            self.model = None
        elif self.model is None or self.model.version != version:
            try:
                self.model = registry.load_model(self.lake_root, version)
                log.warning("scorer: scoring with champion %s", version)
            except Exception as exc:  # noqa: BLE001 - a bad model file must not stop scoring with the old one
                log.error("scorer: cannot load champion %s (%s); keeping %s", version, exc,
                          self.model.version if self.model else "no model")
        return self.model

    def _score(self, ready: list[tuple[GateCell, bool]]) -> list[dict]:
        from transforms.batch.cell_features import cell_features
        from transforms.predictive.scoring import risk_rows

        cells = [c for c, _ in ready]
        con = self._connection()
        window = (min(c.ts for c in cells), max(c.ts for c in cells) + timedelta(microseconds=1),
                  [c.cell_id for c in cells])
        feats = cell_features(con, window[0], window[1], cells=window[2], cache=self.visits)
        self._last_batch = window
        found = set(feats.column("cell_id").to_pylist())
        missing = [c for c in cells if c.cell_id not in found]
        if missing:  # the leave event never landed within max_wait_s: scored on no history
            feats = pa.concat_tables([feats, pa.Table.from_pylist(
                [{"date": c.ts.date(), "cell_id": c.cell_id, "site": c.site, "line": c.line, "gate_ts": c.ts,
                  "upstream_ids": [], "n_features": 0, "features": []} for c in missing], schema=feats.schema)])
        return risk_rows(feats, self._champion(), datetime.now(UTC),
                         complete={c.cell_id: ok for c, ok in ready},
                         positions={c.cell_id: (c.partition, c.offset) for c in cells},
                         arrived={c.cell_id: c.arrived_at for c in cells})

    def _commit(self, partition: int, last: int, rows: list[dict]) -> None:
        """Land ``rows`` as records done..last of ``partition``, publish them, then move the checkpoint."""
        first = self.done[partition]
        if rows:
            self.writer.write(self.source, partition, first, last,
                              pa.Table.from_pylist(rows, schema=CELL_RISK.file_schema))
            if self._producer is not None:
                for r in rows:
                    msg = {k: r[k] for k in _MESSAGE_FIELDS}
                    self._producer.send(self.out_topic, key=r["cell_id"].encode(), value=orjson.dumps(msg))
                self._producer.flush()
        path = ckpt.checkpoint_path(self.lake_root, self.source, partition)
        ckpt.write_atomic(path, ckpt.Checkpoint(self.source, partition, last + 1, ckpt.ScoresState()).encode())
        self.done[partition] = last + 1

    def _hand_warm_jobs(self, now: float) -> None:
        """Give the warmer the jobs whose history has landed; drop those that waited too long (their
        sums might miss readings, and a cached sum must be exact)."""
        keep: deque[GateCell] = deque()
        for job in self._warm_pending:
            got = self._ready([job], now)
            if got and got[0][1]:
                self.warmer.submit(job.parents, job.ts)
            elif not got:
                keep.append(job)
        self._warm_pending = keep

    def step(self) -> int:
        """Score what is ready in every partition, in one warehouse query; returns the cells landed."""
        now = time.monotonic()
        if self._warm_pending:
            self._hand_warm_jobs(now)
        ready: dict[int, list[tuple[GateCell, bool]]] = {}
        room = self.settings.max_batch
        for p in sorted(self.pending):
            queue = self.pending[p]
            if queue and room:
                got = self._ready(list(queue)[:room], now)
                if got:
                    ready[p] = got
                    room -= len(got)
        rows_of: dict[int, list[dict]] = {p: [] for p in ready}
        started = computed = time.time()
        self._reopened = False
        if ready:
            t0 = time.perf_counter()
            scored = self._score([x for got in ready.values() for x in got])
            self.stats.computes.append((len(scored), time.perf_counter() - t0))
            computed = time.time()
            for r in scored:
                rows_of[r["src_partition"]].append(r)
        landed = 0
        for p in sorted(self.pending):
            queue = self.pending[p]
            if p in ready:
                for _ in ready[p]:
                    queue.popleft()
                rows = rows_of[p]
                self._commit(p, (queue[0].offset - 1) if queue else self.read[p] - 1, rows)
                landed += len(rows)
                self.stats.scored += sum(r["score"] is not None for r in rows)
                self.stats.unscored += sum(r["score"] is None for r in rows)
                self.stats.incomplete += sum(not ok for _, ok in ready[p])
                wall = datetime.now(UTC)
                self.stats.latencies.extend((wall - r["gate_ts"]).total_seconds() for r in rows)
            elif not queue and self.read[p] > self.done[p]:
                self._commit(p, self.read[p] - 1, [])  # no gate event in the range: only the offset moves
        if ready:
            self.stats.batches += 1
            if self._trace is not None:
                self._write_trace([c for got in ready.values() for c, _ in got], started, computed, time.time())
        return landed

    def _write_trace(self, cells: list[GateCell], started: float, computed: float, written: float) -> None:
        """One JSON line per cell of a batch: the epoch seconds of each step of its way (``trace``)."""
        for c in cells:
            self._trace.write(orjson.dumps({
                "cell_id": c.cell_id, "arrived": c.arrived_at.timestamp() if c.arrived_at else None,
                "read": c.seen_wall, "landed": c.landed, "started": started, "computed": computed,
                "written": written, "batch": len(cells), "reopened": self._reopened}) + b"\n")
        self._trace.flush()

    # ----------------------------------------------------------------- the loop

    def run(self, stop: threading.Event | None = None, drain: bool = False) -> ScorerStats:
        """Score until ``stop`` is set (or, with ``drain``, until the events present at start are landed)."""
        from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition

        from ingestion.security import kafka_python_kwargs

        scorer = self

        class _Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                scorer._on_revoked(revoked)

            def on_partitions_assigned(self, assigned):
                scorer._on_assigned(assigned)

        stop = stop or threading.Event()
        self._consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=self.settings.group_id,
                                       enable_auto_commit=False, auto_offset_reset="earliest",
                                       client_id="gigapulse-scorer", **kafka_python_kwargs(self.security))
        if self.settings.publish:
            self._producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5,
                                           client_id="gigapulse-scorer", **kafka_python_kwargs(self.security))
        end: dict[int, int] = {}
        if drain:
            parts = self._consumer.partitions_for_topic(self.events_topic) or set()
            end = {tp.partition: o for tp, o in self._consumer.end_offsets(
                [TopicPartition(self.events_topic, p) for p in parts]).items()}
        self._consumer.subscribe([self.events_topic], listener=_Listener())
        if self.settings.trace is not None:
            self._trace = open(self.settings.trace, "ab")  # noqa: SIM115 - closed in finally
        if self.warmer is not None:
            self.warmer.start()
        last_check = last_log = time.monotonic()
        try:
            while not stop.is_set():
                batch = self._consumer.poll(timeout_ms=self.settings.poll_ms, max_records=5000)
                for tp, records in batch.items():
                    for rec in records:
                        self._take(tp.partition, rec.offset, rec.value, rec.timestamp)
                self._stamp_new()
                now = time.monotonic()
                if now - last_check >= self.settings.check_s:
                    self.step()
                    last_check = now
                if now - last_log >= self.settings.log_every_s:
                    self._log_progress()
                    last_log = now
                if drain and end and all(ckpt.committed_next_offset(self.lake_root, self.source, p) >= o
                                         for p, o in end.items()):
                    break
        finally:
            self._consumer.close()
            if self._producer is not None:
                self._producer.close()
            if self._con is not None:
                self._con.close()
                self._con = self._con_key = self._con_path = None
            if self._trace is not None:
                self._trace.close()
                self._trace = None
            if self.warmer is not None:
                self.warmer.stop()
        self._log_progress()
        return self.stats

    def _log_progress(self) -> None:
        lat = self.stats.latencies
        if lat:
            log.info("scorer: %d scored, %d unscored, %d incomplete; gate -> landed p50 %.2f s, p99 %.2f s "
                     "(last %d cells)", self.stats.scored, self.stats.unscored, self.stats.incomplete,
                     float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), len(lat))
            self.stats.latencies = []
        if self.stats.computes:
            cells, secs = zip(*self.stats.computes, strict=True)
            log.info("scorer: %d batches, %.1f cells each; features and score p50 %.2f s, p99 %.2f s; "
                     "visit cache %d streams, %d hits, %d misses, %d warmed ahead",
                     len(secs), float(np.mean(cells)), float(np.percentile(secs, 50)), float(np.percentile(secs, 99)),
                     len(self.visits), self.visits.hits, self.visits.misses, self.visits.warmed)
            self.stats.computes = []

