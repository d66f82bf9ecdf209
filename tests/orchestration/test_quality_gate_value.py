"""quality_gate_value on a real small lake (cell_features, production events, energy features, a DuckDB catalog
and a champion trained by gate_model_job): the day's pulls, scrap caught, kWh and kg per line agree with the
cells' planted verdicts and the metered energy; a rerun lands the same file; no champion lands an empty day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestration import predictive
from orchestration.resources import WarehouseResource
from schemas.batch import CELL_FEATURES, QUALITY_GATE_VALUE
from schemas.tables import ENERGY_FEATURES, PRODUCTION_EVENTS
from transforms.batch.material import load_reference
from transforms.batch.store import day_path, write_day
from transforms.predictive import registry as R
from transforms.predictive.dataset import feature_matrix
from transforms.predictive.value import critical_kg_per_cell
from transforms.settings import MaterialSettings
from transforms.warehouse import build_catalog

DAY = date(2026, 3, 1)
CELLS = 1000
NAMES = ["coat-c.areal_loading.oos_share", "fill.fill_mass.measured", "fill.dew_point.mean",
         *[f"mix-a.noise{i}.mean" for i in range(4)]]
#: kWh each line's formation and aging stations draw on the day.
FORMATION_KWH, AGING_KWH = 1000.0, 300.0


def _event(cell: str, line: str, ts: datetime, stage: str, kind: str, i: int, **extra) -> dict:
    return {"v": 1, "event_id": f"E-{cell}-{stage}-{kind}", "ts": ts, "site": "ref", "line": line, "stage": stage,
            "station": f"{line}-{stage}", "unit_id": cell, "unit_type": "cell", "kind": kind, "source": "auto",
            "src_partition": 0, "src_offset": i, "late": False, **extra}


@pytest.fixture
def lake(tmp_path):
    """One day of cells on two lines whose risk follows the first feature; half the bad ones are scrapped at
    formation, the others graded C; every event and every kWh falls on the day. Returns the resource and the
    cells (id, line, features, verdict)."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(CELLS, len(NAMES)))
    bad = rng.random(CELLS) < 1 / (1 + np.exp(-(2.5 * X[:, 0] - 3.0)))
    lake = tmp_path / "lake"
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
    step = timedelta(hours=20) / CELLS
    rows, events, cells = [], [], []
    for i in range(CELLS):
        cell, line, gate = f"ref-L{1 + i % 2}-C{i:05d}", f"L{1 + i % 2}", start + i * step
        rows.append({"cell_id": cell, "site": "ref", "line": line, "gate_ts": gate, "upstream_ids": [],
                     "n_features": len(NAMES), "features": list(zip(NAMES, X[i].tolist(), strict=True))})
        events.append(_event(cell, line, gate + timedelta(hours=1), "formation", "enter", 4 * i))
        if bad[i] and i % 4 < 2:
            verdict = "scrap_formation"
            events.append(_event(cell, line, gate + timedelta(hours=2), "formation", "scrap", 4 * i + 1,
                                 reason="formation_failure"))
        else:
            verdict = "C" if bad[i] else "A"
            events.append(_event(cell, line, gate + timedelta(hours=2), "aging_eol", "enter", 4 * i + 1))
            events.append(_event(cell, line, gate + timedelta(hours=3), "aging_eol", "grade", 4 * i + 2, grade=verdict))
        cells.append((cell, line, X[i], verdict))
    write_day(lake, CELL_FEATURES, DAY, pa.Table.from_pylist(rows, schema=CELL_FEATURES.file_schema))
    _write(lake / "production_events" / f"date={DAY}" / "events-0.parquet", events, PRODUCTION_EVENTS)
    energy = [{"window_start": start + timedelta(hours=h), "window_end": start + timedelta(hours=h + 1), "site": "ref",
               "line": line, "station": f"{line}-{stage}", "stage": stage, "kwh": kwh / 24, "counter_resets": 0,
               "gap_ms": 1000}
              for line in ("L1", "L2") for stage, kwh in (("formation", FORMATION_KWH), ("aging_eol", AGING_KWH))
              for h in range(24)]
    _write(lake / "energy_features" / f"date={DAY}" / "energy-0.parquet", energy, ENERGY_FEATURES)
    build_catalog(lake, tmp_path / "gigapulse.duckdb")
    return WarehouseResource(lake_root=str(lake), db_path=str(tmp_path / "gigapulse.duckdb")), cells


def _write(path, rows, spec) -> None:
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=spec.file_schema), path)


def _run(resource: WarehouseResource, job: str) -> dg.ExecuteInProcessResult:
    defs = dg.Definitions.merge(predictive.defs, dg.Definitions(resources={"warehouse": resource}))
    return defs.resolve_job_def(job).execute_in_process(partition_key=DAY.isoformat(), raise_on_error=False)


def test_the_days_value_follows_the_champions_pulls_and_the_metered_energy(lake):
    resource, cells = lake
    lake_root = resource.paths().lake_root
    assert _run(resource, predictive.gate_model_job.name).success
    version = R.champion(lake_root)
    assert version is not None

    result = _run(resource, predictive.quality_gate_value_job.name)
    assert result.success
    path = day_path(lake_root, QUALITY_GATE_VALUE, DAY)
    rows = {r["line"]: r for r in pq.read_table(path).to_pylist()}
    assert sorted(rows) == ["L1", "L2"]

    # The threshold flags 5% of the champion's own test cells (its training record's flag curve).
    record = R.load_record(lake_root, version)
    at5 = next(p for p in record["test_curves"]["flag"] if p["share"] == 0.05)
    assert all(r["threshold"] == pytest.approx(at5["threshold"]) for r in rows.values())
    assert all(r["threshold_source"] == "champion_test_cells" and r["model_version"] == version for r in rows.values())

    # Recount from the planted verdicts, scoring the cells with the champion itself.
    model = R.load_model(lake_root, version)
    X, _ = feature_matrix([list(zip(NAMES, x.tolist(), strict=True)) for _, _, x, _ in cells], names=model.names)
    flagged = model.score(X) >= at5["threshold"]
    kg = critical_kg_per_cell(load_reference(MaterialSettings()))["ref"]
    for line, row in rows.items():
        mine = [(f, v) for (_, ln, _, v), f in zip(cells, flagged, strict=True) if ln == line]
        true_formation = sum(f and v == "scrap_formation" for f, v in mine)
        true_graded = sum(f and v == "C" for f, v in mine)
        false = sum(f and v == "A" for f, v in mine)
        bad = sum(v != "A" for _, v in mine)
        formation_per_cell = FORMATION_KWH / len(mine)  # every cell entered formation on the day
        aging_per_cell = AGING_KWH / sum(v != "scrap_formation" for _, v in mine)
        assert row["cells_gated"] == row["cells_with_verdict"] == len(mine) == CELLS // 2
        assert row["cells_flagged"] == sum(f for f, _ in mine) and row["flagged_without_verdict"] == 0
        assert (row["true_pulls"], row["false_pulls"], row["cells_bad"]) == (true_formation + true_graded, false, bad)
        assert row["bad_caught_share"] == pytest.approx((true_formation + true_graded) / bad)
        assert row["formation_kwh_per_cell"] == pytest.approx(formation_per_cell)
        assert row["aging_kwh_per_cell"] == pytest.approx(aging_per_cell)
        assert row["kwh_saved"] == pytest.approx(true_formation * formation_per_cell
                                                 + true_graded * (formation_per_cell + aging_per_cell))
        assert row["false_pull_kwh"] == pytest.approx(false * (formation_per_cell + aging_per_cell))
        assert row["kg_saved"] == 0.0 and row["kg_false_pulls"] == pytest.approx(false * kg)
        # the planted driver makes a pulled cell far likelier to be bad than the line's average cell
        assert row["precision"] > 2 * bad / len(mine)

    meta = {k: v.value for k, v in result.asset_materializations_for_node("quality_gate_value")[0].metadata.items()}
    assert meta["champion"] == version and meta["cells_gated"] == CELLS
    assert meta["cells_pulled"] == int(flagged.sum())
    assert meta["kwh_saved"] == pytest.approx(sum(r["kwh_saved"] for r in rows.values()))
    assert meta["scrap_caught_share"] == pytest.approx(sum(r["true_pulls"] for r in rows.values())
                                                       / sum(r["cells_bad"] for r in rows.values()))

    first = path.read_bytes()
    assert _run(resource, predictive.quality_gate_value_job.name).success
    assert path.read_bytes() == first  # the day is replaced, not added to


def test_without_a_champion_an_empty_day_is_landed(lake):
    resource, _ = lake
    result = predictive.quality_gate_value(context=dg.build_asset_context(partition_key=DAY.isoformat()),
                                           warehouse=resource)
    assert result.metadata["dagster/row_count"] == 0 and result.metadata["champion"] == ""
    assert pq.read_table(day_path(resource.paths().lake_root, QUALITY_GATE_VALUE, DAY)).num_rows == 0


def test_quality_gate_value_runs_daily_after_the_gate_model_when_switched_on():
    from orchestration.definitions import defs

    schedule = defs.resolve_schedule_def(predictive.quality_gate_value_daily.name)
    assert schedule.default_status is dg.DefaultScheduleStatus.STOPPED
    assert schedule.job_name == predictive.quality_gate_value_job.name
    assert schedule.cron_schedule == "5 3 * * *"  # gate_model_daily is at 02:45
    assert defs.resolve_schedule_def(predictive.gate_model_daily.name).cron_schedule == "45 2 * * *"
    deps = predictive.quality_gate_value.dependency_keys
    assert {predictive.cell_features.key, predictive.gate_champion.key} <= deps


def test_docs_batch_md_lists_every_predictive_job_and_schedule():
    from transforms.settings import REPO_ROOT

    batch = (REPO_ROOT / "docs" / "batch.md").read_text()
    names = [j.name for j in predictive.defs.jobs] + [s.name for s in predictive.defs.schedules]
    assert [n for n in names if f"`{n}`" not in batch] == []
