"""Where the batch tables live: one Parquet file per table and UTC day, replaced whole.

``<lake>/batch/<table>/date=YYYY-MM-DD/<table>.parquet``. A day is recomputed from the warehouse and
written under the same name by atomic rename, so a rerun or a backfill replaces the day instead of
adding to it, and a reader sees the old day or the new one, never a mix. Rows are cast to the table's
contract and sorted by its key, and the writer options are fixed, so the same rows give the same
bytes.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa

from schemas.tables import TableSpec
from transforms.lake import write_parquet_atomic

BATCH_DIR = "batch"


def day_path(lake_root: Path, spec: TableSpec, day: date) -> Path:
    return Path(lake_root) / BATCH_DIR / spec.name / f"date={day.isoformat()}" / f"{spec.name}.parquet"


def conform(spec: TableSpec, rows: pa.Table) -> pa.Table:
    """``rows`` as the contract's file schema (partition column dropped), sorted by the table's key.

    A missing nullable column becomes nulls; a missing required one, or an extra column, is refused so
    that a contract and its code cannot drift apart silently.
    """
    schema = spec.file_schema
    extra = sorted(set(rows.column_names) - set(schema.names) - set(spec.partition_cols))
    if extra:
        raise ValueError(f"{spec.name}: columns not in the contract: {', '.join(extra)}")
    columns = []
    for field in schema:
        if field.name in rows.column_names:
            columns.append(rows[field.name].cast(field.type))
        elif field.nullable:
            columns.append(pa.nulls(rows.num_rows, field.type))
        else:
            raise ValueError(f"{spec.name}: required column {field.name!r} is missing")
    table = pa.Table.from_arrays(columns, schema=schema)
    if spec.sort_key and table.num_rows:
        table = table.sort_by([(k, "ascending") for k in spec.sort_key])
    return table


def write_day(lake_root: Path, spec: TableSpec, day: date, rows: pa.Table) -> Path:
    """Replace ``day`` of ``spec``'s table with ``rows`` (an empty day is written too: it was computed)."""
    return write_parquet_atomic(day_path(lake_root, spec, day), conform(spec, rows))


def batch_days(lake_root: Path, spec: TableSpec) -> list[date]:
    """The days the table holds, oldest first."""
    tdir = Path(lake_root) / BATCH_DIR / spec.name
    if not tdir.is_dir():
        return []
    return sorted(date.fromisoformat(p.name.removeprefix("date=")) for p in tdir.glob("date=*")
                  if (p / f"{spec.name}.parquet").exists())
