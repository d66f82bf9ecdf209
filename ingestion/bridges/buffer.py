"""The bridges' disk buffer: an append-only journal of Kafka records, bounded in bytes, replayed in order.

Every record a bridge sends (a frame or a dead letter) is appended here first and sent from here, so the
order on disk is the order on the wire, and a Kafka outage only means the journal grows: when the broker
is back, the sender goes on from the oldest unacknowledged record, before anything newer.

On disk (one folder per bridge):

- ``<seq>.seg``: segment files, numbered in order. A record is ``length (u32) | crc32 (u32) | body``,
  big-endian, where body is ``topic length (u16) | topic | key length (i32, -1: no key) | key |
  readings (u32) | value``; the CRC covers the body. A segment is closed at ``segment_bytes`` and a new one
  started; a closed segment is deleted once Kafka acknowledged every record in it.
- ``cursor``: ``<seq> <offset>``, the first record not yet acknowledged, replaced atomically (write and
  rename) at each :meth:`DiskBuffer.commit`. A restarted bridge sends from there.

fsync policy: :meth:`DiskBuffer.commit` (the sink calls it once per flush) fsyncs the segment written
since the last commit, then writes the cursor. A process crash loses nothing that was appended (the
write reached the OS); a power cut loses at most what was appended since the last commit. With
``fsync=False`` the OS decides when data reaches the disk.

After a crash the last record of a segment may be torn (written in part): it is found by its length or
its CRC when the buffer opens, cut off with a log line and counted in :attr:`BufferStats.torn`; the
records before it are kept. Records between the cursor and a crash that Kafka had already acknowledged
(acknowledged after the last commit) are sent again: the at-least-once window is one commit interval.

The bound counts the unacknowledged bytes (from the cursor to the end); acknowledged records of the
open segment stay on disk until that segment closes, so the folder holds at most ``max_bytes`` plus
one segment. :class:`DiskBuffer` is plain file handling with no thread of its own and no Kafka: the sink
calls it under its lock.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from ingestion.bridges.settings import FullPolicy

log = logging.getLogger(__name__)

_HEAD = struct.Struct(">II")
_TOPIC = struct.Struct(">H")
_KEY = struct.Struct(">i")
_COUNT = struct.Struct(">I")
#: Largest record body accepted: a frame is at most a few MiB (the producer's max request size).
MAX_RECORD_BYTES = 64 * 1024**2

Position = tuple[int, int]
"""Where a record starts: (segment number, byte offset in the segment)."""


@dataclass(frozen=True)
class Record:
    """One Kafka record as journalled: topic, key, value, and the readings it carries (0: a dead letter)."""

    topic: str
    key: bytes | None
    value: bytes
    readings: int = 0


def encode_record(rec: Record) -> bytes:
    """The record's bytes on disk: header (length, CRC) and body."""
    topic = rec.topic.encode()
    key = b"" if rec.key is None else rec.key
    body = b"".join((_TOPIC.pack(len(topic)), topic, _KEY.pack(-1 if rec.key is None else len(key)), key,
                     _COUNT.pack(rec.readings), rec.value))
    return _HEAD.pack(len(body), zlib.crc32(body)) + body


def decode_body(body: bytes) -> Record:
    """The record of a body whose CRC already matched."""
    (n_topic,) = _TOPIC.unpack_from(body, 0)
    pos = _TOPIC.size
    topic = body[pos:pos + n_topic].decode()
    pos += n_topic
    (n_key,) = _KEY.unpack_from(body, pos)
    pos += _KEY.size
    key = None if n_key < 0 else body[pos:pos + n_key]
    pos += max(n_key, 0)
    (readings,) = _COUNT.unpack_from(body, pos)
    return Record(topic, key, body[pos + _COUNT.size:], readings)


class Appended(Enum):
    """What :meth:`DiskBuffer.append` did with a record."""

    STORED = "stored"
    #: Full under the ``block`` policy: nothing stored, try again once Kafka acknowledged some data.
    FULL = "full"
    #: Refused for good (``reject_new`` while full, or a record larger than the whole buffer); counted.
    REJECTED = "rejected"


@dataclass
class BufferStats:
    """What the buffer holds and what it lost on purpose (full policies) or found broken (torn records)."""

    pending_records: int = 0
    pending_readings: int = 0
    pending_bytes: int = 0
    torn: int = 0
    dropped_records: int = 0
    dropped_readings: int = 0
    rejected_records: int = 0
    rejected_readings: int = 0
    segments: int = 0


@dataclass
class _Segment:
    seq: int
    path: Path
    size: int = 0
    sealed: bool = False
    fd: int | None = field(default=None, repr=False)


@dataclass
class _InFlight:
    end: Position
    size: int
    readings: int
    acked: bool = False
    failed: bool = False


class DiskBuffer:
    """The journal of one bridge (see the module docstring). Not thread-safe: one owner, or a lock."""

    def __init__(self, path: Path, max_bytes: int, segment_bytes: int, policy: FullPolicy = FullPolicy.BLOCK,
                 fsync: bool = True):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.policy = FullPolicy(policy)
        self.fsync = fsync
        self.stats = BufferStats()
        self._segments: dict[int, _Segment] = {}
        self._active: _Segment | None = None
        self._dirty: set[int] = set()
        self._inflight: dict[Position, _InFlight] = {}
        self._cursor_written: Position | None = None
        self.path.mkdir(parents=True, exist_ok=True)
        self._open()

    # ------------------------------------------------------------------ opening and recovery

    def _open(self) -> None:
        for p in sorted(self.path.glob("*.seg")):
            if p.stem.isdigit():
                self._segments[int(p.stem)] = _Segment(int(p.stem), p, sealed=True)
        cursor = self._read_cursor()
        for seg in list(self._segments.values()):
            if cursor is not None and seg.seq < cursor[0]:
                self._delete(seg)  # acknowledged before the last stop
                continue
            seg.size = self._recover(seg)
            if seg.size == 0:
                self._delete(seg)
        first = min(self._segments, default=None)
        if cursor is None or cursor[0] not in self._segments:
            cursor = (first, 0) if first is not None else (0, 0)
        else:
            cursor = (cursor[0], min(cursor[1], self._segments[cursor[0]].size))
        self._ack: Position = cursor
        self._send: Position = cursor
        self._cursor_written = cursor
        for seg in sorted(self._segments.values(), key=lambda s: s.seq):
            start = cursor[1] if seg.seq == cursor[0] else 0
            for _, size, rec in self._scan(seg, start):
                self.stats.pending_records += 1
                self.stats.pending_readings += rec.readings
                self.stats.pending_bytes += size
        self.stats.segments = len(self._segments)
        if self.stats.pending_records:
            log.info("disk buffer %s: %d record(s) (%d readings, %d bytes) not yet sent to Kafka from before; "
                     "sending them first", self.path, self.stats.pending_records, self.stats.pending_readings,
                     self.stats.pending_bytes)

    def _read_cursor(self) -> Position | None:
        try:
            seq, off = (self.path / "cursor").read_text().split()
            return int(seq), int(off)
        except (FileNotFoundError, ValueError):
            return None

    def _recover(self, seg: _Segment) -> int:
        """Check every record of a segment; cut a torn or corrupt tail off. Returns the good length."""
        good = 0
        data = seg.path.read_bytes()
        while good < len(data):
            problem = None
            if len(data) - good < _HEAD.size:
                problem = "a header cut short"
            else:
                length, crc = _HEAD.unpack_from(data, good)
                body = data[good + _HEAD.size:good + _HEAD.size + length]
                if length > MAX_RECORD_BYTES or len(body) < length:
                    problem = f"a record cut short ({len(body)} of {length} bytes)"
                elif zlib.crc32(body) != crc:
                    problem = "a record whose CRC does not match"
            if problem:
                self.stats.torn += 1
                log.warning("disk buffer %s: %s at byte %d of segment %s (a crash while writing); the %d byte(s) "
                            "from there are dropped, the %d before kept", self.path, problem, good, seg.path.name,
                            len(data) - good, good)
                with open(seg.path, "r+b") as fh:
                    fh.truncate(good)
                break
            good += _HEAD.size + length
        return good

    def _scan(self, seg: _Segment, start: int):
        """(offset, size on disk, record) of each record of ``seg`` from ``start``."""
        off = start
        while off < seg.size:
            rec, size = self._read_at(seg, off)
            yield off, size, rec
            off += size

    def _read_at(self, seg: _Segment, off: int) -> tuple[Record, int]:
        with open(seg.path, "rb") as fh:
            fh.seek(off)
            head = fh.read(_HEAD.size)
            length, _crc = _HEAD.unpack(head)
            body = fh.read(length)
        return decode_body(body), _HEAD.size + length

    # ------------------------------------------------------------------ appending

    @property
    def full(self) -> bool:
        return self.stats.pending_bytes >= self.max_bytes

    def append(self, rec: Record) -> Appended:
        """Journal one record at the end; the full policy applies when it does not fit."""
        data = encode_record(rec)
        if len(data) > self.max_bytes:
            self._refuse(rec, f"a record of {len(data):,} bytes is larger than the whole buffer")
            return Appended.REJECTED
        while self.stats.pending_bytes + len(data) > self.max_bytes:
            if self.policy is FullPolicy.BLOCK:
                return Appended.FULL
            if self.policy is FullPolicy.REJECT_NEW:
                self._refuse(rec, "the buffer is full (full_policy reject_new)")
                return Appended.REJECTED
            self._drop_oldest()
        seg = self._active
        if seg is None or seg.size >= self.segment_bytes:
            seg = self._roll()
        os.write(seg.fd, data)
        seg.size += len(data)
        self._dirty.add(seg.seq)
        self.stats.pending_records += 1
        self.stats.pending_readings += rec.readings
        self.stats.pending_bytes += len(data)
        return Appended.STORED

    def _refuse(self, rec: Record, why: str) -> None:
        self.stats.rejected_records += 1
        self.stats.rejected_readings += rec.readings
        if self.stats.rejected_records == 1 or self.stats.rejected_records % 1000 == 0:
            log.error("disk buffer %s: record to %s refused: %s (%d refused so far)", self.path, rec.topic, why,
                      self.stats.rejected_records)

    def _roll(self) -> _Segment:
        if self._active is not None:
            self._seal(self._active)
        seq = max(self._segments, default=self._ack[0] - 1) + 1
        seg = _Segment(seq, self.path / f"{seq:012d}.seg")
        seg.fd = os.open(seg.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._segments[seq] = seg
        self._active = seg
        self.stats.segments = len(self._segments)
        if not self._segments.get(self._ack[0]):
            self._ack = self._send = (seq, 0)
        return seg

    def _seal(self, seg: _Segment) -> None:
        if seg.fd is not None:
            if self.fsync and seg.seq in self._dirty:
                os.fsync(seg.fd)
            self._dirty.discard(seg.seq)
            os.close(seg.fd)
            seg.fd = None
        seg.sealed = True
        if self._active is seg:
            self._active = None
        self._normalize()

    def _drop_oldest(self) -> None:
        """Make room by deleting the segment of the oldest unacknowledged record (policy drop_oldest)."""
        seg = self._segments[self._ack[0]]
        if not seg.sealed:
            self._seal(seg)
            seg = self._segments[self._ack[0]]
        records = readings = size = 0
        for _, n, rec in self._scan(seg, self._ack[1]):
            records += 1
            readings += rec.readings
            size += n
        self.stats.dropped_records += records
        self.stats.dropped_readings += readings
        self.stats.pending_records -= records
        self.stats.pending_readings -= readings
        self.stats.pending_bytes -= size
        log.warning("disk buffer %s full: dropped its oldest %d record(s) (%d readings) to make room "
                    "(full_policy drop_oldest; %d readings dropped so far)", self.path, records, readings,
                    self.stats.dropped_readings)
        for pos in [p for p in self._inflight if p[0] == seg.seq]:
            del self._inflight[pos]
        self._delete(seg)
        nxt = self._next_seq(seg.seq)
        self._ack = (nxt, 0)
        if self._send[0] <= seg.seq:
            self._send = self._ack

    def _delete(self, seg: _Segment) -> None:
        if seg.fd is not None:
            os.close(seg.fd)
            seg.fd = None
        seg.path.unlink(missing_ok=True)
        self._segments.pop(seg.seq, None)
        self._dirty.discard(seg.seq)
        if self._active is seg:
            self._active = None
        self.stats.segments = len(self._segments)

    def _next_seq(self, seq: int) -> int:
        later = [s for s in self._segments if s > seq]
        return min(later) if later else seq + 1

    def _normalize(self) -> None:
        """Move the cursors past the end of sealed segments."""
        for name in ("_ack", "_send"):
            seq, off = getattr(self, name)
            seg = self._segments.get(seq)
            while seg is not None and seg.sealed and off >= seg.size and self._next_seq(seq) in self._segments:
                seq, off = self._next_seq(seq), 0
                seg = self._segments.get(seq)
            setattr(self, name, (seq, off))

    # ------------------------------------------------------------------ sending and acknowledging

    def next_unsent(self) -> tuple[Position, Record] | None:
        """The next record not yet handed out for sending (in journal order), or None when all are out."""
        while True:
            self._normalize()
            seq, off = self._send
            seg = self._segments.get(seq)
            if seg is None or off >= seg.size:
                return None
            rec, size = self._read_at(seg, off)
            self._send = (seq, off + size)
            entry = self._inflight.get((seq, off))
            if (seq, off) < self._ack or (entry is not None and entry.acked):
                continue  # acknowledged out of order before a rewind: never sent twice
            self._inflight[(seq, off)] = _InFlight((seq, off + size), size, rec.readings)
            return (seq, off), rec

    @property
    def in_flight(self) -> int:
        """Records handed out and not yet acknowledged."""
        return sum(1 for e in self._inflight.values() if not (e.acked or e.failed))

    def ack(self, pos: Position) -> None:
        """Kafka acknowledged the record at ``pos``; the cursor moves over every acknowledged prefix."""
        entry = self._inflight.get(pos)
        if entry is None or entry.acked:
            return  # its segment was dropped meanwhile, or a repeated callback
        entry.acked = True
        while True:
            self._normalize()
            head = self._inflight.get(self._ack)
            if head is None or not head.acked:
                break
            del self._inflight[self._ack]
            self._ack = head.end
            self.stats.pending_records -= 1
            self.stats.pending_readings -= head.readings
            self.stats.pending_bytes -= head.size

    def unsent(self, pos: Position) -> None:
        """Sending the record at ``pos`` failed for good: it is handed out again after :meth:`rewind`."""
        entry = self._inflight.get(pos)
        if entry is not None and not entry.acked:
            entry.failed = True

    def rewind(self) -> None:
        """Hand out again every record not acknowledged (after a send failed): from the oldest, in order."""
        self._inflight = {p: e for p, e in self._inflight.items() if e.acked}
        self._send = self._ack

    def commit(self) -> None:
        """fsync what was appended, record the cursor, delete segments Kafka acknowledged in full."""
        self._normalize()
        if self.fsync:
            for seq in list(self._dirty):
                seg = self._segments.get(seq)
                if seg is not None and seg.fd is not None:
                    os.fsync(seg.fd)
        self._dirty.clear()
        if self._ack != self._cursor_written:
            tmp = self.path / "cursor.tmp"
            tmp.write_text(f"{self._ack[0]} {self._ack[1]}\n")
            os.replace(tmp, self.path / "cursor")
            self._cursor_written = self._ack
        for seg in [s for s in self._segments.values() if s.sealed and s.seq < self._ack[0]]:
            self._delete(seg)

    def close(self) -> None:
        """Commit and close the files; unsent records stay for the next start."""
        self.commit()
        for seg in list(self._segments.values()):
            if seg.fd is not None:
                if self.fsync:
                    os.fsync(seg.fd)
                os.close(seg.fd)
                seg.fd = None
                seg.sealed = True
        self._active = None
