"""Exactly-once Parquet sink: the lake half of the stream, after Kafka Connect's S3 sink.

Rows are buffered per source (topic, partition) and written as one file per partition directory::

    <root>/<table>/date=2024-05-01/plant.readings.v1+3+00000000000000001200+00000000000000001299.parquet

The name says which source records the file holds: topic, partition, first and last offset
(inclusive, zero-padded to 20 digits so names sort like offsets). A batch whose rows span two dates
becomes two files with the same name in two ``date=`` directories.

Why this gives exactly-once without a transaction across Kafka and the file system:

* A file appears whole or not at all: it is written under a temporary name that no reader's glob
  matches (``.<name>.<hex>.tmp``: DuckDB's ``*.parquet`` matches leading-dot names, so the suffix
  is what hides it), fsync'd, renamed with ``os.replace`` and its directory fsync'd.
* The lake, not Kafka, says where to resume. :meth:`LakeWriter.recover` reads the file names and
  the stream seeks each partition to ``last_offset + 1``. A Kafka commit lost in a crash only makes
  the lake look ahead of the consumer group; the seek wins, so nothing is written twice.
* A rewrite is harmless: the content is a deterministic function of the rows (sorted by the table's
  key, fixed writer options, no timestamps in the footer), so rewriting a file replaces it with the
  same rows under the same name.
* Misaligned ranges cannot overlap. After a crash the new batch may not line up with the old files
  (old 100-199, new 100-250): that happens only when resuming *before* what the lake holds. Seeking
  to ``last_offset + 1`` rules it out, and :meth:`LakeWriter.add` enforces it even for a caller that
  did not seek: records at or below the lake's high-water mark are dropped (filtered by
  ``src_offset`` when the table has it), so a range is never written twice under two names.
* A flush that wrote some of its date files but crashed before the others is incomplete. Each file
  records in its footer the full list of directories of its batch; :meth:`committed_offsets` only
  counts a range whose files are all present, and :meth:`recover` deletes the files of an
  incomplete range (they were never committed) before the stream replays it.

The consumer commits offsets to Kafka only after a flush has renamed its files; that commit is an
optimisation (a restarted group starts near the right place), not the source of truth.

Not handled here: fencing a zombie worker that still writes a partition after a rebalance moved it
(the same gap Kafka Connect closes with its own fencing); call :meth:`LakeWriter.discard` when a
partition is revoked and :meth:`LakeWriter.recover` when it is assigned.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.tables import TableSpec

#: Key of the footer metadata that describes the batch a file belongs to.
BATCH_KEY = b"gigapulse.lake.batch"
OFFSET_DIGITS = 20

_FILE_RE = re.compile(
    r"^(?P<topic>[A-Za-z0-9._-]+)\+(?P<partition>\d+)\+(?P<first>\d{20})\+(?P<last>\d{20})\.parquet$"
)
_TMP_RE = re.compile(r"^\.(?P<final>.+)\.[0-9a-f]{32}\.tmp$")
_PARTITION_VALUE_RE = re.compile(r"^[A-Za-z0-9._-]+$")


class FileRange(NamedTuple):
    """The source records a lake file holds, parsed from its name."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int


class LakeOverlapError(ValueError):
    """A batch straddles what the lake already holds and its rows cannot be told apart by offset."""


def file_name(topic: str, partition: int, first_offset: int, last_offset: int) -> str:
    """The name of the file(s) holding records first_offset..last_offset (inclusive)."""
    if not re.fullmatch(r"[A-Za-z0-9._-]+", topic):
        raise ValueError(f"not a Kafka topic name: {topic!r}")
    if not 0 <= first_offset <= last_offset:
        raise ValueError(f"bad offset range {first_offset}..{last_offset}")
    return f"{topic}+{partition}+{first_offset:0{OFFSET_DIGITS}d}+{last_offset:0{OFFSET_DIGITS}d}.parquet"


def parse_file_name(name: str) -> FileRange | None:
    """The range a lake file name stands for; None for any other name (temporary files included)."""
    m = _FILE_RE.match(name)
    if m is None:
        return None
    return FileRange(m["topic"], int(m["partition"]), int(m["first"]), int(m["last"]))


def should_flush(rows: int, age_s: float, max_rows: int, max_seconds: float) -> bool:
    """Flush policy: enough rows for a well-compressed file, or old enough that readers should see it.

    An old buffer without rows is due too: flushing it writes nothing but lets the consumer commit
    past records that produced no rows.
    """
    return rows >= max_rows or age_s >= max_seconds


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs_durable(path: Path) -> None:
    """Create ``path`` and its missing parents, fsyncing each parent so the new entries survive a crash."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(exist_ok=True)
        fsync_dir(d.parent)


def tmp_name(final_name: str) -> str:
    """A temporary name beside ``final_name`` that no ``*.parquet`` glob matches."""
    return f".{final_name}.{uuid.uuid4().hex}.tmp"


def write_parquet_atomic(path: Path, table: pa.Table, compression: str = "zstd") -> Path:
    """Write ``table`` to ``path`` so that readers see either the old file or the complete new one.

    The writer options are fixed and the footer holds no clock, so the same table gives the same bytes.
    """
    make_dirs_durable(path.parent)
    tmp = path.parent / tmp_name(path.name)
    try:
        with open(tmp, "wb") as f:
            pq.write_table(table, f, compression=compression, write_statistics=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def _is_dictionary_of(actual: pa.DataType, logical: pa.DataType) -> bool:
    """A dictionary column of the logical type: kept as is (Parquet stores it the same way, faster)."""
    return pa.types.is_dictionary(actual) and actual.value_type == logical


def _with_types(schema: pa.Schema, columns: dict[str, pa.ChunkedArray | pa.Array]) -> pa.Schema:
    """``schema`` with each dictionary-encoded column's field typed as the dictionary (metadata kept)."""
    fields = [f.with_type(columns[f.name].type) if _is_dictionary_of(columns[f.name].type, f.type) else f
              for f in schema]
    return pa.schema(fields, metadata=schema.metadata)


def _cast_keeping_dictionaries(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Cast ``table`` to ``schema``, except dictionary columns whose values already have the type."""
    target = pa.schema([f.with_type(table.schema.field(f.name).type)
                        if _is_dictionary_of(table.schema.field(f.name).type, f.type) else f for f in schema],
                       metadata=schema.metadata)
    return table.cast(target)


def _partition_value(value: object) -> str:
    if value is None:
        raise ValueError("a partition column must not be null")
    text = value.isoformat() if isinstance(value, date) else str(value)
    if not _PARTITION_VALUE_RE.match(text):
        # Hive-style paths have no escaping that every engine agrees on; refuse rather than guess.
        raise ValueError(f"partition value {text!r} has characters unsafe in a path")
    return text


@dataclass
class _Buffer:
    first_offset: int
    last_offset: int
    started: float
    rows: int = 0
    tables: list[pa.Table] = field(default_factory=list)


class LakeWriter:
    """Buffers the rows of one lake table per source (topic, partition) and writes them exactly once.

    ``schema`` is the table's logical schema, partition columns included; a missing ``date`` column
    is derived from ``date_from`` (UTC date). ``sort_key`` orders rows inside each file so its
    content does not depend on buffering order.
    """

    def __init__(
        self,
        root: Path,
        table: str,
        schema: pa.Schema,
        partition_cols: Sequence[str] = ("date",),
        compression: str = "zstd",
        *,
        date_from: str | None = None,
        sort_key: Sequence[str] = (),
        max_rows: int = 200_000,
        max_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not re.fullmatch(r"[a-z0-9_]+", table):
            raise ValueError(f"table name must be lower_snake_case: {table!r}")
        self.root = Path(root)
        self.table = table
        self.schema = schema
        self.partition_cols = tuple(partition_cols)
        self.compression = compression
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self._clock = clock
        for col in (*self.partition_cols, *sort_key):
            if schema.get_field_index(col) < 0:
                raise ValueError(f"{table}: column {col!r} is not in the schema")
        if date_from is None and "date" in self.partition_cols:
            date_from = next((c for c in ("ts", "window_start") if c in schema.names), None)
        self.date_from = date_from
        self.sort_key = tuple(sort_key)
        self._offset_col = "src_offset" if "src_offset" in schema.names else None
        file_schema = schema
        for col in self.partition_cols:
            file_schema = file_schema.remove(file_schema.get_field_index(col))
        self.file_schema = file_schema
        self._buffers: dict[tuple[str, int], _Buffer] = {}
        # Highest offset the lake holds per (topic, partition); loaded by recover() on first use.
        self._high_water: dict[tuple[str, int], int] = {}
        # Last offset handed to add() per (topic, partition), rows or not.
        self._consumed: dict[tuple[str, int], int] = {}

    @classmethod
    def for_table(cls, root: Path, spec: TableSpec, **kwargs) -> LakeWriter:
        """A writer laid out as ``spec`` says (partitioning, date source, sort key)."""
        return cls(root, spec.name, spec.schema, spec.partition_cols, date_from=spec.date_from,
                   sort_key=spec.sort_key, **kwargs)

    @property
    def table_dir(self) -> Path:
        """Directory of this table in the lake."""
        return self.root / self.table

    # ------------------------------------------------------------------ buffering

    def add(self, topic: str, partition: int, first_offset: int, last_offset: int, table: pa.Table) -> int:
        """Buffer the rows produced by records first_offset..last_offset of (topic, partition).

        Offsets must increase from one call to the next; a call may carry no rows (the records
        still count as consumed). Returns the number of rows buffered: 0 when the lake already
        holds these records.
        """
        if not 0 <= first_offset <= last_offset:
            raise ValueError(f"bad offset range {first_offset}..{last_offset}")
        high = self.high_water(topic, partition)
        if last_offset <= high:
            return 0
        if first_offset <= high:
            if self._offset_col is None or self._offset_col not in table.column_names:
                raise LakeOverlapError(
                    f"{self.table}: records {first_offset}..{last_offset} of {topic}[{partition}] straddle "
                    f"offset {high}, already in the lake; seek to {high + 1} (committed_offsets + 1)"
                )
            table = table.filter(pc.greater(table[self._offset_col], high))
            first_offset = high + 1
        rows = self._conform(table)
        key = (topic, partition)
        buf = self._buffers.get(key)
        if buf is None:
            buf = self._buffers[key] = _Buffer(first_offset, last_offset, self._clock())
        elif first_offset <= buf.last_offset:
            raise ValueError(
                f"{self.table}: offsets must increase: got {first_offset} after {buf.last_offset} "
                f"for {topic}[{partition}]"
            )
        buf.last_offset = last_offset
        self._consumed[key] = last_offset
        if rows.num_rows:
            buf.tables.append(rows)
            buf.rows += rows.num_rows
        return rows.num_rows

    def commit_offset(self, topic: str, partition: int) -> int | None:
        """The offset this sink lets the consumer commit to Kafka: every record before it is handled.

        Records before it are in the lake or produced no rows; the buffer's records are not yet.
        None when the sink has seen nothing of the partition (it does not hold the commit back).
        A worker feeding several sinks from one topic commits the smallest of their values.
        """
        key = (topic, partition)
        buf = self._buffers.get(key)
        if buf is not None:
            return buf.first_offset
        seen = max(self._consumed.get(key, -1), self._high_water.get(key, -1))
        return seen + 1 if seen >= 0 else None

    def buffered_rows(self, topic: str, partition: int) -> int:
        """Rows waiting to be written for (topic, partition)."""
        buf = self._buffers.get((topic, partition))
        return buf.rows if buf else 0

    def should_flush(self, topic: str, partition: int) -> bool:
        """Whether the buffer of (topic, partition) is due under this writer's row and age limits."""
        buf = self._buffers.get((topic, partition))
        if buf is None:
            return False
        return should_flush(buf.rows, self._clock() - buf.started, self.max_rows, self.max_seconds)

    def due(self) -> list[tuple[str, int]]:
        """The (topic, partition) buffers that should be flushed now."""
        return [key for key in self._buffers if self.should_flush(*key)]

    def _conform(self, table: pa.Table) -> pa.Table:
        """Cast to the logical schema; derive partition columns; refuse unknown or null-but-required columns."""
        extra = set(table.column_names) - set(self.schema.names)
        if extra:
            raise ValueError(f"{self.table}: columns not in the schema: {sorted(extra)}")
        n = table.num_rows
        columns = {}
        for f in self.schema:
            if f.name in table.column_names:
                col = table[f.name]
                columns[f.name] = col if _is_dictionary_of(col.type, f.type) else pc.cast(col, f.type)
            elif f.name == "date" and self.date_from:
                source = columns.get(self.date_from)
                if source is None:
                    raise ValueError(f"{self.table}: needs {self.date_from!r} to derive 'date'")
                columns[f.name] = pc.cast(source, pa.date32())
            elif f.nullable:
                columns[f.name] = pa.nulls(n, f.type)
            else:
                raise ValueError(f"{self.table}: required column {f.name!r} is missing")
            if not f.nullable and columns[f.name].null_count:
                raise ValueError(f"{self.table}: column {f.name!r} must not hold nulls")
        return pa.Table.from_arrays(list(columns.values()), schema=_with_types(self.schema, columns))

    # ------------------------------------------------------------------ writing

    def flush(self, topic: str, partition: int) -> list[Path]:
        """Write the buffer of (topic, partition), one file per partition directory; returns the files.

        Commit the consumer's offset (``last_offset + 1``) to Kafka only after this returns. If it
        raises, the buffer is kept, and a retry writes the same names with the same content.
        """
        key = (topic, partition)
        buf = self._buffers.get(key)
        if buf is None:
            return []
        paths: list[Path] = []
        if buf.rows:
            name = file_name(topic, partition, buf.first_offset, buf.last_offset)
            groups = self._split(pa.concat_tables(buf.tables))
            batch = json.dumps(
                {"topic": topic, "partition": partition, "first_offset": buf.first_offset,
                 "last_offset": buf.last_offset, "dirs": [rel for rel, _ in groups]},
                sort_keys=True,
            ).encode()
            meta = {**(self.file_schema.metadata or {}), BATCH_KEY: batch}
            for rel, part in groups:
                part = part.select(self.file_schema.names)
                if self.sort_key:
                    # Arrow's sort is stable, so rows equal on the key keep their (replayed) order.
                    part = part.sort_by([(c, "ascending") for c in self.sort_key])
                part = _cast_keeping_dictionaries(part, self.file_schema).replace_schema_metadata(meta)
                paths.append(write_parquet_atomic(self._dir(rel) / name, part, self.compression))
            self._high_water[key] = buf.last_offset
        del self._buffers[key]
        return paths

    def flush_due(self) -> list[Path]:
        """Flush every buffer that :meth:`should_flush` says is due."""
        return [p for key in self.due() for p in self.flush(*key)]

    def flush_all(self) -> list[Path]:
        """Flush every buffer (at shutdown, or before a rebalance gives partitions away)."""
        return [p for key in list(self._buffers) for p in self.flush(*key)]

    def discard(self, topic: str, partition: int) -> None:
        """Forget a revoked partition: drop its buffer unwritten and its cached high-water mark."""
        self._buffers.pop((topic, partition), None)
        self._high_water.pop((topic, partition), None)
        self._consumed.pop((topic, partition), None)

    def _dir(self, rel: str) -> Path:
        return self.table_dir / rel if rel else self.table_dir

    def _split(self, table: pa.Table) -> list[tuple[str, pa.Table]]:
        """The rows of ``table`` per partition directory, in directory order."""
        if not self.partition_cols:
            return [("", table)]
        combos = table.select(list(self.partition_cols)).group_by(list(self.partition_cols)).aggregate([])
        groups = []
        for combo in combos.to_pylist():
            mask = None
            for col, value in combo.items():
                eq = pc.equal(table[col], pa.scalar(value, table.schema.field(col).type))
                mask = eq if mask is None else pc.and_(mask, eq)
            rel = "/".join(f"{col}={_partition_value(value)}" for col, value in combo.items())
            groups.append((rel, table.filter(mask)))
        return sorted(groups, key=lambda g: g[0])

    # ------------------------------------------------------------------ resuming

    def _scan(self, topic: str | None = None) -> dict[FileRange, set[str]]:
        """Every lake file of this table (of ``topic``), as range -> partition directories holding it."""
        found: dict[FileRange, set[str]] = {}
        if not self.table_dir.exists():
            return found
        for dirpath, dirnames, filenames in os.walk(self.table_dir):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(dirpath).relative_to(self.table_dir).as_posix()
            rel = "" if rel == "." else rel
            for name in filenames:
                rng = parse_file_name(name)
                if rng is not None and (topic is None or rng.topic == topic):
                    found.setdefault(rng, set()).add(rel)
        return found

    def _is_complete(self, rng: FileRange, dirs: set[str]) -> bool:
        """Whether every file of the batch ``rng`` is present (its footer lists the batch's directories)."""
        name = file_name(*rng)
        meta = pq.read_schema(self._dir(min(dirs)) / name).metadata or {}
        if BATCH_KEY not in meta:
            return True  # written by another tool (e.g. a compaction) that does not split batches
        expected = set(json.loads(meta[BATCH_KEY])["dirs"])
        return expected <= dirs

    def _committed(self, ranges: dict[FileRange, set[str]]) -> dict[int, tuple[int, list[FileRange]]]:
        """Per partition: the last committed offset and the ranges above it (incomplete flushes)."""
        by_partition: dict[int, list[FileRange]] = {}
        for rng in ranges:
            by_partition.setdefault(rng.partition, []).append(rng)
        out = {}
        for partition, rngs in by_partition.items():
            rngs.sort(key=lambda r: r.last_offset, reverse=True)
            incomplete = []
            committed = -1
            for rng in rngs:
                if self._is_complete(rng, ranges[rng]):
                    committed = rng.last_offset
                    break
                incomplete.append(rng)
            out[partition] = (committed, incomplete)
        return out

    def committed_offsets(self, topic: str) -> dict[int, int]:
        """Per partition of ``topic``: the last offset the lake holds; resume at that + 1.

        Read from the file names alone (plus one footer per partition to check the newest batch is
        complete). A partition absent from the result has no file yet: start it from the consumer
        group's committed offset, or the earliest.
        """
        return {p: off for p, (off, _) in self._committed(self._scan(topic)).items() if off >= 0}

    def high_water(self, topic: str, partition: int) -> int:
        """The last offset of (topic, partition) in the lake, -1 if none; recovers the partition on first use."""
        key = (topic, partition)
        if key not in self._high_water:
            self.recover(topic, [partition])
        return self._high_water[key]

    def recover(self, topic: str, partitions: Iterable[int] | None = None) -> dict[int, int]:
        """Make the lake consistent for ``partitions`` of ``topic`` (all if None) and say where to resume.

        Removes this table's orphan temporary files of those partitions and the files of incomplete
        flushes, then returns :meth:`committed_offsets` for them. Call it when partitions are
        assigned, before seeking to ``offset + 1``. Only the given partitions are touched, so a worker
        that passes its assignment never deletes another worker's in-flight files (None touches all
        partitions of the topic: only for a single writer).
        """
        wanted = None if partitions is None else set(partitions)
        self.cleanup_tmp(topic, wanted)
        ranges = self._scan(topic)
        if wanted is not None:
            ranges = {r: d for r, d in ranges.items() if r.partition in wanted}
        result = {}
        for partition, (committed, incomplete) in self._committed(ranges).items():
            for rng in incomplete:
                for rel in sorted(ranges[rng]):
                    (self._dir(rel) / file_name(*rng)).unlink(missing_ok=True)
                    fsync_dir(self._dir(rel))
            if committed >= 0:
                result[partition] = committed
        for partition in wanted if wanted is not None else {r.partition for r in ranges}:
            self._high_water[(topic, partition)] = result.get(partition, -1)
        return result

    def cleanup_tmp(self, topic: str | None = None, partitions: Iterable[int] | None = None) -> list[Path]:
        """Delete temporary files a crashed writer left behind (of ``topic``/``partitions`` if given)."""
        wanted = None if partitions is None else set(partitions)
        removed: list[Path] = []
        if not self.table_dir.exists():
            return removed
        for dirpath, _, filenames in os.walk(self.table_dir):
            for name in filenames:
                m = _TMP_RE.match(name)
                if m is None:
                    continue
                rng = parse_file_name(m["final"])
                if topic is not None and (rng is None or rng.topic != topic):
                    continue
                if wanted is not None and (rng is None or rng.partition not in wanted):
                    continue
                path = Path(dirpath) / name
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed
