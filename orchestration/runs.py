"""Running a job of the code location in this process: one run, or one run per day of a date range.

What ``gigapulse jobs run`` does for those who do not open the UI, kept apart from the CLI so the
checks on the request (job, dates, partitions) and the runs themselves test without a console.
Runs go to the Dagster instance of ``DAGSTER_HOME``, the one the webserver shows, so a run started
here appears in the UI's run list and asset history like one it launched.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import dagster as dg

from orchestration.partitions import PARTITION_TAG, TAG_PARTITIONED_JOBS, daily_partitions

#: Keeps Dagster's own event log lines off the terminal: the caller prints one line per run.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


class JobRunError(ValueError):
    """A request the definitions cannot run (unknown job, bad date, partitions that do not fit)."""


@dataclass(frozen=True)
class RunPlan:
    """The runs of one request, in order: a partition key per run (``None``: an unpartitioned job)."""

    job_name: str
    partition_keys: tuple[str | None, ...]


@dataclass(frozen=True)
class RunOutcome:
    """What one run did: its partition, id, result, materializations and, when it failed, why."""

    partition_key: str | None
    run_id: str
    success: bool
    materializations: int
    seconds: float
    error: str | None = None


def launchable_jobs(defs: dg.Definitions) -> list[dg.JobDefinition]:
    """The jobs a user can name, by name (Dagster's implicit ``__ASSET_JOB`` left out)."""
    return sorted((j for j in defs.resolve_all_job_defs() if not j.name.startswith("__")), key=lambda j: j.name)


def parse_day(text: str, option: str) -> date:
    """A UTC day ``YYYY-MM-DD``; anything else is refused in one line naming the option."""
    try:
        if len(text) != 10:
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise JobRunError(f"{option} {text!r} is not a date YYYY-MM-DD") from None


def plan_runs(defs: dg.Definitions, name: str, partition: str | None = None, start: str | None = None,
              end: str | None = None) -> RunPlan:
    """Check a request against the definitions and list its runs, refusing what would not run.

    A partitioned job needs ``partition`` or the range ``start``..``end`` (inclusive, one run per day,
    oldest first, as a backfill fills history); an unpartitioned job takes neither.
    """
    jobs = {j.name: j for j in launchable_jobs(defs)}
    job = jobs.get(name)
    if job is None:
        raise JobRunError(f"unknown job {name!r}; jobs are {', '.join(jobs) or '(none)'}")
    if partition is not None and (start is not None or end is not None):
        raise JobRunError("give either --partition or --from/--to, not both")
    if (start is None) != (end is None):
        raise JobRunError("--from and --to go together (a one-day range is --from D --to D)")
    partitions = job.partitions_def
    if partitions is None and name in TAG_PARTITIONED_JOBS:
        partitions = daily_partitions
    if partitions is None:
        if partition is not None or start is not None:
            raise JobRunError(f"job {name!r} is not partitioned; run it without --partition, --from or --to")
        return RunPlan(name, (None,))
    if partition is None and start is None:
        raise JobRunError(f"job {name!r} is partitioned by day; give --partition DATE or --from DATE --to DATE")
    if partition is not None:
        days = [parse_day(partition, "--partition")]
    else:
        first, last = parse_day(start, "--from"), parse_day(end, "--to")
        if first > last:
            raise JobRunError(f"--from {first} is after --to {last}")
        days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    keys = tuple(d.isoformat() for d in days)
    outside = [k for k in keys if not partitions.has_partition_key(k)]
    if outside:
        known = partitions.get_partition_keys()
        span = f"{known[0]} to {known[-1]}" if known else "none yet"
        raise JobRunError(f"{', '.join(outside[:3])}{' ...' if len(outside) > 3 else ''} outside the partitions "
                          f"of job {name!r} ({span})")
    return RunPlan(name, keys)


def _failure(result: dg.ExecuteInProcessResult) -> str:
    """The first failure of a run, as one line: the step and the error's first line."""
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        # Dagster wraps the asset's own exception ("Error occurred while executing op ..."); the user
        # wants the exception their code raised, which is the wrapper's cause.
        while error is not None and error.cause is not None and error.cls_name.startswith("Dagster"):
            error = error.cause
        message = (error.message if error else "").strip().splitlines() or ["failed"]
        return f"step {event.step_key}: {message[0]}"
    event = result.get_run_failure_event()
    if event is not None and event.message:
        return event.message.strip().splitlines()[0]
    return "the run failed"


def execute_plan(defs: dg.Definitions, plan: RunPlan, instance: dg.DagsterInstance,
                 on_start: Callable[[str | None], None] = lambda _key: None,
                 on_done: Callable[[RunOutcome], None] = lambda _outcome: None) -> list[RunOutcome]:
    """Run the plan's runs in order on ``instance``; a failed run is reported and the next one still runs.

    A backfill keeps going past a failed day, as Dagster's own backfills do: one bad day should not
    leave the days after it empty, and the outcomes say which days to run again.
    """
    job = defs.resolve_job_def(plan.job_name)
    outcomes: list[RunOutcome] = []
    for key in plan.partition_keys:
        on_start(key)
        started = time.monotonic()
        if key is not None and plan.job_name in TAG_PARTITIONED_JOBS:
            result = job.execute_in_process(instance=instance, tags={PARTITION_TAG: key},
                                            run_config=QUIET_RUN_CONFIG, raise_on_error=False)
        else:
            result = job.execute_in_process(instance=instance, partition_key=key, run_config=QUIET_RUN_CONFIG,
                                            raise_on_error=False)
        outcome = RunOutcome(partition_key=key, run_id=result.run_id, success=result.success,
                             materializations=len(result.get_asset_materialization_events()),
                             seconds=time.monotonic() - started, error=None if result.success else _failure(result))
        outcomes.append(outcome)
        on_done(outcome)
    return outcomes


def failed_summary(outcomes: Sequence[RunOutcome]) -> str | None:
    """One line naming the failed runs, or None when every run succeeded."""
    failed = [o for o in outcomes if not o.success]
    if not failed:
        return None
    first = failed[0]
    where = f" ({', '.join(o.partition_key for o in failed if o.partition_key)})" if first.partition_key else ""
    return f"{len(failed)} of {len(outcomes)} run(s) failed{where}; first: {first.error}"
