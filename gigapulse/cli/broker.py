"""``gigapulse broker``: a local Kafka (KRaft) broker, or a 3-node cluster of them on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gigapulse.cli.common import console, out

broker_app = typer.Typer(help="Run a local Apache Kafka (KRaft) broker, or a 3-node cluster (--nodes 3).",
                         no_args_is_help=True)


def _broker_settings(port: int | None = None, controller_port: int | None = None,
                     data_dir: Path | None = None, nodes: int | None = None):
    from infra.broker import BrokerSettings

    overrides = {k: v for k, v in {"port": port, "controller_port": controller_port,
                                   "data_dir": data_dir, "nodes": nodes}.items() if v is not None}
    return BrokerSettings(**overrides)


PortOpt = Annotated[int | None, typer.Option(help="Client port (env GIGAPULSE_BROKER_PORT, default 9092).")]
CtlPortOpt = Annotated[int | None, typer.Option(help="Controller port (env GIGAPULSE_BROKER_CONTROLLER_PORT, "
                                                     "default 9093).")]
NodesOpt = Annotated[int | None, typer.Option(min=1, max=9, help="Nodes (broker+controller each): 1, or 3 for a "
                                                              "cluster with RF 3 and min ISR 2 (env "
                                                              "GIGAPULSE_BROKER_NODES, default 1).")]
DataDirOpt = Annotated[Path | None, typer.Option(help="Broker data dir (env GIGAPULSE_BROKER_DATA_DIR, "
                                                      "default var/kafka).")]


def _print_status(st) -> None:
    state = "[green]running[/green]" if st.running else "[red]stopped[/red]"
    out.print(f"broker {state}  pid={st.pid or '-'}  bootstrap={st.bootstrap}  "
              f"controller_port={st.controller_port}  data_dir={st.data_dir}")
    if len(st.nodes) > 1:
        for n in st.nodes:
            up = "[green]up[/green]" if n.pid else "[red]down[/red]"
            out.print(f"  node {n.node_id} {up}  pid={n.pid or '-'}  port={n.port}  "
                      f"controller_port={n.controller_port}")
    if st.topics:
        out.print("topics: " + ", ".join(st.topics))


@broker_app.command("start")
def broker_start(port: PortOpt = None, controller_port: CtlPortOpt = None, data_dir: DataDirOpt = None,
                 nodes: NodesOpt = None, apply_catalog: Annotated[bool, typer.Option("--topics/--no-topics",
                                                             help="Apply the topic catalog once up.")] = True):
    """Start the broker (fetching Kafka from Maven Central on first use); harmless if already running."""
    from infra import broker, security

    settings = _broker_settings(port, controller_port, data_dir, nodes)
    sec = security.BrokerSecuritySettings()  # GIGAPULSE_BROKER_SECURITY and the role passwords (docs/security.md)
    with console.status(f"starting Kafka {broker.KAFKA_VERSION} on {settings.bootstrap} ..."):
        st = broker.start(settings, sec)
        if apply_catalog:
            broker.apply_catalog(settings, sec)
            st = broker.status(settings, sec)
    _print_status(st)


@broker_app.command("stop")
def broker_stop(data_dir: DataDirOpt = None):
    """Stop the broker (every node of a cluster) started from this data dir (SIGTERM, then SIGKILL after 30 s)."""
    from infra import broker

    stopped = broker.stop(broker.as_recorded(_broker_settings(data_dir=data_dir)))
    out.print("broker stopped" if stopped else "broker was not running")


@broker_app.command("status")
def broker_status(data_dir: DataDirOpt = None, port: PortOpt = None, controller_port: CtlPortOpt = None):
    """Report pid, ports and topics; exit code 3 when the broker is not running."""
    from infra import broker

    st = broker.status(broker.as_recorded(_broker_settings(port, controller_port, data_dir)))
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
