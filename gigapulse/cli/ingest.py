"""``gigapulse simulate`` and ``gigapulse replay``: data into Kafka."""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gigapulse.cli.common import (
    BootstrapOpt,
    UserError,
    _bootstrap,
    _fmt,
    _parse,
    _progress,
    _reachable,
    app,
    console,
    out,
)


class MqttFormat(StrEnum):
    sparkplug = "sparkplug"
    uns = "uns"


class Format(StrEnum):
    frames = "frames"
    json = "json"



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
    seed: Annotated[int, typer.Option(min=0, help="Same seed (and start), same data and unit ids.")] = 42,
    start: Annotated[str | None, typer.Option(help="Simulated start time (ISO 8601 with offset) or 'now' "
                                                   "(default: now, whole seconds).")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="frames (fast path) or json (one message per "
                                                         "reading).")] = Format.frames,
    inject_faults: Annotated[float, typer.Option(min=0.0, max=1.0, help="Probability per tick of sending a "
                                                 "malformed reading (exercises the dead-letter path).")] = 0.0,
    summary_json: Annotated[Path | None, typer.Option(help="Write the run summary as JSON here.")] = None,
    truth_out: Annotated[Path | None, typer.Option(help="Also write each cell's true probability of ending "
                                                        "scrapped or graded C, as it leaves filling, to this "
                                                        "Parquet file: ground truth for evaluating predictive "
                                                        "quality, never sent to Kafka.")] = None,
    bootstrap: BootstrapOpt = None,
    serve: Annotated[str | None, typer.Option(help="Serve the plant over a plant protocol instead of sending "
                                                   "to Kafka: " + ", ".join(SERVERS) + " (real time, until "
                                                   "--duration ends or Ctrl-C; docs/connectors.md).")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65_535, help="Port of --serve (default: the protocol's "
                                                                     "own, see docs/connectors.md).")] = None,
    host: Annotated[str, typer.Option(help="Address --serve binds to (with --serve mqtt: the broker's host, "
                                           "which it publishes into).")] = "127.0.0.1",
    mqtt_format: Annotated[MqttFormat, typer.Option(help="With --serve mqtt: Sparkplug B edge nodes (births, "
                                                         "aliases, DDATA) or Unified Namespace JSON.")]
    = MqttFormat.sparkplug,
):
    """Run the digital twin of a battery plant and stream it into Kafka.

    Readings go to plant.readings.v1 (frames keyed by gateway), production events to plant.events.v1,
    the asset model to plant.assets.v1, and anything refused at the edge to plant.dlq.v1 with its reason.
    With --serve, nothing goes to Kafka: the plant's sensors are served over that protocol at their
    addresses in the asset model, for a bridge to read (`gigapulse bridge ...`).
    """
    from ingestion.pipeline import parse_duration, parse_speed

    seconds = _parse(parse_duration, duration, "--duration")
    pace = _parse(parse_speed, speed, "--speed")
    t0 = _start_time(start)
    if serve is not None:
        server = SERVERS.get(serve)
        if server is None:
            raise typer.BadParameter(f"{serve!r} is not one of {', '.join(SERVERS)}", param_hint="--serve")
        from schemas.addresses import SERVE_PORTS

        if serve == "mqtt":
            server = functools.partial(_serve_mqtt, fmt=mqtt_format.value)
        server(plant, host, port or SERVE_PORTS[serve], seed, t0, seconds)
        return
    if truth_out is not None:
        _check_writable(truth_out, "--truth-out")
    summary = run_simulation(plant, seconds, pace, seed, t0, fmt.value, inject_faults, _bootstrap(bootstrap),
                             truth_out=truth_out, wall_clock=start in (None, "now"))
    _print_summary(summary.to_dict())
    if truth_out:
        out.print(f"ground truth of {summary.truth_cells:,} cells at the gate written to {truth_out}")
    if summary_json:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        summary_json.write_text(json.dumps(summary.to_dict(), indent=2, default=str) + "\n")


def _serve_modbus(plant_name: str, host: str, port: int, seed: int, start, seconds: float) -> None:
    """The plant's registers over Modbus TCP (``--serve modbus``), until the duration ends or Ctrl-C."""
    import threading

    from ingestion.bridges.modbus_server import serve_plant
    from schemas.asset_model import load_plant

    plant = load_plant(plant_name)
    stop = threading.Event()
    console.print(f"serving {plant.name} over Modbus TCP on {host}:{port} for {seconds:g} s (Ctrl-C stops)")
    try:
        counts = serve_plant(plant, host, port, seed, start, seconds, stop)
    except OSError as exc:
        raise UserError(f"cannot serve Modbus TCP on {host}:{port}: {exc.strerror or exc}") from None
    except KeyboardInterrupt:
        stop.set()
        counts = None
    if counts:
        out.print(f"served {counts['ticks']:,} ticks ({counts['values']:,} values), {counts['reads']:,} reads")


def _serve_mqtt(plant_name: str, host: str, port: int, seed: int, start, seconds: float,
                fmt: str = "sparkplug") -> None:
    """The plant published into an MQTT broker (``--serve mqtt``): not a broker itself, a plant's edge."""
    from ingestion.bridges.mqtt_server import serve_mqtt
    from schemas.asset_model import load_plant

    plant = load_plant(plant_name)
    what = "Sparkplug B edge nodes" if fmt == "sparkplug" else "UNS JSON"
    try:
        stats = serve_mqtt(plant, seconds, 1.0, seed, start, host, port, mode=fmt, on_connected=lambda: console.print(
            f"publishing {plant.name} as {what} into the MQTT broker at {host}:{port} for {seconds:g} s (Ctrl-C stops)"))
    except (OSError, ConnectionError) as exc:
        raise UserError(f"no MQTT broker at {host}:{port} ({exc.strerror or exc}): --serve mqtt publishes into a "
                        "broker, it is not one; start Mosquitto (docs/connectors.md)") from None
    out.print(f"published {stats.readings:,} values in {stats.messages:,} messages"
              + (f", {stats.rebirths:,} rebirths on request" if stats.rebirths else ""))


def _serve_opcua(plant_name: str, host: str, port: int, seed: int, start, seconds: float) -> None:
    """The plant's OPC UA sensors as variables (``--serve opcua``), until the duration ends or Ctrl-C.

    Security from ``GIGAPULSE_OPCUA_SERVE_SECURITY_MODES`` and ``GIGAPULSE_OPCUA_SERVE_CERT_DIR``
    (:class:`ingestion.bridges.opcua_server.OpcUaServeSettings`).
    """
    import logging

    from ingestion.bridges.opcua_server import serve_plant

    logging.getLogger("asyncua").setLevel(logging.WARNING)  # asyncua logs every request at INFO
    console.print(f"serving {plant_name} over OPC UA on opc.tcp://{host}:{port}/gigapulse/ for {seconds:g} s "
                  "(Ctrl-C stops)")
    try:
        samples = serve_plant(plant_name, host, port, seed, start, seconds)
    except OSError as exc:
        raise UserError(f"cannot serve OPC UA on {host}:{port}: {exc.strerror or exc}") from None
    except ValueError as exc:  # security settings that do not fit together
        raise UserError(f"--serve opcua: {exc}") from None
    out.print(f"served {samples:,} samples")


#: ``simulate --serve``: protocol -> server function (plant name, host, port, seed, start, seconds).
SERVERS: dict[str, Callable[[str, str, int, int, datetime, float], None]] = {"modbus": _serve_modbus,
                                                                            "mqtt": _serve_mqtt,
                                                                            "opcua": _serve_opcua}


def _check_writable(path: Path, option: str) -> None:
    """Refuse, before anything is sent, an output file whose folder cannot be made or written."""
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{option} {path}: cannot create its folder ({exc.strerror or exc})") from None
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder; give a file name (the ground truth is written there)")
    if not os.access(parent, os.W_OK):
        raise UserError(f"{option} {path}: its folder is not writable")


def run_simulation(plant_name: str, seconds: float, speed: float | None, seed: int, start, fmt: str,
                   fault_rate: float, bootstrap: str, truth_out: Path | None = None, wall_clock: bool = False):
    """Simulate → validate → produce, with a progress bar; returns the IngestSummary.

    With ``truth_out``, the simulator also records each cell's truth at the gate, written there as
    Parquet once the run ends (:mod:`ingestion.simulator.truth`). ``wall_clock``: ``start`` is now,
    so paced ticks go out when the wall clock reaches their simulated time.
    """
    from ingestion.pipeline import IngestRun, IngestSummary, paced
    from ingestion.producer import PlantProducer
    from ingestion.settings import ProducerSettings
    from ingestion.simulator import PlantSimulator
    from ingestion.validation import EdgeLimits
    from schemas.asset_model import load_plant

    plant = load_plant(plant_name)
    settings = ProducerSettings()
    _reachable(bootstrap)
    producer = PlantProducer(bootstrap, settings, client_id=f"gigapulse-sim-{plant.name}")
    limits = EdgeLimits(max_future_s=settings.max_future_s, max_past_s=settings.max_past_s)
    run = IngestRun(plant, producer, seed, start, fmt, settings.frame_max_readings, fault_rate, limits)
    sim = PlantSimulator(plant, seed=seed, start=start, record_truth=truth_out is not None)
    summary = IngestSummary(plant=plant.name, seed=seed, simulated_s=seconds)
    wall0 = time.monotonic()
    try:
        summary.assets = run.publish_assets()
        with _progress() as bar:
            task = bar.add_task(f"simulating {plant.name}", total=int(seconds), info="")
            behind = max(0.0, time.time() - start.timestamp()) if wall_clock else 0.0
            for tick in paced(sim.run(seconds), start, speed, behind_s=behind):
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
    if truth_out is not None:
        from ingestion.simulator.truth import write_truth

        summary.truth_cells = write_truth(truth_out, sim.truth_rows)
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
    from ingestion.replay import Replayer, ReplayError, parse_mapping, probe
    from ingestion.settings import ProducerSettings
    from schemas.asset_model import load_plant

    pace = _parse(parse_speed, speed, "--speed")
    try:
        cols = parse_mapping(mapping or [])
    except ReplayError as exc:
        raise typer.BadParameter(str(exc), param_hint="--map") from None
    if not path.exists():
        raise UserError(f"file not found: {path}")
    try:
        probe(path, cols)  # a file that cannot be replayed is refused before connecting, broker or not
    except ReplayError as exc:
        raise UserError(str(exc)) from None
    sensors = load_plant(plant).by_id if plant else None
    settings = ProducerSettings()
    servers = _bootstrap(bootstrap)
    _reachable(servers)
    producer = PlantProducer(servers, settings, client_id="gigapulse-replay")
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
