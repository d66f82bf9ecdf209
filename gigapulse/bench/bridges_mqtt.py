"""``gigapulse bench bridges mqtt``: values/s from Mosquitto into Kafka through our MQTT bridge.

The broker is pre-filled, like the stream bench's topic: two persistent MQTT sessions (the bridge's
and the ceiling's) subscribe at QoS 1 and go away, the simulated reference plant is published
(Sparkplug B DDATA by alias, or UNS JSON), and Mosquitto queues a copy for each session. Then, in
this one process:

* **ours**: :class:`~ingestion.bridges.mqtt.MqttBridge` resumes its session and feeds a
  :class:`~ingestion.bridges.sink.BridgeSink` (disk journal, Kafka acks=all) on a private broker; the
  clock runs from the connection to the moment the sink closed with every value acknowledged by Kafka;
* **ceiling**: a plain paho-mqtt subscriber resumes its session and only decodes (protobuf parse and
  every metric's value, or ``json.loads``), no Kafka: what paho and the decode cost by themselves.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gigapulse.bench.harness import (
    PLANT,
    BenchError,
    bench_broker,
    delete_topics,
    new_topic,
    readings_topic_config,
)
from gigapulse.bench.report import (
    console,
    environment,
    fmt_spread,
    markdown_table,
    profile_top,
    spread,
)

#: Issue #13: values/s from Mosquitto to Kafka through the bridge, one process.
TARGET_VALUES_PER_S = 50_000
START = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)


@dataclass
class BridgeMqttOptions:
    runs: int = 3
    #: Simulated seconds of the reference plant per run (about 5,600 values each).
    sim_s: float = 60.0
    mode: str = "sparkplug"
    seed: int = 42
    timeout_s: float = 300.0
    profile: Path | None = None


@contextlib.contextmanager
def mosquitto(workdir: Path) -> Iterator[int]:
    """The project's private Mosquitto (:mod:`infra.mqtt_broker`); its port."""
    from infra.mqtt_broker import MosquittoError, running_mosquitto

    try:
        with running_mosquitto(workdir) as server:
            yield server.port
    except MosquittoError as exc:
        raise BenchError(str(exc)) from None


def _client(client_id: str, port: int, on_message=None, subscribe: list[str] | None = None):
    """A paho client on a persistent MQTT 5 session (kept an hour after it disconnects)."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    ready = threading.Event()

    def on_connect(client, userdata, flags, rc, props):
        if subscribe:
            client.subscribe([(f, 1) for f in subscribe])
        else:
            ready.set()

    c.on_connect = on_connect
    c.on_subscribe = lambda *a: ready.set()
    if on_message is not None:
        c.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    c.loop_start()
    if not ready.wait(10):
        raise BenchError(f"{client_id}: no CONNACK/SUBACK from mosquitto")
    return c


def _close(c) -> None:
    c.disconnect()
    c.loop_stop()


def _prefill(plant, port: int, opts: BridgeMqttOptions, filters: list[str], clients: list[str]) -> int:
    """Subscribe the sessions, publish the plant, return the values published."""
    from ingestion.bridges.mqtt_server import MqttPlantPublisher
    from ingestion.simulator import PlantSimulator

    for cid in clients:
        _close(_client(cid, port, subscribe=filters))
    pub = MqttPlantPublisher(plant, "127.0.0.1", port, mode=opts.mode, client_id="bench-publisher")
    for tick in PlantSimulator(plant, seed=opts.seed, start=START).run(opts.sim_s):
        pub.publish_frames(tick.frames)
    pub.close(timeout_s=120, deaths=False)
    return pub.stats.readings


def _ceiling(port: int, cid: str, n: int, mode: str, timeout_s: float) -> float:
    """Seconds a decode-only paho subscriber takes to receive and decode ``n`` values."""
    from ingestion.bridges import sparkplug as spb

    count = [0]
    done = threading.Event()

    def on_message(client, userdata, msg):
        if mode == "uns":
            json.loads(msg.payload)["value"]  # noqa: B018
            count[0] += 1
        else:
            if "DATA" not in msg.topic and "BIRTH" not in msg.topic:
                return
            p = spb.decode_payload(msg.payload)
            for m in p.metrics:
                if not m.is_null:
                    spb.metric_number(m, m.datatype or spb.DOUBLE)
                    count[0] += 1
        if count[0] >= n:
            done.set()

    t0 = time.perf_counter()
    c = _client(cid, port, on_message=on_message)
    ok = done.wait(timeout_s)
    elapsed = time.perf_counter() - t0
    _close(c)
    if not ok:
        raise BenchError(f"ceiling: {count[0]:,} of {n:,} values within {timeout_s:.0f} s")
    return elapsed


def _ours(plant, port: int, cid: str, n: int, bootstrap: str, topic: str, dlq: str, scratch: Path, mode: str,
          timeout_s: float) -> tuple[float, dict[str, Any]]:
    """Seconds our bridge takes to move ``n`` values into Kafka (all acknowledged), and its counters."""
    from ingestion.bridges.config import MqttConfig
    from ingestion.bridges.mqtt import MqttBridge
    from ingestion.bridges.settings import BridgeSettings
    from ingestion.bridges.sink import BridgeSink

    settings = BridgeSettings(bootstrap_servers=bootstrap, readings_topic=topic, dlq_topic=dlq, buffer_dir=scratch)
    config = MqttConfig.model_validate({"plant": PLANT, "broker": {"host": "127.0.0.1", "port": port, "client_id": cid,
                                                                   "persistent_session": True},
                                        "modes": [mode]})
    sink = BridgeSink.open(settings, plant, "bench-mqtt")
    t0 = time.perf_counter()
    bridge = MqttBridge(config, plant, sink)
    # paho's loop in this thread (not its own): the same work, and cProfile (--profile) sees it
    bridge.start(background=False)
    deadline = time.monotonic() + timeout_s
    while sink.stats.received < n and time.monotonic() < deadline:
        bridge.client.loop(timeout=0.05)
    bridge.stop()
    stats = sink.close()
    elapsed = time.perf_counter() - t0
    if stats.received < n:
        raise BenchError(f"ours: {stats.received:,} of {n:,} values within {timeout_s:.0f} s")
    return elapsed, {"sink": stats.to_dict(), **bridge.status()}


def run_bridges_mqtt(opts: BridgeMqttOptions) -> dict[str, Any]:
    """Measure ours and the ceiling ``opts.runs`` times on the same pre-filled broker contents."""
    from ingestion.bridges.config import MqttConfig
    from schemas.asset_model import load_plant

    plant = load_plant(PLANT)
    filters = MqttConfig(modes=[opts.mode]).subscriptions(plant)
    runs: list[dict[str, Any]] = []
    with bench_broker() as bb:
        for r in range(opts.runs):
            with mosquitto(bb.scratch("mosquitto")) as port:
                ours_id, ceiling_id = f"bench-ours-{r}", f"bench-ceiling-{r}"
                n = _prefill(plant, port, opts, filters, [ours_id, ceiling_id])
                topic = new_topic(bb.bootstrap, "bridge-mqtt", 6, readings_topic_config())
                dlq = new_topic(bb.bootstrap, "bridge-mqtt-dlq", 1)
                console.print(f"run {r + 1}/{opts.runs}: {n:,} values queued for each session")
                ceiling_s = _ceiling(port, ceiling_id, n, opts.mode, opts.timeout_s)
                if opts.profile is not None and r == 0:
                    import cProfile
                    prof = cProfile.Profile()
                    prof.enable()
                ours_s, counters = _ours(plant, port, ours_id, n, bb.bootstrap, topic, dlq, bb.scratch("buffer"),
                                         opts.mode, opts.timeout_s)
                if opts.profile is not None and r == 0:
                    prof.disable()
                    prof.dump_stats(str(opts.profile))
                delete_topics(bb.bootstrap, [topic, dlq])
                runs.append({"values": n, "ours_s": ours_s, "ceiling_s": ceiling_s, "ours_values_per_s": n / ours_s,
                             "ceiling_values_per_s": n / ceiling_s, "ratio": ceiling_s / ours_s,
                             "counters": counters})
    ours = spread([x["ours_values_per_s"] for x in runs])
    ceiling = spread([x["ceiling_values_per_s"] for x in runs])
    ratio = spread([x["ratio"] for x in runs])
    target = TARGET_VALUES_PER_S
    table = markdown_table(
        ["measure", "values/s (median, min–max)", "target"],
        [[f"ours: Mosquitto → bridge → Kafka ({opts.mode})", fmt_spread(ours), f"≥ {target:,}"],
         ["ceiling: paho subscriber, decode only", fmt_spread(ceiling), "–"],
         ["ours / ceiling", fmt_spread(ratio, 2), "–"]])
    report = {"bench": "bridges-mqtt", "options": {k: str(v) for k, v in vars(opts).items()},
              "environment": environment(), "runs": runs, "ours": ours, "ceiling": ceiling, "ratio": ratio,
              "met": ours["median"] >= target, "table": table}
    if opts.profile is not None:
        report["profile_top"] = profile_top(opts.profile)
    return report
