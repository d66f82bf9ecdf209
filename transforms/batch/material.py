"""The material ledger: scrapped units booked as kilograms of critical raw material, and their value.

A scrap event says which unit was lost, where and why; the site's product (its plant file) and the
bill of materials of its chemistry say what that unit held. A unit carries only the parts of a cell
it has reached (:func:`carried_parts`): a slurry batch the active material of its electrode, an
electrode roll the active material and the foil of its electrode, a cell everything including its
can and tabs. Events carry no size for batches and rolls, so their size is the plant's stated one
in cells' worth (``product.slurry_batch_cells``, ``electrode_roll_cells``); a cell is one cell of the
plant's nominal energy (capacity x voltage). A cell's material is set by its design, not by the
capacity it measured, so a ``low_capacity`` scrap books the same kilograms as any other cell.

:func:`book_material_loss` is pure (scrap rows in, ledger rows out); :func:`read_scraps` is the one
query, over the day's production events deduplicated by the documented rule.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta

import duckdb
import pyarrow as pa

from schemas.materials import (
    BillOfMaterials,
    ChemistryBom,
    Electrode,
    MaterialDataError,
    Part,
    PriceList,
    SiteProduct,
    check_prices_cover,
    load_bom,
    load_prices,
    site_products,
)
from transforms.settings import MaterialSettings

#: What a unit holds, by unit type: parts of the cell, ``{e}`` standing for the unit's electrode.
CARRIED: dict[str, tuple[str, ...]] = {
    "slurry_batch": ("{e}_active",),
    "electrode_roll": ("{e}_active", "{e}_foil"),
    "cell": ("cathode_active", "cathode_foil", "anode_active", "anode_foil", "cell_hardware"),
}
#: Unit type of a scrap event that names none, by stage (the chain's unit at that stage).
UNIT_OF_STAGE = {"mixing": "slurry_batch", "coating": "electrode_roll", "calendering": "electrode_roll",
                 "slitting": "electrode_roll", "vacuum_drying": "electrode_roll"}

# One row per scrap event of the day, first copy of each event_id only (the dedup rule of
# duplicate_events). For batches and rolls, the stations the unit visited since the day before, so
# that a roll scrapped at a station shared by both electrodes (vacuum drying) is still told apart.
SCRAPS_SQL = """
WITH scraps AS (
    SELECT site, line, stage, station, unit_id, unit_type, coalesce(reason, 'unknown') AS reason, ts, event_id
    FROM production_events
    WHERE date = ? AND kind = 'scrap'
    QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY src_partition, src_offset) = 1
), visits AS (
    SELECT site, unit_id, list(DISTINCT station ORDER BY station) AS stations
    FROM production_events
    WHERE date BETWEEN ? AND ?
      AND unit_id IN (SELECT unit_id FROM scraps WHERE unit_type IS DISTINCT FROM 'cell')
    GROUP BY site, unit_id
)
SELECT s.site, s.line, s.stage, s.station, s.unit_id, s.unit_type, s.reason,
       coalesce(v.stations, []) AS stations_visited
FROM scraps s LEFT JOIN visits v USING (site, unit_id)
ORDER BY s.site, s.line, s.stage, s.reason, s.ts, s.event_id
"""


def read_scraps(con: duckdb.DuckDBPyConnection, day: date) -> pa.Table:
    """The day's scrap events (site, line, stage, station, unit_id, unit_type, reason, stations_visited)."""
    return con.sql(SCRAPS_SQL, params=[day, day - timedelta(days=1), day]).to_arrow_table()


def unit_electrode(product: SiteProduct, station: str, stations_visited: list[str]) -> Electrode | None:
    """The electrode a batch or roll belongs to: its station's, else the one electrode of the stations it
    visited; None when no station tells (booked as half of each, see :func:`carried_parts`)."""
    own = product.electrode_of_station.get(station)
    if own:
        return own
    seen = {product.electrode_of_station[s] for s in stations_visited if s in product.electrode_of_station}
    return seen.pop() if len(seen) == 1 else None


def carried_parts(unit_type: str, electrode: Electrode | None) -> list[tuple[Part, float]]:
    """(part, share) a unit carries. A batch or roll of unknown electrode carries half of each electrode's
    parts: its mass is then right on average over cathode and anode, and no element is invented."""
    if unit_type not in CARRIED:
        raise ValueError(f"unknown unit type {unit_type!r}; expected one of {', '.join(CARRIED)}")
    templates = CARRIED[unit_type]
    if unit_type == "cell":
        return [(p, 1.0) for p in templates]  # type: ignore[misc]
    electrodes: list[tuple[str, float]] = [(electrode, 1.0)] if electrode else [("cathode", 0.5), ("anode", 0.5)]
    return [(t.format(e=e), share) for e, share in electrodes for t in templates]  # type: ignore[misc]


def unit_cells(product: SiteProduct, unit_type: str) -> float:
    """How many cells' worth a unit is (a cell 1, a batch or roll the plant's stated size)."""
    sizes = {"cell": 1.0, "slurry_batch": product.slurry_batch_cells, "electrode_roll": product.electrode_roll_cells}
    if unit_type not in sizes:
        raise ValueError(f"unknown unit type {unit_type!r}; expected one of {', '.join(sizes)}")
    return sizes[unit_type]


def unit_masses(bom: ChemistryBom, product: SiteProduct, unit_type: str,
                electrode: Electrode | None) -> dict[str, float]:
    """kg of each element one scrapped unit holds."""
    kwh = product.cell_kwh * unit_cells(product, unit_type)
    out: dict[str, float] = defaultdict(float)
    for part, share in carried_parts(unit_type, electrode):
        for element, kg_per_kwh in bom.part(part).items():
            out[element] += kg_per_kwh * share * kwh
    return dict(out)


@dataclass(frozen=True)
class LedgerResult:
    """The ledger's rows and the scrap it could not book (site -> scrap events), for the asset to report."""

    rows: pa.Table
    unbooked: dict[str, int]


def book_material_loss(scraps: pa.Table, products: dict[str, SiteProduct], bom: BillOfMaterials,
                       prices: PriceList) -> LedgerResult:
    """Ledger rows (site x line x stage x reason x element) from scrap rows as :func:`read_scraps` returns.

    Elements a unit holds none of get no row. A site without a product, or whose chemistry the bill of
    materials lacks, is counted in ``unbooked`` rather than booked with a guessed cell.
    """
    kg: dict[tuple, float] = defaultdict(float)
    units: dict[tuple, int] = defaultdict(int)
    cells: dict[tuple, float] = defaultdict(float)
    chem_of: dict[str, str] = {}
    unbooked: dict[str, int] = defaultdict(int)
    for r in scraps.to_pylist():  # in SQL order: float sums are the same on every run
        product = products.get(r["site"])
        chem = bom.chemistries.get(product.chemistry) if product else None
        if product is None or chem is None:
            unbooked[r["site"]] += 1
            continue
        unit_type = r["unit_type"] or UNIT_OF_STAGE.get(r["stage"], "cell")
        electrode = None if unit_type == "cell" else unit_electrode(product, r["station"], r["stations_visited"])
        group = (r["site"], r["line"], r["stage"], r["reason"])
        chem_of[r["site"]] = product.chemistry
        units[group] += 1
        cells[group] += unit_cells(product, unit_type)
        for element, mass in unit_masses(chem, product, unit_type, electrode).items():
            kg[(*group, element)] += mass
    price = prices.prices_per_kg
    rows = [{"site": s, "line": ln, "stage": st, "reason": rs, "element": el, "chemistry": chem_of[s],
             "units_scrapped": units[(s, ln, st, rs)], "cell_equivalents": cells[(s, ln, st, rs)],
             "kg": mass, "price_per_kg": price.get(el), "value": mass * price[el] if el in price else None,
             "currency": prices.currency}
            for (s, ln, st, rs, el), mass in sorted(kg.items()) if mass > 0]
    return LedgerResult(rows=pa.Table.from_pylist(rows, schema=_ROW_SCHEMA), unbooked=dict(unbooked))


_ROW_SCHEMA = pa.schema([
    ("site", pa.string()), ("line", pa.string()), ("stage", pa.string()), ("reason", pa.string()),
    ("element", pa.string()), ("chemistry", pa.string()), ("units_scrapped", pa.int64()),
    ("cell_equivalents", pa.float64()), ("kg", pa.float64()), ("price_per_kg", pa.float64()),
    ("value", pa.float64()), ("currency", pa.string()),
])


def material_loss_day(con: duckdb.DuckDBPyConnection, day: date, products: dict[str, SiteProduct],
                      bom: BillOfMaterials, prices: PriceList) -> LedgerResult:
    """The ledger of one UTC day, read from the warehouse behind ``con``."""
    return book_material_loss(read_scraps(con, day), products, bom, prices)


@dataclass(frozen=True)
class MaterialReference:
    """The reference data of a run: what each site makes, the bill of materials and the prices."""

    products: dict[str, SiteProduct]
    bom: BillOfMaterials
    prices: PriceList


def load_reference(settings: MaterialSettings) -> MaterialReference:
    """Load and cross-check the reference data once per run (one-line errors: MaterialDataError,
    AssetModelError). Every plant's chemistry must be in the bill of materials, every element priced."""
    from schemas.asset_model import load_plant

    bom, prices = load_bom(settings.bom_file), load_prices(settings.prices_file)
    check_prices_cover(bom, prices)
    products = site_products([load_plant(name) for name in settings.plants])
    unknown = sorted(f"{p.plant}: {p.chemistry}" for p in products.values() if p.chemistry not in bom.chemistries)
    if unknown:
        raise MaterialDataError(f"chemistry not in the bill of materials ({', '.join(sorted(bom.chemistries))}): "
                                f"{'; '.join(unknown)}")
    return MaterialReference(products=products, bom=bom, prices=prices)
