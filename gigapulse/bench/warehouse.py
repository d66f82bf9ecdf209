"""``gigapulse bench warehouse``: the query set over a big lake, beside chDB, Polars and a naive DuckDB.

1. **Build once, cache.** ``<cache>/warehouse-<readings>/`` holds a lake of about ``--readings``
   readings of the reference plant (seed 42) with its events and every feature table, built without
   a broker by :mod:`gigapulse.bench.lakebuild` (simulator → the stream's partition processors →
   LakeWriter, checkpoints included), a naive single-file dump of the raw readings and events (taken
   before compaction, in the stream's file order: unsorted), then compacted by
   :func:`transforms.warehouse.maintenance.compact`. ``build.json`` records the plan and the build
   and compaction figures; a later run with the same plan reuses all of it (``--rebuild`` starts
   over), so the compaction figures of a reused lake are those of its build.
2. **Run the query set.** Each engine (:mod:`gigapulse.bench.warehouse_peers`) answers each query
   once untimed (warm caches, as an analyst's second query meets them); that answer must equal
   gigapulse's (same keys, numbers within 1e-7 relative) or the engine's times for that query are
   not reported. Then ``--runs`` timed runs, round the engines (run 1 of each, run 2 ...): median
   and min–max spread, and the ratio to gigapulse per run
   (a checked run longer than a minute is reported alone: the naive peer's window functions over
   100M readings take that long).

Parameters come from the lake's own span (a lake of 100M readings is about five hours of the
reference plant at its nominal rates, 5,602 readings/s): "yesterday" and "one day" are the UTC day
with the most simulated time, "now" is the minute after the last reading, the hour is the first
whole hour of data, the 30 days end on the last day.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa

from gigapulse.bench.harness import PLANT, BenchError
from gigapulse.bench.report import (
    TARGETS,
    console,
    environment,
    fmt_num,
    fmt_spread,
    markdown_table,
    progress,
    spread,
)

#: The start of every bench lake: a Monday, 21:00 UTC, so a lake of a few hours spans two dates.
START = datetime(2026, 1, 5, 21, 0, tzinfo=UTC)
#: Each query's grain: the columns that identify a row of its answer.
KEYS = {
    "q1_last_value_per_sensor": ("sensor_id",),
    "q2_minute_stats_of_station": ("sensor_id", "window_start"),
    "q3_hourly_mean_per_parameter": ("hour", "stage", "parameter", "unit"),
    "q4_out_of_spec_last_24h": ("sensor_id",),
    "q5_daily_scrap_and_energy_per_line": ("line", "day"),
    "q6_below_a_cells_areal_loading": ("cell_id", "roll_id"),
    "q7_sensor_gaps_last_day": ("sensor_id",),
    "q8_daily_cpk_per_ctq_parameter": ("line", "station", "parameter", "day"),
}
REL_TOL = 1e-7
#: An engine whose checked (untimed) run of a query took longer is not run again: that run is its time.
LONG_RUN_S = 60.0


@dataclass
class WarehouseOptions:
    readings: int = 100_000_000
    runs: int = 3
    rebuild: bool = False
    workers: int = 2
    seed: int = 42
    cache: Path = Path("var/bench")
    engines: tuple[str, ...] = ("gigapulse", "chDB", "Polars", "naive DuckDB")


# --------------------------------------------------------------------------- the cached lake

def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _dump_naive(lake: Path, naive: Path) -> None:
    """The raw readings and events as one Parquet file each, in the stream's file order (no sort, no date)."""
    import duckdb

    from transforms.warehouse.sqltext import sql_string

    naive.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    try:
        con.execute("SET preserve_insertion_order = true")
        for table in ("readings", "production_events"):
            files = sorted(str(p) for p in (lake / table).glob("date=*/*.parquet"))
            if not files:
                raise BenchError(f"the built lake has no {table} files")
            listed = "[" + ", ".join(sql_string(f) for f in files) + "]"
            con.execute(f"COPY (SELECT * FROM read_parquet({listed}, hive_partitioning = false)) "
                        f"TO {sql_string(str(naive / f'{table}.parquet'))} (FORMAT parquet, COMPRESSION zstd)")
    finally:
        con.close()


def _files_per_date(lake: Path) -> dict[str, int]:
    from transforms.warehouse.maintenance import lake_status

    _, tables = lake_status(lake)
    return {t.table: t.files_per_date_max for t in tables if t.compacted_files or t.hot_files}


def cached_lake(opts: WarehouseOptions) -> tuple[Path, dict[str, Any]]:
    """The bench lake for ``opts`` (built, dumped and compacted if not cached) and its build record."""
    from gigapulse.bench.lakebuild import build_lake, plan_for_readings, reuse_or_clear
    from schemas.asset_model import load_plant
    from transforms.warehouse.maintenance import compact

    plant = load_plant(PLANT)
    plan = plan_for_readings(plant, opts.readings, START, seed=opts.seed)
    # An outage every hour, two minutes long; a lake of less than two hours (a test's) gets one, shorter.
    plan = replace(plan, outage_every_s=min(3600, max(plan.seconds // 2, 1)), outage_s=min(120, max(plan.seconds // 6, 1)))
    root = Path(opts.cache) / f"warehouse-{opts.readings}"
    record_path = root / "build.json"
    record = reuse_or_clear(root, plan, opts.rebuild)
    if record is not None:
        console.print(f"reusing the lake in {root} (built {record['built_at']}; --rebuild to start over)")
        return root, record
    lake = root / "lake"
    with progress() as bar:
        task = bar.add_task(f"building {opts.readings:,} readings", total=plan.seconds, info="simulated s")
        build = build_lake(plant, lake, plan, workers=opts.workers,
                           on_progress=lambda s: bar.update(task, completed=s))
    hot_bytes = _du(lake)
    with console.status("dumping the raw readings and events into single files (the naive peer) ..."):
        t0 = time.perf_counter()
        _dump_naive(lake, root / "naive")
        dump_s = time.perf_counter() - t0
    with progress() as bar:
        task = bar.add_task("compacting", total=None, info="")
        rep = compact(lake, root / "gigapulse.duckdb", grace_s=0, progress=lambda m: bar.update(task, info=m))
    rows = sum(t.rows_written for t in rep.tables.values())
    record = {
        "plan": plan.to_dict(), "complete": True, "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "build": {"readings": build.readings, "events": build.events, "frames_dropped": build.frames_dropped,
                  "wall_s": build.wall_s, "workers": build.workers, "end": build.end.isoformat(),
                  "hot_bytes": hot_bytes, "per_worker": build.per_worker},
        "naive_dump_s": dump_s,
        "compaction": {"wall_s": rep.seconds, "rows": rows, "rows_per_s": rows / rep.seconds if rep.seconds else None,
                       "readings_rows": rep.tables["readings"].rows_written,
                       "bytes_written": sum(t.bytes_written for t in rep.tables.values()),
                       "hot_files_merged": sum(t.hot_files_merged for t in rep.tables.values())},
        "lake_bytes": _du(lake), "readings_bytes": _du(lake / "readings"),
        "files_per_table_and_date": _files_per_date(lake),
    }
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return root, record


def bench_params(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each query's parameters, from the lake's span (see the module docstring)."""
    start = datetime.fromisoformat(record["plan"]["start"])
    end = datetime.fromisoformat(record["build"]["end"])
    now = end if end == end.replace(second=0, microsecond=0) else end.replace(second=0, microsecond=0) + timedelta(minutes=1)
    days: dict[date, float] = {}
    t = start
    while t < end:
        nxt = min(end, datetime.combine(t.date() + timedelta(days=1), datetime.min.time(), UTC))
        days[t.date()] = (nxt - t).total_seconds()
        t = nxt
    busiest = max(days, key=lambda d: (days[d], d))
    hour = start.replace(minute=0, second=0, microsecond=0)
    if hour < start and hour + timedelta(hours=2) <= end:
        hour += timedelta(hours=1)
    last = (now - timedelta(milliseconds=1)).date()
    return {
        "q1_last_value_per_sensor": {"line": "L1"},
        "q2_minute_stats_of_station": {"station": "L1-coat-c", "hour": hour},
        "q3_hourly_mean_per_parameter": {"day": busiest},
        "q4_out_of_spec_last_24h": {"now": now},
        "q5_daily_scrap_and_energy_per_line": {"first_day": last - timedelta(days=29), "last_day": last},
        "q6_below_a_cells_areal_loading": {"day": busiest},
        "q7_sensor_gaps_last_day": {"now": now},
        "q8_daily_cpk_per_ctq_parameter": {"first_day": min(days), "last_day": last},
    }


# --------------------------------------------------------------------------- checking answers

def _plain(v: Any) -> Any:
    """A cell as a comparable value: times as epoch ms, exact integers, floats as floats."""
    if isinstance(v, datetime):
        return round(v.timestamp() * 1000)
    if isinstance(v, Decimal):
        return int(v) if v == int(v) else float(v)
    return v


def _rows(table: pa.Table, columns: list[str]) -> list[dict[str, Any]]:
    return [{c: _plain(v) for c, v in row.items()} for row in table.select(columns).to_pylist()]


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-9)
    return a == b


def compare_answers(query: str, expected: pa.Table, got: pa.Table) -> str | None:
    """None if ``got`` holds gigapulse's answer (same rows by key, values within tolerance); else why not."""
    columns = expected.column_names
    missing = [c for c in columns if c not in got.column_names]
    if missing:
        return f"no column(s) {', '.join(missing)}"
    key = KEYS[query]
    want = {tuple(r[k] for k in key): r for r in _rows(expected, columns)}
    have = {tuple(r[k] for k in key): r for r in _rows(got, columns)}
    if len(have) != got.num_rows:
        return f"{got.num_rows} rows but {len(have)} distinct keys"
    if set(want) != set(have):
        extra, lost = sorted(set(have) - set(want), key=str), sorted(set(want) - set(have), key=str)
        return f"{len(lost)} row(s) missing (e.g. {lost[:1]}), {len(extra)} extra (e.g. {extra[:1]})"
    for k, row in want.items():
        for c in columns:
            if not _close(row[c], have[k][c]):
                return f"row {k}: {c} = {have[k][c]!r}, gigapulse says {row[c]!r}"
    return None


# --------------------------------------------------------------------------- running

def _engines(opts: WarehouseOptions, root: Path) -> tuple[list[Any], dict[str, str]]:
    from gigapulse.bench import warehouse_peers as P

    files = P.LakeFiles(root / "lake", root / "naive")
    missing = P.missing_peers()
    skipped: dict[str, str] = {}
    engines = []
    makers = {"gigapulse": lambda: P.GigapulseEngine(root / "gigapulse.duckdb"), "chDB": lambda: P.ChdbEngine(files),
              "Polars": lambda: P.PolarsEngine(files), "naive DuckDB": lambda: P.NaiveDuckDBEngine(files)}
    for name in opts.engines:
        why = missing.get(name.lower())
        if why:
            console.print(why)
            skipped[name] = why
            continue
        engines.append(makers[name]())
    return engines, skipped


def _checked_run(engine: Any, name: str, params: dict[str, Any], reference: pa.Table | None) -> tuple[dict, Any]:
    """One untimed run: its rows and, for a peer, how its answer differs from gigapulse's (None: same)."""
    r: dict[str, Any] = {}
    try:
        t0 = time.perf_counter()
        answer = engine.run(name, params)
        r["first_s"] = time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - a peer's failure is a result, not the bench's end
        r["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        return r, None
    r["rows"] = answer.num_rows
    if reference is not None:
        r["mismatch"] = compare_answers(name, reference, answer)
    return r, answer


def run_queries(engines: list[Any], params: dict[str, dict[str, Any]], runs: int) -> dict[str, dict[str, Any]]:
    """Per query and engine: rows, the check against gigapulse, and the timed runs.

    The timed runs go round the engines (run 1 of each, then run 2 ...), so a noisy neighbour hits
    them alike and the per-run ratio to gigapulse holds; gigapulse is first in ``engines``.
    """
    from transforms.warehouse.queries import QUERIES

    out: dict[str, dict[str, Any]] = {}
    with progress() as bar:
        task = bar.add_task("running the query set", total=len(QUERIES) * len(engines) * (runs + 1), info="")
        for name in QUERIES:
            res = out[name] = {}
            reference = None
            timed = []
            for engine in engines:
                bar.update(task, info=f"{name} · {engine.name} (checked run)")
                r, answer = _checked_run(engine, name, params[name], reference)
                res[engine.name] = r
                bar.advance(task)
                if reference is None:
                    if answer is None:
                        raise BenchError(f"{name} failed on gigapulse, whose answer every peer is checked "
                                         f"against: {r['error']}")
                    reference = answer
                if r.get("error") or r.get("mismatch"):
                    bar.advance(task, runs)
                elif r["first_s"] > LONG_RUN_S:
                    # A naive peer can take minutes per query at 100M: its one run says enough.
                    r["seconds"] = spread([r["first_s"]])
                    r["single_run"] = True
                    bar.advance(task, runs)
                else:
                    timed.append(engine)
                    r["times"] = []
            for i in range(runs):
                for engine in timed:
                    bar.update(task, info=f"{name} · {engine.name} (run {i + 1}/{runs})")
                    t0 = time.perf_counter()
                    engine.run(name, params[name])
                    res[engine.name]["times"].append(time.perf_counter() - t0)
                    bar.advance(task)
            for engine in timed:
                res[engine.name]["seconds"] = spread(res[engine.name].pop("times"))
    for res in out.values():
        ours = res.get("gigapulse", {}).get("seconds")
        for engine_name, r in res.items():
            if ours and r.get("seconds") and engine_name != "gigapulse":
                theirs = r["seconds"]["runs"]
                pairs = zip(theirs, ours["runs"], strict=True) if len(theirs) == len(ours["runs"]) else \
                    [(r["seconds"]["median"], ours["median"])]
                r["ratio"] = spread([peer / gp for peer, gp in pairs])
    return out


def _cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return "–"
    if "error" in r:
        return "failed"
    if r.get("mismatch"):
        return "wrong answer"
    return fmt_spread(r["seconds"], 3) + (" (1 run)" if r.get("single_run") else "")


def run_warehouse(opts: WarehouseOptions) -> dict[str, Any]:
    """Build or reuse the lake, run the query set on every engine, and report (see the module docstring)."""
    env = environment()
    env["libraries"].update(_peer_versions())
    root, record = cached_lake(opts)
    params = bench_params(record)
    engines, skipped = _engines(opts, root)
    if not engines or engines[0].name != "gigapulse":
        raise BenchError("the gigapulse engine must run: every peer's answer is checked against it")
    try:
        results = run_queries(engines, params, opts.runs)
    finally:
        for e in engines:
            e.close()
    names = [e.name for e in engines]
    header = ["query", "rows"] + [f"{n} s" for n in names] + [f"{n} / gigapulse" for n in names[1:]]
    rows, met_latency, met_peers = [], True, True
    for q, res in results.items():
        g = res["gigapulse"]
        rows.append([q, fmt_num(g.get("rows"))] + [_cell(res.get(n)) for n in names]
                    + [fmt_spread(res[n].get("ratio"), 1) if res.get(n, {}).get("ratio") else "–" for n in names[1:]])
        met_latency &= bool(g.get("seconds")) and g["seconds"]["median"] <= TARGETS["warehouse_query_median_s"]
        for peer in ("chDB", "Polars"):
            if peer in names:
                ratio = res[peer].get("ratio")
                met_peers &= bool(ratio) and ratio["median"] >= 1.0
    problems = [f"{q} · {n}: {r.get('error') or r.get('mismatch')}" for q, res in results.items()
                for n, r in res.items() if r.get("error") or r.get("mismatch")]
    b, c = record["build"], record["compaction"]
    million = b["readings"] / 1e6
    table = markdown_table(header, rows)
    table += (
        f"\n\nMedian (min–max) of {opts.runs} runs after one untimed run whose answer was checked; "
        f"ratios are the peer's time over gigapulse's, per run (> 1: gigapulse is faster).\n\n"
        f"Lake: {b['readings']:,} readings ({record['plan']['seconds']:,} simulated s of the {PLANT} plant from "
        f"{record['plan']['start']}), {b['events']:,} events; built in {b['wall_s']:.0f} s "
        f"({b['wall_s'] / million:.1f} s per million readings, {b['workers']} worker(s), without Kafka); "
        f"compacted in {c['wall_s']:.0f} s ({fmt_num(c['rows_per_s'])} rows/s, all tables; "
        f"{c['wall_s'] / million:.2f} s per million readings); on disk {record['lake_bytes'] / 2**20 / million:.1f} MiB "
        f"per million readings after compaction (readings alone {record['readings_bytes'] / 2**20 / million:.1f}), "
        f"{b['hot_bytes'] / 2**20 / million:.1f} as the stream wrote it; most files per table and date after "
        f"compaction: {', '.join(f'{t} {n}' for t, n in record['files_per_table_and_date'].items())}.\n\n"
        f"Targets: every query ≤ {TARGETS['warehouse_query_median_s']:g} s (median) "
        f"{'met' if met_latency else 'MISSED'}; faster than chDB and Polars on every query "
        f"{'met' if met_peers else 'MISSED'}.")
    if skipped:
        table += "\n\nNot run: " + "; ".join(skipped.values()) + "."
    if problems:
        table += "\n\nNot timed:\n" + "\n".join(f"- {p}" for p in problems)
    empty = [q for q, res in results.items() if res["gigapulse"].get("rows") == 0]
    if empty:
        table += (f"\n\nNo rows at this size (the lake is too short for the question; a cell needs about 6 "
                  f"simulated minutes from the line's own rolls to its grade): {', '.join(empty)}.")
    met = {"warehouse_query_median_s": met_latency, "warehouse_faster_than_peers": met_peers}
    return {
        "bench": "warehouse", "environment": env, "targets": {"warehouse_query_median_s":
                                                              TARGETS["warehouse_query_median_s"]},
        "met": met, "params": {"readings": opts.readings, "runs": opts.runs, "seed": opts.seed, "plant": PLANT,
                               "queries": {q: {k: str(v) for k, v in p.items()} for q, p in params.items()},
                               "cache": str(root)},
        "lake": record, "results": results, "table": table,
    }


def _peer_versions() -> dict[str, str | None]:
    import importlib.metadata

    out = {}
    for name in ("chdb", "polars"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out
