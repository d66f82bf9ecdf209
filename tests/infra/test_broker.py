"""The broker lifecycle through the CLI, on its own ports and data dir: start, status, stop."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psutil
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.integration


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gigapulse.cli", *args], capture_output=True, text=True,
                          env=env, timeout=180)


def test_start_status_stop_leaves_no_process(tmp_path):
    env = dict(os.environ, GIGAPULSE_BROKER_PORT=str(free_port()),
               GIGAPULSE_BROKER_CONTROLLER_PORT=str(free_port()), GIGAPULSE_BROKER_DATA_DIR=str(tmp_path))
    started = _cli("broker", "start", env=env)
    assert started.returncode == 0, started.stderr
    assert "running" in started.stdout and "plant.readings.v1" in started.stdout
    pid = json.loads((tmp_path / "broker.pid").read_text())["pid"]
    try:
        again = _cli("broker", "start", env=env)
        assert again.returncode == 0, again.stderr
        assert f"pid={pid}" in again.stdout  # a second start is harmless: same process

        st = _cli("broker", "status", env=env)
        assert st.returncode == 0
        assert f"pid={pid}" in st.stdout and env["GIGAPULSE_BROKER_PORT"] in st.stdout
        assert "plant.dlq.v1" in st.stdout
    finally:
        stopped = _cli("broker", "stop", env=env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not (tmp_path / "broker.pid").exists()
    st = _cli("broker", "status", env=env)
    assert st.returncode == 3 and "stopped" in st.stdout


def test_stale_pid_file_is_recovered(tmp_path):
    (tmp_path / "broker.pid").write_text(json.dumps({"pid": os.getpid(), "port": 1, "controller_port": 2}))
    env = dict(os.environ, GIGAPULSE_BROKER_DATA_DIR=str(tmp_path),
               GIGAPULSE_BROKER_PORT=str(free_port()), GIGAPULSE_BROKER_CONTROLLER_PORT=str(free_port()))
    st = _cli("broker", "status", env=env)
    assert st.returncode == 3  # our own pid is alive but is not a Kafka broker: stale
    assert not (tmp_path / "broker.pid").exists()


def test_missing_java_is_one_line(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path), GIGAPULSE_BROKER_DATA_DIR=str(tmp_path),
               GIGAPULSE_BROKER_PORT=str(free_port()), GIGAPULSE_BROKER_CONTROLLER_PORT=str(free_port()))
    res = _cli("broker", "start", env=env)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "java" in lines[0] and "install" in lines[0]


def test_bad_port_setting_is_one_line(tmp_path):
    env = dict(os.environ, GIGAPULSE_BROKER_PORT="not-a-port", GIGAPULSE_BROKER_DATA_DIR=str(tmp_path))
    res = _cli("broker", "status", env=env)
    assert res.returncode == 1
    assert len(res.stderr.strip().splitlines()) == 1 and "port" in res.stderr


def _props(settings, node=None) -> dict[str, str]:
    from infra.broker import server_properties

    return dict(line.split("=", 1) for line in server_properties(settings, node).splitlines())


def test_single_node_config_is_what_it_always_was(tmp_path):
    from infra.broker import BrokerSettings

    s = BrokerSettings(port=19092, controller_port=19093, data_dir=tmp_path)
    props = _props(s)
    assert props["node.id"] == "1" and props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["log.dirs"] == str(tmp_path / "logs") and s.pid_file == tmp_path / "broker.pid"
    assert props["offsets.topic.replication.factor"] == "1" and props["transaction.state.log.min.isr"] == "1"
    assert "min.insync.replicas" not in props and "default.replication.factor" not in props
    assert s.bootstrap == "127.0.0.1:19092" and s.replication_factor == 1


def test_three_nodes_are_one_quorum_with_rf_3_and_min_isr_2(tmp_path):
    from infra.broker import BrokerSettings

    s = BrokerSettings(port=19100, controller_port=19101, data_dir=tmp_path, nodes=3)
    nodes = s.node_list
    assert [n.node_id for n in nodes] == [1, 2, 3]
    assert s.bootstrap == "127.0.0.1:19100,127.0.0.1:19102,127.0.0.1:19104"
    ports = [p for n in nodes for p in (n.port, n.controller_port)]
    assert len(set(ports)) == 6
    all_props = [_props(s, n) for n in nodes]
    assert len({p["log.dirs"] for p in all_props}) == 3 and len({p["listeners"] for p in all_props}) == 3
    for n, props in zip(nodes, all_props, strict=True):
        assert props["node.id"] == str(n.node_id)
        assert props["controller.quorum.voters"] == "1@127.0.0.1:19101,2@127.0.0.1:19103,3@127.0.0.1:19105"
        assert props["advertised.listeners"] == f"PLAINTEXT://127.0.0.1:{n.port}"
        assert props["log.dirs"] == str(tmp_path / f"node-{n.node_id}" / "logs")
        assert props["default.replication.factor"] == props["offsets.topic.replication.factor"] == "3"
        assert props["transaction.state.log.replication.factor"] == "3"
        assert props["min.insync.replicas"] == props["transaction.state.log.min.isr"] == "2"
        assert props["unclean.leader.election.enable"] == "false"
    assert (s.replication_factor, s.min_insync_replicas) == (3, 2)


def test_stop_and_status_find_a_cluster_from_its_pid_file(tmp_path):
    from infra.broker import BrokerSettings, as_recorded

    entries = {str(i): {"pid": 1, "port": 19200 + 2 * (i - 1), "controller_port": 19201 + 2 * (i - 1)}
               for i in (1, 2, 3)}
    (tmp_path / "broker.pid").write_text(json.dumps({"nodes": entries}))
    s = as_recorded(BrokerSettings(data_dir=tmp_path))
    assert (s.nodes, s.port, s.controller_port) == (3, 19200, 19201)
    env = dict(os.environ, GIGAPULSE_BROKER_DATA_DIR=str(tmp_path))
    st = _cli("broker", "status", env=env)  # pid 1 is no Kafka node of ours: stale, the file goes
    assert st.returncode == 3 and "stopped" in st.stdout
    assert not (tmp_path / "broker.pid").exists()
