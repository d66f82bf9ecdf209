"""``gigapulse bridge``: factory connectors from plant protocols into Kafka, and their configurations.

Each protocol adds one command that loads its configuration with :func:`_load` and hands a runner to
:func:`run_bridge` (sink, signals, duration and summary are shared), and one entry in
:data:`ingestion.bridges.config.GENERATORS` for ``gigapulse bridge config``.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from gigapulse.cli.common import UserError, _parse, console, out

bridge_app = typer.Typer(help="Factory connectors: Modbus TCP, OPC UA and MQTT into Kafka (docs/connectors.md).",
                         no_args_is_help=True)


class Protocol(StrEnum):
    modbus = "modbus"
    opcua = "opcua"
    mqtt = "mqtt"
    sparkplug = "sparkplug"


#: The asset model's ``protocol`` of the sensors each configuration covers (Sparkplug B rides on MQTT).
ASSET_PROTOCOL = {"modbus": "modbus", "opcua": "opcua", "mqtt": "mqtt", "sparkplug": "mqtt"}

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="The bridge's YAML configuration "
                                         "(`gigapulse bridge config` writes one).")]
DurationOpt = Annotated[str | None, typer.Option(help="Stop after this long (90s, 10m); default: run until "
                                                      "interrupted (Ctrl-C, SIGTERM).")]


def _load(path: Path, model):
    """The validated configuration, or one line naming the file and the field."""
    from ingestion.bridges.config import BridgeConfigError, load_config

    try:
        return load_config(path, model)
    except BridgeConfigError as exc:
        raise UserError(str(exc)) from None


Runner = Callable[[Any, Any, threading.Event], None]


def run_bridge(kind: str, config, duration: str | None, runner: Runner) -> dict[str, int]:
    """Open the sink of ``config``'s plant, run ``runner(config, sink, stop)`` until ``stop`` is set
    (SIGINT, SIGTERM, ``duration`` elapsed, or the runner returning), close the sink and print its counters.

    The runner blocks while it bridges and returns soon after ``stop`` is set; what it read is flushed and,
    if Kafka is up, acknowledged before the command ends (the rest stays in the disk buffer).
    """
    from ingestion.bridges.settings import BridgeSettings
    from ingestion.bridges.sink import BridgeSink
    from ingestion.pipeline import parse_duration
    from ingestion.security import active
    from schemas.asset_model import load_plant

    seconds = _parse(parse_duration, duration, "--duration") if duration else None
    plant = load_plant(config.plant)
    settings = BridgeSettings()
    active()  # the Kafka credentials (GIGAPULSE_KAFKA_*), read now: a bad one is one line before anything runs
    name = config.bridge_name(kind)
    sink = BridgeSink.open(settings, plant, name)
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    timer = threading.Timer(seconds, stop.set) if seconds else None
    if timer:
        timer.daemon = True
        timer.start()
    console.print(f"bridge {name}: {kind} into Kafka at {settings.bootstrap()} (buffer {settings.buffer_path(name)})")
    try:
        runner(config, sink, stop)
    finally:
        stop.set()
        if timer:
            timer.cancel()
        stats = sink.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    counters = stats.to_dict()
    out.print(f"bridge {name}: " + ", ".join(f"{k} {v:,}" for k, v in counters.items()))
    return counters


@bridge_app.command("health")
def health_cmd(
    port: Annotated[int | None, typer.Option(min=1, max=65_535, help="The bridge's health port (env "
                                                                   "GIGAPULSE_BRIDGE_HEALTH_PORT).")] = None,
    host: Annotated[str, typer.Option(help="Where the bridge runs.")] = "127.0.0.1",
    live: Annotated[bool, typer.Option("--live", help="Only check liveness, not readiness (Kafka taking data).")]
    = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole /status document.")] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait for the answer.")] = 5.0,
):
    """Ask a bridge's health endpoint; exit 0 if it is ready (or live), 1 if not. One line: state and counters."""
    import json

    from gigapulse.cli.common import fetch_status
    from ingestion.bridges.settings import BridgeSettings
    from ingestion.bridges.sink import summary_line

    port = port or BridgeSettings().health_port
    if port is None:
        raise UserError("no health port: give --port or set GIGAPULSE_BRIDGE_HEALTH_PORT (as the bridge has it)")
    url, doc = fetch_status(host, port, "bridge", timeout)
    if "bridge" not in doc:
        raise UserError(f"{url} is not a bridge's health endpoint (a stream worker's? see `gigapulse health`)")
    out.print(json.dumps(doc, indent=2) if as_json else summary_line(doc), markup=False, highlight=False)
    if not (doc.get("live") if live else doc.get("ready")):
        raise typer.Exit(1)


@bridge_app.command("config")
def config_cmd(
    plant: Annotated[str, typer.Option(help="reference, legacy, or a plant YAML file.")] = "reference",
    protocol: Annotated[Protocol, typer.Option(help="Which bridge the configuration is for.")] = Protocol.modbus,
    all_sensors: Annotated[bool, typer.Option("--all-sensors", help="Every sensor of the plant, not only those "
                                              "whose asset-model protocol is this one.")] = False,
    out_file: Annotated[Path | None, typer.Option("--out", help="Write the YAML here (default: stdout).")] = None,
):
    """Write a bridge configuration for a plant from its asset model (addresses: docs/connectors.md)."""
    from ingestion.bridges.config import GENERATORS, dump_config
    from schemas.asset_model import load_plant

    entry = GENERATORS.get(protocol.value)
    if entry is None:
        raise UserError(f"no configuration generator for {protocol.value} yet; known: {', '.join(GENERATORS)}")
    generate, model = entry
    p = load_plant(plant)
    wanted = ASSET_PROTOCOL[protocol.value]
    sensors = [e for e in p.sensors if all_sensors or e.protocol == wanted]
    if not sensors:
        raise UserError(f"plant {p.name} has no sensor with protocol {wanted}; use --all-sensors to bridge all "
                        f"{len(p.sensors):,}")
    config = model.model_validate(generate(p, sensors, plant))
    text = f"# gigapulse bridge {protocol.value} for plant {p.name}: {len(sensors):,} sensors\n" + dump_config(config)
    if out_file is None:
        out.print(text, end="", markup=False, highlight=False)
        return
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(text)
    console.print(f"{len(sensors):,} sensors of {p.name} over {protocol.value} written to {out_file}")
@bridge_app.command("modbus")
def modbus_cmd(config: ConfigOpt, duration: DurationOpt = None):
    """Poll a Modbus TCP server's registers into Kafka; a failed poll is a gap dead letter, never a value."""
    from ingestion.bridges.config import ModbusConfig
    from ingestion.bridges.modbus import run_modbus

    run_bridge("modbus", _load(config, ModbusConfig), duration, run_modbus)


@bridge_app.command("mqtt")
def mqtt_cmd(config: ConfigOpt, duration: DurationOpt = None):
    """Subscribe to an MQTT broker (Unified Namespace JSON, Sparkplug B edge nodes) and bridge into Kafka."""
    from ingestion.bridges.config import BridgeConfigError, MqttConfig
    from ingestion.bridges.mqtt import broker_password, run_mqtt

    cfg = _load(config, MqttConfig)
    try:
        password = broker_password(cfg)  # before the sink opens: an unreadable secret is one line, not a run
    except BridgeConfigError as exc:
        raise UserError(f"{config}: {exc}") from None

    def runner(cfg, sink, stop):
        run_mqtt(cfg, sink, stop, password,
                 on_ready=lambda filters: console.print(f"subscribed to {', '.join(filters)}"))

    run_bridge("mqtt", cfg, duration, runner)


@bridge_app.command("opcua")
def opcua_cmd(config: ConfigOpt, duration: DurationOpt = None):
    """Subscribe to an OPC UA server's sensor variables into Kafka (statuses become quality; a lost session
    marks its sensors bad until they are back)."""
    from ingestion.bridges.config import BridgeConfigError, OpcUaConfig
    from ingestion.bridges.opcua import read_credentials, run_opcua

    cfg = _load(config, OpcUaConfig)
    try:
        read_credentials(cfg)  # before the sink opens: a missing variable is a one-line error, not a run
        run_bridge("opcua", cfg, duration, run_opcua)
    except BridgeConfigError as exc:  # a server that refuses us, an unset credential variable
        raise UserError(f"{config}: {exc}") from None


@bridge_app.command("certs")
def certs_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the certificates and keys (created).")],
    host: Annotated[list[str] | None, typer.Option("--host", help="Host name or address the server is reached "
                                                   "at, for the certificates' SubjectAltName (repeatable; "
                                                   "default localhost and 127.0.0.1).")] = None,
    days: Annotated[int, typer.Option(min=1, max=3650, help="Validity in days.")] = 365,
):
    """Self-signed OPC UA application certificates: a server pair, a bridge pair, and a trusted folder for
    each side (Sign and SignAndEncrypt with Basic256Sha256; docs/connectors.md)."""
    from ingestion.bridges.certs import write_server_and_client

    hosts = tuple(host) if host else ("localhost", "127.0.0.1")
    try:
        server, client = write_server_and_client(out_dir, hosts, days)
    except OSError as exc:
        raise UserError(f"--out {out_dir}: {exc.strerror or exc}") from None
    out.print(f"server: {server.cert} + {server.key} ({server.application_uri})")
    out.print(f"bridge: {client.cert} + {client.key} ({client.application_uri})")
    out.print(f"trusted: {out_dir / 'trusted-clients'} (for the server), {out_dir / 'trusted-servers'} (for the bridge)")
