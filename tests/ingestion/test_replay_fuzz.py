"""Fuzzing the replay readers: generated CSV and Parquet files that are wrong in every way we could think of.

Property-based (hypothesis). CSV files: reading, event, partial, duplicated or random headers; cells of
odd unicode, NULs, numbers out of every range, timestamps as text, epoch milliseconds of any size or
Unicode digits, fields of megabytes; encoded as UTF-8, UTF-8 with a BOM, Latin-1 or UTF-16, or with
invalid UTF-8 bytes spliced in; plus empty files and raw bytes. Parquet files: reading and event
columns of the wrong types (integers, booleans, binary, lists, structs, decimals, dates, timestamps in
every unit, with and without zone, beyond year 9999), missing columns, empty tables; and valid files
truncated anywhere.

The contract (``ingestion/replay.py``): a file that cannot be replayed at all raises ``ReplayError``
(a one-line message); otherwise every row is either sent or dead-lettered with its reason, so
rows == sent + dead letters, and nothing else is ever raised. The replayer sends to a real broker
(the session's). Through ``gigapulse replay`` the same files give exit 0 or one line, never a traceback;
with Kafka unreachable, a file that cannot be replayed is named before the broker is.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gigapulse.cli import main
from ingestion.producer import PlantProducer
from ingestion.replay import EVENT_REQUIRED, READING_COLUMNS, Replayer, ReplayError
from ingestion.settings import ProducerSettings

pytestmark = pytest.mark.integration

#: Examples per run of each property: sized for the whole file to take well under a minute.
EXAMPLES = int(os.environ.get("GIGAPULSE_FUZZ_EXAMPLES", "30"))
EVENT_COLUMNS = (*EVENT_REQUIRED, "v", "value", "parent_ids", "reason", "grade")
NAMES = (*READING_COLUMNS, *EVENT_COLUMNS, "", "timestamp", "Sensor_ID", "\ufeffsensor_id", "é", "a\x00b")
CELLS = ["", "1", "-1", "1.5", "nan", "NaN", "inf", "-inf", "1e309", "0x10", "²", "٣", "9" * 5000,
         "99999999999999999999", "1767592800000", "-62135596800001", "2026-01-05T06:00:00Z",
         "2026-01-05T06:00:00", "2026-02-30T00:00:00Z", "9999-12-31T23:59:59.999Z", "now", "good", "bad",
         "uncertain", "degC", "ref.l1.coat.coater-1.temp", "a\x00b", "\x00", "\"", "\"\"", ",", "\n", "\r\n",
         "\u202e", "\U0001f600", "null", "None", "a|b|", "|", "[1, 2]", "{}", "true"]
TRIED = {"csv": 0, "parquet": 0, "bytes": 0, "cli": 0, "cli-dead": 0}


def _cell(draw) -> str:
    kind = draw(st.integers(0, 19))
    if kind == 0:  # a field of megabytes, now and then
        return draw(st.sampled_from(["x", "é", "\x00", "1"])) * draw(st.sampled_from([70_000, 1 << 20, 3 << 20]))
    if kind < 4:
        return draw(st.text(max_size=30))
    if kind < 6:
        return str(draw(st.integers()))
    return draw(st.sampled_from(CELLS))


def _quote(cell: str) -> str:
    return '"' + cell.replace('"', '""') + '"' if any(c in cell for c in ',"\r\n') else cell


@st.composite
def csv_files(draw) -> tuple[str, bytes]:
    header = draw(st.one_of(
        st.just(list(READING_COLUMNS[:3])), st.just(list(READING_COLUMNS)), st.just(list(EVENT_REQUIRED)),
        st.just(list(EVENT_COLUMNS)), st.lists(st.sampled_from(NAMES), max_size=8),
        st.lists(st.text(max_size=10), max_size=4)))
    rows = []
    for _ in range(draw(st.integers(0, 12))):
        width = len(header) if draw(st.integers(0, 5)) else draw(st.integers(0, len(header) + 2))
        rows.append([_cell(draw) for _ in range(width)])
    text = "\n".join(",".join(_quote(c) for c in row) for row in [header, *rows])
    if draw(st.booleans()):
        text += "\n"
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "latin-1", "utf-16", "utf-8+junk"]))
    if encoding == "utf-8+junk":
        data = text.encode("utf-8", "surrogatepass")
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"])) + data[cut:]
    else:
        data = text.encode(encoding, "replace")
    return draw(st.sampled_from([".csv", ".csv", ".txt", ".CSV"])), data


def _column(draw, name: str, n: int) -> pa.Array:
    kind = draw(st.sampled_from(["string", "int", "float", "bool", "binary", "list", "struct", "decimal", "date",
                                 "ts_ns", "ts_ms_utc", "ts_s_far", "null", "dict"]))
    if kind == "string":
        return pa.array([draw(st.sampled_from(CELLS)) for _ in range(n)], pa.string())
    if kind == "int":
        return pa.array([draw(st.integers(-(2**63), 2**63 - 1)) for _ in range(n)], pa.int64())
    if kind == "float":
        return pa.array([draw(st.floats()) for _ in range(n)], pa.float64())
    if kind == "bool":
        return pa.array([draw(st.booleans()) for _ in range(n)], pa.bool_())
    if kind == "binary":
        return pa.array([draw(st.binary(max_size=20)) for _ in range(n)], pa.binary())
    if kind == "list":
        return pa.array([draw(st.lists(st.integers(0, 9), max_size=3)) for _ in range(n)], pa.list_(pa.int64()))
    if kind == "struct":
        return pa.array([{"a": draw(st.integers(0, 9))} for _ in range(n)], pa.struct([("a", pa.int64())]))
    if kind == "decimal":
        return pa.array([str(draw(st.integers(-10**30, 10**30))) for _ in range(n)], pa.string()).cast(
            pa.decimal128(38, 2))
    if kind == "date":
        return pa.array([draw(st.integers(-10**6, 10**6)) for _ in range(n)], pa.int32()).cast(pa.date32())
    if kind == "ts_ns":
        return pa.array([draw(st.integers(-(2**63) + 1, 2**63 - 1)) for _ in range(n)], pa.timestamp("ns"))
    if kind == "ts_ms_utc":
        return pa.array([draw(st.integers(-10**14, 10**14)) for _ in range(n)], pa.timestamp("ms", tz="UTC"))
    if kind == "ts_s_far":  # beyond Python's year 9999, or before year 1
        return pa.array([draw(st.sampled_from([2**40, -(2**40), 0, 1767592800])) for _ in range(n)],
                        pa.timestamp("s", tz="Europe/Berlin"))
    if kind == "dict":
        return pa.array([draw(st.sampled_from(CELLS[:8])) for _ in range(n)]).dictionary_encode()
    return pa.nulls(n)


@st.composite
def parquet_files(draw) -> tuple[str, bytes]:
    names = draw(st.one_of(st.just(list(READING_COLUMNS)), st.just(list(READING_COLUMNS[:3])),
                           st.just(list(EVENT_COLUMNS)), st.lists(st.sampled_from(NAMES), max_size=6, unique=True)))
    n = draw(st.integers(0, 8))
    table = pa.table({name: _column(draw, name, n) for name in names}) if names else pa.table({})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    data = sink.getvalue()
    if draw(st.integers(0, 3)) == 0:  # truncated anywhere, or its footer damaged
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] if draw(st.booleans()) else data[:cut] + b"\x00" * 8 + data[cut + 8:]
    return draw(st.sampled_from([".parquet", ".PARQUET"])), data


@st.composite
def raw_files(draw) -> tuple[str, bytes]:
    data = draw(st.one_of(st.just(b""), st.binary(max_size=200), st.just(b"PAR1"), st.just(b"PAR1\x00\x00PAR1"),
                          st.just(b"\xef\xbb\xbf"), st.just(b"\xff\xfe"), st.just(b"\n\n\n"), st.just(b"\x00" * 64)))
    return draw(st.sampled_from([".csv", ".parquet", ".txt", ".json", ""])), data


ANY_FILE = st.one_of(csv_files(), parquet_files(), raw_files())
_names = itertools.count()


def _write(folder: Path, suffix: str, data: bytes) -> Path:
    path = folder / f"f{next(_names)}{suffix}"
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def producer(kafka):
    p = PlantProducer(kafka.bootstrap, ProducerSettings(), client_id="fuzz-replay")
    yield p
    p.close()


def replay_once(producer: PlantProducer, path: Path) -> None:
    """The contract: ReplayError in one line, or every row sent or dead-lettered; nothing else raised."""
    rep = Replayer(producer, batch_rows=5)
    try:
        summary = rep.run(path)
    except ReplayError as exc:
        assert str(exc) and "\n" not in str(exc), str(exc)
        return
    finally:
        path.unlink()
    sent = summary.readings if summary.kind == "readings" else summary.events
    assert summary.rows == sent + summary.dead_letters, summary


SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
        HealthCheck.function_scoped_fixture]


def test_generated_csv_files_are_replayed_or_refused_in_one_line(producer, tmp_path):
    @settings(max_examples=EXAMPLES, suppress_health_check=SLOW)
    @given(csv_files())
    def prop(f):
        TRIED["csv"] += 1
        replay_once(producer, _write(tmp_path, *f))

    prop()
    print(f"\nRELIABILITY | fuzz replay csv | cases={TRIED['csv']}")


def test_generated_parquet_files_are_replayed_or_refused_in_one_line(producer, tmp_path):
    @settings(max_examples=EXAMPLES, suppress_health_check=SLOW)
    @given(parquet_files())
    def prop(f):
        TRIED["parquet"] += 1
        replay_once(producer, _write(tmp_path, *f))

    prop()
    print(f"\nRELIABILITY | fuzz replay parquet | cases={TRIED['parquet']}")


def test_arbitrary_bytes_are_refused_in_one_line(producer, tmp_path):
    @settings(max_examples=EXAMPLES // 2, suppress_health_check=SLOW)
    @given(raw_files())
    def prop(f):
        TRIED["bytes"] += 1
        replay_once(producer, _write(tmp_path, *f))

    prop()
    print(f"\nRELIABILITY | fuzz replay bytes | cases={TRIED['bytes']}")


def _cli(words: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(words)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def _one_line_or_success(rc: int, out: str, err: str) -> None:
    assert "Traceback" not in out + err, err[-2000:]
    if rc:
        assert rc == 1 and err.startswith("gigapulse: error: ") and err.count("\n") == 1, (rc, err[-2000:])
        assert "GIGAPULSE_DEBUG=1" not in err, err  # the catch-all for unexpected errors: a bug


def test_the_replay_command_on_generated_files(kafka, tmp_path, monkeypatch):
    monkeypatch.setenv("GIGAPULSE_DATA_DIR", str(tmp_path / "data"))

    @settings(max_examples=max(4, EXAMPLES // 6), suppress_health_check=SLOW)
    @given(ANY_FILE)
    def prop(f):
        TRIED["cli"] += 1
        path = _write(tmp_path, *f)
        _one_line_or_success(*_cli(["replay", str(path), "--bootstrap", kafka.bootstrap]))

    prop()
    print(f"\nRELIABILITY | fuzz replay cli | cases={TRIED['cli']}")


def test_a_bad_file_is_named_before_an_unreachable_broker(tmp_path, monkeypatch):
    """With nothing listening, a file that cannot be replayed (none of the raw ones can) is named, not the broker."""
    monkeypatch.setenv("GIGAPULSE_CONNECT_TIMEOUT_S", "1")
    monkeypatch.setenv("GIGAPULSE_DATA_DIR", str(tmp_path / "data"))

    @settings(max_examples=EXAMPLES, suppress_health_check=SLOW)
    @given(raw_files())
    def prop(f):
        TRIED["cli-dead"] += 1
        path = _write(tmp_path, *f)
        rc, out, err = _cli(["replay", str(path), "--bootstrap", "127.0.0.1:9"])
        _one_line_or_success(rc, out, err)
        assert rc == 1 and "cannot reach Kafka" not in err, err

    prop()
    print(f"\nRELIABILITY | fuzz replay cli (Kafka unreachable) | cases={TRIED['cli-dead']}")
