"""The v1 topic catalog: every topic gigapulse reads or writes, with its partitioning and retention.

Applied idempotently by ``gigapulse topics apply`` (and by ``gigapulse broker start``). Partition
counts are the unit of stream parallelism: one worker process per partition at most.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """One topic of the catalog and why it is shaped the way it is."""

    name: str
    partitions: int
    cleanup_policy: str
    retention_ms: int
    key: str
    value: str
    description: str
    extra_config: dict[str, str] = field(default_factory=dict)

    def config(self) -> dict[str, str]:
        """Topic-level configs for the admin API."""
        cfg = {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}
        cfg.update(self.extra_config)
        return cfg


READINGS = "plant.readings.v1"
EVENTS = "plant.events.v1"
ASSETS = "plant.assets.v1"
DLQ = "plant.dlq.v1"
FEATURES_SENSOR_1M = "features.sensor_1m.v1"
FEATURES_SENSOR_1H = "features.sensor_1h.v1"
FEATURES_SPC = "features.spc.v1"
FEATURES_QUALITY = "features.quality.v1"
FEATURES_ENERGY = "features.energy.v1"
FEATURES_SENSOR_HEALTH = "features.sensor_health.v1"
FEATURES_CELL_RISK = "features.cell_risk.v1"

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(READINGS, 6, "delete", 7 * DAY_MS, "gateway id (frames) or sensor id (single readings)",
              "reading or reading_frame (JSON)",
              "Sensor readings; the key keeps each sensor's samples in order within one partition.",
              {"compression.type": "producer", "max.message.bytes": "2097152"}),
    TopicSpec(EVENTS, 3, "delete", 30 * DAY_MS, "site/line", "production_event (JSON)",
              "Production events; keyed by line, so a line's events (and each unit's history) stay in "
              "order in one partition and its quality windows are computed in one place."),
    TopicSpec(ASSETS, 1, "compact", -1, "sensor id", "asset_entry (JSON)",
              "The asset model, compacted: the latest entry per sensor is the current truth.",
              {"min.cleanable.dirty.ratio": "0.1"}),
    TopicSpec(DLQ, 1, "delete", 30 * DAY_MS, "source topic", "dead_letter (JSON)",
              "Refused messages with their original bytes, source position and reason.",
              # A letter carries up to 1 MiB of original bytes as base64 (4/3) plus its envelope.
              {"max.message.bytes": "2097152"}),
    TopicSpec(FEATURES_SENSOR_1M, 3, "delete", 7 * DAY_MS, "sensor id", "sensor window features (JSON)",
              "Per-sensor tumbling-window statistics."),
    TopicSpec(FEATURES_SENSOR_1H, 3, "delete", 30 * DAY_MS, "sensor id", "sensor window features (JSON)",
              "Per-sensor 1-hour tumbling-window statistics."),
    TopicSpec(FEATURES_SPC, 3, "delete", 7 * DAY_MS, "sensor id", "SPC features (JSON)",
              "EWMA, CUSUM, Western Electric violations, Cpk/Ppk per critical-to-quality parameter."),
    TopicSpec(FEATURES_QUALITY, 1, "delete", 30 * DAY_MS, "line/stage", "quality window (JSON)",
              "Units in, good, scrapped by reason, yield and first-pass yield per line and stage."),
    TopicSpec(FEATURES_ENERGY, 1, "delete", 30 * DAY_MS, "station id", "energy window (JSON)",
              "kWh per station and line per window, kWh per good cell, kWh per kWh of capacity."),
    TopicSpec(FEATURES_SENSOR_HEALTH, 1, "delete", 7 * DAY_MS, "sensor id", "sensor health (JSON)",
              "Observed versus nominal rate, gaps, stuck sensors, late readings."),
    TopicSpec(FEATURES_CELL_RISK, 3, "delete", 30 * DAY_MS, "cell id", "cell risk (JSON)",
              "Each cell's live score at the gate before formation: probability of scrap or grade C, model "
              "version, top drivers (gigapulse score)."),
)

TOPICS_BY_NAME: dict[str, TopicSpec] = {t.name: t for t in TOPICS}


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of a record key (as the Java client computes it), unsigned 32-bit."""
    length = len(data)
    seed, m, r = 0x9747B28C, 0x5BD1E995, 24
    h = seed ^ length
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = length % 4
    if tail:
        rest = data[length - tail:]
        if tail >= 3:
            h ^= rest[2] << 16
        if tail >= 2:
            h ^= rest[1] << 8
        h ^= rest[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


@functools.lru_cache(maxsize=65_536)
def key_hash(key: bytes) -> int:
    """The non-negative murmur2 of a key, computed once per key: keys repeat (gateways, sensors, lines)."""
    return murmur2(key) & 0x7FFFFFFF


def key_partition(key: bytes, partitions: Sequence[int]) -> int:
    """The partition Kafka's default partitioner gives ``key``: its hash modulo the sorted partitions.

    Every producer of the platform places keyed records this way, so a key lands where the Java
    client, kafka-python and aiokafka would put it and keyed order holds whichever of them wrote it.
    """
    ordered = sorted(partitions)
    return ordered[key_hash(bytes(key)) % len(ordered)]
