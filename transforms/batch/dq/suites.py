"""The checks of the lake tables as Great Expectations suites, and their outcomes in words.

Each :class:`Check` is one named rule of one table (``readings_keys_not_null``): the Dagster asset
check of the same name, one row of ``dq_results``, and one or more GX expectations over one of the
small frames DuckDB made of the day (:mod:`transforms.batch.dq.profiles`). The suites live in code and
run in an ephemeral GX context (nothing on disk, no analytics, no progress bars), one validation
definition per frame, so a run needs no GX project and leaves nothing behind.

Blocking checks are those whose failure makes the numbers computed from the table wrong (a missing
day, lost or duplicated messages, null keys, physically impossible values, a drifted schema); the
others (freshness, genealogy) report a lag or a gap the plant has, which downstream assets measure
rather than suffer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd

from schemas.tables import DEAD_LETTERS, PRODUCTION_EVENTS, READINGS
from transforms.batch.dq import profiles as P
from transforms.settings import DataQualitySettings

#: GX logs its own set-up at INFO when imported (dozens of lines per process and context); a check's
#: outcome is what a user reads, so its loggers stay at WARNING.
logging.getLogger("great_expectations").setLevel(logging.WARNING)

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation

#: Frames the checks validate, with the column naming a row in messages (None: one-row frames).
FRAME_INDEX: dict[str, str | None] = {"schema": "column", "per_sensor": "sensor_id", "per_source": "src_partition",
                                      "day": None, "freshness": None, "genealogy": None}
#: What a row of a many-row frame is, in messages.
FRAME_ROWS = {"schema": "columns", "per_sensor": "sensors", "per_source": "source partitions"}


@dataclass(frozen=True)
class Rule:
    """One expectation of a check, in words: the frame column, the bounds and what it counts."""

    kind: str  # "between" (column within [lo, hi]), "equal" (column equals other), "not_null"
    column: str
    what: str
    lo: float | None = None
    hi: float | None = None
    other: str | None = None
    detail: tuple[str, ...] = ()  # columns shown beside an offending row's key
    show_value: bool = True  # False for 0/1 flags, whose value the text already says


@dataclass(frozen=True)
class Check:
    """A named data-quality rule of one lake table, evaluated per daily partition."""

    name: str
    table: str
    frame: str
    blocking: bool
    doc: str
    rules: Callable[[DataQualitySettings], tuple[Rule, ...]]


@dataclass(frozen=True)
class CheckOutcome:
    """What one check found on one table's day: the row of ``dq_results`` without run id and time."""

    check: str
    table: str
    day: date
    success: bool
    blocking: bool
    observed: str
    expected: str
    message: str | None


def _none(what: str, column: str, detail: tuple[str, ...] = (), show_value: bool = True) -> Rule:
    return Rule("between", column, what, lo=0, hi=0, detail=detail, show_value=show_value)


def _schema(_: DataQualitySettings) -> tuple[Rule, ...]:
    return (Rule("equal", "actual_type", "column types", other="expected_type"),
            _none("files lacking the column", "files_missing"))


def _rows(_: DataQualitySettings) -> tuple[Rule, ...]:
    return (Rule("between", "rows", "rows", lo=1),)


def _keys(table: str) -> Callable[[DataQualitySettings], tuple[Rule, ...]]:
    return lambda _: tuple(_none(f"null {c}", f"null_{c}") for c in P.KEY_COLUMNS[table])


def _unique(_: DataQualitySettings) -> tuple[Rule, ...]:
    return (_none("rows repeating a source position", "duplicate_rows", ("offsets",)),)


def _offsets(_: DataQualitySettings) -> tuple[Rule, ...]:
    return (_none("offsets in neither the table nor dead_letters", "missing",
                  ("first_offset", "last_offset", "offsets", "other_days", "dead_lettered")),)


def _fresh(s: DataQualitySettings) -> tuple[Rule, ...]:
    return (Rule("not_null", "newest_ts", "newest timestamp"),
            Rule("between", "lag_s", "seconds the newest row lags the day's end (now, for today)", hi=s.max_lag_s,
                 detail=("newest_ts", "reference")))


def _physical(_: DataQualitySettings) -> tuple[Rule, ...]:
    return (_none("sensors with values beyond physical limits", "unphysical",
                  ("unit", "min_value", "max_value", "phys_lo", "phys_hi"), show_value=False),
            _none("sensors with quality codes other than 0, 1, 2", "bad_quality", ("bad_quality",)))


def _event_values(_: DataQualitySettings) -> tuple[Rule, ...]:
    return (_none("events of an unknown kind", "bad_kind"), _none("events of an unknown unit_type", "bad_unit_type"),
            _none("grade events without grade A, B or C", "bad_grade"),
            _none("scrap events without a reason", "scrap_without_reason"),
            _none("measure events without a finite value", "bad_measure"))


def _genealogy(_: DataQualitySettings) -> tuple[Rule, ...]:
    return (_none("parent ids no event knows (stock rolls excepted)", "unknown_parents",
                  ("parents", "unknown_examples")),)


R, E, D = READINGS.name, PRODUCTION_EVENTS.name, DEAD_LETTERS.name
#: Every check, by table; names are the Dagster asset check names.
CHECKS: tuple[Check, ...] = (
    Check(f"{R}_schema", R, "schema", True, "The day's files have the contract's columns and types.", _schema),
    Check(f"{R}_rows_present", R, "day", True, "The day has readings at all (a missing day).", _rows),
    Check(f"{R}_keys_not_null", R, "day", True, "No reading lacks its sensor, time, value, quality or source "
          "position.", _keys(R)),
    Check(f"{R}_unique_source_position", R, "per_source", True, "(src_partition, src_offset, src_index) is unique: "
          "no message landed twice.", _unique),
    Check(f"{R}_physical_range", R, "per_sensor", True, "No value beyond its unit's physical limits, none "
          "non-finite, quality codes 0-2 only (spec limits are not checked: out of spec is a process fact).",
          _physical),
    Check(f"{R}_offsets_complete", R, "per_source", True, "Every offset of plant.readings.v1 in the day's range "
          "is in readings or dead_letters: no message lost between Kafka and the lake.", _offsets),
    Check(f"{R}_freshness", R, "freshness", False, "The newest reading is close to the day's end (now, for "
          "today): the stream is not stalled.", _fresh),
    Check(f"{E}_schema", E, "schema", True, "The day's files have the contract's columns and types.", _schema),
    Check(f"{E}_rows_present", E, "day", True, "The day has production events at all (a missing day).", _rows),
    Check(f"{E}_keys_not_null", E, "day", True, "No event lacks its id, time, place, unit, kind or source "
          "position.", _keys(E)),
    Check(f"{E}_unique_source_position", E, "per_source", True, "(src_partition, src_offset) is unique: no message "
          "landed twice (repeated event ids are duplicate_events' business).", _unique),
    Check(f"{E}_valid_values", E, "day", True, "Kinds, unit types, grades, scrap reasons and measured values "
          "within their domain.", _event_values),
    Check(f"{E}_offsets_complete", E, "per_source", True, "Every offset of plant.events.v1 in the day's range is "
          "in production_events or dead_letters.", _offsets),
    Check(f"{E}_freshness", E, "freshness", False, "The newest event is close to the day's end (now, for "
          "today).", _fresh),
    Check(f"{E}_genealogy", E, "genealogy", False, "Every parent id of the day's events is a unit with events up "
          "to that day, or a roll from stock.", _genealogy),
    Check(f"{D}_schema", D, "schema", True, "The day's files have the contract's columns and types.", _schema),
    Check(f"{D}_keys_not_null", D, "day", True, "No dead letter lacks its reason, stage or time.", _keys(D)),
)
CHECKED_TABLES: tuple[str, ...] = (R, E, D)
SPECS = {R: READINGS, E: PRODUCTION_EVENTS, D: DEAD_LETTERS}


def checks_of(table: str) -> tuple[Check, ...]:
    return tuple(c for c in CHECKS if c.table == table)


# --------------------------------------------------------------------------- the frames of a table's day


def profile(con: duckdb.DuckDBPyConnection, lake_root: Path, table: str, day: date, now: datetime,
            settings: DataQualitySettings) -> dict[str, pd.DataFrame]:
    """The frames ``table``'s checks validate, computed by DuckDB (:mod:`transforms.batch.dq.profiles`)."""
    frames = {"schema": P.schema_frame(con, lake_root, SPECS[table], day)}
    files = P.day_files(lake_root, table, day)
    proven = P.footer_nulls(con, files, P.KEY_COLUMNS[table])
    if table == R:
        per_sensor = P.readings_per_sensor(con, day, proven)
        frames["per_sensor"] = per_sensor
        frames["day"] = _readings_day(per_sensor)
        frames["per_source"] = P.source_positions(con, P.SOURCES[R], day)
        frames["freshness"] = P.freshness(P.newest_ts(con, R, files, day), day, now)
    elif table == E:
        day_frame = P.events_day(con, day, proven)
        frames["day"] = day_frame
        frames["per_source"] = P.source_positions(con, P.SOURCES[E], day)
        frames["freshness"] = P.freshness(day_frame["newest_ts"].iloc[0], day, now)
        frames["genealogy"] = P.genealogy(con, day, settings.examples)
    else:
        frames["day"] = P.dead_letters_day(con, day)
    return frames


def _readings_day(per_sensor: pd.DataFrame) -> pd.DataFrame:
    """The day-level row of readings: sums of the per-sensor frame, and the rows without a sensor id."""
    keys = [c for c in P.KEY_COLUMNS[R] if c != "sensor_id"]
    row: dict[str, Any] = {"rows": int(per_sensor["rows"].sum()) if len(per_sensor) else 0}
    row["null_sensor_id"] = int(per_sensor.loc[per_sensor["sensor_id"].isna(), "rows"].sum())
    for c in keys:
        row[f"null_{c}"] = int(per_sensor[f"null_{c}"].sum()) if len(per_sensor) else 0
    return pd.DataFrame([row])


# --------------------------------------------------------------------------- GX


def _expectation(rule: Rule, check: Check) -> Expectation:
    import great_expectations.expectations as gxe

    meta = {"check": check.name, "rule": rule.column}
    if rule.kind == "between":
        return gxe.ExpectColumnValuesToBeBetween(column=rule.column, min_value=rule.lo, max_value=rule.hi, meta=meta)
    if rule.kind == "equal":
        return gxe.ExpectColumnPairValuesToBeEqual(column_A=rule.column, column_B=rule.other, meta=meta)
    return gxe.ExpectColumnValuesToNotBeNull(column=rule.column, meta=meta)


def _context():
    """An ephemeral GX context: in memory, no usage statistics sent, no progress bars in the logs.

    GX's own set-up logging is kept at WARNING (see the top of this module).
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(), analytics_enabled=False,
                               progress_bars=ProgressBarsConfig(globally=False))
    return gx.get_context(mode="ephemeral", project_config=config)


def validate(frames: dict[str, pd.DataFrame], table: str, day: date,
             settings: DataQualitySettings) -> list[CheckOutcome]:
    """Run ``table``'s suites over its frames (one GX validation definition per frame)."""
    import great_expectations as gx

    context = _context()
    source = context.data_sources.add_pandas(f"{table}_aggregates")
    checks = checks_of(table)
    results: dict[tuple[str, str], Any] = {}
    for frame_name in sorted({c.frame for c in checks}):
        frame = frames[frame_name]
        batch = source.add_dataframe_asset(frame_name).add_batch_definition_whole_dataframe(frame_name)
        suite = context.suites.add(gx.ExpectationSuite(name=f"{table}_{frame_name}"))
        for check in (c for c in checks if c.frame == frame_name):
            for rule in check.rules(settings):
                suite.add_expectation(_expectation(rule, check))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{table}_{frame_name}", data=batch, suite=suite))
        index = FRAME_INDEX[frame_name]
        result_format: dict[str, Any] = {"result_format": "COMPLETE"}
        if index and len(frame):
            result_format["unexpected_index_column_names"] = [index]
        run = definition.run(batch_parameters={"dataframe": frame}, result_format=result_format)
        for r in run.results:
            if r.exception_info and r.exception_info.get("raised_exception"):
                raise RuntimeError(f"{table} {frame_name}: GX failed on {r.expectation_config.type}: "
                                   f"{r.exception_info.get('exception_message')}")
            results[(r.expectation_config.meta["check"], r.expectation_config.meta["rule"])] = r
    return [_outcome(check, day, frames[check.frame], settings,
                     [(rule, results[(check.name, rule.column)]) for rule in check.rules(settings)])
            for check in checks]


# --------------------------------------------------------------------------- outcomes in words


def _fmt(value: Any) -> str:
    if value is None or (not isinstance(value, (list, tuple, str)) and pd.isna(value)):
        return "none"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _bounds(rule: Rule) -> str:
    if rule.kind == "not_null":
        return "present"
    if rule.kind == "equal":
        return f"equal to {rule.other}"
    if rule.lo is not None and rule.hi is not None:
        return f"= {_fmt(rule.lo)}" if rule.lo == rule.hi else f"between {_fmt(rule.lo)} and {_fmt(rule.hi)}"
    return f">= {_fmt(rule.lo)}" if rule.lo is not None else f"<= {_fmt(rule.hi)}"


def _offenders(result: Any, frame: pd.DataFrame, index: str, rule: Rule, examples: int) -> str:
    """The keys GX reported as unexpected, with the columns that explain them."""
    keys = [row[index] for row in (result.result.get("unexpected_index_list") or [])][:examples]
    parts = []
    for key in keys:
        row = frame.loc[frame[index] == key].iloc[0]
        shown = [rule.column, rule.other] if rule.kind == "equal" else [rule.column] if rule.show_value else []
        shown += [c for c in rule.detail if c in frame.columns]
        parts.append(f"{index}={_fmt(key)} (" + ", ".join(f"{c} {_fmt(row[c])}" for c in shown) + ")")
    more = result.result.get("unexpected_count", 0) - len(keys)
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")


def _one_row(rule: Rule, result: Any, frame: pd.DataFrame) -> str:
    """A one-row frame's value, with the columns that explain it when it failed."""
    value = frame[rule.column].iloc[0] if len(frame) else None
    text = f"{rule.what} {_fmt(value)}"
    if not result.success and rule.detail and len(frame):
        text += " (" + ", ".join(f"{c} {_fmt(frame[c].iloc[0])}" for c in rule.detail) + ")"
    return text


def _observed(rule: Rule, result: Any, frame: pd.DataFrame, frame_name: str, examples: int) -> str:
    index = FRAME_INDEX[frame_name] if len(frame) else None
    if index is None:
        return _one_row(rule, result, frame)
    n, noun = result.result.get("element_count", len(frame)), FRAME_ROWS[frame_name]
    if result.success:
        return f"{rule.what}: none of {n} {noun}"
    bad = result.result.get("unexpected_count", 0)
    return f"{rule.what}: {bad} of {n} {noun}: {_offenders(result, frame, index, rule, examples)}"


def _outcome(check: Check, day: date, frame: pd.DataFrame, settings: DataQualitySettings,
             rule_results: list[tuple[Rule, Any]]) -> CheckOutcome:
    """The check's row: observed and expected for every rule, and a message naming what failed."""
    observed = [_observed(rule, r, frame, check.frame, settings.examples) for rule, r in rule_results]
    expected = [f"{rule.what} {_bounds(rule)}" for rule, _ in rule_results]
    success = all(r.success for _, r in rule_results)
    failed = [f"{obs}, expected {_bounds(rule)}" for obs, (rule, r) in zip(observed, rule_results, strict=True)
              if not r.success]
    message = None if success else f"{check.table} {day.isoformat()} {check.name}: " + "; ".join(failed)
    return CheckOutcome(check=check.name, table=check.table, day=day, success=success, blocking=check.blocking,
                        observed="; ".join(observed), expected="; ".join(expected), message=message)


def checks_markdown() -> str:
    """The list of checks for docs/batch.md (a test keeps the docs equal to it)."""
    rows = ["| check | table | blocking | what it catches |", "|---|---|---|---|"]
    rows += [f"| `{c.name}` | {c.table} | {'yes' if c.blocking else 'no (warns)'} | {c.doc} |" for c in CHECKS]
    return "\n".join(rows)
