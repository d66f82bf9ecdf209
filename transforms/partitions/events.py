"""The production-events partition: raw events and quality features."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from schemas import tables as T
from schemas.contracts import ProductionEvent, decode_event
from transforms import features as F
from transforms.checkpoint import EventsState
from transforms.partitions.base import _check_future, _ms_ts, _Partition
from transforms.settings import StreamSettings


class EventsPartition(_Partition):
    """One partition of ``plant.events.v1``: raw production events and quality features."""

    TABLES = (T.PRODUCTION_EVENTS, T.QUALITY_FEATURES)
    STATE = EventsState
    FEATURE_TABLES = frozenset({"quality_features"})

    def __init__(self, topic: str, partition: int, lake_root: Path, settings: StreamSettings):
        super().__init__(topic, partition, lake_root, settings)
        self._events: list[tuple[int, ProductionEvent]] = []

    def _new_state(self) -> dict[str, Any]:
        return {"quality": F.QualityWindows(self.settings.window_ms, self.settings.lateness_ms)}

    @property
    def buffered_rows(self) -> int:
        return len(self._events)

    def _add_one(self, offset: int, ingest_ms: int, payload: bytes | None) -> None:
        """Decode one event; raise ContractError to refuse it (see ReadingsPartition._check_event_time)."""
        ev = decode_event(payload)
        _check_future(int(ev.ts.timestamp() * 1000), ingest_ms, self.settings.max_future_ms)
        self._events.append((offset, ev))

    def _reset_buffers(self) -> None:
        self._events = []

    def _compute(self, final: bool = False) -> None:
        events, self._events = self._events, []
        q: F.QualityWindows = self.state["quality"]
        if events:
            rows = []
            for off, ev in events:
                # One push per event: lateness is judged per message, so the lake does not depend on
                # how messages were grouped into micro-batches (events are few; this loop is cheap).
                emitted = q.push_events([ev])
                rows.append({**_event_row(ev), "src_partition": self.partition, "src_offset": off,
                             "late": bool(emitted.late[0])})
                self._add_quality(emitted.rows)
            self.pending["production_events"].append(
                pa.Table.from_pylist(rows, schema=T.PRODUCTION_EVENTS.file_schema))
        if final:
            self._add_quality(q.flush_all().rows)

    def _add_quality(self, rows: F.Columns) -> None:
        if not len(rows.get("line", ())):
            return
        n = len(rows["line"])
        out = {
            "window_start": _ms_ts(rows["window_start"]), "window_end": _ms_ts(rows["window_end"]),
            "site": pa.array(rows["site"], pa.string()), "line": pa.array(rows["line"], pa.string()),
            "stage": pa.array(rows["stage"], pa.string()),
        }
        for c in ("units_in", "units_out", "good", "scrapped", "grade_a", "grade_b", "grade_c"):
            out[c] = pa.array(rows[c], pa.int64())
        for c in ("yield", "first_pass_yield"):
            out[c] = pa.array(rows[c], pa.float64(), from_pandas=True)
        out["scrap_by_reason"] = pa.array([sorted((rows["scrap_by_reason"][i] or {}).items()) for i in range(n)],
                                          pa.map_(pa.string(), pa.int64()))
        self.pending["quality_features"].append(pa.table(out))


def _event_row(ev: ProductionEvent) -> dict[str, Any]:
    d = dict(ev.__dict__)
    for k in ("stage", "unit_type", "kind"):
        d[k] = str(d[k].value)
    return d
