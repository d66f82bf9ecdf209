"""Faults of one node of a local cluster, and where leadership sits: what the cluster fault tests inject and watch.

Kept apart from :mod:`infra.broker`, which starts and stops brokers; these helpers only act on nodes it
started (found through its pid file) and ask the cluster, by the admin API, who leads what.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

import psutil

from infra.broker import BrokerError, BrokerSettings, node_pid, start


def kill_node(settings: BrokerSettings, node_id: int, sig: signal.Signals = signal.SIGKILL,
              timeout_s: float = 120.0) -> None:
    """Send ``sig`` to one node and wait until it has exited (a controlled shutdown on a busy machine may take
    a minute). Its pid file entry stays, so ``start`` knows the node belongs to the cluster."""
    pid = node_pid(settings, node_id)
    if pid is None:
        raise BrokerError(f"node {node_id} is not running")
    os.kill(pid, sig)
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(pid).wait(timeout_s)


def restart_node(settings: BrokerSettings, node_id: int) -> None:
    """Start a node that is down and wait until the cluster lists it as a broker again."""
    if node_pid(settings, node_id) is not None:
        raise BrokerError(f"node {node_id} is running")
    start(settings)


def partition_leader(bootstrap: str, topic: str, partition: int, timeout_ms: int = 10_000) -> int:
    """The broker id that leads one partition now (-1 while it has none)."""
    return describe_partitions(bootstrap, [topic], timeout_ms)[(topic, partition)]["leader"]


def _retried(fn, timeout_s: float = 60.0):
    """``fn()``, tried again while it fails: right after a node dies a client may still pick it to ask."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return fn()
        except Exception:  # noqa: BLE001 - any client failure while the cluster settles
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def describe_partitions(bootstrap: str, topics: list[str], timeout_ms: int = 10_000) -> dict[tuple[str, int], dict]:
    """(topic, partition) -> {"leader", "replicas", "isr"} from the cluster's metadata."""
    return _retried(lambda: _describe_partitions(bootstrap, topics, timeout_ms))


def _describe_partitions(bootstrap: str, topics: list[str], timeout_ms: int) -> dict[tuple[str, int], dict]:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, client_id="gigapulse-faults")
    try:
        found = {}
        for t in admin.describe_topics(topics):
            name = t.get("name") or t.get("topic")
            for p in t["partitions"]:
                pid = p.get("partition_index", p.get("partition"))
                found[(name, pid)] = {"leader": p.get("leader_id", p.get("leader")),
                                      "replicas": list(p.get("replica_nodes", p.get("replicas", []))),
                                      "isr": list(p.get("isr_nodes", p.get("isr", [])))}
        return found
    finally:
        admin.close()


def under_replicated(bootstrap: str, topics: list[str], timeout_ms: int = 10_000) -> list[tuple[str, int]]:
    """Partitions of ``topics`` whose in-sync replicas are fewer than their replicas."""
    return sorted(tp for tp, p in describe_partitions(bootstrap, topics, timeout_ms).items()
                  if len(p["isr"]) < len(p["replicas"]))


def active_controller(bootstrap: str, timeout_ms: int = 10_000) -> int:
    """The node id of the KRaft quorum's leader (the active controller), by the DescribeQuorum API.

    The controller id of a metadata response is no use here: a KRaft broker names a random broker.
    """
    return _retried(lambda: _active_controller(bootstrap, timeout_ms))


def _active_controller(bootstrap: str, timeout_ms: int) -> int:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, client_id="gigapulse-faults")
    try:
        quorum = admin.describe_metadata_quorum()
        return int(quorum["topics"][0]["partitions"][0]["leader_id"])
    finally:
        admin.close()
