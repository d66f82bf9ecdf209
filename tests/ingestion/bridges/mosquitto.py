"""A real Mosquitto broker for the MQTT bridge tests: Debian's ``/usr/sbin/mosquitto`` on a free loopback port.

Started as a subprocess with a generated config (anonymous, no persistence), waited for until its
port accepts, stopped by its PID. Use :func:`running_mosquitto` as a context manager or the
``mosquitto`` fixture (via ``pytest_plugins`` or a conftest that imports it).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

MOSQUITTO = "/usr/sbin/mosquitto"


@dataclass(frozen=True)
class MosquittoServer:
    host: str
    port: int
    pid: int
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, log: Path, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {proc.returncode}: {log.read_text()[-500:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"mosquitto did not listen on 127.0.0.1:{port} within {timeout_s} s")


@contextmanager
def running_mosquitto(workdir: Path, port: int | None = None) -> Iterator[MosquittoServer]:
    """Mosquitto on ``port`` (default a free one) of 127.0.0.1, configured in ``workdir``; stopped (by PID)
    on exit. Starting one again on the same port and folder is how a test takes the broker away and back."""
    exe = shutil.which(MOSQUITTO) or shutil.which("mosquitto")
    if exe is None:
        pytest.skip("mosquitto is not installed (infra/system-deps.sh installs it)")
    port = port or _free_port()
    conf = workdir / "mosquitto.conf"
    log = workdir / "mosquitto.log"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 100000\nmax_inflight_messages 0\n"
                    f"log_dest file {log}\nlog_type error\nlog_type warning\nlog_type notice\n")
    log.touch()
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        _wait_port(port, proc, log)
        yield MosquittoServer("127.0.0.1", port, proc.pid, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoServer]:
    """A fresh broker per test (starting one takes a few milliseconds)."""
    with running_mosquitto(tmp_path) as server:
        yield server
