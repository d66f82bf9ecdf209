"""The Dagster code location loads, and the CLI that serves it starts real Dagster processes.

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
import types
import urllib.error
import urllib.request
from pathlib import Path

import dagster as dg
import psutil
import pytest

from orchestration.definitions import (
    DUCKDB_WRITER_TAG,
    WarehouseResource,
    defs,
    lake_compaction,
    lake_rollups,
    warehouse_catalog,
    warehouse_catalog_every_15_minutes,
    warehouse_catalog_job,
)

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


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    # Each domain merged into the code location adds its own assets (orchestration/<domain>/).
    assert {"warehouse_catalog", "lake_compaction", "lake_rollups"} <= {
        s.key.to_user_string() for s in defs.resolve_all_asset_specs()}
    assert defs.resolve_job_def("lake_compaction_job").tags[DUCKDB_WRITER_TAG] == "true"
    assert defs.resolve_job_def("warehouse_catalog_job").tags[DUCKDB_WRITER_TAG] == "true"


def test_every_asset_has_a_docstring():
    for spec in defs.resolve_all_asset_specs():
        assert spec.description and spec.description.strip(), spec.key


def test_schedule_is_stopped_by_default_and_targets_the_job():
    assert warehouse_catalog_every_15_minutes.cron_schedule == "*/15 * * * *"
    assert warehouse_catalog_every_15_minutes.default_status is dg.DefaultScheduleStatus.STOPPED
    assert warehouse_catalog_every_15_minutes.job_name == warehouse_catalog_job.name


def test_warehouse_paths_follow_the_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("GIGAPULSE_DATA_DIR", str(tmp_path))
    paths = WarehouseResource().paths()
    assert paths.lake_root == tmp_path / "lake"
    assert paths.db_path == tmp_path / "gigapulse.duckdb"

    monkeypatch.delenv("GIGAPULSE_DATA_DIR")
    paths = WarehouseResource().paths()
    # One default data directory with the stream workers: var/ of the checkout, wherever the run starts.
    from transforms.settings import DataSettings
    assert (paths.lake_root, paths.db_path) == (DataSettings().lake_root, DataSettings().db_path)
    assert paths.lake_root.is_absolute()

    explicit = WarehouseResource(lake_root="/l", db_path="/w.duckdb").paths()
    assert (explicit.lake_root, explicit.db_path) == (Path("/l"), Path("/w.duckdb"))


def test_warehouse_catalog_calls_build_catalog(monkeypatch, tmp_path):
    calls: list[tuple[Path, Path]] = []
    fake = types.ModuleType("transforms.warehouse")
    def build_catalog(lake_root, db_path):
        calls.append((lake_root, db_path))
        return {"readings": "parquet", "sensors": "empty"}

    fake.build_catalog = build_catalog
    # The asset imports transforms.warehouse when it runs; a stand-in keeps this test about the wiring.
    monkeypatch.setitem(sys.modules, "transforms.warehouse", fake)

    resource = WarehouseResource(lake_root=str(tmp_path / "lake"), db_path=str(tmp_path / "w.duckdb"))
    result = warehouse_catalog(context=dg.build_asset_context(), warehouse=resource)

    assert calls == [(tmp_path / "lake", tmp_path / "w.duckdb")]
    assert result.metadata["db_path"].value == str(tmp_path / "w.duckdb")
    assert result.metadata["views_without_data"] == 1


def test_warehouse_catalog_job_builds_a_real_catalog_twice(tmp_path):
    """The real build over an empty lake, through Dagster's executor; a rebuild leaves the same views."""
    import duckdb

    resource = WarehouseResource(lake_root=str(tmp_path / "lake"), db_path=str(tmp_path / "w.duckdb"))
    views = []
    for _ in range(2):
        result = dg.materialize([warehouse_catalog], resources={"warehouse": resource})
        assert result.success
        with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
            views.append(sorted(r[0] for r in con.execute(
                "SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()))
    assert views[0] and views[0] == views[1]


def test_lake_compaction_asset_compacts_a_real_lake(tmp_path):
    """The maintenance step through Dagster's executor: committed stream files merged, rows unchanged."""
    from datetime import date

    import duckdb

    from tests.transforms.warehouse.rollups.support import at, event, write_rows
    from tests.transforms.warehouse.test_maintenance import BATCH, make_lake, set_checkpoint

    lake = tmp_path / "lake"
    truth = make_lake(lake, batches=4)
    day = date(2026, 11, 28)
    write_rows(lake, "production_events", [event(at(day, 9), "c1", "enter", offset=0),
                                           event(at(day, 9, 5), "c1", "leave", offset=1)])
    for p in (0, 1):
        set_checkpoint(lake, p, 4 * BATCH)
    resource = WarehouseResource(lake_root=str(lake), db_path=str(tmp_path / "w.duckdb"))
    result = dg.materialize([lake_compaction, lake_rollups], resources={"warehouse": resource})
    assert result.success
    assert result.asset_materializations_for_node("lake_rollups")[0].metadata["rollup_days_built"].value >= 1
    meta = result.asset_materializations_for_node("lake_compaction")[0].metadata
    assert meta["generation"].value == 1
    assert meta["hot_files_merged"].value >= 8
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*), sum(value) FROM readings").fetchone() == truth


def test_jobs_list_prints_the_definitions():
    proc = subprocess.run([*_gigapulse(), "jobs", "list"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in ("warehouse_catalog", "warehouse_catalog_job", "warehouse_catalog_every_15_minutes"):
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
