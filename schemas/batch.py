"""Arrow schemas of the batch side's tables: what the Dagster assets land, one file per UTC day.

Each is a :class:`~schemas.tables.TableSpec` like the lake tables and rollups, so its grain, doc and
column descriptions (units included) drive the warehouse views and ``docs/tables.md``. The code that
fills them lives in :mod:`transforms.batch`; they are written by :func:`transforms.batch.store.write_day`
to ``<lake>/batch/<table>/date=YYYY-MM-DD/<table>.parquet``, replaced whole, so materializing a day
twice leaves the same rows.

Each domain adds its specs in its own section below and lists them in ``BATCH_TABLES``, with an
example query in ``BATCH_EXAMPLES``.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.tables import DESCRIPTION, TableSpec


def col(name: str, type_: pa.DataType, description: str, nullable: bool = True) -> pa.Field:
    """A column with its description (units included) in the field metadata."""
    return pa.field(name, type_, nullable=nullable, metadata={DESCRIPTION: description.encode()})


def date_col(what: str = "the UTC day the row describes") -> pa.Field:
    return col("date", pa.date32(), f"Partition column: {what}.", nullable=False)


def batch_spec(name: str, grain: str, doc: str, fields: list[pa.Field], sort_key: tuple[str, ...]) -> TableSpec:
    """A daily batch table: partitioned by ``date``, rows sorted by ``sort_key`` for identical rewrites."""
    return TableSpec(name=name, grain=grain, doc=doc, schema=pa.schema(fields), partition_cols=("date",),
                     date_from=None, sort_key=sort_key)


# --------------------------------------------------------------------------- the registry

#: Every batch table by name, in the order the docs list them.
BATCH_TABLES: dict[str, TableSpec] = {}

#: One example query per batch table, shown in docs/tables.md.
BATCH_EXAMPLES: dict[str, str] = {}
