"""What the simulator hands out meets the contracts."""

from __future__ import annotations

from datetime import timedelta

from ingestion.simulator import PlantSimulator
from schemas.asset_model import load_plant
from schemas.contracts import decode_event, decode_reading_message, encode


def test_frames_and_events_meet_the_contracts(reference_run, legacy_run):
    plant = load_plant("legacy")
    sim = PlantSimulator(plant, seed=5)
    for tick in sim.run(30):
        assert tick.sim_time.tzinfo is not None
        for fr in tick.frames:
            decoded = decode_reading_message(fr.encode())
            assert decoded.sensors == fr.sensors and len(decoded) == len(fr)
            assert set(fr.sensors) <= set(plant.by_id)
    for run in (reference_run, legacy_run):
        ids = [e.event_id for e in run.events]
        assert len(ids) == len(set(ids))
        for ev in run.events[:5000]:
            assert decode_event(encode(ev)) == ev
            assert ev.ts.utcoffset() == timedelta(0)
