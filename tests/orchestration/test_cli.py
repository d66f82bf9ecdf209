"""``gigapulse jobs``: the launchers start real Dagster processes; ``list`` and ``run`` load the definitions.

The webserver and daemon tests run what docker-compose runs (``gigapulse jobs webserver|daemon``), in a
temporary DAGSTER_HOME with Dagster's default local storage, and stop exactly the processes they started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

START_TIMEOUT_S = 60.0


def _gigapulse() -> list[str]:
    """The installed console script beside this interpreter, as the stack runs it."""
    script = Path(sys.executable).parent / "gigapulse"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gigapulse.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(dagster_home: Path) -> dict[str, str]:
    env = dict(os.environ, DAGSTER_HOME=str(dagster_home))
    # Keeps Dagster's first-run telemetry notice out of the test logs.
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return env


def _stop(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Stop the process we started and every process it spawned (Dagster's code servers), by pid."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    _, alive = psutil.wait_procs(children, timeout=timeout)
    for child in alive:
        child.kill()
    psutil.wait_procs(alive, timeout=10)


def test_jobs_list_prints_the_definitions():
    proc = subprocess.run([*_gigapulse(), "jobs", "list"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in ("warehouse_catalog", "warehouse_catalog_job", "warehouse_catalog_every_15_minutes",
                 "new_lake_partitions"):
        assert name in proc.stdout
    assert "__ASSET_JOB" not in proc.stdout


def test_jobs_webserver_serves_server_info(tmp_path):
    port = _free_port()
    log = tmp_path / "webserver.log"
    with log.open("w") as sink:
        proc = subprocess.Popen([*_gigapulse(), "jobs", "webserver", "--port", str(port)], cwd=tmp_path,
                                env=_env(tmp_path), stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as resp:
                    status = resp.status
                    info = resp.read()
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        assert status == 200, f"webserver not up in {START_TIMEOUT_S:.0f} s:\n{log.read_text()[-3000:]}"
        assert b"dagster_webserver_version" in info
    finally:
        _stop(proc)


def test_jobs_daemon_stays_up(tmp_path):
    log = tmp_path / "daemon.log"
    with log.open("w") as sink:
        proc = subprocess.Popen([*_gigapulse(), "jobs", "daemon"], cwd=tmp_path, env=_env(tmp_path),
                                stdout=sink, stderr=subprocess.STDOUT)
    try:
        time.sleep(5)
        assert proc.poll() is None, f"daemon exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        # exec replaced gigapulse, so the pid we hold is Dagster's daemon itself.
        assert "dagster-daemon" in " ".join(psutil.Process(proc.pid).cmdline())
    finally:
        _stop(proc)


@pytest.mark.parametrize("unset", [True, False])
def test_dagster_home_defaults_to_var(monkeypatch, tmp_path, unset):
    from orchestration.cli import ensure_dagster_home

    monkeypatch.chdir(tmp_path)
    if unset:
        monkeypatch.delenv("DAGSTER_HOME", raising=False)
        assert ensure_dagster_home() == tmp_path.resolve() / "var" / "dagster"
        assert (tmp_path / "var" / "dagster" / "dagster.yaml").exists()
    else:
        monkeypatch.setenv("DAGSTER_HOME", "rel/home")
        assert ensure_dagster_home() == tmp_path.resolve() / "rel" / "home"
    assert os.environ["DAGSTER_HOME"] == str(ensure_dagster_home())
    assert Path(os.environ["DAGSTER_HOME"]).is_absolute()
