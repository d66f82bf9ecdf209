"""``gigapulse replay`` on the real broker: CSV and Parquet files of readings and events.

Every good row arrives as a reading (in frames or as single JSON messages), every bad row arrives in
the dead-letter topic with its reason and the row, and nothing is lost: good + dead == rows. Reads
back only what each run appended (end offsets recorded before the run), as the topics are shared.
"""

from __future__ import annotations

import csv
import json
import math
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gigapulse.cli import main
from schemas import topics
from schemas.asset_model import load_plant
from schemas.contracts import (
    DecodedFrame,
    EventKind,
    Reading,
    decode_dead_letter,
    decode_event,
    decode_reading_message,
)
from tests.ingestion.test_ingest_integration import collect, flat, gigapulse, offsets

pytestmark = pytest.mark.integration

PLANT = load_plant("reference")
SENSORS = [PLANT.sensors[i] for i in (0, 30, 130, 300, 600, 900)]
T0 = datetime(2026, 1, 5, 6, tzinfo=UTC)
QUALITY = ("good", "uncertain", "bad")
COLUMNS = ("sensor_id", "ts", "value", "quality", "unit")


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def reading_rows() -> tuple[list[dict], list[tuple[int, str]]]:
    """Good rows with bad ones mixed in; returns the rows and (row index, expected reason) of the bad ones."""
    rows: list[dict] = []
    for i in range(60):
        e = SENSORS[i % len(SENSORS)]
        rows.append({"sensor_id": e.sensor_id, "ts": _iso(T0 + timedelta(milliseconds=250 * i)),
                     "value": round(1.25 * i - 20.0, 3), "quality": QUALITY[i % 3] if i % 5 else None,
                     "unit": e.unit if i % 4 == 0 else None})
    s = SENSORS[1]
    bad = [
        ({"sensor_id": s.sensor_id, "ts": _iso(T0), "value": math.nan, "quality": None, "unit": None}, "non_finite"),
        ({"sensor_id": "ref.nowhere.ghost", "ts": _iso(T0), "value": 1.0, "quality": None, "unit": None},
         "unknown_sensor"),
        ({"sensor_id": s.sensor_id, "ts": "yesterday", "value": 2.0, "quality": None, "unit": None}, "bad_timestamp"),
        ({"sensor_id": s.sensor_id, "ts": "2026-01-05T06:00:03", "value": 3.0, "quality": None, "unit": None},
         "bad_timestamp"),  # no UTC offset: ambiguous, refused
        ({"sensor_id": s.sensor_id, "ts": _iso(T0), "value": None, "quality": None, "unit": None}, "missing_field"),
        ({"sensor_id": s.sensor_id, "ts": _iso(T0), "value": 4.0, "quality": None, "unit": "furlong"},
         "unit_mismatch"),
        ({"sensor_id": s.sensor_id, "ts": _iso(T0), "value": 5.0, "quality": "meh", "unit": None}, "bad_value"),
    ]
    expected_bad = []
    for k, (row, reason) in enumerate(bad):
        pos = 3 + 8 * k
        rows.insert(pos, row)
        expected_bad.append((pos, reason))
    return rows, expected_bad


def write_csv(path: Path, rows: list[dict], columns=COLUMNS) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow(["" if r[c] is None else "NaN" if isinstance(r[c], float) and math.isnan(r[c]) else r[c]
                        for c in columns])
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    schema = pa.schema([("sensor_id", pa.string()), ("ts", pa.string()), ("value", pa.float64()),
                        ("quality", pa.string()), ("unit", pa.string())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def replay(bootstrap: str, tmp_path: Path, path: Path, *args: str) -> dict:
    summary = tmp_path / f"replay-{uuid.uuid4().hex[:8]}.json"
    res = gigapulse("replay", str(path), "--bootstrap", bootstrap, "--summary-json", str(summary), *args,
                    env={"GIGAPULSE_DEBUG": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(summary.read_text())


def readings_of(records) -> list[tuple[str, int, float, int]]:
    """(sensor, ts_ms, value, quality code) of every reading in the records, sorted."""
    out = []
    for r in records:
        m = decode_reading_message(r.value)
        if isinstance(m, Reading):
            out.append((m.sensor_id, _ms(m.ts), m.value, QUALITY.index(m.quality)))
        else:
            out.extend(zip(m.sensor_ids().tolist(), m.ts_ms.tolist(), m.value.tolist(), m.quality.tolist(),
                           strict=True))
    return sorted(out)


def _expected(rows: list[dict], bad_pos: set[int]) -> list[tuple[str, int, float, int]]:
    return sorted((r["sensor_id"], _ms(datetime.fromisoformat(r["ts"])), float(r["value"]),
                   QUALITY.index(r["quality"] or "good"))
                  for i, r in enumerate(rows) if i not in bad_pos)


@pytest.mark.parametrize(("suffix", "fmt"), [("csv", "frames"), ("parquet", "frames"), ("csv", "json")])
def test_replay_readings_good_rows_flow_bad_rows_are_dead_lettered(bootstrap, tmp_path, suffix, fmt):
    rows, bad = reading_rows()
    path = tmp_path / f"readings.{suffix}"
    (write_csv if suffix == "csv" else write_parquet)(path, rows)

    before = offsets(bootstrap, (topics.READINGS, topics.DLQ))
    s = replay(bootstrap, tmp_path, path, "--plant", "reference", "--format", fmt)
    got = collect(bootstrap, before)

    n_good = len(rows) - len(bad)
    assert s["kind"] == "readings" and s["rows"] == len(rows)
    assert s["readings"] == n_good and s["dead_letters"] == len(bad)
    assert s["readings"] + s["dead_letters"] == s["rows"]  # nothing lost
    assert s["dead_letters_by_reason"] == dict(Counter(reason for _, reason in bad))

    records = flat(got, topics.READINGS)
    assert readings_of(records) == _expected(rows, {pos for pos, _ in bad})
    if fmt == "frames":
        assert len(records) == s["frames"] > 0
        for r in records:
            frame = decode_reading_message(r.value)
            assert isinstance(frame, DecodedFrame)
            assert {PLANT.by_id[sid].station for sid in frame.sensors} == {r.key.decode()}
    else:
        assert len(records) == n_good and s["frames"] == 0
        assert all(r.key == decode_reading_message(r.value).sensor_id.encode() for r in records)

    dlq = flat(got, topics.DLQ)
    letters = [decode_dead_letter(r.value) for r in dlq]
    assert all(x.stage == "replay" and x.source_topic is None and x.detail for x in letters)
    assert all(r.key == b"replay" for r in dlq)
    # each bad row is there with its reason and the row itself
    assert sorted((x.reason.value, orjson.loads(x.payload())["sensor_id"]) for x in letters) == sorted(
        (reason, rows[pos]["sensor_id"]) for pos, reason in bad)
    by_reason = {x.reason.value: orjson.loads(x.payload()) for x in letters}
    assert by_reason["bad_timestamp"]["ts"] in ("yesterday", "2026-01-05T06:00:03")
    assert by_reason["unit_mismatch"]["unit"] == "furlong"
    assert "value" not in by_reason["missing_field"]


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_replay_with_renamed_columns(bootstrap, tmp_path, suffix):
    """--map contract=column; ts as epoch milliseconds (CSV) or a naive Parquet timestamp (taken as UTC)."""
    n = 40
    good = [(SENSORS[i % 3].sensor_id, T0 + timedelta(seconds=i), 0.5 * i) for i in range(n)]
    ghost = ("ref.nowhere.ghost", T0, 1.0)
    all_rows = [*good[:10], ghost, *good[10:]]
    path = tmp_path / f"mapped.{suffix}"
    if suffix == "csv":
        path.write_text("tag,epoch_ms,reading\n" + "".join(f"{s},{_ms(t)},{v}\n" for s, t, v in all_rows))
        maps = ("--map", "sensor_id=tag", "--map", "ts=epoch_ms", "--map", "value=reading")
    else:
        table = pa.table({"tag": [s for s, _, _ in all_rows],
                          "time": pa.array([t.replace(tzinfo=None) for _, t, _ in all_rows], pa.timestamp("ms")),
                          "reading": [v for _, _, v in all_rows]})
        pq.write_table(table, path)
        maps = ("--map", "sensor_id=tag", "--map", "ts=time", "--map", "value=reading")

    before = offsets(bootstrap, (topics.READINGS, topics.DLQ))
    s = replay(bootstrap, tmp_path, path, "--plant", "reference", *maps)
    got = collect(bootstrap, before)

    assert (s["rows"], s["readings"], s["dead_letters"]) == (n + 1, n, 1)
    assert s["dead_letters_by_reason"] == {"unknown_sensor": 1}
    assert readings_of(flat(got, topics.READINGS)) == sorted((sid, _ms(t), v, 0) for sid, t, v in good)
    [letter] = [decode_dead_letter(r.value) for r in flat(got, topics.DLQ)]
    assert letter.reason.value == "unknown_sensor"
    assert orjson.loads(letter.payload())["sensor_id"] == "ref.nowhere.ghost"


EVENT_COLUMNS = ("event_id", "ts", "site", "line", "stage", "station", "unit_id", "unit_type", "kind",
                 "parent_ids", "attribute", "value", "unit", "grade", "reason", "source")


def test_replay_events_csv(bootstrap, tmp_path):
    tag = uuid.uuid4().hex[:6]
    roll = f"roll-{tag}"
    cell = f"cell-{tag}"
    base = {"site": "ref", "line": "L1", "source": None, "parent_ids": None, "attribute": None, "value": None,
            "unit": None, "grade": None, "reason": None}

    def ev(n: int, **kw) -> dict:
        row = {**base, "event_id": f"ev-{tag}-{n}", "ts": _iso(T0 + timedelta(seconds=n)), **kw}
        return row

    good = [
        ev(1, stage="coating", station="L1-coat-c", unit_id=roll, unit_type="electrode_roll", kind="enter",
           parent_ids=f"slurry-{tag}-a|slurry-{tag}-b"),
        ev(2, stage="coating", station="L1-coat-c", unit_id=roll, unit_type="electrode_roll", kind="measure",
           attribute="areal_loading", value=21.5, unit="mg/cm²"),
        ev(3, stage="coating", station="L1-coat-c", unit_id=roll, unit_type="electrode_roll", kind="leave"),
        ev(4, stage="stacking", station="L1-stack", unit_id=cell, unit_type="cell", kind="enter",
           parent_ids=f"{roll}|roll-{tag}-anode", source="manual"),
        ev(5, stage="aging_eol", station="L1-eol", unit_id=cell, unit_type="cell", kind="grade", grade="A"),
        ev(6, stage="aging_eol", station="L1-eol", unit_id=f"cell-{tag}-2", unit_type="cell", kind="scrap",
           reason="self_discharge"),
    ]
    bad = [
        (ev(7, stage="coating", station="L1-coat-c", unit_id=roll, unit_type="electrode_roll", kind="explode"),
         "bad_value"),
        (ev(8, stage="coating", station="L1-coat-c", unit_id=roll, unit_type="electrode_roll", kind="measure",
            attribute="areal_loading", unit="mg/cm²"), "missing_field"),
        ({**ev(9, stage="coating", station="L1-coat-c", unit_id=roll, unit_type="electrode_roll", kind="leave"),
          "ts": "soon"}, "bad_timestamp"),
    ]
    rows = [good[0], good[1], bad[0][0], good[2], good[3], bad[1][0], good[4], bad[2][0], good[5]]
    path = write_csv(tmp_path / "events.csv", rows, EVENT_COLUMNS)

    before = offsets(bootstrap, (topics.EVENTS, topics.DLQ, topics.READINGS))
    s = replay(bootstrap, tmp_path, path)
    got = collect(bootstrap, before)

    assert s["kind"] == "events"
    assert (s["rows"], s["events"], s["dead_letters"]) == (len(rows), len(good), len(bad))
    assert s["dead_letters_by_reason"] == dict(Counter(r for _, r in bad))
    assert flat(got, topics.READINGS) == []

    events = {e.event_id: e for e in (decode_event(r.value) for r in flat(got, topics.EVENTS))}
    assert sorted(events) == sorted(g["event_id"] for g in good)
    assert events[f"ev-{tag}-1"].parent_ids == [f"slurry-{tag}-a", f"slurry-{tag}-b"]
    assert events[f"ev-{tag}-4"].parent_ids == [roll, f"roll-{tag}-anode"]
    assert events[f"ev-{tag}-4"].source == "manual"
    assert events[f"ev-{tag}-3"].parent_ids == []
    m = events[f"ev-{tag}-2"]
    assert (m.kind, m.attribute, m.value, m.unit) == (EventKind.MEASURE, "areal_loading", 21.5, "mg/cm²")
    assert events[f"ev-{tag}-5"].grade == "A" and events[f"ev-{tag}-6"].reason == "self_discharge"
    assert all(e.ts == T0 + timedelta(seconds=int(e.event_id.rsplit("-", 1)[1])) for e in events.values())

    letters = [decode_dead_letter(r.value) for r in flat(got, topics.DLQ)]
    assert sorted((x.reason.value, orjson.loads(x.payload())["event_id"]) for x in letters) == sorted(
        (reason, row["event_id"]) for row, reason in bad)
    assert all(x.stage == "replay" for x in letters)


# --------------------------------------------------------------------------- files that cannot be replayed

def _cli(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code, capsys.readouterr().err


@pytest.mark.parametrize(("name", "content", "extra", "code", "needle"), [
    ("garbage.parquet", b"this is not parquet", [], 1, "cannot read"),
    ("sheet.xlsx", b"PK\x03\x04", [], 1, "unsupported file type"),
    ("other.csv", b"a,b,c\n1,2,3\n", [], 1, "neither reading columns"),
    ("other.csv", b"a,b,c\n1,2,3\n", ["--map", "sensor_id=a", "--map", "ts=b"], 1, "neither reading columns"),
    ("readings.csv", b"sensor_id,ts,value\n", ["--map", "ts"], 2, "--map"),
    ("readings.csv", b"sensor_id,ts,value\n", ["--map", "=timestamp"], 2, "--map"),
    ("readings.csv", b"sensor_id,ts,value\n", ["--speed", "warp"], 2, "--speed"),
])
def test_replay_refuses_with_one_line(bootstrap, tmp_path, capsys, monkeypatch, name, content, extra, code,
                                      needle):
    monkeypatch.delenv("GIGAPULSE_DEBUG", raising=False)
    path = tmp_path / name
    path.write_bytes(content)
    rc, err = _cli(["replay", str(path), "--bootstrap", bootstrap, *extra], capsys)
    assert rc == code
    assert err.startswith("gigapulse: error:") and err.count("\n") == 1, err
    assert needle in err
