"""Faults of one node of a 3-node KRaft cluster while the simulator produces (acks=all) and a worker lands.

One cluster (the project's own, ``infra.temporary_broker(nodes=3)``) serves the whole module; every
test starts from freshly created plant topics (RF 3, min ISR 2), so its lake is compared with its own run
only. A node goes away by SIGKILL (the leader of a readings partition, or the active controller) or by
SIGTERM in turn (a rolling restart) and comes back; afterwards every reading the simulator reports as
acknowledged must be in the lake exactly once, and the longest stall of producing and landing is reported
(``RELIABILITY |`` lines, shown with ``pytest -s``, are the figures of docs/RELIABILITY.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from infra import broker, faults
from infra.broker import BrokerSettings
from infra.temporary import temporary_broker
from schemas.topics import TOPICS
from tests.outage_support import Progress, cli, readings_end, wait_for
from tests.transforms.support import lake_readings, report

pytestmark = pytest.mark.integration

READINGS = "plant.readings.v1"
PLANT_TOPICS = [t for t in TOPICS if t.name.startswith("plant.")]
#: Topics whose in-sync replicas must be whole again before the next fault: the readings and the group offsets.
WATCHED = [READINGS, "__consumer_offsets"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with temporary_broker(tmp_path_factory.mktemp("cluster"), nodes=3, heap="384m", topics=False) as s:
        yield s


@pytest.fixture
def fresh(cluster: BrokerSettings) -> BrokerSettings:
    """The cluster with empty plant topics (deleted and created again), every node up and every ISR whole."""
    names = [t.name for t in PLANT_TOPICS]
    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap, client_id="gigapulse-test")
    try:
        with contextlib.suppress(Exception):
            admin.delete_topics([n for n in names if n in broker.list_topics(cluster.bootstrap)])
    finally:
        admin.close()
    wait_for(lambda: not set(names) & set(broker.list_topics(cluster.bootstrap)), 60, "the old topics to go")
    broker.apply_catalog(cluster)
    wait_for(lambda: not faults.under_replicated(cluster.bootstrap, WATCHED), 60, "full ISRs")
    return cluster


def test_the_cluster_is_three_nodes_with_rf_3_and_min_isr_2(fresh, tmp_path):
    """What `gigapulse broker start --nodes 3` promises, read back from the running cluster and its CLI."""
    from kafka.admin import ConfigResource, ConfigResourceType

    parts = faults.describe_partitions(fresh.bootstrap, [t.name for t in TOPICS])
    assert len(parts) == sum(t.partitions for t in TOPICS)
    assert all(sorted(p["replicas"]) == [1, 2, 3] and p["leader"] in (1, 2, 3) for p in parts.values())
    admin = KafkaAdminClient(bootstrap_servers=fresh.bootstrap, client_id="gigapulse-test")
    try:
        found = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t.name, {"min.insync.replicas": None})
                                        for t in TOPICS])["topic"]
    finally:
        admin.close()
    assert {found[t.name]["min.insync.replicas"]["value"] for t in TOPICS} == {"2"}
    assert faults.active_controller(fresh.bootstrap) in (1, 2, 3)
    res = subprocess.run([sys.executable, "-m", "gigapulse.cli", "broker", "status", "--data-dir", str(fresh.data_dir)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count(" up  pid=") == 3 and fresh.bootstrap in res.stdout


def _env(settings: BrokerSettings, data: Path, group: str) -> dict[str, str]:
    return dict(os.environ, GIGAPULSE_BOOTSTRAP_SERVERS=settings.bootstrap, GIGAPULSE_DATA_DIR=str(data),
                GIGAPULSE_STREAM_GROUP_ID=group, GIGAPULSE_STREAM_PUBLISH_FEATURES="false",
                GIGAPULSE_PRODUCER_ACKS="all")


def _node_back(settings: BrokerSettings, node_id: int) -> float:
    """Restart a node, wait for its replicas to be in sync again; seconds until the ISRs were whole."""
    t0 = time.monotonic()
    faults.restart_node(settings, node_id)
    wait_for(lambda: not faults.under_replicated(settings.bootstrap, WATCHED), 180,
             f"node {node_id}'s replicas to be in sync again")
    return time.monotonic() - t0


def _kill_leader(settings: BrokerSettings) -> str:
    leader = faults.partition_leader(settings.bootstrap, READINGS, 0)
    faults.kill_node(settings, leader, signal.SIGKILL)
    t0 = time.monotonic()
    wait_for(lambda: faults.partition_leader(settings.bootstrap, READINGS, 0) not in (leader, -1), 60,
             "a new leader of the partition")
    moved = time.monotonic() - t0
    isr = _node_back(settings, leader)
    return f"leader node {leader} SIGKILLed; new leader after {moved:.1f} s; ISR whole {isr:.1f} s after restart"


def _kill_controller(settings: BrokerSettings) -> str:
    active = faults.active_controller(settings.bootstrap)
    faults.kill_node(settings, active, signal.SIGKILL)
    t0 = time.monotonic()
    wait_for(lambda: faults.active_controller(settings.bootstrap) not in (active, -1), 60, "a new active controller")
    elected = time.monotonic() - t0
    isr = _node_back(settings, active)
    return (f"active controller node {active} SIGKILLed; new controller after {elected:.1f} s; "
            f"ISR whole {isr:.1f} s after restart")


def _rolling_restart(settings: BrokerSettings) -> str:
    took = []
    for node_id in range(1, settings.nodes + 1):
        t0 = time.monotonic()
        faults.kill_node(settings, node_id, signal.SIGTERM)
        _node_back(settings, node_id)
        took.append(time.monotonic() - t0)
    return "rolling restart (SIGTERM) of nodes 1-3, " + ", ".join(f"{t:.0f} s" for t in took) + " per node"


def _run(settings: BrokerSettings, tmp_path: Path, fault: Callable[[BrokerSettings], str], what: str,
         duration: str, stream: bool) -> None:
    """Simulate (and stream, if ``stream``), inject ``fault`` once the first data is there, then check the lake."""
    data = tmp_path / "data"
    env = _env(settings, data, f"g-{tmp_path.name}")
    sim_log, worker_log, summary = tmp_path / "sim.log", tmp_path / "worker.log", tmp_path / "summary.json"
    procs = []
    with Progress(settings.bootstrap, data / "lake") as progress:
        worker = cli(["stream"], env, worker_log) if stream else None
        sim = cli(["simulate", "--plant", "legacy", "--duration", duration, "--speed", "1", "--seed", "5",
                   "--summary-json", str(summary)], env, sim_log)
        procs = [p for p in (worker, sim) if p]
        alive = [(sim, sim_log)] + ([(worker, worker_log)] if worker else [])
        try:
            if stream:
                wait_for(lambda: lake_readings(data / "lake")[0] > 0, 120, "the first landed readings", alive=alive)
            else:
                wait_for(lambda: readings_end(settings.bootstrap) > 0, 120, "the first produced readings",
                         alive=alive)
            detail = fault(settings)
            assert sim.wait(timeout=240) == 0, sim_log.read_text()[-3000:]
            produced = json.loads(summary.read_text())
            assert produced["failed_sends"] == 0
            if stream:
                wait_for(lambda: lake_readings(data / "lake")[0] >= produced["readings"], 180,
                         "the lake to catch up", alive=[(worker, worker_log)])
                worker.send_signal(signal.SIGTERM)
                assert worker.wait(timeout=60) == 0, worker_log.read_text()[-3000:]
            else:
                res = subprocess.run([sys.executable, "-m", "gigapulse.cli", "stream", "--drain"], env=env,
                                     capture_output=True, text=True, timeout=240)
                assert res.returncode == 0, res.stderr[-3000:]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    rows, distinct = lake_readings(data / "lake")
    assert (rows, distinct) == (produced["readings"], produced["readings"])
    stalls = f"longest stall: producing {progress.producing_stall_s:.1f} s"
    if stream:
        stalls += f", landing {progress.landing_stall_s:.1f} s"
    report(what, produced["readings"], rows, distinct, f"{stalls}; {detail}")
    logs = sim_log.read_text() + (worker_log.read_text() if stream else "")
    assert "Traceback" not in logs


def test_partition_leader_sigkill_during_simulate(fresh, tmp_path):
    _run(fresh, tmp_path, _kill_leader, "3-node cluster: leader of a readings partition SIGKILLed during simulate",
         "40s", stream=False)


def test_partition_leader_sigkill_during_stream(fresh, tmp_path):
    _run(fresh, tmp_path, _kill_leader, "3-node cluster: leader of a readings partition SIGKILLed during "
         "simulate and stream", "40s", stream=True)


def test_active_controller_sigkill(fresh, tmp_path):
    _run(fresh, tmp_path, _kill_controller, "3-node cluster: active controller SIGKILLed during simulate and stream",
         "40s", stream=True)


def test_rolling_restart(fresh, tmp_path):
    _run(fresh, tmp_path, _rolling_restart, "3-node cluster: rolling restart (SIGTERM) during simulate and stream",
         "60s", stream=True)
