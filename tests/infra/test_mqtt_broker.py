"""The private Mosquitto: it serves on its port while in use, and is gone (process and port) after."""

from __future__ import annotations

import psutil

from infra.broker import port_open
from infra.mqtt_broker import running_mosquitto


def test_mosquitto_serves_inside_and_is_gone_after(tmp_path):
    with running_mosquitto(tmp_path) as server:
        assert port_open(server.host, server.port)
        pid, port = server.pid, server.port
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not port_open("127.0.0.1", port)
    with running_mosquitto(tmp_path, port=port) as again:  # the same port and folder: how a test restarts it
        assert again.port == port and port_open(again.host, port)
