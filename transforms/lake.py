"""The Parquet sink of the stream: one table's rows, conformed, split by date, written atomically.

A batch of rows from source records ``first..last`` of one (topic, partition) becomes one file per
partition directory, named by that offset range (after Kafka Connect's S3 sink)::

    <root>/<table>/date=2024-05-01/plant.readings.v1+3+00000000000000001200+00000000000000001299.parquet

The name says which source records the file holds: topic, partition, first and last offset
(inclusive, zero-padded to 20 digits so names sort like offsets). A batch whose rows span two dates
becomes two files with the same name in two ``date=`` directories.

What this module guarantees, and what it leaves to the commit point:

* A file appears whole or not at all: it is written under a temporary name that no reader's glob
  matches (``.<name>.<hex>.tmp``: DuckDB's ``*.parquet`` matches leading-dot names, so the suffix
  is what hides it), fsync'd, renamed with ``os.replace`` and its directory fsync'd.
* A rewrite is harmless: the content is a deterministic function of the rows (sorted by the table's
  key, fixed writer options, no timestamps in the footer), so rewriting a batch replaces its files
  with the same rows under the same names.
* Which files count is not decided here. The partition's checkpoint (:mod:`transforms.checkpoint`)
  is the one commit point: on resume, files of a range at or after its offset were never
  committed and are deleted before the batch is redone, so a range is never in the lake twice.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import BinaryIO, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.tables import TableSpec

OFFSET_DIGITS = 20

_FILE_RE = re.compile(
    r"^(?P<topic>[A-Za-z0-9._-]+)\+(?P<partition>\d+)\+(?P<first>\d{20})\+(?P<last>\d{20})\.parquet$"
)
_PARTITION_VALUE_RE = re.compile(r"^[A-Za-z0-9._-]+$")


class FileRange(NamedTuple):
    """The source records a lake file holds, parsed from its name."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int


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


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Create ``path`` so that readers (and a crash) see either the old file or the complete new one.

    ``write`` fills a temporary file no reader's glob matches; it is fsync'd, renamed over ``path``
    and the directory fsync'd. On any failure the temporary file is removed.
    """
    tmp = path.parent / tmp_name(path.name)
    f = _open_new(tmp)
    try:
        with f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def _open_new(tmp: Path, attempts: int = 5) -> BinaryIO:
    """Open ``tmp`` for writing, creating its directory; again if the directory vanished meanwhile.

    The lake's collector removes empty ``date=`` directories while the stream writes, so a directory
    created here can be gone before the file is opened in it. Once the temporary file exists the
    directory is not empty and stays.
    """
    for attempt in range(attempts):
        make_dirs_durable(tmp.parent)
        try:
            return open(tmp, "wb")
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def write_parquet_atomic(path: Path, table: pa.Table, compression: str = "zstd") -> Path:
    """Write ``table`` to ``path`` atomically (:func:`write_atomic`).

    The writer options are fixed and the footer holds no clock, so the same table gives the same bytes.
    """
    return write_atomic(path, lambda f: pq.write_table(table, f, compression=compression, write_statistics=True))


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


class LakeWriter:
    """Writes batches of one lake table, each batch as the files of one source offset range.

    ``schema`` is the table's logical schema, partition columns included; a missing ``date`` column
    is derived from ``date_from`` (UTC date). ``sort_key`` orders rows inside each file so its
    content does not depend on the order rows arrived in.
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
    ):
        if not re.fullmatch(r"[a-z0-9_]+", table):
            raise ValueError(f"table name must be lower_snake_case: {table!r}")
        self.root = Path(root)
        self.table = table
        self.schema = schema
        self.partition_cols = tuple(partition_cols)
        self.compression = compression
        for col in (*self.partition_cols, *sort_key):
            if schema.get_field_index(col) < 0:
                raise ValueError(f"{table}: column {col!r} is not in the schema")
        if date_from is None and "date" in self.partition_cols:
            date_from = next((c for c in ("ts", "window_start") if c in schema.names), None)
        self.date_from = date_from
        self.sort_key = tuple(sort_key)
        file_schema = schema
        for col in self.partition_cols:
            file_schema = file_schema.remove(file_schema.get_field_index(col))
        self.file_schema = file_schema

    @classmethod
    def for_table(cls, root: Path, spec: TableSpec, **kwargs) -> LakeWriter:
        """A writer laid out as ``spec`` says (partitioning, date source, sort key)."""
        return cls(root, spec.name, spec.schema, spec.partition_cols, date_from=spec.date_from,
                   sort_key=spec.sort_key, **kwargs)

    @property
    def table_dir(self) -> Path:
        """Directory of this table in the lake."""
        return self.root / self.table

    def write(self, topic: str, partition: int, first_offset: int, last_offset: int, table: pa.Table) -> list[Path]:
        """Write the rows produced by records first_offset..last_offset of (topic, partition).

        One file per partition directory, each renamed into place whole; returns them (none for no
        rows). Writing the same batch again replaces its files with the same content.
        """
        name = file_name(topic, partition, first_offset, last_offset)
        rows = self._conform(table)
        if not rows.num_rows:
            return []
        paths = []
        for rel, part in self._split(rows):
            part = part.select(self.file_schema.names)
            if self.sort_key:
                # Arrow's sort is stable, so rows equal on the key keep their (replayed) order.
                part = part.sort_by([(c, "ascending") for c in self.sort_key])
            part = _cast_keeping_dictionaries(part, self.file_schema).replace_schema_metadata(self.file_schema.metadata)
            paths.append(write_parquet_atomic(self._dir(rel) / name, part, self.compression))
        return paths

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
