"""A recording fake of the bridge sink, for unit tests of the MQTT decoders (no Kafka)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from schemas.contracts import Reason


@dataclass
class RecordingSink:
    """Keeps every call, in order; thread-safe like the real sink (paho calls from its own thread)."""

    readings: list[tuple[str, int, float, int]] = field(default_factory=list)
    rejects: list[tuple[Reason, str, bytes, str | None]] = field(default_factory=list)
    bad: list[tuple[list[str], int]] = field(default_factory=list)
    flushes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reading(self, sensor_id: str, ts_ms: int, value: float, quality: int = 0) -> None:
        with self._lock:
            self.readings.append((sensor_id, ts_ms, value, quality))

    def reject(self, reason: Reason, detail: str, payload: bytes = b"", key: str | None = None) -> None:
        with self._lock:
            self.rejects.append((reason, detail, payload, key))

    def gap(self, sensor_ids: list[str], ts_ms: int, reason: Reason, detail: str, payload: bytes = b"") -> None:
        raise AssertionError("the MQTT bridge never reports gaps")

    def mark_bad(self, sensor_ids: list[str], ts_ms: int) -> None:
        with self._lock:
            self.bad.append((list(sensor_ids), ts_ms))

    def flush(self) -> None:
        with self._lock:
            self.flushes += 1

    def reasons(self) -> list[Reason]:
        with self._lock:
            return [r[0] for r in self.rejects]
