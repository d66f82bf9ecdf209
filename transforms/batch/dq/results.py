"""Running a table's checks on one day, landing the outcomes in ``dq_results``, and summarising them.

``dq_results`` has one file per checked day (:func:`transforms.batch.store.write_day`). The three lake
tables are checked by separate Dagster asset checks, possibly at the same moment, so landing one
table's outcomes rewrites the day's file under a lock, replacing that table's rows and keeping the
others'. Rerunning a table's checks on the same data gives the same rows apart from ``run_id`` and
``checked_at`` (and today's freshness, which compares with the clock).
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.batch import DQ_RESULTS
from transforms.batch.dq.suites import CHECKED_TABLES, CheckOutcome, profile, validate
from transforms.batch.store import BATCH_DIR, day_path, write_day
from transforms.settings import DataQualitySettings


def check_table_day(db_path: Path, lake_root: Path, table: str, day: date, now: datetime | None = None,
                    settings: DataQualitySettings | None = None) -> list[CheckOutcome]:
    """Every check of ``table`` on ``day``: DuckDB aggregates the day, GX validates the aggregates.

    ``now`` is the freshness reference for today (default: the clock); reading the warehouse read-only
    means any number of checks run beside the stream and the analysts.
    """
    from transforms.warehouse.reader import connect

    if table not in CHECKED_TABLES:
        raise ValueError(f"no data-quality checks for {table!r}; checked tables: {', '.join(CHECKED_TABLES)}")
    settings = settings or DataQualitySettings()
    now = now or datetime.now(UTC)
    con = connect(db_path)
    try:
        frames = profile(con, Path(lake_root), table, day, now, settings)
    finally:
        con.close()
    return validate(frames, table, day, settings)


def results_table(outcomes: Sequence[CheckOutcome], run_id: str, checked_at: datetime) -> pa.Table:
    """The outcomes as ``dq_results`` rows (without the ``date`` partition column)."""
    return pa.table({
        "table_name": [o.table for o in outcomes],
        "check_name": [o.check for o in outcomes],
        "success": [o.success for o in outcomes],
        "blocking": [o.blocking for o in outcomes],
        "observed": [o.observed for o in outcomes],
        "expected": [o.expected for o in outcomes],
        "message": [o.message for o in outcomes],
        "run_id": [run_id] * len(outcomes),
        "checked_at": pa.array([checked_at] * len(outcomes), pa.timestamp("us", tz="UTC")),
    })


@contextmanager
def _day_lock(lake_root: Path) -> Iterator[None]:
    """Serialise read-modify-write of dq_results days (advisory flock, dropped if the holder dies)."""
    lock = Path(lake_root) / BATCH_DIR / DQ_RESULTS.name / ".lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def land_results(lake_root: Path, day: date, outcomes: Sequence[CheckOutcome], run_id: str,
                 checked_at: datetime) -> Path:
    """Replace the rows of the outcomes' table(s) in ``day``'s ``dq_results`` file, keeping other tables'."""
    if any(o.day != day for o in outcomes):
        raise ValueError(f"outcomes of another day than {day.isoformat()}")
    tables = sorted({o.table for o in outcomes})
    new = results_table(outcomes, run_id, checked_at)
    with _day_lock(lake_root):
        path = day_path(lake_root, DQ_RESULTS, day)
        if path.exists():
            old = pq.read_table(path, schema=DQ_RESULTS.file_schema)
            kept = old.filter(pc.invert(pc.is_in(old["table_name"], pa.array(tables))))
            new = pa.concat_tables([kept, new.cast(DQ_RESULTS.file_schema)])
        return write_day(lake_root, DQ_RESULTS, day, new)


@dataclass(frozen=True)
class TableQuality:
    """The data-quality summary of one lake table, for the report: latest result per check and day."""

    table: str
    days_checked: int
    checks_run: int
    failed: int
    failed_blocking: int
    last_run: datetime | None
    failures: tuple[str, ...]  # messages of the failed checks, newest day first


def quality_summary(lake_root: Path, since: date | None = None, until: date | None = None,
                    max_messages: int = 10) -> list[TableQuality]:
    """Per checked table: days checked, checks run, failed (and of those blocking), last run, messages.

    Reads the ``dq_results`` files directly (the report need not wait for a catalog rebuild). A table
    never checked in the range is listed with zeros, so a report shows that nothing was checked.
    """
    import duckdb

    glob = (Path(lake_root) / BATCH_DIR / DQ_RESULTS.name / "date=*" / f"{DQ_RESULTS.name}.parquet").as_posix()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    try:
        rows = con.execute("""
            SELECT table_name, count(DISTINCT date), count(*), count(*) FILTER (WHERE NOT success),
                   count(*) FILTER (WHERE NOT success AND blocking), max(checked_at),
                   list(message ORDER BY date DESC, check_name) FILTER (WHERE NOT success)
            FROM read_parquet(?, hive_partitioning = true, hive_types = {'date': DATE}, allow_empty = true)
            WHERE (?::DATE IS NULL OR date >= ?::DATE) AND (?::DATE IS NULL OR date <= ?::DATE)
            GROUP BY table_name""", [glob, since, since, until, until]).fetchall() if _has_files(glob) else []
    finally:
        con.close()
    found = {r[0]: r for r in rows}
    out = []
    for table in CHECKED_TABLES:
        _, days, run, failed, blocking, last, messages = found.get(table, (table, 0, 0, 0, 0, None, []))
        out.append(TableQuality(table=table, days_checked=days, checks_run=run, failed=failed,
                                failed_blocking=blocking, last_run=last,
                                failures=tuple((messages or [])[:max_messages])))
    return out


def _has_files(glob: str) -> bool:
    from glob import glob as find

    return bool(find(glob))
