"""Helpers of the outage tests (one broker or a cluster going away mid-run): CLI children, waits, progress.

Plain functions and one sampler, imported by ``tests/test_broker_outage.py`` and ``tests/cluster/``; the
lake counts and the ``RELIABILITY |`` line are :func:`tests.transforms.support.lake_readings` and ``report``.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.transforms.support import lake_readings


def cli(args: list[str], env: dict[str, str], out: Path) -> subprocess.Popen:
    """``gigapulse <args>`` as a child process, its output in ``out``."""
    return subprocess.Popen([sys.executable, "-m", "gigapulse.cli", *args], env=env, stdout=open(out, "w"),
                            stderr=subprocess.STDOUT, text=True)


def wait_for(predicate, timeout: float, what: str, alive=()) -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` or as soon as a (process, log) of ``alive`` exits."""
    deadline = time.monotonic() + timeout
    while not predicate():
        for proc, log in alive:
            assert proc.poll() is None, f"{what}: process exited: {Path(log).read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def readings_end(bootstrap: str, topic: str = "plant.readings.v1") -> int:
    """Sum of the end offsets of ``topic``: messages the cluster has acknowledged so far."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, request_timeout_ms=6000)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        return sum(consumer.end_offsets(tps).values())
    finally:
        consumer.close()


class Progress:
    """Samples, in a thread, how many readings have landed in a lake and how far the readings topic has grown,
    so a test can report the longest stall: the longest time either count stood still while work was left.

    A sample that fails (the node asked is down) counts as no progress, which is what it is.
    """

    def __init__(self, bootstrap: str, lake: Path, every_s: float = 1.0):
        self.bootstrap, self.lake, self.every_s = bootstrap, lake, every_s
        self.landed: list[tuple[float, int]] = []
        self.produced: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            with contextlib.suppress(Exception):
                self.landed.append((now, lake_readings(self.lake)[0]))
            with contextlib.suppress(Exception):
                self.produced.append((time.monotonic(), readings_end(self.bootstrap)))
            self._stop.wait(self.every_s)

    @staticmethod
    def _longest_gap(samples: list[tuple[float, int]]) -> float:
        """Longest time between two successive increases of a count, from its first increase to its last."""
        rises, last = [], None
        for t, n in samples:
            if last is not None and n > last:
                rises.append(t)
            last = n if last is None else max(last, n)
        return max((b - a for a, b in zip(rises, rises[1:], strict=False)), default=0.0)

    @property
    def landing_stall_s(self) -> float:
        return self._longest_gap(list(self.landed))

    @property
    def producing_stall_s(self) -> float:
        return self._longest_gap(list(self.produced))
