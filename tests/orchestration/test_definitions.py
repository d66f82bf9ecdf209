"""The Dagster code location loads, merges every domain with the shared resources, and keeps its policies:
a docstring on every asset, DuckDB writers in one pool, schedules and sensors stopped on a fresh stack."""

from __future__ import annotations

import dagster as dg

from orchestration import lake, resources
from orchestration.definitions import (
    DUCKDB_POOL,
    defs,
    new_lake_partitions,
    warehouse_catalog_every_15_minutes,
    warehouse_catalog_job,
)

#: Assets that write the DuckDB file or the lake's maintenance state.
WRITERS = {"warehouse_catalog", "lake_compaction", "lake_rollups"}


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    names = {s.key.to_user_string() for s in defs.resolve_all_asset_specs()}
    assert names >= WRITERS
    assert set(defs.resources) >= {"warehouse", "kafka"}


def test_every_domain_is_merged():
    assert {s.key for s in lake.defs.assets} <= {s.key for s in defs.resolve_all_asset_specs()}
    assert set(resources.defs.resources) <= set(defs.resources)


def test_every_asset_has_a_docstring():
    for spec in defs.resolve_all_asset_specs():
        assert spec.description and spec.description.strip(), spec.key


def test_duckdb_writers_share_the_pool_not_a_run_tag():
    for name in WRITERS:
        assert defs.resolve_assets_def(name).node_def.pool == DUCKDB_POOL, name
    for job in defs.resolve_all_job_defs():
        assert not any(key.startswith("gigapulse/") for key in job.tags), job.name


def test_schedule_is_stopped_by_default_and_targets_the_job():
    assert warehouse_catalog_every_15_minutes.cron_schedule == "*/15 * * * *"
    assert warehouse_catalog_every_15_minutes.default_status is dg.DefaultScheduleStatus.STOPPED
    assert warehouse_catalog_every_15_minutes.job_name == warehouse_catalog_job.name


def test_lake_sensor_is_stopped_by_default_and_starts_maintenance_and_the_checks():
    sensor = defs.resolve_sensor_def("new_lake_partitions")
    assert sensor is new_lake_partitions
    assert sensor.default_status is dg.DefaultSensorStatus.STOPPED
    assert [t.job_name for t in sensor.targets] == ["lake_compaction_job", "lake_quality_job"]


def test_the_docs_name_the_code_location_and_the_lake_definitions():
    """README's ``dagster dev -m ...`` loads this module, and docs/batch.md names what the lake domain holds."""
    import importlib

    from orchestration.cli import DEFINITIONS_MODULE
    from transforms.settings import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    assert f"dagster dev -m {DEFINITIONS_MODULE}" in readme
    assert importlib.import_module(DEFINITIONS_MODULE).defs is defs
    batch = (REPO_ROOT / "docs" / "batch.md").read_text()
    names = [j.name for j in lake.defs.jobs] + [s.name for s in lake.defs.schedules] + \
        [s.name for s in lake.defs.sensors] + [a.key.to_user_string() for a in lake.defs.assets]
    assert [n for n in names if f"`{n}`" not in batch] == []
