"""Building rollup days into the lake, and deciding which days need building.

One rollup day is one file, ``<lake>/rollups/<name>/date=YYYY-MM-DD/<name>.parquet``, replaced whole
and atomically (:func:`transforms.lake.write_parquet_atomic`), with rows in key order and fixed types,
so the same sources give the same bytes. A day whose sources hold no row for the rollup still gets a
file, with no rows: it records that the day was computed from those sources, so the incremental
refresh does not redo it on every run, and readers see a day with nothing rather than a missing day.

What a day was built from is recorded in the file's Parquet key-value metadata (``gigapulse.rollup``):
the rollup's definition version and, per source ``date=`` directory read, a fingerprint of its files
(sorted names and sizes; for the undated ``sensors`` snapshot, its bytes). Names and sizes are exact
for the stream's files, whose name is their offset range and whose content is a function of it; they
survive a copy of the lake (mtimes would not); and a compaction that renames a day's files changes
them, which rebuilds the day to the same rows. The refresh rebuilds a day when a source directory it
reads is new or changed (late data for an old date included), or when the rollup's definition
changed; it never rebuilds a day whose own source directories have been expired, so rollups outlive
the retention of what they summarise.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Protocol

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.tables import TABLES
from transforms.lake import write_parquet_atomic
from transforms.warehouse.rollups.specs import ROLLUPS, RollupSpec
from transforms.warehouse.sqltext import lake_glob, sql_ident, sql_string

#: Directory of the rollups under the lake root, beside the tables.
ROLLUPS_DIR = "rollups"
#: Parquet key-value metadata key holding what a rollup day was built from.
RECORD_KEY = b"gigapulse.rollup"

_DATE_DIR = "date="


def rollup_path(lake_root: Path, name: str, day: date) -> Path:
    """Where one day of a rollup lives."""
    return Path(lake_root) / ROLLUPS_DIR / name / f"{_DATE_DIR}{day.isoformat()}" / f"{name}.parquet"


def rollup_view_sql(lake_root: Path, name: str) -> str:
    """The body of a catalog view over every kept day of a rollup (``date`` typed DATE).

    Like a table's view, it fails while the rollup has no file; the catalog decides what to show then.
    """
    if name not in ROLLUPS:
        raise ValueError(f"unknown rollup {name!r}; known: {', '.join(ROLLUPS)}")
    glob = lake_glob(Path(lake_root) / ROLLUPS_DIR, name)
    return (f"SELECT * FROM read_parquet({sql_string(glob)}, hive_partitioning = true, "
            "hive_types = {'date': DATE}, union_by_name = true)")


# --------------------------------------------------------------------------- sources

def _visible_parquet(names: Iterable[str]) -> list[str]:
    """Data files only: temporary files of an atomic write (``.<name>.<hex>.tmp``) and dot-files are not."""
    return sorted(n for n in names if n.endswith(".parquet") and not n.startswith("."))


def _has_files(table_dir: Path) -> bool:
    return any(_visible_parquet(files) for _, _, files in os.walk(table_dir))


@functools.cache
def _empty_relation(table: str) -> str:
    """A relation with the table's columns and DuckDB types and no row, for a table with no file yet."""
    con = duckdb.connect()
    try:
        con.register("_empty", TABLES[table].schema.empty_table())
        types = con.execute("DESCRIBE SELECT * FROM _empty").fetchall()
    finally:
        con.close()
    cols = ", ".join(f"CAST(NULL AS {t}) AS {sql_ident(n)}" for n, t, *_ in types)
    return f"(SELECT {cols} WHERE false)"


def lake_sources(lake_root: Path, specs: Mapping[str, RollupSpec] = ROLLUPS) -> dict[str, str]:
    """The SQL relation of every source table the rollups read, as the catalog's views read it.

    Date-partitioned tables read the compacted files and the hot files above the watermarks of the
    lake's current manifest (never a merged file twice); the undated ``sensors`` table reads its
    folder, or is an empty relation of its schema before its first file (a glob matching nothing
    fails in DuckDB).
    """
    from transforms.warehouse.catalog import table_relation_sql
    from transforms.warehouse.manifest import load_manifest

    lake_root = Path(lake_root)
    manifest = load_manifest(lake_root)
    out: dict[str, str] = {}
    for table in dict.fromkeys(t for spec in specs.values() for t in spec.sources):
        spec = TABLES[table]
        if spec.partition_cols:
            out[table] = table_relation_sql(lake_root, spec, manifest)
        elif not _has_files(lake_root / table):
            out[table] = _empty_relation(table)
        else:
            out[table] = (f"read_parquet({sql_string(lake_glob(lake_root, table))}, hive_partitioning = false, "
                          "union_by_name = true)")
    return out


# --------------------------------------------------------------------------- source fingerprints

class SourceIndex(Protocol):
    """What the refresh needs to know about the sources: which days they hold and whether those changed.

    :class:`HiveIndex` reads the lake's ``date=`` directories; a lake laid out otherwise (a table
    format, a compacted layout) supplies its own.
    """

    def days(self, table: str) -> set[date]:
        """Days for which ``table`` holds data."""

    def fingerprint(self, table: str, day: date) -> str | None:
        """A value that changes whenever ``table``'s data of ``day`` does; None without data."""

    def snapshot(self, table: str) -> str | None:
        """The same for an undated table read whole; None without data."""


def _digest(lines: Iterable[str]) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()[:32]


def _parse_day(dirname: str) -> date | None:
    if not dirname.startswith(_DATE_DIR):
        return None
    try:
        return date.fromisoformat(dirname[len(_DATE_DIR):])
    except ValueError:
        return None


class HiveIndex:
    """Source fingerprints from the lake's ``<table>/date=YYYY-MM-DD/*.parquet`` directories.

    A dated fingerprint is a digest of the directory's sorted (file name, size) pairs; the undated
    snapshot's is a digest of its files' bytes, because ``sensors.parquet`` is rewritten in place
    under one name, where a changed limit need not change the size. Answers are cached: use a fresh
    index to see later changes.
    """

    def __init__(self, lake_root: Path):
        from transforms.warehouse.manifest import load_manifest

        self.lake_root = Path(lake_root)
        self._manifest = load_manifest(self.lake_root)
        self._days: dict[str, dict[date, str]] = {}
        self._one: dict[tuple[str, date], str | None] = {}
        self._snapshots: dict[str, str | None] = {}

    def _dir_fingerprint(self, path: Path) -> str | None:
        """Digest of what a view reads of one table day: its compacted file and the hot files above the
        watermarks (merged hot files waiting for collection are not data any more)."""
        from transforms.lake import parse_file_name

        table, day = path.parent.name, path.name.removeprefix(_DATE_DIR)
        marks = self._manifest.watermarks.get(table, {})
        try:
            with os.scandir(path) as it:
                entries = {e.name: e.stat().st_size for e in it if e.is_file()}
        except (FileNotFoundError, NotADirectoryError):
            entries = {}
        names = []
        for n in _visible_parquet(entries):
            rng = parse_file_name(n)
            if rng is None or rng.first_offset > marks.get(f"{rng.topic}+{rng.partition}", -1):
                names.append(n)
        lines = [f"{n}\t{entries[n]}" for n in names]
        for rel in reversed(self._manifest.files.get(table, {}).get(day, [])):
            lines.insert(0, f"compacted\t{rel}")
        return _digest(lines) if lines else None

    def days(self, table: str) -> set[date]:
        return set(self._scan(table))

    def _scan(self, table: str) -> dict[date, str]:
        if table not in self._days:
            found: dict[date, str] = {}
            try:
                with os.scandir(self.lake_root / table) as it:
                    dirs = [(e.name, e.path) for e in it if e.is_dir()]
            except FileNotFoundError:
                dirs = []
            # Days compacted whose hot folder collection already removed.
            known = {name for name, _ in dirs}
            dirs += [(f"{_DATE_DIR}{d}", str(self.lake_root / table / f"{_DATE_DIR}{d}"))
                     for d in self._manifest.files.get(table, {}) if f"{_DATE_DIR}{d}" not in known]
            for name, path in dirs:
                day = _parse_day(name)
                fp = self._dir_fingerprint(Path(path)) if day else None
                if fp is not None:
                    found[day] = fp
            self._days[table] = found
        return self._days[table]

    def fingerprint(self, table: str, day: date) -> str | None:
        if table in self._days:
            return self._days[table].get(day)
        key = (table, day)
        if key not in self._one:
            self._one[key] = self._dir_fingerprint(self.lake_root / table / f"{_DATE_DIR}{day.isoformat()}")
        return self._one[key]

    def snapshot(self, table: str) -> str | None:
        if table not in self._snapshots:
            self._snapshots[table] = self._hash_files(self.lake_root / table)
        return self._snapshots[table]

    @staticmethod
    def _hash_files(root: Path) -> str | None:
        parts = []
        for dirpath, _, files in sorted(os.walk(root)):
            for name in _visible_parquet(files):
                path = Path(dirpath) / name
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    continue
                parts.append(f"{path.relative_to(root).as_posix()}\t{hashlib.sha256(data).hexdigest()}")
        return _digest(parts) if parts else None


def day_inputs(spec: RollupSpec, day: date, index: SourceIndex) -> dict[str, str]:
    """``{"<table>/date=<day>": fingerprint, "<snapshot>": fingerprint}`` of what one day reads and has data."""
    out: dict[str, str] = {}
    for dep in spec.inputs:
        for k in dep.offsets:
            d = day + timedelta(days=k)
            fp = index.fingerprint(dep.table, d)
            if fp is not None:
                out[f"{dep.table}/{_DATE_DIR}{d.isoformat()}"] = fp
    for table in spec.snapshots:
        fp = index.snapshot(table)
        if fp is not None:
            out[table] = fp
    return out


def _row_inputs(spec: RollupSpec, day: date, own: bool = False) -> set[str]:
    """The source directories whose rows land in the day (``own``: only those of the day itself)."""
    return {f"{d.table}/{_DATE_DIR}{(day + timedelta(days=k)).isoformat()}"
            for d in spec.inputs for k in d.days if k == 0 or not own}


# --------------------------------------------------------------------------- building one day

def _connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


def _compute(con: duckdb.DuckDBPyConnection, sources: Mapping[str, str], spec: RollupSpec, day: date) -> pa.Table:
    """The rows of one day in the rollup's file schema, in key order, one chunk per column."""
    result = con.sql(spec.render(sources), params=spec.bind(day)).to_arrow_table()
    schema = spec.file_schema
    missing = [n for n in schema.names if n not in result.column_names]
    if missing:
        raise ValueError(f"{spec.name}: the SQL gave no column {missing}")
    return result.select(schema.names).cast(schema).combine_chunks()


def _record(spec: RollupSpec, day: date, inputs: Mapping[str, str]) -> bytes:
    return json.dumps({"rollup": spec.name, "date": day.isoformat(), "version": spec.version,
                       "inputs": dict(sorted(inputs.items()))}, sort_keys=True, separators=(",", ":")).encode()


def _build(con: duckdb.DuckDBPyConnection, sources: Mapping[str, str], lake_root: Path, spec: RollupSpec,
           day: date, index: SourceIndex | None) -> tuple[Path, int]:
    # Fingerprint before reading: files landing during the query make the record older than the
    # rows, which costs one extra rebuild, never a missed change.
    inputs = day_inputs(spec, day, index if index is not None else HiveIndex(lake_root))
    table = _compute(con, sources, spec, day)
    meta = {**(spec.file_schema.metadata or {}), RECORD_KEY: _record(spec, day, inputs)}
    path = write_parquet_atomic(rollup_path(lake_root, spec.name, day), table.replace_schema_metadata(meta))
    return path, table.num_rows


def build_rollup_day(sources: Mapping[str, str], lake_root: Path, name: str, day: date, *,
                     specs: Mapping[str, RollupSpec] = ROLLUPS, index: SourceIndex | None = None) -> Path:
    """Compute one UTC day of rollup ``name`` from ``sources`` and write its file; returns the path.

    ``sources`` maps each source table to a SQL relation (:func:`lake_sources`, or catalog views).
    The same sources give a byte-identical file; a day with no source row gives a file with no row.
    ``index`` says what the sources are made of (default: the lake's directories, read now).
    """
    spec = _spec(specs, name)
    con = _connect()
    try:
        return _build(con, sources, Path(lake_root), spec, day, index)[0]
    finally:
        con.close()


def _spec(specs: Mapping[str, RollupSpec], name: str) -> RollupSpec:
    try:
        return specs[name]
    except KeyError:
        raise ValueError(f"unknown rollup {name!r}; known: {', '.join(specs)}") from None


# --------------------------------------------------------------------------- the incremental refresh

@dataclass(frozen=True, order=True)
class RollupTask:
    """One rollup day to build, and why: ``new`` (no file yet), ``changed`` (a source directory is new
    or different), ``definition`` (the rollup's SQL, schema or settings changed), ``unreadable`` (the
    file has no record of its sources) or ``requested`` (asked for by date). ``kept`` marks a day that
    was asked for but is not rebuilt, because its own sources have been expired."""

    day: date
    name: str
    reason: str = field(compare=False)


@dataclass(frozen=True)
class RollupResult:
    """A rollup day that was built: where, how many rows, how long it took."""

    name: str
    day: date
    reason: str
    rows: int
    path: Path
    seconds: float


@dataclass(frozen=True)
class RefreshReport:
    """What a refresh built, and the days it was asked for but kept (their sources were expired)."""

    built: list[RollupResult]
    kept: list[RollupTask]


def read_record(path: Path) -> dict | None:
    """What a rollup file says it was built from; None if it has no readable record."""
    try:
        meta = pq.read_metadata(path).metadata or {}
        record = json.loads(meta[RECORD_KEY])
    except (OSError, KeyError, ValueError, pa.ArrowException):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("inputs"), dict) else None


def rollup_days(lake_root: Path, name: str) -> set[date]:
    """Days that have a file of rollup ``name``."""
    root = Path(lake_root) / ROLLUPS_DIR / name
    try:
        with os.scandir(root) as it:
            days = {_parse_day(e.name) for e in it if e.is_dir()}
    except FileNotFoundError:
        return set()
    return {d for d in days if d is not None and rollup_path(lake_root, name, d).exists()}


def _candidate_days(spec: RollupSpec, index: SourceIndex, lake_root: Path) -> set[date]:
    days = rollup_days(lake_root, spec.name)
    for dep in spec.inputs:
        for d in index.days(dep.table):
            days.update(d - timedelta(days=k) for k in dep.days)
    return days


def _assess(spec: RollupSpec, day: date, index: SourceIndex, lake_root: Path, force: bool) -> str | None:
    """Why the day must be built, ``kept`` if it must not be touched, or None if it is up to date."""
    current = day_inputs(spec, day, index)
    path = rollup_path(lake_root, spec.name, day)
    recorded = read_record(path)
    if recorded is None:
        if path.exists():
            return "unreadable"
        if force:
            return "requested"
        return "new" if _row_inputs(spec, day) & current.keys() else None
    before = recorded["inputs"]
    if any(key in before and key not in current for key in _row_inputs(spec, day, own=True)):
        return "kept"
    if force:
        return "requested"
    if any(before.get(key) != fp for key, fp in current.items()):
        return "changed"
    if recorded.get("version") != spec.version:
        return "definition"
    return None


def plan_rollups(lake_root: Path, names: Sequence[str] | None = None, *,
                 specs: Mapping[str, RollupSpec] = ROLLUPS, index: SourceIndex | None = None,
                 since: date | None = None, days: Iterable[date] | None = None,
                 force: bool = False) -> tuple[list[RollupTask], list[RollupTask]]:
    """(days to build, days asked for but kept) of the rollups ``names`` (default: all).

    By default the incremental plan: days with no file yet and data to read, and days whose sources
    changed since their file was built. ``force`` plans every day (from ``since``) that has data or a
    file; ``days`` plans exactly those days. Either way a day whose own sources have been expired is
    kept as it is, never rebuilt to less.
    """
    lake_root = Path(lake_root)
    chosen = [_spec(specs, n) for n in (names or list(specs))]
    index = index if index is not None else HiveIndex(lake_root)
    explicit = sorted(set(days)) if days is not None else None
    todo: list[RollupTask] = []
    kept: list[RollupTask] = []
    for spec in chosen:
        candidates = explicit if explicit is not None else sorted(_candidate_days(spec, index, lake_root))
        for day in candidates:
            if since is not None and day < since:
                continue
            reason = _assess(spec, day, index, lake_root, force or explicit is not None)
            if reason == "kept":
                if force or explicit is not None:
                    kept.append(RollupTask(day, spec.name, reason))
            elif reason is not None:
                todo.append(RollupTask(day, spec.name, reason))
    return sorted(todo), sorted(kept)


def days_to_rebuild(lake_root: Path, names: Sequence[str] | None = None, *,
                    specs: Mapping[str, RollupSpec] = ROLLUPS, index: SourceIndex | None = None,
                    since: date | None = None) -> list[RollupTask]:
    """The incremental plan: rollup days that are missing or whose sources changed, oldest first."""
    return plan_rollups(lake_root, names, specs=specs, index=index, since=since)[0]


def refresh_rollups(sources: Mapping[str, str], lake_root: Path, names: Sequence[str] | None = None, *,
                    specs: Mapping[str, RollupSpec] = ROLLUPS, since: date | None = None,
                    days: Iterable[date] | None = None, force: bool = False,
                    tasks: Sequence[RollupTask] | None = None,
                    on_built: Callable[[RollupResult], None] | None = None) -> RefreshReport:
    """Build exactly the planned rollup days (see :func:`plan_rollups`), oldest first; report them.

    ``tasks`` skips the planning (a caller that showed the plan first). ``on_built`` is called after
    each day, for a progress bar.
    """
    lake_root = Path(lake_root)
    kept: list[RollupTask] = []
    if tasks is None:
        tasks, kept = plan_rollups(lake_root, names, specs=specs, since=since, days=days, force=force)
    built: list[RollupResult] = []
    con = _connect()
    try:
        for task in tasks:
            t0 = time.monotonic()
            path, rows = _build(con, sources, lake_root, _spec(specs, task.name), task.day, None)
            result = RollupResult(task.name, task.day, task.reason, rows, path, time.monotonic() - t0)
            built.append(result)
            if on_built is not None:
                on_built(result)
    finally:
        con.close()
    return RefreshReport(built, kept)
