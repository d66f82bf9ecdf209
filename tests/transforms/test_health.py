"""The worker's health document and its HTTP answers, from counters alone (no broker, no Faust)."""

from __future__ import annotations

import asyncio
import json

import pytest

from transforms.health import (
    WorkerHealth,
    http_bytes,
    respond,
    serve,
    serve_forever,
    snapshot,
    status_document,
    summary_line,
)

R0, R1, DLQ = ("plant.readings.v1", 0), ("plant.readings.v1", 1), ("plant.dlq.v1", 0)


def _health() -> WorkerHealth:
    return WorkerHealth("g", started_at=1_000.0, pid=42)


def test_a_worker_that_has_not_joined_is_live_but_not_ready():
    doc = status_document(_health(), {}, None, now=1_002.5)
    assert (doc["status"], doc["live"], doc["ready"]) == ("starting", True, False)
    assert doc["partitions"] == [] and doc["lag"] == 0 and doc["uptime_s"] == 2.5
    assert doc["last_checkpoint"] is None and doc["dead_letters"] == {}
    assert respond("/healthz", doc)[0] == 200
    assert respond("/readyz", doc)[0] == 503


def test_an_empty_assignment_is_ready():
    """A spare worker (more workers than partitions) is ready to take over, not broken."""
    h = _health()
    h.assign([])
    assert respond("/readyz", status_document(h, {}, None, now=1_001.0)) == (200, {"ready": True, "status": "ready"})


def test_partitions_lag_checkpoints_and_dead_letters():
    h = _health()
    h.assign([R1, R0, DLQ])
    h.checkpointed(R0, 100, ["not_json", "unknown_sensor"], at=1_010.0)
    h.checkpointed(R0, 90, ["not_json"], at=1_011.0)  # an older commit point never moves the figure back
    h.checkpointed(DLQ, 7, [], at=1_012.0)
    doc = status_document(h, {R0: 130, R1: 55, DLQ: 7}, None, now=1_014.0)
    assert doc["partitions"] == [
        {"topic": "plant.dlq.v1", "partition": 0, "committed_offset": 7, "end_offset": 7, "lag": 0},
        {"topic": "plant.readings.v1", "partition": 0, "committed_offset": 100, "end_offset": 130, "lag": 30},
        {"topic": "plant.readings.v1", "partition": 1, "committed_offset": None, "end_offset": 55, "lag": None},
    ]
    assert doc["lag"] is None  # one partition's commit point is not known yet: no total that looks complete
    assert doc["checkpoints"] == 3
    assert doc["last_checkpoint"] == "1970-01-01T00:16:52.000+00:00" and doc["last_checkpoint_age_s"] == 2.0
    assert doc["dead_letters"] == {"not_json": 2, "unknown_sensor": 1}
    h.resumed(R1, 50)
    assert status_document(h, {R0: 130, R1: 55, DLQ: 7}, None, now=1_014.0)["lag"] == 35


def test_revoked_partitions_are_forgotten_and_a_late_read_commit_point_is_ignored():
    h = _health()
    h.assign([R0, R1])
    h.checkpointed(R0, 10, [])
    h.revoke([R0])
    h.resumed(R0, 5)  # read from the lake while the partition was being revoked
    assert h.assigned == {R1} and R0 not in h.committed
    assert [p["partition"] for p in status_document(h, {}, None, now=1_001.0)["partitions"]] == [1]


def test_a_failed_checkpoint_makes_the_worker_not_live():
    h = _health()
    h.assign([R0])
    doc = status_document(h, {}, "No space left on device", now=1_001.0)
    assert (doc["status"], doc["live"], doc["ready"]) == ("failed", False, False)
    assert respond("/healthz", doc) == (503, {"live": False, "error": "No space left on device"})
    assert respond("/readyz", doc)[0] == 503
    assert respond("/status", doc) == (200, doc)
    assert "error: No space left on device" in summary_line(doc)


def test_unknown_paths_are_404():
    code, body = respond("/metrics", status_document(_health(), {}, None, now=1_000.0))
    assert code == 404 and "/healthz" in body["error"]


def test_summary_line():
    h = _health()
    h.assign([R0])
    h.checkpointed(R0, 10, ["not_json"], at=1_000.0)
    line = summary_line(status_document(h, {R0: 1_510}, None, now=1_003.25))
    assert line == ("ready: 1 partition(s) of group g, lag 1,500, 1 checkpoint(s), last checkpoint 3.2s ago, "
                    "dead letters: not_json=1")


def test_http_bytes_is_a_complete_response():
    raw = http_bytes(503, {"live": False})
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body) == {"live": False}


def test_the_server_answers_on_the_loop_and_reads_lake_commit_points_once():
    """The real asyncio server on a free port; the lake's commit point is read once per assigned partition."""
    h = _health()
    h.assign([R0, R1])
    h.checkpointed(R0, 10, [])
    reads: list[tuple[str, int]] = []

    def lake_commit_point(tp):
        reads.append(tp)
        return 4

    async def get(port: int, request: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        data = await reader.read()
        writer.close()
        return data

    async def main() -> list[bytes]:
        async def status() -> dict:
            return await snapshot(h, None, lambda tp: 20, lake_commit_point)

        server = await serve("127.0.0.1", 0, status)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return [await get(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                    for path in ("/status", "/readyz?verbose=1", "/status")] + [await get(port, b"POST / HTTP/1.1\r\n\r\n")]

    status1, ready, status2, post = asyncio.run(asyncio.wait_for(main(), 30))
    doc = json.loads(status1.split(b"\r\n\r\n", 1)[1])
    assert [(p["committed_offset"], p["lag"]) for p in doc["partitions"]] == [(10, 10), (4, 16)]
    assert reads == [R1]  # R0's commit point came from its checkpoint; R1's was read once, not per request
    assert status2.startswith(b"HTTP/1.1 200") and ready.startswith(b"HTTP/1.1 200")
    assert post.startswith(b"HTTP/1.1 405")


def test_a_port_in_use_is_logged_and_the_worker_goes_on(caplog):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        asyncio.run(asyncio.wait_for(serve_forever("127.0.0.1", port, lambda: None), 10))  # returns, no raise
    assert any(r.levelname == "ERROR" and f"127.0.0.1:{port}" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("error", [None, RuntimeError("disk gone")])
def test_snapshot_reports_the_worker_error(error):
    h = _health()
    h.assign([])
    doc = asyncio.run(snapshot(h, error, lambda tp: None, lambda tp: 0))
    assert doc["live"] is (error is None)
    assert doc["error"] == (None if error is None else "disk gone")


def _get(url: str) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def _until(what, check, timeout_s: float = 90.0):
    import time

    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as exc:  # not listening yet
            last = exc
        else:
            if last:
                return last
        time.sleep(0.2)
    pytest.fail(f"{what} not seen within {timeout_s:.0f}s; last: {last!r}")


@pytest.mark.integration
def test_a_running_worker_reports_its_partitions_and_dead_letters(kafka, unique_topic, tmp_path):
    """A real `gigapulse stream` on fresh topics: ready with its partitions, a bad message counted by reason,
    `gigapulse health` exits 0; stopped by its PID."""
    import os
    import signal
    import subprocess
    import sys
    import uuid

    from kafka import KafkaProducer

    from tests.conftest import free_port

    readings, events, dlq = unique_topic("health.readings", 2), unique_topic("health.events"), unique_topic("health.dlq")
    port = free_port()
    env = dict(os.environ, GIGAPULSE_BOOTSTRAP_SERVERS=kafka.bootstrap, GIGAPULSE_DATA_DIR=str(tmp_path / "data"),
               GIGAPULSE_STREAM_GROUP_ID=f"g-health-{uuid.uuid4().hex[:8]}", GIGAPULSE_STREAM_PUBLISH_FEATURES="false",
               GIGAPULSE_STREAM_HEALTH_PORT=str(port))
    cli = [sys.executable, "-m", "gigapulse.cli"]
    proc = subprocess.Popen([*cli, "stream", "--readings-topic", readings, "--events-topic", events,
                             "--dlq-topic", dlq], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"the worker exited: {proc.stderr.read()[-2000:]}")
        return _get(f"{base}/readyz")[0] == 200

    try:
        _until("readiness", ready)
        assert _get(f"{base}/healthz") == (200, {"live": True, "error": None})
        code, doc = _get(f"{base}/status")
        assert code == 200 and doc["pid"] == proc.pid
        assert {(p["topic"], p["partition"]) for p in doc["partitions"]} == {
            (readings, 0), (readings, 1), (events, 0), (dlq, 0)}
        assert doc["dead_letters"] == {}

        producer = KafkaProducer(bootstrap_servers=kafka.bootstrap)
        producer.send(readings, key=b"bad", value=b"{not json", partition=1)
        producer.flush()
        producer.close()
        doc = _until("the dead letter", lambda: (d := _get(f"{base}/status")[1])["dead_letters"] and d)
        assert doc["dead_letters"] == {"not_json": 1}
        part = next(p for p in doc["partitions"] if (p["topic"], p["partition"]) == (readings, 1))
        assert part["committed_offset"] == 1 and part["lag"] == 0
        assert doc["last_checkpoint"] is not None and doc["checkpoints"] >= 1

        res = subprocess.run([*cli, "health"], env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith("ready: 4 partition(s)") and "not_json=1" in res.stdout, res.stdout
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        try:
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    assert not (tmp_path / "gigapulse-stream-data").exists()
    res = subprocess.run([*cli, "health", "--timeout", "2"], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and res.stderr.startswith("gigapulse: error: no stream worker answers at")
    assert res.stderr.count("\n") == 1, res.stderr


def test_the_documented_status_example_has_the_documents_fields():
    """docs/stream.md shows a /status document: same fields, same partition fields, as the code builds."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "stream.md").read_text()
    section = text.split("## Health", 1)[1]
    example = json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1))
    h = _health()
    h.assign([R0])
    real = status_document(h, {R0: 1}, None, now=1_001.0)
    assert list(example) == list(real)
    assert all(set(p) == set(real["partitions"][0]) for p in example["partitions"])
    assert example["lag"] == sum(p["lag"] for p in example["partitions"])
