"""What a stream worker tells its supervisor: live, ready, and where each partition stands.

A worker started with ``GIGAPULSE_STREAM_HEALTH_PORT`` serves three read-only paths over plain HTTP on
its own event loop (so an answer at all means the loop is not stuck):

- ``/healthz`` (liveness): 200 while the worker runs; 503 once a checkpoint failed (it is stopping).
- ``/readyz`` (readiness): 200 once the worker has joined its consumer group and been given its
  partitions (an empty share counts: a spare worker is ready to take over); 503 before.
- ``/status``: always 200, the JSON document of :func:`status_document` (assigned partitions with the
  next offset committed in the lake, the end offset and the lag between them, the last checkpoint,
  and the dead letters this worker produced, by reason).

The counters (:class:`WorkerHealth`) and the documents are plain data and pure functions; the app only
reports checkpoints, assignments and revocations to them. :func:`serve` is the small asyncio server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

log = logging.getLogger(__name__)

PATHS = ("/healthz", "/readyz", "/status")

TopicPartition = tuple[str, int]


@dataclass
class WorkerHealth:
    """A worker's health counters, updated on its event loop."""

    group_id: str
    started_at: float = field(default_factory=time.time)
    pid: int = field(default_factory=os.getpid)
    #: Set by the first assignment of the consumer group (even an empty one).
    joined: bool = False
    assigned: set[TopicPartition] = field(default_factory=set)
    #: Next offset committed in the lake per assigned partition, as far as this worker knows it.
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    checkpoints: int = 0
    last_checkpoint_at: float | None = None
    #: Dead letters this worker produced (stream-stage refusals), by reason code.
    dead_letters: Counter[str] = field(default_factory=Counter)

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        self.joined = True
        self.assigned.update(partitions)

    def revoke(self, partitions: Iterable[TopicPartition]) -> None:
        """Forget revoked partitions: their next owner moves their commit point on."""
        for tp in partitions:
            self.assigned.discard(tp)
            self.committed.pop(tp, None)

    def resumed(self, tp: TopicPartition, next_offset: int) -> None:
        """The lake's commit point of ``tp``, read after its assignment (ignored if revoked since)."""
        if tp in self.assigned:
            self.committed[tp] = max(next_offset, self.committed.get(tp, 0))

    def checkpointed(self, tp: TopicPartition, next_offset: int, dead_letter_reasons: Iterable[str],
                     at: float | None = None) -> None:
        """A checkpoint of ``tp`` reached its commit point: the lake holds everything below ``next_offset``."""
        self.committed[tp] = max(next_offset, self.committed.get(tp, 0))
        self.checkpoints += 1
        self.last_checkpoint_at = time.time() if at is None else at
        self.dead_letters.update(dead_letter_reasons)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def status_document(health: WorkerHealth, end_offsets: Mapping[TopicPartition, int | None], error: str | None,
                    now: float) -> dict:
    """The ``/status`` document: the worker's state at ``now`` (epoch seconds).

    ``end_offsets`` are the partitions' log-end offsets as the consumer last saw them (None: not
    fetched yet). A partition's lag is how many of its messages are not yet committed in the lake;
    it is None while either offset is unknown.
    """
    partitions = []
    for topic, partition in sorted(health.assigned):
        committed = health.committed.get((topic, partition))
        end = end_offsets.get((topic, partition))
        lag = max(end - committed, 0) if committed is not None and end is not None else None
        partitions.append({"topic": topic, "partition": partition, "committed_offset": committed,
                           "end_offset": end, "lag": lag})
    live = error is None
    ready = live and health.joined
    known = [p["lag"] for p in partitions if p["lag"] is not None]
    return {
        "status": "failed" if not live else "ready" if ready else "starting",
        "live": live,
        "ready": ready,
        "error": error,
        "group_id": health.group_id,
        "pid": health.pid,
        "uptime_s": round(now - health.started_at, 3),
        "partitions": partitions,
        "lag": sum(known) if len(known) == len(partitions) else None,
        "checkpoints": health.checkpoints,
        "last_checkpoint": _iso(health.last_checkpoint_at),
        "last_checkpoint_age_s": None if health.last_checkpoint_at is None
        else round(now - health.last_checkpoint_at, 3),
        "dead_letters": dict(sorted(health.dead_letters.items())),
    }


async def snapshot(health: WorkerHealth, error: BaseException | None,
                   end_offset: Callable[[TopicPartition], int | None],
                   lake_commit_point: Callable[[TopicPartition], int]) -> dict:
    """The current status document; reads the lake's commit point of partitions not checkpointed yet.

    ``lake_commit_point`` reads a checkpoint file, so it runs in a thread, once per partition and
    assignment; ``end_offset`` is the consumer's last seen log-end offset (no request to the broker).
    """
    loop = asyncio.get_running_loop()
    for tp in sorted(health.assigned - health.committed.keys()):
        health.resumed(tp, await loop.run_in_executor(None, lake_commit_point, tp))
    ends = {tp: end_offset(tp) for tp in health.assigned}
    return status_document(health, ends, None if error is None else str(error) or type(error).__name__,
                           time.time())


def summary_line(doc: dict) -> str:
    """One line for ``gigapulse health``: state, partitions, lag, last checkpoint and dead letters."""
    lag = "unknown" if doc["lag"] is None else f"{doc['lag']:,}"
    age = doc["last_checkpoint_age_s"]
    last = "no checkpoint yet" if age is None else f"last checkpoint {age:.1f}s ago"
    dead = ", ".join(f"{reason}={n:,}" for reason, n in doc["dead_letters"].items()) or "none"
    line = (f"{doc['status']}: {len(doc['partitions'])} partition(s) of group {doc['group_id']}, lag {lag}, "
            f"{doc['checkpoints']:,} checkpoint(s), {last}, dead letters: {dead}")
    return line + (f"; error: {doc['error']}" if doc["error"] else "")


def respond(path: str, doc: dict) -> tuple[int, dict]:
    """HTTP status and JSON body for ``path``, given the current status document."""
    if path == "/healthz":
        return (200 if doc["live"] else 503), {"live": doc["live"], "error": doc["error"]}
    if path == "/readyz":
        return (200 if doc["ready"] else 503), {"ready": doc["ready"], "status": doc["status"]}
    if path == "/status":
        return 200, doc
    return 404, {"error": f"unknown path {path!r}; use one of {', '.join(PATHS)}"}


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}


def http_bytes(code: int, body: dict) -> bytes:
    """A complete HTTP/1.1 response that closes the connection."""
    payload = json.dumps(body, sort_keys=False).encode() + b"\n"
    head = (f"HTTP/1.1 {code} {_REASONS.get(code, 'Error')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n")
    return head.encode() + payload


async def serve(host: str, port: int, snapshot: Callable[[], Awaitable[dict]]) -> asyncio.AbstractServer:
    """Start answering GET requests for :data:`PATHS` on ``host:port`` with ``snapshot()``'s document."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while await asyncio.wait_for(reader.readline(), 5) not in (b"\r\n", b"\n", b""):
                pass  # headers: nothing here depends on them
            parts = request.decode("latin-1").split()
            if len(parts) < 2:
                code, body = 400, {"error": "bad request"}
            elif parts[0] not in ("GET", "HEAD"):
                code, body = 405, {"error": "only GET"}
            else:
                code, body = respond(parts[1].split("?")[0], await snapshot())
            writer.write(http_bytes(code, body))
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass  # a client that went away or never sent a request
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port, reuse_address=True)
    log.info("health endpoint on http://%s:%d (%s)", host, server.sockets[0].getsockname()[1], ", ".join(PATHS))
    return server


async def serve_forever(host: str, port: int, snapshot: Callable[[], Awaitable[dict]]) -> None:
    """:func:`serve` until cancelled (the worker stopping); a port in use is logged, and the worker runs on.

    Without the endpoint the supervisor's check fails, which is what makes the mistake visible; stopping
    the worker would also stop the data.
    """
    try:
        server = await serve(host, port, snapshot)
    except OSError as exc:
        log.error("health endpoint not started on %s:%d: %s", host, port, exc)
        return
    async with server:
        await server.serve_forever()
