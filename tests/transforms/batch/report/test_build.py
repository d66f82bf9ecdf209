"""The report over a real warehouse: one self-contained page per plant, with figures that are not blank."""

from __future__ import annotations

import base64
import re

import pytest

from transforms.batch.report import build_report, plant_sites
from transforms.batch.report import figures as F
from transforms.warehouse.reader import connect


@pytest.fixture(scope="module")
def pages(two_plant_warehouse, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    con = connect(two_plant_warehouse)
    try:
        return build_report(con, out, lake_root=two_plant_warehouse.parent / "lake"), out
    finally:
        con.close()


def test_one_page_per_plant_linking_the_others(pages):
    paths, out = pages
    assert sorted(p.name for p in paths) == ["leg.html", "ref.html"]
    ref = (out / "ref.html").read_text()
    assert "href='leg.html'" in ref
    for anchor in ("readiness", "sensor-density", "retrofit-plan", "scrap-by-reason-and-stage",
                   "material-lost-to-scrap", "energy-per-good-cell", "predictive-quality-at-the-gate",
                   "data-quality"):
        assert f"<h2 id='{anchor}'>" in ref, anchor


def test_the_sections_carry_the_batch_tables_numbers(pages):
    _, out = pages
    leg = (out / "leg.html").read_text()
    assert "scores" in leg and "acatech stage" in leg  # readiness from readiness_scores
    assert "The largest gaps" in leg and "items for" in leg  # gaps and the retrofit plan
    assert "lost material worth" in leg and "metered share" in leg
    # The fixture lands no data-quality results: the section says which job fills them.
    assert "No rows in `dq_results` yet" in leg and "lake_quality_job" in leg


def test_figures_are_embedded_and_written_beside_and_not_blank(pages):
    paths, out = pages
    page = (out / "ref.html").read_text()
    embedded = [base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)]
    assert embedded, "no figure embedded"
    for png in embedded:
        assert F.ink_share(png) > 0.01
    assert len(embedded) >= 5  # radar, density, scrap, material, energy
    for name in ("ref-readiness-radar", "ref-sensor-density", "ref-scrap-pareto", "ref-material-loss",
                 "ref-energy-per-cell"):
        assert (out / f"{name}.png").read_bytes() in embedded, name
    assert "src='http" not in page and "src=\"http" not in page  # self-contained


def test_an_unknown_plant_is_refused_in_one_line(two_plant_warehouse, tmp_path):
    con = connect(two_plant_warehouse)
    try:
        assert plant_sites(con) == ("leg", "ref")
        with pytest.raises(ValueError, match=r"no plant nope in the warehouse \(plants: leg, ref\)"):
            build_report(con, tmp_path, ["nope"])
    finally:
        con.close()


def test_the_predictive_quality_section_draws_the_champion_and_the_gates_daily_value(pages, two_plant_warehouse):
    """The simulated lake's champion (with its training record) and its quality_gate_value days."""
    from transforms.predictive import registry as R

    _, out = pages
    version = R.champion(two_plant_warehouse.parent / "lake")
    page = (out / "ref.html").read_text()
    section = page.split("<h2 id='predictive-quality-at-the-gate'>")[1].split("<h2 ")[0]
    assert f"The champion {version} scores each cell" in section
    assert re.search(r"its ROC AUC is [01]\.\d{3}", section)
    assert "the gate would have pulled" in section and "never netted against the saving" in section
    assert "<th>kWh saved</th>" in section and "<th>false pulls</th>" in section
    embedded = [base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", section)]
    for name in ("ref-gate-roc", "ref-gate-reliability", "ref-gate-drivers", "ref-gate-value"):
        png = (out / f"{name}.png").read_bytes()
        assert png in embedded, name
        assert F.ink_share(png) > 0.01, name


def test_without_the_lake_the_predictive_section_says_where_the_models_live(two_plant_warehouse, tmp_path):
    con = connect(two_plant_warehouse)
    try:
        build_report(con, tmp_path, ["ref"])
    finally:
        con.close()
    page = (tmp_path / "ref.html").read_text()
    assert "built without the lake, where the gate models live" in page
    assert not (tmp_path / "ref-gate-roc.png").exists()
