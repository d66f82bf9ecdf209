"""The live scorer's second thread: work moved off the gate's critical path (:class:`Warmer`).

Two kinds of job, both optimisations the scorer does without if the thread is off or fails:

* **Upstream visits.** When a cell's first event names units the scorer has not seen, their visits
  are summed into the scorer's :class:`~transforms.batch.cell_features.VisitCache` while the cell is
  still on its way to filling.
* **A new catalog.** After a compaction replaces the catalog, it is opened and warmed here (the next
  batch's query, so every footer it needs is read), then handed to the scorer.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import threading
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transforms.scorer import Scorer

log = logging.getLogger("transforms.scorer")


def catalog_key(db_path: Path) -> tuple[int, int]:
    """Which catalog file ``db_path`` is now: a compaction publishes a new one by rename."""
    st = os.stat(db_path)
    return st.st_ino, st.st_mtime_ns


class Warmer:
    """A second thread that sums upstream visits ahead of the gate (:func:`~transforms.batch.cell_features.warm_upstream`).

    When a cell's first event names the units it consumed (its electrode rolls, at stacking) and
    those units were not seen before, their visits, and their slurry batches', are summed into the
    scorer's :class:`~transforms.batch.cell_features.VisitCache` while the cell is still on its way
    to filling. The first cell of each roll then reads only its own visits at the gate, like every
    later one: those upstream reads were the slowest batches of the live score. Own warehouse
    connection; a failure is logged and skipped (the gate sums what is missing, as without it).
    """

    def __init__(self, scorer: Scorer):
        import queue

        self.scorer = scorer
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.failed = 0
        self._con = None
        self._con_key: tuple[int, int] | None = None
        self._tmp = None  # the private folder of catalog copies, while running
        self._names = itertools.count(1)  # next() is atomic: both threads name copies
        self._prepared: tuple[tuple[int, int], object, Path] | None = None
        self._lock = threading.Lock()  # _prepared is set here and taken by the scorer's thread

    @property
    def running(self) -> bool:
        return self.thread is not None

    def start(self) -> None:
        import tempfile

        self._tmp = tempfile.TemporaryDirectory(prefix="gigapulse-scorer-")
        self.thread = threading.Thread(target=self._loop, name="gigapulse-scorer-warm", daemon=True)
        self.thread.start()

    def submit(self, units: list[str], at: datetime) -> None:
        self.jobs.put(("warm", units, at))

    def prepare(self, key: tuple[int, int], batch: tuple | None) -> None:
        """Open the catalog ``key`` names and warm it with the scorer's last batch, for :meth:`take_prepared`."""
        self.jobs.put(("open", key, batch))

    def take_prepared(self, key: tuple[int, int]) -> tuple[object, Path] | None:
        with self._lock:
            got, self._prepared = self._prepared, None
        if got is None:
            return None
        if got[0] != key:  # replaced again meanwhile: this one is already old
            got[1].close()
            got[2].unlink(missing_ok=True)
            return None
        return got[1], got[2]

    def stop(self) -> None:
        if self.thread is not None:
            self.jobs.put(None)
            self.thread.join(30)
            self.thread = None
        with self._lock:
            prepared, self._prepared = self._prepared, None
        if prepared is not None:
            prepared[1].close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def open_private(self, key: tuple[int, int]):
        """A connection to a private copy of the current catalog: ``(connection, its path)``.

        Not the catalog itself: DuckDB's Python client hands a second ``connect`` of a path the
        database instance already open for it, so a connection opened while another one to the same
        path is open gets the old catalog back, and reads files the lake collects two minutes later.
        A copy (the catalog is small; its views name the lake's files by absolute path) is another
        path, so each connection has its own instance.
        """
        from transforms.warehouse.reader import connect

        path = Path(self._tmp.name) / f"catalog-{next(self._names)}.duckdb"
        shutil.copyfile(self.scorer.db_path, path)
        return connect(path), path

    def _connection(self):
        """This thread's own connection, renewed when the catalog is replaced."""
        key = catalog_key(self.scorer.db_path)
        if self._con is None or key != self._con_key:
            if self._con is not None:
                self._con[0].close()
                self._con[1].unlink(missing_ok=True)
                self._con = None
            self._con = self.open_private(key)
            self._con_key = key
        return self._con[0]

    def _open(self, key: tuple[int, int], batch: tuple | None) -> None:
        from transforms.batch.cell_features import cell_features

        key = catalog_key(self.scorer.db_path)  # if replaced again meanwhile: prepare the newest
        con, path = self.open_private(key)
        if batch is not None:  # the footers the next batch reads: the same query on the same cells
            try:
                cell_features(con, batch[0], batch[1], cells=batch[2], cache=self.scorer.visits)
            except BaseException:
                con.close()
                path.unlink(missing_ok=True)
                raise
        with self._lock:
            old, self._prepared = self._prepared, (key, con, path)
        if old is not None:
            old[1].close()
            old[2].unlink(missing_ok=True)

    def _loop(self) -> None:
        from transforms.batch.cell_features import warm_upstream

        try:
            while (job := self.jobs.get()) is not None:
                try:
                    if job[0] == "open":
                        self._open(job[1], job[2])
                    else:
                        warm_upstream(self._connection(), job[1], job[2], self.scorer.visits)
                except Exception as exc:  # noqa: BLE001 - an optimisation: the scorer does it itself
                    self.failed += 1
                    log.warning("scorer: warm thread: %s failed (%s); the scorer does without", job[0], exc)
        finally:
            if self._con is not None:
                self._con[0].close()
                self._con = None
