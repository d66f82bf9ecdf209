"""The warehouse query set: every file answers its question on a real lake, as a brute force does.

Each query runs through a catalog built by ``build_catalog`` (the stream's hot files) and through
the catalog of the same lake after ``compact`` (one sorted file per table and day), and its answer
is checked against a recomputation in plain Python/numpy from the lake's *raw* rows (readings,
production events, the asset model): never the same SQL, and mostly not the same tables, so the
stream's features are checked on the way.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from transforms.warehouse.catalog import _connect
from transforms.warehouse.queries import QUERIES, load_query, used_params

DAY1, DAY2 = date(2026, 3, 1), date(2026, 3, 2)
NOW = datetime(2026, 3, 2, 0, 1, tzinfo=UTC)  # a minute after the last reading
HOUR = datetime(2026, 3, 1, 23, 0, tzinfo=UTC)
MIN_MS = 60_000
CELL_STAGES = {"stacking", "filling", "formation", "aging_eol"}

PARAMS = {
    "q1_last_value_per_sensor": {"line": "L1"},
    "q2_minute_stats_of_station": {"station": "L1-coat-c", "hour": HOUR},
    "q3_hourly_mean_per_parameter": {"day": DAY1},
    "q4_out_of_spec_last_24h": {"now": NOW},
    "q5_daily_scrap_and_energy_per_line": {"first_day": DAY2 - timedelta(days=29), "last_day": DAY2},
    "q6_below_a_cells_areal_loading": {"day": DAY2},
    "q7_sensor_gaps_last_day": {"now": NOW},
    "q8_daily_cpk_per_ctq_parameter": {"first_day": DAY1, "last_day": DAY2},
}


# --------------------------------------------------------------------------- raw rows

def _table(lake: Path, name: str) -> pa.Table:
    dates = ds.partitioning(pa.schema([("date", pa.date32())]), flavor="hive")
    return ds.dataset(lake / name, format="parquet", partitioning=dates).to_table()


def _text(col: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(col.cast(pa.string()).to_pylist(), dtype=object)


def _ms(col: pa.ChunkedArray) -> np.ndarray:
    return col.cast(pa.int64()).to_numpy()


@pytest.fixture(scope="module")
def raw(query_lake):
    """The lake's raw rows as numpy columns, and the asset model by sensor id."""
    r = _table(query_lake.lake, "readings")
    readings = {c: _text(r[c]) for c in ("sensor_id", "line", "station", "stage", "parameter", "unit")}
    readings |= {"ts": _ms(r["ts"]), "value": r["value"].to_numpy(), "late": r["late"].to_numpy(zero_copy_only=False)}
    events = _table(query_lake.lake, "production_events").to_pylist()
    sensors = {s.sensor_id: s for s in query_lake.plant.sensors}
    return readings, events, sensors


@pytest.fixture(scope="module")
def by_sensor(raw) -> dict[str, np.ndarray]:
    """Row numbers of each sensor's non-late readings, in event-time order."""
    r = raw[0]
    keep = np.flatnonzero(~r["late"])
    order = keep[np.lexsort((r["ts"][keep], r["sensor_id"][keep]))]
    sids = r["sensor_id"][order]
    cuts = np.flatnonzero(sids[1:] != sids[:-1]) + 1
    return {r["sensor_id"][part[0]]: part for part in np.split(order, cuts)}


def _ms_of(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _answer(db: Path, name: str) -> tuple[list[str], list[dict]]:
    q = QUERIES[name]
    con = _connect(db, read_only=True)
    try:
        cur = con.execute(q.sql, q.bind(**PARAMS[name]))
        cols = [d[0] for d in cur.description]
        return cols, [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
    finally:
        con.close()


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, datetime):
        return _ms_of(a) == b
    return a == b


def _check(rows: list[dict], expected: dict[tuple, dict], key: tuple[str, ...]) -> None:
    """Every row equals its brute-force twin (floats within 1e-9), and no row is missing or extra."""
    assert rows, "the query must have an answer on the fixture"
    got = {tuple(_ms_of(r[k]) if isinstance(r[k], datetime) else r[k] for k in key): r for r in rows}
    assert len(got) == len(rows), "the key is not unique in the answer"
    assert set(got) == set(expected), (sorted(set(got) ^ set(expected))[:5])
    for k, want in expected.items():
        for col, v in want.items():
            assert _same(got[k][col], v), (k, col, got[k][col], v)


@pytest.fixture(params=["hot", "compacted"])
def db(request, query_lake) -> Path:
    return query_lake.db_hot if request.param == "hot" else query_lake.db_compacted


# --------------------------------------------------------------------------- the loader

def test_every_file_is_in_the_set_and_declares_the_parameters_it_uses():
    folder = Path(__file__).resolve().parents[3] / "transforms" / "warehouse" / "queries"
    assert {p.stem for p in folder.glob("*.sql")} == set(QUERIES)
    assert len(QUERIES) == 8
    for name, q in QUERIES.items():
        assert used_params(q.sql) == {p.name for p in q.params}, name
        header = "".join(line for line in q.sql.splitlines() if line.startswith("--"))
        assert all(f"${p.name}" in header for p in q.params), name
        (stmt,) = duckdb.extract_statements(q.sql)
        assert stmt.type == duckdb.StatementType.SELECT
        assert load_query(name) == q.sql


def test_bind_refuses_missing_unknown_and_mistyped_parameters():
    q = QUERIES["q4_out_of_spec_last_24h"]
    assert q.bind(now=NOW) == {"now": NOW}
    with pytest.raises(ValueError, match="missing now"):
        q.bind()
    with pytest.raises(ValueError, match="unknown line"):
        q.bind(now=NOW, line="L1")
    with pytest.raises(ValueError, match="must be a TIMESTAMPTZ"):
        q.bind(now="2026-03-02")
    with pytest.raises(ValueError, match="timezone-aware"):
        q.bind(now=NOW.replace(tzinfo=None))
    with pytest.raises(ValueError, match="must be a DATE"):
        QUERIES["q3_hourly_mean_per_parameter"].bind(day=NOW)
    with pytest.raises(KeyError, match="no query 'q9'"):
        load_query("q9")


def test_the_fixture_holds_what_the_questions_need(query_lake, raw):
    readings, events, _ = raw
    assert query_lake.build.frames_dropped > 0  # the outages behind q7
    assert not readings["late"].any()  # features and raw rows then cover the same samples
    assert {e["date"] for e in events} == {DAY1, DAY2}


# --------------------------------------------------------------------------- one test per question

def test_q1_last_value_per_sensor(db, raw):
    r, _, _ = raw
    expected: dict[tuple, dict] = {}
    best: dict[str, int] = {}
    for i in np.flatnonzero(r["line"] == "L1"):
        sid = r["sensor_id"][i]
        if sid not in best or r["ts"][i] > r["ts"][best[sid]]:
            best[sid] = i
    for sid, i in best.items():
        expected[(sid,)] = {"ts": int(r["ts"][i]), "value": float(r["value"][i]), "station": r["station"][i]}
    _check(_answer(db, "q1_last_value_per_sensor")[1], expected, ("sensor_id",))


def _groups(r, mask, key_fn) -> dict[tuple, list[float]]:
    out: dict[tuple, list[float]] = defaultdict(list)
    for i in np.flatnonzero(mask):
        out[key_fn(i)].append(float(r["value"][i]))
    return out


def test_q2_minute_stats_of_station(db, raw):
    r, _, _ = raw
    lo = _ms_of(HOUR)
    mask = (r["station"] == "L1-coat-c") & (r["ts"] >= lo) & (r["ts"] < lo + 3_600_000) & ~r["late"]
    groups = _groups(r, mask, lambda i: (r["sensor_id"][i], int(r["ts"][i]) // MIN_MS * MIN_MS))
    expected = {k: {"samples": len(v), "mean": sum(v) / len(v), "max": max(v)} for k, v in groups.items()}
    _check(_answer(db, "q2_minute_stats_of_station")[1], expected, ("sensor_id", "window_start"))


def test_q3_hourly_mean_per_parameter(db, raw):
    r, _, _ = raw
    lo = _ms_of(datetime.combine(DAY1, datetime.min.time(), UTC))
    mask = (r["ts"] >= lo) & (r["ts"] < lo + 86_400_000) & ~r["late"]
    groups = _groups(r, mask, lambda i: (int(r["ts"][i]) // 3_600_000 * 3_600_000, r["stage"][i],
                                         r["parameter"][i], r["unit"][i]))
    expected = {k: {"samples": len(v), "mean": sum(v) / len(v)} for k, v in groups.items()}
    _check(_answer(db, "q3_hourly_mean_per_parameter")[1], expected, ("hour", "stage", "parameter", "unit"))


def test_q4_out_of_spec_last_24h(db, raw):
    r, _, sensors = raw
    hi = _ms_of(NOW)
    mask = (r["ts"] >= hi - 86_400_000) & (r["ts"] < hi) & ~r["late"]
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for i in np.flatnonzero(mask):
        s = sensors[r["sensor_id"][i]]
        v = r["value"][i]
        c = counts[s.sensor_id]
        c[0] += 1
        c[1] += (s.lsl is not None and v < s.lsl) or (s.usl is not None and v > s.usl)
    expected = {(sid,): {"samples": n, "out_of_spec": bad, "share": bad / n, "lsl": sensors[sid].lsl}
                for sid, (n, bad) in counts.items() if bad}
    _check(_answer(db, "q4_out_of_spec_last_24h")[1], expected, ("sensor_id",))


def _meter_kwh_by_line_day(r, sensors, by_sensor) -> dict[tuple, float]:
    """Energy per line and UTC day from the raw counters: each step to the later sample's day, a drop
    counted as a reset (the new value is the energy since zero), the first sample only a baseline."""
    out: dict[tuple, float] = defaultdict(float)
    for sid, s in sensors.items():
        if not s.is_energy_meter or s.line == "site":
            continue
        idx = by_sensor[sid]
        for prev, cur in zip(idx[:-1], idx[1:], strict=True):
            step = r["value"][cur] - r["value"][prev]
            day = datetime.fromtimestamp(r["ts"][cur] / 1000, UTC).date()
            out[(s.line, day)] += step if step >= 0 else r["value"][cur]
    return out


def test_q5_daily_scrap_and_energy_per_line(db, raw, by_sensor):
    r, events, sensors = raw
    scrapped: dict[tuple, int] = defaultdict(int)
    good: dict[tuple, int] = defaultdict(int)
    for e in events:
        key = (e["line"], e["date"])
        if e["kind"] == "scrap" and e["stage"] in CELL_STAGES:
            scrapped[key] += 1
        elif e["kind"] == "leave" and e["stage"] == "aging_eol":
            good[key] += 1
    kwh = _meter_kwh_by_line_day(r, sensors, by_sensor)
    expected = {}
    for key in set(scrapped) | set(good) | set(kwh):
        g, s = good.get(key, 0), scrapped.get(key, 0)
        expected[key] = {"good_cells": g, "scrapped": s, "scrap_rate": s / (g + s) if g + s else None,
                         "kwh": kwh.get(key, 0.0), "kwh_per_good_cell": kwh[key] / g if g else None}
    _check(_answer(db, "q5_daily_scrap_and_energy_per_line")[1], expected, ("line", "day"))


def test_q6_below_a_cells_areal_loading(db, raw):
    r, events, _ = raw
    windows: dict[str, dict] = defaultdict(dict)
    for e in events:
        if e["stage"] == "coating" and e["kind"] in ("enter", "leave"):
            windows[e["unit_id"]][e["kind"]] = (e["station"], _ms_of(e["ts"]))
    expected = {}
    for e in events:
        if e["kind"] != "grade" or e["date"] != DAY2 or e["grade"] == "A":
            continue
        for roll in e["parent_ids"]:
            w = windows.get(roll, {})
            if "enter" not in w or "leave" not in w:
                continue  # a roll from stock: never coated here
            (station, lo), (_, hi) = w["enter"], w["leave"]
            mask = (r["station"] == station) & (r["parameter"] == "areal_loading") & (r["ts"] >= lo) & (r["ts"] < hi)
            vals = r["value"][mask]
            expected[(e["unit_id"], roll)] = {"grade": e["grade"], "station": station, "coating_start": lo,
                                              "coating_end": hi, "samples": len(vals),
                                              "areal_loading_mean": float(vals.sum() / len(vals))}
    assert len({k[0] for k in expected}) >= 3
    _check(_answer(db, "q6_below_a_cells_areal_loading")[1], expected, ("cell_id", "roll_id"))


def test_q7_sensor_gaps_last_day(db, raw, by_sensor):
    r, _, sensors = raw
    hi = _ms_of(NOW)
    expected = {}
    for sid, s in sensors.items():
        ts = r["ts"][by_sensor[sid]]
        gaps = np.diff(ts)
        later = ts[1:]
        long = (gaps > 10 * 1000.0 / s.nominal_rate_hz) & (later >= hi - 86_400_000) & (later < hi)
        if long.any():
            expected[(sid,)] = {"windows_with_gap": len(set((later[long] // MIN_MS).tolist())),
                                "longest_gap_s": float(gaps[long].max()) / 1000.0,
                                "limit_s": 10.0 / s.nominal_rate_hz}
    _check(_answer(db, "q7_sensor_gaps_last_day")[1], expected, ("sensor_id",))


def test_q8_daily_cpk_per_ctq_parameter(db, raw):
    r, _, sensors = raw
    ctq = np.array([sensors[s].ctq for s in r["sensor_id"]]) & ~r["late"]
    windows = _groups(r, ctq, lambda i: (r["sensor_id"][i], int(r["ts"][i]) // MIN_MS))
    pooled: dict[tuple, list] = defaultdict(lambda: [0, 0.0, 0.0, 0])  # n, sum, within SS, within dof
    for (sid, minute), vals in windows.items():
        s = sensors[sid]
        day = datetime.fromtimestamp(minute * 60, UTC).date()
        p = pooled[(s.line, s.station, s.parameter, day)]
        m = sum(vals) / len(vals)
        p[0] += len(vals)
        p[1] += sum(vals)
        if len(vals) > 1:
            p[2] += sum((v - m) ** 2 for v in vals)
            p[3] += len(vals) - 1
    limits = {(s.station, s.parameter): (s.lsl, s.usl) for s in sensors.values() if s.ctq}
    expected = {}
    for key, (n, total, ss, dof) in pooled.items():
        if not dof or not ss:
            continue
        mean, sigma = total / n, math.sqrt(ss / dof)
        lsl, usl = limits[key[1:3]]
        sides = [(usl - mean) / (3 * sigma)] if usl is not None else []
        sides += [(mean - lsl) / (3 * sigma)] if lsl is not None else []
        expected[key] = {"samples": n, "mean": mean, "sigma_within": sigma, "cpk": min(sides)}
    _check(_answer(db, "q8_daily_cpk_per_ctq_parameter")[1], expected, ("line", "station", "parameter", "day"))
