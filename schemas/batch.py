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


# --------------------------------------------------------------------------- data quality (issue #11)

#: Results of the data-quality checks (transforms/batch/dq): one row per check, checked table and day.
DQ_RESULTS = batch_spec(
    "dq_results",
    grain="one check x one checked table x one UTC day (the lake partition checked)",
    doc=("Outcome of each data-quality check (Great Expectations suites over DuckDB aggregates, run as "
         "Dagster asset checks) of a lake table's daily partition. The day file holds the latest run of "
         "each table's checks: rerunning a table's checks replaces that table's rows of the day and keeps "
         "the other tables'. Apart from run_id and checked_at, the rows depend only on the data checked, "
         "except the freshness check of today, which compares with the time of the run."),
    fields=[
        date_col("the UTC day (lake partition) that was checked"),
        col("table_name", pa.string(), "Lake table checked (readings, production_events, dead_letters).",
            nullable=False),
        col("check_name", pa.string(), "Name of the check, as the Dagster asset check (readings_keys_not_null...).",
            nullable=False),
        col("success", pa.bool_(), "True if the partition passed the check.", nullable=False),
        col("blocking", pa.bool_(), "True if a failure stops the assets downstream of the table in the same run.",
            nullable=False),
        col("observed", pa.string(), "What was measured, readable (counts, offending keys, newest timestamp)."),
        col("expected", pa.string(), "What the check requires, readable."),
        col("message", pa.string(), "One line for people: the table, the day and what failed; null on success."),
        col("run_id", pa.string(), "Dagster run id of the check run (or the caller's id outside Dagster)."),
        col("checked_at", pa.timestamp("us", tz="UTC"),
            "When the checks of this table and day were evaluated (one value per run and table), UTC."),
    ],
    sort_key=("table_name", "check_name"),
)

# --------------------------------------------------------------------------- the registry

#: Every batch table by name, in the order the docs list them.
BATCH_TABLES: dict[str, TableSpec] = {}

#: One example query per batch table, shown in docs/tables.md.
BATCH_EXAMPLES: dict[str, str] = {}

BATCH_TABLES[DQ_RESULTS.name] = DQ_RESULTS
BATCH_EXAMPLES[DQ_RESULTS.name] = """SELECT count(*) AS checks_run, count(*) FILTER (WHERE NOT success) AS failed,
       count(*) FILTER (WHERE NOT success AND blocking) AS failed_blocking,
       list(message ORDER BY date DESC) FILTER (WHERE NOT success) AS failures
FROM dq_results
WHERE date >= current_date - 7;"""
