"""What the stream committed to the lake since someone last looked, and which UTC days it touched.

The Dagster sensor ``new_lake_partitions`` asks this every minute, so it must be cheap and must not
read data: the fingerprint is the checkpoints' committed offsets (one header line per partition), and
only when one moved are the hot files' *names* listed to find their days. A file counts once its
whole offset range is below its partition's checkpoint, as compaction counts it: files the stream
wrote but has not committed yet are not news, and are found at the next look after their commit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from transforms.warehouse.maintenance import COMPACTED_TABLES, committed_offsets, hot_files


@dataclass(frozen=True)
class LakeArrivals:
    """The lake's committed offsets now, the sources that moved since the previous look, and their days."""

    offsets: dict[str, int]  # "<topic>+<partition>" -> next offset to process
    advanced: tuple[str, ...]  # sources whose committed offset changed
    days: tuple[str, ...]  # UTC days (YYYY-MM-DD) of files committed since the previous look

    @property
    def changed(self) -> bool:
        return bool(self.advanced)


def lake_arrivals(lake_root: Path, previous: Mapping[str, int]) -> LakeArrivals:
    """Compare the lake's checkpoints with ``previous`` offsets (empty on a first look).

    A source whose offset went back (a topic recreated, a lake restored from a copy) is read from
    offset 0 again, so its files are news rather than silently skipped. Days whose files were
    already compacted away by the time of the look are not listed; the sources still show as moved.
    """
    current = committed_offsets(lake_root)
    advanced = tuple(sorted(s for s, nxt in current.items() if nxt != previous.get(s, 0)))
    days: set[str] = set()
    if advanced:
        moved = set(advanced)
        for table in COMPACTED_TABLES:
            for hot in hot_files(lake_root, table):
                if hot.source not in moved:
                    continue
                low, high = previous.get(hot.source, 0), current[hot.source]
                if low > high:
                    low = 0
                # Committed now (last < high) and not at the previous look (last >= low).
                if low <= hot.range.last_offset < high:
                    days.add(hot.date)
    return LakeArrivals(offsets=current, advanced=advanced, days=tuple(sorted(days)))


def encode_offsets(offsets: Mapping[str, int]) -> str:
    """A sensor cursor: the offsets as compact, key-sorted JSON (equal offsets give equal cursors)."""
    return json.dumps(dict(offsets), sort_keys=True, separators=(",", ":"))


def decode_offsets(cursor: str | None) -> dict[str, int]:
    """The offsets of a cursor from :func:`encode_offsets`; empty for none or one it cannot read.

    An unreadable cursor (another format, edited by hand) means one extra maintenance run, which is
    harmless, where refusing it would stop the sensor for good.
    """
    if not cursor:
        return {}
    try:
        raw = json.loads(cursor)
    except ValueError:
        return {}
    if not isinstance(raw, dict):
        return {}
    return {str(k): v for k, v in raw.items() if isinstance(v, int) and not isinstance(v, bool) and v >= 0}
