"""What every bench runs on: a private broker, fresh topics, and measured child processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from gigapulse.bench.report import console

#: Ports other people's brokers and tests use on shared machines; a bench never takes them.
RESERVED_PORTS = frozenset({9092, 9093, 19092, 19093})
MIB = 1024 * 1024  # Kafka's ProducerPerformance reports "MB/sec" in units of 2^20 bytes
PLANT = "reference"


class BenchError(RuntimeError):
    """A bench could not produce a trustworthy figure (a child failed, a peer did not finish)."""


# --------------------------------------------------------------------------- broker, topics, children

def free_port() -> int:
    """A loopback port that was free a moment ago and is none of the shared machines' broker ports."""
    from infra.temporary import free_port as any_free_port

    return any_free_port(RESERVED_PORTS)


@dataclass
class BenchBroker:
    """A private broker and the scratch space of one bench invocation."""

    settings: Any  # infra.broker.BrokerSettings
    tmp: Path

    @property
    def bootstrap(self) -> str:
        return self.settings.bootstrap

    def scratch(self, name: str) -> Path:
        path = self.tmp / f"{name}_{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        return path


@contextlib.contextmanager
def bench_broker(heap: str = "1g", nodes: int = 1) -> Iterator[BenchBroker]:
    """A private broker (or ``nodes``-node cluster) on free ports in a temp dir, catalog topics applied;
    always stopped and removed (``infra.temporary.temporary_broker`` does the work)."""
    from infra.temporary import temporary_broker

    # Only [A-Za-z0-9._/] in the path: Quix Streams' file sink refuses anything else.
    tmp = Path(tempfile.mkdtemp(prefix="gigapulse_bench_"))
    what = "broker" if nodes == 1 else f"{nodes}-node cluster"
    try:
        with contextlib.ExitStack() as stack:
            with console.status(f"starting a private Kafka {what} ..."):
                settings = stack.enter_context(temporary_broker(tmp / "kafka", nodes=nodes, heap=heap,
                                                                exclude_ports=RESERVED_PORTS))
            try:
                yield BenchBroker(settings, tmp)
            finally:
                with console.status(f"stopping the private {what} ..."):
                    stack.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cluster_heap(nodes: int) -> dict[str, Any]:
    """``bench_broker`` arguments for ``nodes``: a cluster's three JVMs get 512 MiB each, not a single broker's 1 GiB."""
    return {"nodes": nodes} if nodes == 1 else {"nodes": nodes, "heap": "512m"}


def new_topic(bootstrap: str, prefix: str, partitions: int, config: dict[str, str] | None = None) -> str:
    """Create a topic with a fresh name, so no run reads what another one wrote."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    name = f"bench.{prefix}.{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="gigapulse-bench")
    try:
        # -1: the broker's default.replication.factor (1 on a single broker, 3 on a --nodes 3 cluster, whose
        # min.insync.replicas of 2 applies too), so every bench writes with the durability of its cluster.
        admin.create_topics([NewTopic(name, partitions, -1, topic_configs=config or {})], wait_for_metadata=True)
    finally:
        admin.close()
    return name


def delete_topics(bootstrap: str, names: list[str]) -> None:
    """Drop a run's topics once measured, so long benches don't fill the temp disk."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="gigapulse-bench")
    try:
        with contextlib.suppress(Exception):
            admin.delete_topics(names)
    finally:
        admin.close()


def readings_topic_config() -> dict[str, str]:
    """The catalog's settings for readings (message size limit, compression), on a bench topic."""
    from schemas import topics

    return topics.TOPICS_BY_NAME[topics.READINGS].config()


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    from transforms.app import end_offsets as _end

    return {p: off for (_, p), off in _end(bootstrap, [topic]).items()}


def stream_settings() -> dict[str, Any]:
    """The worker's settings as the children will read them (GIGAPULSE_STREAM_* pass through)."""
    from transforms.settings import StreamSettings

    return StreamSettings().model_dump(exclude={"group_id"})


def child_env(bb: BenchBroker, **extra: str) -> dict[str, str]:
    """Environment of a measured child: the bench broker, and compiled bytecode cached in scratch.

    Installed software runs from compiled bytecode; an environment with PYTHONDONTWRITEBYTECODE set
    would make every child recompile about a thousand modules (seconds of a stream worker's start)
    on every run. The cache lives in the bench's temp dir, so nothing in the venv changes.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(bb.tmp / "pycache")
    env["GIGAPULSE_BOOTSTRAP_SERVERS"] = bb.bootstrap
    env.update(extra)
    return env


def warm_bytecode(bb: BenchBroker, modules: list[str]) -> None:
    """Import once, untimed, so measured children start from cached bytecode like a deployment."""
    code = "import " + ", ".join(modules)
    subprocess.run([sys.executable, "-c", code], env=child_env(bb), check=True, capture_output=True)


@dataclass
class Measured:
    """One child process: exit code, wall time (start to exit), peak RSS, output."""

    returncode: int
    wall_s: float
    peak_rss_bytes: int
    stdout: str
    stderr: str

    @property
    def peak_rss_mib(self) -> float:
        return self.peak_rss_bytes / MIB

    def check(self, what: str) -> Measured:
        if self.returncode != 0:
            raise BenchError(f"{what} exited with code {self.returncode}: {output_tail(self.stderr or self.stdout)}")
        return self


def output_tail(text: str, lines: int = 6, width: int = 240) -> str:
    """The last lines of a child's output, each cut short (Faust can log one line of megabytes)."""
    return " | ".join(ln[:width] for ln in text.strip().splitlines()[-lines:])


def run_measured(cmd: list[str], env: dict[str, str], timeout_s: float, poll_s: float = 0.02,
                 on_poll: Callable[[], None] | None = None) -> Measured:
    """Run a child to completion, polling its RSS; a child past its timeout is stopped (it is ours)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = psutil.Popen(cmd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        peak = 0
        try:
            while True:
                with contextlib.suppress(psutil.Error):
                    peak = max(peak, proc.memory_info().rss)
                try:
                    rc = proc.wait(timeout=poll_s)
                    break
                except psutil.TimeoutExpired:
                    pass
                if on_poll:
                    on_poll()
                if time.perf_counter() - t0 > timeout_s:
                    raise BenchError(f"{Path(cmd[0]).name} {' '.join(cmd[1:4])} ... did not finish in {timeout_s:.0f}s")
            wall = time.perf_counter() - t0
        finally:
            stop_child(proc)
        out.seek(0)
        err.seek(0)
        return Measured(rc, wall, peak, out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def stop_child(proc: psutil.Popen, grace_s: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``: only for a process this module started."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(psutil.Error):
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(10)
