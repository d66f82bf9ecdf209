"""Lake maintenance: compaction, retention and garbage collection that never break a reader.

One step (:func:`maintain`, or its parts :func:`compact` and :func:`expire`) runs under the lake's
maintenance lock and goes through the same four phases each time, each safe to crash in:

1. **Write.** For every table and date with committed hot files above the table's watermark, those
   hot files become one new compacted segment, sorted so that sensor and time filters skip row
   groups (``readings``: by hour, sensor, then time). Segments merge like a counter in base
   ``fanout`` (:func:`plan_merge`): the ``fanout``-th segment of a level merges with its peers into
   one of the next level, so a busy day holds a few segments, each row is rewritten about
   log_fanout(steps) times in the day instead of at every step, and the newest minutes sit in small
   segments that a recent-time query reads alone. A date ``fold_after_days`` older than the table's
   newest date is folded into one segment. Only hot files
   wholly below their partition's checkpoint are taken: those are final (the stream renames a
   batch's files in place before it commits, and its recovery only drops files at or after the
   checkpoint), so compaction never races the stream and the stream never deletes compacted data.
2. **Commit.** The manifest is replaced atomically (:mod:`.manifest`). A crash before this leaves
   orphan files that no reader knows of; the next step deletes them.
3. **Publish.** A new catalog file is built and renamed over ``gigapulse.duckdb``; its views name
   the compacted files and the watermarks as constants. A crash before this leaves the old catalog,
   which is still exact: it reads the old files, which are all still there.
4. **Collect.** Files that no generation published for longer than the grace period reads are
   deleted: retired compacted files, hot files under those watermarks, expired days.

Retention is a per-table number of days (``GIGAPULSE_LAKE_RETENTION``); the cut-off is applied in
the views at once and in the files at the next collection.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from schemas.tables import TABLES, TableSpec
from transforms.checkpoint import CHECKPOINT_DIR, committed_next_offset
from transforms.lake import FileRange, fsync_dir, make_dirs_durable, parse_file_name, tmp_name
from transforms.warehouse.catalog import schemas_dir
from transforms.warehouse.manifest import (
    COMPACTED_DIR,
    Generation,
    Manifest,
    commit_manifest,
    deletable_before,
    load_manifest,
    maintenance_lock,
    trim_history,
)
from transforms.warehouse.sqltext import sql_ident, sql_string

log = logging.getLogger(__name__)

#: Tables that the stream writes as offset-named files by date (``sensors`` is one file, replaced whole).
COMPACTED_TABLES = tuple(name for name, spec in TABLES.items() if spec.partition_cols == ("date",))
ROW_GROUP_ROWS = 100_000

Progress = Callable[[str], None]


@dataclass(frozen=True)
class HotFile:
    """A file the stream wrote: where it is, its date and the source records it holds."""

    path: Path
    date: str
    range: FileRange

    @property
    def source(self) -> str:
        return f"{self.range.topic}+{self.range.partition}"


@dataclass
class TableReport:
    """What one step did to one table."""

    table: str
    dates_written: list[str] = field(default_factory=list)
    hot_files_merged: int = 0
    rows_written: int = 0
    bytes_written: int = 0
    dates_expired: list[str] = field(default_factory=list)


@dataclass
class MaintenanceReport:
    """What one maintenance step did, for the CLI, the Dagster asset and the benchmark."""

    generation: int
    tables: dict[str, TableReport] = field(default_factory=dict)
    files_deleted: int = 0
    bytes_deleted: int = 0
    seconds: float = 0.0

    @property
    def rows_written(self) -> int:
        return sum(t.rows_written for t in self.tables.values())

    @property
    def hot_files_merged(self) -> int:
        return sum(t.hot_files_merged for t in self.tables.values())


# --------------------------------------------------------------------------- what is on disk

def committed_offsets(lake_root: Path) -> dict[str, int]:
    """``"<topic>+<partition>"`` -> next offset to process, from every checkpoint of the lake."""
    out: dict[str, int] = {}
    root = Path(lake_root) / CHECKPOINT_DIR
    if not root.is_dir():
        return out
    for topic_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        partitions = {int(p.stem) for p in topic_dir.iterdir() if p.suffix in (".json", ".pkl") and p.stem.isdigit()}
        for partition in sorted(partitions):
            out[f"{topic_dir.name}+{partition}"] = committed_next_offset(lake_root, topic_dir.name, partition)
    return out


def hot_files(lake_root: Path, table: str) -> list[HotFile]:
    """Every offset-named file the stream wrote for ``table`` (temporary files excluded)."""
    out = []
    tdir = Path(lake_root) / table
    if not tdir.is_dir():
        return out
    for ddir in sorted(tdir.glob("date=*")):
        day = ddir.name.removeprefix("date=")
        for path in sorted(ddir.iterdir()):
            rng = parse_file_name(path.name)
            if rng is not None:
                out.append(HotFile(path, day, rng))
    return out


def compacted_dir(lake_root: Path, table: str, day: str) -> Path:
    return Path(lake_root) / table / COMPACTED_DIR / f"date={day}"


def retention_cutoff(retention_days: int | None, newest: str | None) -> str | None:
    """First date kept under a retention of ``retention_days`` (None: kept for ever).

    Counted back from the newest day the table holds, not from today: a backfill or a replay of
    last year's data is kept until newer days push it out, instead of being deleted on arrival.
    """
    if retention_days is None or newest is None:
        return None
    return (date.fromisoformat(newest) - timedelta(days=retention_days - 1)).isoformat()


# --------------------------------------------------------------------------- segments

#: Level of a folded segment: the whole of a settled date, never merged by level again.
FOLDED = 99
_LEVEL_RE = re.compile(r"-L(\d+)\.parquet$")


def segment_name(table: str, generation: int, level: int) -> str:
    return f"{table}-g{generation:08d}-L{level}.parquet"


def level_of(rel: str) -> int:
    """A segment's level from its name; files of manifest format 1 (one per date) count as folded."""
    m = _LEVEL_RE.search(rel)
    return int(m[1]) if m else FOLDED


def plan_merge(segments: list[str], fanout: int) -> tuple[list[str], int]:
    """Which of a date's segments merge with the new hot files, and the level of the result.

    A base-``fanout`` counter: the new rows start at level 0; while their level already holds
    ``fanout - 1`` segments, those join them and the level goes up by one. A date that received
    ``n`` steps holds at most ``(fanout - 1)`` segments per level, about
    ``(fanout - 1) * log_fanout(n)`` in all, and every row is rewritten once per level it climbs.
    Folded segments never take part.
    """
    if fanout < 2:
        raise ValueError(f"fanout must be at least 2, not {fanout}")
    take: list[str] = []
    level = 0
    while True:
        peers = [rel for rel in segments if level_of(rel) == level]
        if len(peers) + 1 < fanout:
            return take, level
        take += peers
        level += 1


# --------------------------------------------------------------------------- writing one compacted file

#: Tables whose compacted rows are grouped by UTC hour first: raw readings, the bulk of the lake, are
#: mostly asked for a recent span (last values, the last hour of a station, a unit's time at a
#: station). Measured on a 40M-reading day: the last values of a line's sensors over the last ten
#: minutes took 0.60 s against 1.27 s sorted by sensor alone; one sensor over the whole day 0.030 s
#: against 0.027 s.
HOUR_FIRST = frozenset({"readings"})


def compaction_order(spec: TableSpec) -> tuple[str, ...]:
    """Row order of a compacted file, as SQL expressions.

    Sensor then time where the table has sensors (``readings``: within each UTC hour), else time
    first. Sorted this way each row group holds few sensors and a short time span, so DuckDB skips
    row groups on ``sensor_id``/``station``/``line`` and on time ranges by their min/max
    statistics. The table's own sort key follows, so that ties keep one fixed order and a rewrite
    gives the same rows.
    """
    names = spec.file_schema.names
    time_col = next((c for c in ("ts", "window_start") if c in names), None)
    lead = [sql_ident(c) for c in ("sensor_id", time_col) if c and c in names]
    if spec.name in HOUR_FIRST and time_col:
        lead.insert(0, f"time_bucket(INTERVAL 1 HOUR, {sql_ident(time_col)})")
    return tuple(dict.fromkeys([*lead, *(sql_ident(c) for c in spec.sort_key)]))


def _file_types(con: duckdb.DuckDBPyConnection, spec: TableSpec) -> list[tuple[str, str]]:
    con.register("_gigapulse_empty", spec.file_schema.empty_table())
    try:
        return [(r[0], r[1]) for r in con.execute("DESCRIBE SELECT * FROM _gigapulse_empty").fetchall()]
    finally:
        con.unregister("_gigapulse_empty")


def write_compacted(spec: TableSpec, inputs: list[Path], target: Path, threads: int = 2) -> int:
    """Merge ``inputs`` into ``target`` (sorted, typed as the table's current schema); returns its rows.

    The file appears whole or not at all (temporary name, fsync, rename). Its row count is checked
    against the inputs' footers before the rename, so a short read can never be committed.
    """
    expected = sum(pq.ParquetFile(p).metadata.num_rows for p in inputs)
    make_dirs_durable(target.parent)
    tmp = target.parent / tmp_name(target.name)
    con = duckdb.connect()
    try:
        con.execute(f"SET threads = {int(threads)}")
        con.execute("SET preserve_insertion_order = true")
        con.execute("SET TimeZone = 'UTC'")
        cols = ", ".join(f"CAST({sql_ident(n)} AS {t}) AS {sql_ident(n)}" for n, t in _file_types(con, spec))
        order = ", ".join(compaction_order(spec))
        files = "[" + ", ".join(sql_string(p.as_posix()) for p in inputs) + "]"
        con.execute(
            f"COPY (SELECT {cols} FROM read_parquet({files}, union_by_name = true, hive_partitioning = false) "
            f"ORDER BY {order}) TO {sql_string(tmp.as_posix())} "
            f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {ROW_GROUP_ROWS})"
        )
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        rows = pq.ParquetFile(tmp).metadata.num_rows
        if rows != expected:
            raise RuntimeError(f"compacting {spec.name} into {target.name}: wrote {rows} rows, inputs hold {expected}")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        con.close()
    fsync_dir(target.parent)
    return rows


# --------------------------------------------------------------------------- one step

def _now() -> datetime:
    return datetime.now(UTC)


def _mtime(path: Path) -> float:
    """When the stream renamed the file into place; a file collected meanwhile counts as new."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def compact(lake_root: Path, db_path: Path, retention: dict[str, int | None] | None = None, *,
            grace_s: float = 120.0, tables: Iterable[str] | None = None, expire_only: bool = False,
            fanout: int = 4, fold_after_days: int = 2, settle_s: float = 0.0,
            now: Callable[[], datetime] = _now, progress: Progress | None = None) -> MaintenanceReport:
    """One maintenance step: merge committed hot files, apply retention, publish, collect garbage.

    ``expire_only`` applies retention without merging. ``fanout`` and ``fold_after_days`` shape the
    segments (module docstring, :func:`plan_merge`). ``settle_s`` leaves hot files younger than that
    (by their write time) for a later step, so no compacted file holds the newest seconds: a query of
    the last seconds then skips every compacted row group by its time statistics and reads only the
    few hot files. Returns what was done; raises
    :class:`~transforms.warehouse.manifest.MaintenanceBusy` if another step holds the lock.
    """
    started = time.monotonic()
    lake_root = Path(lake_root).resolve()
    retention = retention or {}
    names = list(tables) if tables is not None else list(COMPACTED_TABLES)
    unknown = sorted(set(names) - set(COMPACTED_TABLES))
    if unknown:
        raise ValueError(f"not compacted tables: {', '.join(unknown)} (choose from {', '.join(COMPACTED_TABLES)})")
    with maintenance_lock(lake_root):
        manifest = load_manifest(lake_root)
        manifest = _publish_pending(lake_root, db_path, manifest, now)
        generation = manifest.generation + 1
        report = MaintenanceReport(generation=manifest.generation)
        at = now()
        # Checkpoints first, then the listing: every file below a checkpoint read here is on disk now.
        committed = committed_offsets(lake_root)
        files = {t: {d: list(v) for d, v in m.items()} for t, m in manifest.files.items()}
        watermarks = {t: dict(m) for t, m in manifest.watermarks.items()}
        cutoffs = dict(manifest.cutoffs)
        retired = dict(manifest.retired)
        changed = False
        for table in names:
            spec = TABLES[table]
            rep = report.tables.setdefault(table, TableReport(table))
            listed = hot_files(lake_root, table)
            days = {h.date for h in listed} | set(files.get(table, {}))
            cutoff = retention_cutoff(retention.get(table), max(days, default=None))
            if cutoff is not None and cutoffs.get(table) != cutoff:
                cutoffs[table] = cutoff
                changed = True
            elif cutoff is None and table in cutoffs:
                del cutoffs[table]
                changed = True
            by_date = files.setdefault(table, {})
            for day in sorted(d for d in by_date if cutoff is not None and d < cutoff):
                for rel in by_date.pop(day):
                    retired[rel] = generation
                rep.dates_expired.append(day)
                changed = True
            if expire_only:
                continue
            table_marks = watermarks.setdefault(table, {})
            pending, marks_to = _settled(listed, table_marks, committed, settle_s)
            newest = max(days, default=None)
            for day in sorted(set(pending) | set(by_date)):
                if cutoff is not None and day < cutoff:
                    continue  # expired: the watermark moves past these rows and collection deletes them
                segments = by_date.get(day, [])
                hot = pending.get(day, [])
                folding = newest is not None and date.fromisoformat(day) <= (
                    date.fromisoformat(newest) - timedelta(days=fold_after_days))
                if folding:
                    if not hot and len(segments) <= 1:
                        continue  # already one file
                    take, level = list(segments), FOLDED
                elif hot:
                    take, level = plan_merge(segments, fanout)
                else:
                    continue
                if progress:
                    progress(f"{table} {day}: {len(hot)} file(s), {len(take)} segment(s) -> L{level}")
                inputs = [lake_root / rel for rel in take] + [h.path for h in hot]
                target = compacted_dir(lake_root, table, day) / segment_name(table, generation, level)
                rep.rows_written += write_compacted(spec, inputs, target)
                rep.bytes_written += target.stat().st_size
                rep.hot_files_merged += len(hot)
                rep.dates_written.append(day)
                for rel in take:
                    retired[rel] = generation
                by_date[day] = [rel for rel in segments if rel not in take] + [target.relative_to(lake_root).as_posix()]
                changed = True
            for source, mark in marks_to.items():
                if mark > table_marks.get(source, -1):
                    table_marks[source] = mark
                    changed = True
        if changed:
            manifest = Manifest(
                generation=generation, committed_at=at.isoformat(), watermarks=watermarks, files=files,
                cutoffs=cutoffs, retired=retired,
                history=(*manifest.history, Generation(generation, at.isoformat(), watermarks)),
            )
            commit_manifest(lake_root, manifest)
            manifest = _publish_pending(lake_root, db_path, manifest, now)
            report.generation = generation
        manifest, report.files_deleted, report.bytes_deleted = collect(lake_root, manifest, now(), grace_s)
    report.seconds = time.monotonic() - started
    return report


def _settled(listed: list[HotFile], marks: dict[str, int], committed: dict[str, int],
             settle_s: float) -> tuple[dict[str, list[HotFile]], dict[str, int]]:
    """The hot files to merge, by date, and each source's new watermark.

    Per source partition, the committed files above its watermark are taken in offset order up to the
    first one written less than ``settle_s`` ago; the watermark moves to just below that one (to the
    checkpoint when none is that young). A prefix, never a selection: the watermark says *every* file
    at or below it is compacted, and a file the stream rewrote after a restart can be younger than
    files after it.
    """
    settled_before = time.time() - settle_s
    by_source: dict[str, list[HotFile]] = defaultdict(list)
    for hot in listed:
        if hot.range.first_offset > marks.get(hot.source, -1) and hot.range.last_offset < committed.get(hot.source, 0):
            by_source[hot.source].append(hot)
    pending: dict[str, list[HotFile]] = defaultdict(list)
    marks_to = {source: nxt - 1 for source, nxt in committed.items()}
    for source, files in by_source.items():
        batches: dict[int, list[HotFile]] = defaultdict(list)  # a batch spanning midnight: one file per date
        for hot in files:
            batches[hot.range.first_offset].append(hot)
        for first in sorted(batches):
            if settle_s and any(_mtime(h.path) > settled_before for h in batches[first]):
                marks_to[source] = first - 1
                break
            for hot in batches[first]:
                pending[hot.date].append(hot)
    return pending, marks_to


def _publish_pending(lake_root: Path, db_path: Path, manifest: Manifest, now: Callable[[], datetime]) -> Manifest:
    """Publish the catalog of ``manifest`` if its generation's catalog never went live (crash, first run)."""
    from transforms.warehouse.catalog import catalog_generation, publish_catalog
    from transforms.warehouse.manifest import mark_published

    pending = [g for g in manifest.history if g.generation == manifest.generation and g.published_at is None]
    if not pending and catalog_generation(db_path) == manifest.generation:
        return manifest
    publish_catalog(lake_root, db_path, manifest)
    if pending:
        manifest = mark_published(manifest, manifest.generation, now())
        commit_manifest(lake_root, manifest)
    return manifest


def collect(lake_root: Path, manifest: Manifest, now: datetime, grace_s: float) -> tuple[Manifest, int, int]:
    """Delete what no reader of the last ``grace_s`` seconds can be reading; returns (manifest, files, bytes).

    Orphans (compacted files no manifest names, left by a step that crashed before its commit) are
    deleted at once: no catalog ever named them.
    """
    deleted = freed = 0

    def unlink(path: Path) -> None:
        nonlocal deleted, freed
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return
        deleted += 1
        freed += size

    known = manifest.referenced() | set(manifest.retired)
    for table in COMPACTED_TABLES:
        cdir = Path(lake_root) / table / COMPACTED_DIR
        if not cdir.is_dir():
            continue
        for path in cdir.rglob("*"):
            if path.is_file() and path.relative_to(lake_root).as_posix() not in known:
                unlink(path)
    cutoff_gen = deletable_before(manifest, now, grace_s)
    if cutoff_gen is not None:
        # Older generations first lose their schema files, so their views fail loudly from now on.
        sdir = schemas_dir(lake_root)
        for gdir in sorted(sdir.glob("g*")) if sdir.is_dir() else []:
            if gdir.name[1:].isdigit() and int(gdir.name[1:]) < cutoff_gen.generation:
                shutil.rmtree(gdir, ignore_errors=True)
        retired = dict(manifest.retired)
        for rel, gen in manifest.retired.items():
            if gen <= cutoff_gen.generation:
                unlink(Path(lake_root) / rel)
                del retired[rel]
        for table, marks in cutoff_gen.watermarks.items():
            for hot in hot_files(lake_root, table):
                if hot.range.last_offset <= marks.get(hot.source, -1):
                    unlink(hot.path)
        for table in COMPACTED_TABLES:
            _prune_empty_dirs(Path(lake_root) / table)
        trimmed = trim_history(replace(manifest, retired=retired), now, grace_s)
        if trimmed != manifest:
            commit_manifest(lake_root, trimmed)
            manifest = trimmed
    if deleted:
        log.info("lake: deleted %d file(s), %.1f MB", deleted, freed / 1e6)
    return manifest, deleted, freed


def _prune_empty_dirs(table_dir: Path) -> None:
    """Remove empty ``date=`` directories: the stream recreates one when it writes there again."""
    if not table_dir.is_dir():
        return
    for ddir in sorted(table_dir.rglob("date=*"), reverse=True):
        with contextlib.suppress(OSError):
            ddir.rmdir()


# --------------------------------------------------------------------------- status

@dataclass(frozen=True)
class TableStatus:
    """One table's files: hot ones read beside the compacted ones, and those awaiting deletion."""

    table: str
    compacted_files: int
    compacted_bytes: int
    compacted_dates: int
    hot_files: int
    hot_bytes: int
    covered_files: int
    oldest_date: str | None
    newest_date: str | None
    cutoff: str | None
    files_per_date_max: int


def lake_status(lake_root: Path) -> tuple[Manifest, list[TableStatus]]:
    """The manifest and a per-table summary of what is on disk (no lock taken: read only)."""
    lake_root = Path(lake_root)
    manifest = load_manifest(lake_root)
    out = []
    for table in COMPACTED_TABLES:
        marks = manifest.watermarks.get(table, {})
        by_date = manifest.files.get(table, {})
        hot = covered = hot_bytes = 0
        per_date: dict[str, int] = defaultdict(int)
        for day, segments in by_date.items():
            per_date[day] += len(segments)
        for f in hot_files(lake_root, table):
            if f.range.last_offset <= marks.get(f.source, -1):
                covered += 1
            else:
                hot += 1
                hot_bytes += f.path.stat().st_size
                per_date[f.date] += 1
        rels = [rel for segments in by_date.values() for rel in segments]
        sizes = [(lake_root / rel).stat().st_size for rel in rels if (lake_root / rel).exists()]
        dates = sorted(per_date)
        out.append(TableStatus(
            table=table, compacted_files=len(rels), compacted_bytes=sum(sizes), compacted_dates=len(by_date),
            hot_files=hot, hot_bytes=hot_bytes, covered_files=covered,
            oldest_date=dates[0] if dates else None, newest_date=dates[-1] if dates else None,
            cutoff=manifest.cutoffs.get(table), files_per_date_max=max(per_date.values(), default=0),
        ))
    return manifest, out

