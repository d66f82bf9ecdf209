"""Units, scrap, yield and first-pass yield per line and stage per window, from production events."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from transforms.features.windows import (
    _EPOCH,
    _MS,
    DEFAULT_LATENESS_MS,
    DEFAULT_WIDTH_MS,
    ClockSnapshot,
    Columns,
    Emitted,
    _Clock,
    _concat,
    _ratio,
)

if TYPE_CHECKING:
    from schemas.contracts import ProductionEvent

_QUALITY_COUNTERS = (
    "units_in", "units_out", "good", "scrapped", "reworked", "first_pass_good", "first_pass_scrapped",
    "grade_a", "grade_b", "grade_c", "grade_other",
)
(_IN, _OUT, _GOOD, _SCRAP, _REWORK, _FP_GOOD, _FP_SCRAP, _GA, _GB, _GC, _GOTHER) = range(len(_QUALITY_COUNTERS))
_GRADE_SLOT = {"A": _GA, "B": _GB, "C": _GC}

#: Output columns of :class:`QualityWindows` and :func:`quality_windows`.
QUALITY_COLUMNS = ("site", "line", "stage", "window_start", "window_end", *_QUALITY_COUNTERS, "yield",
                   "first_pass_yield", "scrap_by_reason")


@dataclass(frozen=True, slots=True)
class QualityWindowsSnapshot:
    """The state of a :class:`QualityWindows`, its tuple-keyed dicts as lists of rows.

    ``open``: ``[window, site, line, stage, [counters in _QUALITY_COUNTERS order]]``;
    ``scrap``: ``[window, site, line, stage, {reason: count}]``; ``units``: ``[unit_id, stage,
    visits, scrapped in current visit, last event time]``, oldest first (the eviction order).
    """

    clock: ClockSnapshot
    rework_memory_ms: int
    counters: list[str]
    open: list[list[Any]]
    scrap: list[list[Any]]
    units: list[list[Any]]
    late_total: int


class QualityWindows:
    """Units, scrap, yield and first-pass yield per line and stage per window, from production events.

    Definitions, all per (window, site, line, stage), each event counted in the window of its event
    time:

    * ``units_in`` / ``units_out``: enter / leave events.
    * ``scrapped``: scrap events; ``scrap_by_reason``: the same per reason, as a dict.
    * ``good``: leave events of units not scrapped at that stage during their current visit (a
      scrap must precede the leave in event time to take the unit out of ``good``).
    * ``reworked``: units entering a stage for the second time (rework = a second visit); counted
      once per unit, at that second entry.
    * ``first_pass_good`` / ``first_pass_scrapped``: good leaves / scraps on a unit's first visit.
    * ``yield`` = good / (good + scrapped).
    * ``first_pass_yield`` = (first_pass_good - reworked) / (first_pass_good + first_pass_scrapped),
      clipped at 0: a unit that left good and came back for rework was not good first time. The
      rework is seen at the later re-entry, so the ratio is exact over any span long enough to hold
      the rework loop; rollups must recompute it from the summed counters, which are additive.
    * ``grade_a``/``grade_b``/``grade_c``/``grade_other``: grade events (the EOL grading at aging_eol).

    Visit numbers need one unit's events in event-time order. ``plant.events.v1`` is keyed by line,
    which keeps them so (a unit never changes line); disorder between units is fine. Per-unit visit state is kept for
    ``rework_memory_ms`` of event time after the unit's last event (bounded by the units passing in
    that span, not by events); a rework later than that counts as a first visit. Late events update
    the visit state but no window. Events are few (one per unit and stage, not per reading), so they
    are folded in a Python loop.
    """

    def __init__(self, width_ms: int = DEFAULT_WIDTH_MS, allowed_lateness_ms: int = DEFAULT_LATENESS_MS,
                 rework_memory_ms: int = 6 * 3_600_000):
        self._clock = _Clock(width_ms, allowed_lateness_ms)
        self.rework_memory_ms = int(rework_memory_ms)
        self._open: dict[tuple[int, str, str, str], list[int]] = {}
        self._scrap: dict[tuple[int, str, str, str], dict[str, int]] = {}
        # (unit_id, stage) -> [visits, scrapped in current visit, last event time]
        self._units: OrderedDict[tuple[str, str], list[Any]] = OrderedDict()
        self.late_total = 0

    @property
    def watermark_ms(self) -> int | None:
        return self._clock.watermark

    @property
    def tracked_units(self) -> int:
        return len(self._units)

    def push_events(self, events: Sequence[ProductionEvent]) -> Emitted:
        """Push typed production events (the stream agent's path)."""
        return self.push(
            [(e.ts - _EPOCH) // _MS for e in events], [e.line for e in events], [str(e.stage) for e in events],
            [str(e.kind) for e in events], [e.unit_id for e in events], [e.reason for e in events],
            [e.grade for e in events], [e.site for e in events],
        )

    def push(self, ts_ms: Any, line: Sequence[str], stage: Sequence[str], kind: Sequence[str],
             unit_id: Sequence[str], reason: Sequence[str | None] | None = None,
             grade: Sequence[str | None] | None = None, site: Sequence[str] | None = None) -> Emitted:
        """Fold a batch of events in (in event-time order) and return the windows that closed."""
        ts = np.asarray(ts_ms, dtype=np.int64)
        n = len(ts)
        if not (len(line) == len(stage) == len(kind) == len(unit_id) == n):
            raise ValueError("event columns must have one length")
        reason = reason if reason is not None else [None] * n
        grade = grade if grade is not None else [None] * n
        site = site if site is not None else [""] * n
        self._clock.check_range(ts)
        wins = ts // self._clock.width
        late = self._clock.late(wins)
        units = self._units
        for i in np.argsort(ts, kind="stable").tolist():
            t = int(ts[i])
            st = str(stage[i])
            k = str(kind[i])
            ukey = (str(unit_id[i]), st)
            state = units.get(ukey)
            if state is None:
                state = units[ukey] = [0, False, t]
            else:
                units.move_to_end(ukey)
                state[2] = max(state[2], t)
            counters = None
            if not late[i]:
                wkey = (int(wins[i]), str(site[i]), str(line[i]), st)
                counters = self._open.get(wkey)
                if counters is None:
                    counters = self._open[wkey] = [0] * len(_QUALITY_COUNTERS)
            if k == "enter":
                state[0] += 1
                state[1] = False
                if counters is not None:
                    counters[_IN] += 1
                    if state[0] == 2:
                        counters[_REWORK] += 1
            elif k == "leave":
                if counters is not None:
                    counters[_OUT] += 1
                    if not state[1]:
                        counters[_GOOD] += 1
                        if state[0] <= 1:
                            counters[_FP_GOOD] += 1
            elif k == "scrap":
                state[1] = True
                if counters is not None:
                    counters[_SCRAP] += 1
                    if state[0] <= 1:
                        counters[_FP_SCRAP] += 1
                    by_reason = self._scrap.setdefault(wkey, {})
                    r = str(reason[i]) if reason[i] is not None else "unknown"
                    by_reason[r] = by_reason.get(r, 0) + 1
            elif k == "grade" and counters is not None:
                counters[_GRADE_SLOT.get(str(grade[i]).upper(), _GOTHER)] += 1
        self.late_total += int(np.count_nonzero(late))
        if n:
            self._clock.advance(int(ts.max()))
            horizon = self._clock.max_ts - self.rework_memory_ms
            while units and next(iter(units.values()))[2] < horizon:
                units.popitem(last=False)
        return Emitted(self._close(self._clock.closed_before), late)

    def flush_all(self) -> Emitted:
        """Close every open window; later events for them are late."""
        if not self._open:
            return Emitted(self._close(None), np.zeros(0, dtype=bool))
        last = max(key[0] for key in self._open)
        self._clock.close_through(last)
        return Emitted(self._close(last + 1), np.zeros(0, dtype=bool))

    def snapshot(self) -> QualityWindowsSnapshot:
        """The state as plain lists (copies: the snapshot does not change with later pushes)."""
        return QualityWindowsSnapshot(
            self._clock.snapshot(), self.rework_memory_ms, list(_QUALITY_COUNTERS),
            [[*key, list(counts)] for key, counts in self._open.items()],
            [[*key, dict(by_reason)] for key, by_reason in self._scrap.items()],
            [[*key, visits, scrapped, last] for key, (visits, scrapped, last) in self._units.items()],
            self.late_total)

    @classmethod
    def restore(cls, snap: QualityWindowsSnapshot) -> QualityWindows:
        """The instance the snapshot was taken of."""
        if list(snap.counters) != list(_QUALITY_COUNTERS):
            # Counters are stored by position: a snapshot of another list would land in the wrong ones.
            raise ValueError(f"snapshot quality windows: counters {snap.counters}, expected {list(_QUALITY_COUNTERS)}")
        q = cls(snap.clock.width_ms, snap.clock.lateness_ms, int(snap.rework_memory_ms))
        q._clock = _Clock.restore(snap.clock)
        for win, site, line, stage, counts in snap.open:
            if len(counts) != len(_QUALITY_COUNTERS):
                raise ValueError(f"snapshot quality windows: {len(counts)} counters in an open window")
            q._open[(int(win), str(site), str(line), str(stage))] = [int(c) for c in counts]
        for win, site, line, stage, by_reason in snap.scrap:
            q._scrap[(int(win), str(site), str(line), str(stage))] = {str(r): int(n) for r, n in by_reason.items()}
        for unit_id, stage, visits, scrapped, last in snap.units:
            q._units[(str(unit_id), str(stage))] = [int(visits), bool(scrapped), int(last)]
        q.late_total = int(snap.late_total)
        return q

    def _close(self, before: int | None) -> Columns:
        width = self._clock.width
        closing = sorted(k for k in self._open if before is not None and k[0] < before)
        counts = np.array([self._open.pop(k) for k in closing], dtype=np.int64).reshape(-1, len(_QUALITY_COUNTERS))
        start = np.array([k[0] * width for k in closing], dtype=np.int64)
        rows: Columns = {
            "site": np.array([k[1] for k in closing], dtype=object),
            "line": np.array([k[2] for k in closing], dtype=object),
            "stage": np.array([k[3] for k in closing], dtype=object),
            "window_start": start,
            "window_end": start + width,
        }
        for j, name in enumerate(_QUALITY_COUNTERS):
            rows[name] = counts[:, j]
        rows["yield"] = _ratio(rows["good"], rows["good"] + rows["scrapped"])
        rows["first_pass_yield"] = _ratio(np.maximum(rows["first_pass_good"] - rows["reworked"], 0),
                                          rows["first_pass_good"] + rows["first_pass_scrapped"])
        by_reason = np.empty(len(closing), dtype=object)
        by_reason[:] = [dict(sorted(self._scrap.pop(k, {}).items())) for k in closing]
        rows["scrap_by_reason"] = by_reason
        return rows


def quality_windows(ts_ms: Any, line: Sequence[str], stage: Sequence[str], kind: Sequence[str],
                    unit_id: Sequence[str], reason: Sequence[str | None] | None = None,
                    grade: Sequence[str | None] | None = None, site: Sequence[str] | None = None,
                    width_ms: int = DEFAULT_WIDTH_MS) -> Columns:
    """Quality windows of a complete batch of events, the rows the stream emits."""
    q = QualityWindows(width_ms)
    return _concat([q.push(ts_ms, line, stage, kind, unit_id, reason, grade, site).rows, q.flush_all().rows])
