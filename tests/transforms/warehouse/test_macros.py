"""The helper macros on a lake built from the simulator, against brute force in plain Python.

Every answer goes through the read-only front door (``query``, bound parameters); every expected
answer is recomputed from the Parquet files with pyarrow and Python loops, never with DuckDB.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from schemas.tables import PRODUCTION_EVENTS, READINGS
from tests.transforms.warehouse.support import OUTAGE_FROM, OUTAGE_GATEWAY, START
from transforms.lake import LakeWriter
from transforms.warehouse import build_catalog, query
from transforms.warehouse.catalog import _connect
from transforms.warehouse.macros import MACROS, MAX_BUCKETS
from transforms.warehouse.maintenance import compact
from transforms.warehouse.manifest import COMPACTED_DIR

DOCS = Path(__file__).resolve().parents[3] / "docs" / "warehouse-helpers.md"
DAY1, DAY2 = START.date(), OUTAGE_FROM.date()


# --------------------------------------------------------------------------- the lake, read without DuckDB

def lake_rows(lake: Path, table: str, columns: list[str] | None = None, where=None) -> list[dict]:
    part = ds.partitioning(pa.schema([("date", pa.date32())]), flavor="hive")
    return ds.dataset(lake / table, format="parquet", partitioning=part).to_table(
        columns=columns, filter=where).to_pylist()


def sensors_of(lake: Path) -> list[dict]:
    return ds.dataset(lake / "sensors", format="parquet").to_table().to_pylist()


def ask(db: Path, sql: str, params: list | None = None) -> list[dict]:
    cols, rows = query(db, sql, params)
    return [dict(zip(cols, row, strict=True)) for row in rows]


def files_read(db: Path, sql: str, params: list) -> set[str]:
    """Lake files (relative to the lake) a query opens, from DuckDB's own profile of the run."""
    con = _connect(db, read_only=True)
    try:
        plan = json.loads(con.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params).fetchall()[0][1])
    finally:
        con.close()
    found: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, list):
            for child in node:
                walk(child)
        elif isinstance(node, dict):
            names = node.get("extra_info", {}).get("Filename(s)", "")
            found.update(n.strip().split("/lake/", 1)[-1] for n in names.split(",") if n.strip())
            walk(node.get("children", []))

    walk(plan["operator"])
    return found


def only(files: set[str], tables: tuple[str, ...], day: date | None = None) -> bool:
    """Every file is of one of ``tables`` and, if given, of the date partition ``day`` (hot or compacted)."""
    return bool(files) and all(f.split("/", 1)[0] in tables and (day is None or f"/date={day}/" in f)
                               for f in files)


# --------------------------------------------------------------------------- brute force

def brute_buckets(readings: list[dict], t0: datetime, t1: datetime, width: timedelta) -> list[dict]:
    samples = sorted((r for r in readings if t0 <= r["ts"] < t1),
                     key=lambda r: (r["ts"], r["src_partition"], r["src_offset"], r["src_index"]))
    out, carried, k = [], None, 0
    while t0 + k * width < t1:
        lo = t0 + k * width
        inside = [r for r in samples if lo <= r["ts"] < lo + width]
        values = [r["value"] for r in inside]
        last = values[-1] if values else None
        carried = last if values else carried
        out.append({"bucket_start": lo, "bucket_end": min(lo + width, t1), "n": len(values),
                    "mean": sum(values) / len(values) if values else None,
                    "min": min(values, default=None), "max": max(values, default=None), "last": last,
                    "value": carried, "filled": not values and carried is not None})
        k += 1
    return out


def in_dates(row: dict, since: date | None, until: date | None) -> bool:
    return (since is None or row["date"] >= since) and (until is None or row["date"] <= until)


def brute_history(events: list[dict], roots: list[str], since=None, until=None) -> list[tuple]:
    """Breadth-first over parent_ids, then enter paired with the first leave/scrap at the station."""
    events = [e for e in events if in_dates(e, since, until)]
    parents: dict[str, set[str]] = defaultdict(set)
    first_copy: dict[str, dict] = {}
    for e in sorted(events, key=lambda e: (e["src_partition"], e["src_offset"])):
        parents[e["unit_id"]].update(e["parent_ids"] or [])
        first_copy.setdefault(e["event_id"], e)  # the dedup rule of duplicate_events
    by_unit: dict[str, list[dict]] = defaultdict(list)
    for e in first_copy.values():
        by_unit[e["unit_id"]].append(e)
    out = []
    for root in dict.fromkeys(roots):
        seen = {root: (0, None)}
        level = [root]
        while level:
            nxt: dict[str, str] = {}
            for unit in sorted(level):
                for parent in parents.get(unit, ()):
                    if parent not in seen and (parent not in nxt or unit < nxt[parent]):
                        nxt[parent] = unit
            depth = seen[level[0]][0] + 1
            for parent, child in nxt.items():
                seen[parent] = (depth, child)
            level = list(nxt)
        for unit, (depth, child) in seen.items():
            evs = by_unit.get(unit, [])
            unit_type = evs[0]["unit_type"] if evs else None
            enters = [e for e in evs if e["kind"] == "enter"]
            if not enters:
                out.append((root, depth, unit, unit_type, child, None, None, None, None, None, None, None))
            for n in enters:
                exits = [x for x in evs if x["kind"] in ("leave", "scrap") and x["station"] == n["station"]
                         and x["ts"] >= n["ts"]]
                x = min(exits, key=lambda x: x["ts"]) if exits else None
                out.append((root, depth, unit, unit_type, child, n["line"], n["stage"], n["station"], n["ts"],
                            x and x["ts"], x and x["kind"], x and x["reason"]))
    return sorted(out, key=repr)


def brute_features(events, sensors, features, roots, parameter, since=None, until=None) -> list[dict]:
    features = [f for f in features if in_dates(f, since, until)]
    out = []
    for (root, depth, unit, unit_type, _, line, stage, station, entered, left, _, _) in brute_history(
            events, roots, since, until):
        if station is None:
            continue
        for s in sensors:
            if s["station"] != station or s["parameter"] != parameter:
                continue
            mine = [f for f in features if f["sensor_id"] == s["sensor_id"]]
            hit = [f for f in mine if f["window_end"] > entered
                   and (left is None or f["window_start"] < left or f["window_start"] <= entered)]
            before = [f for f in mine if f["window_start"] <= entered]
            asof = max(before, key=lambda f: f["window_start"]) if before else None
            n = sum(f["count"] for f in hit)
            out.append({
                "root_id": root, "depth": depth, "unit_id": unit, "unit_type": unit_type, "line": line,
                "stage": stage, "station": station, "entered_at": entered, "left_at": left,
                "sensor_id": s["sensor_id"], "unit": s["unit"], "windows": len(hit), "samples": n,
                "mean": sum(f["mean"] * f["count"] for f in hit) / n if n else None,
                "min": min((f["min"] for f in hit), default=None), "max": max((f["max"] for f in hit), default=None),
                "out_of_spec": sum(f["out_of_spec"] for f in hit) if hit else None,
                "asof_window_start": asof and asof["window_start"], "asof_mean": asof and asof["mean"],
            })
    return out


def same_rows(got: list[dict], want: list[dict], key) -> None:
    """Row for row, floats to 1e-9 relative (DuckDB and Python sum in different orders)."""
    assert len(got) == len(want)
    for g, w in zip(sorted(got, key=key), sorted(want, key=key), strict=True):
        assert g.keys() >= w.keys()
        for col, value in w.items():
            assert g[col] == (pytest.approx(value, rel=1e-9) if isinstance(value, float) else value), (col, g, w)


# --------------------------------------------------------------------------- picking units from the lake

@pytest.fixture(scope="module")
def events(sim_warehouse) -> list[dict]:
    return lake_rows(sim_warehouse.lake, "production_events")


@pytest.fixture(scope="module")
def cells(events) -> dict[str, list[str]]:
    """Cells by situation, found in the events (never by building an id)."""
    ids = defaultdict(set)
    unit_type = {e["unit_id"]: e["unit_type"] for e in events}
    parents = {e["unit_id"]: e["parent_ids"] or [] for e in events}
    for e in events:
        if e["unit_type"] != "cell":
            continue
        made_here = parents[e["unit_id"]] and all(unit_type.get(p) == "electrode_roll" for p in parents[e["unit_id"]])
        if e["kind"] == "grade" and made_here:
            ids["graded_from_own_rolls"].add(e["unit_id"])
        if e["kind"] == "scrap":
            ids["scrapped"].add(e["unit_id"])
        if not made_here:
            ids["from_stock"].add(e["unit_id"])
    left_eol = {e["unit_id"] for e in events if e["stage"] == "aging_eol" and e["kind"] in ("leave", "scrap")}
    ids["at_eol"] = {e["unit_id"] for e in events if e["stage"] == "aging_eol" and e["kind"] == "enter"} - left_eol
    return {k: sorted(v) for k, v in ids.items()}


def test_fixture_holds_the_cases_the_tests_need(cells, events):
    assert {"graded_from_own_rolls", "scrapped", "from_stock", "at_eol"} <= cells.keys()
    assert all(cells.values())
    coated_after_outage = {e["unit_id"] for e in events if e["station"] == "L1-coat-c" and e["kind"] == "enter"
                           and e["ts"] >= OUTAGE_FROM}
    assert coated_after_outage


# --------------------------------------------------------------------------- time_buckets

@pytest.mark.parametrize("sensor, t0, t1, width", [
    # 0.2 Hz sensor, 2 s buckets: most buckets empty and filled; crosses midnight.
    ("ref.L1-mix-c.solid_content", START + timedelta(seconds=40), START + timedelta(seconds=80), timedelta(seconds=2)),
    # Starts before the first sample: leading buckets stay null and unfilled.
    ("ref.L1-mix-c.viscosity", START - timedelta(seconds=7), START + timedelta(seconds=9),
     timedelta(milliseconds=700)),
    # 10 Hz sensor over the gateway outage, unaligned bounds, last bucket cut short by stop.
    (f"{OUTAGE_GATEWAY}.areal_loading_1", START + timedelta(seconds=47.5), START + timedelta(seconds=81.3),
     timedelta(seconds=5)),
])
def test_time_buckets_match_a_loop_over_the_readings(sim_warehouse, sensor, t0, t1, width):
    readings = lake_rows(sim_warehouse.lake, "readings", where=pc.field("sensor_id") == sensor)
    want = brute_buckets(readings, t0, t1, width)
    got = ask(sim_warehouse.db, "SELECT * FROM time_buckets(?, ?, ?, ?)", [sensor, t0, t1, width])
    assert [g["bucket_start"] for g in got] == [w["bucket_start"] for w in want]
    same_rows(got, want, key=lambda r: r["bucket_start"])
    assert {g["sensor_id"] for g in got} == {sensor}
    assert any(w["filled"] for w in want) and any(w["n"] for w in want)
    if t0 < START:
        assert want[0]["value"] is None and not want[0]["filled"]


def test_time_buckets_read_only_the_dates_asked(sim_warehouse):
    sql = "SELECT * FROM time_buckets(?, ?, ?, ?)"
    day1 = files_read(sim_warehouse.db, sql, ["ref.L1-mix-c.viscosity", START, START + timedelta(seconds=30),
                                              timedelta(seconds=10)])
    assert only(day1, ("readings",), DAY1)


@pytest.mark.parametrize("width, message", [
    (timedelta(0), "width must be a positive interval"),
    (timedelta(seconds=-1), "width must be a positive interval"),
    (timedelta(microseconds=1), f"more than {MAX_BUCKETS:,} buckets"),
])
def test_time_buckets_refuse_a_bad_width_in_one_line(sim_warehouse, width, message):
    with pytest.raises(duckdb.InvalidInputException, match=message):
        ask(sim_warehouse.db, "SELECT * FROM time_buckets(?, ?, ?, ?)",
            ["ref.L1-mix-c.viscosity", START, START + timedelta(seconds=30), width])


# --------------------------------------------------------------------------- sensor_last

SINCE = OUTAGE_FROM + timedelta(seconds=30)  # the cathode coater is silent by then


@pytest.fixture(scope="module")
def latest_since(sim_warehouse) -> dict[str, dict]:
    """The latest reading of every sensor at or after SINCE, by (ts, position in the topic)."""
    latest: dict[str, dict] = {}
    cols = ["sensor_id", "ts", "value", "quality", "src_partition", "src_offset", "src_index"]
    for r in lake_rows(sim_warehouse.lake, "readings", cols, where=pc.field("ts") >= pa.scalar(SINCE)):
        key = (r["ts"], r["src_partition"], r["src_offset"], r["src_index"])
        if r["sensor_id"] not in latest or key > latest[r["sensor_id"]]["key"]:
            latest[r["sensor_id"]] = {"key": key, "ts": r["ts"], "value": r["value"], "quality": r["quality"]}
    return latest


@pytest.mark.parametrize("line", ["L1", "site", None])
def test_sensor_last_is_the_latest_sample_of_every_sensor(sim_warehouse, latest_since, line):
    model = [s for s in sensors_of(sim_warehouse.lake) if line is None or s["line"] == line]
    none: dict = {}
    want = [{"sensor_id": s["sensor_id"], "line": s["line"], "station": s["station"], "parameter": s["parameter"],
             **{c: latest_since.get(s["sensor_id"], none).get(c) for c in ("ts", "value", "quality")}}
            for s in model]
    before = datetime.now(UTC)
    got = ask(sim_warehouse.db, "SELECT * FROM sensor_last(?, since := ?)", [line, SINCE])
    after = datetime.now(UTC)
    same_rows(got, want, key=lambda r: r["sensor_id"])
    silent = {g["sensor_id"] for g in got if g["ts"] is None}
    assert any(g["ts"] for g in got)
    if line != "site":
        assert any(s.startswith(OUTAGE_GATEWAY + ".") for s in silent)
    for g in got:
        assert g["age"] is None if g["ts"] is None else before - g["ts"] <= g["age"] <= after - g["ts"]


def test_sensor_last_looks_back_one_day_by_default(sim_warehouse):
    got = ask(sim_warehouse.db, "SELECT * FROM sensor_last(?)", ["L1"])
    assert got and all(g["ts"] is None for g in got)  # the fixture's samples are months old


# --------------------------------------------------------------------------- unit_history

HISTORY_COLS = ["root_id", "depth", "unit_id", "unit_type", "consumed_by", "line", "stage", "station",
                "entered_at", "left_at", "outcome", "reason"]


def history(db: Path, units, since=None, until=None) -> list[tuple]:
    cols, rows = query(db, "SELECT * FROM unit_history(?, since := ?, until := ?)", [units, since, until])
    assert cols == HISTORY_COLS
    return sorted(rows, key=repr)


def test_unit_history_of_a_cell_goes_back_to_its_slurry_batches(sim_warehouse, events, cells):
    cell = cells["graded_from_own_rolls"][0]
    got = history(sim_warehouse.db, cell)
    assert got == brute_history(events, [cell])
    types = {(r[1], r[3]) for r in got}
    assert {(0, "cell"), (1, "electrode_roll"), (2, "slurry_batch")} <= types
    cell_visits = [r for r in got if r[1] == 0]
    assert [r[6] for r in sorted(cell_visits, key=lambda r: r[8])] == ["stacking", "filling", "formation",
                                                                      "aging_eol"]
    assert all(r[9] is not None and r[9] >= r[8] for r in got)


@pytest.mark.parametrize("case", ["scrapped", "from_stock", "at_eol", "several", "a roll", "unknown"])
def test_unit_history_matches_a_breadth_first_search(sim_warehouse, events, cells, case):
    roll = next(e["unit_id"] for e in events if e["unit_type"] == "electrode_roll" and e["parent_ids"])
    units = {"scrapped": cells["scrapped"][0], "from_stock": cells["from_stock"][-1], "at_eol": cells["at_eol"][0],
             "several": cells["graded_from_own_rolls"][:3] + cells["scrapped"][:1], "a roll": roll,
             "unknown": "no-such-unit"}[case]
    roots = units if isinstance(units, list) else [units]
    got = history(sim_warehouse.db, units)
    assert got == brute_history(events, roots)
    assert {r[0] for r in got} == set(roots)
    if case == "scrapped":
        assert any(r[10] == "scrap" and r[11] for r in got)
    if case == "from_stock":  # stock rolls: named by the cell, no event of their own
        assert any(r[1] == 1 and r[3] is None and r[7] is None for r in got)
    if case == "at_eol":
        assert any(r[6] == "aging_eol" and r[9] is None and r[10] is None for r in got)
    if case == "unknown":
        assert got == [("no-such-unit", 0, "no-such-unit", *[None] * 9)]


def test_unit_history_reads_only_events_of_the_dates_asked(sim_warehouse, events, cells):
    cell = cells["graded_from_own_rolls"][-1]
    got = history(sim_warehouse.db, cell, since=DAY2, until=DAY2)
    assert got == brute_history(events, [cell], since=DAY2, until=DAY2)
    assert got != history(sim_warehouse.db, cell)  # its slurry batches were mixed on DAY1
    read = files_read(sim_warehouse.db, "SELECT * FROM unit_history(?, since := ?)", [cell, DAY2])
    assert only(read, ("production_events",), DAY2)


# --------------------------------------------------------------------------- unit_features

@pytest.mark.parametrize("parameter", ["areal_loading", "solid_content", "coating_thickness"])
def test_unit_features_match_a_scan_of_the_windows(sim_warehouse, events, cells, parameter):
    lake = sim_warehouse.lake
    roots = cells["graded_from_own_rolls"]
    features = lake_rows(lake, "sensor_features_1m", where=pc.field("parameter") == parameter)
    want = brute_features(events, sensors_of(lake), features, roots, parameter)
    got = ask(sim_warehouse.db, "SELECT * FROM unit_features(?, ?)", [roots, parameter])
    assert want
    same_rows(got, want, key=lambda r: (r["root_id"], r["unit_id"], r["entered_at"], r["sensor_id"]))


def test_the_as_of_value_covers_a_visit_with_no_window(sim_warehouse, events, cells):
    """A cathode roll coated while the coater's gateway was silent: the value in force is yesterday's."""
    coated_in_outage = {e["unit_id"] for e in events if e["station"] == "L1-coat-c" and e["kind"] == "enter"
                        and e["ts"] >= OUTAGE_FROM}
    cell = next(c for c in cells["graded_from_own_rolls"]
                if any(e["unit_id"] == c and set(e["parent_ids"]) & coated_in_outage for e in events))
    got = ask(sim_warehouse.db, "SELECT * FROM unit_features(?, ?, since := ?)", [cell, "areal_loading", DAY1])
    cathode = [g for g in got if g["station"] == "L1-coat-c"]
    assert cathode and all(g["windows"] == 0 and g["mean"] is None for g in cathode)
    assert all(g["asof_window_start"].date() == DAY1 and g["asof_mean"] is not None for g in cathode)
    anode = [g for g in got if g["station"] == "L1-coat-a"]
    assert anode and all(g["windows"] >= 1 and g["mean"] is not None for g in anode)
    # Starting the search on DAY2 leaves the as-of value out of reach, as documented.
    late = ask(sim_warehouse.db, "SELECT * FROM unit_features(?, ?, since := ?)", [cell, "areal_loading", DAY2])
    assert all(g["asof_mean"] is None for g in late if g["station"] == "L1-coat-c")


def test_unit_features_never_touch_raw_readings(sim_warehouse, cells):
    read = files_read(sim_warehouse.db, "SELECT * FROM unit_features(?, ?, since := ?)",
                      [cells["graded_from_own_rolls"][-1], "areal_loading", DAY2])
    assert only({f for f in read if not f.startswith("sensors/")}, ("sensor_features_1m", "production_events"), DAY2)


# --------------------------------------------------------------------------- the catalog file

def test_macros_work_in_a_plain_duckdb_process(sim_warehouse, cells):
    """Stored in the file: a fresh interpreter with only duckdb, read-only, finds and runs them."""
    script = (
        "import duckdb, sys\n"
        "con = duckdb.connect(sys.argv[1], read_only=True)\n"
        "con.execute(\"SET TimeZone = 'UTC'\")\n"
        "n, depth = con.execute('SELECT count(*), max(depth) FROM unit_history(?)', [sys.argv[2]]).fetchone()\n"
        "names = con.execute(\"SELECT function_name FROM duckdb_functions() WHERE comment IS NOT NULL \"\n"
        "                    \"AND function_type = 'table_macro' ORDER BY 1\").fetchall()\n"
        "print(json.dumps([n, depth, [name for (name,) in names]]))\n"
    )
    cell = cells["graded_from_own_rolls"][0]
    out = subprocess.run([sys.executable, "-c", "import json\n" + script, str(sim_warehouse.db), cell],
                         capture_output=True, text=True, check=True, cwd="/").stdout
    n, depth, names = json.loads(out)
    assert (n, depth) == (len(history(sim_warehouse.db, cell)), 2)
    assert names == sorted(MACROS)


def test_macros_answer_the_same_after_compaction(sim_warehouse, cells, tmp_path):
    """Merged and re-sorted files hold the same rows, and their date partitions are still pruned."""
    lake, db = tmp_path / "lake", tmp_path / "gigapulse.duckdb"
    shutil.copytree(sim_warehouse.lake, lake)
    build_catalog(lake, db)
    compact(lake, db, grace_s=0)
    assert list((lake / "readings" / COMPACTED_DIR).rglob("*.parquet"))
    roots = cells["graded_from_own_rolls"]
    questions = [
        ("SELECT * FROM time_buckets(?, ?, ?, ?)", ["ref.L1-mix-c.viscosity", START, OUTAGE_FROM + timedelta(seconds=30),
                                                    timedelta(seconds=3)], ("bucket_start",)),
        ("SELECT * FROM sensor_last(NULL, since := ?)", [OUTAGE_FROM], ("sensor_id",)),
        ("SELECT * FROM unit_history(?)", [roots], ("root_id", "unit_id", "entered_at")),
        ("SELECT * FROM unit_features(?, ?, since := ?)", [roots, "areal_loading", DAY1],
         ("root_id", "unit_id", "entered_at", "sensor_id")),
    ]
    for sql, params, key in questions:
        before = ask(sim_warehouse.db, sql, params)
        after = ask(db, sql, params)
        same_rows(after, [{k: v for k, v in b.items() if k != "age"} for b in before],
                  key=lambda r, key=key: tuple(str(r[k]) for k in key))
    read = files_read(db, "SELECT * FROM unit_features(?, ?, since := ?)", [roots, "areal_loading", DAY2])
    assert only({f for f in read if not f.startswith("sensors/")}, ("sensor_features_1m", "production_events"), DAY2)
    assert any(f"/{COMPACTED_DIR}/" in f for f in read)


def test_macros_answer_on_an_empty_lake(tmp_path):
    lake = tmp_path / "lake"
    lake.mkdir()
    db = tmp_path / "gigapulse.duckdb"
    build_catalog(lake, db)
    buckets = ask(db, "SELECT * FROM time_buckets(?, ?, ?, ?)", ["x", START, START + timedelta(seconds=3),
                                                                   timedelta(seconds=1)])
    assert [(b["n"], b["value"], b["filled"]) for b in buckets] == [(0, None, False)] * 3
    assert ask(db, "SELECT * FROM sensor_last(NULL)") == []
    assert history(db, "c1") == [("c1", 0, "c1", *[None] * 9)]
    assert ask(db, "SELECT * FROM unit_features('c1', 'areal_loading')") == []


def hand_made_events(rows: list[tuple]) -> pa.Table:
    """(unit_id, unit_type, kind, station, seconds after START, parent_ids) as production_events rows.

    The event id is made of the unit, kind and station, so a repeated row is a replayed event.
    """
    return pa.Table.from_pylist([
        {"v": 1, "event_id": f"{unit}:{kind}:{station}", "ts": START + timedelta(seconds=t), "site": "ref",
         "line": "L1", "stage": "coating", "station": station, "unit_id": unit, "unit_type": unit_type,
         "kind": kind, "parent_ids": parents, "source": "auto", "src_partition": 0, "src_offset": i, "late": False}
        for i, (unit, unit_type, kind, station, t, parents) in enumerate(rows)
    ], schema=PRODUCTION_EVENTS.file_schema)


def test_edge_cases_the_simulator_does_not_make(tmp_path):
    """Shared ancestors, a cycle, a visit that takes no time, a replayed event, two samples at one instant."""
    lake, db = tmp_path / "lake", tmp_path / "gigapulse.duckdb"
    events = hand_made_events([
        ("B", "slurry_batch", "enter", "mix", 0, []), ("B", "slurry_batch", "leave", "mix", 5, []),
        ("R2", "electrode_roll", "enter", "coat", 6, ["B"]), ("R2", "electrode_roll", "leave", "coat", 6, ["B"]),
        ("R1", "electrode_roll", "enter", "coat", 7, ["B"]), ("R1", "electrode_roll", "leave", "coat", 9, ["B"]),
        ("C", "cell", "enter", "stack", 10, ["R2", "R1"]),
        ("X", "cell", "enter", "stack", 11, ["Y"]), ("Y", "cell", "enter", "stack", 12, ["X"]),
        ("R1", "electrode_roll", "enter", "coat", 7, ["B"]),  # replayed: the same event again
    ])
    LakeWriter.for_table(lake, PRODUCTION_EVENTS).write("plant.events.v1", 0, 0, events.num_rows - 1, events)
    readings = pa.Table.from_pylist([
        {"sensor_id": "s", "ts": START + timedelta(seconds=t), "value": v, "quality": 0, "src_partition": 0,
         "src_offset": off, "src_index": 0, "late": False}
        for t, v, off in ((1, 1.0, 0), (2, 3.0, 2), (2, 2.0, 1))  # the sample sent last wins a tie
    ], schema=READINGS.file_schema)
    LakeWriter.for_table(lake, READINGS).write("plant.readings.v1", 0, 0, 2, readings)
    build_catalog(lake, db)
    rows = lake_rows(lake, "production_events")
    for roots in (["C"], ["X"], ["C", "X", "B"]):
        assert history(db, roots) == brute_history(rows, roots)
    by_unit = {r[2]: r for r in history(db, "C")}
    assert by_unit["B"][1:5] == (2, "B", "slurry_batch", "R1")  # reached through R1 and R2: the smaller id
    assert by_unit["R2"][8] == by_unit["R2"][9]  # entered and left in the same instant
    assert [r[1:3] for r in history(db, "X")] == [(0, "X"), (1, "Y")]
    assert [r[2] for r in history(db, "C")].count("R1") == 1
    buckets = ask(db, "SELECT * FROM time_buckets('s', ?, ?, INTERVAL 1 SECOND)", [START, START + timedelta(seconds=4)])
    assert [(b["n"], b["last"], b["value"], b["filled"]) for b in buckets] == [
        (0, None, None, False), (1, 1.0, 1.0, False), (2, 3.0, 3.0, False), (0, None, 3.0, True)]


def test_docs_describe_every_macro_and_column():
    text = DOCS.read_text()
    for name, macro in MACROS.items():
        assert f"`{name}(" in text, name
        for col in macro.columns:
            assert f"`{col}`" in text, (name, col)
