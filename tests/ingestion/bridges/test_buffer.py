"""The disk buffer on plain files: order, the bound and its policies, torn records, acknowledgement."""

from __future__ import annotations

import logging

import pytest

from ingestion.bridges.buffer import Appended, DiskBuffer, Record, encode_record
from ingestion.bridges.settings import FullPolicy


def rec(i: int, size: int = 100) -> Record:
    return Record("t", f"k{i}".encode(), i.to_bytes(4, "big") + b"x" * size, readings=i % 7 + 1)


def drain(buf: DiskBuffer, ack: bool = True) -> list[int]:
    """Everything handed out, in order, acknowledged as it goes."""
    out = []
    while (nxt := buf.next_unsent()) is not None:
        pos, r = nxt
        out.append(int.from_bytes(r.value[:4], "big"))
        if ack:
            buf.ack(pos)
    return out


def test_records_come_back_in_order_across_segments_and_a_restart(tmp_path):
    buf = DiskBuffer(tmp_path, max_bytes=1 << 20, segment_bytes=1000)
    for i in range(50):
        assert buf.append(rec(i)) is Appended.STORED
    assert buf.stats.segments > 3
    assert drain(buf, ack=False)[:5] == [0, 1, 2, 3, 4]
    buf.close()
    again = DiskBuffer(tmp_path, max_bytes=1 << 20, segment_bytes=1000)
    assert again.stats.pending_records == 50
    assert again.stats.pending_readings == sum(i % 7 + 1 for i in range(50))
    assert drain(again) == list(range(50))
    again.commit()
    assert again.stats.pending_records == 0 and again.stats.pending_bytes == 0
    # fully acknowledged closed segments are deleted; only the open one may remain
    assert len(list(tmp_path.glob("*.seg"))) <= 1


def test_a_restart_resumes_after_the_committed_cursor(tmp_path):
    buf = DiskBuffer(tmp_path, max_bytes=1 << 20, segment_bytes=1000)
    for i in range(30):
        buf.append(rec(i))
    got = []
    for _ in range(12):
        pos, r = buf.next_unsent()
        got.append(r)
        buf.ack(pos)
    buf.commit()
    buf.close()
    again = DiskBuffer(tmp_path, max_bytes=1 << 20, segment_bytes=1000)
    assert drain(again) == list(range(12, 30))


def test_out_of_order_acks_move_the_cursor_only_over_a_complete_prefix(tmp_path):
    buf = DiskBuffer(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 20)
    for i in range(5):
        buf.append(rec(i))
    handed = [buf.next_unsent() for _ in range(5)]
    buf.ack(handed[1][0])
    buf.ack(handed[3][0])
    assert buf.stats.pending_records == 5
    buf.unsent(handed[0][0])
    buf.unsent(handed[2][0])
    buf.unsent(handed[4][0])
    assert buf.in_flight == 0
    buf.rewind()
    # 1 and 3 were acknowledged: never handed out again
    assert drain(buf) == [0, 2, 4]
    assert buf.stats.pending_records == 0


def test_a_torn_last_record_is_dropped_counted_and_logged(tmp_path, caplog):
    buf = DiskBuffer(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 20)
    for i in range(3):
        buf.append(rec(i))
    buf.close()
    seg = next(tmp_path.glob("*.seg"))
    whole = seg.read_bytes()
    seg.write_bytes(whole + encode_record(rec(3))[:-7])  # the crash cut the fourth record short
    with caplog.at_level(logging.WARNING):
        again = DiskBuffer(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 20)
    assert again.stats.torn == 1
    assert "cut short" in caplog.text
    assert seg.read_bytes() == whole
    assert drain(again) == [0, 1, 2]


def test_a_flipped_byte_in_the_last_record_fails_its_crc(tmp_path):
    buf = DiskBuffer(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 20)
    for i in range(3):
        buf.append(rec(i))
    buf.close()
    seg = next(tmp_path.glob("*.seg"))
    data = bytearray(seg.read_bytes())
    data[-3] ^= 0xFF
    seg.write_bytes(bytes(data))
    again = DiskBuffer(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 20)
    assert again.stats.torn == 1
    assert drain(again) == [0, 1]


def _fill(buf: DiskBuffer, n: int) -> list[Appended]:
    return [buf.append(rec(i, size=1000)) for i in range(n)]


def test_block_policy_refuses_nothing_and_stores_nothing_while_full(tmp_path):
    buf = DiskBuffer(tmp_path, max_bytes=10_000, segment_bytes=2_000, policy=FullPolicy.BLOCK)
    results = _fill(buf, 20)
    stored = results.count(Appended.STORED)
    assert stored == 9 and set(results[stored:]) == {Appended.FULL}
    assert buf.stats.pending_bytes <= 10_000
    assert buf.stats.dropped_records == buf.stats.rejected_records == 0
    # once Kafka took some, there is room again
    for _ in range(3):
        pos, _r = buf.next_unsent()
        buf.ack(pos)
    assert buf.append(rec(99, size=1000)) is Appended.STORED
    assert drain(buf) == [3, 4, 5, 6, 7, 8, 99]


def test_reject_new_keeps_the_oldest(tmp_path):
    buf = DiskBuffer(tmp_path, max_bytes=10_000, segment_bytes=2_000, policy=FullPolicy.REJECT_NEW)
    results = _fill(buf, 20)
    assert results.count(Appended.REJECTED) == 11
    assert buf.stats.rejected_records == 11
    assert buf.stats.rejected_readings == sum(i % 7 + 1 for i in range(9, 20))
    assert drain(buf) == list(range(9))


def test_drop_oldest_keeps_the_newest_segment_by_segment(tmp_path):
    buf = DiskBuffer(tmp_path, max_bytes=10_000, segment_bytes=2_000, policy=FullPolicy.DROP_OLDEST)
    results = _fill(buf, 20)
    assert set(results) == {Appended.STORED}
    assert buf.stats.pending_bytes <= 10_000
    kept = drain(buf)
    assert kept == list(range(20 - len(kept), 20))  # a contiguous newest tail, in order
    assert buf.stats.dropped_records == 20 - len(kept)
    assert buf.stats.pending_records == 0


def test_drop_oldest_forgets_in_flight_records_of_the_dropped_segment(tmp_path):
    buf = DiskBuffer(tmp_path, max_bytes=10_000, segment_bytes=2_000, policy=FullPolicy.DROP_OLDEST)
    _fill(buf, 9)
    first = buf.next_unsent()
    _fill(buf, 5)  # drops the segment that holds the in-flight record
    buf.ack(first[0])  # a late acknowledgement of a dropped record changes nothing
    assert drain(buf)[-1] == 4
    assert buf.stats.pending_records == 0


@pytest.mark.parametrize("policy", list(FullPolicy))
def test_a_record_larger_than_the_buffer_is_refused_whatever_the_policy(tmp_path, policy):
    buf = DiskBuffer(tmp_path, max_bytes=5_000, segment_bytes=1_000, policy=policy)
    assert buf.append(rec(1, size=6_000)) is Appended.REJECTED
    assert buf.stats.rejected_records == 1
