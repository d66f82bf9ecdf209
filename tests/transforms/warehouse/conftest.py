"""Fixtures of the warehouse tests."""

from __future__ import annotations

import pytest

from tests.transforms.warehouse.support import SimWarehouse, build_sim_warehouse


@pytest.fixture(scope="session")
def sim_warehouse(tmp_path_factory) -> SimWarehouse:
    return build_sim_warehouse(tmp_path_factory.mktemp("sim-warehouse"))
