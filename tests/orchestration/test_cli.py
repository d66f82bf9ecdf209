"""``gigapulse jobs``: the launchers start real Dagster processes; ``list`` and ``run`` load the definitions.

The webserver and daemon tests run what docker-compose runs (``gigapulse jobs webserver|daemon``), in a
temporary DAGSTER_HOME with Dagster's default local storage, and stop exactly the processes they started.
``run`` is exercised through the CLI's entry point, as a user types it, on a temporary DAGSTER_HOME.
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
from datetime import date
from pathlib import Path

import dagster as dg
import psutil
import pytest

from orchestration.partitions import build_daily_partitions
from tests.cli_support import run_cli

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
def test_dagster_home_defaults_to_the_data_directory(monkeypatch, tmp_path, unset):
    """One default with the stream: <GIGAPULSE_DATA_DIR>/dagster, wherever the command runs."""
    from orchestration.cli import ensure_dagster_home

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIGAPULSE_DATA_DIR", str(tmp_path / "data"))
    if unset:
        monkeypatch.delenv("DAGSTER_HOME", raising=False)
        assert ensure_dagster_home() == tmp_path.resolve() / "data" / "dagster"
        assert "enabled: false" in (tmp_path / "data" / "dagster" / "dagster.yaml").read_text()
    else:
        monkeypatch.setenv("DAGSTER_HOME", "rel/home")
        assert ensure_dagster_home() == tmp_path.resolve() / "rel" / "home"
    assert os.environ["DAGSTER_HOME"] == str(ensure_dagster_home())
    assert Path(os.environ["DAGSTER_HOME"]).is_absolute()


# --------------------------------------------------------------------------- jobs run

@pytest.fixture
def tiny_defs(monkeypatch, tmp_path):
    """A daily-partitioned asset that records each day it ran for, a failing one, and an unpartitioned
    one, as the code location ``jobs run`` loads; DAGSTER_HOME in the test's directory."""
    parts = build_daily_partitions(date(2026, 11, 1))
    ran = tmp_path / "ran"
    ran.mkdir()

    # Unannotated context and results: this module's postponed annotations would be strings to Dagster.
    @dg.asset(partitions_def=parts)
    def day_marker(context):
        """Touches a file named by its day."""
        (ran / context.partition_key).touch()
        return dg.MaterializeResult(metadata={"day": context.partition_key})

    @dg.asset(partitions_def=parts)
    def fails_on_the_2nd(context):
        """Fails for 2026-11-02 only."""
        if context.partition_key == "2026-11-02":
            raise RuntimeError("no data for 2026-11-02\nsecond line")

    @dg.asset
    def whole():
        """Unpartitioned."""

    defs = dg.Definitions(assets=[day_marker, fails_on_the_2nd, whole],
                          jobs=[dg.define_asset_job("day_job", [day_marker]),
                                dg.define_asset_job("flaky_job", [fails_on_the_2nd]),
                                dg.define_asset_job("whole_job", [whole])])
    monkeypatch.setattr("orchestration.definitions.defs", defs)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return ran


def run(argv, capsys) -> tuple[int, str, str]:
    return run_cli(["jobs", "run", *argv], capsys)


def test_run_backfills_a_range_one_materialization_per_day(tiny_defs, capsys):
    rc, out, err = run(["day_job", "--from", "2026-11-02", "--to", "2026-11-03"], capsys)
    assert rc == 0, err
    assert sorted(p.name for p in tiny_defs.iterdir()) == ["2026-11-02", "2026-11-03"]
    assert [line.split()[:2] for line in out.splitlines()] == [["2026-11-02", "ok"], ["2026-11-03", "ok"]]
    with dg.DagsterInstance.get() as instance:
        assert instance.get_materialized_partitions(dg.AssetKey("day_marker")) == {"2026-11-02", "2026-11-03"}
        records = instance.fetch_materializations(dg.AssetKey("day_marker"), limit=10).records
        assert sorted(r.partition_key for r in records) == ["2026-11-02", "2026-11-03"]

    rc, out, err = run(["day_job", "--partition", "2026-11-04"], capsys)
    assert rc == 0, err
    assert "2026-11-04  ok  1 materialization(s)" in out


def test_run_an_unpartitioned_job(tiny_defs, capsys):
    rc, out, err = run(["whole_job"], capsys)
    assert rc == 0, err
    assert out.startswith("whole_job  ok  1 materialization(s)")


def test_a_failed_day_does_not_stop_the_backfill_and_fails_the_command(tiny_defs, capsys):
    rc, out, err = run(["flaky_job", "--from", "2026-11-01", "--to", "2026-11-03"], capsys)
    assert rc == 1
    assert [line.split()[:2] for line in out.splitlines()] == [["2026-11-01", "ok"], ["2026-11-02", "FAILED"],
                                                              ["2026-11-03", "ok"]]
    assert err.strip().splitlines() == ["gigapulse: error: 1 of 3 run(s) failed (2026-11-02); first: step "
                                        "fails_on_the_2nd: RuntimeError: no data for 2026-11-02"]


@pytest.mark.parametrize(("argv", "message"), [
    (["nope"], "unknown job 'nope'; jobs are day_job, flaky_job, whole_job"),
    (["day_job", "--partition", "2026-13-01"], "--partition '2026-13-01' is not a date YYYY-MM-DD"),
    (["day_job", "--partition", "20261101"], "--partition '20261101' is not a date YYYY-MM-DD"),
    (["day_job", "--from", "2026-11-03", "--to", "2026-11-02"], "--from 2026-11-03 is after --to 2026-11-02"),
    (["day_job", "--from", "2026-11-03"], "--from and --to go together"),
    (["day_job", "--partition", "2026-11-03", "--from", "2026-11-03", "--to", "2026-11-04"], "give either --partition or --from/--to, not both"),
    (["day_job"], "job 'day_job' is partitioned by day; give --partition DATE or --from DATE --to DATE"),
    (["day_job", "--partition", "2026-10-31"], "2026-10-31 outside the partitions of job 'day_job' (2026-11-01 to "),
    (["whole_job", "--partition", "2026-11-03"], "job 'whole_job' is not partitioned"),
])
def test_bad_requests_fail_in_one_line_before_any_run(tiny_defs, capsys, argv, message):
    rc, out, err = run(argv, capsys)
    assert rc == 1
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"gigapulse: error: {message}")
    assert out == "" and not any(tiny_defs.iterdir())
