"""Results as files other tools read: every DuckDB type as CSV and JSON text, streamed in batches."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
import uuid
from decimal import Decimal

import duckdb
import pyarrow.parquet as pq
import pytest

from transforms.warehouse.export import (
    csv_field,
    iso_duration,
    json_text,
    scalar_text,
    unique_names,
    write_csv,
    write_jsonl,
    write_parquet,
)

UTC = dt.UTC


@pytest.mark.parametrize(("value", "as_json", "as_csv"), [
    (None, "null", ""),
    ("", '""', '""'),
    ("a:x:b", '"a:x:b"', "a:x:b"),
    ("[/bold]", '"[/bold]"', "[/bold]"),
    ('a,"b"\nc', '"a,\\"b\\"\\nc"', '"a,""b""\nc"'),
    ("é", '"é"', "é"),
    (True, "true", "true"),
    (False, "false", "false"),
    (7, "7", "7"),
    (2**100, str(2**100), str(2**100)),
    (0.1, "0.1", "0.1"),
    (1e300, "1e+300", "1e+300"),
    (float("nan"), "null", "nan"),
    (float("inf"), "null", "inf"),
    (float("-inf"), "null", "-inf"),
    (Decimal("12.340"), "12.340", "12.340"),
    (Decimal("123456789012345678.123456789"), "123456789012345678.123456789", "123456789012345678.123456789"),
    (b"\x00\xff", '"AP8="', "AP8="),
    (dt.datetime(2026, 3, 2, 6, 0, 0, 123000, tzinfo=UTC), '"2026-03-02T06:00:00.123000+00:00"',
     "2026-03-02T06:00:00.123000+00:00"),
    (dt.datetime(2026, 3, 2, 6), '"2026-03-02T06:00:00"', "2026-03-02T06:00:00"),
    (dt.date(2026, 3, 2), '"2026-03-02"', "2026-03-02"),
    (dt.time(6, 1, 2), '"06:01:02"', "06:01:02"),
    (dt.timedelta(days=1, hours=2), '"P1DT2H"', "P1DT2H"),
    (uuid.UUID(int=1), '"00000000-0000-0000-0000-000000000001"', "00000000-0000-0000-0000-000000000001"),
    (["a", None], '["a",null]', '"[""a"",null]"'),
    ({"x": 1, "y": [True]}, '{"x":1,"y":[true]}', '"{""x"":1,""y"":[true]}"'),
    ({1: b"\x01"}, '{"1":"AQ=="}', '"{""1"":""AQ==""}"'),
    ([Decimal("1.50"), float("nan")], "[1.50,null]", '"[1.50,null]"'),
])
def test_each_type_as_json_and_csv(value, as_json, as_csv):
    assert json_text(value) == as_json
    assert csv_field(value) == as_csv
    if value is not None:
        json.loads(as_json)  # valid JSON on its own


@pytest.mark.parametrize(("delta", "text"), [
    (dt.timedelta(0), "PT0S"), (dt.timedelta(seconds=0.5), "PT0.5S"), (dt.timedelta(minutes=-1), "-PT1M"),
    (dt.timedelta(days=3, seconds=3661), "P3DT1H1M1S"), (dt.timedelta(days=2), "P2D"),
])
def test_intervals_are_iso_8601_durations(delta, text):
    assert iso_duration(delta) == text


def test_scalar_text_is_never_a_python_repr():
    for value in (b"x", ["a"], {"k": 1}, True, 1.5):
        text = scalar_text(value)
        assert not text.startswith(("b'", "['a'", "{'")) and text != "True"


def test_duplicate_names_get_a_suffix():
    assert unique_names(["a", "a", "a_2", "b", "a"]) == ["a", "a_2", "a_2_2", "b", "a_3"]


SAMPLE = """
SELECT i, 'a:x:b' AS s, '[/bold]' AS m, ('\\x00\\xff' || i::VARCHAR)::BLOB AS b, ['a', NULL] AS l,
       i % 2 = 0 AS flag, TIMESTAMPTZ '2026-03-02 06:00:00+00' + to_seconds(i) AS ts, NULL::VARCHAR AS n
FROM range(2500) AS r(i) ORDER BY i
"""


def test_csv_and_json_stream_in_batches_and_read_back(tmp_path):
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    text = io.StringIO()
    assert write_csv(con.execute(SAMPLE), text, batch_rows=100) == 2500
    rows = list(csv.DictReader(io.StringIO(text.getvalue())))
    assert len(rows) == 2500
    assert rows[3] == {"i": "3", "s": "a:x:b", "m": "[/bold]", "b": base64.b64encode(b"\x00\xff3").decode(),
                       "l": '["a",null]', "flag": "false", "ts": "2026-03-02T06:00:03+00:00", "n": ""}
    lines = io.StringIO()
    assert write_jsonl(con.execute(SAMPLE), lines, batch_rows=7) == 2500
    docs = [json.loads(line) for line in lines.getvalue().splitlines()]
    assert docs[4] == {"i": 4, "s": "a:x:b", "m": "[/bold]", "b": base64.b64encode(b"\x00\xff4").decode(),
                       "l": ["a", None], "flag": True, "ts": "2026-03-02T06:00:04+00:00", "n": None}


def test_parquet_keeps_duckdb_types(tmp_path):
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")  # as the reader's connections are
    path = tmp_path / "out.parquet"
    assert write_parquet(con.sql("SELECT 1 AS a, 2 AS a, [1, 2] AS l, TIMESTAMPTZ '2026-03-02 06:00:00+00' AS ts, "
                                 "'\\x01'::BLOB AS b"), path) == 1
    table = pq.read_table(path)
    assert table.column_names == ["a", "a_2", "l", "ts", "b"]
    assert table.to_pylist() == [{"a": 1, "a_2": 2, "l": [1, 2], "ts": dt.datetime(2026, 3, 2, 6, tzinfo=UTC),
                                  "b": b"\x01"}]
    assert str(table.schema.field("ts").type) == "timestamp[us, tz=UTC]"
