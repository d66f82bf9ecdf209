"""Edge validation: check data against the contract *and* the asset model before it reaches Kafka.

The contract decoders say whether a message is well formed; the edge also knows the plant, so it
refuses readings of sensors the asset model does not list, units that differ from the model's,
and timestamps too far in the future or past to be true (a gateway with a broken clock). Refused
input becomes a :class:`schemas.contracts.DeadLetter` with its reason; the rest flows on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from schemas.contracts import (
    AssetEntry,
    ContractError,
    DecodedFrame,
    ProductionEvent,
    Reading,
    Reason,
)


@dataclass(frozen=True)
class EdgeLimits:
    """How far from the edge's clock an event time may be."""

    max_future_s: float = 300.0
    max_past_s: float = 7 * 86_400.0


class EdgeValidator:
    """Validates readings, frames and events against one plant's asset model."""

    def __init__(self, sensors: Mapping[str, AssetEntry], limits: EdgeLimits | None = None):
        self.sensors = sensors
        self.limits = limits or EdgeLimits()

    def _window_ms(self, now: datetime) -> tuple[int, int]:
        now_ms = int(now.timestamp() * 1000)
        return now_ms - int(self.limits.max_past_s * 1000), now_ms + int(self.limits.max_future_s * 1000)

    def check_reading(self, reading: Reading, now: datetime | None = None) -> None:
        """Raise :class:`ContractError` if the reading does not fit the plant."""
        entry = self.sensors.get(reading.sensor_id)
        if entry is None:
            raise ContractError(Reason.UNKNOWN_SENSOR, f"sensor {reading.sensor_id!r} is not in the asset model")
        if reading.unit is not None and reading.unit != entry.unit:
            raise ContractError(Reason.UNIT_MISMATCH,
                                f"sensor {reading.sensor_id!r} reports {reading.unit!r}, model says {entry.unit!r}")
        lo, hi = self._window_ms(now or datetime.now(UTC))
        ts_ms = int(reading.ts.timestamp() * 1000)
        if not lo <= ts_ms <= hi:
            raise ContractError(Reason.TIMESTAMP_OUT_OF_RANGE,
                                f"timestamp {reading.ts.isoformat()} is outside the accepted window")

    def check_frame(self, frame: DecodedFrame, now: datetime | None = None) -> None:
        """Raise :class:`ContractError` for the whole frame if any of its readings does not fit.

        A frame is one message: it is accepted or dead-lettered whole, so its bytes stay intact.
        """
        unknown = [s for s in frame.sensors if s not in self.sensors]
        if unknown:
            raise ContractError(Reason.UNKNOWN_SENSOR,
                                f"{len(unknown)} sensor(s) not in the asset model, e.g. {unknown[0]!r}")
        if len(frame) and not np.isfinite(frame.value).all():
            raise ContractError(Reason.NON_FINITE, f"{int((~np.isfinite(frame.value)).sum())} value(s) are NaN "
                                "or infinite")
        if len(frame):
            lo, hi = self._window_ms(now or datetime.now(UTC))
            bad = (frame.ts_ms < lo) | (frame.ts_ms > hi)
            if bad.any():
                first = int(frame.ts_ms[np.argmax(bad)])
                raise ContractError(Reason.TIMESTAMP_OUT_OF_RANGE,
                                    f"{int(bad.sum())} reading(s) outside the accepted window, e.g. ts_ms={first}")

    def check_event(self, event: ProductionEvent, now: datetime | None = None) -> None:
        """Raise :class:`ContractError` if the event time is out of range."""
        lo, hi = self._window_ms(now or datetime.now(UTC))
        if not lo <= int(event.ts.timestamp() * 1000) <= hi:
            raise ContractError(Reason.TIMESTAMP_OUT_OF_RANGE,
                                f"timestamp {event.ts.isoformat()} is outside the accepted window")
