"""``gigapulse bench warehouse`` end to end on a small lake, and how it checks a peer's answer."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, date, datetime

import pyarrow as pa
import pytest

from gigapulse.bench.warehouse import bench_params, compare_answers
from transforms.warehouse.queries import QUERIES


def _answer(**cols) -> pa.Table:
    return pa.table(cols)


def test_compare_accepts_reordered_rows_and_float_noise():
    ours = _answer(line=["L1", "L2"], day=[date(2026, 1, 5)] * 2, kwh=[1.0, 2.0])
    theirs = _answer(kwh=[2.0 + 1e-12, 1.0], day=[date(2026, 1, 5)] * 2, line=["L2", "L1"], extra=[0, 0])
    assert compare_answers("q5_daily_scrap_and_energy_per_line", ours, theirs) is None


@pytest.mark.parametrize(("theirs", "why"), [
    ({"line": ["L1"], "day": [date(2026, 1, 5)], "kwh": [1.0]}, "1 row(s) missing"),
    ({"line": ["L1", "L2"], "day": [date(2026, 1, 5)] * 2, "kwh": [1.0, 2.1]}, "kwh = 2.1"),
    ({"line": ["L1", "L2"], "day": [date(2026, 1, 5)] * 2, "kwh": [1.0, None]}, "kwh = None"),
    ({"line": ["L1", "L1"], "day": [date(2026, 1, 5)] * 2, "kwh": [1.0, 2.0]}, "distinct keys"),
    ({"line": ["L1", "L2"], "day": [date(2026, 1, 5)] * 2}, "no column(s) kwh"),
])
def test_compare_names_what_differs(theirs, why):
    ours = _answer(line=["L1", "L2"], day=[date(2026, 1, 5)] * 2, kwh=[1.0, 2.0])
    assert why in compare_answers("q5_daily_scrap_and_energy_per_line", ours, pa.table(theirs))


def test_parameters_follow_the_lake_span():
    record = {"plan": {"start": "2026-01-05T21:00:00+00:00"}, "build": {"end": "2026-01-06T01:57:30+00:00"}}
    p = bench_params(record)
    assert set(p) == set(QUERIES)
    for name, q in QUERIES.items():
        q.bind(**p[name])  # every query gets exactly its parameters, of the right types
    assert p["q4_out_of_spec_last_24h"]["now"] == datetime(2026, 1, 6, 1, 58, tzinfo=UTC)
    assert p["q2_minute_stats_of_station"]["hour"] == datetime(2026, 1, 5, 21, 0, tzinfo=UTC)
    assert p["q6_below_a_cells_areal_loading"]["day"] == date(2026, 1, 5)  # three hours against two
    assert p["q5_daily_scrap_and_energy_per_line"] == {"first_day": date(2025, 12, 8), "last_day": date(2026, 1, 6)}


def test_bench_warehouse_end_to_end_on_a_small_lake(tmp_path):
    """Build, dump, compact, run every installed engine; every answer matches, and a second run reuses the lake."""
    out = tmp_path / "warehouse.json"
    argv = [sys.executable, "-m", "gigapulse.cli", "bench", "warehouse", "--readings", "200000", "--runs", "1",
            "--workers", "1", "--cache", str(tmp_path / "cache"), "--out", str(out)]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["lake"]["build"]["readings"] > 150_000
    assert report["lake"]["files_per_table_and_date"]["readings"] == 1
    assert set(report["results"]) == set(QUERIES)
    for name, per_engine in report["results"].items():
        assert per_engine["gigapulse"]["seconds"]["median"] > 0
        for engine, r in per_engine.items():
            assert not r.get("error") and not r.get("mismatch"), (name, engine, r)
            assert r["rows"] == per_engine["gigapulse"]["rows"]
    assert "| q1_last_value_per_sensor |" in res.stdout
    again = subprocess.run(argv + ["--engines", "gigapulse"], capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "reusing the lake" in again.stderr


def test_unknown_engine_is_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "gigapulse.cli", "bench", "warehouse", "--engines", "duckdb,spark",
                          "--cache", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        "gigapulse: error: --engines: unknown duckdb, spark (choose from gigapulse, chDB, Polars, naive DuckDB)"]


class _Engine:
    """Answers every query with ``table`` after ``delay`` seconds, or raises ``error``."""

    def __init__(self, name: str, table: pa.Table, delay: float = 0.0, error: Exception | None = None):
        self.name, self.table, self.delay, self.error, self.calls = name, table, delay, error, 0

    def run(self, query, params):
        import time

        self.calls += 1
        if self.error:
            raise self.error
        time.sleep(self.delay)
        return self.table


def test_only_checked_answers_are_timed(monkeypatch):
    from gigapulse.bench import warehouse as W

    monkeypatch.setattr(W, "LONG_RUN_S", 0.05)
    columns = sorted({c for key in W.KEYS.values() for c in key})
    good = pa.table({c: ["x"] for c in columns})
    wrong = pa.table({c: ["y"] for c in columns})
    engines = [_Engine("gigapulse", good), _Engine("chDB", wrong), _Engine("Polars", good, error=RuntimeError("boom")),
               _Engine("naive DuckDB", good, delay=0.06)]
    params = {q: {} for q in QUERIES}
    res = W.run_queries(engines, params, runs=2)
    for q in QUERIES:
        assert len(res[q]["gigapulse"]["seconds"]["runs"]) == 2
        assert "row(s) missing" in res[q]["chDB"]["mismatch"] and "seconds" not in res[q]["chDB"]
        assert res[q]["Polars"]["error"] == "RuntimeError: boom"
        naive = res[q]["naive DuckDB"]
        assert naive["single_run"] and len(naive["seconds"]["runs"]) == 1 and naive["ratio"]["median"] > 1
    assert engines[1].calls == len(QUERIES)  # a wrong answer is never run again
    assert engines[3].calls == len(QUERIES)  # nor one past the long-run limit
    assert engines[0].calls == 3 * len(QUERIES)


def test_a_missing_peer_is_one_line_naming_the_extra(monkeypatch, tmp_path):
    import importlib.util

    from gigapulse.bench import warehouse as W
    from gigapulse.bench import warehouse_peers as P

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "chdb" else real(name, *a))
    assert P.missing_peers() == {"chdb": "chdb is not installed: pip install -e .[bench]"}
    opts = W.WarehouseOptions(engines=("chDB", "Polars"))
    engines, skipped = W._engines(opts, tmp_path)
    assert [e.name for e in engines] == ["Polars"]
    assert skipped == {"chDB": "chdb is not installed: pip install -e .[bench]"}


def test_gigapulse_failing_stops_the_bench():
    from gigapulse.bench import warehouse as W
    from gigapulse.bench.harness import BenchError

    engines = [_Engine("gigapulse", pa.table({"x": [1]}), error=RuntimeError("no catalog")),
               _Engine("Polars", pa.table({"x": [1]}))]
    with pytest.raises(BenchError, match="failed on gigapulse, whose answer every peer is checked against: "
                                         "RuntimeError: no catalog"):
        W.run_queries(engines, {q: {} for q in QUERIES}, runs=1)
