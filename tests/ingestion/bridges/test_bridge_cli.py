"""``gigapulse bridge config`` and the bridges' one-line errors."""

from __future__ import annotations

import pytest
import yaml

from ingestion.bridges.config import ModbusConfig, load_config
from tests.cli_support import run_cli


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    return run_cli(argv, capsys)


def test_bridge_config_writes_a_valid_modbus_file(tmp_path, capsys):
    out = tmp_path / "modbus.yaml"
    rc, _, err = run(["bridge", "config", "--plant", "legacy", "--protocol", "modbus", "--out", str(out)], capsys)
    assert rc == 0, err
    cfg = load_config(out, ModbusConfig)
    assert sum(len(b.points) for b in cfg.blocks) == 304
    rc, text, _ = run(["bridge", "config", "--plant", "legacy", "--protocol", "modbus", "--all-sensors"], capsys)
    assert rc == 0
    assert sum(len(b["points"]) for b in yaml.safe_load(text)["blocks"]) == 322


@pytest.mark.parametrize(("argv", "needle"), [
    (["bridge", "config", "--plant", "reference", "--protocol", "modbus"], "no sensor with protocol modbus"),
    (["bridge", "config", "--plant", "nope"], "nope"),
    (["bridge", "modbus", "--config", "missing.yaml"], "bridge config not found: missing.yaml"),
    (["bridge", "health"], "no health port"),
])
def test_bridge_user_errors_are_one_line(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GIGAPULSE_BRIDGE_HEALTH_PORT", raising=False)
    rc, _, err = run(argv, capsys)
    assert rc == 1
    assert err.startswith("gigapulse: error:") and err.count("\n") == 1 and needle in err, err


def test_a_bad_config_file_is_one_line_naming_the_field(capsys, tmp_path):
    bad = tmp_path / "modbus.yaml"
    bad.write_text("kind: modbus\nblocks: []\nhots: plc\n")
    rc, _, err = run(["bridge", "modbus", "--config", str(bad)], capsys)
    assert rc == 1 and err.count("\n") == 1
    assert f"{bad}: blocks: List should have at least 1 item" in err, err
