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
