"""The OPC UA bridge into the real broker and the lake, and ``gigapulse bridge opcua`` as a process.

A controlled server (the test writes known values, not the random simulator) feeds the bridge; what the
stream worker then writes to the lake must equal what the server published, count and content; a node
set Bad is a gap dead letter and the sensor's last value again with quality bad; after a server restart
the bridge resubscribes and every change it then publishes arrives; the CLI refuses an untrusted client
certificate with one line.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import duckdb
import pytest
import yaml
from kafka import KafkaConsumer

from ingestion.bridges.certs import CLIENT_APPLICATION_URI, write_certificate
from ingestion.bridges.opcua import OpcUaBridge
from ingestion.bridges.opcua_server import ServerSecurity
from ingestion.bridges.settings import BridgeSettings
from ingestion.bridges.sink import BridgeSink
from schemas.contracts import decode_dead_letter, decode_reading_message
from tests.ingestion.bridges.opcua_support import PLANT, ServerThread, bridged, served, settings, until
from tests.transforms.support import drain, fresh_topics, publish_assets, stream_env

pytestmark = pytest.mark.integration


def _records(bootstrap: str, topic: str, timeout: float = 10.0) -> list:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None, consumer_timeout_ms=1000)
    out: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = list(consumer)
        out.extend(got)
        if out and not got:
            break
    consumer.close()
    return out


def _frames(bootstrap: str, topic: str) -> list[tuple[str, int, float, int]]:
    rows = []
    for rec in _records(bootstrap, topic):
        fr = decode_reading_message(rec.value)
        for i, ts, v, q in zip(fr.idx.tolist(), fr.ts_ms.tolist(), fr.value.tolist(), fr.quality.tolist(),
                               strict=True):
            rows.append((fr.sensors[i], ts, v, q))
    return rows


def _sink(bootstrap: str, names: dict[str, str], tmp_path: Path) -> BridgeSink:
    cfg = BridgeSettings(bootstrap_servers=bootstrap, buffer_dir=tmp_path / f"buf-{uuid.uuid4().hex[:6]}",
                         readings_topic=names["readings"], dlq_topic=names["dlq"], flush_interval_s=0.05)
    return BridgeSink.open(cfg, PLANT, "opcua-test")


def _now_ms() -> int:
    return (int(time.time()) - 60) * 1000


def test_what_the_server_published_is_what_the_lake_holds(bootstrap, tmp_path):
    """30 sensors on several stations, 4 rounds of known values (good and uncertain), one node set Bad."""
    names = fresh_topics(bootstrap, "opcua")
    publish_assets(bootstrap, names["assets"], PLANT)
    ids = [e.sensor_id for e in PLANT.sensors[0:600:20]]
    t0 = _now_ms()
    sink = _sink(bootstrap, names, tmp_path)

    async def scenario():
        async with served(ids) as server:
            bridge = OpcUaBridge(settings(server), PLANT, sink)
            async with bridged(bridge):
                sent = []
                for k in range(4):
                    for i, sid in enumerate(ids):
                        ts, value, quality = t0 + 250 * k + i, 1000.0 * k + i + 0.125, k % 2
                        await server.write(sid, value, ts, quality)
                        sent.append((sid, ts, value, quality))
                await server.set_quality(ids[0], 2, ts_ms=t0 + 5_000)
                await until(lambda: bridge.stats.readings == len(sent) and bridge.stats.gaps == 1, 20,
                            "every change")
            return sent

    try:
        sent = asyncio.run(scenario())
    finally:
        stats = sink.close(timeout=30)
    last_of_first = next(s for s in reversed(sent) if s[0] == ids[0])
    expected = sent + [(ids[0], t0 + 5_000, last_of_first[2], 2)]  # marked bad: its last value, quality bad
    assert stats.rejected == 0 and stats.gaps == 1

    data = tmp_path / "data"
    res = drain(names, stream_env(bootstrap, data, f"opcua-{uuid.uuid4().hex[:6]}"))
    assert res.returncode == 0, res.stderr[-2000:]
    rows = duckdb.connect().execute(
        "SELECT sensor_id, epoch_ms(ts), value, quality FROM read_parquet(?, hive_partitioning = true)",
        [str(data / "lake" / "readings" / "**" / "*.parquet")]).fetchall()
    assert len(rows) == len(expected)
    assert sorted(rows) == sorted(expected)

    (letter,) = [decode_dead_letter(r.value) for r in _records(bootstrap, names["dlq"])]
    assert (letter.reason.value, letter.stage) == ("source_error", "bridge")
    assert "BadSensorFailure" in letter.detail and ids[0] in letter.detail


def test_server_restart_into_kafka_nothing_missed_after_the_reconnect(bootstrap, tmp_path):
    names = fresh_topics(bootstrap, "opcua-restart")
    ids = [e.sensor_id for e in PLANT.sensors[100:400:15]]
    t0 = _now_ms()
    sink = _sink(bootstrap, names, tmp_path)

    async def scenario():
        async with served(ids) as server:
            port = server.port
            bridge = OpcUaBridge(settings(server), PLANT, sink)
            async with bridged(bridge):
                before = []
                for i, sid in enumerate(ids):
                    await server.write(sid, float(i), t0 + i)
                    before.append((sid, t0 + i, float(i), 0))
                await until(lambda: bridge.stats.readings == len(ids), what="the first round")
                await server.stop()
                await until(lambda: bridge.stats.marked_bad == len(ids), what="the loss")
                await asyncio.sleep(1.0)
                async with served(ids, port=port) as again:
                    await until(lambda: bridge.stats.sessions == 2 and bridge.ready.is_set(), 20, "the reconnect")
                    after = []
                    for k in range(3):
                        for i, sid in enumerate(ids):
                            ts, value = t0 + 10_000 + 100 * k + i, 500.0 + 10 * k + i
                            await again.write(sid, value, ts)
                            after.append((sid, ts, value, 0))
                    await until(lambda: bridge.stats.readings == 2 * len(ids) + len(after) - len(ids), 20,
                                "every change after")
            return before, after

    try:
        before, after = asyncio.run(scenario())
    finally:
        sink.close(timeout=30)
    rows = _frames(bootstrap, names["readings"])
    marked = [r for r in rows if r[3] == 2]
    assert sorted((r[0], r[2]) for r in marked) == sorted((s, v) for s, _, v, _ in before)
    assert sorted(r for r in rows if r[3] != 2) == sorted(before + after)


def _cli(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gigapulse.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_cli_bridges_with_sign_and_encrypt_and_refuses_an_untrusted_certificate(bootstrap, tmp_path):
    certs = tmp_path / "certs"
    res = _cli(["bridge", "certs", "--out", str(certs)], dict(os.environ))
    assert res.returncode == 0, res.stderr
    security = ServerSecurity(modes=("SignAndEncrypt",), cert=certs / "server.der", key=certs / "server.key.pem",
                              trusted_clients=certs / "trusted-clients")
    ids = [e.sensor_id for e in PLANT.sensors[:5]]
    names = fresh_topics(bootstrap, "opcua-cli")
    server = ServerThread(ids, security=security)
    env = dict(os.environ, GIGAPULSE_BOOTSTRAP_SERVERS=bootstrap, GIGAPULSE_BRIDGE_READINGS_TOPIC=names["readings"],
               GIGAPULSE_BRIDGE_DLQ_TOPIC=names["dlq"], GIGAPULSE_BRIDGE_BUFFER_DIR=str(tmp_path / "buf"))
    try:
        config = {"kind": "opcua", "plant": "reference", "endpoint": server.server.endpoint,
                  "security_mode": "SignAndEncrypt", "certificate": str(certs / "client.der"),
                  "private_key": str(certs / "client.key.pem"), "trusted_servers": str(certs / "trusted-servers"),
                  "nodes": [f"nsu=urn:gigapulse:ref;s={s}" for s in ids], "publishing_interval_ms": 100}
        good = tmp_path / "good.yaml"
        good.write_text(yaml.safe_dump(config))
        t0 = _now_ms()
        proc = subprocess.Popen([sys.executable, "-m", "gigapulse.cli", "bridge", "opcua", "--config", str(good),
                                 "--duration", "8s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
        time.sleep(5)  # connected and subscribed by now (start-up plus one session)
        for i, sid in enumerate(ids):
            server.write(sid, 40.0 + i, t0 + i)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-2000:]
        assert sorted(_frames(bootstrap, names["readings"])) == sorted(
            (sid, t0 + i, 40.0 + i, 0) for i, sid in enumerate(ids))

        rogue = write_certificate(tmp_path / "rogue", "client", CLIENT_APPLICATION_URI, "not approved")
        bad = tmp_path / "rogue.yaml"
        bad.write_text(yaml.safe_dump({**config, "certificate": str(rogue.cert), "private_key": str(rogue.key)}))
        res = _cli(["bridge", "opcua", "--config", str(bad), "--duration", "20s"], env)
        assert res.returncode == 1
        last = res.stderr.strip().splitlines()[-1]
        assert last.startswith("gigapulse: error: ") and "refused the bridge: BadCertificateUntrusted" in last
        assert "Traceback" not in res.stderr
    finally:
        server.close()
