"""Settings of the stream workers and the warehouse, read once when a command starts."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
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
    def faust_dir(self) -> Path:
        """Faust's own data directory (its default is ``<app id>-data`` in the working directory)."""
        return self.data_dir / "faust"


class StreamSettings(BaseSettings):
    """How a stream worker windows and flushes. Environment: ``GIGAPULSE_STREAM_*``.

    ``flush_seconds`` bounds freshness (a reading is queryable at most about this long after it
    arrives); ``flush_rows`` bounds memory and file size under load.
    """

    model_config = SettingsConfigDict(env_prefix="GIGAPULSE_STREAM_", frozen=True)

    group_id: str = Field("gigapulse-stream", description="Consumer group of the workers.")
    window_ms: int = Field(60_000, ge=1_000, description="Tumbling window width for features.")
    long_window_ms: int = Field(3_600_000, ge=60_000, description="Width of the long windows (sensor_features_1h).")
    lateness_ms: int = Field(5_000, ge=0, description="Allowed lateness behind the watermark.")
    flush_seconds: float = Field(0.5, gt=0, description="Checkpoint (write Parquet, commit) at least this often.")
    flush_rows: int = Field(500_000, ge=1, description="Checkpoint when this many readings are buffered.")
    microbatch_rows: int = Field(20_000, ge=1, description="Readings decoded before features are computed.")
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

    @property
    def max_future_ms(self) -> int:
        return int(self.max_future_s * 1000)
