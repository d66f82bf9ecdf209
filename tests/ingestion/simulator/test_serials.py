"""Unit serials: the documented format, read back one-to-one, and refused where they could not be ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingestion.simulator import UnitSerial, run_code
from ingestion.simulator.serials import SEQUENCE_WIDTH, TYPE_CODES, check_part, unit_serial
from schemas.contracts import UnitType

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)


@pytest.mark.parametrize("text,prefix,code,seq,unit_type", [
    ("ref-L1-20260105T060000Z-S42-C00001234", "ref-L1", "C", 1234, UnitType.CELL),
    ("ref-L1-cathode-20260105T060000Z-S42-SB000007", "ref-L1-cathode", "SB", 7, UnitType.SLURRY_BATCH),
    ("ref-L1-cathode-20260105T060000Z-S42-R0000042", "ref-L1-cathode", "R", 42, UnitType.ELECTRODE_ROLL),
    ("ref-L1-anode-20260105T060000Z-S42-STOCK01", "ref-L1-anode", "STOCK", 1, UnitType.ELECTRODE_ROLL),
])
def test_documented_examples_read_back(text, prefix, code, seq, unit_type):
    serial = UnitSerial.parse(text)
    assert (serial.prefix, serial.start, serial.seed, serial.code, serial.seq) == (prefix, T0, 42, code, seq)
    assert serial.unit_type is unit_type
    assert serial.run == "20260105T060000Z-S42"
    assert str(serial) == text


def test_run_code_is_utc_and_keeps_a_fraction_of_a_second():
    assert run_code(T0, 0) == "20260105T060000Z-S0"
    plus_one = datetime(2026, 1, 5, 7, 0, tzinfo=timezone(timedelta(hours=1)))
    assert run_code(plus_one, 7) == run_code(T0, 7)  # the same instant, written in UTC
    assert run_code(T0 + timedelta(microseconds=1500), 7) == "20260105T060000.001500Z-S7"
    with pytest.raises(ValueError, match="aware"):
        run_code(T0.replace(tzinfo=None), 1)
    with pytest.raises(ValueError, match="non-negative"):
        run_code(T0, -1)


_parts = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-", min_size=1, max_size=12)
_starts = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC))
_serials = st.builds(UnitSerial, prefix=st.builds(lambda a, b: f"{a}-{b}", _parts, _parts), start=_starts,
                     seed=st.integers(0, 2**128), code=st.sampled_from(sorted(TYPE_CODES)),
                     seq=st.integers(0, 10**12))


@given(_serials)
def test_every_serial_reads_back_to_itself(serial):
    """parse(str(s)) == s for every serial: the format is one-to-one, so no two runs share an id."""
    text = str(serial)
    assert UnitSerial.parse(text) == serial
    assert ":" not in text and "|" not in text and len(text) <= 200


@given(_serials, _serials)
def test_different_serials_are_different_ids(a, b):
    assert (str(a) == str(b)) == (a == b)


@pytest.mark.parametrize("text", [
    "leg-L1-C00000000",                                   # the old per-run numbering, without a run code
    "ref-L1-20260105T060000Z-S42-C000001234",             # more zeros than the type's width
    "ref-L1-20260105T060000Z-S042-C00001234",             # a seed with a leading zero
    "ref-L1-20261305T060000Z-S42-C00001234",              # month 13
    "ref-L1-20260105T060000-S42-C00001234",               # no Z: not UTC
    "ref-L1-20260105T060000Z-S42-X00001234",              # unknown type code
    "20260105T060000Z-S42-C00001234",                     # no site and line
    "ref-L1-20260105T060000Z-S42-C00001234:enter:stacking:1",  # an event id, not a unit id
])
def test_parse_refuses_what_the_simulator_does_not_make(text):
    with pytest.raises(ValueError):
        UnitSerial.parse(text)


def test_sequences_are_padded_and_grow_beyond_their_width():
    assert unit_serial("s-L1", "R", "C", 5).endswith("-C00000005")
    big = 10 ** SEQUENCE_WIDTH["SB"]
    assert UnitSerial.parse(unit_serial("s-L1-cathode", run_code(T0, 1), "SB", big)).seq == big


@pytest.mark.parametrize("bad", ["L1:2", "a|b", "line 1", ""])
def test_parts_that_would_break_event_ids_or_csv_parents_are_refused(bad):
    with pytest.raises(ValueError, match="cannot be part of a unit id"):
        check_part("line", bad)
