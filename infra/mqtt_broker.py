"""A private Mosquitto (Debian's ``/usr/sbin/mosquitto``) on a loopback port, for tests and benchmarks.

The MQTT bridge is only worth testing against a real broker, and its benchmark must use the same one.
The server runs with a generated config (anonymous, no persistence, queues unbounded so that a
pre-filled or slow subscriber never loses a message to the broker's own limits), is waited for until
its port accepts, and is stopped by its PID. Starting it again on the same port and folder is how a
test takes the broker away and brings it back.
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

MOSQUITTO = "/usr/sbin/mosquitto"


class MosquittoError(RuntimeError):
    """Mosquitto is missing or did not start; the message is one line."""


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


def _wait_port(port: int, proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise MosquittoError(f"mosquitto exited with {proc.returncode}: "
                                 f"{' | '.join(log.read_text(errors='replace').splitlines()[-3:])}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise MosquittoError(f"mosquitto did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s")


@contextmanager
def running_mosquitto(workdir: Path, port: int | None = None, start_timeout_s: float = 10.0
                      ) -> Iterator[MosquittoServer]:
    """Mosquitto on ``port`` (default a free one) of 127.0.0.1, configured and logging in ``workdir``."""
    exe = shutil.which(MOSQUITTO) or shutil.which("mosquitto")
    if exe is None:
        raise MosquittoError("mosquitto is not installed (infra/system-deps.sh installs it)")
    port = port or _free_port()
    conf, log = workdir / "mosquitto.conf", workdir / "mosquitto.log"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 0\n"
                    f"log_dest file {log}\nlog_type error\nlog_type warning\nlog_type notice\n")
    log.touch()
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        _wait_port(port, proc, log, start_timeout_s)
        yield MosquittoServer("127.0.0.1", port, proc.pid, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
