"""The live scorer against a real broker: simulate (with its ground truth), stream, score, read back.

One private broker holds 150 simulated seconds of a small reference plant (one line, process times
of seconds, so cells with a full genealogy pass the gate). A stream worker drains it into a lake; a
model trained on that lake's ``cell_features`` becomes champion; ``gigapulse score --drain`` scores
every cell. The rows are checked against the batch computation of the same cells.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest
from kafka import KafkaConsumer, TopicPartition

from infra.broker import BrokerSettings
from schemas.tables import SCORED_EVENTS
from schemas.topics import FEATURES_CELL_RISK
from tests.conftest import running_broker
from tests.transforms.warehouse.support import small_plant
from transforms import checkpoint as ckpt
from transforms.batch.cell_features import cell_features
from transforms.predictive import registry
from transforms.predictive.dataset import feature_matrix
from transforms.warehouse import build_catalog
from transforms.warehouse.reader import connect

START = "2026-03-03T06:00:00Z"
DAY = (datetime(2026, 3, 3, tzinfo=UTC), datetime(2026, 3, 4, tzinfo=UTC))
VERSION = "gate-20260303-0a1b2c"


def _cli(*args: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "gigapulse.cli", *args], capture_output=True, text=True,
                         env=env, timeout=timeout)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _train(lake, db) -> registry.GateModel:
    """A real classifier on the lake's own features; its label (above the median dew point during
    filling) only has to give both classes: this test is about what the scorer does with a model."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    con = connect(db)
    try:
        rows = cell_features(con, *DAY).to_pylist()
    finally:
        con.close()
    X, names = feature_matrix([r["features"] for r in rows])
    j = names.index("fill.dry_room.dew_point.mean")
    y = X[:, j] > np.nanmedian(X[:, j])
    clf = HistGradientBoostingClassifier(max_iter=30, min_samples_leaf=3, random_state=0).fit(X, y)
    model = registry.GateModel(version=VERSION, classifier=clf, regressor=None, names=names,
                               medians=np.nanmedian(np.where(np.isnan(X), np.nan, X), axis=0),
                               top_features=[names[j], *names[:4]], schema_hash=registry.schema_hash(names))
    registry.save_model(lake, model, {"test": True})
    registry.set_champion(lake, VERSION, by="test", reason="first model")
    return model


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scorer")
    plant = tmp / "small-plant.yaml"
    small_plant(tmp)
    data = tmp / "data"
    with running_broker(tmp / "kafka") as settings:
        env = dict(os.environ, GIGAPULSE_BOOTSTRAP_SERVERS=settings.bootstrap, GIGAPULSE_DATA_DIR=str(data),
                   GIGAPULSE_STREAM_PUBLISH_FEATURES="false", GIGAPULSE_STREAM_GROUP_ID="g-stream")
        truth = tmp / "truth.parquet"
        _cli("simulate", "--plant", str(plant), "--duration", "150s", "--seed", "7", "--start", START,
             "--truth-out", str(truth), "--summary-json", str(tmp / "summary.json"), env=env)
        _cli("stream", "--drain", env=env)
        lake, db = data / "lake", data / "gigapulse.duckdb"
        build_catalog(lake, db)
        model = _train(lake, db)
        res = _cli("score", "--drain", env=dict(env, GIGAPULSE_SCORE_TRACE=str(tmp / "trace.jsonl")))
        build_catalog(lake, db)
        yield settings, env, data, model, truth, res


def _rows(data) -> list[dict]:
    con = connect(data / "gigapulse.duckdb")
    try:
        return [dict(zip(("cell_id", "gate_ts", "score", "model_version", "complete", "features", "drivers",
                          "src_offset"), r, strict=True))
                for r in con.execute("SELECT cell_id, gate_ts, score, model_version, complete, features, drivers, "
                                     "src_offset FROM cell_risk ORDER BY cell_id").fetchall()]
    finally:
        con.close()


def _gate_cells(data) -> dict[str, datetime]:
    con = connect(data / "gigapulse.duckdb")
    try:
        return dict(con.execute("SELECT unit_id, min(ts) FROM production_events WHERE kind = 'leave' "
                                "AND stage = 'filling' AND unit_type = 'cell' GROUP BY unit_id").fetchall())
    finally:
        con.close()


def test_every_cell_at_the_gate_is_scored_once_with_the_champion(scored):
    _, _, data, model, _, res = scored
    rows = _rows(data)
    gate = _gate_cells(data)
    assert len(gate) > 10
    assert [r["cell_id"] for r in rows] == sorted(gate)  # each once
    assert {r["model_version"] for r in rows} == {VERSION}
    assert all(r["complete"] for r in rows)
    assert {r["cell_id"]: r["gate_ts"] for r in rows} == gate
    assert f"{len(gate):,} cells scored" in res.stdout
    con = connect(data / "gigapulse.duckdb")
    try:  # when the platform received each leave event, the start of the live score's latency
        assert con.execute("SELECT count(*) FROM cell_risk WHERE arrived_at IS NULL OR arrived_at < gate_ts "
                           "OR scored_at < arrived_at").fetchall() == [(0,)]
    finally:
        con.close()


def test_the_trace_has_each_scored_cell_once_with_its_steps_in_order(scored):
    """GIGAPULSE_SCORE_TRACE: where each cell's latency went, for the scoring bench."""
    _, _, data, _, _, _ = scored
    lines = [orjson.loads(x) for x in (data.parent / "trace.jsonl").read_bytes().splitlines()]
    assert sorted(t["cell_id"] for t in lines) == sorted(_gate_cells(data))
    for t in lines:
        assert t["arrived"] - 1 <= t["read"] <= t["started"] <= t["computed"] <= t["written"], t
        assert t["landed"] is not None and t["landed"] <= t["started"], t  # every cell complete
        assert 1 <= t["batch"] <= 64


def test_live_and_batch_feature_vectors_and_scores_are_identical(scored):
    _, _, data, model, _, _ = scored
    con = connect(data / "gigapulse.duckdb")
    try:
        batch = {r["cell_id"]: r for r in cell_features(con, *DAY).to_pylist()}
    finally:
        con.close()
    rows = _rows(data)
    for r in rows:
        assert dict(r["features"]) == dict(batch[r["cell_id"]]["features"]), r["cell_id"]
    X, _ = feature_matrix([batch[r["cell_id"]]["features"] for r in rows], names=model.names)
    assert np.array_equal(np.array([r["score"] for r in rows]), model.score(X))
    # Drivers are features the model ranks, with the cell's own value, and they raised its score.
    drivers = [d for r in rows for d in r["drivers"]]
    assert drivers and all(d["feature"] in model.top_features and d["effect"] > 0 for d in drivers)


def test_scores_are_published_keyed_by_cell(scored):
    settings, _, data, _, _, _ = scored
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False, group_id=None,
                             consumer_timeout_ms=3000)
    parts = [TopicPartition(FEATURES_CELL_RISK, p) for p in consumer.partitions_for_topic(FEATURES_CELL_RISK)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    msgs = [(m.key.decode(), json.loads(m.value)) for m in consumer]
    consumer.close()
    assert sorted(k for k, _ in msgs) == [r["cell_id"] for r in _rows(data)]
    assert all(v["cell_id"] == k and v["model_version"] == VERSION and "features" not in v for k, v in msgs)


def test_a_rerun_after_a_lost_checkpoint_rewrites_the_same_rows(scored):
    """A crash between the file rename and the checkpoint: the rerun deletes and redoes the range."""
    _, env, data, _, _, _ = scored
    before = _rows(data)
    lake = data / "lake"
    for p in range(3):
        ckpt.checkpoint_path(lake, SCORED_EVENTS, p).unlink(missing_ok=True)
    _cli("score", "--drain", env=dict(env, GIGAPULSE_SCORE_PUBLISH="false"))
    build_catalog(lake, data / "gigapulse.duckdb")
    after = _rows(data)
    assert [(r["cell_id"], r["score"], r["src_offset"]) for r in after] == \
        [(r["cell_id"], r["score"], r["src_offset"]) for r in before]


def test_two_scorers_in_one_group_share_the_partitions_and_land_each_cell_once(scored):
    """Two ``score`` processes started together in a new group, from no checkpoint: whichever owns a
    partition when, the table ends with each cell once and the same scores."""
    _, env, data, _, _, _ = scored
    before = _rows(data)
    lake = data / "lake"
    for p in range(3):
        ckpt.checkpoint_path(lake, SCORED_EVENTS, p).unlink(missing_ok=True)
    env2 = dict(env, GIGAPULSE_SCORE_PUBLISH="false", GIGAPULSE_SCORE_GROUP_ID="g-two-scorers")
    procs = [subprocess.Popen([sys.executable, "-m", "gigapulse.cli", "score", "--drain"], env=env2,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        outs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    build_catalog(lake, data / "gigapulse.duckdb")
    after = _rows(data)
    assert [(r["cell_id"], r["score"], r["features"]) for r in after] == \
        [(r["cell_id"], r["score"], r["features"]) for r in before]


def test_the_simulator_writes_the_truth_of_every_cell_through_the_cli(scored):
    """``simulate --truth-out`` against a real broker: one row per cell that passed the gate."""
    _, _, data, _, truth, _ = scored
    table = pq.read_table(truth)
    gate = _gate_cells(data)
    assert sorted(table.column("cell_id").to_pylist()) == sorted(gate)
    assert all(0 <= p <= 1 for p in table.column("p_bad").to_pylist())


def test_an_unwritable_truth_path_is_one_line_before_anything_is_sent(tmp_path, kafka: BrokerSettings):
    env = dict(os.environ, GIGAPULSE_BOOTSTRAP_SERVERS=kafka.bootstrap)
    blocker = tmp_path / "file"
    blocker.write_text("")
    res = subprocess.run([sys.executable, "-m", "gigapulse.cli", "simulate", "--duration", "5s",
                          "--truth-out", str(blocker / "truth.parquet")], capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "truth" in res.stderr
