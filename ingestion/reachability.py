"""Is the Kafka cluster there at all? One short probe before any client connects.

The Kafka clients (kafka-python for ingestion and the asset model, aiokafka under Faust) retry an
unreachable bootstrap server for about 30 s and log every attempt as an ERROR, so a command started
with the broker down used to print some twenty connection errors and then a timeout. The CLI asks
this probe first: it sends Kafka's ApiVersions request (the first thing every client sends, and one
every broker version answers) to each bootstrap server in turn, retrying refused connections until a
short deadline, so a broker that is just starting still gets its chance. It speaks the wire protocol
directly, so it logs nothing, and it fails with :class:`KafkaUnreachable`: one line naming the
servers and what to do. Plaintext listeners only: with GIGAPULSE_KAFKA_SECURITY_PROTOCOL set, the CLI
logs in instead (:func:`ingestion.security.check_credentials`). A broker that answers ApiVersions and
then drops the connection at the next request wants a login this process did not offer
(:class:`KafkaAuthRequired`).
"""

from __future__ import annotations

import socket
import struct
import time

API_VERSIONS_KEY = 18
METADATA_KEY = 3
_CLIENT_ID = b"gigapulse-probe"
HINT = ("start a local broker with 'gigapulse broker start', or point GIGAPULSE_BOOTSTRAP_SERVERS "
        "(or --bootstrap) at a running cluster")


class KafkaUnreachable(ConnectionError):
    """No bootstrap server answered in time; the message is the one line the CLI prints."""


class KafkaAuthRequired(ConnectionError):
    """The broker answered but requires authentication (or TLS) this process is not configured for."""


class BootstrapError(ValueError):
    """The bootstrap server list cannot be parsed."""


def parse_bootstrap(bootstrap: str) -> list[tuple[str, int]]:
    """``host:port[,host:port...]`` (IPv6 in brackets; port 9092 when left out) as (host, port) pairs."""
    servers = []
    for item in (s.strip() for s in bootstrap.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or host.count(":") and not host.startswith("["):  # "host" or a bare IPv6 address
            host, port = item, "9092"
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65_536:
            raise BootstrapError(f"invalid bootstrap server {item!r} (use host:port, comma-separated)")
        servers.append((host, int(port)))
    if not servers:
        raise BootstrapError("no bootstrap servers given (use host:port, comma-separated)")
    return servers


def api_versions_request(correlation_id: int) -> bytes:
    """ApiVersions v0 with request header v1: api key, version, correlation id, client id; empty body."""
    body = struct.pack(">hhih", API_VERSIONS_KEY, 0, correlation_id, len(_CLIENT_ID)) + _CLIENT_ID
    return struct.pack(">i", len(body)) + body


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionResetError("closed the connection")
        data += chunk
    return data


def metadata_request(correlation_id: int) -> bytes:
    """Metadata v1 for no topic (an empty array): the cheapest request a broker only serves after a login."""
    body = struct.pack(">hhih", METADATA_KEY, 1, correlation_id, len(_CLIENT_ID)) + _CLIENT_ID + struct.pack(">i", 0)
    return struct.pack(">i", len(body)) + body


def _ask(host: str, port: int, timeout_s: float, correlation_id: int) -> None:
    """ApiVersions, then Metadata; raises OSError (or ValueError for a non-Kafka answer, KafkaAuthRequired
    when the broker drops the connection at the Metadata request: it waits for a SASL handshake)."""
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.settimeout(timeout_s)
        sock.sendall(api_versions_request(correlation_id))
        head = _recv_exactly(sock, 4)
        if head[0] in (0x15, 0x16) and head[1] == 3:  # a TLS record (an alert): the listener speaks TLS
            raise KafkaAuthRequired(f"Kafka at {host}:{port} answered in TLS: it requires TLS and a login; set "
                                    "GIGAPULSE_KAFKA_SECURITY_PROTOCOL=SASL_SSL, GIGAPULSE_KAFKA_SASL_USERNAME, the "
                                    "password and GIGAPULSE_KAFKA_SSL_CAFILE (docs/security.md)")
        (size,) = struct.unpack(">i", head)
        if not 4 <= size <= 1_048_576:
            raise ValueError("answered, but not as a Kafka broker")
        (got,) = struct.unpack(">i", _recv_exactly(sock, 4))
        if got != correlation_id:
            raise ValueError("answered, but not as a Kafka broker")
        _recv_exactly(sock, size - 4)
        sock.sendall(metadata_request(correlation_id + 1_000_000))
        try:
            _recv_exactly(sock, 4)
        except (ConnectionResetError, BrokenPipeError):
            raise KafkaAuthRequired(f"Kafka at {host}:{port} requires a login: set GIGAPULSE_KAFKA_SECURITY_PROTOCOL "
                                    "(SASL_PLAINTEXT or SASL_SSL), GIGAPULSE_KAFKA_SASL_USERNAME and the "
                                    "password (docs/security.md)") from None


#: Failures that waiting can fix: a broker that is starting, restarting or slow to answer.
_TRANSIENT = (ConnectionRefusedError, ConnectionResetError, TimeoutError)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "no answer"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def check_reachable(bootstrap: str, timeout_s: float, retry_every_s: float = 0.25) -> None:
    """Return once any bootstrap server answers an ApiVersions request; else raise :class:`KafkaUnreachable`.

    Tries the servers in turn until ``timeout_s`` has passed (each attempt gets what is left of it),
    pausing ``retry_every_s`` between rounds: a refused connection is retried, since a broker may be
    seconds from listening; an unknown host or a non-Kafka answer is not, since waiting cannot fix it.
    """
    servers = parse_bootstrap(bootstrap)
    deadline = time.monotonic() + timeout_s
    reasons: dict[str, str] = {}
    correlation_id = 0
    transient = False
    while True:
        for host, port in servers:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            correlation_id += 1
            try:
                _ask(host, port, left, correlation_id)
                return
            except KafkaAuthRequired:
                raise
            except (OSError, ValueError) as exc:
                reasons[f"{host}:{port}"] = _reason(exc)
                transient = transient or isinstance(exc, _TRANSIENT)
        left = deadline - time.monotonic()
        if not transient or left <= 0:
            break
        time.sleep(min(retry_every_s, left))
    if reasons and all(r == "closed the connection" for r in reasons.values()):
        # Accepted, then closed without a Kafka answer: what a TLS listener does with a plaintext hello.
        raise KafkaAuthRequired(f"Kafka at {bootstrap} closed the connection without answering: does it require "
                                "TLS? set GIGAPULSE_KAFKA_SECURITY_PROTOCOL=SASL_SSL, the user, the password and "
                                "GIGAPULSE_KAFKA_SSL_CAFILE (docs/security.md)")
    why = "; ".join(f"{server}: {reason}" for server, reason in reasons.items()) or "no time to try"
    waited = f" within {timeout_s:g} s" if transient or not reasons else ""
    raise KafkaUnreachable(f"cannot reach Kafka at {bootstrap}{waited} ({why}); {HINT}")
