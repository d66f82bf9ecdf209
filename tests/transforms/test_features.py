"""Feature math: pure functions against plain-Python references, stream pushes against the pure twins."""

from __future__ import annotations

import math
import statistics
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from schemas.contracts import AssetEntry, EventKind, ProductionEvent, SignalClass, Stage, UnitType
from transforms.features import (
    D2_MOVING_RANGE,
    ENERGY_COLUMNS,
    ENERGY_LINE_COLUMNS,
    QUALITY_COLUMNS,
    SENSOR_HEALTH_COLUMNS,
    SPC_COLUMNS,
    WINDOW_STATS_COLUMNS,
    EnergyWindows,
    QualityWindows,
    SensorHealth,
    SensorTable,
    SpcState,
    WindowStats,
    capability_indices,
    cell_capacity_kwh,
    cusum_series,
    energy_intensity,
    energy_windows,
    ewma_halfwidth,
    ewma_series,
    moving_range_sigma,
    process_capability,
    quality_windows,
    sensor_health,
    to_arrow,
    western_electric,
    window_stats,
)

T0 = 1_700_000_040_000  # a minute boundary
MIN = 60_000


# --------------------------------------------------------------------------- helpers


def assert_columns_equal(got: dict, want: dict, rtol: float = 1e-9, atol: float = 1e-9) -> None:
    assert list(got) == list(want)
    for name in want:
        g, w = got[name], want[name]
        assert len(g) == len(w), name
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True, err_msg=name)
        else:
            np.testing.assert_array_equal(g, w, err_msg=name)


def concat(parts: list[dict]) -> dict:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def random_chunks(n: int, rng: np.random.Generator) -> list[slice]:
    cuts = np.sort(rng.choice(np.arange(1, n), size=min(n - 1, int(rng.integers(1, 40))), replace=False))
    edges = [0, *cuts.tolist(), n]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def jittered_stream(rng: np.random.Generator, n_sensors: int, n: int, span_ms: int, jitter_ms: int):
    """Readings in arrival order: event time rising, each delayed by up to ``jitter_ms``."""
    ts = T0 + np.sort(rng.integers(0, span_ms, n))
    arrival = np.argsort(ts + rng.integers(0, jitter_ms + 1, n), kind="stable")
    sensor = rng.integers(0, n_sensors, n).astype(np.int32)
    value = rng.normal(10.0, 2.0, n).round(1)  # rounding makes ties and flat runs happen
    return sensor[arrival], ts[arrival], value[arrival]


def ref_window_stats(sensor, ts, value, lsl, usl, width):
    groups: dict[tuple[int, int], list[tuple[int, int, float]]] = {}
    for i, (s, t, v) in enumerate(zip(sensor.tolist(), ts.tolist(), value.tolist(), strict=True)):
        groups.setdefault((t // width, s), []).append((t, i, v))
    rows = []
    for w, s in sorted(groups):
        g = groups[(w, s)]
        vals = [v for _, _, v in g]
        lo, hi = lsl[s], usl[s]
        rows.append({
            "sensor_key": s, "sensor_id": str(s), "window_start": w * width, "window_end": (w + 1) * width,
            "count": len(vals), "mean": statistics.fmean(vals),
            "std": statistics.stdev(vals) if len(vals) > 1 else math.nan,
            "min": min(vals), "max": max(vals), "last": max(g, key=lambda r: (r[0], r[1]))[2],
            "out_of_spec": sum((not math.isnan(lo) and v < lo) or (not math.isnan(hi) and v > hi) for v in vals),
        })
    return rows_to_columns(rows, WINDOW_STATS_COLUMNS)


def rows_to_columns(rows: list[dict], names) -> dict:
    out = {}
    for name in names:
        vals = [r[name] for r in rows]
        if name in ("sensor_id", "line", "stage", "reason", "station"):
            out[name] = np.array(vals, dtype=object)
        elif vals and isinstance(vals[0], bool):
            out[name] = np.array(vals, dtype=bool)
        elif vals and isinstance(vals[0], float):
            out[name] = np.array(vals, dtype=np.float64)
        else:
            out[name] = np.array(vals, dtype=np.int64)
    return out


# --------------------------------------------------------------------------- sensor table


def _asset(sensor_id: str, **kw) -> AssetEntry:
    base = dict(sensor_id=sensor_id, path=f"e/s/a/l1/st/eq/{sensor_id}", enterprise="e", site="s", area="a",
                line="l1", station="st", equipment="eq", stage=Stage.COATING, parameter="p", unit="um",
                signal_class=SignalClass.PRODUCT_FEATURE, nominal_rate_hz=10.0)
    base.update(kw)
    return AssetEntry(**base)


def test_sensor_table_from_assets_keys_are_stable_on_upsert():
    table = SensorTable.from_assets([_asset("a", lsl=1.0, usl=2.0, ctq=True), _asset("b")])
    assert table.keys_of(["b", "a", "zz"]).tolist() == [1, 0, -1]
    assert table.ctq.tolist() == [True, False]
    assert math.isnan(table.lsl[1])
    keys = table.upsert([_asset("c", is_energy_meter=True), _asset("a", lsl=0.5, usl=2.0)])
    assert keys.tolist() == [2, 0]
    assert table.lsl[0] == 0.5 and table.is_energy_meter.tolist() == [False, False, True]
    assert table.stage[0] == "coating" and len(table) == 3


# --------------------------------------------------------------------------- window stats


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("width", [MIN, 3_600_000, 1_000])
def test_window_stats_matches_plain_python(seed, width):
    rng = np.random.default_rng(seed)
    sensor, ts, value = jittered_stream(rng, 7, 600, 4 * MIN, 3_000)
    ts[:20] = ts[20]  # equal event times: "last" must go to the later arrival
    lsl = np.array([8.0, np.nan, 5.0, 9.0, np.nan, 0.0, 7.5])
    usl = np.array([12.0, 11.0, np.nan, 11.0, np.nan, 100.0, 12.5])
    got = window_stats(sensor, ts, value, lsl, usl, width)
    assert_columns_equal(got, ref_window_stats(sensor, ts, value, lsl, usl, width))


@pytest.mark.parametrize("seed", range(8))
def test_window_stats_stream_in_random_chunks_equals_batch(seed):
    rng = np.random.default_rng(100 + seed)
    sensor, ts, value = jittered_stream(rng, 20, 5_000, 10 * MIN, 4_000)
    lsl, usl = np.full(20, 7.0), np.full(20, 13.0)
    want = window_stats(sensor, ts, value, lsl, usl)
    stream = WindowStats(SensorTable.from_arrays([str(i) for i in range(20)], lsl=lsl, usl=usl))
    parts = []
    for sl in random_chunks(len(ts), rng):
        out = stream.push(sensor[sl], ts[sl], value[sl])
        assert not out.late.any()  # jitter < allowed lateness: nothing is late
        parts.append(out.rows)
    parts.append(stream.flush_all().rows)
    assert_columns_equal(concat(parts), want)
    assert stream.open_windows == 0


def test_window_stats_variance_is_stable_far_from_zero():
    rng = np.random.default_rng(3)
    value = 1e9 + rng.normal(0, 1e-3, 2_000)
    ts = T0 + np.arange(2_000) * 10
    stream = WindowStats(SensorTable.from_arrays(["x"]))
    for sl in random_chunks(2_000, rng):
        stream.push(np.zeros(sl.stop - sl.start, np.int32), ts[sl], value[sl])
    std = stream.flush_all().rows["std"][0]
    assert std == pytest.approx(statistics.stdev(value.tolist()), rel=1e-6)


def test_window_closes_when_watermark_reaches_its_end_and_late_readings_are_counted():
    table = SensorTable.from_arrays(["a", "b"])
    ws = WindowStats(table, width_ms=MIN, allowed_lateness_ms=5_000)
    out = ws.push([0, 1], [T0 + 1_000, T0 + 2_000], [1.0, 2.0])
    assert len(out.rows["count"]) == 0 and ws.watermark_ms == T0 + 2_000 - 5_000
    out = ws.push([0], [T0 + MIN + 4_999], [3.0])  # watermark one ms short of the window end
    assert len(out.rows["count"]) == 0
    out = ws.push([0], [T0 + MIN + 5_000], [4.0])  # watermark == window end: closes
    assert out.rows["window_start"].tolist() == [T0, T0]
    assert out.rows["sensor_id"].tolist() == ["a", "b"]
    assert out.rows["count"].tolist() == [1, 1]
    # A reading for the closed window is late: flagged, counted, folded into nothing.
    out = ws.push([1, 0], [T0 + 30_000, T0 + MIN + 100], [9.0, 5.0])
    assert out.late.tolist() == [True, False] and ws.late_total == 1
    rows = ws.flush_all().rows
    assert rows["count"].tolist() == [3] and rows["mean"][0] == pytest.approx(4.0)
    # After a flush the flushed windows are closed too.
    assert ws.push([0], [T0 + MIN + 200], [1.0]).late.tolist() == [True]


def test_readings_inside_the_batch_are_judged_against_the_previous_watermark():
    ws = WindowStats(SensorTable.from_arrays(["a"]), allowed_lateness_ms=0)
    out = ws.push([0, 0], [T0 + 2 * MIN, T0 + 10], [1.0, 2.0])  # disorder inside one batch is fine
    assert not out.late.any()
    assert out.rows["window_start"].tolist() == [T0] and out.rows["count"].tolist() == [1]


def test_window_stats_std_is_null_below_two_readings_and_arrow_keeps_it_null():
    rows = window_stats(np.array([0, 1, 1]), np.array([T0, T0, T0 + 1]), np.array([1.0, 2.0, 4.0]),
                        [np.nan, np.nan], [np.nan, np.nan], sensor_ids=["a", "b"])
    assert np.isnan(rows["std"][0]) and rows["std"][1] == pytest.approx(math.sqrt(2.0))
    table = to_arrow(rows)
    assert table.column("std").null_count == 1
    assert table.column("sensor_id").to_pylist() == ["a", "b"]
    assert table.column_names == list(WINDOW_STATS_COLUMNS)


def test_window_stats_refuses_keys_outside_the_table_and_string_ids():
    ws = WindowStats(SensorTable.from_arrays(["a"]))
    with pytest.raises(ValueError, match="outside the sensor table"):
        ws.push([1], [T0], [1.0])
    with pytest.raises(TypeError):
        ws.push(["a"], [T0], [1.0])
    empty = ws.push([], [], [])
    assert len(empty.late) == 0 and list(empty.rows) == list(WINDOW_STATS_COLUMNS)


def test_window_stats_state_is_bounded_by_sensors_and_open_windows():
    rng = np.random.default_rng(5)
    ws = WindowStats(SensorTable.from_arrays([str(i) for i in range(50)]))
    for minute in range(30):
        n = 3_000
        ws.push(rng.integers(0, 50, n).astype(np.int32), T0 + minute * MIN + np.sort(rng.integers(0, MIN, n)),
                rng.normal(size=n))
        assert ws.open_windows <= 2 * 50


# --------------------------------------------------------------------------- sensor health


def ref_sensor_health(sensor, ts, value, rate, width, stuck_min):
    by_sensor: dict[int, list[tuple[int, int, float]]] = {}
    for i, (s, t, v) in enumerate(zip(sensor.tolist(), ts.tolist(), value.tolist(), strict=True)):
        by_sensor.setdefault(s, []).append((t, i, v))
    for lst in by_sensor.values():
        lst.sort()
    active = sorted({t // width for t in ts.tolist()})
    first_win = {s: lst[0][0] // width for s, lst in by_sensor.items()}
    rows = []
    for w in active:
        end = (w + 1) * width
        for s in sorted(by_sensor):
            if first_win[s] > w:
                continue
            lst = by_sensor[s]
            inside = [j for j, r in enumerate(lst) if r[0] // width == w]
            gaps = [lst[j][0] - lst[j - 1][0] for j in inside if j > 0]
            vals = [lst[j][2] for j in inside]
            before = [r[0] for r in lst if r[0] < end]
            expected = rate[s] * width / 1000
            rows.append({
                "sensor_key": s, "sensor_id": str(s), "window_start": w * width, "window_end": end,
                "observed": len(inside), "expected": float(expected), "rate_ratio": len(inside) / expected,
                "max_gap_ms": float(max(gaps)) if gaps else math.nan,
                "since_last_ms": float(end - max(before)) if before else math.nan,
                "stuck": len(vals) >= stuck_min and min(vals) == max(vals), "late": 0,
            })
    cols = rows_to_columns(rows, SENSOR_HEALTH_COLUMNS)
    cols["sensor_key"] = cols["sensor_key"].astype(np.int32)
    return cols


def _health_data(rng):
    sensor, ts, value = jittered_stream(rng, 6, 1_500, 8 * MIN, 2_000)
    silent = (sensor == 3) & (ts > T0 + 2 * MIN)  # sensor 3 dies after two minutes
    sensor, ts, value = sensor[~silent], ts[~silent], value[~silent]
    flat = sensor == 4  # sensor 4 is flat-lined
    value[flat] = 1.5
    late_starter = (sensor == 5) & (ts < T0 + 3 * MIN)  # sensor 5 appears at minute 3
    return sensor[~late_starter], ts[~late_starter], value[~late_starter]


@pytest.mark.parametrize("seed", range(5))
def test_sensor_health_matches_plain_python(seed):
    rng = np.random.default_rng(200 + seed)
    sensor, ts, value = _health_data(rng)
    order = np.lexsort((ts,))  # the reference defines gaps in event-time order
    sensor, ts, value = sensor[order], ts[order], value[order]
    rate = np.array([1.0, 2.0, 0.5, 1.0, 1.0, 4.0])
    got = sensor_health(sensor, ts, value, rate, MIN, stuck_min_count=5)
    assert_columns_equal(got, ref_sensor_health(sensor, ts, value, rate, MIN, 5))
    silent = got["sensor_key"] == 3
    assert got["observed"][silent][-1] == 0 and np.all(np.diff(got["since_last_ms"][silent][-3:]) == MIN)
    assert got["stuck"][got["sensor_key"] == 4].any()


@pytest.mark.parametrize("seed", range(5))
def test_sensor_health_stream_in_random_chunks_equals_batch(seed):
    rng = np.random.default_rng(300 + seed)
    sensor, ts, value = _health_data(rng)
    order = np.argsort(ts, kind="stable")  # gaps are exact for in-order arrival per sensor
    sensor, ts, value = sensor[order], ts[order], value[order]
    rate = np.full(6, 3.0)
    want = sensor_health(sensor, ts, value, rate)
    health = SensorHealth(SensorTable.from_arrays([str(i) for i in range(6)], nominal_rate_hz=rate))
    parts = [health.push(sensor[sl], ts[sl], value[sl]).rows for sl in random_chunks(len(ts), rng)]
    parts.append(health.flush_all().rows)
    assert_columns_equal(concat(parts), want)


def test_sensor_health_reports_late_readings_on_the_next_row():
    health = SensorHealth(SensorTable.from_arrays(["a", "b"], nominal_rate_hz=[1.0, 1.0]), allowed_lateness_ms=0)
    health.push([0, 1], [T0 + 1_000, T0 + 2_000], [1.0, 1.0])
    out = health.push([0], [T0 + MIN + 1], [1.0])
    assert out.rows["observed"].tolist() == [1, 1]
    out = health.push([1, 1, 0], [T0 + 3_000, T0 + 4_000, T0 + 2 * MIN], [1.0, 1.0, 1.0])
    assert out.late.tolist() == [True, True, False] and health.late_total == 2
    assert out.rows["window_start"].tolist() == [T0 + MIN, T0 + MIN]
    assert out.rows["late"].tolist() == [0, 2]
    assert out.rows["observed"].tolist() == [1, 0]
    assert out.rows["since_last_ms"].tolist() == [MIN - 1, 2 * MIN - 2_000]
    assert out.rows["max_gap_ms"][0] == MIN + 1 - 1_000
    assert out.rows["rate_ratio"].tolist() == [1 / 60, 0.0]


# --------------------------------------------------------------------------- SPC: pure functions


def test_ewma_series_hand_computed():
    z, ucl, lcl, alarm = ewma_series([12.0, 8.0, 10.0], mu0=10.0, sigma=1.0, lam=0.2, L=3.0)
    np.testing.assert_allclose(z, [10.4, 9.92, 9.936])
    np.testing.assert_allclose(ucl - 10.0, [0.6, 3 * math.sqrt(0.2 / 1.8 * (1 - 0.8**4)),
                                            3 * math.sqrt(0.2 / 1.8 * (1 - 0.8**6))])
    np.testing.assert_allclose(10.0 - lcl, ucl - 10.0)
    assert not alarm.any()
    assert ewma_halfwidth(1.0, 10_000) == pytest.approx(1.0)  # L sigma sqrt(lam / (2 - lam)) = 3/3


@pytest.mark.parametrize("shift, first_alarm", [(2.0, 2), (1.5, 4), (1.0, None), (0.0, None)])
def test_ewma_series_detects_a_shift(shift, first_alarm):
    _, _, _, alarm = ewma_series(np.full(10, shift), mu0=0.0, sigma=1.0, lam=0.2, L=3.0)
    ref = [i for i in range(10) if abs(shift * (1 - 0.8 ** (i + 1))) > ewma_halfwidth(1.0, i + 1)]
    assert (ref[0] if ref else None) == first_alarm
    assert (int(np.argmax(alarm)) if alarm.any() else None) == first_alarm


def test_cusum_series_hand_computed():
    cpos, cneg, alarm = cusum_series([1.0, 2.0, -1.0, 3.0], mu0=0.0, sigma=1.0, k=0.5, h=5.0)
    np.testing.assert_allclose(cpos, [0.5, 2.0, 0.5, 3.0])
    np.testing.assert_allclose(cneg, [0.0, 0.0, 0.5, 0.0])
    assert not alarm.any()
    cpos, cneg, alarm = cusum_series(np.full(8, 9.75), mu0=10.0, sigma=0.2, k=0.5, h=5.0)
    np.testing.assert_allclose(cneg, 0.15 * np.arange(1, 9))  # 0.25 - K (0.1) per step
    assert alarm.tolist() == [False] * 6 + [True] * 2  # C- > H = 1.0 from the seventh point on
    assert not cpos.any()


def ref_we(d):
    out = []
    for i in range(len(d)):
        w3, w5, w8 = d[max(0, i - 2):i + 1], d[max(0, i - 4):i + 1], d[max(0, i - 7):i + 1]
        out.append((
            abs(d[i]) > 3,
            sum(x > 2 for x in w3) >= 2 or sum(x < -2 for x in w3) >= 2,
            sum(x > 1 for x in w5) >= 4 or sum(x < -1 for x in w5) >= 4,
            len(w8) == 8 and (all(x > 0 for x in w8) or all(x < 0 for x in w8)),
        ))
    return out


@pytest.mark.parametrize("series, rule, fires_at", [
    ([0.0, 0.5, 3.5, 0.0], 1, [2]),
    ([0.0, 2.5, -0.5, 2.2, 0.0, 0.0], 2, [3]),
    ([0.0, 2.5, 2.1, 0.0, 0.0], 2, [2, 3]),
    ([2.5, -2.5, 0.0, 0.0], 2, []),
    ([1.5, 1.2, 0.0, 1.1, 1.9, -3.0], 3, [4]),
    ([0.5] * 7 + [-0.1], 4, []),
    ([0.5] * 9, 4, [7, 8]),
    ([-0.2] * 8, 4, [7]),
])
def test_western_electric_rules_on_constructed_series(series, rule, fires_at):
    rules = western_electric(np.array(series) * 2.0 + 10.0, mu0=10.0, sigma=2.0)
    assert np.flatnonzero(rules[rule - 1]).tolist() == fires_at


@pytest.mark.parametrize("seed", range(5))
def test_western_electric_matches_plain_python(seed):
    d = np.random.default_rng(seed).normal(0.3, 1.5, 200)
    got = np.stack(western_electric(d, 0.0, 1.0), axis=1).tolist()
    assert got == [list(r) for r in ref_we(d.tolist())]


def test_moving_range_sigma():
    assert moving_range_sigma([1.0, 3.0, 2.0]) == pytest.approx(1.5 / D2_MOVING_RANGE)
    assert math.isnan(moving_range_sigma([1.0]))


@pytest.mark.parametrize("mean, sigma, lsl, usl, cp, cpk", [
    (10.0, 1.0, 4.0, 16.0, 2.0, 2.0),
    (12.0, 1.0, 4.0, 16.0, 2.0, 4.0 / 3.0),
    (10.0, 2.0, 4.0, 16.0, 1.0, 1.0),
    (3.0, 1.0, 4.0, 16.0, 2.0, -1.0 / 3.0),
    (12.0, 1.0, np.nan, 16.0, np.nan, 4.0 / 3.0),
    (12.0, 1.0, 9.0, np.nan, np.nan, 1.0),
    (12.0, 0.0, 9.0, 16.0, np.nan, np.nan),
])
def test_capability_indices_known_values(mean, sigma, lsl, usl, cp, cpk):
    got_cp, got_cpk = capability_indices(mean, sigma, lsl, usl)
    np.testing.assert_allclose([got_cp, got_cpk], [cp, cpk], equal_nan=True)


@pytest.mark.parametrize("seed", range(3))
def test_process_capability_against_statistics_module(seed):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(12), 25)
    values = rng.normal(50.0, 1.0, len(groups)) + np.repeat(rng.normal(0, 1.5, 12), 25)  # drift between groups
    got = process_capability(values, groups, 44.0, 58.0)
    parts = [values[groups == g].tolist() for g in range(12)]
    within = math.sqrt(sum(statistics.variance(p) * (len(p) - 1) for p in parts) / sum(len(p) - 1 for p in parts))
    overall = statistics.stdev(values.tolist())
    mean = statistics.fmean(values.tolist())
    assert got["sigma_within"] == pytest.approx(within)
    assert got["sigma_overall"] == pytest.approx(overall)
    assert got["cp"] == pytest.approx(14.0 / (6 * within))
    assert got["cpk"] == pytest.approx(min(58.0 - mean, mean - 44.0) / (3 * within))
    assert got["ppk"] == pytest.approx(min(58.0 - mean, mean - 44.0) / (3 * overall))
    assert got["cpk"] > got["ppk"]


# --------------------------------------------------------------------------- SPC: stream state


def _spc_windows(rng, n_windows=40, shift_at=30):
    """Two CTQ sensors and one plain sensor, 1 Hz, a mean shift on sensor 0 late in the run."""
    ts = T0 + np.arange(n_windows * 60) * 1_000
    sensors, times, values = [], [], []
    for s in range(3):
        v = rng.normal(100.0, 0.5, len(ts)) + np.repeat(rng.normal(0, 0.2, n_windows), 60)
        if s == 0:
            v[shift_at * 60:] += 1.5
        sensors.append(np.full(len(ts), s, np.int32))
        times.append(ts)
        values.append(v)
    sensor, ts, value = np.concatenate(sensors), np.concatenate(times), np.concatenate(values)
    table = SensorTable.from_arrays(["c0", "c1", "plain"], lsl=[97.0, 97.0, 0.0], usl=[103.0, 104.0, 1.0],
                                    target=[100.0, np.nan, np.nan], ctq=[True, True, False])
    return table, sensor, ts, value, window_stats(sensor, ts, value, table.lsl, table.usl, sensor_ids=table.sensor_id)


def test_spc_state_with_given_sigma_equals_the_pure_series():
    rng = np.random.default_rng(11)
    table, sensor, ts, value, windows = _spc_windows(rng)
    spc = SpcState(table, sigma={"c0": 0.25, "c1": 0.3}, capability_windows=10)
    out = spc.push(windows)
    assert list(out) == list(SPC_COLUMNS)
    assert set(out["sensor_id"].tolist()) == {"c0", "c1"}
    for sid, mu0, sigma in (("c0", 100.0, 0.25), ("c1", 100.5, 0.3)):
        mine = out["sensor_id"] == sid
        x = windows["mean"][windows["sensor_id"] == sid]
        z, ucl, lcl, alarm = ewma_series(x, mu0, sigma)
        cpos, cneg, calarm = cusum_series(x, mu0, sigma)
        rules = western_electric(x, mu0, sigma)
        np.testing.assert_allclose(out["ewma"][mine], z)
        np.testing.assert_allclose(out["ewma_ucl"][mine], ucl)
        np.testing.assert_allclose(out["ewma_lcl"][mine], lcl)
        np.testing.assert_array_equal(out["ewma_alarm"][mine], alarm)
        np.testing.assert_allclose(out["cusum_pos"][mine], cpos)
        np.testing.assert_allclose(out["cusum_neg"][mine], cneg)
        np.testing.assert_array_equal(out["cusum_alarm"][mine], calarm)
        for i in range(4):
            np.testing.assert_array_equal(out[f"we_rule{i + 1}"][mine], rules[i])
        assert set(out["sigma_source"][mine].tolist()) == {"given"}
        assert np.all(out["center"][mine] == mu0)
    c0 = out["sensor_id"] == "c0"
    assert out["cusum_alarm"][c0][32:].all() and not out["cusum_alarm"][c0][:30].any()


def test_spc_state_capability_over_the_trailing_windows():
    rng = np.random.default_rng(12)
    table, sensor, ts, value, windows = _spc_windows(rng, n_windows=15)
    out = SpcState(table, capability_windows=10).push(windows)
    for sid, key, lsl, usl in (("c0", 0, 97.0, 103.0), ("c1", 1, 97.0, 104.0)):
        starts = windows["window_start"][windows["sensor_id"] == sid]
        mine = out["sensor_id"] == sid
        for j in (0, 4, 14):
            span = (sensor == key) & (ts >= starts[max(0, j - 9)]) & (ts < starts[j] + MIN)
            ref = process_capability(value[span], ts[span] // MIN, lsl, usl)
            for name in ("cp", "cpk", "pp", "ppk"):
                assert out[name][mine][j] == pytest.approx(ref[name], rel=1e-9), (sid, j, name)


def test_spc_state_baseline_sigma_and_restart():
    rng = np.random.default_rng(13)
    table, _, _, _, windows = _spc_windows(rng, n_windows=30)
    out = SpcState(table, baseline_windows=20).push(windows)
    c0 = out["sensor_id"] == "c0"
    src = out["sigma_source"][c0].tolist()
    assert src == ["spec"] * 19 + ["baseline"] * 11
    assert np.all(out["sigma"][c0][:19] == 1.0)  # (103 - 97) / 6
    x = windows["mean"][windows["sensor_id"] == "c0"]
    sigma = moving_range_sigma(x[:20])
    assert out["sigma"][c0][19] == pytest.approx(sigma)
    z, _, _, _ = ewma_series(x[19:], 100.0, sigma)
    np.testing.assert_allclose(out["ewma"][c0][19:], z)  # the chart restarts at the 20th window
    cpos, _, _ = cusum_series(x[19:], 100.0, sigma)
    np.testing.assert_allclose(out["cusum_pos"][c0][19:], cpos)


def test_spc_state_one_sided_spec_waits_for_the_baseline():
    windows = window_stats(np.zeros(300, np.int32), T0 + np.arange(300) * 1_000,
                           np.random.default_rng(1).normal(12.0, 1.0, 300), [np.nan], [20.0])
    table = SensorTable.from_arrays(["moisture"], usl=[20.0], ctq=[True])
    out = SpcState(table, baseline_windows=3).push(windows)
    assert np.isnan(out["ewma"][:2]).all() and out["sigma_source"][:2].tolist() == [None, None]
    assert out["center"][2] == pytest.approx(windows["mean"][:3].mean())
    assert np.isnan(out["cp"]).all() and np.isfinite(out["cpk"]).all()


def test_spc_state_window_by_window_equals_one_push():
    rng = np.random.default_rng(14)
    table, _, _, _, windows = _spc_windows(rng, n_windows=25)
    whole = SpcState(table, baseline_windows=10, capability_windows=5).push(windows)
    spc = SpcState(table, baseline_windows=10, capability_windows=5)
    parts = []
    for start in np.unique(windows["window_start"]):
        sel = windows["window_start"] == start
        parts.append(spc.push({k: v[sel] for k, v in windows.items()}))
    assert_columns_equal(concat(parts), whole, rtol=1e-12)


# --------------------------------------------------------------------------- quality


def _quality_events():
    e = []
    t = T0
    # u1: good first pass. u2: scrapped at coating. u3: good, then back for rework, good again.
    # u4: scrapped on its rework visit. u5: graded at aging_eol.
    e += [(t + 1_000, "l1", "coating", "enter", "u1", None, None), (t + 5_000, "l1", "coating", "leave", "u1", None, None)]
    e += [(t + 2_000, "l1", "coating", "enter", "u2", None, None),
          (t + 6_000, "l1", "coating", "scrap", "u2", "coating_defect", None),
          (t + 7_000, "l1", "coating", "leave", "u2", None, None)]
    e += [(t + 3_000, "l1", "coating", "enter", "u3", None, None), (t + 8_000, "l1", "coating", "leave", "u3", None, None),
          (t + MIN + 1_000, "l1", "coating", "enter", "u3", None, None),
          (t + MIN + 9_000, "l1", "coating", "leave", "u3", None, None)]
    e += [(t + 4_000, "l1", "coating", "enter", "u4", None, None), (t + 9_000, "l1", "coating", "leave", "u4", None, None),
          (t + MIN + 2_000, "l1", "coating", "enter", "u4", None, None),
          (t + MIN + 3_000, "l1", "coating", "scrap", "u4", "pinholes", None)]
    e += [(t + 10_000, "l2", "aging_eol", "grade", "u5", None, "A"), (t + 11_000, "l2", "aging_eol", "grade", "u6", None, "C"),
          (t + 12_000, "l2", "aging_eol", "grade", "u7", None, "A"), (t + 13_000, "l2", "aging_eol", "measure", "u7", None, None)]
    return [list(c) for c in zip(*e, strict=True)]


def test_quality_windows_hand_computed():
    ts, line, stage, kind, unit, reason, grade = _quality_events()
    rows = quality_windows(ts, line, stage, kind, unit, reason, grade, site=["s1"] * len(ts))
    assert list(rows) == list(QUALITY_COLUMNS) and set(rows["site"].tolist()) == {"s1"}
    got = {(r_line, r_stage, start): i for i, (r_line, r_stage, start) in
           enumerate(zip(rows["line"], rows["stage"], rows["window_start"].tolist(), strict=True))}
    first = got[("l1", "coating", T0)]
    assert {c: int(rows[c][first]) for c in QUALITY_COLUMNS[5:16]} == {
        "units_in": 4, "units_out": 4, "good": 3, "scrapped": 1, "reworked": 0, "first_pass_good": 3,
        "first_pass_scrapped": 1, "grade_a": 0, "grade_b": 0, "grade_c": 0, "grade_other": 0}
    assert rows["yield"][first] == pytest.approx(0.75) and rows["first_pass_yield"][first] == pytest.approx(0.75)
    second = got[("l1", "coating", T0 + MIN)]
    assert rows["units_in"][second] == 2 and rows["reworked"][second] == 2
    assert rows["good"][second] == 1 and rows["scrapped"][second] == 1 and rows["first_pass_good"][second] == 0
    assert rows["yield"][second] == pytest.approx(0.5) and np.isnan(rows["first_pass_yield"][second])
    # Over both windows: 4 units entered first time, u1 alone was good without rework.
    fpg = rows["first_pass_good"][[first, second]].sum() - rows["reworked"][[first, second]].sum()
    assert fpg / (rows["first_pass_good"][[first, second]].sum() + rows["first_pass_scrapped"][[first, second]].sum()) == 0.25
    eol = got[("l2", "aging_eol", T0)]
    assert (rows["grade_a"][eol], rows["grade_b"][eol], rows["grade_c"][eol]) == (2, 0, 1)
    assert np.isnan(rows["yield"][eol])
    assert rows["scrap_by_reason"][first] == {"coating_defect": 1}
    assert rows["scrap_by_reason"][second] == {"pinholes": 1} and rows["scrap_by_reason"][eol] == {}
    table = to_arrow(rows)
    assert table.column("scrap_by_reason").to_pylist()[first] == [("coating_defect", 1)]
    assert table.column("first_pass_yield").null_count == 2


@pytest.mark.parametrize("seed", range(5))
def test_quality_stream_in_random_chunks_equals_batch(seed):
    rng = np.random.default_rng(400 + seed)
    cols = [[] for _ in range(7)]
    t = T0
    for u in range(300):
        line, st = f"l{rng.integers(1, 3)}", str(rng.choice(["coating", "filling", "aging_eol"]))
        for _visit in range(1 + int(rng.random() < 0.2)):
            t += int(rng.integers(200, 2_000))
            events = [(t, "enter", None, None)]
            if rng.random() < 0.1:
                events.append((t + 500, "scrap", str(rng.choice(["moisture", "weld_failure"])), None))
            if st == "aging_eol":
                events.append((t + 700, "grade", None, str(rng.choice(["A", "B", "C"]))))
            events.append((t + 1_000, "leave", None, None))
            for ts, kind, reason, grade in events:
                for c, val in zip(cols, (ts, line, st, kind, f"u{u}", reason, grade), strict=True):
                    c.append(val)
    # The events topic is keyed by unit: one unit's events stay in order, units interleave freely.
    ts = np.array(cols[0])
    unit_delay = {u: int(rng.integers(0, 3_000)) for u in set(cols[4])}
    arrival = np.argsort(ts + np.array([unit_delay[u] for u in cols[4]]), kind="stable")
    cols = [[c[i] for i in arrival] for c in cols]
    want = quality_windows(*cols)
    q = QualityWindows()
    rows = []
    for sl in random_chunks(len(arrival), rng):
        out = q.push(*(c[sl] for c in cols))
        assert not out.late.any()
        rows.append(out.rows)
    rows.append(q.flush_all().rows)
    assert_columns_equal(concat(rows), want)
    assert sum(sum(d.values()) for d in want["scrap_by_reason"]) == want["scrapped"].sum() > 0


def test_quality_late_events_are_flagged_but_still_update_the_unit():
    q = QualityWindows(allowed_lateness_ms=0)
    q.push([T0 + 1_000, T0 + MIN + 1_000], ["l1"] * 2, ["coating"] * 2, ["enter", "enter"], ["u1", "u9"])
    out = q.push([T0 + 2_000, T0 + MIN + 2_000], ["l1"] * 2, ["coating"] * 2, ["scrap", "enter"], ["u1", "u1"],
                 ["moisture", None])
    assert out.late.tolist() == [True, False] and q.late_total == 1
    rows = q.flush_all().rows
    assert rows["reworked"].tolist() == [1] and rows["scrapped"].tolist() == [0]


def test_quality_push_events_and_bounded_unit_memory():
    base = datetime.fromtimestamp(T0 / 1000, tz=UTC)

    def ev(i, sec, kind, unit):
        return ProductionEvent(event_id=f"e{i}", ts=base + timedelta(seconds=sec), site="s", line="l1",
                               stage=Stage.FILLING, station="l1-fill", unit_id=unit, unit_type=UnitType.CELL,
                               kind=kind, reason="leak" if kind is EventKind.SCRAP else None)

    q = QualityWindows(rework_memory_ms=10 * MIN)
    q.push_events([ev(0, 1, EventKind.ENTER, "c1"), ev(1, 2, EventKind.SCRAP, "c1"), ev(2, 3, EventKind.ENTER, "c2")])
    assert q.tracked_units == 2
    out = q.push_events([ev(3, 3600, EventKind.ENTER, "c3")])
    assert q.tracked_units == 1  # c1 and c2 fell out of the rework memory
    assert out.rows["stage"].tolist() == ["filling"] and out.rows["scrapped"].tolist() == [1]
    assert out.rows["site"].tolist() == ["s"] and out.rows["scrap_by_reason"].tolist() == [{"leak": 1}]


# --------------------------------------------------------------------------- energy


def _energy_table():
    return SensorTable.from_arrays(
        ["m1", "m2", "m3", "temp"], is_energy_meter=[True, True, True, False], nominal_rate_hz=[1.0, 1.0, 1.0, 1.0],
        line=["l1", "l1", "l2", "l1"], station=["l1-dryer", "l1-coater", "l2-dryer", "l1-dryer"],
        stage=["coating"] * 4, site=["s"] * 4)


def test_energy_windows_hand_computed_reset_gap_out_of_order():
    table = _energy_table()
    s = 1_000
    readings = [
        (0, T0 + 0 * s, 100.0), (0, T0 + 10 * s, 101.0), (0, T0 + 20 * s, 102.5),
        (0, T0 + 15 * s, 101.7),  # out of order: skipped, not a reset
        (0, T0 + 20 * s, 103.0),  # same time again: skipped
        (0, T0 + 70 * s, 0.4),  # counter reset: 0.4 kWh since zero, in the second window
        (0, T0 + 80 * s, 1.0),
        (1, T0 + 5 * s, 50.0), (1, T0 + 50 * s, 52.0),  # 45 s step > 5 periods: a gap
        (2, T0 + 30 * s, 7.0), (2, T0 + 90 * s, 8.0),
        (3, T0 + 30 * s, 25.0),  # not a meter: ignored
    ]
    sensor, ts, value = (np.array(c) for c in zip(*readings, strict=True))
    rows, line_rows = energy_windows(table, sensor, ts, value)
    assert list(rows) == list(ENERGY_COLUMNS) and list(line_rows) == list(ENERGY_LINE_COLUMNS)
    got = {(sid, start): i for i, (sid, start) in enumerate(zip(rows["sensor_id"], rows["window_start"].tolist(), strict=True))}
    m1a, m1b = got[("m1", T0)], got[("m1", T0 + MIN)]
    # Inside one batch the 15 s reading is simply sorted into place; only the repeated time is skipped.
    assert rows["kwh"][m1a] == pytest.approx(2.5) and rows["out_of_order"][m1a] == 1 and rows["readings"][m1a] == 4
    assert rows["kwh"][m1b] == pytest.approx(1.0) and rows["counter_resets"][m1b] == 1
    assert rows["gap_ms"][m1a] == 10_000 and rows["gap_ms"][m1b] == 50_000 and rows["gaps"][m1b] == 2
    m2 = got[("m2", T0)]
    assert rows["kwh"][m2] == pytest.approx(2.0) and rows["gaps"][m2] == 1 and rows["gap_ms"][m2] == 45_000
    assert np.isnan(rows["gap_ms"][got[("m3", T0)]])  # a first reading is no step
    assert rows["kwh"][got[("m3", T0)]] == 0.0 and rows["kwh"][got[("m3", T0 + MIN)]] == pytest.approx(1.0)
    assert rows["line"][m1a] == "l1" and rows["station"][m1a] == "l1-dryer" and rows["stage"][m1a] == "coating"
    lines = {(ln, start): (kwh, meters) for ln, start, kwh, meters in zip(
        line_rows["line"], line_rows["window_start"].tolist(), line_rows["kwh"].tolist(), line_rows["meters"].tolist(),
        strict=True)}
    assert lines == {("l1", T0): (pytest.approx(4.5), 2), ("l2", T0): (0.0, 1),
                     ("l1", T0 + MIN): (pytest.approx(1.0), 1), ("l2", T0 + MIN): (pytest.approx(1.0), 1)}


def test_energy_reading_behind_an_earlier_batch_is_skipped_not_a_reset():
    energy = EnergyWindows(_energy_table())
    energy.push([0, 0], [T0, T0 + 20_000], [100.0, 102.0])
    energy.push([0, 0], [T0 + 10_000, T0 + 30_000], [101.0, 103.0])
    rows = energy.flush_all().rows
    assert rows["kwh"].tolist() == [3.0] and rows["counter_resets"].tolist() == [0]
    assert rows["out_of_order"].tolist() == [1] and rows["readings"].tolist() == [3]


def _meter_stream(rng, n=3_000, reset=True, jitter_ms=4_000):
    sensor = rng.integers(0, 4, n).astype(np.int32)
    ts = T0 + np.sort(rng.integers(0, 15 * MIN, n))
    value = np.zeros(n)
    for m in range(4):
        mine = sensor == m
        c = np.cumsum(rng.uniform(0.0, 0.01, mine.sum()))
        if reset:
            c[mine.sum() // 2:] -= c[mine.sum() // 2] - 0.003  # one reset half-way
        value[mine] = c
    arrival = np.argsort(ts + rng.integers(0, jitter_ms, n), kind="stable")
    return sensor[arrival], ts[arrival], value[arrival]


def _true_energy(sensor, ts, value, meter):
    o = np.argsort(ts[sensor == meter], kind="stable")
    v = value[sensor == meter][o]
    d = np.diff(v)
    return float(np.where(d < 0, v[1:], d).sum())


@pytest.mark.parametrize("seed", range(4))
def test_energy_stream_in_random_chunks_equals_batch(seed):
    rng = np.random.default_rng(500 + seed)
    table = _energy_table()
    sensor, ts, value = _meter_stream(rng)
    order = np.argsort(ts, kind="stable")  # in event-time order the batch result is exact
    want_rows, want_lines = energy_windows(table, sensor[order], ts[order], value[order])
    energy = EnergyWindows(table)
    rows, lines = [], []
    for sl in random_chunks(len(ts), rng):
        out = energy.push(sensor[order][sl], ts[order][sl], value[order][sl])
        rows.append(out.rows)
        lines.append(out.line_rows)
    out = energy.flush_all()
    assert_columns_equal(concat([*rows, out.rows]), want_rows)
    assert_columns_equal(concat([*lines, out.line_rows]), want_lines)
    for m in range(3):
        assert want_rows["kwh"][want_rows["sensor_key"] == m].sum() == pytest.approx(_true_energy(sensor, ts, value, m))


@pytest.mark.parametrize("seed", range(4))
def test_energy_is_conserved_with_disorder_and_late_readings(seed):
    rng = np.random.default_rng(600 + seed)
    table = _energy_table()
    sensor, ts, value = _meter_stream(rng, reset=False, jitter_ms=30_000)
    energy = EnergyWindows(table, allowed_lateness_ms=1_000)  # jitter of 30 s: some readings are late
    rows, late, baseline = [], [], {}
    for sl in random_chunks(len(ts), rng):
        for m in set(sensor[sl].tolist()) - set(baseline):
            mine = sensor[sl] == m
            baseline[m] = value[sl][mine][np.argmin(ts[sl][mine])]  # the meter's first reading sets it
        out = energy.push(sensor[sl], ts[sl], value[sl])
        rows.append(out.rows)
        late.append(out.late)
    rows.append(energy.flush_all().rows)
    rows = concat(rows)
    assert energy.late_total == np.concatenate(late).sum() > 0
    for m in range(3):
        mine = rows["sensor_key"] == m
        reported = rows["kwh"][mine].sum() + rows["late_kwh"][mine].sum() + energy.pending_late_kwh[m]
        # Skipped and late readings only move energy between windows: the total telescopes.
        assert reported == pytest.approx(value[sensor == m].max() - baseline[m], rel=1e-9)


def test_energy_intensity():
    per_cell, per_kwh = energy_intensity([120.0, 5.0], [1_000, 0], cell_capacity_kwh(50.0, 3.6))
    assert per_cell[0] == pytest.approx(0.12) and per_kwh[0] == pytest.approx(0.12 / 0.18)
    assert np.isnan(per_cell[1]) and np.isnan(per_kwh[1])


def test_energy_ignores_other_sensors_and_flags_late_only_for_meters():
    energy = EnergyWindows(_energy_table(), allowed_lateness_ms=0)
    energy.push([0, 3], [T0 + 2 * MIN, T0 + 2 * MIN], [5.0, 1.0])
    out = energy.push([0, 3, 1, 1], [T0 + 10, T0 + 10, T0 + 1, T0 + 2], [4.0, 1.0, 7.0, 7.5])
    assert out.late.tolist() == [True, False, True, True] and energy.late_total == 3
    assert energy.pending_late_kwh.tolist() == [0.0, 0.5, 0.0, 0.0]  # m2's late step is kept, m1's is stale
    rows = energy.flush_all().rows
    assert rows["sensor_id"].tolist() == ["m1"] and rows["late_kwh"].tolist() == [0.0]


# --------------------------------------------------------------------------- snapshot and restore


def _snapshot_table() -> SensorTable:
    """Six sensors: two CTQ (one with an infinite lower limit), a meter pair, one without limits."""
    return SensorTable.from_arrays(
        [f"s{i}" for i in range(6)],
        lsl=[80.0, -math.inf, 1.0, np.nan, np.nan, np.nan], usl=[94.0, 5.0, 2.0, np.nan, np.nan, np.nan],
        target=[87.0, np.nan, np.nan, np.nan, np.nan, np.nan], nominal_rate_hz=[10.0, 5.0, 2.0, 1.0, 1.0, 1.0],
        ctq=[True, True, False, False, False, False], is_energy_meter=[False, False, False, True, True, False],
        site=["ref"] * 6, line=["l1", "l1", "l2", "l1", "l2", "l2"], station=[f"st{i}" for i in range(6)],
        stage=["coating"] * 6)


def _snapshot_batches(seed: int = 7, n: int = 6, size: int = 400) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Micro-batches over ~12 minutes with disorder and some late readings; meters count up with resets."""
    rng = np.random.default_rng(seed)
    out = []
    for b in range(n):
        s = rng.integers(0, 6, size)
        t = T0 + b * 2 * MIN + rng.integers(0, 2 * MIN, size)
        t[:5] -= 3 * MIN  # late for windows the watermark closed in an earlier batch
        v = 87.0 + rng.normal(0, 1, size)
        meter = (s == 3) | (s == 4)
        v[meter] = (t[meter] - T0) / 1000.0 + 10 * (t[meter] > T0 + 7 * MIN)  # a jump, then a reset below
        v[meter & (t > T0 + 9 * MIN)] -= 400
        v[s == 5] = 1.0  # flat-lined: stuck
        out.append((s, t, v))
    return out


def _roundtrip(obj, *args):
    """restore(JSON of snapshot()): what a checkpoint does, minus the file."""
    from transforms.checkpoint import dump_snapshot, load_snapshot

    snap = obj.snapshot()
    return type(obj).restore(load_snapshot(type(snap), dump_snapshot(snap)), *args)


def _assert_same_output(a, b) -> None:
    for field in ("rows", "line_rows", "late"):
        if hasattr(a, field):
            x, y = getattr(a, field), getattr(b, field)
            if isinstance(x, dict):
                assert_columns_equal(x, y, rtol=0, atol=0)
            else:
                np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("cls", [WindowStats, SensorHealth, EnergyWindows])
@pytest.mark.parametrize("split", [0, 1, 3, 5])
def test_sensor_state_restored_from_its_snapshot_continues_identically(cls, split):
    """Snapshot after ``split`` batches, restore through JSON, and feed both the rest: same rows."""
    table = _snapshot_table()
    live = cls(table, MIN, 5_000)
    batches = _snapshot_batches()
    for s, t, v in batches[:split]:
        live.push(s, t, v)
    table2 = SensorTable.restore(table.snapshot())
    restored = _roundtrip(live, table2)
    for s, t, v in batches[split:]:
        _assert_same_output(live.push(s, t, v), restored.push(s, t, v))
    _assert_same_output(live.flush_all(), restored.flush_all())
    assert live.late_total == restored.late_total > 0


@pytest.mark.parametrize("split", [0, 2, 5])
def test_spc_state_restored_from_its_snapshot_continues_identically(split):
    table = _snapshot_table()
    windows = WindowStats(table, MIN, 5_000)
    rows = [windows.push(s, t, v).rows for s, t, v in _snapshot_batches(n=8)] + [windows.flush_all().rows]
    live = SpcState(table, baseline_windows=3, capability_windows=4, sigma={"s0": 0.5})
    for r in rows[:split]:
        live.push(r)
    restored = _roundtrip(live, SensorTable.restore(table.snapshot()))
    assert np.isneginf(restored._mu0).any() == np.isneginf(live._mu0).any()  # infinities survive JSON
    for r in rows[split:]:
        assert_columns_equal(live.push(r), restored.push(r), rtol=0, atol=0)


@pytest.mark.parametrize("split", [0, 40, 90])
def test_quality_windows_restored_from_their_snapshot_continue_identically(split):
    rng = np.random.default_rng(3)
    n = 150
    ts = np.sort(T0 + rng.integers(0, 10 * MIN, n))
    ts[100:103] -= 4 * MIN  # late events
    kind = rng.choice(["enter", "leave", "scrap", "grade"], n).tolist()
    unit = [f"u{i}" for i in rng.integers(0, 20, n)]
    stage = rng.choice(["coating", "formation"], n).tolist()
    reason = rng.choice(["burr", "short", None], n).tolist()
    grade = rng.choice(["A", "B", "C", "X"], n).tolist()
    live = QualityWindows(MIN, 5_000, rework_memory_ms=5 * MIN)

    def push(q, lo, hi):
        return q.push(ts[lo:hi], ["l1"] * (hi - lo), stage[lo:hi], kind[lo:hi], unit[lo:hi], reason[lo:hi],
                      grade[lo:hi], ["ref"] * (hi - lo))

    push(live, 0, split)
    restored = _roundtrip(live)
    assert restored.tracked_units == live.tracked_units
    for lo in range(split, n, 17):
        a, b = push(live, lo, min(lo + 17, n)), push(restored, lo, min(lo + 17, n))
        assert_columns_equal(a.rows, b.rows, rtol=0, atol=0)
    assert_columns_equal(live.flush_all().rows, restored.flush_all().rows, rtol=0, atol=0)
    assert live.late_total == restored.late_total > 0


def test_non_finite_parameters_survive_a_snapshot():
    energy = _roundtrip(EnergyWindows(_snapshot_table(), MIN, gap_factor=math.inf), _snapshot_table())
    assert energy.gap_factor == math.inf
    spc = _roundtrip(SpcState(_snapshot_table(), sigma={"s0": math.nan, "s1": 2.0}), _snapshot_table())
    assert math.isnan(spc._given["s0"]) and spc._given["s1"] == 2.0


def test_sensor_table_restored_from_its_snapshot_keeps_every_key():
    table = _snapshot_table()
    restored = _roundtrip(table)
    assert restored.keys_of(["s5", "s0", "nope"]).tolist() == [5, 0, -1]
    for name in ("sensor_id", "lsl", "usl", "target", "nominal_rate_hz", "ctq", "is_energy_meter", "site", "line",
                 "station", "stage"):
        np.testing.assert_array_equal(getattr(restored, name), getattr(table, name), err_msg=name)
    assert restored.upsert([]).tolist() == []
    assert SensorTable.from_arrays(["s0"]).keys_of(["s0"]).tolist() == [0]


def test_a_snapshot_that_does_not_fit_its_class_is_refused():
    from transforms.checkpoint import dump_snapshot, load_snapshot

    stats = WindowStats(_snapshot_table(), MIN)
    stats.push(*_snapshot_batches(n=1)[0])
    snap = load_snapshot(type(stats.snapshot()), dump_snapshot(stats.snapshot()))
    cols = dict(snap.open.cols)
    cols["mean"] = cols["mean"][:-1]  # one value short
    bad = type(snap)(snap.clock, type(snap.open)(snap.open.keys, cols), snap.late_total)
    with pytest.raises(ValueError, match="open window column 'mean'"):
        WindowStats.restore(bad, _snapshot_table())
    with pytest.raises(ValueError, match="missing"):
        load_snapshot(type(snap), b'{"clock": {}, "open": {}}')
