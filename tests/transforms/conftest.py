"""Shared inputs of the stream tests: the reference plant and a short stretch of its traffic."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ingestion.simulator import PlantSimulator
from schemas.asset_model import load_plant
from schemas.contracts import encode


@pytest.fixture(scope="session")
def reference_plant():
    return load_plant("reference")


@pytest.fixture(scope="session")
def reference_traffic(reference_plant):
    """20 simulated seconds of the reference plant: (frame payloads, production event payloads)."""
    sim = PlantSimulator(reference_plant, seed=11, start=datetime(2026, 3, 2, 6, tzinfo=UTC))
    frames, events = [], []
    for tick in sim.run(20):
        frames += [fr.encode() for fr in tick.frames]
        events += [encode(ev) for ev in tick.events]
    return frames, events
