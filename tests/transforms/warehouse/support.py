"""A small real warehouse built from the simulator, without a broker (the ``sim_warehouse`` fixture).

The reference plant is narrowed to one line, two sensors per multi-sensor parameter and process
times of seconds, so that 110 simulated seconds already hold cells whose electrode rolls and
slurry batches the line made itself (a genealogy three units deep), across a UTC midnight (two
``date`` partitions). The cathode coater's gateway goes silent at midnight, so rolls coated after
it have no overlapping feature window and the as-of value must come from the day before.
Frames and events go through the stream's own partition processors into Parquet, then
``build_catalog`` makes the DuckDB file the tests read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from ingestion.simulator import PlantSimulator
from schemas.asset_model import Plant, load_plant, plant_path
from schemas.contracts import encode
from transforms import partitions as P
from transforms.settings import StreamSettings
from transforms.warehouse import build_catalog, write_sensors

START = datetime(2026, 3, 2, 23, 59, tzinfo=UTC)
#: From this instant on, nothing arrives from the cathode coater's gateway.
OUTAGE_FROM = datetime(2026, 3, 3, 0, 0, tzinfo=UTC)
OUTAGE_GATEWAY = "ref.L1-coat-c"
DURATION_S = 110
TIMING_S = {"slurry_batch": 20, "roll": 10, "calendering": 4, "slitting": 4, "vacuum_drying": 6,
            "stacking": 2, "filling": 2, "formation": 6, "aging_eol": 6}


@dataclass(frozen=True)
class SimWarehouse:
    """The lake, its catalog and the plant that made them."""

    lake: Path
    db: Path
    plant: Plant


def small_plant(directory: Path) -> Plant:
    """The reference plant with one line, at most two sensors per parameter and fast process times."""
    raw = yaml.safe_load(plant_path("reference").read_text())
    raw["lines"] = raw["lines"][:1]
    raw["sim"]["timing_s"] = TIMING_S
    for station in raw["stations"]:
        for sensor in station["sensors"]:
            sensor["count"] = min(sensor.get("count", 1), 2)
    path = directory / "small-plant.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return load_plant(str(path))


def build_sim_warehouse(root: Path) -> SimWarehouse:
    """Simulate the small plant into ``root/lake`` through the stream's processors; catalog at ``root``."""
    plant = small_plant(root)
    lake = root / "lake"
    settings = StreamSettings()
    readings = P.ReadingsPartition("plant.readings.v1", 0, lake, settings, plant.by_id)
    events = P.EventsPartition("plant.events.v1", 0, lake, settings)
    sim = PlantSimulator(plant, seed=7, start=START)
    r_off = e_off = 0
    for i, tick in enumerate(sim.run(DURATION_S)):
        # The Kafka timestamp of everything in the tick: when it would have arrived.
        ingest_ms = int(tick.sim_time.timestamp() * 1000)
        for frame in tick.frames:
            if frame.gateway == OUTAGE_GATEWAY and tick.sim_time > OUTAGE_FROM:
                continue
            readings.add(r_off, ingest_ms, frame.encode())
            r_off += 1
        for ev in tick.events:
            events.add(e_off, ingest_ms, encode(ev))
            e_off += 1
        if i % 40 == 39:  # several files per table and date, as a running stream leaves them
            readings.checkpoint()
            events.checkpoint()
    readings.checkpoint(final=True)
    events.checkpoint(final=True)
    write_sensors(lake, plant.sensors)
    db = root / "gigapulse.duckdb"
    build_catalog(lake, db)
    return SimWarehouse(lake, db, plant)
