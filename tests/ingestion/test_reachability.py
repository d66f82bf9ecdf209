"""The reachability probe: a live broker answers at once; a missing one fails fast with one actionable line."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from ingestion.reachability import BootstrapError, KafkaUnreachable, check_reachable, parse_bootstrap
from tests.conftest import free_port


@pytest.mark.parametrize(("text", "servers"), [
    ("127.0.0.1:9092", [("127.0.0.1", 9092)]),
    ("kafka:9092, other:19092", [("kafka", 9092), ("other", 19092)]),
    ("localhost", [("localhost", 9092)]),
    ("[::1]:9093", [("::1", 9093)]),
    ("::1", [("::1", 9092)]),
])
def test_parse_bootstrap(text, servers):
    assert parse_bootstrap(text) == servers


@pytest.mark.parametrize("text", ["", " , ", "host:", "host:port", "host:0", "host:70000", ":9092"])
def test_parse_bootstrap_refuses_what_no_client_could_use(text):
    with pytest.raises(BootstrapError, match="host:port"):
        parse_bootstrap(text)


def test_a_closed_port_fails_after_the_timeout_with_the_servers_and_the_hint():
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(KafkaUnreachable) as exc:
        check_reachable(f"127.0.0.1:{port}", timeout_s=0.6)
    waited = time.monotonic() - t0
    assert 0.5 <= waited < 3  # refused connections are retried until the deadline, not beyond it
    message = str(exc.value)
    assert f"127.0.0.1:{port}" in message and "connection refused" in message
    assert "gigapulse broker start" in message and "GIGAPULSE_BOOTSTRAP_SERVERS" in message
    assert "\n" not in message


def test_an_unknown_host_fails_at_once():
    t0 = time.monotonic()
    with pytest.raises(KafkaUnreachable, match="unknown host"):
        check_reachable("no-such-host.invalid:9092", timeout_s=30)
    assert time.monotonic() - t0 < 10  # waiting cannot make a name resolve


def test_a_server_that_is_not_kafka_is_named_as_such():
    """A port that accepts and answers with something else (here: a line of text) is not a broker."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        with pytest.raises(KafkaUnreachable, match="not as a Kafka broker"):
            check_reachable(f"127.0.0.1:{port}", timeout_s=5)
        thread.join(5)


def test_a_broker_that_starts_listening_within_the_timeout_is_waited_for():
    """Refused at first, then accepted: a broker seconds from listening still gets its chance."""
    port = free_port()

    def late_kafka() -> None:
        time.sleep(0.5)
        with socket.create_server(("127.0.0.1", port)) as server:
            conn, _ = server.accept()
            with conn:
                for _ in range(2):  # ApiVersions, then Metadata (a broker that wants a login closes here)
                    request = conn.recv(1024)
                    correlation_id = request[8:12]  # size, api key, api version, then the correlation id
                    conn.sendall((8).to_bytes(4, "big") + correlation_id + b"\x00" * 4)

    thread = threading.Thread(target=late_kafka, daemon=True)
    thread.start()
    check_reachable(f"127.0.0.1:{port}", timeout_s=10)
    thread.join(5)


@pytest.mark.integration
def test_the_real_broker_answers_at_once(bootstrap):
    t0 = time.monotonic()
    check_reachable(bootstrap, timeout_s=5)
    check_reachable(f"127.0.0.1:{free_port()},{bootstrap}", timeout_s=5)  # any one server is enough
    assert time.monotonic() - t0 < 2
