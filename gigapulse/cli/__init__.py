"""The one front door: ``gigapulse <command>``.

Every docker-compose service built from the gigapulse image runs one of these commands, so what the
tests exercise is what the stack runs. Errors a user can fix (a bad argument, a bad setting, a
missing tool, an unknown plant) are printed as one line on stderr with exit code 2 (usage) or 1,
never as a traceback; ``GIGAPULSE_DEBUG=1`` shows the traceback for developers.

The commands live in one module per section (``common``, ``broker``, ``topics``, ``ingest``, ``bridge``, ``stream``,
``sql``, ``report``, ``models``, ``lake``, ``rollup``, ``demo``, ``benchmarks``). :func:`main` imports only
the section the command line names, so ``gigapulse sql 'SELECT 1'`` starts in a fraction of a second; ``--help`` and ``from
gigapulse.cli import app`` import them all, in the order ``--help`` lists them (``rollup`` is registered
under ``lake`` by name, so it can move into another group). Heavy modules (Kafka clients, Faust, DuckDB,
Dagster) are imported inside the commands.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import typer
from typer._click import exceptions as click_exc  # typer vendors click; its errors live here

from gigapulse.cli import common
from gigapulse.cli.common import (
    UserError,
    _closed_client_close_race,
    _closed_client_refresh,
    _OutageThrottle,
    _routine_to_info,
    _setup_logging,
    console,
    log,
    out,
)

#: The sections in the order ``gigapulse --help`` lists their commands (typer keeps definition order):
#: module -> (command or group name, the module's attribute holding it: None for a plain command).
_SECTIONS: dict[str, tuple[tuple[str, str | None], ...]] = {
    "gigapulse.cli.broker": (("broker", "broker_app"),),
    "gigapulse.cli.topics": (("topics", "topics_app"), ("schemas", "schemas_app")),
    "gigapulse.cli.ingest": (("simulate", None), ("replay", None)),
    "gigapulse.cli.bridge": (("bridge", "bridge_app"),),
    "gigapulse.cli.stream": (("stream", None), ("score", None), ("health", None), ("warehouse", None)),
    "gigapulse.cli.sql": (("sql", None),),
    "gigapulse.cli.report": (("report", None),),
    "gigapulse.cli.models": (("models", "models_app"),),
    "gigapulse.cli.lake": (("lake", "lake_app"),),
    "gigapulse.cli.demo": (("demo", None),),
    "gigapulse.cli.benchmarks": (("bench", "bench_app"),),
    "orchestration.cli": (("jobs", "jobs_app"),),
}
_MODULE_OF_COMMAND = {name: module for module, entries in _SECTIONS.items() for name, _ in entries}
#: Names importable from here, and the section module that defines each.
_LAZY = {
    "DEMO_QUERIES": "gigapulse.cli.demo", "demo": "gigapulse.cli.demo",
    "bench_app": "gigapulse.cli.benchmarks", "bridge_app": "gigapulse.cli.bridge", "broker_app": "gigapulse.cli.broker",
    "health": "gigapulse.cli.stream", "stream": "gigapulse.cli.stream", "score": "gigapulse.cli.stream", "warehouse": "gigapulse.cli.stream",
    "jobs_app": "orchestration.cli", "replay": "gigapulse.cli.ingest", "run_simulation": "gigapulse.cli.ingest",
    "simulate": "gigapulse.cli.ingest", "schemas_app": "gigapulse.cli.topics", "topics_app": "gigapulse.cli.topics",
    "sql": "gigapulse.cli.sql", "lake_app": "gigapulse.cli.lake", "rollup": "gigapulse.cli.rollup",
    "report": "gigapulse.cli.report", "models_app": "gigapulse.cli.models",
}
_loaded: set[str] = set()

__all__ = ["DEMO_QUERIES", "UserError", "_OutageThrottle", "_closed_client_close_race", "_closed_client_refresh",
           "_routine_to_info", "_setup_logging", "app", "bench_app", "bridge_app", "broker_app", "console", "demo", "health",
           "jobs_app", "lake_app", "log", "main", "models_app", "out", "replay", "report", "rollup", "run_simulation",
           "schemas_app", "score", "simulate", "sql", "stream", "topics_app", "warehouse"]


def _load(module: str) -> None:
    """Import one section, registering its commands on the app (groups are added here)."""
    if module in _loaded:
        return
    mod = importlib.import_module(module)
    if module == "gigapulse.cli.lake":
        from gigapulse.cli.rollup import rollup

        mod.lake_app.command(name="rollup")(rollup)
    for name, attr in _SECTIONS[module]:
        if attr is not None:
            common.app.add_typer(getattr(mod, attr), name=name)
    _loaded.add(module)


def _load_all() -> typer.Typer:
    for module in _SECTIONS:
        _load(module)
    return common.app


def _load_for(argv: list[str]) -> typer.Typer:
    """Import only the section the command line names (``gigapulse sql ...`` does not pay for Kafka
    clients, pydantic or Dagster's launcher); everything for ``--help``, a typo or no command."""
    words = [a for a in argv if not a.startswith("-")]
    module = _MODULE_OF_COMMAND.get(words[0]) if words else None
    if module is None or len(_loaded) == len(_SECTIONS):
        return _load_all()
    _load(module)
    return common.app


def __getattr__(name: str) -> Any:
    """``from gigapulse.cli import app, sql, ...``: the app with every command, as before the lazy sections."""
    if name == "app":
        return _load_all()
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    _load_all()
    return getattr(sys.modules[module], name)


# --------------------------------------------------------------------------- entry point

#: Errors a user can act on, printed as one line without their type: (module, class). Looked up only in
#: modules already imported, since an exception whose class was never imported cannot have been raised.
_USER_ERRORS = (("infra.broker", "BrokerError"), ("schemas.asset_model", "AssetModelError"),
                ("ingestion.reachability", "KafkaUnreachable"), ("ingestion.reachability", "BootstrapError"),
                ("ingestion.reachability", "KafkaAuthRequired"),
                ("ingestion.security", "KafkaAuthError"), ("ingestion.security", "KafkaSecurityError"),
                ("infra.security", "SecurityError"),
                ("pydantic_core", "ValidationError"))


def _is_a(exc: BaseException, module: str, name: str) -> bool:
    mod = sys.modules.get(module)
    return mod is not None and isinstance(exc, getattr(mod, name))


def _is_user_error(exc: BaseException) -> bool:
    return isinstance(exc, UserError | FileNotFoundError | PermissionError) or _is_path_error(exc) or any(
        _is_a(exc, module, name) for module, name in _USER_ERRORS)


def _is_path_error(exc: BaseException) -> bool:
    """An OS error about a path the user gave (a folder where a file belongs, a name too long, a read-only
    or full disk): the path and the system's reason say it all; a traceback would add nothing."""
    return isinstance(exc, OSError) and exc.filename is not None and exc.strerror is not None


def _one_line(exc: BaseException) -> str:
    if _is_path_error(exc):
        return f"{exc.filename}: {exc.strerror}"
    if _is_a(exc, "pydantic_core", "ValidationError"):
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or exc.title
        return f"invalid setting {exc.title}.{loc}: {err['msg']}"
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app and turn known errors into one line."""
    args = sys.argv[1:] if argv is None else argv
    command = typer.main.get_command(_load_for(args))
    try:
        rc = command.main(args=args, prog_name="gigapulse", standalone_mode=False)
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
    except KeyboardInterrupt:
        print("gigapulse: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("GIGAPULSE_DEBUG"):
            raise
        if _is_user_error(exc):
            print(f"gigapulse: error: {_one_line(exc)}", file=sys.stderr)
        else:
            print(f"gigapulse: error: {type(exc).__name__}: {_one_line(exc)} (GIGAPULSE_DEBUG=1 shows the "
                  "traceback)", file=sys.stderr)
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)


def _cmd_path(exc: click_exc.UsageError) -> str:
    ctx = exc.ctx
    if ctx is None:
        return ""
    parts = ctx.command_path.split()[1:]
    return " ".join(parts) + " " if parts else ""
