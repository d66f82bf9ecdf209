"""``gigapulse lake``: compaction, retention and the state of the lake's files (docs/warehouse.md)."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from gigapulse.cli.common import UserError, console, log, out

lake_app = typer.Typer(
    help="Maintain the Parquet lake under live queries: merge the stream's small files, expire old days, "
         "and show what is on disk. Safe while stream workers write and analysts read.",
    no_args_is_help=True,
)

TableOpt = Annotated[list[str] | None, typer.Option("--table", "-t", help="Only this table (repeatable); "
                                                     "default: every date-partitioned table.")]


def _settings():
    from transforms.settings import DataSettings, LakeSettings

    return DataSettings(), LakeSettings()


def _run(expire_only: bool, tables: list[str] | None, grace_s: float | None):
    from transforms.warehouse.maintenance import compact as run_compact
    from transforms.warehouse.manifest import MaintenanceBusy, ManifestError

    data, lake = _settings()
    if not data.lake_root.is_dir():
        raise UserError(f"no lake at {data.lake_root} (GIGAPULSE_DATA_DIR={data.data_dir}): run the stream first")
    grace = lake.grace_s if grace_s is None else grace_s
    with console.status("maintenance step...") as status:
        try:
            report = run_compact(data.lake_root, data.db_path, lake.retention_days,
                                 **{**lake.compaction(), "grace_s": grace}, tables=tables, expire_only=expire_only, progress=lambda msg: status.update(f"compacting {msg}"))
        except (MaintenanceBusy, ManifestError, ValueError) as exc:
            raise UserError(str(exc)) from None
    return report


def _refresh_rollups() -> None:
    """The incremental rollup refresh (``gigapulse lake rollup``), on the files just compacted."""
    from transforms.warehouse.rollups import lake_sources, refresh_rollups

    data, _ = _settings()
    started = time.monotonic()
    report = refresh_rollups(lake_sources(data.lake_root), data.lake_root)
    if report.built:
        days = sorted({r.day.isoformat() for r in report.built})
        out.print(f"rollups: rebuilt {len(report.built)} rollup day(s) ({', '.join(days[:5])}"
                  f"{'...' if len(days) > 5 else ''}) in {time.monotonic() - started:.1f} s")


def _print_report(report) -> None:
    merged = report.hot_files_merged
    expired = sum(len(t.dates_expired) for t in report.tables.values())
    written = sum(len(t.dates_written) for t in report.tables.values())
    mb = sum(t.bytes_written for t in report.tables.values()) / 1e6
    rate = report.rows_written / report.seconds if report.seconds else 0.0
    out.print(f"generation {report.generation}: merged {merged} file(s) into {written} segment(s) "
              f"({report.rows_written:,} rows, {mb:.1f} MB, {rate:,.0f} rows/s); expired {expired} day(s); "
              f"deleted {report.files_deleted} file(s) ({report.bytes_deleted / 1e6:.1f} MB) in {report.seconds:.1f} s")


@lake_app.command()
def compact(
    table: TableOpt = None,
    loop: Annotated[bool, typer.Option("--loop", help="Run a step every GIGAPULSE_LAKE_INTERVAL_S until "
                                                      "interrupted (what the compose service runs).")] = False,
    grace_s: Annotated[float | None, typer.Option("--grace-s", min=0, help="Override GIGAPULSE_LAKE_GRACE_S.")] = None,
    rollups: Annotated[bool, typer.Option("--rollups/--no-rollups", help="After each step, rebuild the daily "
                                                                         "rollups whose sources changed.")] = True,
):
    """Merge committed stream files into sorted segments per table and day, apply retention, publish the catalog.

    Only files below each partition's checkpoint are merged, so the stream never waits and its
    recovery never touches compacted data. Readers keep working throughout: a new catalog replaces
    the old one atomically, and replaced files stay GIGAPULSE_LAKE_GRACE_S seconds for running queries.
    A day holds a few segments (GIGAPULSE_LAKE_FANOUT) until it is GIGAPULSE_LAKE_FOLD_AFTER_DAYS behind
    the newest day, then one file. With --loop the process lowers its CPU priority by GIGAPULSE_LAKE_NICE,
    so the stream workers beside it keep their latency.
    """
    from transforms.settings import LakeSettings

    if not loop:
        _print_report(_run(False, table, grace_s))
        if rollups:
            _refresh_rollups()
        return
    settings = LakeSettings()
    interval = settings.interval_s
    if settings.nice:
        os.nice(settings.nice)
    log.info("compacting every %g s at nice %d (Ctrl-C stops)", interval, os.nice(0))
    data, _ = _settings()
    while True:
        started = time.monotonic()
        if not data.lake_root.is_dir():
            # A stack starting up: the stream creates the lake with its first checkpoint.
            log.info("no lake at %s yet; waiting for the stream", data.lake_root)
            time.sleep(interval)
            continue
        _print_report(_run(False, table, grace_s))
        if rollups:
            _refresh_rollups()
        sys.stdout.flush()  # one line per step in `docker compose logs`, not a block at exit
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


@lake_app.command()
def expire(
    table: TableOpt = None,
    grace_s: Annotated[float | None, typer.Option("--grace-s", min=0, help="Override GIGAPULSE_LAKE_GRACE_S.")] = None,
):
    """Apply each table's retention (GIGAPULSE_LAKE_RETENTION) without merging anything.

    Expired days leave the views at once and the disk after the grace period.
    """
    _print_report(_run(True, table, grace_s))


@lake_app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
):
    """Per table: compacted and hot files, files per day, files awaiting deletion, retention cut-off."""
    from transforms.warehouse.maintenance import lake_status
    from transforms.warehouse.manifest import ManifestError

    data, lake = _settings()
    if not data.lake_root.is_dir():
        raise UserError(f"no lake at {data.lake_root} (GIGAPULSE_DATA_DIR={data.data_dir}): run the stream first")
    try:
        manifest, tables = lake_status(data.lake_root)
    except ManifestError as exc:
        raise UserError(str(exc)) from None
    if as_json:
        print(json.dumps({"generation": manifest.generation, "committed_at": manifest.committed_at,
                          "retention_days": lake.retention_days, "tables": [asdict(t) for t in tables]}, indent=2))
        return
    grid = Table(title=f"lake {data.lake_root} at generation {manifest.generation}")
    grid.add_column("table", no_wrap=True)
    for header in ("days", "MB", "hot", "hot MB", "to delete", "files/day"):
        grid.add_column(header, justify="right")
    grid.add_column("kept from", no_wrap=True)
    for t in tables:
        grid.add_row(t.table, str(t.compacted_dates), f"{t.compacted_bytes / 1e6:.1f}", str(t.hot_files),
                     f"{t.hot_bytes / 1e6:.1f}", str(t.covered_files), str(t.files_per_date_max), t.cutoff or "all")
    out.print(grid)
    out.print("days/MB: compacted; hot: stream files read beside them; to delete: merged files kept "
              f"{lake.grace_s:.0f} s for running queries; files/day: most files a query of one day opens")
