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
from pathlib import Path
from typing import Annotated

import typer
from typer._click import exceptions as click_exc  # typer vendors click; its errors live here
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

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
