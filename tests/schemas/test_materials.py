"""The material reference data loads, is consistent with its stated derivation, and bad files fail in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from schemas.asset_model import load_plant, plant_path
from schemas.materials import (
    MaterialDataError,
    check_prices_cover,
    load_bom,
    load_prices,
    site_product,
    site_products,
)

ELEMENTS = {"lithium", "nickel", "cobalt", "manganese", "graphite", "copper", "aluminium"}
#: Atomic masses, g/mol: the BOM's cathode figures are mass fractions of these formula units.
NI, CO, MN = 58.69, 58.93, 54.94


def test_shipped_bom_has_the_chemistries_and_elements_and_every_element_is_priced():
    bom, prices = load_bom(), load_prices()
    assert {"NMC811", "NMC622", "LFP"} <= set(bom.chemistries)
    for name, chem in bom.chemistries.items():
        assert set(chem.elements) == ELEMENTS, name
    check_prices_cover(bom, prices)
    assert prices.currency == "EUR" and prices.as_of.year >= 2026


@pytest.mark.parametrize(("chemistry", "ni", "mn", "co"), [("NMC811", 0.8, 0.1, 0.1), ("NMC622", 0.6, 0.2, 0.2)])
def test_nmc_metal_ratios_follow_the_formula(chemistry, ni, mn, co):
    active = load_bom().chemistries[chemistry].cathode_active
    assert active["nickel"] / active["cobalt"] == pytest.approx(ni * NI / (co * CO), rel=0.02)
    assert active["manganese"] / active["cobalt"] == pytest.approx(mn * MN / (co * CO), rel=0.02)


def test_lfp_holds_no_nickel_or_cobalt_and_more_graphite_per_kwh_than_nmc():
    bom = load_bom().chemistries
    assert bom["LFP"].cathode_active["nickel"] == bom["LFP"].cathode_active["cobalt"] == 0
    assert bom["LFP"].anode_active["graphite"] > bom["NMC811"].anode_active["graphite"]


def _write(tmp_path: Path, name: str, data: dict) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_bad_files_fail_in_one_line(tmp_path):
    with pytest.raises(MaterialDataError, match="not found"):
        load_bom(tmp_path / "missing.yaml")
    bad = _write(tmp_path, "bom.yaml", {"basis": "x", "chemistries": {"X": {"cathode_active": {"lithium": -1}}}})
    with pytest.raises(MaterialDataError, match=r"bom.yaml: chemistries.X: .*negative") as err:
        load_bom(bad)
    assert "\n" not in str(err.value)
    few = _write(tmp_path, "prices.yaml", {"currency": "EUR", "as_of": "2026-11-30", "prices_per_kg": {"lithium": 1}})
    with pytest.raises(MaterialDataError, match="no price for aluminium, cobalt"):
        check_prices_cover(load_bom(), load_prices(few))


def test_site_product_expands_electrode_stations_per_line():
    product = site_product(load_plant("reference"))
    assert product.site == "ref" and product.chemistry == "NMC811"
    assert product.cell_kwh == pytest.approx(50 * 3.65 / 1000)
    assert product.electrode_of_station["L2-coat-c"] == "cathode"
    assert product.electrode_of_station["L1-slit-a"] == "anode"
    assert "L1-vdry" not in product.electrode_of_station  # both electrodes dry there
    assert set(site_products([load_plant("reference"), load_plant("legacy")])) == {"ref", "leg"}
    with pytest.raises(MaterialDataError, match="made by two plant files"):
        site_products([load_plant("reference"), load_plant("reference")])


def test_a_plant_file_without_product_block_loads_with_defaults(tmp_path):
    raw = yaml.safe_load(plant_path("legacy").read_text())
    del raw["product"]
    product = site_product(load_plant(str(_write(tmp_path, "old.yaml", raw))))
    assert product.chemistry == "NMC622" and product.electrode_of_station == {}
    raw["product"] = {"electrode_stations": {"cathode": ["no-such-station"]}}
    with pytest.raises(MaterialDataError, match="no station 'no-such-station'"):
        site_product(load_plant(str(_write(tmp_path, "bad.yaml", raw))))

