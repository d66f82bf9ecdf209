"""Scrap booked as kilograms per element: known scrap on hand-made tables gives known kg and value;
on the two-plant fixture both plants are booked and the masses add up."""

from __future__ import annotations

from datetime import date

import duckdb
import pyarrow as pa
import pytest

from schemas.asset_model import load_plant
from schemas.materials import BillOfMaterials, MaterialDataError, PriceList, SiteProduct, site_products
from transforms.batch.material import (
    book_material_loss,
    carried_parts,
    load_reference,
    material_loss_day,
    read_scraps,
)
from transforms.settings import MaterialSettings

# Round numbers so every expected mass is checkable by hand: kg per kWh.
BOM = BillOfMaterials.model_validate({"basis": "kg/kWh", "chemistries": {"T": {
    "cathode_active": {"lithium": 0.1, "nickel": 0.6}, "cathode_foil": {"aluminium": 0.1},
    "anode_active": {"graphite": 1.0}, "anode_foil": {"copper": 0.2},
    "cell_hardware": {"aluminium": 0.4, "copper": 0.05}}}})
PRICES = PriceList.model_validate({"currency": "EUR", "as_of": "2026-11-30", "prices_per_kg": {
    "lithium": 50.0, "nickel": 10.0, "aluminium": 2.0, "graphite": 5.0, "copper": 8.0}})
PRODUCT = SiteProduct(site="s", plant="p", chemistry="T", cell_format="prismatic", cell_kwh=0.2,
                      cells_per_hour_per_line=3600, slurry_batch_cells=100, electrode_roll_cells=10,
                      electrode_of_station={"L1-mix-c": "cathode", "L1-coat-c": "cathode", "L1-coat-a": "anode"})
SCRAP_COLUMNS = ["site", "line", "stage", "station", "unit_id", "unit_type", "reason", "stations_visited"]


def scraps(*rows: tuple) -> pa.Table:
    return pa.Table.from_pylist([dict(zip(SCRAP_COLUMNS, r, strict=True)) for r in rows])


def kg_of(result, **where) -> dict[str, float]:
    return {r["element"]: r["kg"] for r in result.rows.to_pylist()
            if all(r[k] == v for k, v in where.items())}


def test_a_scrapped_cell_carries_the_whole_bill_of_materials():
    result = book_material_loss(scraps(("s", "L1", "formation", "L1-form", "c1", "cell", "moisture", []),
                                       ("s", "L1", "formation", "L1-form", "c2", "cell", "moisture", [])),
                                {"s": PRODUCT}, BOM, PRICES)
    kg = kg_of(result)
    # two cells of 0.2 kWh: 0.4 kWh of each part
    assert kg == pytest.approx({"lithium": 0.04, "nickel": 0.24, "aluminium": 0.2, "graphite": 0.4, "copper": 0.1})
    rows = result.rows.to_pylist()
    assert {r["units_scrapped"] for r in rows} == {2} and {r["cell_equivalents"] for r in rows} == {2.0}
    assert sum(r["value"] for r in rows) == pytest.approx(0.04 * 50 + 0.24 * 10 + 0.2 * 2 + 0.4 * 5 + 0.1 * 8)
    assert {(r["chemistry"], r["currency"]) for r in rows} == {("T", "EUR")}
    assert result.unbooked == {}


def test_electrode_units_carry_only_their_electrode():
    result = book_material_loss(scraps(
        ("s", "L1", "mixing", "L1-mix-c", "b1", "slurry_batch", "viscosity", []),           # cathode active only
        ("s", "L1", "coating", "L1-coat-a", "r1", "electrode_roll", "coating_defect", []),  # anode active + foil
        ("s", "L1", "vacuum_drying", "L1-vdry", "r2", "electrode_roll", "moisture", ["L1-coat-c", "L1-vdry"]),
        ("s", "L1", "vacuum_drying", "L1-vdry", "r3", "electrode_roll", "unknown", []),   # no station tells
    ), {"s": PRODUCT}, BOM, PRICES)
    batch_kwh, roll_kwh = 100 * 0.2, 10 * 0.2
    assert kg_of(result, stage="mixing") == pytest.approx({"lithium": 0.1 * batch_kwh, "nickel": 0.6 * batch_kwh})
    assert kg_of(result, stage="coating") == pytest.approx({"graphite": 1.0 * roll_kwh, "copper": 0.2 * roll_kwh})
    assert kg_of(result, stage="vacuum_drying", reason="moisture") == pytest.approx(
        {"lithium": 0.1 * roll_kwh, "nickel": 0.6 * roll_kwh, "aluminium": 0.1 * roll_kwh})
    assert kg_of(result, stage="vacuum_drying", reason="unknown") == pytest.approx(
        {"lithium": 0.05 * roll_kwh, "nickel": 0.3 * roll_kwh, "aluminium": 0.05 * roll_kwh,
         "graphite": 0.5 * roll_kwh, "copper": 0.1 * roll_kwh})
    assert result.rows.filter(pa.compute.equal(result.rows["stage"], "mixing"))["cell_equivalents"].to_pylist() \
        == [100.0, 100.0]


def test_unknown_sites_are_counted_not_guessed_and_carried_parts_refuse_unknown_types():
    result = book_material_loss(scraps(("x", "L1", "stacking", "L1-stack", "c1", "cell", "alignment", [])),
                                {"s": PRODUCT}, BOM, PRICES)
    assert result.rows.num_rows == 0 and result.unbooked == {"x": 1}
    with pytest.raises(ValueError, match="unknown unit type 'pallet'"):
        carried_parts("pallet", None)
    with pytest.raises(ValueError, match="unknown unit type 'pallet'"):
        book_material_loss(scraps(("s", "L1", "stacking", "L1-stack", "p1", "pallet", "dropped", [])),
                           {"s": PRODUCT}, BOM, PRICES)


EVENTS_DDL = """CREATE TABLE production_events (event_id VARCHAR, ts TIMESTAMPTZ, site VARCHAR, line VARCHAR,
    stage VARCHAR, station VARCHAR, unit_id VARCHAR, unit_type VARCHAR, kind VARCHAR, reason VARCHAR,
    src_partition INTEGER, src_offset BIGINT, date DATE)"""


def test_read_scraps_deduplicates_and_finds_the_stations_a_roll_visited():
    con = duckdb.connect()
    con.execute(EVENTS_DDL)
    day = date(2026, 11, 29)
    rows = [  # a roll coated on the day before, scrapped at vacuum drying; a cell scrap sent twice
        ("e1", "2026-11-28 23:50:00+00", "s", "L1", "coating", "L1-coat-c", "r1", "electrode_roll", "enter", None, 0, 1,
         "2026-11-28"),
        ("e2", "2026-11-29 00:10:00+00", "s", "L1", "vacuum_drying", "L1-vdry", "r1", "electrode_roll", "scrap",
         "moisture", 0, 2, "2026-11-29"),
        ("e3", "2026-11-29 01:00:00+00", "s", "L1", "stacking", "L1-stack", "c1", "cell", "scrap", None, 0, 3,
         "2026-11-29"),
        ("e3", "2026-11-29 01:00:00+00", "s", "L1", "stacking", "L1-stack", "c1", "cell", "scrap", None, 0, 9,
         "2026-11-29"),
    ]
    con.executemany("INSERT INTO production_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    got = read_scraps(con, day).to_pylist()
    assert [(r["unit_id"], r["reason"]) for r in got] == [("c1", "unknown"), ("r1", "moisture")]
    assert got[1]["stations_visited"] == ["L1-coat-c", "L1-vdry"]
    ledger = book_material_loss(read_scraps(con, day), {"s": PRODUCT}, BOM, PRICES)
    assert set(kg_of(ledger, stage="vacuum_drying")) == {"lithium", "nickel", "aluminium"}  # told as cathode
    assert kg_of(ledger, stage="stacking")["lithium"] == pytest.approx(0.1 * 0.2)  # one cell, not two


def test_load_reference_refuses_a_chemistry_the_bom_lacks(tmp_path):
    ref = load_reference(MaterialSettings())
    assert {p.chemistry for p in ref.products.values()} <= set(ref.bom.chemistries)
    bom = tmp_path / "bom.yaml"
    bom.write_text("basis: kg/kWh\nchemistries:\n  LFP:\n    cathode_active: {lithium: 0.1}\n")
    prices = tmp_path / "prices.yaml"
    prices.write_text("currency: EUR\nas_of: 2026-11-30\nprices_per_kg: {lithium: 50}\n")
    with pytest.raises(MaterialDataError, match="chemistry not in the bill of materials \\(LFP\\): legacy: NMC622"):
        load_reference(MaterialSettings(bom_file=bom, prices_file=prices))


def test_two_plant_fixture_books_both_plants_with_consistent_masses(two_plant_warehouse):
    from transforms.warehouse.reader import connect

    ref = load_reference(MaterialSettings())
    con = connect(two_plant_warehouse)
    try:
        day = con.sql("SELECT max(date) FROM production_events").fetchall()[0][0]
        result = material_loss_day(con, day, ref.products, ref.bom, ref.prices)
        scrapped = dict(con.sql("SELECT site, count(DISTINCT event_id) FROM production_events "
                                "WHERE date = ? AND kind = 'scrap' GROUP BY site", params=[day]).fetchall())
    finally:
        con.close()
    rows = result.rows.to_pylist()
    assert {r["site"] for r in rows} == {"ref", "leg"} and result.unbooked == {}
    assert all(r["kg"] > 0 and r["value"] >= 0 for r in rows)
    products = site_products([load_plant("reference"), load_plant("legacy")])
    for site, product in products.items():
        bom = ref.bom.chemistries[product.chemistry]
        per_cell = sum(sum(bom.part(p).values()) for p in ("cathode_active", "cathode_foil", "anode_active",
                                                            "anode_foil", "cell_hardware")) * product.cell_kwh
        site_kg = sum(r["kg"] for r in rows if r["site"] == site)
        # the simulator scraps cells only: every scrap event is one whole cell
        assert site_kg == pytest.approx(scrapped[site] * per_cell)
        groups = {(r["line"], r["stage"], r["reason"]): r["units_scrapped"] for r in rows if r["site"] == site}
        assert sum(groups.values()) == scrapped[site]
