"""A lake streamed from the reference plant across a UTC midnight, with every rollup built once."""

from __future__ import annotations

import pytest

from tests.transforms.warehouse.rollups.support import SIM_SECONDS, SIM_START, simulate_into_lake
from transforms.warehouse.rollups import lake_sources, refresh_rollups


@pytest.fixture(scope="session")
def simulated_lake(tmp_path_factory, reference_plant):
    """(lake root, refresh report) of the reference plant streamed without a broker and rolled up.

    Shared: tests must not change it (copy what they change).
    """
    lake = tmp_path_factory.mktemp("rollups") / "lake"
    simulate_into_lake(lake, reference_plant, SIM_START, SIM_SECONDS)
    report = refresh_rollups(lake_sources(lake), lake)
    return lake, report
