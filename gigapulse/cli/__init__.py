"""The one front door: ``gigapulse <command>``.

Every docker-compose service built from the gigapulse image runs one of these commands, so what the
tests exercise is what the stack runs. Errors a user can fix (a bad argument, a bad setting, a
missing tool, an unknown plant) are printed as one line on stderr with exit code 2 (usage) or 1,
never as a traceback; ``GIGAPULSE_DEBUG=1`` shows the traceback for developers.

The commands live in one module per section (``common``, ``broker``, ``topics``, ``ingest``, ``stream``,
``rollup``, ``demo``, ``benchmarks``); importing them here registers every command, in the order ``--help``
lists them (``rollup`` is registered below, by name, so it can move into a group). Heavy modules (Kafka clients, Faust, DuckDB, Dagster) are imported inside the commands.
"""

from __future__ import annotations

import os
import sys

import typer
from pydantic import ValidationError
from typer._click import exceptions as click_exc  # typer vendors click; its errors live here

# isort: off
# The sections in the order ``gigapulse --help`` lists their commands (typer keeps definition order).
from gigapulse.cli.common import (
    UserError,
    _closed_client_close_race,
    _closed_client_refresh,
    _OutageThrottle,
    _routine_to_info,
    _setup_logging,
    app,
    console,
    log,
    out,
)
from gigapulse.cli.broker import broker_app
from gigapulse.cli.topics import schemas_app, topics_app
from gigapulse.cli.ingest import replay, run_simulation, simulate
from gigapulse.cli.stream import health, sql, stream, warehouse
from gigapulse.cli.lake import lake_app
from gigapulse.cli.rollup import rollup
from gigapulse.cli.demo import DEMO_QUERIES, demo
from gigapulse.cli.benchmarks import bench_app
# isort: on
from orchestration.cli import jobs_app

lake_app.command(name="rollup")(rollup)
app.add_typer(broker_app, name="broker")
app.add_typer(topics_app, name="topics")
app.add_typer(schemas_app, name="schemas")
app.add_typer(lake_app, name="lake")
app.add_typer(bench_app, name="bench")
app.add_typer(jobs_app, name="jobs")

__all__ = ["DEMO_QUERIES", "UserError", "_OutageThrottle", "_closed_client_close_race", "_closed_client_refresh",
           "_routine_to_info", "_setup_logging", "app", "bench_app", "broker_app", "console", "demo", "health",
           "jobs_app", "lake_app", "log", "main", "out", "replay", "rollup", "run_simulation", "schemas_app",
           "simulate", "sql", "stream", "topics_app", "warehouse"]


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
    from ingestion.reachability import BootstrapError, KafkaUnreachable
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
            PermissionError, KafkaUnreachable, BootstrapError) as exc:
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
