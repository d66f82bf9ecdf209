"""Every rollup against a brute-force recomputation: on a lake streamed from the simulator, and on
rows written by hand where the exact answer is known (rework, shifts, one-sided specs)."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.transforms.warehouse.rollups.support import (
    DAY_MS,
    at,
    energy_row,
    event,
    read_table,
    rows_of,
    sensor,
    write_rows,
)
from transforms.features.quality import quality_windows
from transforms.features.spc import process_capability
from transforms.features.stats import window_stats
from transforms.settings import parse_shift_starts
from transforms.warehouse import write_sensors
from transforms.warehouse.rollups import (
    ROLLUPS,
    build_rollup_day,
    lake_sources,
    rollup_path,
    rollup_specs,
    shifts_of_day,
)

D1, D2 = date(2026, 3, 1), date(2026, 3, 2)
COUNTERS = ("units_in", "units_out", "good", "scrapped", "reworked", "first_pass_good", "first_pass_scrapped")


def rollup(lake, name, day) -> list[dict]:
    return pq.read_table(rollup_path(lake, name, day)).to_pylist()


def close(a, b, rel=1e-9) -> bool:
    if a is None or b is None or (isinstance(b, float) and math.isnan(b)):
        return a is None and (b is None or math.isnan(b))
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


def ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


# --------------------------------------------------------------------------- brute force

def brute_quality(events: list[dict], day: date) -> dict[tuple, dict]:
    """The stream's own pure quality function with one window per UTC day, fed day-1 and day in arrival order."""
    evs = sorted((e for e in events if day - timedelta(days=1) <= e["date"] <= day),
                 key=lambda e: (e["src_partition"], e["src_offset"]))
    w = quality_windows([ms(e["ts"]) for e in evs], [e["line"] for e in evs], [e["stage"] for e in evs],
                        [e["kind"] for e in evs], [e["unit_id"] for e in evs], [e["reason"] for e in evs],
                        [e["grade"] for e in evs], [e["site"] for e in evs], width_ms=DAY_MS)
    start = (day - date(1970, 1, 1)).days * DAY_MS
    out = {}
    for i in np.flatnonzero(w["window_start"] == start).tolist():
        key = (w["site"][i], w["line"][i], w["stage"][i])
        row = {c: int(w[c][i]) for c in (*COUNTERS, "grade_a", "grade_b", "grade_c", "grade_other")}
        row["yield"], row["first_pass_yield"] = float(w["yield"][i]), float(w["first_pass_yield"][i])
        row["scrap_by_reason"] = dict(w["scrap_by_reason"][i])
        out[key] = row
    for e in events:
        if e["date"] == day:
            row = out[(e["site"], e["line"], e["stage"])]
            row["events"] = row.get("events", 0) + 1
            row["late_events"] = row.get("late_events", 0) + int(e["late"])
    return out


def check_quality(lake, day) -> dict[tuple, dict]:
    expected = brute_quality(rows_of(lake, "production_events"), day)
    got = {(r["site"], r["line"], r["stage"]): r for r in rollup(lake, "quality_daily", day)}
    assert got.keys() == expected.keys()
    for key, exp in expected.items():
        row = got[key]
        for c in (*COUNTERS, "events", "late_events"):
            assert row[c] == exp[c], (key, c)
        assert close(row["yield"], exp["yield"]) and close(row["first_pass_yield"], exp["first_pass_yield"]), key
        assert dict(row["scrap_by_reason"]) == exp["scrap_by_reason"], key
        grades = {g: exp[f"grade_{g.lower()}"] for g in "ABC" if exp[f"grade_{g.lower()}"]}
        assert dict(row["grades"]) == grades and exp["grade_other"] == 0, key
    return expected


def shift_of(ts: datetime, starts: tuple[int, ...]) -> tuple[date, int]:
    """(day the shift started, shift number) of a time, by walking the shift starts."""
    for back in (0, 1):
        day = ts.date() - timedelta(days=back)
        for s in reversed(shifts_of_day(day, starts)):
            if s.start <= ts < s.end:
                return day, s.number
    raise AssertionError(ts)


# --------------------------------------------------------------------------- the simulated lake

def test_quality_daily_equals_the_streams_quality_function_over_the_day(simulated_lake):
    lake, _ = simulated_lake
    for day in (D1, D2):
        expected = check_quality(lake, day)
        assert sum(r["grade_a"] for r in expected.values()) > 0  # cells were graded that day
        assert sum(r["scrapped"] for r in expected.values()) > 0
        # Nothing arrived late here, so the additive counters are also the sums of the stream's windows.
        windows = defaultdict(lambda: defaultdict(int))
        for w in rows_of(lake, "quality_features"):
            if w["date"] == day:
                for c in ("units_in", "units_out", "good", "scrapped", "grade_a", "grade_b", "grade_c"):
                    windows[(w["site"], w["line"], w["stage"])][c] += w[c]
        for key, sums in windows.items():
            assert {c: expected[key][c] for c in sums} == dict(sums), key


def test_sensor_daily_statistics_and_capability_equal_a_computation_from_the_raw_readings(simulated_lake):
    lake, _ = simulated_lake
    limits = {s["sensor_id"]: s for s in rows_of(lake, "sensors")}
    r = read_table(lake, "readings")
    sid = r["sensor_id"].to_numpy(zero_copy_only=False)
    ts = r["ts"].cast(pa.int64()).to_numpy()
    val = r["value"].to_numpy()
    day = r["date"].cast(pa.int32()).to_numpy()
    keep = ~r["late"].to_numpy(zero_copy_only=False)
    ctq_checked = 0
    for d in (D1, D2):
        got = {row["sensor_id"]: row for row in rollup(lake, "sensor_daily", d)}
        sel = keep & (day == (d - date(1970, 1, 1)).days)
        assert set(got) == set(sid[sel])
        order = np.argsort(sid[sel], kind="stable")
        s_sid, s_ts, s_val = sid[sel][order], ts[sel][order], val[sel][order]
        bounds = np.flatnonzero(np.r_[True, s_sid[1:] != s_sid[:-1], True])
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            name, v, t = s_sid[a], s_val[a:b], s_ts[a:b]
            row, spec = got[name], limits[name]
            lsl, usl = spec["lsl"], spec["usl"]
            assert row["n"] == len(v) and row["windows"] == len(np.unique(t // 60_000))
            assert close(row["mean"], float(v.mean())) and close(row["std"], float(v.std(ddof=1)), 1e-7)
            assert row["min"] == v.min() and row["max"] == v.max()
            outside = ((v < lsl) if lsl is not None else False) | ((v > usl) if usl is not None else False)
            assert row["out_of_spec"] == int(np.count_nonzero(outside))
            assert row["ctq"] == spec["ctq"] and row["lsl"] == lsl and row["usl"] == usl
            if spec["ctq"]:
                cap = process_capability(v, t // 60_000, lsl, usl)
                assert close(row["sigma_within"], cap["sigma_within"], 1e-7)
                assert close(row["sigma_overall"], cap["sigma_overall"], 1e-7)
                for c in ("cp", "cpk", "pp", "ppk"):
                    assert close(row[c], cap[c], 1e-7), (name, c)
                ctq_checked += row["cpk"] is not None
            else:
                assert row["cp"] is row["cpk"] is row["pp"] is row["ppk"] is None
    assert ctq_checked > 20


def test_energy_rollups_sum_the_stations_windows_and_divide_by_the_lines_good_cells(simulated_lake):
    lake, _ = simulated_lake
    energy = rows_of(lake, "energy_features")
    events = rows_of(lake, "production_events")
    good = {d: brute_quality(events, d) for d in (D1, D2)}
    shift3 = defaultdict(lambda: defaultdict(list))
    for d in (D1, D2):
        per = defaultdict(list)
        for e in energy:
            if e["date"] == d:
                per[(e["site"], e["line"], e["station"])].append(e)
                assert shift_of(e["window_start"], parse_shift_starts("06:00,14:00,22:00")) == (D1, 3)
                shift3[(e["site"], e["line"], e["station"])]["rows"].append(e)
        got = {(r["site"], r["line"], r["station"]): r for r in rollup(lake, "energy_daily", d)}
        assert got.keys() == per.keys() and len(got) > 10
        for key, rows in per.items():
            row = got[key]
            assert close(row["kwh"], math.fsum(x["kwh"] for x in rows))
            assert row["windows"] == len(rows) and row["metered_s"] == 60.0 * len(rows)
            assert row["counter_resets"] == sum(x["counter_resets"] for x in rows)
            assert row["max_gap_ms"] == max(x["gap_ms"] for x in rows)
            cells = good[d].get((key[0], key[1], "aging_eol"))
            assert row["good_cells"] == (cells["good"] if cells else None)
            assert close(row["kwh_per_good_cell"], row["kwh"] / cells["good"] if cells and cells["good"] else None)
    # The whole run is one night shift, started on D1: energy_shift holds it there, D2's shifts are empty.
    got = {(r["site"], r["line"], r["station"]): r for r in rollup(lake, "energy_shift", D1)}
    assert got.keys() == shift3.keys()
    for key, parts in shift3.items():
        row = got[key]
        assert row["shift"] == 3 and close(row["kwh"], math.fsum(x["kwh"] for x in parts["rows"]))
        cells = [good[d][(key[0], key[1], "aging_eol")]["good"] for d in (D1, D2)
                 if (key[0], key[1], "aging_eol") in good[d]]
        assert row["good_cells"] == (sum(cells) if cells else None)
    assert rollup(lake, "energy_shift", D2) == []


def test_sensor_health_daily_adds_up_the_windows(simulated_lake):
    lake, _ = simulated_lake
    sensors = {s["sensor_id"]: s for s in rows_of(lake, "sensors")}
    health = rows_of(lake, "sensor_health")
    for d in (D1, D2):
        per = defaultdict(list)
        for h in health:
            if h["date"] == d:
                per[h["sensor_id"]].append(h)
        got = {r["sensor_id"]: r for r in rollup(lake, "sensor_health_daily", d)}
        assert got.keys() == per.keys()
        for sid, rows in per.items():
            row = got[sid]
            assert row["windows"] == len(rows) and row["observed"] == sum(x["observed"] for x in rows)
            assert close(row["expected"], math.fsum(x["expected"] for x in rows))
            assert close(row["rate_ratio"], row["observed"] / row["expected"])
            assert row["silent_windows"] == sum(x["observed"] == 0 for x in rows)
            assert row["stuck_windows"] == sum(bool(x["stuck"]) for x in rows)
            assert row["late"] == sum(x["late"] for x in rows)
            assert (row["line"], row["station"], row["parameter"]) == \
                (sensors[sid]["line"], sensors[sid]["station"], sensors[sid]["parameter"])


# --------------------------------------------------------------------------- rows written by hand

def test_quality_daily_counts_rework_scrap_and_grades_with_the_day_before_as_context(tmp_path):
    lake, d, p = tmp_path / "lake", D2, D1
    evs = [
        event(at(d, 10), "u1", "enter", offset=1), event(at(d, 10, 5), "u1", "leave", offset=2),
        event(at(d, 10, 1), "u2", "enter", offset=3), event(at(d, 10, 6), "u2", "scrap", offset=4, reason="moisture"),
        event(at(d, 11), "u3", "enter", offset=5), event(at(d, 11, 5), "u3", "leave", offset=6),
        event(at(d, 12), "u3", "enter", offset=7), event(at(d, 12, 5), "u3", "leave", offset=8),  # rework
        event(at(p, 23, 50), "u4", "enter", offset=9), event(at(d, 0, 10), "u4", "leave", offset=10),
        event(at(p, 20), "u5", "enter", offset=11), event(at(p, 20, 10), "u5", "leave", offset=12),
        event(at(d, 1), "u5", "enter", offset=13), event(at(d, 1, 10), "u5", "leave", offset=14),  # rework after midnight
        event(at(d, 13), "u6", "enter", offset=15),
        event(at(d, 13, 5), "u6", "scrap", offset=16, reason="weld_failure"),
        event(at(d, 13, 5), "u6", "leave", offset=17),  # same ms as its scrap, arrived after it: not good
        event(at(d, 14), "u7", "scrap", offset=18),  # no enter seen, no reason
        *(event(at(d, 15), f"g{i}", "grade", "aging_eol", offset=19 + i, grade=g) for i, g in enumerate("ABCA")),
        event(at(d, 16), "u8", "enter", offset=23, late=True),
    ]
    write_rows(lake, "production_events", evs)
    for day in (p, d):
        build_rollup_day(lake_sources(lake), lake, "quality_daily", day)
    check_quality(lake, d)
    check_quality(lake, p)
    stacking, eol = rollup(lake, "quality_daily", d)[1], rollup(lake, "quality_daily", d)[0]
    assert (stacking["stage"], eol["stage"]) == ("stacking", "aging_eol")
    assert {c: stacking[c] for c in (*COUNTERS, "events", "late_events")} == {
        "units_in": 7, "units_out": 6, "good": 5, "scrapped": 3, "reworked": 2, "first_pass_good": 3,
        "first_pass_scrapped": 3, "events": 16, "late_events": 1}
    assert stacking["yield"] == 5 / 8 and stacking["first_pass_yield"] == 1 / 6
    assert stacking["scrap_by_reason"] == [("moisture", 1), ("unknown", 1), ("weld_failure", 1)]
    assert eol["grades"] == [("A", 2), ("B", 1), ("C", 1)] and eol["yield"] is None and eol["events"] == 4
    assert eol["scrap_by_reason"] == []


@pytest.mark.parametrize("shifts", ["06:00,14:00,22:00", "00:00,12:00", "22:00"])
def test_energy_shift_puts_each_window_in_the_shift_it_starts_in(tmp_path, shifts):
    lake, d = tmp_path / "lake", D2
    times = [at(d, 0, 30), at(d, 5, 59), at(d, 6), at(d, 13, 59), at(d, 14), at(d, 21, 59), at(d, 22),
             at(d + timedelta(days=1), 5, 59), at(d + timedelta(days=1), 6), at(d + timedelta(days=1), 23)]
    energy = [energy_row("L1-coat-c", t, 1.0 + i / 4, resets=int(i % 3 == 0)) for i, t in enumerate(times)]
    energy += [energy_row("dry-room", t, 10.0 + i, line="site") for i, t in enumerate(times)]
    write_rows(lake, "energy_features", energy)
    good_at = [at(d, 7), at(d, 7, 1), at(d, 23), at(d + timedelta(days=1), 3), at(d, 12)]
    evs = [event(t, f"c{i}", "leave", "aging_eol", offset=i) for i, t in enumerate(good_at)]
    evs += [event(at(d, 8), "bad", "enter", "aging_eol", offset=10), event(at(d, 8, 1), "bad", "scrap",
                                                                            "aging_eol", offset=11)]
    write_rows(lake, "production_events", evs)
    specs = rollup_specs(shifts)
    starts = parse_shift_starts(shifts)
    expected = defaultdict(lambda: {"kwh": [], "resets": 0})
    cells = defaultdict(int)
    eol_seen = {shift_of(e["ts"], starts) for e in evs}
    for row in energy:
        slot = expected[(*shift_of(row["window_start"], starts), row["line"], row["station"])]
        slot["kwh"].append(row["kwh"])
        slot["resets"] += row["counter_resets"]
    for t in good_at:
        cells[shift_of(t, starts)] += 1
    days = sorted({k[0] for k in expected})
    sources = lake_sources(lake)
    got = {}
    for day in days:
        build_rollup_day(sources, lake, "energy_shift", day, specs=specs)
        for r in rollup(lake, "energy_shift", day):
            assert r["shift_end"] - r["shift_start"] == next(
                s.end - s.start for s in shifts_of_day(day, starts) if s.number == r["shift"])
            got[(day, r["shift"], r["line"], r["station"])] = r
    assert got.keys() == expected.keys()
    for key, exp in expected.items():
        row = got[key]
        assert close(row["kwh"], math.fsum(exp["kwh"])) and row["counter_resets"] == exp["resets"]
        assert row["windows"] == len(exp["kwh"]) and row["metered_s"] == 60.0 * len(exp["kwh"])
        # A shift in which the line reported no aging_eol event has unknown good cells, not zero.
        n = cells.get(key[:2], 0) if key[2] == "L1" and key[:2] in eol_seen else None
        assert row["good_cells"] == n and close(row["kwh_per_good_cell"], row["kwh"] / n if n else None), key
    # Each window lands in exactly one shift: nothing counted twice or lost.
    assert math.isclose(sum(r["kwh"] for r in got.values()), math.fsum(e["kwh"] for e in energy))


def test_sensor_daily_capability_with_one_sided_flat_unknown_and_non_ctq_sensors(tmp_path):
    lake, d = tmp_path / "lake", D1
    rng = np.random.default_rng(7)
    ids = ["flat", "plain", "two", "unknown", "upper"]
    lsl = np.array([80.0, 80.0, 80.0, np.nan, np.nan])
    usl = np.array([94.0, 94.0, 94.0, np.nan, 90.0])
    key, ts, val = [], [], []
    t0 = ms(at(d, 8))
    for k, name in enumerate(ids):
        for minute in range(30):
            n = 1 if (name == "two" and minute == 4) else 20  # a window of one sample has no std
            key += [k] * n
            ts += [t0 + minute * 60_000 + i * 1000 for i in range(n)]
            drift = 0.05 * minute
            val += [87.0] * n if name == "flat" else list(87.0 + drift + rng.normal(0, 0.8, n))
    w = window_stats(np.array(key), np.array(ts), np.array(val), lsl, usl, sensor_ids=ids)
    rows = [{"sensor_id": w["sensor_id"][i], "unit": "um",
             "window_start": datetime.fromtimestamp(w["window_start"][i] / 1000, UTC),
             "window_end": datetime.fromtimestamp(w["window_end"][i] / 1000, UTC),
             **{c: w[c][i].item() for c in ("count", "mean", "min", "max", "last", "out_of_spec")},
             "std": None if np.isnan(w["std"][i]) else float(w["std"][i])} for i in range(len(w["sensor_id"]))]
    write_rows(lake, "sensor_features_1m", rows)
    write_sensors(lake, [sensor("flat"), sensor("plain", ctq=False), sensor("two"),
                         sensor("upper", lsl=None, usl=90.0)])
    build_rollup_day(lake_sources(lake), lake, "sensor_daily", d)
    got = {r["sensor_id"]: r for r in rollup(lake, "sensor_daily", d)}
    key, ts, val = np.array(key), np.array(ts), np.array(val)
    for k, name in enumerate(ids):
        sel = key == k
        cap = process_capability(val[sel], ts[sel] // 60_000, None if np.isnan(lsl[k]) else lsl[k],
                                 None if np.isnan(usl[k]) else usl[k])
        row = got[name]
        assert row["n"] == int(sel.sum()) and close(row["mean"], cap["mean"])
        assert close(row["sigma_within"], cap["sigma_within"], 1e-7) if name != "flat" else row["sigma_within"] == 0
        assert row["dof_within"] == int(sel.sum()) - 30  # one degree of freedom per window goes to its mean
        if name in ("two", "upper"):
            for c in ("cp", "cpk", "pp", "ppk"):
                assert close(row[c], cap[c], 1e-7), (name, c)
            assert row["cpk"] < row["cp"] if name == "two" else row["cp"] is None and row["cpk"] is not None
            assert row["ppk"] < row["cpk"]  # the drift between windows widens the overall sigma
        else:
            assert row["cp"] is row["cpk"] is row["pp"] is row["ppk"] is None, name
    assert got["unknown"]["ctq"] is False and got["unknown"]["lsl"] is None
    assert got["two"]["windows"] == 30 and got["two"]["out_of_spec"] == sum(
        1 for v, k in zip(val, key, strict=True) if k == 2 and not 80.0 <= v <= 94.0)


def test_every_rollup_declares_what_its_sql_reads_and_writes():
    for name, spec in ROLLUPS.items():
        assert spec.name == name and "date" in spec.schema.names and "date" not in spec.file_schema.names
        assert all(text for text in spec.column_docs().values()), name
        assert set(spec.sort_key) <= set(spec.file_schema.names)
        assert set(spec.bind(D1)) >= {"day"}


@pytest.mark.parametrize(("starts", "spans"), [
    ("06:00,14:00,22:00", [(1, "06:00", "14:00", 0), (2, "14:00", "22:00", 0), (3, "22:00", "06:00", 1)]),
    ("00:00,12:00", [(1, "00:00", "12:00", 0), (2, "12:00", "00:00", 1)]),
    ("07:30", [(1, "07:30", "07:30", 1)]),
])
def test_shifts_of_a_day_cover_24_hours_from_its_first_start(starts, spans):
    shifts = shifts_of_day(D1, parse_shift_starts(starts))
    assert [(s.number, s.start.strftime("%H:%M"), s.end.strftime("%H:%M"), (s.end.date() - D1).days)
            for s in shifts] == spans
    assert all(s.start.date() == D1 for s in shifts) and shifts[-1].end - shifts[0].start == timedelta(days=1)
