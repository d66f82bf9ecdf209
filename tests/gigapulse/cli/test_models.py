"""``gigapulse models``: the versions with their AUC and the champion; a person moves the champion, a bad
version is one line."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime

import pytest

from tests.cli_support import run_cli
from tests.transforms.predictive.support import planted
from transforms.predictive import registry as R
from transforms.predictive.training import land_model_row, model_rows, train_gate_model


@pytest.fixture
def lake(tmp_path, monkeypatch):
    """Two versions in the registry and the models table of ``GIGAPULSE_DATA_DIR``'s lake, the first champion."""
    for k in list(os.environ):
        if k.startswith("GIGAPULSE_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("GIGAPULSE_DATA_DIR", str(tmp_path))
    lake = tmp_path / "lake"
    versions = []
    for seed, day in ((1, date(2026, 3, 1)), (2, date(2026, 3, 2))):
        trained = train_gate_model(planted(n=1000, seed=seed), day, lake, created_at=datetime.now(UTC))
        R.save_model(lake, trained.model, trained.row)
        land_model_row(lake, trained.row)
        versions.append(trained.model.version)
    R.set_champion(lake, versions[0], by="check:promotable", reason="first")
    return lake, versions


def run(argv, capsys) -> tuple[int, str, str]:
    return run_cli(argv, capsys)


def test_list_shows_each_version_and_the_champion(lake, capsys):
    _, (first, second) = lake
    rc, out, err = run(["models", "list"], capsys)
    assert rc == 0, err
    assert first in out and second in out and "registry: " in out
    champion_line = next(line for line in out.splitlines() if first in line)
    assert champion_line.rstrip(" │|").endswith("*")


def test_promote_moves_the_champion_and_records_who_and_why(lake, capsys):
    root, (first, second) = lake
    rc, out, err = run(["models", "promote", second, "--reason", "rollback drill"], capsys)
    assert rc == 0, err
    assert f"champion: {second} (was {first})" in out
    assert R.champion(root) == second
    last = R.champion_history(root)[-1]
    assert last["reason"] == "rollback drill" and last["by"].startswith("cli:")
    [row] = model_rows(root, date(2026, 3, 2))
    assert row["promoted_by"].startswith("cli:") and row["promoted_at"] is not None


@pytest.mark.parametrize("version, message", [("gate-20990101-000000", "no model gate-20990101-000000"),
                                              ("latest", "not a model version")])
def test_a_bad_version_is_one_line_and_moves_nothing(lake, capsys, version, message):
    root, (first, _) = lake
    rc, _, err = run(["models", "promote", version], capsys)
    assert rc != 0 and err.strip().count("\n") == 0 and message in err and "Traceback" not in err
    assert R.champion(root) == first
