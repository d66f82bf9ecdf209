"""The readiness and retrofit assets land their day, a rerun leaves the same bytes, and the evidence the
scores point at in the landed sensor_density_audit gives back their figures."""

from __future__ import annotations

import json
import shutil

import dagster as dg
import pyarrow.parquet as pq
import pytest

from orchestration.audits import sensor_density_audit
from orchestration.definitions import defs
from orchestration.readiness import readiness_scores, retrofit_plan
from orchestration.resources import WarehouseResource
from schemas.batch import READINESS_SCORES, RETROFIT_PAYBACK, RETROFIT_PLAN, SENSOR_DENSITY_AUDIT, SENSOR_GAPS
from transforms.batch.store import day_path
from transforms.warehouse import build_catalog
from transforms.warehouse.reader import connect

SPECS = (SENSOR_DENSITY_AUDIT, SENSOR_GAPS, READINESS_SCORES, RETROFIT_PLAN, RETROFIT_PAYBACK)


@pytest.fixture(scope="module")
def landed(two_plant_warehouse, tmp_path_factory):
    """A copy of the two-plant warehouse with the day's audit, scores and plan materialized twice."""
    data = shutil.copytree(two_plant_warehouse.parent, tmp_path_factory.mktemp("readiness") / "data")
    warehouse = WarehouseResource(lake_root=str(data / "lake"), db_path=str(data / "gigapulse.duckdb"))
    con = connect(data / "gigapulse.duckdb")
    try:
        day = con.execute("SELECT max(date) FROM sensor_health_daily").fetchone()[0]
    finally:
        con.close()
    lake = data / "lake"
    runs = []
    for _ in range(2):
        results = {a.key.to_user_string(): a(context=dg.build_asset_context(partition_key=day.isoformat()),
                                              warehouse=warehouse)
                   for a in (sensor_density_audit, readiness_scores, retrofit_plan)}
        runs.append(({s.name: day_path(lake, s, day).read_bytes() for s in SPECS}, results))
    return warehouse, day, runs


def test_materializing_twice_leaves_the_same_bytes(landed):
    _, _, (first, second) = landed
    assert first[0] == second[0]


def test_metadata_carries_row_counts_previews_and_key_figures(landed):
    warehouse, day, runs = landed
    results = runs[-1][1]
    lake = warehouse.paths().lake_root
    scores = results["readiness_scores"].metadata
    assert scores["dagster/row_count"] == pq.read_table(day_path(lake, READINESS_SCORES, day)).num_rows
    assert scores["overall_score"].data["leg"] < scores["overall_score"].data["ref"]
    assert set(scores["acatech_stage"].data) == {"leg", "ref"} and "| leg |" in scores["preview"].md_str
    plan = results["retrofit_plan"].metadata
    assert plan["dagster/row_count"] == pq.read_table(day_path(lake, RETROFIT_PLAN, day)).num_rows > 0
    assert plan["capex_eur"].data["leg"] > 0 == plan["capex_eur"].data["ref"]
    assert plan["payback_years"].data["leg"] > 0


def test_scores_drawn_from_the_audit_trace_to_the_landed_audit(landed):
    warehouse, day, _ = landed
    paths = warehouse.paths()
    build_catalog(paths.lake_root, paths.db_path)  # the batch tables become views
    con = connect(paths.db_path)
    try:
        rows = con.execute("SELECT dimension, numerator, denominator, evidence_query, evidence_params "
                           "FROM readiness_scores WHERE date = ? AND evidence_query LIKE '%sensor_density_audit%'",
                           [day]).fetchall()
        assert {r[0] for r in rows} == {"sensor_density", "energy_transparency"} and len(rows) == 2 * 6
        for dim, num, den, sql, params in rows:
            assert con.execute(sql, json.loads(params)).fetchone() == (num, den), dim
        top = con.execute("SELECT site, priority, item FROM retrofit_plan WHERE date = ? AND priority = 1",
                          [day]).fetchall()
        assert top == [("leg", 1, "gateway")]
    finally:
        con.close()


def test_the_readiness_job_selects_the_audit_and_both_assets():
    dg.Definitions.validate_loadable(defs)
    job = defs.resolve_job_def("readiness_job")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == {
        "sensor_density_audit", "readiness_scores", "retrofit_plan"}
