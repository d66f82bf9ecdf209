"""``gigapulse rollup``: incremental by default, forced by date, and every mistake one line."""

from __future__ import annotations

import os
from datetime import date

import pytest

from tests.cli_support import run_cli
from tests.transforms.warehouse.rollups.support import at, health_row, sensor, write_rows
from transforms.warehouse import write_sensors
from transforms.warehouse.rollups import read_record, rollup_path

D1, D2 = date(2026, 3, 1), date(2026, 3, 2)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    for k in list(os.environ):
        if k.startswith("GIGAPULSE_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("GIGAPULSE_DATA_DIR", str(tmp_path))
    lake = tmp_path / "lake"
    for i, d in enumerate((D1, D2)):
        write_rows(lake, "sensor_health", [health_row("a", at(d, 8, m), 60) for m in range(3)], first=10 * i)
    write_sensors(lake, [sensor("a")])
    return tmp_path


def run(argv, capsys) -> tuple[int, str, str]:
    return run_cli(argv, capsys)


def test_incremental_then_up_to_date_then_forced(data_dir, capsys):
    lake = data_dir / "lake"
    rc, out, err = run(["lake", "rollup"], capsys)
    assert rc == 0, err
    assert "sensor_health_daily" in out and "new" in out
    assert {read_record(rollup_path(lake, "sensor_health_daily", d))["date"] for d in (D1, D2)} == \
        {"2026-03-01", "2026-03-02"}
    rc, out, _ = run(["lake", "rollup"], capsys)
    assert rc == 0 and "up to date" in out
    rc, out, _ = run(["lake", "rollup", "--date", "2026-03-02", "--rollup", "sensor_health_daily"], capsys)
    assert rc == 0 and "requested" in out and "│ 1 " in out


def test_a_changed_shift_setting_rebuilds_the_shift_rollup_only(data_dir, capsys, monkeypatch):
    write_rows(data_dir / "lake", "energy_features", [{
        "window_start": at(D1, 23), "window_end": at(D1, 23, 1), "site": "ref", "line": "L1",
        "station": "L1-coat-c", "kwh": 1.0}], topic="plant.readings.v1")
    assert run(["lake", "rollup"], capsys)[0] == 0
    monkeypatch.setenv("GIGAPULSE_SHIFT_STARTS", "07:00,19:00")
    rc, out, _ = run(["lake", "rollup"], capsys)
    assert rc == 0 and "energy_shift" in out and "definition" in out and "sensor_daily" not in out


@pytest.mark.parametrize(("argv", "env", "code", "needle"), [
    (["lake", "rollup", "--date", "2026-02-30"], {}, 2, "'2026-02-30' is not a date YYYY-MM-DD"),
    (["lake", "rollup", "--since", "yesterday"], {}, 2, "'yesterday' is not a date"),
    (["lake", "rollup", "--date", "2026-03-01", "--all"], {}, 2, "at most one of --date, --since and --all"),
    (["lake", "rollup", "-r", "scrap_daily"], {}, 2, "unknown rollup 'scrap_daily'"),
    (["lake", "rollup"], {"GIGAPULSE_SHIFT_STARTS": "6:00,6:00"}, 1, "names a shift start twice"),
    (["lake", "rollup"], {"GIGAPULSE_DATA_DIR": "/nonexistent-gigapulse"}, 1, "no lake at /nonexistent-gigapulse/lake"),
])
def test_mistakes_are_one_line(data_dir, capsys, monkeypatch, argv, env, code, needle):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    rc, _, err = run(argv, capsys)
    assert rc == code and err.startswith("gigapulse: error:") and err.count("\n") == 1, err
    assert needle in err
