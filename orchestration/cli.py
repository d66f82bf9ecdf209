"""``gigapulse jobs``: the batch side's front door, a thin launcher around Dagster's own servers.

``webserver`` and ``daemon`` replace the gigapulse process with ``dagster-webserver`` or
``dagster-daemon`` (``os.execvp``), so signals from docker-compose or a terminal reach Dagster
directly and no wrapper process sits in between. ``list`` prints what the definitions hold and ``run``
runs a job in this process (:mod:`orchestration.runs`), one run or a backfill of a date range. Dagster
is imported only by those two: the other gigapulse commands should not pay for importing it.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gigapulse.cli.common import UserError, _progress

DEFINITIONS_MODULE = "orchestration.definitions"
def default_dagster_home() -> Path:
    """Where local runs keep Dagster's default (SQLite) storage when DAGSTER_HOME is unset: beside the
    lake, in the data directory (``GIGAPULSE_DATA_DIR``, ``var/`` of the checkout by default), so the
    CLI, the demo and the tests' data directories each get their own instance."""
    from transforms.settings import DataSettings

    return DataSettings().data_dir / "dagster"

jobs_app = typer.Typer(help="Batch jobs: Dagster's webserver, its daemon, what they load, and runs in-process.",
                       no_args_is_help=True)
out = Console(soft_wrap=True)


def ensure_dagster_home() -> Path:
    """Make DAGSTER_HOME an existing absolute directory, defaulting to ``<data dir>/dagster``.

    Dagster refuses a relative or missing DAGSTER_HOME, and without one it keeps nothing between
    runs, so a laptop gets a persistent home under ``var/`` with no setup.
    """
    raw = os.environ.get("DAGSTER_HOME")
    home = (Path(raw) if raw else default_dagster_home()).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() or not config.read_text().strip():
        # Default local storage, no telemetry; and Dagster stops warning that the file is missing.
        config.write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _executable(name: str) -> str:
    """The console script installed beside this interpreter, so an unactivated venv still finds it."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found beside {sys.executable} or on PATH; "
                                "reinstall gigapulse (it depends on dagster-webserver)")
    return found


def _exec(argv: list[str]) -> None:
    ensure_dagster_home()
    argv = [_executable(argv[0]), *argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(argv[0], argv)


@jobs_app.command("webserver")
def jobs_webserver(
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0 in a container).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP port of the Dagster UI.")] = 3000,
) -> None:
    """Serve Dagster's UI and GraphQL API for the gigapulse definitions."""
    _exec(["dagster-webserver", "-m", DEFINITIONS_MODULE, "-h", host, "-p", str(port)])


@jobs_app.command("daemon")
def jobs_daemon() -> None:
    """Run Dagster's daemon: schedules, sensors and the run queue only advance while it runs."""
    _exec(["dagster-daemon", "run", "-m", DEFINITIONS_MODULE])


@jobs_app.command("list")
def jobs_list() -> None:
    """Print the assets, jobs, schedules and sensors the definitions hold (loads them, so it doubles as a check)."""
    from orchestration.definitions import defs

    out.print("assets:")
    for spec in sorted(defs.resolve_all_asset_specs(), key=lambda s: s.key.to_user_string()):
        summary = (spec.description or "").strip().splitlines()[0] if spec.description else ""
        out.print(f"  {spec.key.to_user_string():36s} group={spec.group_name}  {summary}")
    out.print("jobs:")
    # Dagster adds an implicit job over all assets; its name starts with "__" and nobody launches it.
    for job in sorted(defs.resolve_all_job_defs(), key=lambda j: j.name):
        if not job.name.startswith("__"):
            out.print(f"  {job.name:36s} {job.description or ''}")
    out.print("schedules:")
    # resolve_schedule_def: a schedule built from a partitioned asset job is only resolved against the defs.
    for schedule in sorted((defs.resolve_schedule_def(s.name) for s in defs.schedules or []), key=lambda s: s.name):
        status = schedule.default_status.value.lower()
        out.print(f"  {schedule.name:36s} {schedule.cron_schedule} {schedule.execution_timezone or 'UTC'}  "
                  f"job={schedule.job_name}  default={status}")
    out.print("sensors:")
    for sensor in sorted(defs.sensors or [], key=lambda s: s.name):
        status = sensor.default_status.value.lower()
        targets = ",".join(t.job_name for t in sensor.targets)
        out.print(f"  {sensor.name:36s} every {sensor.minimum_interval_seconds or 30} s  jobs={targets}  "
                  f"default={status}")


@jobs_app.command("run")
def jobs_run(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Job to run (see 'gigapulse jobs list').")],
    partition: Annotated[str | None, typer.Option(metavar="DATE", help="UTC day YYYY-MM-DD of a daily-partitioned job.")] = None,
    start: Annotated[str | None, typer.Option("--from", metavar="DATE", help="Backfill: first UTC day YYYY-MM-DD.")] = None,
    end: Annotated[str | None, typer.Option("--to", metavar="DATE", help="Backfill: last UTC day YYYY-MM-DD (included).")] = None,
) -> None:
    """Run a job in this process, or backfill a date range one day at a time, on DAGSTER_HOME's instance.

    The runs appear in the Dagster UI like runs it launched. A failed day does not stop a backfill;
    the command then exits non-zero naming the failed days.
    """
    import dagster as dg

    from orchestration.definitions import defs
    from orchestration.runs import JobRunError, RunOutcome, execute_plan, failed_summary, plan_runs

    try:
        plan = plan_runs(defs, name, partition, start, end)
    except JobRunError as exc:
        raise UserError(str(exc)) from None
    ensure_dagster_home()
    for noisy in ("alembic", "dagster"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    runs = len(plan.partition_keys)

    def done(outcome: RunOutcome) -> None:
        label = outcome.partition_key or plan.job_name
        state = "ok" if outcome.success else f"FAILED {outcome.error}"
        out.print(f"{label}  {state}  {outcome.materializations} materialization(s)  {outcome.seconds:.1f} s  "
                  f"run {outcome.run_id[:8]}")
        progress.update(task, advance=1, info=label)

    with dg.DagsterInstance.get() as instance, _progress() as progress:
        task = progress.add_task(f"{plan.job_name}", total=runs, info="")
        outcomes = execute_plan(defs, plan, instance,
                                on_start=lambda key: progress.update(task, info=f"running {key or ''}".strip()),
                                on_done=done)
    failed = failed_summary(outcomes)
    if failed:
        raise UserError(failed)
