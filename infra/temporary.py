"""A private broker or cluster on free loopback ports for the duration of a ``with``: tests and benches.

One helper instead of a copy per test module and bench: free ports (a block of them for a cluster), the
catalog applied at the cluster's replication, a retry of the rare failed storage formatting, and the
broker always stopped and its temporary directory removed.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from infra.broker import NODE_PORT_STEP, BrokerError, BrokerSettings, apply_catalog, start, stop
from infra.security import BrokerSecuritySettings


def free_port(exclude: frozenset[int] = frozenset()) -> int:
    """A loopback port that was free a moment ago (and none of ``exclude``)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in exclude:
            return port


def _free_block(n: int, exclude: frozenset[int]) -> int:
    """The first of ``n`` consecutive loopback ports that were all free a moment ago."""
    for _ in range(200):
        base = free_port(exclude)
        if base + n > 65535:
            continue
        block = range(base, base + n)
        if any(p in exclude for p in block):
            continue
        socks = []
        try:
            for p in block:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise BrokerError(f"found no {n} consecutive free loopback ports")


@contextlib.contextmanager
def temporary_broker(data_dir: Path | None = None, nodes: int = 1, heap: str = "512m", topics: bool = True,
                     exclude_ports: frozenset[int] = frozenset(), sec: BrokerSecuritySettings | None = None,
                     **overrides) -> Iterator[BrokerSettings]:
    """A private broker (or ``nodes``-node cluster) on free loopback ports, for tests and benches.

    The topic catalog is applied with the cluster's replication factor and min ISR when ``topics``; the
    broker is always stopped, and ``data_dir`` removed if this made it (a temporary directory). A start
    whose storage formatting fails is tried again with a fresh directory. ``sec``: users, ACLs and TLS
    (:mod:`infra.security`; default from the environment).
    """
    made = data_dir is None
    root = Path(tempfile.mkdtemp(prefix="gigapulse_kafka_")) if made else data_dir
    settings = None
    try:
        for attempt in range(3):
            if nodes == 1:
                ports = {"port": free_port(exclude_ports), "controller_port": free_port(exclude_ports)}
            else:
                base = _free_block(NODE_PORT_STEP * nodes, exclude_ports)
                ports = {"port": base, "controller_port": base + 1}
            settings = BrokerSettings(**{"data_dir": root, "nodes": nodes, "heap": heap, **ports, **overrides})
            try:
                start(settings, sec)
                break
            except BrokerError as exc:
                if "formatting KRaft storage failed" not in str(exc) or attempt == 2:
                    raise
                for n in settings.node_list:
                    shutil.rmtree(n.log_dirs, ignore_errors=True)
        if topics:
            apply_catalog(settings, sec)
        yield settings
    finally:
        if settings is not None:
            stop(settings)
        if made:
            shutil.rmtree(root, ignore_errors=True)
