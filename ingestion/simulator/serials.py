"""Unit serials: ids that no other run of the simulator can produce, as serial numbers in a plant.

A plant never hands out a serial twice: a cell's serial names where it was made, what it is, the
production run it belongs to and its place in that run, and it stays valid for the cell's whole life.
Numbering units from zero in every run would make a second run (or a restart) reuse the first one's
ids, and genealogy joined on them would mix cells of different runs. So every unit id carries the
**run code**: the simulated start (UTC) and the seed, the two inputs that, with the plant, decide
everything the run produces::

    <site>-<line>[-<route>]-<run code>-<type code><sequence>
    run code  = <YYYYMMDD>T<HHMMSS>[.ffffff]Z-S<seed>

    ref-L1-20260105T060000Z-S42-C00001234          cell 1234 of line L1
    ref-L1-cathode-20260105T060000Z-S42-SB000007   slurry batch 7 of the cathode route
    ref-L1-cathode-20260105T060000Z-S42-R0000042   electrode roll 42 of the cathode route
    ref-L1-anode-20260105T060000Z-S42-STOCK01      roll 1 taken from stock at the start of the run

Type codes: ``SB`` slurry batch, ``R`` electrode roll, ``STOCK`` electrode roll from stock (no
history in the run), ``C`` cell. Sequences are zero-padded to what a year of the reference plant
needs (6, 7, 2 and 8 digits) and simply grow longer beyond that. The fraction of a second appears
only when the start has one.

The same plant, seed and start give the same ids byte for byte; a different start or seed gives ids
that differ in the run code, so they cannot collide. :meth:`UnitSerial.parse` reads an id back and
``str()`` of the result is the id again: the format is one-to-one, which is what makes that true.
Ids are a function of (site, line, route, seed, start) only: two runs that differ just in the tick
or in a plant file's dynamics under the same site code get the same ids for different data, which
the warehouse's ``duplicate_events`` view reports as conflicting copies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from schemas.contracts import UnitType

#: Type code -> unit type.
TYPE_CODES: dict[str, UnitType] = {
    "SB": UnitType.SLURRY_BATCH,
    "R": UnitType.ELECTRODE_ROLL,
    "STOCK": UnitType.ELECTRODE_ROLL,
    "C": UnitType.CELL,
}
#: Zero-padding of each type's sequence: a year of the reference plant (30 batches, 120 rolls and
#: 3,600 cells an hour per line) fits, so ids of a run sort in production order for that long.
SEQUENCE_WIDTH = {"SB": 6, "R": 7, "STOCK": 2, "C": 8}

#: Characters a site, line or route may use in a serial: ':' separates the parts of an event id and
#: '|' the parent ids of a CSV replay, so neither (nor blanks) may appear inside a unit id.
_PART = re.compile(r"^[A-Za-z0-9_.\-]+$")
_SERIAL = re.compile(
    r"^(?P<prefix>[A-Za-z0-9_.\-]+)-(?P<start>\d{8}T\d{6}(?:\.\d{6})?Z)-S(?P<seed>0|[1-9]\d*)"
    r"-(?P<code>SB|R|STOCK|C)(?P<seq>\d+)$"
)


def run_code(start: datetime, seed: int) -> str:
    """The run code of a simulation: its start in UTC (to the microsecond if it has one) and its seed."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware (UTC)")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    utc = start.astimezone(UTC)
    # Not strftime: its %Y does not pad years before 1000 on every platform, and the width matters.
    stamp = (f"{utc.year:04d}{utc.month:02d}{utc.day:02d}T{utc.hour:02d}{utc.minute:02d}{utc.second:02d}"
             + (f".{utc.microsecond:06d}" if utc.microsecond else ""))
    return f"{stamp}Z-S{seed}"


def check_part(name: str, value: str) -> None:
    """Raise ``ValueError`` if a site, line or route cannot be part of a serial."""
    if not _PART.match(value):
        raise ValueError(f"{name} {value!r} cannot be part of a unit id: use letters, digits, '_', '.' or '-'")


def unit_serial(prefix: str, run: str, code: str, seq: int) -> str:
    """The id of unit ``seq`` of type ``code`` made at ``prefix`` (site-line[-route]) in run ``run``.

    The hot path of the simulator: ``prefix`` and ``run`` are checked once where they are built
    (:func:`check_part`, :func:`run_code`), not here.
    """
    return f"{prefix}-{run}-{code}{seq:0{SEQUENCE_WIDTH[code]}d}"


@dataclass(frozen=True)
class UnitSerial:
    """A unit id taken apart: where (site-line[-route]), which run (start, seed), what and which one."""

    prefix: str
    start: datetime
    seed: int
    code: str
    seq: int

    @property
    def unit_type(self) -> UnitType:
        return TYPE_CODES[self.code]

    @property
    def run(self) -> str:
        return run_code(self.start, self.seed)

    def __str__(self) -> str:
        return unit_serial(self.prefix, self.run, self.code, self.seq)

    @classmethod
    def parse(cls, unit_id: str) -> UnitSerial:
        """Read a simulator unit id back; ``ValueError`` if it does not have the serial format."""
        m = _SERIAL.match(unit_id)
        if m is None:
            raise ValueError(f"{unit_id!r} is not a simulator unit serial "
                             "(<site>-<line>[-<route>]-<YYYYMMDD>T<HHMMSS>Z-S<seed>-<type><sequence>)")
        s = m["start"]
        start = datetime(int(s[0:4]), int(s[4:6]), int(s[6:8]), int(s[9:11]), int(s[11:13]), int(s[13:15]),
                         int(s[16:22]) if s[15] == "." else 0, tzinfo=UTC)
        serial = cls(m["prefix"], start, int(m["seed"]), m["code"], int(m["seq"]))
        if str(serial) != unit_id:  # e.g. a sequence with more zeros than its width: not one we made
            raise ValueError(f"{unit_id!r} is not in the canonical serial form {str(serial)!r}")
        return serial
