"""Batch tables land one file per day, conformed to their contract, and replace the day on a rerun."""

from __future__ import annotations

from datetime import date

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas import batch as B
from transforms.batch.store import batch_days, conform, day_path, write_day
from transforms.warehouse import build_catalog

SPEC = B.batch_spec("demo_batch", "one station x one UTC day", "A batch table for the store's tests.",
                    [B.col("station", pa.string(), "Station.", nullable=False),
                     B.col("score", pa.float64(), "Score, 0-5."), B.date_col()], sort_key=("station",))
DAY = date(2026, 11, 29)


def rows(stations, scores) -> pa.Table:
    return pa.table({"station": stations, "score": scores})


def test_a_day_is_sorted_typed_and_replaced_whole(tmp_path):
    write_day(tmp_path, SPEC, DAY, rows(["b", "a"], [2, 1]))
    first = day_path(tmp_path, SPEC, DAY).read_bytes()
    write_day(tmp_path, SPEC, DAY, rows(["a", "b"], [1, 2]))
    assert day_path(tmp_path, SPEC, DAY).read_bytes() == first  # same rows, same bytes
    got = pq.read_table(day_path(tmp_path, SPEC, DAY))
    assert got.column_names == ["station", "score"] and got.schema.field("score").type == pa.float64()
    assert got["station"].to_pylist() == ["a", "b"]
    write_day(tmp_path, SPEC, DAY, rows(["c"], [3.5]))
    assert pq.read_table(day_path(tmp_path, SPEC, DAY))["station"].to_pylist() == ["c"]
    assert batch_days(tmp_path, SPEC) == [DAY]


def test_missing_nullable_columns_are_nulls_and_contract_drift_is_refused():
    assert conform(SPEC, pa.table({"station": ["a"]}))["score"].to_pylist() == [None]
    with pytest.raises(ValueError, match="not in the contract: extra"):
        conform(SPEC, pa.table({"station": ["a"], "extra": [1]}))
    with pytest.raises(ValueError, match="required column 'station'"):
        conform(SPEC, pa.table({"score": [1.0]}))


def test_the_catalog_has_a_view_per_batch_table_before_and_after_data(tmp_path, monkeypatch):
    monkeypatch.setitem(B.BATCH_TABLES, SPEC.name, SPEC)
    monkeypatch.setitem(B.BATCH_EXAMPLES, SPEC.name, "SELECT * FROM demo_batch;")
    lake, db = tmp_path / "lake", tmp_path / "w.duckdb"
    build_catalog(lake, db)
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM demo_batch").fetchone() == (0,)
    write_day(lake, SPEC, DAY, rows(["a", "b"], [1, 2]))
    write_day(lake, SPEC, date(2026, 11, 30), rows(["a"], [3]))
    build_catalog(lake, db)
    with duckdb.connect(str(db), read_only=True) as con:
        got = con.execute("SELECT date, station, score FROM demo_batch ORDER BY ALL").fetchall()
    assert got == [(DAY, "a", 1.0), (DAY, "b", 2.0), (date(2026, 11, 30), "a", 3.0)]
