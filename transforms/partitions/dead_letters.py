"""The dead-letter partition: every refused message (edge, replay, stream) into the lake."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from schemas import tables as T
from schemas.contracts import ContractError, Reason, decode_dead_letter
from transforms.partitions.base import _Partition
from transforms.settings import StreamSettings


class DeadLettersPartition(_Partition):
    """One partition of ``plant.dlq.v1``: every refused message (edge, replay, stream) into the lake."""

    TABLES = (T.DEAD_LETTERS,)

    def __init__(self, topic: str, partition: int, lake_root: Path, settings: StreamSettings):
        super().__init__(topic, partition, lake_root, settings)
        self._rows: list[dict[str, Any]] = []

    def _new_state(self) -> dict[str, Any]:
        return {}

    @property
    def buffered_rows(self) -> int:
        return len(self._rows)

    def _add_one(self, offset: int, ingest_ms: int, payload: bytes | None) -> None:
        """Land one dead letter; one that breaks its own contract is landed with that reason, at stage stream.

        Never re-sent to the dead-letter topic: a broken letter there would be read again, refused
        again and re-sent forever. It goes straight into the lake's dead_letters table instead.
        """
        try:
            dl = decode_dead_letter(payload)
            row = {"reason": dl.reason.value, "detail": dl.detail, "stage": dl.stage,
                   "source_topic": dl.source_topic, "source_partition": dl.source_partition,
                   "source_offset": dl.source_offset, "ts": dl.ts, "payload": dl.payload()}
        except Exception as exc:  # noqa: BLE001 - nothing that arrives is dropped, however broken
            reason = exc.reason if isinstance(exc, ContractError) else Reason.NOT_JSON
            row = {"reason": reason.value, "detail": f"unreadable dead letter: {exc}"[:1000],
                   "stage": "stream", "source_topic": self.topic, "source_partition": self.partition,
                   "source_offset": offset, "ts": datetime.fromtimestamp(ingest_ms / 1000, UTC),
                   "payload": payload}
        self._rows.append(row)

    def _reset_buffers(self) -> None:
        self._rows = []

    def _compute(self, final: bool = False) -> None:
        rows, self._rows = self._rows, []
        if rows:
            self.pending["dead_letters"].append(pa.Table.from_pylist(rows, schema=T.DEAD_LETTERS.file_schema))
