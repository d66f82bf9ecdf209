"""Settings of the stream workers and the warehouse, read once when a command starts."""

from __future__ import annotations

import socket
from datetime import date
from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class DataSettings(BaseSettings):
    """Where the lake and the warehouse live. Environment: ``GIGAPULSE_DATA_DIR``."""

    model_config = SettingsConfigDict(env_prefix="GIGAPULSE_", frozen=True)

    data_dir: Path = Field(REPO_ROOT / "var", description="Holds lake/ and gigapulse.duckdb.")

    @property
    def lake_root(self) -> Path:
        return self.data_dir / "lake"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "gigapulse.duckdb"

    @property
    def report_dir(self) -> Path:
        """Where ``gigapulse report`` and the ``plant_report`` asset write the HTML pages."""
        return self.data_dir / "report"

    @property
    def faust_dir(self) -> Path:
        """Faust's own data directory (its default is ``<app id>-data`` in the working directory)."""
        return self.data_dir / "faust"


class StreamSettings(BaseSettings):
    """How a stream worker windows and flushes. Environment: ``GIGAPULSE_STREAM_*``.

    ``flush_seconds`` bounds freshness (a reading is queryable at most about this long after it
    arrives), and a partition that goes quiet for ``flush_idle_ms`` is checkpointed at once;
    ``flush_rows`` bounds memory and file size under load.
    """

    model_config = SettingsConfigDict(env_prefix="GIGAPULSE_STREAM_", frozen=True)

    group_id: str = Field("gigapulse-stream", description="Consumer group of the workers.")
    window_ms: int = Field(60_000, ge=1_000, description="Tumbling window width for features.")
    long_window_ms: int = Field(3_600_000, ge=60_000, description="Width of the long windows (sensor_features_1h).")
    lateness_ms: int = Field(5_000, ge=0, description="Allowed lateness behind the watermark.")
    flush_seconds: float = Field(0.5, gt=0, description="Checkpoint (write Parquet, commit) at least this often.")
    flush_idle_ms: int = Field(50, ge=0, le=60_000, description="Checkpoint a partition sooner once no message "
                               "has come for this long (a gateway's burst is complete), ms; 0: only every "
                               "flush_seconds.")
    flush_min_seconds: float = Field(0.1, gt=0, description="The shortest batch an idle checkpoint closes, s: "
                                     "bounds the files a trickle of single messages makes per partition.")
    flush_rows: int = Field(500_000, ge=1, description="Checkpoint when this many readings are buffered.")
    microbatch_rows: int = Field(20_000, ge=1, description="Readings decoded before features are computed.")
    fetch_max_wait_ms: int = Field(100, ge=1, le=1500, description="Longest a consumer fetch waits for data. "
                                   "Faust's 1500 ms held busy partitions' records behind idle ones' fetch "
                                   "(docs/stream.md, freshness).")
    publish_features: bool = Field(True, description="Also publish features to the features.*.v1 topics.")
    checkpoints_in_flight: int = Field(2, ge=1, le=16, description="Checkpoints being written in the "
                                       "background before intake waits for the writer (bounds memory).")
    log_every_s: float = Field(30.0, gt=0, description="Seconds between the worker's INFO progress lines.")
    max_future_s: float = Field(7 * 86_400.0, ge=0, description="Refuse (timestamp_out_of_range) a reading or "
                                "event whose event time is more than this far ahead of its record's Kafka "
                                "timestamp: one such reading would otherwise close every window early. 0: no limit.")
    internal_retries: int = Field(2, ge=0, le=10, description="Further tries of a record whose processing raised "
                                  "(a worker bug) before it is set aside as an internal_error dead letter.")
    health_port: int | None = Field(None, ge=1, le=65_535, description="Serve /healthz, /readyz and /status "
                                    "on this port (unset: no endpoint; one port per worker on a host).")
    health_host: str = Field("127.0.0.1", description="Address the health endpoint binds to (0.0.0.0 in a "
                             "container, so the orchestrator can reach it).")

    # Recovery after a crash (docs/stream.md, "Recovery after a crash"). Faust's defaults (60 s
    # session and rebalance timeouts) left a kill -9'd worker's partitions unread for about a minute.
    session_timeout_s: float = Field(4.0, ge=1.0, le=300.0, description="A worker that stops heartbeating is "
                                     "dropped from the group after this long, and its partitions handed on. The "
                                     "broker's group.min.session.timeout.ms (Kafka's default 6 s; ours 2 s) "
                                     "bounds it from below.")
    heartbeat_interval_s: float = Field(1.0, gt=0, description="Seconds between heartbeats; also how soon a "
                                        "live worker hears of a rebalance. At most a third of session_timeout_s.")
    rebalance_timeout_s: float = Field(10.0, ge=1.0, le=300.0, description="How long a rebalance waits for the "
                                       "live workers to rejoin (ours finish their in-flight checkpoints first).")
    instance_id: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,249}$", description="Static group "
                                    "membership (KIP-345): a worker restarted with the same id takes its "
                                    "partitions back at once, without a rebalance. Unique per worker; "
                                    "'{hostname}' is replaced by the host's name; unset: dynamic membership.")

    @field_validator("heartbeat_interval_s")
    @classmethod
    def _heartbeat_within_session(cls, v: float, info: ValidationInfo) -> float:
        """Kafka's rule of thumb: three heartbeats per session, so one lost heartbeat is not a death."""
        session = info.data.get("session_timeout_s")
        if session is not None and v * 3 > session:
            raise ValueError(f"must be at most a third of session_timeout_s ({session:g} s)")
        return v

    @field_validator("instance_id", mode="before")
    @classmethod
    def _expand_hostname(cls, v: object) -> object:
        """``{hostname}`` gives each replica of one service its own id, stable across its restarts
        (a container keeps its hostname when restarted, a StatefulSet pod keeps its name)."""
        if isinstance(v, str):
            v = v.strip().replace("{hostname}", socket.gethostname())
            return v or None
        return v

    @property
    def max_future_ms(self) -> int:
        return int(self.max_future_s * 1000)


#: Days each table is kept by default (absent: kept for ever). Raw readings are the bulk of the lake
#: and are summarised in the features and rollups; refusals are kept long enough to investigate.
DEFAULT_RETENTION_DAYS: dict[str, int] = {"readings": 90, "dead_letters": 90}


class LakeSettings(BaseSettings):
    """How the maintenance step compacts and expires the lake. Environment: ``GIGAPULSE_LAKE_*``.

    ``retention`` is JSON, table -> days (``null`` keeps a table for ever), merged over the defaults:
    ``GIGAPULSE_LAKE_RETENTION='{"readings": 30}'``. ``grace_s`` is how long a file no longer read
    by the published catalog stays on disk, for queries and connections that started before: a
    connection held open longer than that may fail with a missing file and must reconnect.
    ``fanout`` and ``fold_after_days`` shape the compacted segments (docs/warehouse.md, Compaction).
    """

    model_config = SettingsConfigDict(env_prefix="GIGAPULSE_LAKE_", frozen=True)

    retention: dict[str, int | None] = Field(default_factory=dict, description="Days kept per table (JSON).")
    grace_s: float = Field(120.0, ge=0, description="Seconds an unreferenced file stays for running readers.")
    interval_s: float = Field(10.0, gt=0, description="Seconds between maintenance steps of `lake compact --loop`.")
    fanout: int = Field(4, ge=2, le=16, description="Segments of one level that merge into one of the next level.")
    fold_after_days: int = Field(2, ge=1, description="Days behind a table's newest date after which a date is "
                                                      "folded into one file.")

    nice: int = Field(10, ge=0, le=19, description="CPU niceness `lake compact --loop` adds to itself: background "
                                                   "work yields to the stream workers.")

    settle_s: float = Field(3.0, ge=0, description="Seconds a stream file stays hot before it is merged: the "
                                                     "newest seconds stay out of compacted files.")

    def compaction(self) -> dict[str, float | int]:
        """The keyword arguments of :func:`transforms.warehouse.maintenance.compact` these settings set."""
        return {"grace_s": self.grace_s, "fanout": self.fanout, "fold_after_days": self.fold_after_days,
                "settle_s": self.settle_s}

    @field_validator("retention")
    @classmethod
    def _known_tables(cls, value: dict[str, int | None]) -> dict[str, int | None]:
        from schemas.tables import TABLES

        unknown = sorted(set(value) - set(TABLES))
        if unknown:
            raise ValueError(f"unknown table(s) {', '.join(unknown)}; tables are {', '.join(sorted(TABLES))}")
        bad = sorted(t for t, d in value.items() if d is not None and d < 1)
        if bad:
            raise ValueError(f"retention must be at least 1 day (or null for ever): {', '.join(bad)}")
        return value

    @property
    def retention_days(self) -> dict[str, int | None]:
        """Days kept per table, defaults included."""
        return {**DEFAULT_RETENTION_DAYS, **self.retention}


#: Shift starts of the reference plant: three 8-hour shifts, the night one running past midnight.
DEFAULT_SHIFT_STARTS = "06:00,14:00,22:00"


def parse_shift_starts(text: str) -> tuple[int, ...]:
    """Minutes after 00:00 UTC at which shifts start, from ``"06:00,14:00,22:00"``; sorted, distinct.

    Each shift lasts until the next start; the last one until the first start of the next day.
    """
    minutes = []
    for part in text.split(","):
        hh, sep, mm = part.strip().partition(":")
        if not (sep and hh.isdigit() and mm.isdigit() and len(mm) == 2 and int(hh) < 24 and int(mm) < 60):
            raise ValueError(f"{part.strip()!r} is not a time HH:MM between 00:00 and 23:59")
        minutes.append(int(hh) * 60 + int(mm))
    if len(set(minutes)) != len(minutes):
        raise ValueError(f"{text!r} names a shift start twice")
    return tuple(sorted(minutes))


class RollupSettings(BaseSettings):
    """How the daily rollups cut a day into shifts. Environment: ``GIGAPULSE_SHIFT_STARTS``."""

    model_config = SettingsConfigDict(env_prefix="GIGAPULSE_", frozen=True)

    shift_starts: str = Field(DEFAULT_SHIFT_STARTS, description="UTC times at which shifts start, comma-"
                              "separated HH:MM; each shift runs to the next start (energy_shift rollup).")

    @field_validator("shift_starts")
    @classmethod
    def _valid_shift_starts(cls, v: str) -> str:
        """Refused at start-up in one line, and written back in one spelling (the rollups record it)."""
        return ",".join(f"{m // 60:02d}:{m % 60:02d}" for m in parse_shift_starts(v))

    @property
    def shift_start_minutes(self) -> tuple[int, ...]:
        return parse_shift_starts(self.shift_starts)


# --------------------------------------------------------------------------- audits and readiness (issue #11)

class AuditSettings(BaseSettings):
    """Reference data and economic assumptions of the sensor audit, readiness scores and retrofit plan.

    Environment: ``GIGAPULSE_AUDIT_*``. Unset file paths use the shipped files in ``schemas/reference/``;
    the prices and hours are planning assumptions (docs/batch.md, Readiness and retrofit), meant to be
    set per site.
    """

    model_config = SettingsConfigDict(env_prefix="GIGAPULSE_AUDIT_", frozen=True)

    reference_profile: Path | None = Field(None, description="Reference profile YAML (default: the shipped one).")
    retrofit_costs: Path | None = Field(None, description="Retrofit cost table YAML (default: the shipped one).")
    readiness: Path | None = Field(None, description="Readiness bands, weights and stages YAML (default: shipped).")
    reference_plant: str = Field("reference", description="Plant file whose site is the benchmark of the "
                                 "retrofit savings (its measured scrap and energy per cell).")
    electricity_eur_kwh: float = Field(0.15, ge=0, description="Price of electricity, EUR/kWh.")
    scrap_eur_per_cell: float = Field(20.0, ge=0, description="Cost of one scrapped cell (materials and "
                                      "value added), EUR.")
    operating_hours_per_year: float = Field(8_000.0, gt=0, le=8_784, description="Production hours a year "
                                            "the day's output rate is scaled to.")
    gap_closed_share: float = Field(0.5, ge=0, le=1, description="Share of the scrap and energy gap to the "
                                    "reference plant the retrofit is expected to close.")

# --------------------------------------------------------------------------- batch: material ledger, plant KPIs


class MaterialSettings(BaseSettings):
    """Where the material ledger and the plant KPIs find their reference data.
    Environment: ``GIGAPULSE_MATERIAL_*``.

    Unset files mean the shipped assumptions (``schemas/reference/bom.yaml`` and ``prices.yaml``,
    documented in docs/batch.md). ``plants`` are the plant files (builtin names or paths) whose
    ``product`` block says what each site makes; a site in the data without one gets no material
    rows and no per-kWh figures (the assets report it).
    """

    model_config = SettingsConfigDict(env_prefix="GIGAPULSE_MATERIAL_", frozen=True)

    bom_file: Path | None = Field(None, description="Bill of materials per chemistry (YAML, kg per kWh).")
    prices_file: Path | None = Field(None, description="Element prices per kg (YAML, with currency and date).")
    plants: list[str] = Field(["reference", "legacy"], description="Plant files (names or paths) by site, "
                              "JSON list: '[\"reference\", \"/etc/plants/berlin.yaml\"]'.")

# --------------------------------------------------------------------------- batch side: daily partitions

#: First day of the batch side's daily partitions when ``GIGAPULSE_BATCH_START_DATE`` is unset: early
#: enough for any replayed history the demo plants produce, late enough that a backfill of "everything"
#: stays a few hundred runs rather than decades.
DEFAULT_BATCH_START_DATE = date(2024, 1, 1)


class BatchPartitionSettings(BaseSettings):
    """Where the daily partitions of the batch side begin. Environment: ``GIGAPULSE_BATCH_START_DATE``.

    Read when the Dagster code location loads (its start-up): a partitions definition is fixed for the
    life of the process, and the webserver, the daemon and ``gigapulse jobs run`` must agree on it.
    """

    model_config = SettingsConfigDict(env_prefix="GIGAPULSE_BATCH_", frozen=True)

    start_date: date = Field(DEFAULT_BATCH_START_DATE, description="First UTC day of the daily partitions.")

# --------------------------------------------------------------------------- data quality (issue #11)


class DataQualitySettings(BaseSettings):
    """How strict the data-quality checks of the lake tables are. Environment: ``GIGAPULSE_DQ_*``.

    ``max_lag_s`` is the freshness bound: the newest row of a day may be at most this far before the
    day's end (or before now, for today). The stream lands data within seconds (``flush_seconds``);
    15 minutes leaves room for a restarted worker without hiding a stopped one for long.
    """

    model_config = SettingsConfigDict(env_prefix="GIGAPULSE_DQ_", frozen=True)

    max_lag_s: float = Field(900.0, gt=0, description="Freshness: seconds the newest row of a day may lag "
                             "behind the day's end (now, for today).")
    examples: int = Field(5, ge=1, le=50, description="Offending keys named in a failed check's message.")


class ScoreSettings(BaseSettings):
    """How the live scorer (``gigapulse score``) waits for a cell's history. Environment: ``GIGAPULSE_SCORE_*``.

    A cell is scored once its leave event at filling and the readings of its gate's stations (the
    filling station and the dry room) have landed past the gate, so its features are complete.
    ``max_wait_s`` bounds that wait: a stalled gateway must not hold every later cell back, so after
    it the cell is scored with what has landed and marked ``complete = false``.
    """

    model_config = SettingsConfigDict(env_prefix="GIGAPULSE_SCORE_", frozen=True)

    group_id: str = Field("gigapulse-scorer", description="Consumer group of the scorers.")
    poll_ms: int = Field(50, ge=1, le=1000, description="Longest a poll for new events waits, ms.")
    check_s: float = Field(0.1, gt=0, description="Seconds between checks of the lake for pending cells.")
    max_wait_s: float = Field(30.0, gt=0, description="Seconds a cell waits for its readings before it is "
                              "scored incomplete.")
    max_batch: int = Field(64, ge=1, le=64, description="Cells scored in one warehouse query (at most 64, "
                           "the few-cells plan of cell_features).")
    publish: bool = Field(True, description="Also publish each score to features.cell_risk.v1.")
    visit_cache: int = Field(200_000, ge=0, description="Upstream visit streams (a roll's coating, a batch's "
                             "mixing, per sensor parameter) whose sums are kept for the next cells made from "
                             "them; 0 reads every cell's whole history.")
    warm: bool = Field(True, description="Sum a cell's upstream visits (its rolls', their batches') in a second "
                       "thread when its first event names them, so the gate reads only the cell's own visits.")
    log_every_s: float = Field(30.0, gt=0, description="Seconds between progress lines (with --loglevel info).")
    trace: Path | None = Field(None, description="Append a JSON line per scored cell to this file: when its "
                               "event arrived, was read, its history landed, its batch started, was computed "
                               "and written (epoch seconds; where a cell's latency goes).")

# --------------------------------------------------------------------------- predictive quality (issue #12)


class GateSettings(BaseSettings):
    """How the quality gate's value is judged (``quality_gate_value``). Environment: ``GIGAPULSE_GATE_*``.

    ``flag_share`` sets the threshold: the champion's score above which that share of its own test
    cells is flagged (its training record), so the gate pulls about that share of the cells it sees.
    5% is a share of the line a plant can hold back for a look without starving formation.
    """

    model_config = SettingsConfigDict(env_prefix="GIGAPULSE_GATE_", frozen=True)

    flag_share: float = Field(0.05, ge=0.005, le=0.5, description="Share of the champion's test cells flagged "
                              "at the threshold the value is judged at, 0.005-0.5 (the record's flag curve).")
