"""``cell_features`` on a real small warehouse: equal to a brute-force recomputation, blind after the gate."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import datetime, timedelta

import pytest

from tests.transforms.warehouse.support import START, build_sim_warehouse
from transforms.batch.cell_features import (
    DIRECT_MAX_CELLS,
    DRY_ROOM_STAGES,
    SCALE,
    VisitCache,
    cell_features,
    warm_upstream,
)
from transforms.warehouse.reader import connect

SINCE = START - timedelta(hours=1)
UNTIL = START + timedelta(hours=1)


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    return build_sim_warehouse(tmp_path_factory.mktemp("cell-features"))


@pytest.fixture(scope="module")
def table(warehouse):
    con = connect(warehouse.db)
    try:
        return cell_features(con, SINCE, UNTIL)
    finally:
        con.close()


def _template(station: str, line: str | None) -> str:
    return station[len(line) + 1:] if line and station.startswith(line + "-") else station


def _brute_force(db, cell_ids: list[str]) -> dict[str, dict[str, float | None]]:
    """The features of ``cell_ids`` from the raw rows, in plain Python."""
    con = connect(db)
    try:
        events = con.execute("SELECT DISTINCT ON (event_id) unit_id, kind, site, line, stage, station, ts, "
                             "parent_ids, attribute, value FROM production_events ORDER BY event_id, src_partition, "
                             "src_offset").fetchall()
        sensors = con.execute("SELECT sensor_id, site, line, stage, station, parameter, lsl, usl FROM sensors "
                              "WHERE (lsl IS NOT NULL OR usl IS NOT NULL) AND NOT is_energy_meter").fetchall()
        readings = con.execute("SELECT sensor_id, ts, value FROM readings WHERE quality <> 2").fetchall()  # 2: bad
    finally:
        con.close()
    by_unit = defaultdict(list)
    parents = defaultdict(set)
    for ev in events:
        by_unit[ev[0]].append(ev)
        parents[ev[0]].update(ev[7] or [])
    limited = {s[0]: s for s in sensors}
    samples = defaultdict(list)  # (station, parameter) -> [(ts, value, lsl, usl)]
    for sid, ts, value in readings:
        s = limited.get(sid)
        if s is not None:
            samples[(s[4], s[5])].append((ts, value, s[6], s[7]))
    out = {}
    for cell in cell_ids:
        gate = min(ev[6] for ev in by_unit[cell] if ev[1] == "leave" and ev[4] == "filling")
        units, frontier = {cell}, [cell]
        while frontier:
            nxt = [p for u in frontier for p in parents[u] if p not in units]
            units.update(nxt)
            frontier = nxt
        pooled = defaultdict(lambda: [0, 0, 0.0])
        measured = defaultdict(list)
        for u in units:
            evs = sorted(by_unit[u], key=lambda e: e[6])
            for ev in evs:
                if ev[1] == "measure" and ev[8] is not None and ev[6] <= gate:
                    measured[f"{_template(ev[5], ev[3])}.{ev[8]}.measured"].append(ev[9])
                if ev[1] != "enter":
                    continue
                ends = [x[6] for x in evs if x[1] in ("leave", "scrap") and x[5] == ev[5] and x[6] >= ev[6]]
                if not ends or min(ends) > gate:
                    continue
                lo, hi = ev[6], min(ends)
                at = _template(ev[5], ev[3])
                streams = {(s[4], s[5], False) for s in sensors if s[4] == ev[5]}
                if ev[4] in DRY_ROOM_STAGES:
                    streams |= {(s[4], s[5], True) for s in sensors if s[3] == "dry_room" and s[1] == ev[2]}
                for station, parameter, env in streams:
                    stem = f"{at}.{station}.{parameter}" if env else f"{at}.{parameter}"  # the dry room is site-wide
                    acc = pooled[stem]
                    for ts, value, lsl, usl in samples[(station, parameter)]:
                        if lo <= ts < hi:
                            acc[0] += 1
                            acc[1] += (lsl is not None and value < lsl) or (usl is not None and value > usl)
                            acc[2] += value
        feats: dict[str, float | None] = {}
        for stem, (n, oos, total) in pooled.items():
            feats[f"{stem}.samples"] = float(n)
            feats[f"{stem}.oos_share"] = oos / n if n else None
            feats[f"{stem}.mean"] = total / n if n else None
        for name, values in measured.items():
            feats[name] = sum(values) / len(values)
        out[cell] = feats
    return out


def test_one_row_per_cell_that_left_filling(warehouse, table):
    con = connect(warehouse.db)
    try:
        gate = dict(con.execute("SELECT unit_id, min(ts) FROM production_events WHERE kind = 'leave' "
                                "AND stage = 'filling' GROUP BY unit_id").fetchall())
    finally:
        con.close()
    rows = table.to_pylist()
    assert len(rows) == len(gate) > 20
    assert {r["cell_id"]: r["gate_ts"] for r in rows} == gate
    assert len({r["gate_ts"].date() for r in rows}) == 2  # the lake crosses midnight
    deep = [r for r in rows if len(r["upstream_ids"]) >= 4]  # two rolls and their batches
    assert deep, "no cell with a genealogy three units deep"


def test_features_equal_a_brute_force_recomputation(warehouse, table):
    rows = {r["cell_id"]: r for r in table.to_pylist()}
    sample = random.Random(3).sample(sorted(rows), 12)
    expected = _brute_force(warehouse.db, sample)
    for cell in sample:
        got = dict(rows[cell]["features"])
        assert set(got) == set(expected[cell]), cell
        for name, value in expected[cell].items():
            if value is None:
                assert got[name] is None, (cell, name)
            else:
                # Offsets are summed in integers of 1/SCALE of the unit: a mean is exact to that.
                assert got[name] == pytest.approx(value, rel=1e-9, abs=1 / SCALE), (cell, name)
    some = dict(rows[sample[0]]["features"])
    assert any(k.startswith("coat-c.") for r in rows.values() for k in dict(r["features"]))
    assert any(".dry_room." in k for k in some)


def test_nothing_after_the_gate_enters(warehouse, table, tmp_path):
    """The features of a day computed on a lake cut at each cell's gate equal those of the whole lake."""
    rows = table.to_pylist()
    cell = rows[len(rows) // 2]
    con = connect(warehouse.db)
    try:
        cut = cell_features(con, SINCE, UNTIL, cells=[cell["cell_id"]])
        # The same SQL with every reading and event after the gate hidden (temporary views shadow the
        # catalog's; a view stores no parameter, so the instant is written in).
        gate = cell["gate_ts"].isoformat()
        db = con.execute("SELECT current_database()").fetchone()[0]
        for name in ("readings", "production_events"):
            con.execute(f"CREATE TEMP VIEW {name} AS SELECT * FROM {db}.main.{name} WHERE ts <= TIMESTAMPTZ '{gate}'")
        blind = cell_features(con, SINCE, UNTIL, cells=[cell["cell_id"]])
    finally:
        con.close()
    assert cut.num_rows == blind.num_rows == 1
    seen, hidden = dict(cut.to_pylist()[0]["features"]), dict(blind.to_pylist()[0]["features"])
    whole_day = dict(cell["features"])
    # One cell is summed visit by visit, a day by running sums: integer sums make them bit-identical.
    assert seen == hidden == whole_day


def test_the_few_cells_plan_equals_the_day_plan(table, warehouse):
    """The live score's plan (a few cells, each visit summed directly) gives the day's rows exactly."""
    rows = table.to_pylist()
    few = [r["cell_id"] for r in random.Random(5).sample(rows, min(DIRECT_MAX_CELLS, len(rows)))]
    con = connect(warehouse.db)
    try:
        got = {r["cell_id"]: r for r in cell_features(con, SINCE, UNTIL, cells=few).to_pylist()}
    finally:
        con.close()
    assert len(got) == len(few)
    for r in rows:
        if r["cell_id"] in got:
            assert got[r["cell_id"]] == r


def test_cached_upstream_visits_give_the_same_rows(table, warehouse):
    """The scorer's cache: cells scored one by one, in gate order, reuse the sums of the rolls and
    batches they share, and every row is still the day's, bit for bit."""
    rows = sorted(table.to_pylist(), key=lambda r: (r["gate_ts"], r["cell_id"]))
    rows = rows[len(rows) // 2:][:40]  # the first cells are made of stock rolls, which have no visits
    cache = VisitCache()
    con = connect(warehouse.db)
    try:
        got = [cell_features(con, SINCE, UNTIL, cells=[r["cell_id"]], cache=cache).to_pylist()[0] for r in rows]
    finally:
        con.close()
    assert got == rows
    assert cache.hits > cache.misses > 0  # upstream visits were summed once, then reused
    assert len(cache) > 0


def test_upstream_visits_warmed_at_stacking_give_the_same_rows_and_leave_only_the_cells_own(table, warehouse):
    """The scorer warms the cache when a cell enters stacking (its rolls are finished then): at the
    gate the cell then reads only its own visits, and its row is still the day's, bit for bit."""
    rows = sorted(table.to_pylist(), key=lambda r: (r["gate_ts"], r["cell_id"]))
    rows = rows[len(rows) // 2:][:30]
    con = connect(warehouse.db)
    try:
        stacking = con.execute(
            "SELECT unit_id, min(ts), any_value(parent_ids) FROM production_events WHERE unit_type = 'cell' "
            "AND kind = 'enter' AND stage = 'stacking' AND list_contains($cells, unit_id) GROUP BY unit_id",
            {"cells": [r["cell_id"] for r in rows]}).fetchall()
        assert len(stacking) == len(rows)
        cache = VisitCache()
        for _, at, parents in sorted(stacking, key=lambda x: x[1]):
            warm_upstream(con, parents, at, cache)
        assert cache.warmed > 0 and cache.hits == cache.misses == 0
        assert warm_upstream(con, stacking[0][2], stacking[0][1], cache) == 0  # already warm: nothing read
        got = [cell_features(con, SINCE, UNTIL, cells=[r["cell_id"]], cache=cache).to_pylist()[0] for r in rows]
        cold = VisitCache()
        for r in rows:
            cell_features(con, SINCE, UNTIL, cells=[r["cell_id"]], cache=cold)
    finally:
        con.close()
    assert got == rows
    assert cache.hits > 0
    assert cache.misses < cold.misses  # the upstream misses of each first cell of a roll are gone
    assert warm_upstream(connect(warehouse.db), [], START, cache) == 0


def test_the_cache_forgets_everything_when_a_limit_changes():
    cache = VisitCache(max_visits=2)
    cache.check_limits("a")
    for i in range(3):
        cache.put(("u", i), (1, 0, 5))
    assert len(cache) == 2 and cache.get(("u", 0)) is None  # the oldest went first
    cache.check_limits("a")
    assert cache.get(("u", 2)) == (1, 0, 5)
    cache.check_limits("b")
    assert len(cache) == 0


def test_a_day_rebuilds_identically(warehouse, table):
    con = connect(warehouse.db)
    try:
        again = cell_features(con, SINCE, UNTIL)
    finally:
        con.close()
    assert again.equals(table)


def test_naive_times_are_refused(warehouse):
    con = connect(warehouse.db)
    try:
        with pytest.raises(ValueError, match="timezone-aware"):
            cell_features(con, datetime(2026, 3, 2), datetime(2026, 3, 3))
        with pytest.raises(ValueError, match="empty gate window"):
            cell_features(con, UNTIL, SINCE)
    finally:
        con.close()
