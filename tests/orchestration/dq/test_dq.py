"""The checks in Dagster: attached to the lake tables, partitioned by day, landing dq_results, and
blocking: a downstream asset of readings does not run on a day whose readings fail a blocking check."""

# No ``from __future__ import annotations``: Dagster inspects the test asset's context annotation.
from datetime import date

import dagster as dg
import duckdb
import pytest

from orchestration.definitions import defs as code_location
from orchestration.dq import ASSET_CHECKS, LAKE_TABLES, daily_partitions, lake_quality_job
from orchestration.resources import WarehouseResource
from schemas.batch import DQ_RESULTS
from tests.corrupted_lake import copy_warehouse
from transforms.batch.dq import CHECKS
from transforms.batch.store import day_path


@dg.asset(deps=[LAKE_TABLES["readings"]], partitions_def=daily_partitions)
def readings_per_sensor_count(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """Stands for any number computed from readings (rollups, KPIs): it must not run on broken data."""
    return dg.MaterializeResult(metadata={"partition": context.partition_key})


def _run(db_path, lake_root, day):
    job = dg.define_asset_job(
        "checks_then_downstream",
        selection=dg.AssetSelection.checks_for_assets(*[s.key for s in LAKE_TABLES.values()])
        | dg.AssetSelection.assets(readings_per_sensor_count))
    defs = dg.Definitions(assets=[*LAKE_TABLES.values(), readings_per_sensor_count], asset_checks=ASSET_CHECKS,
                          jobs=[job], resources={"warehouse": WarehouseResource(lake_root=str(lake_root),
                                                                                db_path=str(db_path))})
    return defs.resolve_job_def(job.name).execute_in_process(partition_key=day.isoformat(), raise_on_error=False)


def _materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def test_the_code_location_holds_every_check_and_the_daily_job():
    graph = code_location.resolve_asset_graph()
    keys = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert {(c.table, c.name) for c in CHECKS} <= keys
    job = code_location.resolve_job_def(lake_quality_job.name)
    assert set(job.graph.node_dict) == {"readings_quality", "production_events_quality", "dead_letters_quality"}


def test_the_daily_job_checks_the_day_its_partition_tag_names(corrupted_warehouse, tmp_path, monkeypatch):
    monkeypatch.setenv("GIGAPULSE_DQ_MAX_LAG_S", "86400")
    c = corrupted_warehouse
    db, lake = copy_warehouse(c.db_path, tmp_path / "warehouse")
    job = code_location.resolve_job_def(lake_quality_job.name)
    result = job.execute_in_process(
        tags={"dagster/partition": c.missing_day.isoformat()}, raise_on_error=False,
        resources={"warehouse": WarehouseResource(lake_root=str(lake), db_path=str(db))})
    failed = {(e.check_name, e.partition) for e in result.get_asset_check_evaluations() if not e.passed}
    day = c.missing_day.isoformat()
    assert failed == {("readings_rows_present", day), ("readings_freshness", day),
                      ("production_events_rows_present", day), ("production_events_freshness", day)}
    assert day_path(lake, DQ_RESULTS, c.missing_day).exists()


def test_a_clean_day_passes_and_the_downstream_asset_runs(simulated_warehouse, tmp_path, monkeypatch):
    monkeypatch.setenv("GIGAPULSE_DQ_MAX_LAG_S", "86400")  # the session fixture may be older than 15 min
    db, lake = copy_warehouse(simulated_warehouse, tmp_path / "warehouse")
    day = next(lake.joinpath("readings").glob("date=*")).name.removeprefix("date=")
    result = _run(db, lake, date.fromisoformat(day))
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == len(CHECKS) and all(e.passed for e in evaluations)
    assert _materialized(result) == {"readings_per_sensor_count"}


def test_a_corrupted_day_fails_its_checks_blocks_downstream_and_lands_dq_results(corrupted_warehouse, tmp_path,
                                                                                 monkeypatch):
    monkeypatch.setenv("GIGAPULSE_DQ_MAX_LAG_S", "86400")
    c = corrupted_warehouse
    db, lake = copy_warehouse(c.db_path, tmp_path / "warehouse")  # the run writes dq_results into the lake
    result = _run(db, lake, c.day)
    assert not result.success
    failed = {e.check_name: e for e in result.get_asset_check_evaluations() if not e.passed}
    assert set(failed) == {"readings_keys_not_null", "readings_unique_source_position", "readings_physical_range",
                           "readings_offsets_complete", "production_events_valid_values",
                           "production_events_genealogy"}
    assert failed["readings_physical_range"].severity == dg.AssetCheckSeverity.ERROR
    assert failed["production_events_genealogy"].severity == dg.AssetCheckSeverity.WARN
    assert c.cold_sensor in failed["readings_physical_range"].description
    assert "readings_per_sensor_count" not in _materialized(result)
    rows = duckdb.connect().execute(
        "SELECT table_name, check_name, success, run_id FROM read_parquet(?)",
        [day_path(lake, DQ_RESULTS, c.day).as_posix()]).fetchall()
    assert len(rows) == len(CHECKS) and {r[3] for r in rows} == {result.run_id}
    assert {r[1] for r in rows if not r[2]} == set(failed)


@pytest.mark.parametrize("table", list(LAKE_TABLES))
def test_lake_tables_are_external_daily_assets(table):
    spec = LAKE_TABLES[table]
    assert spec.group_name == "lake" and spec.partitions_def == daily_partitions


def test_the_production_jobs_run_the_checks_of_what_they_read_and_stop_on_broken_data(corrupted_warehouse, tmp_path,
                                                                                     monkeypatch):
    """material_loss_job on the corrupted day: production_events fails a blocking check, no ledger lands."""
    monkeypatch.setenv("GIGAPULSE_DQ_MAX_LAG_S", "86400")
    c = corrupted_warehouse
    db, lake = copy_warehouse(c.db_path, tmp_path / "warehouse")
    job = code_location.resolve_job_def("material_loss_job")
    assert {n for n in job.graph.node_dict} == {"production_events_quality", "material_loss"}
    result = job.execute_in_process(partition_key=c.day.isoformat(), raise_on_error=False,
                                    resources={"warehouse": WarehouseResource(lake_root=str(lake), db_path=str(db))})
    assert not result.success
    assert "production_events_valid_values" in {e.check_name for e in result.get_asset_check_evaluations()
                                                if not e.passed}
    assert "material_loss" not in _materialized(result)
    for name, tables in (("plant_kpis_job", {"readings", "production_events"}),
                         ("readiness_job", {"readings", "production_events", "dead_letters"})):
        nodes = set(code_location.resolve_job_def(name).graph.node_dict)
        assert {f"{t}_quality" for t in tables} <= nodes, name
