"""A bridge's YAML configuration: what it reads and how that maps onto the asset model.

One pydantic model per bridge kind (unknown keys refused: a misspelt key must not be silently ignored),
all built on :class:`BridgeConfig`. :func:`load_config` reads a file and turns any problem (missing file,
broken YAML, a wrong field) into one :class:`BridgeConfigError` line naming the file and the field, which
the CLI prints as it is. Configurations are generated from the asset model by :data:`GENERATORS`
(``gigapulse bridge config``), one function per protocol, from :mod:`schemas.addresses`.

How a bridge hands its data on (Kafka, the disk buffer, the health port) is not here but in the
environment (:class:`ingestion.bridges.settings.BridgeSettings`): the same file works on a laptop and in
a container.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.addresses import modbus_addresses
from schemas.asset_model import Plant
from schemas.contracts import AssetEntry


class BridgeConfigError(ValueError):
    """A bridge configuration that cannot be used; the message is one line naming the file and the field."""


class BridgeConfig(BaseModel):
    """What every bridge's file holds: the plant whose asset model the sensors belong to, and a name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    plant: str = Field("reference", description="reference, legacy or a plant YAML file: sensor ids are "
                       "checked against its asset model.")
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,100}$", description="The bridge's name: its "
                             "client id, the key of its gap letters and its buffer folder (default "
                             "<kind>-<plant>). Two bridges running at once need two names.")

    def bridge_name(self, kind: str) -> str:
        return self.name or f"{kind}-{Path(self.plant).stem}"


M = TypeVar("M", bound=BridgeConfig)


def load_config(path: Path | str, model: type[M]) -> M:
    """Read and validate a bridge's YAML file; any problem is one :class:`BridgeConfigError` line."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise BridgeConfigError(f"bridge config not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BridgeConfigError(f"{path}: cannot be read ({exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BridgeConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise BridgeConfigError(f"{path}: expected a mapping of settings at the top level")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].splitlines()[0]
        if err["type"] == "extra_forbidden":
            msg = f"unknown key (the {model.__name__} keys are: {', '.join(model.model_fields)})" \
                if len(err["loc"]) == 1 else "unknown key"
        more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
        raise BridgeConfigError(f"{path}: {loc}: {msg}{more}") from None


def dump_config(config: BridgeConfig) -> str:
    """The YAML text of a configuration (unset optional fields left out)."""
    return yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), sort_keys=False, allow_unicode=True)


# --------------------------------------------------------------------------- Modbus TCP

ModbusType = Literal["int16", "uint16", "int32", "uint32", "float32", "float64"]
#: Registers each data type takes.
REGISTERS: dict[str, int] = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "float64": 4}
#: Most registers one Modbus read may ask for (the protocol's limit for function codes 3 and 4).
MAX_READ_REGISTERS = 125


class ModbusPoint(BaseModel):
    """One sensor in a block: value = decoded registers × scale + offset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sensor: str = Field(min_length=1, description="Sensor id in the asset model.")
    address: int = Field(ge=0, le=65_535, description="First register of the value.")
    type: ModbusType = "float32"
    byte_order: Literal["big", "little"] = Field("big", description="Byte order within each register.")
    word_order: Literal["big", "little"] = Field("big", description="Register order of a multi-register "
                                                 "value: big = most significant register first.")
    scale: float = 1.0
    offset: float = 0.0

    @property
    def count(self) -> int:
        return REGISTERS[self.type]


class ModbusBlock(BaseModel):
    """Contiguous registers of one unit read in one request, every ``interval_s`` seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unit: int = Field(ge=0, le=255, description="Modbus unit (slave) id.")
    host: str | None = Field(None, min_length=1, description="The endpoint (PLC or gateway) holding the unit, if "
                             "not the configuration's host.")
    port: int | None = Field(None, ge=1, le=65_535, description="Its port, if not the configuration's port.")
    function: Literal["holding", "input"] = Field("holding", description="holding (code 3) or input (code 4) "
                                                  "registers.")
    address: int = Field(ge=0, le=65_535, description="First register read.")
    count: int = Field(ge=1, le=MAX_READ_REGISTERS, description="Registers read (at most 125).")
    interval_s: float = Field(1.0, ge=0.01, le=86_400, description="Seconds between polls.")
    points: list[ModbusPoint] = Field(min_length=1)

    @model_validator(mode="after")
    def _points_inside(self) -> ModbusBlock:
        end = self.address + self.count
        for i, p in enumerate(self.points):
            if p.address < self.address or p.address + p.count > end:
                raise ValueError(f"points.{i} ({p.sensor}, registers {p.address}..{p.address + p.count - 1}) lies "
                                 f"outside the block's registers {self.address}..{end - 1}")
        return self


class ModbusConfig(BridgeConfig):
    """``gigapulse bridge modbus``: the blocks polled from one or more Modbus TCP endpoints.

    An endpoint is a PLC or a gateway (several unit ids behind one address): ``host``/``port`` name the
    default one and a block may name its own. Each endpoint gets ``connections`` TCP connections and its
    units are dealt among them, a unit always on the same one (a device sees its requests in order).
    """

    kind: Literal["modbus"] = "modbus"
    host: str = "127.0.0.1"
    port: int = Field(502, ge=1, le=65_535)
    connections: int = Field(1, ge=1, le=32, description="TCP connections per endpoint, its units dealt among "
                             "them; requests on one connection wait for each other (Modbus TCP devices answer "
                             "in order), requests on two do not. Many devices accept only a few connections.")
    timeout_s: float = Field(1.0, gt=0, le=60, description="A poll not answered within this is a gap.")
    reconnect_min_s: float = Field(0.5, gt=0, description="First wait before reconnecting; doubles per failure.")
    reconnect_max_s: float = Field(10.0, gt=0, description="Longest wait between reconnects.")
    blocks: list[ModbusBlock] = Field(min_length=1)

    def endpoint(self, block: ModbusBlock) -> tuple[str, int]:
        """The (host, port) a block is read from."""
        return (block.host or self.host, block.port or self.port)

    def links(self) -> dict[tuple[str, int, int], list[int]]:
        """Connection (host, port, index) -> the units it reads: each endpoint's units, in order, dealt
        round-robin over at most ``connections`` connections."""
        units: dict[tuple[str, int], set[int]] = {}
        for b in self.blocks:
            units.setdefault(self.endpoint(b), set()).add(b.unit)
        out: dict[tuple[str, int, int], list[int]] = {}
        for (host, port), us in units.items():
            for i, unit in enumerate(sorted(us)):
                out.setdefault((host, port, i % self.connections), []).append(unit)
        return out


def modbus_config(plant: Plant, sensors: list[AssetEntry], plant_ref: str) -> dict[str, Any]:
    """A Modbus configuration for ``sensors`` at their addresses (:func:`schemas.addresses.modbus_addresses`).

    One block per station (its unit id), split where a read would pass 125 registers, polled at the
    fastest rate of its sensors (between 10 Hz and once a minute). Registers of the station's other
    sensors inside a block are read but not mapped.
    """
    from schemas.addresses import SERVE_PORTS

    addrs = modbus_addresses(plant)
    by_unit: dict[int, list[AssetEntry]] = {}
    for e in sensors:
        by_unit.setdefault(addrs[e.sensor_id].unit, []).append(e)
    blocks: list[dict[str, Any]] = []
    for unit, entries in sorted(by_unit.items()):
        entries.sort(key=lambda e: addrs[e.sensor_id].address)
        current: list[AssetEntry] = []
        for e in entries:
            a = addrs[e.sensor_id]
            if current and a.address + a.count - addrs[current[0].sensor_id].address > MAX_READ_REGISTERS:
                blocks.append(_modbus_block(unit, current, addrs))
                current = []
            current.append(e)
        blocks.append(_modbus_block(unit, current, addrs))
    return {"kind": "modbus", "plant": plant_ref, "host": "127.0.0.1", "port": SERVE_PORTS["modbus"],
            "blocks": blocks}


def _modbus_block(unit: int, entries: list[AssetEntry], addrs) -> dict[str, Any]:
    first = addrs[entries[0].sensor_id].address
    last = addrs[entries[-1].sensor_id]
    rate = max(e.nominal_rate_hz for e in entries)
    return {"unit": unit, "function": "holding", "address": first, "count": last.address + last.count - first,
            "interval_s": round(min(60.0, max(0.1, 1.0 / rate)), 3),
            "points": [{"sensor": e.sensor_id, "address": addrs[e.sensor_id].address,
                        "type": addrs[e.sensor_id].type} for e in entries]}


# --------------------------------------------------------------------------- MQTT and Sparkplug B


class MqttBroker(BaseModel):
    """Where the broker is and how the bridge holds its session (docs/connectors.md, "MQTT and Sparkplug B")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65_535)
    client_id: str | None = Field(None, min_length=1, max_length=200, description="Default gigapulse-<name>.")
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT version.")
    keepalive_s: int = Field(30, ge=5, le=3600)
    username: str | None = None
    password_file: Path | None = Field(None, description="A file holding the password (a Docker or Kubernetes "
                                       "secret); GIGAPULSE_MQTT_PASSWORD wins over it. Never the password itself.")
    persistent_session: bool = Field(False, description="Keep the session (subscriptions, queued QoS 1 "
                                     "messages) across restarts. Off: Sparkplug hosts start clean and rebuild "
                                     "their state from births.")
    session_expiry_s: int = Field(3600, ge=0, description="How long the broker keeps a persistent session of a "
                                  "disconnected bridge (MQTT 5).")
    reconnect_min_s: float = Field(1.0, gt=0, le=3600, description="First wait before reconnecting.")
    reconnect_max_s: float = Field(30.0, gt=0, le=3600, description="Longest wait between reconnects.")


class MqttUns(BaseModel):
    """The Unified Namespace: a JSON value or a bare number on each sensor's path topic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topics: list[str] = Field(default_factory=list, description="Topic filters; default the plant's "
                              "enterprise root (gigapulse/#).")


class MqttSparkplug(BaseModel):
    """Sparkplug B groups followed (default the plant's site) and the optional host id announced in STATE."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    groups: list[str] = Field(default_factory=list)
    host_id: str | None = Field(None, pattern=r"^[^/#+]{1,100}$", description="Announce the bridge as a "
                                "Sparkplug host application on spBv1.0/STATE/<host_id>.")


class MqttConfig(BridgeConfig):
    """``gigapulse bridge mqtt``: one broker, its Unified Namespace and/or Sparkplug B edge nodes."""

    kind: Literal["mqtt"] = "mqtt"
    broker: MqttBroker = MqttBroker()
    modes: list[Literal["uns", "sparkplug"]] = Field(default_factory=lambda: ["uns", "sparkplug"], min_length=1)
    uns: MqttUns = MqttUns()
    sparkplug: MqttSparkplug = MqttSparkplug()
    qos: Literal[0, 1, 2] = Field(1, description="QoS of the subscriptions.")

    @model_validator(mode="after")
    def _modes_once(self) -> MqttConfig:
        if len(set(self.modes)) != len(self.modes):
            raise ValueError("modes: each of uns and sparkplug at most once")
        return self

    def subscriptions(self, plant: Plant) -> list[str]:
        """The topic filters, the defaults filled from the plant."""
        out: list[str] = []
        if "uns" in self.modes:
            out += self.uns.topics or [f"{plant.template.enterprise}/#"]
        if "sparkplug" in self.modes:
            out += [f"spBv1.0/{g}/#" for g in (self.sparkplug.groups or [plant.template.site])]
        return out

    def client_id(self) -> str:
        return self.broker.client_id or f"gigapulse-{self.bridge_name('mqtt')}"


def _mqtt_config(modes: list[str], sensors: list[AssetEntry], plant_ref: str) -> dict[str, Any]:
    from schemas.addresses import SERVE_PORTS

    sites = sorted({e.site for e in sensors})
    raw: dict[str, Any] = {"kind": "mqtt", "plant": plant_ref,
                           "broker": {"host": "127.0.0.1", "port": SERVE_PORTS["mqtt"]}, "modes": modes}
    if "uns" in modes:
        raw["uns"] = {"topics": sorted({f"{e.enterprise}/{e.site}/#" for e in sensors})}
    raw["sparkplug"] = {"groups": sites}
    return raw


def mqtt_config(plant: Plant, sensors: list[AssetEntry], plant_ref: str) -> dict[str, Any]:
    """MQTT: the sensors' sites as UNS topic trees (``<enterprise>/<site>/#``) and as Sparkplug B groups."""
    return _mqtt_config(["uns", "sparkplug"], sensors, plant_ref)


def sparkplug_config(plant: Plant, sensors: list[AssetEntry], plant_ref: str) -> dict[str, Any]:
    """Sparkplug B only: the sensors' sites as groups."""
    return _mqtt_config(["sparkplug"], sensors, plant_ref)


# --------------------------------------------------------------------------- OPC UA


class OpcUaConfig(BridgeConfig):
    """``gigapulse bridge opcua``: one server, and either a list of node ids or a folder to browse.

    Credentials never appear in the file: ``username_env``/``password_env`` name environment variables
    and ``password_file`` a file (a Docker secret) holding them (read when the bridge starts).
    """

    kind: Literal["opcua"] = "opcua"
    endpoint: str = Field(pattern=r"^opc\.tcp://[^/:]+(:\d+)?(/.*)?$", description="opc.tcp://host:port/path")
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    security_policy: Literal["Basic256Sha256"] = "Basic256Sha256"
    certificate: Path | None = Field(None, description="The bridge's application instance certificate (DER "
                                     "or PEM); needed for Sign and SignAndEncrypt.")
    private_key: Path | None = Field(None, description="Its private key (PEM).")
    server_certificate: Path | None = Field(None, description="The server's certificate, pinned (default: the "
                                            "one its endpoint announces).")
    trusted_servers: Path | None = Field(None, description="A folder of trusted server certificates; a server "
                                         "whose certificate is not there is refused.")
    username_env: str | None = Field(None, description="Environment variable holding the user name.")
    password_env: str | None = Field(None, description="Environment variable holding the password.")
    password_file: Path | None = Field(None, description="File holding the password (a Docker secret).")
    nodes: list[str] = Field(default_factory=list, description="Node ids, best with the namespace URI: "
                             "nsu=urn:gigapulse:<site>;s=<sensor_id>.")
    browse_root: str | None = Field(None, description="Instead of nodes: a folder path below Objects "
                                    "(ref/electrode/L1) or a node id; every Variable under it is subscribed.")
    publishing_interval_ms: float = Field(500.0, gt=0)
    sampling_interval_ms: float = Field(0.0, ge=0, description="0: as fast as the server samples.")
    queue_size: int = Field(50, ge=1, description="Changes a monitored item queues between two publishes.")
    batch_size: int = Field(500, ge=1, le=10_000, description="Monitored items created per call.")
    request_timeout_s: float = Field(10.0, gt=0)
    session_timeout_s: float = Field(60.0, gt=0)
    watchdog_s: float = Field(1.0, gt=0, description="Seconds between probes of a quiet connection.")
    reconnect_initial_s: float = Field(0.5, gt=0, description="First wait before reconnecting; doubles per "
                                       "failure.")
    reconnect_max_s: float = Field(30.0, gt=0, description="Longest wait between reconnects.")

    @model_validator(mode="after")
    def _consistent(self) -> OpcUaConfig:
        if bool(self.nodes) == bool(self.browse_root):
            raise ValueError("give either nodes (a list of node ids) or browse_root (a folder path or node id), "
                             "not both and not neither")
        if self.security_mode != "None" and (self.certificate is None or self.private_key is None):
            raise ValueError(f"security_mode {self.security_mode} needs certificate and private_key "
                             "(gigapulse bridge certs --out DIR makes a pair)")
        if self.password_env and self.password_file:
            raise ValueError("give password_env or password_file, not both")
        if (self.password_env or self.password_file) and not self.username_env:
            raise ValueError("a password needs username_env too")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must not be below reconnect_initial_s")
        return self


def opcua_config(plant: Plant, sensors: list[AssetEntry], plant_ref: str) -> dict[str, Any]:
    """An OPC UA configuration naming ``sensors`` by node id (:func:`schemas.addresses.opcua_namespace_uri`).

    Node ids carry the namespace URI (``nsu=urn:gigapulse:<site>;s=<sensor_id>``), not its index, so the file
    stays right when a server numbers its namespaces differently. The endpoint is the served plant's.
    """
    from schemas.addresses import SERVE_PORTS, opcua_namespace_uri

    return {"kind": "opcua", "plant": plant_ref, "endpoint": f"opc.tcp://127.0.0.1:{SERVE_PORTS['opcua']}/gigapulse/",
            "security_mode": "None",
            "nodes": [f"nsu={opcua_namespace_uri(e.site)};s={e.sensor_id}" for e in sensors]}


#: Protocol -> (generator of a configuration for the given sensors, the model that validates it).
#: A generator takes the plant, the sensors to bridge and the plant as the user named it.
GENERATORS: dict[str, tuple[Callable[[Plant, list[AssetEntry], str], dict[str, Any]], type[BridgeConfig]]] = {
    "modbus": (modbus_config, ModbusConfig),
    "mqtt": (mqtt_config, MqttConfig),
    "sparkplug": (sparkplug_config, MqttConfig),
    "opcua": (opcua_config, OpcUaConfig),
}
