"""Two package-scoped runs (35 simulated minutes of each plant) feed most simulator checks, so the whole
package stays within a few seconds per plant on a shared 2-core machine.
"""

from __future__ import annotations

import pytest

from tests.ingestion.simulator.support import PlantRun, run_plant


@pytest.fixture(scope="package")
def reference_run() -> PlantRun:
    return run_plant("reference", keep_readings=False)


@pytest.fixture(scope="package")
def legacy_run() -> PlantRun:
    return run_plant("legacy", keep_readings=True)
