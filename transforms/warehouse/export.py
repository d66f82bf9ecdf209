"""Query results as files other tools read: CSV, JSON Lines and Parquet, written as the rows arrive.

The text formats follow what spreadsheets, ``jq``, pandas, Polars and DuckDB's own readers expect,
not Python's reprs:

* NULL is an empty CSV field (an empty string is ``""``) and JSON ``null``;
* booleans are ``true`` / ``false``; numbers are plain numbers; DECIMALs keep every digit;
* NaN and infinities are JSON ``null`` (JSON has no such numbers) and ``nan`` / ``inf`` / ``-inf`` in CSV
  (what DuckDB's CSV writer and reader use);
* BLOBs are base64 (RFC 4648, padded); UUIDs and other scalar types are their text;
* timestamps are ISO 8601 (``2026-03-02T06:00:00.123000+00:00``; TIMESTAMPTZ in UTC with its offset,
  plain TIMESTAMP without one), dates ``2026-03-02``, times ``06:00:00``, intervals ISO 8601
  durations (``P1DT2H``);
* lists are JSON arrays, structs and maps JSON objects (map keys as text); in a CSV cell they are the
  same JSON text.

JSON is JSON Lines (one object per row, ``\\n``-terminated): it streams, and DuckDB's ``read_json``,
pandas' ``read_json(lines=True)``, Polars' ``read_ndjson`` and ``jq`` read it as is. A column name that
appears twice in a result gets a ``_2``, ``_3``... suffix in JSON and Parquet, whose keys must differ.

Rows are fetched ``batch_rows`` at a time, so memory stays flat whatever the size of the result.
Only :func:`write_parquet` imports pyarrow (half a second of start-up that CSV and JSON do not pay).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import uuid
from collections.abc import Iterable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import duckdb

#: Rows fetched from DuckDB at a time (about a DuckDB vector's worth, times a few).
BATCH_ROWS = 8192


def iso_duration(value: dt.timedelta) -> str:
    """An ISO 8601 duration: ``P1DT2H30M``, ``PT0.5S``, ``-PT1M`` (DuckDB intervals arrive as timedelta)."""
    sign, value = ("-", -value) if value < dt.timedelta(0) else ("", value)
    hours, rest = divmod(value.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    secs = f"{seconds}.{value.microseconds:06d}".rstrip("0").rstrip(".") if value.microseconds else str(seconds)
    clock = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M")) if n)
    clock += f"{secs}S" if seconds or value.microseconds else ""
    out = f"{value.days}D" if value.days else ""
    if clock:
        out += "T" + clock
    return f"{sign}P{out or 'T0S'}"


def _decimal_text(value: Decimal) -> str:
    return format(value, "f")


def scalar_text(value: Any) -> str:
    """The text of a non-null scalar in CSV and in the table view (nested values are JSON)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else
                                                         "inf" if value > 0 else "-inf")
    if isinstance(value, Decimal):
        return _decimal_text(value) if value.is_finite() else str(value).lower()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return iso_duration(value)
    if isinstance(value, list | tuple | dict):
        return json_text(value)
    return str(value)  # UUID, BIT, and whatever DuckDB adds


def json_text(value: Any) -> str:
    """One value as JSON text (see the module docstring for how each type is written)."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "null"
    if isinstance(value, Decimal):
        return _decimal_text(value) if value.is_finite() else "null"
    if isinstance(value, list | tuple):
        return "[" + ",".join(json_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k), ensure_ascii=False)}:{json_text(v)}"
                              for k, v in value.items()) + "}"
    if isinstance(value, uuid.UUID):
        return f'"{value}"'
    return json.dumps(scalar_text(value), ensure_ascii=False)


def csv_field(value: Any) -> str:
    """One CSV field (RFC 4180): NULL is empty, an empty string ``""``, quoted only where needed."""
    if value is None:
        return ""
    text = scalar_text(value)
    if text == "" or any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def csv_line(values: Iterable[Any]) -> str:
    return ",".join(csv_field(v) for v in values) + "\n"


def unique_names(columns: Sequence[str]) -> list[str]:
    """Column names made unique for formats whose keys must differ: ``a, a`` -> ``a, a_2``."""
    seen: set[str] = set()
    out = []
    for name in columns:
        new, n = name, 1
        while new in seen:
            n += 1
            new = f"{name}_{n}"
        seen.add(new)
        out.append(new)
    return out


def _batches(cursor: duckdb.DuckDBPyConnection, batch_rows: int) -> Iterable[list[tuple]]:
    while rows := cursor.fetchmany(batch_rows):
        yield rows


def write_csv(cursor: duckdb.DuckDBPyConnection, out: TextIO, batch_rows: int = BATCH_ROWS) -> int:
    """Write the executed statement's result as CSV with a header line; returns the number of rows."""
    out.write(csv_line(d[0] for d in cursor.description))
    n = 0
    for rows in _batches(cursor, batch_rows):
        out.write("".join(csv_line(r) for r in rows))
        n += len(rows)
    return n


def write_jsonl(cursor: duckdb.DuckDBPyConnection, out: TextIO, batch_rows: int = BATCH_ROWS) -> int:
    """Write the executed statement's result as JSON Lines; returns the number of rows."""
    keys = [json.dumps(k, ensure_ascii=False) + ":" for k in unique_names([d[0] for d in cursor.description])]
    n = 0
    for rows in _batches(cursor, batch_rows):
        out.write("".join("{" + ",".join(k + json_text(v) for k, v in zip(keys, r, strict=True)) + "}\n"
                          for r in rows))
        n += len(rows)
    return n


def write_parquet(relation: duckdb.DuckDBPyRelation, path: Path, batch_rows: int = BATCH_ROWS * 8) -> int:
    """Write a relation (``con.sql(...)``) to a Parquet file, batch by batch; returns the number of rows.

    Types are DuckDB's own Arrow export (TIMESTAMPTZ as UTC timestamps, lists, maps and structs as
    such, DECIMAL exact); the file is written with zstd like the lake.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    reader = relation.to_arrow_reader(batch_rows)
    names = unique_names(reader.schema.names)
    schema = pa.schema([f.with_name(n) for f, n in zip(reader.schema, names, strict=True)],
                       metadata=reader.schema.metadata)
    n = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for batch in reader:
            writer.write_batch(pa.RecordBatch.from_arrays(batch.columns, schema=schema))
            n += batch.num_rows
    return n
