"""A lake directory that fills up or turns read-only mid-run, on a real broker and a real filesystem.

The lake sits on a small tmpfs that the test mounts (as root; the test is skipped where mounting is
refused). The worker must stop with one line naming the lake and the cause, commit nothing past its
last checkpoint, and after the directory is repaired a restart must leave the lake exact: every
reading once.
"""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest

from tests.transforms.support import (
    committed_group_offsets,
    drain,
    fresh_topics,
    lake_readings,
    produce,
    publish_assets,
    readings_in,
    remount,
    report,
    small_filesystem,
    stream_args,
    stream_env,
)
from transforms.partitions import committed_next_offset

pytestmark = pytest.mark.integration


def _one_line_error(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert lines, "the worker said nothing"
    assert "Traceback" not in stderr, stderr[-3000:]
    return lines[-1]


def test_a_full_lake_stops_the_worker_and_a_restart_after_it_is_grown_is_exact(bootstrap, tmp_path, reference_plant,
                                                                               reference_traffic):
    frames = reference_traffic[0]
    names = fresh_topics(bootstrap, "full")
    publish_assets(bootstrap, names["assets"], reference_plant)
    produce(bootstrap, names["readings"], frames)
    mnt = tmp_path / "data"
    with small_filesystem(mnt, "160k"):
        env = stream_env(bootstrap, mnt, f"g-full-{uuid.uuid4().hex[:6]}")
        res = drain(names, env)
        assert res.returncode == 1, res.stderr[-2000:]
        last = _one_line_error(res.stderr)
        assert last.startswith("gigapulse: error: the stream worker stopped: cannot write the lake at "), last
        assert str(mnt / "lake") in last and "No space left on device" in last, last
        remount(mnt, "size=256m")
        t0 = time.monotonic()
        res = drain(names, env)
        assert res.returncode == 0, res.stderr[-2000:]
        expected = readings_in(frames)
        assert lake_readings(mnt / "lake") == (expected, expected)
        report("lake filesystem full (160 KiB tmpfs), then grown", expected, *lake_readings(mnt / "lake"),
               f"worker exits 1 with one line; restart drained all in {time.monotonic() - t0:.1f} s")


def test_a_read_only_lake_stops_the_worker_without_committing_and_a_restart_is_exact(bootstrap, tmp_path,
                                                                                   reference_plant, reference_traffic):
    frames = reference_traffic[0]
    half = len(frames) // 2
    names = fresh_topics(bootstrap, "ro")
    publish_assets(bootstrap, names["assets"], reference_plant)
    mnt = tmp_path / "data"
    group = f"g-ro-{uuid.uuid4().hex[:6]}"
    with small_filesystem(mnt, "256m"):
        env = stream_env(bootstrap, mnt, group)
        worker = subprocess.Popen(stream_args(names), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=env)
        try:
            produce(bootstrap, names["readings"], frames[:half])
            deadline = time.monotonic() + 90
            while lake_readings(mnt / "lake")[0] < readings_in(frames[:half]) and time.monotonic() < deadline:
                assert worker.poll() is None, worker.communicate()[1][-2000:]
                time.sleep(0.2)
            assert lake_readings(mnt / "lake")[0] == readings_in(frames[:half])
            remount(mnt, "ro")
            produce(bootstrap, names["readings"], frames[half:])
            _, stderr = worker.communicate(timeout=90)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        assert worker.returncode == 1, stderr[-2000:]
        last = _one_line_error(stderr)
        assert str(mnt / "lake") in last and "Read-only file system" in last, last
        # Kafka's committed offsets never run ahead of the lake's commit points.
        for partition, offset in committed_group_offsets(bootstrap, group, names["readings"]).items():
            assert offset <= committed_next_offset(mnt / "lake", names["readings"], partition)
        remount(mnt, "rw")
        t0 = time.monotonic()
        res = drain(names, env)
        assert res.returncode == 0, res.stderr[-2000:]
        expected = readings_in(frames)
        assert lake_readings(mnt / "lake") == (expected, expected)
        report("lake filesystem remounted read-only mid-run, then read-write", expected,
               *lake_readings(mnt / "lake"), f"worker exits 1 with one line; restart drained all in "
               f"{time.monotonic() - t0:.1f} s")
