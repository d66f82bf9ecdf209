"""``gigapulse demo``: the main job end to end on local defaults."""

from __future__ import annotations

import logging
import os
import sys
import time
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gigapulse.cli.broker import _broker_settings
from gigapulse.cli.common import UserError, _fmt, _parse, app, console, out
from gigapulse.cli.ingest import run_simulation

DEMO_QUERIES = (
    ("rows per table",
     "SELECT 'readings' AS tbl, count(*) AS n FROM readings UNION ALL "
     "SELECT 'production_events', count(*) FROM production_events UNION ALL "
     "SELECT 'sensor_features_1m', count(*) FROM sensor_features_1m UNION ALL "
     "SELECT 'quality_features', count(*) FROM quality_features UNION ALL "
     "SELECT 'energy_features', count(*) FROM energy_features UNION ALL "
     "SELECT 'sensor_health', count(*) FROM sensor_health UNION ALL "
     "SELECT 'dead_letters', count(*) FROM dead_letters"),
    ("critical-to-quality parameters with the lowest Cpk (last window of each sensor)",
     "SELECT site, line, station, parameter, round(mean, 3) AS mean, round(cpk, 2) AS cpk, "
     "ewma_alarm, cusum_alarm FROM sensor_features_1m WHERE cpk IS NOT NULL "
     "QUALIFY row_number() OVER (PARTITION BY sensor_id ORDER BY window_start DESC) = 1 "
     "ORDER BY cpk LIMIT 8"),
    ("yield per line at end-of-line",
     "SELECT site, line, sum(units_out) AS units_out, sum(good) AS good, sum(scrapped) AS scrapped, "
     "round(sum(good) / nullif(sum(good) + sum(scrapped), 0), 3) AS yield "
     "FROM quality_features WHERE stage = 'aging_eol' GROUP BY ALL ORDER BY ALL"),
    ("scrap by stage and reason",
     "SELECT site, stage, reason, sum(scrapped) AS scrapped FROM scrap_reasons GROUP BY ALL "
     "ORDER BY scrapped DESC LIMIT 8"),
    ("energy per good cell, per line",
     "SELECT site, line, round(sum(kwh), 1) AS kwh, sum(good_cells) AS good_cells, "
     "round(sum(kwh) / nullif(sum(good_cells), 0), 2) AS kwh_per_good_cell FROM energy_per_cell "
     "GROUP BY ALL ORDER BY ALL"),
    ("sensor health: the least complete sensors",
     "SELECT sensor_id, sum(observed) AS observed, round(sum(expected)) AS expected, "
     "round(sum(observed) / nullif(sum(expected), 0), 3) AS completeness, bool_or(stuck) AS stuck "
     "FROM sensor_health GROUP BY ALL ORDER BY completeness LIMIT 5"),
    ("dead letters by stage and reason",
     "SELECT stage, reason, count(*) AS n FROM dead_letters GROUP BY ALL ORDER BY ALL"),
    ("daily rollup: yield and first-pass yield per line and stage (quality_daily)",
     "SELECT date, site, line, stage, units_in, good, scrapped, round(yield, 3) AS yield, "
     "round(first_pass_yield, 3) AS fpy FROM quality_daily WHERE units_in > 0 ORDER BY ALL LIMIT 10"),
)


@app.command()
def demo(
    duration: Annotated[str, typer.Option(help="Simulated duration of each plant.")] = "5m",
    workers: Annotated[int, typer.Option(min=1, max=8, help="Stream worker processes (one consumer group).")] = 2,
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 42,
    keep_broker: Annotated[bool, typer.Option(help="Leave the broker running afterwards.")] = False,
):
    """The main job end to end on local defaults.

    Starts the local broker, streams both plants (reference and legacy, with a few malformed messages
    for the dead-letter path), drains them with stream workers into the Parquet lake, builds the DuckDB
    compacts the lake, builds the rollups and
    publishes the DuckDB catalog through Dagster (local storage), prints features with SQL, runs the daily
    batch jobs (data-quality checks, sensor density audit, readiness and retrofit, material loss, KPIs,
    the HTML report) and prints both plants' readiness, largest sensor gaps and retrofit payback, and
    stops the broker.
    """
    import subprocess
    from datetime import UTC, datetime, timedelta

    from infra import broker
    from ingestion.pipeline import parse_duration
    from transforms.settings import DataSettings
    from transforms.warehouse import query as run_query

    seconds = _parse(parse_duration, duration, "--duration")
    settings = _broker_settings()
    data = DataSettings()
    was_running = broker.status(settings).running
    with console.status("starting the Kafka broker ..."):
        broker.start(settings)
        broker.apply_catalog(settings)
    out.print(f"[bold]1/6[/bold] broker up on {settings.bootstrap} (Kafka {broker.KAFKA_VERSION})")
    try:
        # Each demo run simulates a fresh, later span, so a re-run adds data instead of re-sending old times.
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=2 * seconds)
        for i, plant in enumerate(("reference", "legacy")):
            s = run_simulation(plant, seconds, None, seed + i, start, "frames", 0.05, settings.bootstrap)
            out.print(f"[bold]2/6[/bold] {plant}: {s.readings:,} readings, {s.events:,} events, "
                      f"{s.dead_letters} dead letters, scrap rate {s.plant_summary.get('scrap_rate', 0):.1%}, "
                      f"{s.readings_per_s:,.0f} readings/s into Kafka")
        t0 = time.monotonic()
        env = dict(os.environ, GIGAPULSE_BOOTSTRAP_SERVERS=settings.bootstrap)
        procs = [subprocess.Popen([sys.executable, "-m", "gigapulse.cli", "stream", "--drain"], env=env,
                                  stdout=subprocess.DEVNULL) for _ in range(workers)]
        with console.status(f"{workers} stream worker(s) draining the topics into {data.lake_root} ..."):
            codes = [p.wait() for p in procs]
        if any(codes):
            raise UserError(f"a stream worker failed (exit codes {codes}); see its log above")
        out.print(f"[bold]3/6[/bold] {workers} stream worker(s) drained the topics in {time.monotonic() - t0:.1f}s")
        meta = _run_maintenance()
        out.print(f"[bold]4/6[/bold] Dagster ran lake_compaction_job: merged {meta['hot_files_merged']} stream "
                  f"file(s) into generation {meta['generation']}, built {meta['rollup_days_built']} rollup day(s), "
                  f"published the catalog {data.db_path}")
        out.print("[bold]5/6[/bold] features from the warehouse (gigapulse sql):")
        for title, q in DEMO_QUERIES:
            columns, rows = run_query(data.db_path, q)
            table = Table(*columns, title=title, title_justify="left")
            for r in rows:
                table.add_row(*(_fmt(v) if v is not None else "" for v in r))
            out.print(table)
        _run_batch(data.db_path)
    finally:
        if not keep_broker and not was_running:
            broker.stop(settings)
            out.print("broker stopped")


#: The batch jobs the demo runs per day of data: the audit, readiness scores and retrofit plan, material
#: loss and KPIs, then the report. Each job runs the data-quality checks of the lake tables it reads
#: first (blocking ones stop it on broken data), so the checks need no job of their own here.
DEMO_BATCH_JOBS = ("readiness_job", "material_loss_job", "plant_kpis_job")


def _run_batch(db_path: Path) -> None:
    """Run the daily batch jobs in-process for every day of data, the report, and print what they found."""
    from orchestration.cli import ensure_dagster_home
    from orchestration.definitions import defs
    from orchestration.runs import execute_plan, plan_runs
    from transforms.batch.readiness import plant_summaries
    from transforms.warehouse import query as run_query

    ensure_dagster_home()
    for noisy in ("alembic", "dagster"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _, rows = run_query(db_path, "SELECT DISTINCT date FROM production_events ORDER BY date")
    days = [d.isoformat() for (d,) in rows]
    import dagster as dg

    failed = []
    with dg.DagsterInstance.get() as instance, console.status("batch jobs...") as status:
        for name in DEMO_BATCH_JOBS:
            for day in days:
                status.update(f"batch: {name} {day}")
                failed += [f"{name} {day}: {o.error}" for o in
                           execute_plan(defs, plan_runs(defs, name, partition=day), instance) if not o.success]
        status.update("batch: report_job")
        report = execute_plan(defs, plan_runs(defs, "report_job"), instance)
        failed += [f"report_job: {o.error}" for o in report if not o.success]
    if failed:
        raise UserError(f"batch jobs failed: {'; '.join(failed)}")
    out.print(f"[bold]6/6[/bold] Dagster ran {', '.join(DEMO_BATCH_JOBS)} for {', '.join(days)} and report_job:")
    for summary in plant_summaries(db_path, date.fromisoformat(days[-1]) if days else None):
        for line in summary.lines():
            out.print(f"  {line}")
    from transforms.settings import DataSettings

    for page in sorted(DataSettings().report_dir.glob("*.html")):
        out.print(f"  report: {page}")


def _run_maintenance() -> dict:
    """Run the lake maintenance job (compaction, rollups, catalog) in-process on Dagster's local storage.

    DAGSTER_HOME defaults to the data directory's dagster/. Returns the materializations' metadata values.
    """
    import dagster as dg

    from orchestration.cli import ensure_dagster_home
    from orchestration.definitions import defs

    ensure_dagster_home()
    for noisy in ("alembic", "dagster"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    with dg.DagsterInstance.get() as instance:
        result = defs.resolve_job_def("lake_compaction_job").execute_in_process(instance=instance,
                                                                                 run_config=quiet)
    if not result.success:
        raise UserError("the Dagster run that compacts the lake and publishes the catalog failed")
    meta = {}
    for node in ("lake_compaction", "lake_rollups"):
        for key, value in result.asset_materializations_for_node(node)[0].metadata.items():
            meta[key] = value.value
    return meta
