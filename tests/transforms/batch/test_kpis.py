"""Plant KPIs: known counts give known yield, first-pass yield, OEE parts and energy figures; on the
two-plant fixture the legacy plant's kWh per cell comes with a metered share well below the reference's."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pyarrow as pa
import pytest

from schemas.batch import MATERIAL_LOSS, PLANT_KPIS
from schemas.materials import SiteProduct
from transforms.batch.kpis import KpiInputs, compute_plant_kpis, plant_kpis_day, plant_summaries, summarize
from transforms.batch.material import load_reference
from transforms.batch.store import write_day
from transforms.settings import MaterialSettings

PRODUCT = SiteProduct(site="s", plant="p", chemistry="T", cell_format="prismatic", cell_kwh=0.2,
                      cells_per_hour_per_line=100, slurry_batch_cells=100, electrode_roll_cells=10)
T0 = datetime(2026, 11, 29, 6, tzinfo=UTC)


def quality_row(line, stage, good, scrapped, fpy, reasons=()):
    return {"site": "s", "line": line, "stage": stage, "good": good, "scrapped": scrapped,
            "first_pass_yield": fpy, "scrap_by_reason": list(reasons)}


def inputs(quality, energy=(), stations=(), readings=(), spans=()) -> KpiInputs:
    def table(rows, names):
        return pa.Table.from_pylist(list(rows)) if rows else pa.table({n: [] for n in names})

    return KpiInputs(
        quality=pa.Table.from_pylist(quality, schema=pa.schema([
            ("site", pa.string()), ("line", pa.string()), ("stage", pa.string()), ("good", pa.int64()),
            ("scrapped", pa.int64()), ("first_pass_yield", pa.float64()),
            ("scrap_by_reason", pa.map_(pa.string(), pa.int64()))])),
        energy=table(energy, ["site", "line", "station", "kwh"]),
        stations=table(stations, ["site", "line", "stations", "metered_stations"]),
        readings=table(readings, ["site", "line", "observed"]),
        spans=table(spans, ["site", "line", "first_ts", "last_ts"]),
    )


def line_l1() -> list[dict]:
    return [quality_row("L1", "coating", 5, 1, 0.8, [("coating_defect", 1)]),
            quality_row("L1", "stacking", 95, 4, 0.96, [("alignment", 3), ("weld_failure", 1)]),
            quality_row("L1", "formation", 92, 2, 0.98, [("moisture", 2)]),
            quality_row("L1", "aging_eol", 90, 4, 0.9, [("self_discharge", 4)])]


def test_counts_give_yield_first_pass_yield_scrap_and_oee_parts():
    row = compute_plant_kpis(inputs(line_l1(), spans=[{"site": "s", "line": "L1", "first_ts": T0,
                                                        "last_ts": T0.replace(hour=8)}]), {"s": PRODUCT}).to_pylist()[0]
    assert row["output_cells"] == 90 and row["cells_scrapped"] == 10 and row["electrode_units_scrapped"] == 1
    assert row["output_kwh"] == pytest.approx(18.0)
    assert row["yield"] == pytest.approx(0.9) and row["scrap_rate"] == pytest.approx(0.1)
    assert row["first_pass_yield"] == pytest.approx(0.96 * 0.98 * 0.9)  # cell stages only
    assert dict(row["cell_scrap_by_reason"]) == {"alignment": 3, "weld_failure": 1, "moisture": 2, "self_discharge": 4}
    assert dict(row["cell_scrap_rate_by_reason"])["self_discharge"] == pytest.approx(0.04)
    assert dict(row["electrode_scrap_by_reason"]) == {"coating_defect": 1}
    # 2 planned hours at 100 cells/h: 100 cells finished of 200 possible, 90 of them good
    assert row["planned_hours"] == pytest.approx(2.0)
    assert row["oee_availability_x_performance"] == pytest.approx(0.5)
    assert row["oee_quality"] == pytest.approx(0.9) and row["oee"] == pytest.approx(0.45)
    assert row["oee_availability"] is None and row["oee_performance"] is None and "downtime" in row["oee_note"]


def test_energy_is_allocated_and_shown_with_the_metered_share():
    quality = line_l1() + [quality_row("L2", "aging_eol", 30, 0, 1.0)]
    rows = compute_plant_kpis(inputs(
        quality,
        energy=[{"site": "s", "line": "L1", "station": "L1-coat-c", "kwh": 500.0},
                {"site": "s", "line": "L1", "station": "L1-form", "kwh": 100.0},
                {"site": "s", "line": "site", "station": "dry_room", "kwh": 240.0}],
        stations=[{"site": "s", "line": "L1", "stations": 9, "metered_stations": 2},
                  {"site": "s", "line": "L2", "stations": 9, "metered_stations": 0},
                  {"site": "s", "line": "site", "stations": 1, "metered_stations": 1}],
        readings=[{"site": "s", "line": "L1", "observed": 9000}, {"site": "s", "line": "site", "observed": 400}],
    ), {"s": PRODUCT}).to_pylist()
    l1, l2 = rows
    # the dry room's 240 kWh split 90:30 by good cells
    assert l1["kwh_line"] == 600.0 and l1["kwh_site_allocated"] == pytest.approx(180.0)
    assert l1["kwh_per_good_cell"] == pytest.approx(780 / 90)
    assert l1["kwh_per_kwh_cell"] == pytest.approx(780 / 18)
    assert (l1["stations"], l1["metered_stations"], l1["metered_share"]) == (10, 3, pytest.approx(0.3))
    assert (l1["plant_stations"], l1["plant_metered_stations"]) == (19, 3)
    assert l1["readings"] == 9300 and l1["readings_per_kwh_cell"] == pytest.approx(9300 / 18)
    # L2 has no meter of its own: only its share of the dry room, with a share of stations to say so
    assert l2["kwh_line"] is None and l2["kwh"] == pytest.approx(60.0)
    assert l2["kwh_per_good_cell"] == pytest.approx(2.0) and l2["metered_share"] == pytest.approx(0.1)
    assert l2["first_pass_yield"] == 1.0 and l2["planned_hours"] is None and l2["oee"] is None


def test_a_site_without_plant_file_keeps_counts_but_no_per_kwh_figures():
    row = compute_plant_kpis(inputs(line_l1()), {}).to_pylist()[0]
    assert row["plant"] is None and row["yield"] == pytest.approx(0.9)
    assert row["output_kwh"] is None and row["kwh_per_kwh_cell"] is None and row["oee"] is None


def test_summary_adds_lines_up_per_plant():
    kpis = compute_plant_kpis(inputs(line_l1() + [quality_row("L2", "aging_eol", 10, 0, 1.0)],
                                     energy=[{"site": "s", "line": "L1", "station": "a", "kwh": 100.0}],
                                     stations=[{"site": "s", "line": "L1", "stations": 4, "metered_stations": 1}]),
                              {"s": PRODUCT})
    loss = pa.Table.from_pylist([{"site": "s", "value": 2.5, "currency": "EUR"},
                                 {"site": "s", "value": 1.5, "currency": "EUR"}])
    (summary,) = summarize(kpis, loss)
    assert summary.output_cells == 100 and summary.yield_ == pytest.approx(100 / 110)
    assert summary.kwh_per_good_cell == pytest.approx(1.0) and summary.metered_share == pytest.approx(0.25)
    assert summary.material_loss_value == pytest.approx(4.0)
    assert "25% of stations metered" in summary.text() and "4.00 EUR" in summary.text()


def test_two_plant_fixture_legacy_energy_comes_with_a_low_metered_share(two_plant_warehouse, tmp_path):
    from transforms.warehouse.reader import connect

    products = load_reference(MaterialSettings()).products
    con = connect(two_plant_warehouse)
    try:
        day = con.sql("SELECT max(date) FROM production_events").fetchall()[0][0]
        kpis = plant_kpis_day(con, day, products)
    finally:
        con.close()
    rows = {(r["site"], r["line"]): r for r in kpis.to_pylist()}
    assert set(rows) == {("ref", "L1"), ("ref", "L2"), ("leg", "L1"), ("leg", "L2")}
    for r in rows.values():
        assert r["output_cells"] > 0 and 0 < r["yield"] <= 1 and r["kwh_per_good_cell"] is not None
        assert r["readings_per_kwh_cell"] > 0
    leg, ref = rows[("leg", "L2")], rows[("ref", "L2")]
    assert ref["metered_share"] == 1.0 and leg["metered_share"] < 0.25 * ref["metered_share"]
    assert leg["plant_metered_share"] < 0.25 * ref["plant_metered_share"]
    # fewer sensors polled slower: far fewer measurements per kWh of cells
    assert leg["readings_per_kwh_cell"] < ref["readings_per_kwh_cell"] / 3
    write_day(tmp_path, PLANT_KPIS, day, kpis)
    write_day(tmp_path, MATERIAL_LOSS, day, MATERIAL_LOSS.file_schema.empty_table())
    assert [s.site for s in plant_summaries(tmp_path, day)] == ["leg", "ref"]
    assert plant_summaries(tmp_path, date(2000, 1, 1)) == []
