"""Settings of the ingestion side, read once when a command starts (never at import)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    """Where the cluster is. Environment: ``GIGAPULSE_BOOTSTRAP_SERVERS``, ``GIGAPULSE_CONNECT_TIMEOUT_S``."""

    model_config = SettingsConfigDict(env_prefix="GIGAPULSE_", frozen=True)

    bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port list.")
    connect_timeout_s: float = Field(5.0, gt=0, le=600, description="How long a command waits for a bootstrap "
                                     "server to answer before it gives up with one line (a starting broker "
                                     "gets this long to come up).")


class ProducerSettings(BaseSettings):
    """How readings and events are produced. Environment: ``GIGAPULSE_PRODUCER_*``.

    Defaults favour durability (acks=all, idempotence) and throughput (zstd, 64 KiB+ batches,
    a few ms of linger); a final send failure is counted and reported, never dropped silently.
    """

    model_config = SettingsConfigDict(env_prefix="GIGAPULSE_PRODUCER_", frozen=True)

    acks: str = Field("all", pattern=r"^(all|0|1|-1)$")
    compression: str = Field("zstd", pattern=r"^(none|gzip|snappy|lz4|zstd)$")
    linger_ms: int = Field(10, ge=0, le=10_000)
    batch_size: int = Field(512 * 1024, ge=1024)
    retries: int | None = Field(None, ge=0, description="Retries of a failed produce request; unset: until "
                                "the delivery timeout (a broker restart must not exhaust them).")
    delivery_timeout_s: float = Field(120.0, gt=0, description="How long a message may wait for the broker "
                                      "(buffered while it is away, then retried) before it counts as not "
                                      "delivered and the command fails.")
    max_request_size: int = Field(4 * 1024 * 1024, ge=1024)
    frame_max_readings: int = Field(2_000, ge=1, le=50_000,
                                    description="Readings per frame; a station's tick is split above this.")
    max_future_s: float = Field(300.0, gt=0, description="Edge validation: how far ahead of now a ts may be.")
    max_past_s: float = Field(7 * 86_400.0, gt=0, description="Edge validation: how far behind now a ts may be.")
