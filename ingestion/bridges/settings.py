"""Run-time settings of a bridge, read once when ``gigapulse bridge ...`` starts (never at import).

What a bridge reads (its server, registers, topics or nodes) is its YAML configuration
(:mod:`ingestion.bridges.config`); how it hands data on (Kafka, frames, the disk buffer, the health
endpoint) is here, the same for every protocol. Environment: ``GIGAPULSE_BRIDGE_*``.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas import topics


class FullPolicy(StrEnum):
    """What a bridge does when its disk buffer reaches ``buffer_max_bytes`` (Kafka away for long).

    - ``block``: stop taking data from the source until Kafka drains the buffer. Nothing the bridge
      accepted is lost; the source holds the rest (an MQTT broker queues a persistent session, an OPC UA
      server's queue overflows, a Modbus poller simply does not poll). The default, because it loses
      nothing the bridge could have kept and makes the back-pressure visible upstream.
    - ``drop_oldest``: delete the oldest unsent segment of the buffer to make room: the newest data
      wins (a live dashboard prefers the present). Dropped readings are counted and logged.
    - ``reject_new``: refuse new frames while full: the oldest data wins (an audit trail prefers a
      complete past). Refused readings are counted and logged.
    """

    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"
    REJECT_NEW = "reject_new"


class BridgeSettings(BaseSettings):
    """How a bridge batches, buffers and reports. Environment: ``GIGAPULSE_BRIDGE_*``.

    ``flush_interval_s`` bounds the added latency (a sample waits at most this long in memory before
    its frame is journalled and sent); ``max_frame_readings`` bounds a frame's size under load.
    """

    model_config = SettingsConfigDict(env_prefix="GIGAPULSE_BRIDGE_", frozen=True)

    bootstrap_servers: str | None = Field(None, description="Kafka bootstrap servers (unset: "
                                          "GIGAPULSE_BOOTSTRAP_SERVERS, as every other command).")
    flush_interval_s: float = Field(0.2, gt=0, le=60, description="Seconds a sample may wait in memory "
                                    "before its gateway's frame is journalled and sent.")
    max_frame_readings: int = Field(2_000, ge=1, le=50_000, description="Readings per frame; a gateway's "
                                    "frame is cut early at this size.")
    buffer_dir: Path | None = Field(None, description="Folder of the disk buffer (unset: <data dir>/bridges/"
                                    "<bridge name>). One folder per running bridge.")
    buffer_max_bytes: int = Field(1024**3, ge=64 * 1024, description="Bytes of unsent data the disk buffer "
                                  "holds at most (Kafka away); then full_policy applies.")
    segment_bytes: int = Field(16 * 1024**2, ge=4 * 1024, description="Size at which a buffer segment is "
                               "closed and a new one started; a segment is deleted once Kafka acknowledged "
                               "all of it. Kept at most an eighth of buffer_max_bytes.")
    full_policy: FullPolicy = Field(FullPolicy.BLOCK, description="block, drop_oldest or reject_new: what "
                                    "happens when the disk buffer is full (docs/connectors.md).")
    fsync: bool = Field(True, description="fsync the buffer once per flush (a power cut loses at most one "
                        "flush interval); false leaves it to the OS (a process crash still loses nothing "
                        "written).")
    max_in_flight_bytes: int = Field(8 * 1024**2, ge=64 * 1024, description="Bytes handed to the Kafka "
                                     "client and not yet acknowledged; the rest waits in the buffer.")
    readings_topic: str = Field(topics.READINGS, description="Where frames go.")
    dlq_topic: str = Field(topics.DLQ, description="Where dead letters (rejects and gaps) go.")
    health_port: int | None = Field(None, ge=1, le=65_535, description="Serve /healthz, /readyz and /status "
                                    "on this port (unset: no endpoint).")
    health_host: str = Field("127.0.0.1", description="Address the health endpoint binds to (0.0.0.0 in a "
                             "container).")
    stall_s: float = Field(10.0, gt=0, description="Kafka counts as unreachable (status 'buffering', /readyz "
                           "503) when data has waited this long for an acknowledgement.")

    drain_timeout_s: float = Field(30.0, ge=0, description="How long a stopping bridge waits for Kafka to "
                                   "acknowledge its buffer; what is left stays on disk for the next start.")

    def buffer_path(self, name: str) -> Path:
        """The buffer folder of the bridge called ``name``."""
        if self.buffer_dir is not None:
            return self.buffer_dir
        from transforms.settings import DataSettings

        return DataSettings().data_dir / "bridges" / name

    def bootstrap(self) -> str:
        """The bootstrap servers: this setting, else the platform's."""
        if self.bootstrap_servers:
            return self.bootstrap_servers
        from ingestion.settings import KafkaSettings

        return KafkaSettings().bootstrap_servers

    @property
    def effective_segment_bytes(self) -> int:
        """Segments small enough that ``drop_oldest`` frees space in steps, and a full buffer has several."""
        return max(4096, min(self.segment_bytes, self.buffer_max_bytes // 8))
