"""Reference data of the material ledger: bills of materials per chemistry, element prices, and what
each site makes.

The figures are data, not code: ``schemas/reference/bom.yaml`` and ``prices.yaml`` ship stated
assumptions (their comments say how each figure was derived and as of when), and a plant replaces
them with its own files (``GIGAPULSE_MATERIAL_BOM_FILE``, ``GIGAPULSE_MATERIAL_PRICES_FILE``). What a
site makes (chemistry, cell size, batch and roll sizes) comes from its plant file's ``product``
block (:class:`schemas.asset_model.ProductSpec`), so the ledger and the KPIs never guess a cell size.

A file that cannot be used raises :class:`MaterialDataError` with one line naming the file and field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.asset_model import Plant

#: The parts of a cell a bill of materials is split into: a unit carries some of them (docs/batch.md).
Part = Literal["cathode_active", "cathode_foil", "anode_active", "anode_foil", "cell_hardware"]
PARTS: tuple[Part, ...] = ("cathode_active", "cathode_foil", "anode_active", "anode_foil", "cell_hardware")
Electrode = Literal["cathode", "anode"]

_ElementMasses = dict[str, float]


class MaterialDataError(ValueError):
    """A bill of materials, price list or product that cannot be used; the message names the file."""


class ChemistryBom(BaseModel):
    """kg of each element per kWh of nominal cell energy, by the part of the cell that holds it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    cathode_active: _ElementMasses = Field(default_factory=dict)
    cathode_foil: _ElementMasses = Field(default_factory=dict)
    anode_active: _ElementMasses = Field(default_factory=dict)
    anode_foil: _ElementMasses = Field(default_factory=dict)
    cell_hardware: _ElementMasses = Field(default_factory=dict)

    @model_validator(mode="after")
    def _non_negative(self) -> ChemistryBom:
        for part in PARTS:
            for element, kg in getattr(self, part).items():
                if kg < 0:
                    raise ValueError(f"{part}.{element}: {kg} kg/kWh is negative")
        return self

    def part(self, name: Part) -> _ElementMasses:
        return getattr(self, name)

    @property
    def elements(self) -> list[str]:
        """Every element the chemistry lists, sorted."""
        return sorted({e for p in PARTS for e in self.part(p)})


class BillOfMaterials(BaseModel):
    """The bill of materials file: one :class:`ChemistryBom` per chemistry name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    basis: str
    chemistries: dict[str, ChemistryBom] = Field(min_length=1)


class PriceList(BaseModel):
    """Price per kg of contained element, in one currency, as of a date."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: str = Field(min_length=3, max_length=3)
    as_of: date
    prices_per_kg: dict[str, float] = Field(min_length=1)

    @model_validator(mode="after")
    def _non_negative(self) -> PriceList:
        bad = sorted(e for e, p in self.prices_per_kg.items() if p < 0)
        if bad:
            raise ValueError(f"negative prices for {', '.join(bad)}")
        return self


def reference_path(name: str) -> Path:
    """A shipped reference file (``bom.yaml``, ``prices.yaml``)."""
    return Path(str(resources.files("schemas") / "reference" / name))


def _load(path: Path, model: type[BaseModel]) -> BaseModel:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise MaterialDataError(f"material reference file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise MaterialDataError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise MaterialDataError(f"{path}: expected a mapping at the top level")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise MaterialDataError(f"{path}: {loc}: {err['msg']}") from None


def load_bom(path: Path | None = None) -> BillOfMaterials:
    """The bill of materials (the shipped assumptions unless ``path`` is given)."""
    return _load(path or reference_path("bom.yaml"), BillOfMaterials)  # type: ignore[return-value]


def load_prices(path: Path | None = None) -> PriceList:
    """The price list (the shipped assumptions unless ``path`` is given)."""
    return _load(path or reference_path("prices.yaml"), PriceList)  # type: ignore[return-value]


def check_prices_cover(bom: BillOfMaterials, prices: PriceList) -> None:
    """Refuse a price list that lacks an element some chemistry holds: its scrap would have no value."""
    missing = sorted({e for c in bom.chemistries.values() for e in c.elements} - set(prices.prices_per_kg))
    if missing:
        raise MaterialDataError(f"price list as of {prices.as_of} has no price for {', '.join(missing)}")


@dataclass(frozen=True)
class SiteProduct:
    """What one site makes, from its plant file: the facts the ledger and the KPIs need per site."""

    site: str
    plant: str
    chemistry: str
    cell_format: str
    cell_kwh: float
    cells_per_hour_per_line: float
    slurry_batch_cells: float
    electrode_roll_cells: float
    #: Full station id (``L1-coat-c``) -> the electrode it handles; stations absent handle both or none.
    electrode_of_station: dict[str, Electrode] = field(default_factory=dict)


def site_product(plant: Plant) -> SiteProduct:
    """The :class:`SiteProduct` of a loaded plant (station ids expanded per line, as the events name them)."""
    t = plant.template
    p = t.product
    per_line = {st.id: st.per_line for st in t.stations}
    electrode_of: dict[str, Electrode] = {}
    for electrode, ids in p.electrode_stations.items():
        for sid in ids:
            if sid not in per_line:
                raise MaterialDataError(f"{plant.source}: product.electrode_stations.{electrode}: "
                                        f"no station {sid!r}")
            for station in ([f"{line}-{sid}" for line in t.lines] if per_line[sid] else [sid]):
                electrode_of[station] = electrode
    return SiteProduct(site=t.site, plant=t.plant, chemistry=p.chemistry, cell_format=p.cell_format,
                       cell_kwh=t.cell_capacity_ah * t.cell_nominal_voltage_v / 1000.0,
                       cells_per_hour_per_line=t.cells_per_hour_per_line,
                       slurry_batch_cells=p.slurry_batch_cells, electrode_roll_cells=p.electrode_roll_cells,
                       electrode_of_station=electrode_of)


def site_products(plants: list[Plant]) -> dict[str, SiteProduct]:
    """Site code -> product, refusing two plant files that claim one site."""
    out: dict[str, SiteProduct] = {}
    for plant in plants:
        product = site_product(plant)
        if product.site in out:
            raise MaterialDataError(f"site {product.site!r} is made by two plant files "
                                    f"({out[product.site].plant}, {product.plant})")
        out[product.site] = product
    return out
