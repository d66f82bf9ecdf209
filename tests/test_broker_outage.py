"""The broker goes away mid-run (SIGKILL, or SIGTERM) while the simulator produces and a worker streams.

Each test runs its own broker, because it stops it. For 20 s the producer buffers and retries
(acks=all, idempotence) and the worker waits; once the broker is back both resume, and the lake
must equal what the simulator reports as produced: every reading once. A broker that stays away
longer than the producer's delivery timeout makes ``simulate`` fail with one line, with no summary
that would claim the lost messages were sent.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from infra import broker, faults
from infra.broker import BrokerSettings
from infra.temporary import temporary_broker
from tests.outage_support import cli, readings_end, wait_for
from tests.transforms.support import lake_readings, report

pytestmark = pytest.mark.integration

OUTAGE_S = 20.0


@pytest.fixture
def own_broker(tmp_path):
    """A broker of this test's own: the test stops and restarts it."""
    with temporary_broker(tmp_path / "kafka") as settings:
        yield settings


def _take_down(settings: BrokerSettings, sig: signal.Signals) -> None:
    # a controlled shutdown (SIGTERM) on a busy CI machine can take a minute
    faults.kill_node(settings, 1, sig, timeout_s=120)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_broker_outage_during_simulate_and_stream_loses_and_duplicates_nothing(own_broker, tmp_path, sig):
    data = tmp_path / "data"
    env = dict(os.environ, GIGAPULSE_BOOTSTRAP_SERVERS=own_broker.bootstrap, GIGAPULSE_DATA_DIR=str(data),
               GIGAPULSE_STREAM_GROUP_ID="g-outage")
    worker_log, sim_log, summary = tmp_path / "worker.log", tmp_path / "sim.log", tmp_path / "summary.json"
    worker = cli(["stream"], env, worker_log)
    sim = cli(["simulate", "--plant", "legacy", "--duration", "60s", "--speed", "1", "--seed", "5",
                "--summary-json", str(summary)], env, sim_log)
    try:
        wait_for(lambda: lake_readings(data / "lake")[0] > 0, 120, "the first landed readings",
                  alive=[(worker, worker_log), (sim, sim_log)])
        _take_down(own_broker, sig)
        time.sleep(OUTAGE_S)
        broker.start(own_broker)
        back, landed_at_restart = time.monotonic(), lake_readings(data / "lake")[0]
        wait_for(lambda: lake_readings(data / "lake")[0] > landed_at_restart, 120, "landing to resume",
                  alive=[(worker, worker_log)])
        resumed_s = time.monotonic() - back
        assert sim.wait(timeout=240) == 0, sim_log.read_text()[-3000:]
        produced = json.loads(summary.read_text())
        assert produced["failed_sends"] == 0
        wait_for(lambda: lake_readings(data / "lake")[0] >= produced["readings"], 180,
                  "the lake to catch up after the outage", alive=[(worker, worker_log)])
        assert lake_readings(data / "lake") == (produced["readings"], produced["readings"])
        report(f"broker {sig.name} for {OUTAGE_S:.0f} s during simulate and stream", produced["readings"],
               *lake_readings(data / "lake"), f"landing resumed {resumed_s:.1f} s after the broker was back")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, worker_log.read_text()[-3000:]
    finally:
        for proc in (worker, sim):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert "Traceback" not in worker_log.read_text() + sim_log.read_text()


def test_a_broker_that_stays_away_fails_simulate_with_one_line(own_broker, tmp_path):
    env = dict(os.environ, GIGAPULSE_BOOTSTRAP_SERVERS=own_broker.bootstrap, GIGAPULSE_DATA_DIR=str(tmp_path),
               GIGAPULSE_PRODUCER_DELIVERY_TIMEOUT_S="4")
    log = tmp_path / "sim.log"
    sim = cli(["simulate", "--plant", "legacy", "--duration", "120s", "--speed", "1", "--seed", "5"], env, log)
    try:
        wait_for(lambda: readings_end(own_broker.bootstrap) > 0, 120, "the first produced readings",
                  alive=[(sim, log)])
        _take_down(own_broker, signal.SIGKILL)
        t0 = time.monotonic()
        rc = sim.wait(timeout=120)
        took = time.monotonic() - t0
    finally:
        if sim.poll() is None:
            sim.kill()
            sim.wait()
    text = log.read_text()
    assert rc != 0
    last = [ln for ln in text.strip().splitlines() if ln.strip()][-1]
    assert last.startswith("gigapulse: error:") and "not delivered" in last, text[-3000:]
    assert "Traceback" not in text and "readings_per_s" not in text  # no summary claims what was lost
    assert took < 60, f"took {took:.0f} s to give up"
