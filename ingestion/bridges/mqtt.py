"""The MQTT bridge: a Unified Namespace and Sparkplug B edge nodes into the platform's frames.

Two decoders, both pure state over a sink (``reading``/``reject``/``mark_bad``), so they are tested
without a broker: :class:`UnsDecoder` reads plain JSON values on topics that are the sensors' ISA-95
paths; :class:`SparkplugHost` plays a Sparkplug B host application (birth certificates, aliases,
sequence numbers, deaths, rebirth requests). :class:`MqttBridge` only wires them to paho-mqtt's
network thread; ``gigapulse bridge mqtt --config FILE`` runs it.

Addresses (the scheme shared by every bridge): UNS topic = the sensor's ``path``; Sparkplug group =
site, edge node = station, device = equipment, metric name = the sensor's name within its equipment
(the last path element).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from pydantic import SecretStr

from ingestion.bridges import sparkplug as spb
from ingestion.bridges.config import BridgeConfigError, MqttConfig
from schemas.addresses import sparkplug_address, uns_topic
from schemas.asset_model import Plant
from schemas.contracts import QUALITY_CODES, Quality, Reason

log = logging.getLogger(__name__)

#: Environment variable that holds the broker password (the config file never does).
PASSWORD_ENV = "GIGAPULSE_MQTT_PASSWORD"
#: A node asked for a rebirth is not asked again before this many seconds (its NBIRTH may be on its way).
REBIRTH_RETRY_S = 5.0
#: Node metrics that describe the edge node itself, never a sensor: not refused when unmapped.
_CONTROL_PREFIXES = ("Node Control/", "Device Control/", "Properties/", "Node Info/", "Device Info/")


class MqttSink(Protocol):
    """What the decoders need from :class:`ingestion.bridges.sink.BridgeSink`."""

    def reading(self, sensor_id: str, ts_ms: int, value: float, quality: int = 0) -> None: ...
    def reject(self, reason: Reason, detail: str, payload: bytes = b"", key: str | None = None) -> None: ...
    def mark_bad(self, sensor_ids: list[str], ts_ms: int) -> None: ...
    def flush(self) -> None: ...


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# --------------------------------------------------------------------------------------------------
# Configuration: the model is :class:`ingestion.bridges.config.MqttConfig`


def broker_password(config: MqttConfig, environ: Mapping[str, str] | None = None) -> SecretStr | None:
    """The broker password from ``GIGAPULSE_MQTT_PASSWORD`` or the password file, read at start-up.

    Never part of the YAML (a configuration file gets copied, committed and printed); kept as a
    ``SecretStr`` so no log line or repr shows it.
    """
    env = os.environ if environ is None else environ
    if env.get(PASSWORD_ENV):
        return SecretStr(env[PASSWORD_ENV])
    pf = config.broker.password_file
    if pf is None:
        return None
    try:
        return SecretStr(pf.read_text().strip())
    except OSError as exc:
        raise BridgeConfigError(f"broker.password_file: cannot read {pf} ({exc.strerror or exc})") from None


# --------------------------------------------------------------------------------------------------
# Addresses


@dataclass(frozen=True)
class MqttAddressBook:
    """Sensor ids by UNS topic and by Sparkplug (group, node, device, metric)."""

    by_topic: dict[str, str]
    by_metric: dict[tuple[str, str, str | None, str], str]

    @classmethod
    def from_plant(cls, plant: Plant) -> MqttAddressBook:
        by_topic: dict[str, str] = {}
        by_metric: dict[tuple[str, str, str | None, str], str] = {}
        per_station: dict[tuple[str, str, str], list[str]] = {}
        for e in plant.sensors:
            a = sparkplug_address(e)
            by_topic[uns_topic(e)] = e.sensor_id
            by_metric[(a.group_id, a.edge_node_id, a.device_id, a.metric)] = e.sensor_id
            per_station.setdefault((a.group_id, a.edge_node_id, a.metric), []).append(e.sensor_id)
        # A node-level metric names a sensor of the station directly when that name is unambiguous.
        for (site, station, name), ids in per_station.items():
            if len(ids) == 1:
                by_metric[(site, station, None, name)] = ids[0]
        return cls(by_topic, by_metric)


# --------------------------------------------------------------------------------------------------
# Unified Namespace


_QUALITY_NAMES = {q.value: code for q, code in QUALITY_CODES.items()}


def parse_uns_value(data: bytes, now_ms: int) -> tuple[float, int, int]:
    """``(value, ts_ms, quality)`` of a UNS payload: a bare number or ``{"value", "ts"?, "quality"?}``.

    Anything else raises :class:`UnsError` with the reason its dead letter gets.
    """
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise UnsError(Reason.NOT_JSON, "payload is not JSON") from None
    if isinstance(doc, int | float):  # bools too: a digital signal reads 1.0 / 0.0
        return float(doc), now_ms, 0
    if not isinstance(doc, dict):
        raise UnsError(Reason.NOT_OBJECT, f"expected a number or an object, got {type(doc).__name__}")
    if "value" not in doc:
        raise UnsError(Reason.MISSING_FIELD, "no 'value'")
    value = doc["value"]
    if not isinstance(value, int | float):
        raise UnsError(Reason.WRONG_TYPE, f"'value' is {type(value).__name__}, not a number")
    ts = doc.get("ts", now_ms)
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        raise UnsError(Reason.BAD_TIMESTAMP, f"'ts' must be epoch milliseconds, got {ts!r}")
    quality = doc.get("quality", Quality.GOOD.value)
    if isinstance(quality, str) and quality in _QUALITY_NAMES:
        code = _QUALITY_NAMES[quality]
    elif isinstance(quality, int) and not isinstance(quality, bool) and quality in _QUALITY_NAMES.values():
        code = quality
    else:
        raise UnsError(Reason.BAD_VALUE, f"'quality' must be good, uncertain or bad, got {quality!r}")
    return float(value), int(ts), code


class UnsError(ValueError):
    """A UNS payload refused with its reason."""

    def __init__(self, reason: Reason, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class UnsDecoder:
    """Topic = sensor path; each message one reading."""

    def __init__(self, book: MqttAddressBook, sink: MqttSink, clock: Callable[[], int] = _now_ms):
        self._book = book
        self._sink = sink
        self._clock = clock

    def handle(self, topic: str, data: bytes) -> bool:
        """Decode one message into the sink; False when it became a dead letter."""
        sensor = self._book.by_topic.get(topic)
        if sensor is None:
            self._sink.reject(Reason.UNKNOWN_SENSOR, f"no sensor at topic {topic}", data, key=topic)
            return False
        try:
            value, ts, quality = parse_uns_value(data, self._clock())
        except UnsError as exc:
            self._sink.reject(exc.reason, f"{topic}: {exc.detail}", data, key=topic)
            return False
        self._sink.reading(sensor, ts, value, quality)
        return True


# --------------------------------------------------------------------------------------------------
# Sparkplug B host application


@dataclass(slots=True)
class _Known:
    """A metric a birth certificate declared."""

    name: str
    device: str | None
    datatype: int
    sensor: str | None


@dataclass
class _EdgeNode:
    """What the host knows of one edge node since its last NBIRTH."""

    born: bool = False
    seq: int | None = None
    bd_seq: int | None = None
    by_alias: dict[int, _Known] = field(default_factory=dict)
    by_name: dict[tuple[str | None, str], _Known] = field(default_factory=dict)
    #: Sensors born per device (None: the node's own metrics); what a death marks bad.
    sensors: dict[str | None, set[str]] = field(default_factory=dict)
    dead_devices: set[str] = field(default_factory=set)
    rebirth_requested_at: float | None = None


@dataclass
class SparkplugCounters:
    """What the host application saw, for ``/status`` and the tests."""

    births: int = 0
    deaths: int = 0
    stale_deaths: int = 0
    data_messages: int = 0
    metrics: int = 0
    null_metrics: int = 0
    unmapped_metrics: int = 0
    sequence_gaps: int = 0
    rebirths_requested: int = 0
    bad_payloads: int = 0
    commands_ignored: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class SparkplugHost:
    """The host application's state machine over births, data, deaths and sequence numbers.

    ``publish(topic, payload)`` sends the rebirth NCMDs; ``monotonic`` paces them. Every decision
    (what becomes a reading, a dead letter, a bad-quality mark, a rebirth request) is made here, in
    the caller's thread, so paho's network thread and a unit test drive the same code.
    """

    def __init__(self, book: MqttAddressBook, sink: MqttSink, publish: Callable[[str, bytes], None],
                 clock: Callable[[], int] = _now_ms, monotonic: Callable[[], float] = time.monotonic):
        self._book = book
        self._sink = sink
        self._publish = publish
        self._clock = clock
        self._monotonic = monotonic
        self._nodes: dict[tuple[str, str], _EdgeNode] = {}
        self.counters = SparkplugCounters()

    def node_state(self, group: str, node: str) -> _EdgeNode | None:
        """The host's view of one edge node (tests and ``/status``)."""
        return self._nodes.get((group, node))

    def handle(self, topic: str, data: bytes) -> None:
        """One message of ``spBv1.0/<group>/#``."""
        try:
            t = spb.parse_topic(topic)
        except spb.SparkplugError as exc:
            self.counters.bad_payloads += 1
            self._sink.reject(Reason.BAD_PAYLOAD, str(exc), data, key=topic)
            return
        if t.message_type in spb.COMMAND_TYPES:
            self.counters.commands_ignored += 1  # our own rebirth requests, or another host's
            return
        key = f"{t.group}/{t.node}"
        try:
            payload = spb.decode_payload(data)
        except spb.SparkplugError as exc:
            self.counters.bad_payloads += 1
            self._sink.reject(Reason.BAD_PAYLOAD, f"{topic}: {exc}", data, key=key)
            return
        node = self._nodes.setdefault(t.node_key, _EdgeNode())
        mtype = t.message_type
        if mtype == "NBIRTH":
            self._nbirth(t, node, payload, data)
        elif mtype == "NDEATH":
            self._ndeath(t, node, payload)
        else:
            self._check_sequence(t, node, payload, data)
            if mtype == "DBIRTH":
                self._dbirth(t, node, payload, data)
            elif mtype == "DDEATH":
                self._ddeath(t, node, payload)
            else:
                self.counters.data_messages += 1
                self._data(t, node, payload, data)

    # -- births and deaths -------------------------------------------------------------------------

    def _nbirth(self, t: spb.SparkplugTopic, node: _EdgeNode, payload: Any, data: bytes) -> None:
        fresh = _EdgeNode(born=True, seq=payload.seq if payload.HasField("seq") else 0)
        for m in payload.metrics:
            if m.name == spb.BDSEQ_METRIC:
                fresh.bd_seq = int(m.long_value if m.WhichOneof("value") == "long_value" else m.int_value)
        self._nodes[t.node_key] = fresh
        self.counters.births += 1
        self._birth_metrics(t, fresh, None, payload, data)

    def _dbirth(self, t: spb.SparkplugTopic, node: _EdgeNode, payload: Any, data: bytes) -> None:
        if not node.born:
            self._request_rebirth(t, "DBIRTH before the node's NBIRTH")
        node.dead_devices.discard(t.device)
        node.sensors[t.device] = set()
        self.counters.births += 1
        self._birth_metrics(t, node, t.device, payload, data)

    def _birth_metrics(self, t: spb.SparkplugTopic, node: _EdgeNode, device: str | None, payload: Any,
                       data: bytes) -> None:
        born = node.sensors.setdefault(device, set())
        unmapped: list[str] = []
        for m in payload.metrics:
            if not m.name:
                continue
            sensor = self._book.by_metric.get((t.group, t.node, device, m.name))
            known = _Known(m.name, device, m.datatype, sensor)
            node.by_name[(device, m.name)] = known
            if m.HasField("alias"):
                node.by_alias[m.alias] = known
            if sensor is None:
                if not (m.name == spb.BDSEQ_METRIC or m.name.startswith(_CONTROL_PREFIXES)):
                    unmapped.append(m.name)
                continue
            born.add(sensor)
        if unmapped:
            where = f"{t.group}/{t.node}" + (f"/{device}" if device else "")
            self._sink.reject(Reason.UNKNOWN_SENSOR, f"{t.message_type} {where}: no sensor for metrics "
                              f"{', '.join(sorted(unmapped)[:10])}" + (" ..." if len(unmapped) > 10 else ""),
                              data, key=f"{t.group}/{t.node}")
        self._readings(t, node, device, payload, data, birth=True)

    def _ndeath(self, t: spb.SparkplugTopic, node: _EdgeNode, payload: Any) -> None:
        bd = None
        for m in payload.metrics:
            if m.name == spb.BDSEQ_METRIC:
                bd = int(m.long_value if m.WhichOneof("value") == "long_value" else m.int_value)
        if not node.born or (bd is not None and node.bd_seq is not None and bd != node.bd_seq):
            # The will of an earlier session (the broker delivers it late), or a node we never saw born.
            self.counters.stale_deaths += 1
            return
        self.counters.deaths += 1
        # The will was built when the node connected, so its timestamp is old: the death is now.
        sensors = sorted(set().union(*node.sensors.values())) if node.sensors else []
        node.born = False
        node.seq = None
        if sensors:
            self._sink.mark_bad(sensors, self._clock())

    def _ddeath(self, t: spb.SparkplugTopic, node: _EdgeNode, payload: Any) -> None:
        self.counters.deaths += 1
        node.dead_devices.add(t.device)
        sensors = sorted(node.sensors.get(t.device, ()))
        if sensors:
            self._sink.mark_bad(sensors, payload.timestamp if payload.HasField("timestamp") else self._clock())

    # -- data ----------------------------------------------------------------------------------------

    def _check_sequence(self, t: spb.SparkplugTopic, node: _EdgeNode, payload: Any, data: bytes) -> None:
        if not node.born:
            self._request_rebirth(t, f"{t.message_type} from an edge node without a birth")
            return
        if not payload.HasField("seq"):
            return
        seq = payload.seq
        expected = spb.next_seq(node.seq) if node.seq is not None else seq
        node.seq = seq
        if seq != expected:
            lost = (seq - expected) % 256
            self.counters.sequence_gaps += 1
            self._sink.reject(Reason.SEQUENCE_GAP, f"edge node {t.group}/{t.node}: expected seq {expected}, "
                              f"got {seq} ({lost} message(s) lost) at {t}", data, key=f"{t.group}/{t.node}")
            self._request_rebirth(t, "sequence gap", force=True)

    def _data(self, t: spb.SparkplugTopic, node: _EdgeNode, payload: Any, data: bytes) -> None:
        if t.device is not None and t.device in node.dead_devices:
            self._request_rebirth(t, f"DDATA from dead device {t.device}")
        self._readings(t, node, t.device, payload, data, birth=False)

    def _readings(self, t: spb.SparkplugTopic, node: _EdgeNode, device: str | None, payload: Any, data: bytes,
                  birth: bool) -> None:
        default_ts = payload.timestamp if payload.HasField("timestamp") else self._clock()
        unknown_alias: list[int] = []
        wrong: list[str] = []
        sink_reading = self._sink.reading
        by_alias, by_name, book = node.by_alias, node.by_name, self._book.by_metric
        n = 0
        for m in payload.metrics:
            n += 1
            if m.name:
                known = by_name.get((device, m.name))
                if known is None:
                    sensor = book.get((t.group, t.node, device, m.name))
                    if sensor is None:
                        self.counters.unmapped_metrics += 1
                        continue
                    known = _Known(m.name, device, m.datatype, sensor)
            elif m.HasField("alias"):
                known = by_alias.get(m.alias)
                if known is None:
                    unknown_alias.append(m.alias)
                    continue
            else:
                wrong.append("a metric with neither name nor alias")
                continue
            if known.sensor is None:
                if not birth:
                    self.counters.unmapped_metrics += 1
                continue
            if m.is_null:
                self.counters.null_metrics += 1
                continue
            try:
                value = spb.metric_number(m, m.datatype or known.datatype)
            except spb.SparkplugError as exc:
                wrong.append(f"{known.name}: {exc}")
                continue
            ts = m.timestamp if m.HasField("timestamp") else default_ts
            sink_reading(known.sensor, ts, value, spb.metric_quality(m) if m.HasField("properties") else 0)
        self.counters.metrics += n
        key = f"{t.group}/{t.node}"
        if unknown_alias:
            self._sink.reject(Reason.UNKNOWN_ALIAS, f"{t}: aliases {sorted(unknown_alias)[:10]} not in any birth "
                              "certificate", data, key=key)
            self._request_rebirth(t, "unknown alias")
        if wrong:
            self._sink.reject(Reason.WRONG_TYPE, f"{t}: {'; '.join(wrong[:5])}", data, key=key)

    def _request_rebirth(self, t: spb.SparkplugTopic, why: str, force: bool = False) -> None:
        """Publish ``Node Control/Rebirth`` = true to the node (at most every REBIRTH_RETRY_S unless ``force``)."""
        node = self._nodes.setdefault(t.node_key, _EdgeNode())
        now = self._monotonic()
        if not force and node.rebirth_requested_at is not None and now - node.rebirth_requested_at < REBIRTH_RETRY_S:
            return
        node.rebirth_requested_at = now
        self.counters.rebirths_requested += 1
        log.info("asking %s/%s for a rebirth: %s", t.group, t.node, why)
        self._publish(f"{spb.NAMESPACE}/{t.group}/NCMD/{t.node}", spb.rebirth_request(self._clock()))


# --------------------------------------------------------------------------------------------------
# The paho-mqtt client


@dataclass
class MqttCounters:
    """Messages the client saw (the sink counts readings in, out, buffered and rejected)."""

    messages: int = 0
    uns_messages: int = 0
    sparkplug_messages: int = 0
    connects: int = 0
    disconnects: int = 0
    connected: bool = False

    def to_dict(self) -> dict[str, int | bool]:
        return asdict(self)


class MqttBridge:
    """paho-mqtt 2.x client (callback API version 2) feeding :class:`UnsDecoder` and :class:`SparkplugHost`.

    paho's network thread runs the decoders (their sink calls are cheap appends; the sink's own
    threads make frames and send them). paho reconnects by itself with a backoff between
    ``reconnect_min_s`` and ``reconnect_max_s``; every (re)connection subscribes again at the
    configured QoS, so a broker that lost the session still delivers.
    """

    def __init__(self, config: MqttConfig, plant: Plant, sink: MqttSink, password: SecretStr | None = None):
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.config = config
        self._sink = sink
        self._filters = config.subscriptions(plant)
        book = MqttAddressBook.from_plant(plant)
        self.uns = UnsDecoder(book, sink) if "uns" in config.modes else None
        self.sparkplug = SparkplugHost(book, sink, self._publish) if "sparkplug" in config.modes else None
        self.counters = MqttCounters()
        self._connected = threading.Event()
        self._background = True
        b = config.broker
        v5 = b.protocol == "5"
        kwargs: dict[str, Any] = {"client_id": config.client_id(), "protocol": paho.MQTTv5 if v5 else paho.MQTTv311}
        if not v5:
            kwargs["clean_session"] = not b.persistent_session
        self._client = client = paho.Client(CallbackAPIVersion.VERSION2, **kwargs)
        if b.username is not None:
            client.username_pw_set(b.username, password.get_secret_value() if password is not None else None)
        client.reconnect_delay_set(min_delay=max(1, int(b.reconnect_min_s)), max_delay=max(1, int(b.reconnect_max_s)))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._state_topic = None
        if config.sparkplug.host_id and "sparkplug" in config.modes:
            self._state_topic = f"{spb.NAMESPACE}/STATE/{config.sparkplug.host_id}"
            self._state_ts = _now_ms()
            client.will_set(self._state_topic, json.dumps({"online": False, "timestamp": self._state_ts}),
                            qos=1, retain=True)

    @property
    def subscriptions(self) -> list[str]:
        """The topic filters the bridge subscribes to."""
        return list(self._filters)

    @property
    def client(self) -> Any:
        """The paho client (tests publish through their own)."""
        return self._client

    def start(self, background: bool = True) -> None:
        """Connect and start paho's network thread (``background``; else the caller runs ``client.loop()``)."""
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        b = self.config.broker
        kwargs: dict[str, Any] = {}
        if b.protocol == "5":
            kwargs["clean_start"] = not b.persistent_session
            if b.persistent_session:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = b.session_expiry_s
                kwargs["properties"] = props
        self._background = background
        if background:
            self._client.connect_async(b.host, b.port, keepalive=b.keepalive_s, **kwargs)
            self._client.loop_start()
        else:
            self._client.connect(b.host, b.port, keepalive=b.keepalive_s, **kwargs)

    def wait_connected(self, timeout_s: float) -> bool:
        """True once the broker acknowledged the subscriptions (SUBACK) of the first connection."""
        return self._connected.wait(timeout_s)

    def stop(self) -> None:
        """Disconnect cleanly (announcing the host offline when it announced itself) and flush."""
        if self._state_topic is not None and self.counters.connected:
            info = self._client.publish(self._state_topic, json.dumps({"online": False, "timestamp": self._state_ts}),
                                        qos=1, retain=True)
            info.wait_for_publish(timeout=2.0)
        self._client.disconnect()
        if self._background:
            self._client.loop_stop()
        self._sink.flush()

    def status(self) -> dict[str, Any]:
        """Client and host counters (``/status``)."""
        out: dict[str, Any] = {"mqtt": self.counters.to_dict(), "subscriptions": list(self._filters)}
        if self.sparkplug is not None:
            out["sparkplug"] = self.sparkplug.counters.to_dict()
        return out

    # -- paho callbacks (network thread) ---------------------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.warning("broker %s:%s refused the connection: %s", self.config.broker.host,
                        self.config.broker.port, reason_code)
            return
        self.counters.connects += 1
        self.counters.connected = True
        client.subscribe([(f, self.config.qos) for f in self._filters])
        if self._state_topic is not None:
            client.publish(self._state_topic, json.dumps({"online": True, "timestamp": self._state_ts}),
                           qos=1, retain=True)
        log.info("connected to %s:%s (session present: %s), subscribing to %s", self.config.broker.host,
                 self.config.broker.port, getattr(flags, "session_present", False), ", ".join(self._filters))

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        refused = [str(rc) for rc in reason_codes if rc.is_failure]
        if refused:
            log.warning("broker refused subscriptions: %s", ", ".join(refused))
        self._connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.counters.disconnects += 1
        self.counters.connected = False
        if reason_code.is_failure:
            log.warning("lost the broker (%s); paho reconnects", reason_code)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self.counters.messages += 1
        topic = msg.topic
        if topic.startswith(spb.NAMESPACE + "/"):
            if self.sparkplug is not None:
                self.counters.sparkplug_messages += 1
                self.sparkplug.handle(topic, msg.payload)
        elif self.uns is not None:
            self.counters.uns_messages += 1
            self.uns.handle(topic, msg.payload)

    def _publish(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=0)


def run_mqtt(config: MqttConfig, sink: Any, stop: threading.Event, password: SecretStr | None = None,
             on_ready: Callable[[list[str]], None] | None = None) -> None:
    """The runner of ``gigapulse bridge mqtt``: bridge into ``sink`` until ``stop`` is set.

    ``password``: from :func:`broker_password`, read once at start-up (the CLI does it before the sink
    opens, so a missing secret file is a one-line error); ``on_ready`` hears the topic filters once the
    broker acknowledged them (the CLI prints them).
    """
    bridge = MqttBridge(config, sink.plant, sink, password)
    sink.protocol_status = bridge.status  # the client's and the Sparkplug host's counters on /status
    bridge.start()
    try:
        while not stop.is_set():
            if bridge.wait_connected(0.2):
                if on_ready is not None:
                    on_ready(bridge.subscriptions)
                break
        stop.wait()
    finally:
        bridge.stop()
