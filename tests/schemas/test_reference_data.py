"""The reference data files load into their typed models, and the profile is the reference plant's."""

from __future__ import annotations

import pytest

from schemas.asset_model import load_plant
from schemas.reference_data import (
    ReferenceDataError,
    derive_reference_profile,
    load_readiness_config,
    load_reference_profile,
    load_retrofit_costs,
    profile_yaml,
    reference_path,
    station_kind,
)


def test_the_shipped_profile_is_the_reference_plants_derivation():
    derived = derive_reference_profile(load_plant("reference"))
    assert load_reference_profile() == derived
    assert reference_path("reference_profile.yaml").read_text() == profile_yaml(derived)


def test_the_profile_counts_one_station_of_each_kind():
    profile = load_reference_profile()
    coat_c = next(s for s in profile.stations if s.kind == "coat-c")
    plant = load_plant("reference")
    on_l1 = [e for e in plant.sensors if e.station == "L1-coat-c"]
    assert coat_c.sensors == len(on_l1)
    assert {p.parameter for p in coat_c.parameters if p.ctq} == {e.parameter for e in on_l1 if e.ctq}
    assert coat_c.metered


def test_a_station_is_held_against_its_kind_or_the_closest_of_its_stage():
    profile = load_reference_profile()
    assert profile.for_station("coating", "coat-a", set()).kind == "coat-a"
    assert profile.for_station("coating", "coater-9", {"residual_solvent", "dryer_exhaust_solvent"}).kind == "coat-c"
    assert profile.for_station("coating", "coater-9", {"residual_moisture"}).kind == "coat-a"
    assert profile.for_station("utilities", "incomer", {"energy"}) is None
    assert station_kind("L2-coat-a", "L2") == "coat-a" and station_kind("dry_room", "site") == "dry_room"


def test_shipped_costs_and_readiness_load():
    costs = load_retrofit_costs()
    assert costs.sensor_eur and "opcua" in costs.open_protocols
    config = load_readiness_config()
    assert [s.label for s in config.stages][0] == "computerisation"
    assert config.dimensions["data_quality"].higher_is_better is False


@pytest.mark.parametrize(("loader", "text", "message"), [
    (load_retrofit_costs, "currency: EUR\n", "sensor_eur"),
    (load_readiness_config, "dimensions: {x: {weight: 1, thresholds: [5, 4, 3, 2, 1]}}\nstages: []\n",
     "stricter"),
    (load_reference_profile, "derived_from: [unclosed\n", "not valid YAML"),
])
def test_bad_reference_files_fail_in_one_line_naming_the_file(tmp_path, loader, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ReferenceDataError, match=message) as err:
        loader(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ReferenceDataError, match="not found"):
        loader(tmp_path / "missing.yaml")
