"""The one front door: ``gigapulse <command>``.

Every docker-compose service built from the gigapulse image runs one of these commands, so what the
tests exercise is what the stack runs. Errors a user can fix (a bad argument, a bad setting, a
missing tool, an unknown plant) are printed as one line on stderr with exit code 2 (usage) or 1,
never as a traceback; ``GIGAPULSE_DEBUG=1`` shows the traceback for developers.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from typer._click import exceptions as click_exc  # typer vendors click; its errors live here

from orchestration.cli import jobs_app

app = typer.Typer(
    name="gigapulse",
    help="gigapulse: battery-plant data from the floor to Kafka, a Parquet lake and DuckDB.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
broker_app = typer.Typer(help="Run a local single-node Apache Kafka (KRaft) broker.", no_args_is_help=True)
topics_app = typer.Typer(help="The v1 topic catalog.", no_args_is_help=True)
schemas_app = typer.Typer(help="Event contracts and their JSON Schemas.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks (figures go to docs/BENCHMARKS.md).", no_args_is_help=True)
app.add_typer(broker_app, name="broker")
app.add_typer(topics_app, name="topics")
app.add_typer(schemas_app, name="schemas")
app.add_typer(bench_app, name="bench")
app.add_typer(jobs_app, name="jobs")

console = Console(stderr=True)
out = Console(soft_wrap=True)
log = logging.getLogger("gigapulse")


class UserError(Exception):
    """An error the user can act on; printed as one line."""


def _setup_logging(verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    for noisy in ("kafka", "aiokafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not verbose else logging.INFO)
    logging.getLogger("kafka.cluster").addFilter(_closed_client_refresh)
    logging.getLogger("kafka.net.selector").addFilter(_closed_client_close_race)


def _closed_client_refresh(record: logging.LogRecord) -> bool:
    """Drop kafka-python's ERROR for a metadata refresh cancelled because its client was closed.

    kafka-python 3.0 logs "Metadata refresh: failed Cancelled" when a short-lived consumer (the
    asset model and end-offset reads) is closed with a refresh in flight; nothing failed.
    """
    return not record.getMessage().endswith("failed Cancelled")


def _closed_client_close_race(record: logging.LogRecord) -> bool:
    """Drop kafka-python's ERROR and traceback for a task its own IO thread was still running at close.

    kafka-python 3.0.12 (the newest) closes a short-lived consumer's pending tasks from the closing
    thread; when its IO thread is inside one of them at that moment, ``coro.close()`` raises
    "generator already executing" and the error is logged with a traceback, although the consumer
    is gone either way and every record it returned was already read. About one start in 25 of a
    stream worker showed it. Any other error while closing is kept.
    """
    exc = record.exc_info[1] if record.exc_info else None
    return not (record.getMessage() == "Error closing coroutine for cancelled task"
                and isinstance(exc, ValueError) and "generator already executing" in str(exc))


@app.callback()
def _root(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    _setup_logging(verbose)


# --------------------------------------------------------------------------- broker

def _broker_settings(port: int | None = None, controller_port: int | None = None,
                     data_dir: Path | None = None):
    from infra.broker import BrokerSettings

    overrides = {k: v for k, v in {"port": port, "controller_port": controller_port,
                                   "data_dir": data_dir}.items() if v is not None}
    return BrokerSettings(**overrides)


PortOpt = Annotated[int | None, typer.Option(help="Client port (env GIGAPULSE_BROKER_PORT, default 9092).")]
CtlPortOpt = Annotated[int | None, typer.Option(help="Controller port (env GIGAPULSE_BROKER_CONTROLLER_PORT, "
                                                     "default 9093).")]
DataDirOpt = Annotated[Path | None, typer.Option(help="Broker data dir (env GIGAPULSE_BROKER_DATA_DIR, "
                                                      "default var/kafka).")]


def _print_status(st) -> None:
    state = "[green]running[/green]" if st.running else "[red]stopped[/red]"
    out.print(f"broker {state}  pid={st.pid or '-'}  bootstrap={st.bootstrap}  "
              f"controller_port={st.controller_port}  data_dir={st.data_dir}")
    if st.topics:
        out.print("topics: " + ", ".join(st.topics))


@broker_app.command("start")
def broker_start(port: PortOpt = None, controller_port: CtlPortOpt = None, data_dir: DataDirOpt = None,
                 apply_catalog: Annotated[bool, typer.Option("--topics/--no-topics",
                                                             help="Apply the topic catalog once up.")] = True):
    """Start the broker (fetching Kafka from Maven Central on first use); harmless if already running."""
    from infra import broker

    settings = _broker_settings(port, controller_port, data_dir)
    with console.status(f"starting Kafka {broker.KAFKA_VERSION} on {settings.bootstrap} ..."):
        st = broker.start(settings)
        if apply_catalog:
            from ingestion.topics import apply_topics

            apply_topics(settings.bootstrap)
            st = broker.status(settings)
    _print_status(st)


@broker_app.command("stop")
def broker_stop(data_dir: DataDirOpt = None):
    """Stop the broker started from this data dir (SIGTERM, then SIGKILL after 30 s)."""
    from infra import broker

    stopped = broker.stop(_broker_settings(data_dir=data_dir))
    out.print("broker stopped" if stopped else "broker was not running")


@broker_app.command("status")
def broker_status(data_dir: DataDirOpt = None, port: PortOpt = None, controller_port: CtlPortOpt = None):
    """Report pid, ports and topics; exit code 3 when the broker is not running."""
    from infra import broker

    st = broker.status(_broker_settings(port, controller_port, data_dir))
    _print_status(st)
    if not st.running:
        raise typer.Exit(3)


@broker_app.command("fetch")
def broker_fetch():
    """Only fetch Kafka's jars from Maven Central into the cache (done by start when missing)."""
    from infra import broker

    settings = _broker_settings()
    with console.status(f"fetching Kafka {broker.KAFKA_VERSION} with Maven ..."):
        libs = broker.fetch_jars(settings)
    out.print(f"Kafka {broker.KAFKA_VERSION} jars in {libs}")


# --------------------------------------------------------------------------- topics

BootstrapOpt = Annotated[str | None, typer.Option(
    "--bootstrap", help="Kafka bootstrap servers (env GIGAPULSE_BOOTSTRAP_SERVERS, default 127.0.0.1:9092).")]


def _bootstrap(value: str | None) -> str:
    from ingestion.settings import KafkaSettings

    return value or KafkaSettings().bootstrap_servers


@topics_app.command("apply")
def topics_apply(bootstrap: BootstrapOpt = None):
    """Create or update every catalog topic (idempotent)."""
    from ingestion.topics import apply_topics

    changes = apply_topics(_bootstrap(bootstrap))
    for c in changes:
        out.print(f"{c.topic:32s} {c.action:17s} partitions={c.partitions}")


@topics_app.command("list")
def topics_list():
    """Print the catalog: partitions, cleanup policy, retention, key and value."""
    from schemas.topics import TOPICS

    table = Table("topic", "partitions", "cleanup", "retention", "key", "value")
    for t in TOPICS:
        retention = "forever" if t.retention_ms < 0 else f"{t.retention_ms / 86_400_000:g} d"
        table.add_row(t.name, str(t.partitions), t.cleanup_policy, retention, t.key, t.value)
    out.print(table)


# --------------------------------------------------------------------------- schemas

@schemas_app.command("export")
def schemas_export(out_dir: Annotated[Path, typer.Option("--out", help="Directory for the .json files.")] =
                   Path("schemas/jsonschema")):
    """Write the JSON Schema of every contract (for producers in other languages)."""
    from schemas.contracts import json_schemas

    out_dir.mkdir(parents=True, exist_ok=True)
    for name, schema in json_schemas().items():
        path = out_dir / f"{name}.v1.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        out.print(f"wrote {path}")


# --------------------------------------------------------------------------- ingestion

class Format(StrEnum):
    frames = "frames"
    json = "json"


def _progress():
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, transient=False, disable=not console.is_terminal and
                    not os.environ.get("GIGAPULSE_PROGRESS"))


def _parse(fn, text: str, what: str):
    try:
        return fn(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=what) from None


def _start_time(text: str | None):
    from datetime import UTC, datetime

    if text is None or text == "now":
        return datetime.now(UTC).replace(microsecond=0)
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not ISO 8601 (e.g. 2026-01-05T06:00:00Z) or 'now'",
                                 param_hint="--start") from None
    if ts.tzinfo is None:
        raise typer.BadParameter("give the start with a UTC offset, e.g. 2026-01-05T06:00:00Z", param_hint="--start")
    return ts.astimezone(UTC)


@app.command()
def simulate(
    plant: Annotated[str, typer.Option(help="reference, legacy, or a plant YAML file.")] = "reference",
    duration: Annotated[str, typer.Option(help="Simulated duration: 90s, 10m, 1h, 2d.")] = "10m",
    speed: Annotated[str, typer.Option(help="max (as fast as possible), realtime, or a factor such as 60.")] = "max",
    seed: Annotated[int, typer.Option(help="Same seed, same data.")] = 42,
    start: Annotated[str | None, typer.Option(help="Simulated start time (ISO 8601 with offset) or 'now' "
                                                   "(default: now, whole seconds).")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="frames (fast path) or json (one message per "
                                                         "reading).")] = Format.frames,
    inject_faults: Annotated[float, typer.Option(min=0.0, max=1.0, help="Probability per tick of sending a "
                                                 "malformed reading (exercises the dead-letter path).")] = 0.0,
    summary_json: Annotated[Path | None, typer.Option(help="Write the run summary as JSON here.")] = None,
    bootstrap: BootstrapOpt = None,
):
    """Run the digital twin of a battery plant and stream it into Kafka.

    Readings go to plant.readings.v1 (frames keyed by gateway), production events to plant.events.v1,
    the asset model to plant.assets.v1, and anything refused at the edge to plant.dlq.v1 with its reason.
    """
    from ingestion.pipeline import parse_duration, parse_speed

    seconds = _parse(parse_duration, duration, "--duration")
    pace = _parse(parse_speed, speed, "--speed")
    t0 = _start_time(start)
    summary = run_simulation(plant, seconds, pace, seed, t0, fmt.value, inject_faults, _bootstrap(bootstrap))
    _print_summary(summary.to_dict())
    if summary_json:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        summary_json.write_text(json.dumps(summary.to_dict(), indent=2, default=str) + "\n")


def run_simulation(plant_name: str, seconds: float, speed: float | None, seed: int, start, fmt: str,
                   fault_rate: float, bootstrap: str):
    """Simulate → validate → produce, with a progress bar; returns the IngestSummary."""
    from ingestion.pipeline import IngestRun, IngestSummary, paced
    from ingestion.producer import PlantProducer
    from ingestion.settings import ProducerSettings
    from ingestion.simulator import PlantSimulator
    from ingestion.validation import EdgeLimits
    from schemas.asset_model import load_plant

    plant = load_plant(plant_name)
    settings = ProducerSettings()
    producer = PlantProducer(bootstrap, settings, client_id=f"gigapulse-sim-{plant.name}")
    limits = EdgeLimits(max_future_s=settings.max_future_s, max_past_s=settings.max_past_s)
    run = IngestRun(plant, producer, seed, start, fmt, settings.frame_max_readings, fault_rate, limits)
    sim = PlantSimulator(plant, seed=seed, start=start)
    summary = IngestSummary(plant=plant.name, seed=seed, simulated_s=seconds)
    wall0 = time.monotonic()
    try:
        summary.assets = run.publish_assets()
        with _progress() as bar:
            task = bar.add_task(f"simulating {plant.name}", total=int(seconds), info="")
            for tick in paced(sim.run(seconds), start, speed):
                run.emit_frames(tick.frames, tick.sim_time)
                run.emit_events(tick.events, tick.sim_time)
                run.maybe_inject_fault(tick.sim_time)
                elapsed = (tick.sim_time - start).total_seconds()
                bar.update(task, completed=min(int(elapsed), int(seconds)),
                           info=f"{producer.stats.readings:,} readings")
            bar.update(task, completed=int(seconds))
    finally:
        stats = producer.close()
    summary.wall_s = time.monotonic() - wall0
    summary.readings = stats.readings
    summary.frames = stats.frames
    summary.single_readings = stats.readings if fmt == "json" else 0
    summary.events = stats.events
    summary.dead_letters = stats.dead_letters
    summary.dead_letters_by_reason = dict(run.dlq)
    summary.failed_sends = stats.failed
    summary.plant_summary = sim.summary.to_dict()
    return summary


def _print_summary(d: dict, title: str = "summary") -> None:
    table = Table(title=title, show_header=False)
    for k, v in d.items():
        if isinstance(v, dict) and any(isinstance(x, dict) for x in v.values()):
            for kk, vv in v.items():  # one level down (the plant's own summary), one row per figure
                if isinstance(vv, dict):
                    vv = ", ".join(f"{a}={_fmt(b)}" for a, b in vv.items()) or "-"
                table.add_row(f"{k}.{kk}", _fmt(vv))
            continue
        if isinstance(v, dict):
            v = ", ".join(f"{kk}={_fmt(vv)}" for kk, vv in v.items()) or "-"
        table.add_row(k, _fmt(v))
    out.print(table)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


@app.command()
def replay(
    path: Annotated[Path, typer.Argument(help="A .csv or .parquet file of readings or production events.")],
    plant: Annotated[str | None, typer.Option(help="Check sensors and units against this plant's asset "
                                                   "model (reference, legacy or a YAML file).")] = None,
    mapping: Annotated[list[str] | None, typer.Option("--map", help="Rename a column: contract_field=column "
                                                      "(repeatable), e.g. --map ts=timestamp.")] = None,
    speed: Annotated[str, typer.Option(help="max, realtime, or a factor relative to the file's own pace.")] = "max",
    fmt: Annotated[Format, typer.Option("--format", help="frames or json.")] = Format.frames,
    summary_json: Annotated[Path | None, typer.Option(help="Write the replay summary as JSON here.")] = None,
    bootstrap: BootstrapOpt = None,
):
    """Stream readings or production events from a CSV or Parquet file into the same topics.

    Columns: sensor_id, ts, value[, quality, unit] for readings; the production-event fields for
    events (parent_ids as a '|'-separated string in CSV). Bad rows go to plant.dlq.v1 with a reason.
    """
    from ingestion.pipeline import parse_speed
    from ingestion.producer import PlantProducer
    from ingestion.replay import Replayer, ReplayError, parse_mapping
    from ingestion.settings import ProducerSettings
    from schemas.asset_model import load_plant

    pace = _parse(parse_speed, speed, "--speed")
    try:
        cols = parse_mapping(mapping or [])
    except ReplayError as exc:
        raise typer.BadParameter(str(exc), param_hint="--map") from None
    if not path.exists():
        raise UserError(f"file not found: {path}")
    sensors = load_plant(plant).by_id if plant else None
    settings = ProducerSettings()
    producer = PlantProducer(_bootstrap(bootstrap), settings, client_id="gigapulse-replay")
    rep = Replayer(producer, sensors, fmt.value, settings.frame_max_readings, pace)
    try:
        with _progress() as bar:
            task = bar.add_task(f"replaying {path.name}", total=None, info="")
            summary = rep.run(path, cols, progress=lambda n: bar.advance(task, n))
    except ReplayError as exc:
        raise UserError(str(exc)) from None
    finally:
        producer.close()
    _print_summary(summary.to_dict(), "replay")
    if summary_json:
        summary_json.write_text(json.dumps(summary.to_dict(), indent=2) + "\n")


# --------------------------------------------------------------------------- stream and warehouse

@app.command()
def stream(
    drain: Annotated[bool, typer.Option(help="Process everything currently in the topics, flush, and exit.")]
    = False,
    plant: Annotated[str | None, typer.Option(help="Also load this asset model (reference, legacy or a YAML "
                                                   "file) besides the plant.assets.v1 topic.")] = None,
    bootstrap: BootstrapOpt = None,
    loglevel: Annotated[str, typer.Option(help="Faust log level: crit, error, warn, info, debug.")] = "warn",
    readings_topic: Annotated[str | None, typer.Option(hidden=True, help="Read readings from this topic "
                                                       "(benchmarks use fresh topics).")] = None,
    events_topic: Annotated[str | None, typer.Option(hidden=True, help="Read events from this topic.")] = None,
    dlq_topic: Annotated[str | None, typer.Option(hidden=True, help="Dead letters go to, and are landed "
                                                  "from, this topic.")] = None,
):
    """Run a stream worker (Faust): validate, enrich, compute features, land everything in the lake.

    Start several to scale out: they share the partitions through the consumer group. Settings:
    GIGAPULSE_DATA_DIR (lake location) and GIGAPULSE_STREAM_* (window_ms, long_window_ms,
    lateness_ms, flush_seconds, flush_rows, microbatch_rows, checkpoints_in_flight, group_id,
    publish_features, log_every_s, session_timeout_s, heartbeat_interval_s, rebalance_timeout_s,
    instance_id). With --loglevel info it logs its rates and intake lag.
    """
    from infra.broker import group_session_bounds
    from schemas.asset_model import load_plant
    from transforms.app import create_app, load_assets, run_worker
    from transforms.settings import DataSettings, StreamSettings
    from transforms.warehouse import write_sensors

    if loglevel not in ("crit", "error", "warn", "info", "debug"):
        raise typer.BadParameter("use crit, error, warn, info or debug", param_hint="--loglevel")
    data = DataSettings()
    settings = StreamSettings()
    servers = _bootstrap(bootstrap)
    bounds = group_session_bounds(servers)
    if bounds and not bounds[0] <= settings.session_timeout_s * 1000 <= bounds[1]:
        raise UserError(f"GIGAPULSE_STREAM_SESSION_TIMEOUT_S={settings.session_timeout_s:g} is outside what the "
                        f"broker accepts ({bounds[0] / 1000:g}–{bounds[1] / 1000:g} s, its "
                        "group.min/max.session.timeout.ms)")
    assets = load_assets(servers)
    if plant:
        assets.update({e.sensor_id: e for e in load_plant(plant).sensors})
    if assets:
        write_sensors(data.lake_root, sorted(assets.values(), key=lambda e: e.sensor_id))
    log.info("stream worker: %d sensors in the asset model, lake at %s", len(assets), data.lake_root)
    overrides = {k: v for k, v in {"readings_topic": readings_topic, "events_topic": events_topic,
                                   "dlq_topic": dlq_topic}.items() if v}
    faust_app = create_app(servers, data.lake_root, settings, assets, drain=drain, **overrides)
    t0 = time.monotonic()
    run_worker(faust_app, loglevel=loglevel)
    st = faust_app.gigapulse_stats
    wall = time.monotonic() - t0
    out.print(f"stream worker done: {st.messages:,} messages, {st.checkpoints:,} checkpoints in {wall:.1f}s; "
              + ", ".join(f"{k}={v:,}" for k, v in sorted(st.rows.items())))


class SqlFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="One SELECT statement over the warehouse views.")],
    fmt: Annotated[SqlFormat, typer.Option("--format", help="table, csv or json.")] = SqlFormat.table,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Bound parameter for each ? in the "
                                                    "query, in order (repeatable).")] = None,
):
    """Answer a read-only SQL query from the DuckDB warehouse (see docs/tables.md)."""
    import csv as csv_mod

    import duckdb

    from transforms.settings import DataSettings
    from transforms.warehouse import ReadOnlyQueryError, build_catalog
    from transforms.warehouse import query as run_query

    data = DataSettings()
    # Views over tables that had no files when the catalog was built are empty placeholders;
    # rebuilding is cheap (views only) and is the one write this command makes.
    build_catalog(data.lake_root, data.db_path)
    try:
        columns, rows = run_query(data.db_path, query, list(param) if param else None)
    except ReadOnlyQueryError as exc:
        raise UserError(str(exc)) from None
    except duckdb.Error as exc:
        raise UserError(f"SQL error: {str(exc).splitlines()[0]}") from None
    if fmt is SqlFormat.json:
        print(json.dumps([dict(zip(columns, r, strict=True)) for r in rows], default=str))
    elif fmt is SqlFormat.csv:
        writer = csv_mod.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        table = Table(*columns)
        for r in rows:
            table.add_row(*(_fmt(v) if v is not None else "" for v in r))
        out.print(table)


@app.command()
def warehouse(
):
    """(Re)build the DuckDB catalog: views over every lake table (the only writer of the file)."""
    from transforms.settings import DataSettings
    from transforms.warehouse import build_catalog

    data = DataSettings()
    views = build_catalog(data.lake_root, data.db_path)
    for name, kind in views.items():
        out.print(f"{name:24s} {kind}")
    out.print(f"catalog: {data.db_path}")


# --------------------------------------------------------------------------- demo

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
    catalog through Dagster (local storage), prints features with SQL, and stops the broker.
    """
    import subprocess
    from datetime import UTC, datetime, timedelta

    from infra import broker
    from ingestion.pipeline import parse_duration
    from ingestion.topics import apply_topics
    from transforms.settings import DataSettings
    from transforms.warehouse import query as run_query

    seconds = _parse(parse_duration, duration, "--duration")
    settings = _broker_settings()
    data = DataSettings()
    was_running = broker.status(settings).running
    with console.status("starting the Kafka broker ..."):
        broker.start(settings)
        apply_topics(settings.bootstrap)
    out.print(f"[bold]1/5[/bold] broker up on {settings.bootstrap} (Kafka {broker.KAFKA_VERSION})")
    try:
        # Each demo run simulates a fresh, later span, so a re-run adds data instead of re-sending old times.
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=2 * seconds)
        for i, plant in enumerate(("reference", "legacy")):
            s = run_simulation(plant, seconds, None, seed + i, start, "frames", 0.05, settings.bootstrap)
            out.print(f"[bold]2/5[/bold] {plant}: {s.readings:,} readings, {s.events:,} events, "
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
        out.print(f"[bold]3/5[/bold] {workers} stream worker(s) drained the topics in {time.monotonic() - t0:.1f}s")
        views = _materialize_catalog()
        out.print(f"[bold]4/5[/bold] Dagster materialized warehouse_catalog: {len(views)} views in {data.db_path}")
        out.print("[bold]5/5[/bold] features from the warehouse (gigapulse sql):")
        for title, q in DEMO_QUERIES:
            columns, rows = run_query(data.db_path, q)
            table = Table(*columns, title=title, title_justify="left")
            for r in rows:
                table.add_row(*(_fmt(v) if v is not None else "" for v in r))
            out.print(table)
    finally:
        if not keep_broker and not was_running:
            broker.stop(settings)
            out.print("broker stopped")


def _materialize_catalog() -> dict:
    """Run the warehouse_catalog job in-process on Dagster's local storage (DAGSTER_HOME, default var/dagster)."""
    import dagster as dg

    from orchestration.definitions import defs
    from transforms.settings import REPO_ROOT

    home = Path(os.environ.get("DAGSTER_HOME") or REPO_ROOT / "var" / "dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    config = home / "dagster.yaml"
    if not config.exists() or not config.read_text().strip():
        config.write_text("telemetry:\n  enabled: false\n")
    for noisy in ("alembic", "dagster"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    with dg.DagsterInstance.get() as instance:
        result = defs.resolve_job_def("warehouse_catalog_job").execute_in_process(instance=instance,
                                                                                   run_config=quiet)
    if not result.success:
        raise UserError("the Dagster run that builds the warehouse catalog failed")
    mat = result.asset_materializations_for_node("warehouse_catalog")[0]
    return mat.metadata["views"].value


# --------------------------------------------------------------------------- benchmarks

RunsOpt = Annotated[int, typer.Option(min=1, help="Repeat each measurement this many times; the report gives "
                                              "the median and the min–max spread.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the simulated plant.")]


@bench_app.command("ingest")
def bench_ingest(
    runs: RunsOpt = 3,
    frames_duration: Annotated[str, typer.Option(help="Simulated time produced as frames per run.")] = "10m",
    json_duration: Annotated[str, typer.Option(help="Simulated time produced as JSON singles per run.")] = "1m",
    memory_durations: Annotated[str, typer.Option(help="Comma-separated simulated durations whose "
                                                       "`gigapulse simulate` peak RSS is measured.")] = "5m,20m",
    seed: SeedOpt = 42,
    out: Annotated[Path, typer.Option(help="JSON report.")] = Path("var/bench/ingest.json"),
):
    """Readings/s from the simulator into Kafka (frames, JSON singles) beside Kafka's ProducerPerformance.

    Runs on a private broker (free ports, temp dir) with fresh topics; also measures the peak RSS of
    `gigapulse simulate` for each of --memory-durations.
    """
    from gigapulse import bench
    from ingestion.pipeline import parse_duration

    memory = tuple(_parse(parse_duration, d, "--memory-durations") for d in memory_durations.split(",") if d.strip())
    opts = bench.IngestOptions(runs=runs, frames_s=_parse(parse_duration, frames_duration, "--frames-duration"),
                               json_s=_parse(parse_duration, json_duration, "--json-duration"), memory_s=memory,
                               seed=seed)
    bench.emit(bench.run_ingest(opts), out)


@bench_app.command("stream")
def bench_stream(
    runs: RunsOpt = 3,
    prefill: Annotated[str, typer.Option(help="Simulated time of the reference plant pre-filled as frames "
                                              "(15m is about 5M readings).")] = "15m",
    quix_readings: Annotated[int, typer.Option(min=0, help="Readings Quix Streams processes per run (a prefix of "
                                                           "the same topic; 0: all of it).")] = 1_000_000,
    quix_variant: Annotated[str, typer.Option(help="key: window by the gateway key with a per-sensor "
                                                   "accumulator; group_by: re-key rows by sensor.")] = "key",
    profile: Annotated[Path | None, typer.Option(help="Also run our worker once under cProfile (untimed) and "
                                                      "write the profile here.")] = None,
    seed: SeedOpt = 42,
    out: Annotated[Path, typer.Option(help="JSON report.")] = Path("var/bench/stream.json"),
):
    """Readings/s from a pre-filled topic to features in Parquet: ours, Quix Streams, an aiokafka ceiling."""
    from gigapulse import bench
    from ingestion.pipeline import parse_duration

    if quix_variant not in ("key", "group_by"):
        raise typer.BadParameter("use key or group_by", param_hint="--quix-variant")
    opts = bench.StreamOptions(runs=runs, prefill_s=_parse(parse_duration, prefill, "--prefill"),
                               quix_readings=quix_readings, quix_variant=quix_variant, profile=profile, seed=seed)
    bench.emit(bench.run_stream(opts), out)


@bench_app.command("freshness")
def bench_freshness(
    runs: RunsOpt = 3,
    rate: Annotated[int, typer.Option(min=1, help="Readings per second produced.")] = 20_000,
    duration: Annotated[str, typer.Option(help="Measured time per run (after the warm-up).")] = "60s",
    poll: Annotated[float, typer.Option(min=0.01, help="Seconds between DuckDB polls.")] = 0.1,
    profile: Annotated[Path | None, typer.Option(help="Also run once with the worker under cProfile (not in "
                                                      "the figures) and write the profile here.")] = None,
    seed: SeedOpt = 42,
    out: Annotated[Path, typer.Option(help="JSON report.")] = Path("var/bench/freshness.json"),
):
    """p50/p99 seconds from a reading's timestamp to its visibility in a DuckDB query, at a fixed rate."""
    from gigapulse import bench
    from ingestion.pipeline import parse_duration

    opts = bench.FreshnessOptions(runs=runs, rate=rate, duration_s=_parse(parse_duration, duration, "--duration"),
                                  poll_s=poll, seed=seed, profile=profile)
    bench.emit(bench.run_freshness(opts), out)


@bench_app.command("recovery")
def bench_recovery(
    runs: RunsOpt = 3,
    rate: Annotated[int, typer.Option(min=1, help="Readings per second produced.")] = 20_000,
    instance_ids: Annotated[bool, typer.Option("--instance-ids/--no-instance-ids", help="Give each worker a "
                                               "static group instance id, as docker-compose.yml does.")] = True,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds after the kill before a run counts as not "
                                                       "recovered.")] = 90.0,
    seed: SeedOpt = 42,
    out: Annotated[Path, typer.Option(help="JSON report.")] = Path("var/bench/recovery.json"),
):
    """Seconds from a worker's kill -9 until freshness is back under 2 s: restarted at once, or taken over."""
    from gigapulse import bench

    opts = bench.RecoveryOptions(runs=runs, rate=rate, instance_ids=instance_ids, timeout_s=timeout, seed=seed)
    bench.emit(bench.run_recovery(opts), out)


# --------------------------------------------------------------------------- entry point

def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or exc.title
        return f"invalid setting {exc.title}.{loc}: {err['msg']}"
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app and turn known errors into one line."""
    from infra.broker import BrokerError
    from schemas.asset_model import AssetModelError

    command = typer.main.get_command(app)
    try:
        rc = command.main(args=argv, prog_name="gigapulse", standalone_mode=False)
    except click_exc.NoArgsIsHelpError as exc:
        print(exc.ctx.get_help() if exc.ctx else "see 'gigapulse --help'", file=sys.stderr)
        sys.exit(2)
    except click_exc.UsageError as exc:
        print(f"gigapulse: error: {exc.format_message()} (see 'gigapulse {_cmd_path(exc)}--help')",
              file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("gigapulse: aborted", file=sys.stderr)
        sys.exit(130)
    except click_exc.ClickException as exc:
        print(f"gigapulse: error: {exc.format_message()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except (UserError, BrokerError, AssetModelError, ValidationError, FileNotFoundError,
            PermissionError) as exc:
        if os.environ.get("GIGAPULSE_DEBUG"):
            raise
        print(f"gigapulse: error: {_one_line(exc)}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("gigapulse: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("GIGAPULSE_DEBUG"):
            raise
        print(f"gigapulse: error: {type(exc).__name__}: {_one_line(exc)} (GIGAPULSE_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)


def _cmd_path(exc: click_exc.UsageError) -> str:
    ctx = exc.ctx
    if ctx is None:
        return ""
    parts = ctx.command_path.split()[1:]
    return " ".join(parts) + " " if parts else ""


if __name__ == "__main__":
    main()
