"""A hand-made lake the way the stream commits it: readings files written by ``LakeWriter`` under their
offset-range names, then the partition's checkpoint moved past them (only its header, which is all
that compaction and the arrivals sensor read). Small enough to build in a test in milliseconds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa

from schemas.tables import TABLES
from transforms.checkpoint import FORMAT_VERSION, CheckpointHeader, checkpoint_path
from transforms.lake import LakeWriter

TOPIC = "plant.readings.v1"


def readings(partition: int, first: int, n: int, start: datetime) -> pa.Table:
    """``n`` readings of source records ``first..first+n-1``, 30 s apart from ``start``."""
    return pa.table({
        "sensor_id": [f"s{(first + i) % 3}" for i in range(n)],
        "ts": pa.array([start + timedelta(seconds=30 * i) for i in range(n)], pa.timestamp("ms", tz="UTC")),
        "value": [float(first + i) for i in range(n)],
        "quality": pa.array([0] * n, pa.int8()),
        "src_partition": pa.array([partition] * n, pa.int32()),
        "src_offset": list(range(first, first + n)),
        "src_index": pa.array([0] * n, pa.int32()),
        "late": [False] * n,
    })


def write_readings(lake: Path, partition: int, first: int, n: int, start: datetime) -> list[Path]:
    """Land a batch of readings (uncommitted until :func:`commit` moves the checkpoint past it)."""
    return LakeWriter.for_table(lake, TABLES["readings"]).write(TOPIC, partition, first, first + n - 1,
                                                                readings(partition, first, n, start))


def commit(lake: Path, partition: int, next_offset: int) -> None:
    """Move the partition's checkpoint: records below ``next_offset`` are committed."""
    path = checkpoint_path(lake, TOPIC, partition)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = CheckpointHeader(FORMAT_VERSION, "readings", TOPIC, partition, next_offset)
    path.write_bytes(orjson.dumps(header) + b"\n{}\n")


def day_at(day: str, hh: int = 12) -> datetime:
    """``hh``:00 UTC of the day ``YYYY-MM-DD``."""
    return datetime.fromisoformat(day).replace(hour=hh, tzinfo=UTC)
