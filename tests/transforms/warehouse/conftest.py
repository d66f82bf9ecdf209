"""Fixtures of the warehouse tests: small lakes of the reference plant, as the stream writes them."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gigapulse.bench.lakebuild import BuildReport, LakePlan, build_lake
from schemas.asset_model import Plant, load_plant
from tests.transforms.warehouse.support import SimWarehouse, build_sim_warehouse
from transforms.warehouse import build_catalog
from transforms.warehouse.maintenance import compact

#: The reference plant's process times, compressed further so that 150 simulated seconds already
#: hold cells graded from the line's own electrode rolls (the shipped plant needs about 6 minutes).
FAST_TIMING_S = {"slurry_batch": 20, "roll": 6, "calendering": 2, "slitting": 2, "vacuum_drying": 4,
                 "stacking": 1, "filling": 2, "formation": 5, "aging_eol": 5}
#: 90 s before midnight to 60 s after: every query meets two dates, and cells graded on the second
#: day consumed rolls coated on the first.
PLAN = LakePlan(seconds=150, start=datetime(2026, 3, 1, 23, 58, 30, tzinfo=UTC), checkpoint_s=30,
                outage_every_s=60, outage_s=20)


@dataclass(frozen=True)
class QueryLake:
    """The raw lake (hot files only) and two catalogs over the same rows: before and after compaction."""

    plant: Plant
    lake: Path
    db_hot: Path
    db_compacted: Path
    build: BuildReport


def fast_reference_plant() -> Plant:
    ref = load_plant("reference")
    sim = {**ref.template.sim, "timing_s": FAST_TIMING_S}
    return Plant(ref.template.model_copy(update={"sim": sim}), ref.source)


@pytest.fixture(scope="session")
def query_lake(tmp_path_factory) -> QueryLake:
    """150 simulated seconds of the reference plant (about 835,000 readings) through the partition
    processors, with two 20 s gateway outages; one copy compacted, one left as the stream wrote it."""
    root = tmp_path_factory.mktemp("query_lake")
    plant = fast_reference_plant()
    report = build_lake(plant, root / "hot" / "lake", PLAN)
    build_catalog(root / "hot" / "lake", root / "hot" / "gigapulse.duckdb")
    shutil.copytree(root / "hot" / "lake", root / "compacted" / "lake")
    compact(root / "compacted" / "lake", root / "compacted" / "gigapulse.duckdb", grace_s=0)
    return QueryLake(plant, root / "hot" / "lake", root / "hot" / "gigapulse.duckdb",
                     root / "compacted" / "gigapulse.duckdb", report)


@pytest.fixture(scope="session")
def sim_warehouse(tmp_path_factory) -> SimWarehouse:
    return build_sim_warehouse(tmp_path_factory.mktemp("sim-warehouse"))
