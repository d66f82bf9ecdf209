"""Apply the topic catalog of :mod:`schemas.topics` to a cluster, idempotently.

Running it twice changes nothing; on a cluster where a topic exists with fewer partitions than the
catalog asks for, partitions are added (never removed: Kafka cannot), and topic configs are set to
the catalog's values, so a retention change in the catalog reaches the cluster on the next apply.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic
from kafka.errors import TopicAlreadyExistsError

from ingestion.security import KafkaSecuritySettings, kafka_python_kwargs
from schemas.topics import TOPICS, TopicSpec


@dataclass(frozen=True)
class TopicChange:
    """What apply did to one topic: created, partitions_added, configured or unchanged."""

    topic: str
    action: str
    partitions: int


def apply_topics(bootstrap: str, topics: tuple[TopicSpec, ...] = TOPICS, replication_factor: int = 1,
                 timeout_ms: int = 30_000, min_insync_replicas: int | None = None,
                 security: KafkaSecuritySettings | None = None) -> list[TopicChange]:
    """Create missing topics, grow partitions, and set configs; returns one change per topic.

    On a cluster pass its replication factor (3) and ``min_insync_replicas`` (2): the latter becomes a config
    of every topic, so an acks=all write is on two replicas before it is acknowledged. ``security``: as
    whom (default: this process's GIGAPULSE_KAFKA_* identity); with ACLs on, the admin.
    """
    def config(t: TopicSpec) -> dict[str, str]:
        cfg = t.config()
        if min_insync_replicas is not None:
            cfg["min.insync.replicas"] = str(min_insync_replicas)
        return cfg

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="gigapulse-topics",
                             request_timeout_ms=timeout_ms, **kafka_python_kwargs(security))
    try:
        described = admin.describe_topics()
        # kafka-python 3 names the key "name"; 2.x named it "topic".
        existing = {(t.get("name") or t.get("topic")): len(t["partitions"]) for t in described}
        changes: list[TopicChange] = []
        missing = [t for t in topics if t.name not in existing]
        if missing:
            new = [NewTopic(t.name, t.partitions, replication_factor, topic_configs=config(t)) for t in missing]
            # A concurrent apply may win the race; the end state is the same.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new, timeout_ms=timeout_ms, wait_for_metadata=True)
            changes += [TopicChange(t.name, "created", t.partitions) for t in missing]
        for t in topics:
            if t.name not in existing:
                continue
            have = existing[t.name]
            action = "configured"
            if have < t.partitions:
                admin.create_partitions({t.name: NewPartitions(total_count=t.partitions)})
                action = "partitions_added"
            admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, t.name, configs=config(t))])
            changes.append(TopicChange(t.name, action, max(have, t.partitions)))
        return changes
    finally:
        admin.close()
