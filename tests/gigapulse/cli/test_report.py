"""``gigapulse report``: writes a page per plant; a missing warehouse or an unknown plant is one line."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.cli_support import run_cli


@pytest.fixture
def data_dir(tmp_path, monkeypatch, two_plant_warehouse):
    for k in list(os.environ):
        if k.startswith("GIGAPULSE_"):
            monkeypatch.delenv(k)
    shutil.copy(two_plant_warehouse, tmp_path / "gigapulse.duckdb")  # views name the fixture's lake
    monkeypatch.setenv("GIGAPULSE_DATA_DIR", str(tmp_path))
    return tmp_path


def run(argv, capsys) -> tuple[int, str, str]:
    return run_cli(argv, capsys)


def test_one_plant_into_the_default_directory(data_dir, capsys):
    rc, out, err = run(["report", "--plant", "leg"], capsys)
    assert rc == 0, err
    assert f"report: {data_dir / 'report' / 'leg.html'}" in out
    assert (data_dir / "report" / "leg.html").exists() and not (data_dir / "report" / "ref.html").exists()


def test_mistakes_are_one_line(data_dir, capsys, tmp_path_factory):
    rc, _, err = run(["report", "--plant", "nope"], capsys)
    assert rc != 0 and err.strip().count("\n") == 0 and "no plant nope" in err
    os.environ["GIGAPULSE_DATA_DIR"] = str(tmp_path_factory.mktemp("empty"))
    rc, _, err = run(["report"], capsys)
    assert rc != 0 and err.strip().count("\n") == 0 and "no warehouse at" in err
