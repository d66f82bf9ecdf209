"""ISA-95 asset model of a plant, expanded from a compact YAML template.

A plant of ~1,000 sensors is written as stations with sensor templates (``count: 6`` dryer zones,
``per_line: true`` to repeat a station on every line) rather than 1,000 hand-written entries.
:func:`load_plant` expands the template into :class:`schemas.contracts.AssetEntry` rows, the same
rows that are published to the compacted ``plant.assets.v1`` topic and become the ``sensors``
table. The ``sim`` block of a sensor template holds the digital twin's dynamics (noise, drift,
faults); the asset model keeps it as an opaque mapping so only the simulator interprets it.
"""

from __future__ import annotations

from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.contracts import AssetEntry, SignalClass, Stage

BUILTIN_PLANTS = ("reference", "legacy")


class AssetModelError(ValueError):
    """A plant file that cannot be loaded; the message says which file and which field."""


class SensorTemplate(BaseModel):
    """One kind of sensor on a station; ``count`` > 1 makes numbered copies (zones, rolls)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    parameter: str
    unit: str
    signal_class: SignalClass = Field(alias="class")
    rate_hz: float = Field(gt=0)
    count: int = Field(1, ge=1, le=1000)
    target: float | None = None
    lsl: float | None = None
    usl: float | None = None
    ctq: bool = False
    energy_meter: bool = False
    protocol: str = "opcua"
    sim: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _limits_ordered(self) -> SensorTemplate:
        if self.lsl is not None and self.usl is not None and self.lsl >= self.usl:
            raise ValueError(f"{self.parameter}: lsl {self.lsl} must be below usl {self.usl}")
        return self


class StationTemplate(BaseModel):
    """A station (work unit) of one stage; repeated on every line unless ``per_line`` is false."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9_\-]+$")
    area: str
    stage: Stage
    equipment: str
    per_line: bool = True
    sensors: list[SensorTemplate]


class ProductSpec(BaseModel):
    """What the plant makes, as the batch side's material ledger and KPIs need it.

    Optional in a plant file (defaults below), so older plant files still load. ``chemistry`` names an
    entry of the bill of materials (``schemas/reference/bom.yaml``). Events do not say how big a slurry
    batch or an electrode roll is, so their size is stated here in cells' worth; ``electrode_stations``
    names the station templates that handle only one electrode, so a scrapped batch or roll is booked
    with the right active material.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    chemistry: str = "NMC622"
    cell_format: str = "prismatic"
    slurry_batch_cells: float = Field(120.0, gt=0)
    electrode_roll_cells: float = Field(30.0, gt=0)
    electrode_stations: dict[Literal["cathode", "anode"], list[str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_electrode_per_station(self) -> ProductSpec:
        both = set(self.electrode_stations.get("cathode", [])) & set(self.electrode_stations.get("anode", []))
        if both:
            raise ValueError(f"stations listed for both electrodes: {sorted(both)}")
        return self


class PlantTemplate(BaseModel):
    """The plant file: identity, lines, production rates and stations."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    plant: str = Field(pattern=r"^[a-z0-9_\-]+$")
    enterprise: str
    site: str = Field(pattern=r"^[a-z0-9_\-]+$")
    era: Literal["modern", "legacy"]
    lines: list[str] = Field(min_length=1)
    cells_per_hour_per_line: float = Field(gt=0)
    cell_capacity_ah: float = Field(gt=0)
    cell_nominal_voltage_v: float = Field(gt=0)
    product: ProductSpec = Field(default_factory=ProductSpec)
    sim: dict[str, Any] = Field(default_factory=dict)
    stations: list[StationTemplate] = Field(min_length=1)


class Plant:
    """A loaded plant: its template and the expanded asset entries."""

    def __init__(self, template: PlantTemplate, source: str):
        self.template = template
        self.source = source

    @property
    def name(self) -> str:
        return self.template.plant

    @cached_property
    def sensors(self) -> list[AssetEntry]:
        """Every sensor of the plant as an asset entry, in a stable order."""
        return [entry for entry, _ in self.sensors_with_templates]

    @cached_property
    def sensors_with_templates(self) -> list[tuple[AssetEntry, SensorTemplate]]:
        """Asset entries paired with the template they came from (the simulator needs ``sim``)."""
        t = self.template
        out: list[tuple[AssetEntry, SensorTemplate]] = []
        for st in t.stations:
            lines = t.lines if st.per_line else ["site"]
            for line in lines:
                station_id = f"{line}-{st.id}" if st.per_line else st.id
                for sens in st.sensors:
                    for i in range(sens.count):
                        param = sens.parameter if sens.count == 1 else f"{sens.parameter}_{i + 1}"
                        sensor_id = f"{t.site}.{station_id}.{param}"
                        path = "/".join((t.enterprise, t.site, st.area, line, station_id, st.equipment, param))
                        entry = AssetEntry(
                            sensor_id=sensor_id,
                            path=path,
                            enterprise=t.enterprise,
                            site=t.site,
                            area=st.area,
                            line=line,
                            station=station_id,
                            equipment=st.equipment,
                            stage=st.stage,
                            parameter=sens.parameter,
                            unit=sens.unit,
                            signal_class=sens.signal_class,
                            nominal_rate_hz=sens.rate_hz,
                            lsl=sens.lsl,
                            usl=sens.usl,
                            target=sens.target,
                            ctq=sens.ctq,
                            is_energy_meter=sens.energy_meter,
                            protocol=sens.protocol,
                        )
                        out.append((entry, sens))
        ids = [e.sensor_id for e, _ in out]
        if len(ids) != len(set(ids)):
            dup = sorted({i for i in ids if ids.count(i) > 1})[:3]
            raise AssetModelError(f"{self.source}: duplicate sensor ids {dup}")
        return out

    @cached_property
    def by_id(self) -> dict[str, AssetEntry]:
        """Asset entry per sensor id."""
        return {e.sensor_id: e for e in self.sensors}


def plant_path(name_or_path: str) -> Path:
    """Resolve ``reference``/``legacy`` to the shipped YAML, anything else to a file path."""
    if name_or_path in BUILTIN_PLANTS:
        return Path(str(resources.files("schemas") / "plants" / f"{name_or_path}.yaml"))
    return Path(name_or_path)


#: libyaml's safe loader when PyYAML was built with it: ten times faster on a plant (0.1 s, not 1 s), and
#: it refuses nesting past 1,000 levels itself. Both build only plain YAML types.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: A plant file far larger than any real one (the reference plant is ~30 kB) is refused before parsing.
MAX_PLANT_BYTES = 16 << 20
#: Values a plant document may hold once its YAML aliases are expanded (the reference plant: ~3,000).
#: A few aliases nested ten deep ("billion laughs") would otherwise expand into 10^9 values for the
#: validation below, which would run for hours while the parsed document itself stays small.
MAX_PLANT_VALUES = 200_000


def _expanded_size(raw: Any, limit: int) -> int:
    """How many values ``raw`` holds with every alias expanded, stopping once past ``limit``; raises
    ``RecursionError`` for a document that contains itself (``&a [*a]``)."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Any) -> int:
        if not isinstance(node, dict | list):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise RecursionError("the document contains itself")
        active.add(key)
        total = 1
        for child in (node.values() if isinstance(node, dict) else node):
            total += size(child)
            if total > limit:
                break
        active.discard(key)
        sizes[key] = total
        return total

    return size(raw)


def load_plant(name_or_path: str) -> Plant:
    """Load and expand a plant; errors name the file and the offending field, in one line."""
    path = plant_path(name_or_path)
    try:
        too_big = path.stat().st_size > MAX_PLANT_BYTES
        raw = None if too_big else yaml.load(path.read_bytes(), Loader=_SAFE_LOADER)  # noqa: S506 (a safe loader)
    except FileNotFoundError:
        raise AssetModelError(f"plant file not found: {path}") from None
    except OSError as exc:
        raise AssetModelError(f"plant file {path}: cannot be read ({exc.strerror or exc})") from None
    except ValueError as exc:  # a NUL in the name
        raise AssetModelError(f"plant file {name_or_path!r}: {exc}") from None
    except yaml.YAMLError as exc:
        raise AssetModelError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except RecursionError:
        raise AssetModelError(f"{path}: nested too deeply to be a plant") from None
    if too_big:
        raise AssetModelError(f"{path}: larger than {MAX_PLANT_BYTES >> 20} MB; not a plant file")
    if not isinstance(raw, dict):
        raise AssetModelError(f"{path}: expected a mapping at the top level")
    try:
        if _expanded_size(raw, MAX_PLANT_VALUES) > MAX_PLANT_VALUES:
            raise AssetModelError(f"{path}: more than {MAX_PLANT_VALUES:,} values once its aliases are expanded; "
                                  "not a plant file")
    except RecursionError:
        raise AssetModelError(f"{path}: an alias refers to itself (a recursive document), or nested too deeply") from None
    try:
        template = PlantTemplate.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise AssetModelError(f"{path}: {loc}: {err['msg']}") from None
    plant = Plant(template, str(path))
    _ = plant.sensors_with_templates  # expand now so duplicate ids fail at load time
    return plant
