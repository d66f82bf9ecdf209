"""The simulated plant over MQTT (``gigapulse simulate --serve mqtt``): a publisher, not a broker.

It runs :class:`~ingestion.simulator.PlantSimulator` and publishes every reading into an MQTT broker
the user runs (a Mosquitto, given by ``--mqtt-host/--mqtt-port``), as a plant's edge would:

- ``sparkplug``: each station is a Sparkplug B edge node (group = site, node = station) with its
  equipment as the device. NBIRTH (bdSeq, ``Node Control/Rebirth``) and DBIRTH declare every sensor
  as a Double metric with an alias and a null value (the edge has not sampled yet); then one DDATA
  per station and tick carries that tick's readings by alias, each with its own timestamp and, when
  not good, a ``Quality`` property. An NCMD ``Node Control/Rebirth`` makes the node publish its
  births again. All nodes share one MQTT connection, so the broker cannot publish an NDEATH will
  per node: :meth:`MqttPlantPublisher.close` sends each node's NDEATH itself.
- ``uns``: one JSON message ``{"value", "ts", "quality"}`` per reading on the sensor's path topic.

QoS 1 by default: what the broker acknowledged, the bridge gets (the tests count on it).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ingestion.bridges import sparkplug as spb
from ingestion.bridges import sparkplug_b_pb2 as pb
from schemas.asset_model import Plant
from schemas.contracts import QUALITY_BY_CODE

log = logging.getLogger(__name__)

#: OPC DA quality words for the Sparkplug ``Quality`` property, by our quality code.
_OPC_QUALITY = {0: 192, 1: 64, 2: 0}


@dataclass
class _EdgeNode:
    """One station as a Sparkplug edge node."""

    group: str
    node: str
    device: str
    names: list[str]              # metric names, in the station's sensor order
    alias: dict[str, int]         # sensor id -> alias
    seq: int = 0
    bd_seq: int = 0


@dataclass
class PublishStats:
    """What went out."""

    readings: int = 0
    messages: int = 0
    births: int = 0
    rebirths: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class MqttPlantPublisher:
    """Publishes simulator ticks into a broker, as Sparkplug B edge nodes or a Unified Namespace."""

    def __init__(self, plant: Plant, host: str, port: int, mode: Literal["sparkplug", "uns"] = "sparkplug",
                 client_id: str | None = None, qos: int = 1, username: str | None = None,
                 password: str | None = None):
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        if mode not in ("sparkplug", "uns"):
            raise ValueError(f"mode must be sparkplug or uns, got {mode!r}")
        self.plant = plant
        self.mode = mode
        self.qos = qos
        self.stats = PublishStats()
        # births (from paho's thread on NCMD) and data must not interleave
        self._lock = threading.RLock()
        # its own lock: paho calls on_publish holding its message mutex, which publish() takes too
        self._ack_lock = threading.Lock()
        self._unacked = 0
        self._connections = 0
        self._paths = {e.sensor_id: e.path for e in plant.sensors}
        self._nodes: dict[str, _EdgeNode] = {}
        by_station: dict[str, list] = {}
        for e in plant.sensors:
            by_station.setdefault(e.station, []).append(e)
        for station, entries in by_station.items():
            devices = {e.equipment for e in entries}
            if len(devices) != 1:
                raise ValueError(f"station {station} has several equipment {sorted(devices)}: one device expected")
            self._nodes[f"{entries[0].site}.{station}"] = _EdgeNode(
                entries[0].site, station, entries[0].equipment, [e.path.rsplit("/", 1)[-1] for e in entries],
                {e.sensor_id: i + 1 for i, e in enumerate(entries)})
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"gigapulse-sim-{mode}",
                                   protocol=paho.MQTTv5)
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.max_inflight_messages_set(1000)
        self._client.max_queued_messages_set(0)
        self._client.on_message = self._on_command
        self._client.on_connect = self._on_connect
        self._client.on_publish = self._on_publish
        self._connected = threading.Event()
        self._client.connect(host, port, keepalive=30)
        self._client.loop_start()
        if not self._connected.wait(10):
            self._client.loop_stop()
            raise ConnectionError(f"no MQTT broker answered at {host}:{port}")
        if mode == "sparkplug":
            self.birth_all()

    # -- connection and commands ----------------------------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.warning("broker refused the publisher: %s", reason_code)
            return
        if self.mode == "sparkplug":
            groups = sorted({n.group for n in self._nodes.values()})
            client.subscribe([(f"{spb.NAMESPACE}/{g}/NCMD/+", 1) for g in groups])
            if self._connections:
                # births again after a reconnection: a host that missed messages meanwhile starts afresh
                threading.Thread(target=self.birth_all, name="sparkplug-births", daemon=True).start()
        self._connections += 1
        self._connected.set()

    def _on_command(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            t = spb.parse_topic(msg.topic)
            payload = spb.decode_payload(msg.payload)
        except spb.SparkplugError as exc:
            log.warning("ignoring a command: %s", exc)
            return
        wants = any(m.name == spb.REBIRTH_METRIC and m.boolean_value for m in payload.metrics)
        node = self._nodes.get(f"{t.group}.{t.node}")
        if wants and node is not None:
            self.stats.rebirths += 1
            threading.Thread(target=self._birth, args=(node,), daemon=True).start()

    # -- Sparkplug ---------------------------------------------------------------------------------------

    def birth_all(self) -> None:
        """NBIRTH + DBIRTH of every station."""
        for node in self._nodes.values():
            self._birth(node)

    def _birth(self, node: _EdgeNode) -> None:
        ts = _now_ms()
        with self._lock:
            node.seq = 0
            nb = spb.encode_payload([spb.MetricOut(node.bd_seq, spb.INT64, name=spb.BDSEQ_METRIC),
                                     spb.MetricOut(False, spb.BOOLEAN, name=spb.REBIRTH_METRIC)], ts, self._next(node))
            self._send(f"{spb.NAMESPACE}/{node.group}/NBIRTH/{node.node}", nb)
            birth = pb.Payload(timestamp=ts, seq=self._next(node))
            for name, alias in zip(node.names, node.alias.values(), strict=True):
                birth.metrics.add(name=name, alias=alias, datatype=spb.DOUBLE, is_null=True, timestamp=ts)
            self._send(f"{spb.NAMESPACE}/{node.group}/DBIRTH/{node.node}/{node.device}", birth.SerializeToString())
            self.stats.births += 1

    @staticmethod
    def _next(node: _EdgeNode) -> int:
        s = node.seq
        node.seq = spb.next_seq(s)
        return s

    def _ddata(self, gateway: str, sensors: list[str], idx: np.ndarray, ts_ms: np.ndarray, value: np.ndarray,
               quality: np.ndarray) -> None:
        node = self._nodes[gateway]
        aliases = [node.alias[s] for s in sensors]
        payload = pb.Payload(timestamp=_now_ms())
        add = payload.metrics.add
        for i, t, v, q in zip(idx.tolist(), ts_ms.tolist(), value.tolist(), quality.tolist(), strict=True):
            m = add(alias=aliases[i], timestamp=t, double_value=v)
            if q:
                m.properties.keys.append(spb.QUALITY_PROPERTY)
                m.properties.values.add(type=spb.INT32, int_value=_OPC_QUALITY[q])
        with self._lock:
            payload.seq = self._next(node)
            self._send(f"{spb.NAMESPACE}/{node.group}/DDATA/{node.node}/{node.device}", payload.SerializeToString())

    # -- publishing ----------------------------------------------------------------------------------------

    def publish_frames(self, frames: Iterable[Any]) -> int:
        """Publish :class:`~ingestion.simulator.output.FrameBatch` es; returns the readings sent."""
        n = 0
        for f in frames:
            if not len(f):
                continue
            if self.mode == "sparkplug":
                self._ddata(f.gateway, f.sensors, f.idx, f.ts_ms, f.value, f.quality)
            else:
                for i, t, v, q in zip(f.idx.tolist(), f.ts_ms.tolist(), f.value.tolist(), f.quality.tolist(),
                                      strict=True):
                    doc = {"value": v, "ts": t, "quality": QUALITY_BY_CODE[q].value}
                    self._send(self._paths[f.sensors[i]], json.dumps(doc))
            n += len(f)
        self.stats.readings += n
        return n

    def _send(self, topic: str, payload: bytes | str) -> None:
        if self.qos:
            with self._ack_lock:
                self._unacked += 1
        self._client.publish(topic, payload, qos=self.qos)
        self.stats.messages += 1

    def close(self, timeout_s: float = 30.0, deaths: bool = True) -> PublishStats:
        """Send each node's NDEATH (Sparkplug, unless not ``deaths``), wait for the broker's acknowledgements,
        disconnect."""
        if self.mode == "sparkplug" and deaths:
            with self._lock:
                for node in self._nodes.values():
                    death = spb.encode_payload([spb.MetricOut(node.bd_seq, spb.INT64, name=spb.BDSEQ_METRIC)],
                                               _now_ms(), seq=None)
                    self._send(f"{spb.NAMESPACE}/{node.group}/NDEATH/{node.node}", death)
        self._wait_acked(timeout_s)
        self._client.disconnect()
        self._client.loop_stop()
        return self.stats

    def _wait_acked(self, timeout_s: float) -> None:
        """Until the broker acknowledged every QoS 1 message (PUBACK), or ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._ack_lock:
                if self._unacked <= 0:
                    return
            time.sleep(0.02)
        log.warning("%d messages not acknowledged by the broker after %.0f s", self._unacked, timeout_s)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with self._ack_lock:
            self._unacked -= 1


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def serve_mqtt(plant: Plant, seconds: float, speed: float | None, seed: int, start: Any, host: str, port: int,
               mode: Literal["sparkplug", "uns"] = "sparkplug", qos: int = 1,
               on_connected: Callable[[], None] | None = None) -> PublishStats:
    """Run the simulated plant for ``seconds`` and publish it (``gigapulse simulate --serve mqtt``).

    ``on_connected`` is called once the broker accepted the publisher (and the births went out)."""
    from ingestion.pipeline import paced
    from ingestion.simulator import PlantSimulator

    sim = PlantSimulator(plant, seed=seed, start=start)
    pub = MqttPlantPublisher(plant, host, port, mode=mode, qos=qos)
    if on_connected is not None:
        on_connected()
    try:
        for tick in paced(sim.run(seconds), sim.start, speed):
            pub.publish_frames(tick.frames)
    except KeyboardInterrupt:
        pass  # Ctrl-C: the nodes' deaths still go out
    finally:
        stats = pub.close()
    return stats
