"""``gigapulse lake``: the maintenance commands as a user and the compose service run them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb

from tests.transforms.warehouse.test_maintenance import BATCH, make_lake, set_checkpoint

REPO = Path(__file__).resolve().parents[3]


def gigapulse(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gigapulse.cli", *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO, env={**os.environ, "GIGAPULSE_DATA_DIR": str(data_dir),
                                         "GIGAPULSE_LAKE_SETTLE_S": "0", **env})  # the files are new: merge them


def test_compact_status_and_expire(tmp_path):
    truth = make_lake(tmp_path / "lake", batches=12)
    for p in (0, 1):
        set_checkpoint(tmp_path / "lake", p, 12 * BATCH)
    done = gigapulse(tmp_path, "lake", "compact")
    assert done.returncode == 0, done.stderr
    assert "generation 1: merged" in done.stdout
    db = tmp_path / "gigapulse.duckdb"
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*), sum(value) FROM readings").fetchone() == truth
        newest_day = con.execute("SELECT count(*) FROM readings WHERE date = DATE '2026-11-29'").fetchone()[0]
    status = json.loads(gigapulse(tmp_path, "lake", "status", "--json").stdout)
    readings = next(t for t in status["tables"] if t["table"] == "readings")
    assert readings["compacted_files"] == 2 and readings["hot_files"] == 0  # two days, one file each
    assert status["retention_days"]["readings"] == 90
    table = gigapulse(tmp_path, "lake", "status")
    assert "readings" in table.stdout and table.returncode == 0
    # Keeping one day keeps the newest day the table holds (not today: the data is from 2026-11-28/29).
    expired = gigapulse(tmp_path, "lake", "expire", "--table", "readings", GIGAPULSE_LAKE_RETENTION='{"readings": 1}')
    assert expired.returncode == 0, expired.stderr
    assert "expired 1 day(s)" in expired.stdout
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM readings").fetchone() == (newest_day,)


def test_bad_input_is_one_line(tmp_path):
    missing = gigapulse(tmp_path, "lake", "compact")
    assert missing.returncode == 1
    assert missing.stderr.startswith("gigapulse: error: no lake at") and len(missing.stderr.splitlines()) == 1
    (tmp_path / "lake").mkdir()
    bad_table = gigapulse(tmp_path, "lake", "compact", "--table", "nope")
    assert bad_table.returncode == 1 and "not compacted tables: nope" in bad_table.stderr
    bad_setting = gigapulse(tmp_path, "lake", "compact", GIGAPULSE_LAKE_RETENTION='{"nope": 3}')
    assert bad_setting.returncode == 1 and "unknown table(s) nope" in bad_setting.stderr
    assert len(bad_setting.stderr.splitlines()) == 1


def test_compact_loop_runs_steps_until_stopped(tmp_path):
    """What the compose service lake-maintenance runs: it may start before the stream made the lake."""
    proc = subprocess.Popen([sys.executable, "-m", "gigapulse.cli", "lake", "compact", "--loop"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "GIGAPULSE_DATA_DIR": str(tmp_path), "GIGAPULSE_LAKE_INTERVAL_S": "0.3",
                                 "GIGAPULSE_LAKE_SETTLE_S": "0"})
    time.sleep(2)  # the loop waits for a lake instead of stopping
    assert proc.poll() is None
    make_lake(tmp_path / "lake", batches=2)
    for p in (0, 1):
        set_checkpoint(tmp_path / "lake", p, 2 * BATCH)
    steps: list[str] = []
    deadline = time.monotonic() + 90
    while len(steps) < 3 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("generation "):
            steps.append(line)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert len(steps) >= 3, (steps, out, err)
    assert steps[0].startswith("generation 1: merged") and "merged 0 file(s)" in steps[-1]
