"""Where each sensor of the asset model is found on the wire, per plant protocol.

The bridges' configurations are generated from these (``gigapulse bridge config``) and the simulated
plant is served at them (``gigapulse simulate --serve``), so both ends agree by construction. Every
function is pure: an :class:`~schemas.contracts.AssetEntry` (and, for Modbus, its plant) in, an address out.

- **MQTT Unified Namespace**: the topic is the sensor's ISA-95 ``path``
  (``enterprise/site/area/line/station/equipment/sensor``); the payload is JSON
  ``{"value": 1.23, "ts": <epoch ms>, "quality": "good"}`` (ts and quality optional).
- **Sparkplug B**: group id = site, edge node id = station, device id = equipment, metric name = the last
  path element (the sensor's name within its equipment). Topics ``spBv1.0/<group>/<type>/<node>[/<device>]``.
- **OPC UA**: namespace URI ``urn:gigapulse:<site>``, string node id ``ns=<index>;s=<sensor_id>`` (the index
  is the server's for that URI), a Double variable under the folders
  ``Objects/<site>/<area>/<line>/<station>/<equipment>/<sensor name>``.
- **Modbus TCP**: one unit (slave) id per station, 1..247, in the order the stations of the site first
  appear in the asset model; every sensor of the station (whatever its ``protocol``) in consecutive holding
  registers from address 0, in asset-model order: a float32 in 2 registers, an energy meter (a cumulative
  kWh counter, which float32 would round to 0.1 kWh within a year) a float64 in 4; big-endian word and
  byte order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from schemas.contracts import AssetEntry

if TYPE_CHECKING:
    from schemas.asset_model import Plant

#: Highest Modbus unit id a station can get (248..255 are reserved by the protocol).
MODBUS_MAX_UNIT = 247


def sensor_name(entry: AssetEntry) -> str:
    """The sensor's name within its equipment: the last element of its path."""
    return entry.path.rsplit("/", 1)[-1]


def uns_topic(entry: AssetEntry) -> str:
    """The sensor's MQTT Unified Namespace topic."""
    return entry.path


@dataclass(frozen=True)
class SparkplugAddress:
    """Where a sensor's metric lives in Sparkplug B."""

    group_id: str
    edge_node_id: str
    device_id: str
    metric: str


def sparkplug_address(entry: AssetEntry) -> SparkplugAddress:
    """Group = site, edge node = station, device = equipment, metric = the sensor's name."""
    return SparkplugAddress(entry.site, entry.station, entry.equipment, sensor_name(entry))


def opcua_namespace_uri(site: str) -> str:
    """The namespace URI of a site's nodes."""
    return f"urn:gigapulse:{site}"


def opcua_node_id(entry: AssetEntry, namespace_index: int) -> str:
    """The sensor's node id, given the server's index of its site's namespace URI."""
    return f"ns={namespace_index};s={entry.sensor_id}"


def opcua_browse_path(entry: AssetEntry) -> tuple[str, ...]:
    """Folders under Objects down to the variable: site, area, line, station, equipment, sensor name."""
    return (entry.site, entry.area, entry.line, entry.station, entry.equipment, sensor_name(entry))


@dataclass(frozen=True)
class ModbusAddress:
    """A sensor's holding registers: unit id, first register, data type and register count."""

    unit: int
    address: int
    type: Literal["float32", "float64"]

    @property
    def count(self) -> int:
        return 2 if self.type == "float32" else 4


def modbus_addresses(plant: Plant) -> dict[str, ModbusAddress]:
    """Every sensor's Modbus address (see the module docstring), keyed by sensor id.

    Raises ValueError when a site has more stations than unit ids (247), or a station more sensors than
    the 65,536 registers of a unit hold.
    """
    units: dict[tuple[str, str], int] = {}
    per_site: dict[str, int] = {}
    next_reg: dict[tuple[str, str], int] = {}
    out: dict[str, ModbusAddress] = {}
    for e in plant.sensors:
        station = (e.site, e.station)
        if station not in units:
            per_site[e.site] = per_site.get(e.site, 0) + 1
            if per_site[e.site] > MODBUS_MAX_UNIT:
                raise ValueError(f"site {e.site} has more than {MODBUS_MAX_UNIT} stations: Modbus unit ids run out")
            units[station] = per_site[e.site]
        kind: Literal["float32", "float64"] = "float64" if e.is_energy_meter else "float32"
        addr = ModbusAddress(units[station], next_reg.get(station, 0), kind)
        if addr.address + addr.count > 65_536:
            raise ValueError(f"station {e.station} has more sensors than one Modbus unit's registers hold")
        next_reg[station] = addr.address + addr.count
        out[e.sensor_id] = addr
    return out


#: Default port of each protocol's server of the simulated plant (``gigapulse simulate --serve``), and so
#: of a generated configuration: unprivileged ports, so no root is needed.
SERVE_PORTS: dict[str, int] = {"modbus": 5020, "mqtt": 1883, "opcua": 4840}
