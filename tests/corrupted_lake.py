"""A copy of the simulated warehouse with the faults the data-quality checks exist to catch.

Each fault is one a real lake gets: a batch of readings landed twice (a replayed or re-written file),
with one sample whose sensor id was lost and one temperature below absolute zero among its rows; a
file of readings lost (offsets no table accounts for); an event of an unknown kind naming a parent no
event knows; and the day before the data, which has no data at all (a missing day). The copy gets its
own catalog, so the warehouse views read the corrupted files.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from transforms.warehouse import build_catalog

#: A temperature no thermometer can read (°C): below absolute zero.
IMPOSSIBLE_C = -300.0
GHOST_PARENT = "ref-L1-cathode-GHOST-R0000001"


@dataclass(frozen=True)
class Corruption:
    """Where the faults are, so tests can assert that the messages name them."""

    db_path: Path
    lake_root: Path
    day: date
    missing_day: date
    duplicated_rows: int
    null_sensor_rows: int
    cold_sensor: str
    lost_offsets: int
    lost_partition: int
    ghost_event_offset: int
    #: When the source warehouse was built, right after its data ended: the 'now' freshness is judged at,
    #: so a check run late in a long suite does not find the data stale.
    built_at: datetime


def copy_warehouse(db_path: Path, dest: Path) -> tuple[Path, Path]:
    """Copy a read-only fixture warehouse (its directory: the DuckDB file and the lake) and re-point its
    catalog at the copy's lake; returns (db_path, lake_root) of the copy."""
    shutil.copytree(Path(db_path).parent, dest)
    db, lake = dest / Path(db_path).name, dest / "lake"
    build_catalog(lake, db)
    return db, lake


def _hot_files(lake: Path, table: str, day: date, partition: int) -> list[Path]:
    return sorted((lake / table / f"date={day.isoformat()}").glob(f"*+{partition}+*.parquet"))


def corrupt(db_path: Path, dest: Path) -> Corruption:
    """Copy the warehouse at ``db_path`` to ``dest`` and break it (see the module docstring)."""
    built_at = datetime.fromtimestamp(Path(db_path).stat().st_mtime, UTC)
    db, lake = copy_warehouse(db_path, dest)
    day = date.fromisoformat(next((lake / "readings").glob("date=*")).name.removeprefix("date="))
    files = _hot_files(lake, "readings", day, 0)
    # A batch landed twice, with a lost sensor id and an impossible temperature among its rows.
    src = files[2]
    batch = pq.read_table(src)
    rows = batch.to_pylist()
    celsius = next(i for i, r in enumerate(rows) if r["unit"] == "°C")
    cold_sensor = rows[celsius]["sensor_id"]
    rows[0]["sensor_id"] = None
    rows[celsius]["value"] = IMPOSSIBLE_C
    # The contract says sensor_id is never null; a broken writer would not have asked it.
    i = batch.schema.get_field_index("sensor_id")
    twice = pa.Table.from_pylist(rows, schema=batch.schema.set(i, batch.schema.field(i).with_nullable(True)))
    # Same offsets as the original, another name: the lake's writer would never do that, a replay bug would.
    pq.write_table(twice, src.with_name(src.name.replace("plant.readings.v1", "plant.readings.v1.replayed")))
    # A file lost: its offsets are in neither readings nor dead_letters.
    lost = files[5]
    lost_offsets = len(set(pq.read_table(lost, columns=["src_offset"])["src_offset"].to_pylist()))
    lost.unlink()
    # An event of an unknown kind naming a parent no event knows, at the next offset (no gap).
    events = _hot_files(lake, "production_events", day, 0)
    last = pq.read_table(events[-1])
    ghost = last.slice(last.num_rows - 1, 1).to_pylist()[0]
    ghost.update(kind="explode", parent_ids=[GHOST_PARENT], src_offset=ghost["src_offset"] + 1,
                 event_id=ghost["event_id"] + ":ghost")
    ghost_file = events[-1].with_name(f"plant.events.v1+0+{ghost['src_offset']:020d}+{ghost['src_offset']:020d}.parquet")
    pq.write_table(pa.Table.from_pylist([ghost], schema=last.schema), ghost_file)
    build_catalog(lake, db)
    return Corruption(db_path=db, lake_root=lake, day=day, missing_day=day - timedelta(days=1),
                      duplicated_rows=batch.num_rows, null_sensor_rows=1, cold_sensor=cold_sensor,
                      lost_offsets=lost_offsets, lost_partition=0, ghost_event_offset=ghost["src_offset"], built_at=built_at)
