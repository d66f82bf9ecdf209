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


#: Protocol -> (generator of a configuration for the given sensors, the model that validates it).
#: A generator takes the plant, the sensors to bridge and the plant as the user named it.
GENERATORS: dict[str, tuple[Callable[[Plant, list[AssetEntry], str], dict[str, Any]], type[BridgeConfig]]] = {
    "modbus": (modbus_config, ModbusConfig),
}
