"""``gigapulse bridge opcua|certs``, ``bridge config --protocol opcua`` and ``simulate --serve opcua``: their
outputs and their one-line errors (the bridge into Kafka is in ``test_opcua_integration.py``)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest
from asyncua import Client, ua

from ingestion.bridges.config import OpcUaConfig, load_config
from tests.cli_support import run_cli
from tests.conftest import free_port


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    return run_cli(argv, capsys)


def test_bridge_config_lists_the_plants_opcua_sensors(tmp_path, capsys):
    out = tmp_path / "opcua.yaml"
    rc, _, err = run(["bridge", "config", "--plant", "legacy", "--protocol", "opcua", "--out", str(out)], capsys)
    assert rc == 0, err
    cfg = load_config(out, OpcUaConfig)
    assert len(cfg.nodes) == 18 and all(n.startswith("nsu=urn:gigapulse:leg;s=leg.") for n in cfg.nodes)


def test_bridge_certs_writes_both_pairs_and_trust_folders(tmp_path, capsys):
    rc, text, err = run(["bridge", "certs", "--out", str(tmp_path / "c"), "--host", "plant-gw"], capsys)
    assert rc == 0, err
    names = {p.relative_to(tmp_path / "c").as_posix() for p in (tmp_path / "c").rglob("*") if p.is_file()}
    assert names == {"server.der", "server.key.pem", "client.der", "client.key.pem", "trusted-clients/client.der",
                     "trusted-servers/server.der"}
    assert "urn:gigapulse:opcua:bridge" in text


@pytest.mark.parametrize(("config", "needle"), [
    ("kind: opcua\nendpoint: opc.tcp://127.0.0.1:1/\n", "give either nodes"),
    ("kind: opcua\nendpoint: opc.tcp://127.0.0.1:1/\nbrowse_root: ref\nsecurity_mode: Sign\n",
     "needs certificate and private_key"),
    ("kind: opcua\nendpoint: opc.tcp://127.0.0.1:1/\nbrowse_root: ref\nusername_env: GIGAPULSE_TEST_NO_USER\n",
     "environment variable GIGAPULSE_TEST_NO_USER is not set"),
])
def test_bridge_opcua_errors_are_one_line(config, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GIGAPULSE_TEST_NO_USER", raising=False)
    monkeypatch.setenv("GIGAPULSE_BRIDGE_BUFFER_DIR", str(tmp_path / "buf"))
    monkeypatch.setenv("GIGAPULSE_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")  # never reached
    path = tmp_path / "opcua.yaml"
    path.write_text(config)
    rc, _, err = run(["bridge", "opcua", "--config", str(path), "--duration", "5s"], capsys)
    assert rc == 1 and err.startswith("gigapulse: error:") and err.count("\n") == 1 and needle in err, err


def test_simulate_serve_opcua_serves_the_legacy_plants_opcua_sensors(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gigapulse.cli", "simulate", "--serve", "opcua", "--plant", "legacy",
                             "--port", str(port), "--duration", "10s"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ))

    async def read_back():
        deadline = time.monotonic() + 30
        while True:
            try:
                async with Client(f"opc.tcp://127.0.0.1:{port}/gigapulse/") as client:
                    ns = (await client.get_namespace_array()).index("urn:gigapulse:leg")
                    node = client.get_node(ua.NodeId("leg.L1-form.charge_current_1", ns))
                    for _ in range(50):
                        dv = await node.read_attribute(ua.AttributeIds.Value, raise_on_bad_status=False)
                        if dv.StatusCode.is_good():
                            return dv
                        await asyncio.sleep(0.2)
                    return dv
            except (TimeoutError, OSError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    try:
        dv = asyncio.run(read_back())
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert dv.StatusCode.is_good() and isinstance(dv.Value.Value, float) and dv.SourceTimestamp is not None
    assert proc.returncode == 0, err
    assert "served" in out and "samples" in out
