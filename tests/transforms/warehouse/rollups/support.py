"""Lakes for the rollup tests: one streamed from the simulator without a broker, and rows written by hand.

Plain functions; the fixtures that use them live in ``conftest.py``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from ingestion.simulator import PlantSimulator
from schemas.contracts import AssetEntry, SignalClass, Stage, encode
from schemas.tables import TABLES
from transforms import partitions as P
from transforms.lake import LakeWriter
from transforms.settings import StreamSettings
from transforms.warehouse import write_sensors

DAY_MS = 86_400_000
#: Four simulated minutes from 23:58: two UTC days, cells graded on both, all inside one night shift.
SIM_START = datetime(2026, 3, 1, 23, 58, tzinfo=UTC)
SIM_SECONDS = 240


def simulate_into_lake(lake: Path, plant, start: datetime, seconds: int, seed: int = 5) -> None:
    """The simulator's frames and events through the stream's partition processors into ``lake``.

    One readings and one events partition, a checkpoint every 30 simulated seconds and a final one
    that closes every window, then the asset model as the ``sensors`` table: what a drained worker leaves.
    """
    settings = StreamSettings(microbatch_rows=20_000)
    readings = P.ReadingsPartition("plant.readings.v1", 0, lake, settings, plant.by_id)
    events = P.EventsPartition("plant.events.v1", 0, lake, settings)
    r_off = e_off = 0
    for i, tick in enumerate(PlantSimulator(plant, seed=seed, start=start).run(seconds)):
        for frame in tick.frames:
            readings.add(r_off, 0, frame.encode())
            r_off += 1
        for ev in tick.events:
            events.add(e_off, 0, encode(ev))
            e_off += 1
        last = i == seconds - 1
        if last or i % 30 == 29:
            readings.checkpoint(final=last)
            events.checkpoint(final=last)
    write_sensors(lake, plant.sensors)


def read_table(lake: Path, table: str) -> pa.Table:
    """A lake table as Arrow, with ``date`` from the directory names."""
    part = ds.partitioning(pa.schema([("date", pa.date32())]), flavor="hive")
    return ds.dataset(lake / table, format="parquet", partitioning=part).to_table()


def rows_of(lake: Path, table: str) -> list[dict[str, Any]]:
    path = lake / table
    if not path.exists():
        return []
    if TABLES[table].partition_cols:
        return read_table(lake, table).to_pylist()
    return ds.dataset(path, format="parquet").to_table().to_pylist()


def write_rows(lake: Path, table: str, rows: list[dict[str, Any]], *, partition: int = 0, first: int = 0,
               topic: str = "plant.test.v1") -> list[Path]:
    """Land ``rows`` in ``table`` as the stream does: one file per date, named by offsets first.."""
    spec = TABLES[table]
    data = pa.Table.from_pylist(rows, schema=spec.file_schema)
    return LakeWriter.for_table(lake, spec).write(topic, partition, first, first + len(rows) - 1, data)


def at(day: date, hh: int, mm: int = 0, ss: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(hours=hh, minutes=mm, seconds=ss)


def event(ts: datetime, unit: str, kind: str, stage: str = "stacking", *, line: str = "L1", offset: int,
          reason: str | None = None, grade: str | None = None, late: bool = False, partition: int = 0) -> dict:
    """A production_events row; ``offset`` orders events of equal time, as arrival order does."""
    return {"v": 1, "event_id": f"{unit}:{kind}:{stage}:{offset}", "ts": ts, "site": "ref", "line": line,
            "stage": stage, "station": f"{line}-{stage}", "unit_id": unit, "unit_type": "cell", "kind": kind,
            "reason": reason, "grade": grade, "source": "auto", "src_partition": partition, "src_offset": offset,
            "late": late}


def health_row(sensor_id: str, start: datetime, observed: int, *, expected: float = 60.0, stuck: bool = False,
               late: int = 0, max_gap_ms: int | None = 1000) -> dict:
    return {"sensor_id": sensor_id, "window_start": start, "window_end": start + timedelta(minutes=1),
            "observed": observed, "expected": expected, "rate_ratio": observed / expected,
            "max_gap_ms": max_gap_ms if observed else None, "stuck": stuck, "late": late}


def energy_row(station: str, start: datetime, kwh: float, *, line: str = "L1", resets: int = 0,
               gap_ms: int = 1000, width_min: int = 1) -> dict:
    return {"window_start": start, "window_end": start + timedelta(minutes=width_min), "site": "ref", "line": line,
            "station": station, "stage": "coating", "kwh": kwh, "counter_resets": resets, "gap_ms": gap_ms}


def sensor(sensor_id: str, *, lsl: float | None = 80.0, usl: float | None = 94.0, ctq: bool = True,
           line: str = "L1") -> AssetEntry:
    return AssetEntry(sensor_id=sensor_id, path=f"gp/ref/electrodes/{line}/{line}-coat-c/die/{sensor_id}",
                      enterprise="gp", site="ref", area="electrodes", line=line, station=f"{line}-coat-c",
                      equipment="die", stage=Stage.COATING, parameter="coating_thickness", unit="um",
                      signal_class=SignalClass.PRODUCT_FEATURE, nominal_rate_hz=1.0, lsl=lsl, usl=usl, ctq=ctq)
