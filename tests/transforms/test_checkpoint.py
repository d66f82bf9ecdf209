"""The commit point: typed, versioned checkpoint files, legacy pickles, and refusals of bad files."""

from __future__ import annotations

import logging
import pickle
from datetime import UTC, datetime

import orjson
import pyarrow.dataset as ds
import pytest

from ingestion.simulator import PlantSimulator
from schemas.asset_model import load_plant
from schemas.contracts import encode
from transforms import checkpoint as C
from transforms import features as F
from transforms import partitions as P
from transforms.settings import StreamSettings

READINGS = "plant.readings.v1"
EVENTS = "plant.events.v1"


@pytest.fixture(scope="module")
def plant():
    return load_plant("reference")


@pytest.fixture(scope="module")
def sim_messages(plant):
    """40 simulated seconds of the reference plant: (readings, events), each as (offset, payload)."""
    sim = PlantSimulator(plant, seed=5, start=datetime(2026, 1, 5, 6, tzinfo=UTC))
    frames, events = [], []
    for tick in sim.run(40):
        frames.extend(fr.encode() for fr in tick.frames)
        events.extend(encode(ev) for ev in tick.events)
    return list(enumerate(frames)), list(enumerate(events))


def _settings() -> StreamSettings:
    return StreamSettings(microbatch_rows=5000)


def _partition(kind, lake, plant, topic=None):
    if kind is P.ReadingsPartition:
        return P.ReadingsPartition(topic or READINGS, 0, lake, _settings(), plant.by_id)
    return kind(topic or EVENTS, 0, lake, _settings())


def _feed(p, messages, every: int = 200, final: bool = False) -> None:
    for i, (off, payload) in enumerate(messages):
        p.add(off, 0, payload)
        if (i + 1) % every == 0:
            p.checkpoint()
    p.checkpoint(final=final)


def _table(lake, spec):
    """A lake table in its key order (file order depends on how batches were cut)."""
    path = lake / spec.name
    if not path.exists():
        return None
    table = ds.dataset(path, format="parquet", partitioning="hive").to_table()
    return table.sort_by([(c, "ascending") for c in spec.sort_key])


def _assert_same_lake(a, b, kind) -> None:
    for spec in kind.TABLES:
        ta, tb = _table(a, spec), _table(b, spec)
        assert (ta is None and tb is None) or ta.equals(tb), spec.name
    assert _table(b, kind.TABLES[1]).num_rows  # features were compared, not only raw rows


def _legacy_pickle(p) -> bytes:
    """The file the previous format wrote: the live objects, pickled, under their old module path.

    The feature classes lived in one module, ``transforms.features``; pretending they still do
    makes the pickle name them as the old code's files do.
    """
    classes = [c for m in (F.windows, F.sensors, F.stats, F.health, F.spc, F.quality, F.energy)
               for c in vars(m).values() if isinstance(c, type) and c.__module__ == m.__name__]
    saved = {c: c.__module__ for c in classes}
    try:
        for c in classes:
            c.__module__ = "transforms.features"
            setattr(F, c.__name__, c)
        data = pickle.dumps({"next_offset": p.next_offset, "state": p.state}, protocol=5)
    finally:
        for c, module in saved.items():
            c.__module__ = module
            if c.__name__ not in F.__all__:
                delattr(F, c.__name__)
    assert b"transforms.features.windows" not in data and b"_Clock" in data or not p.state
    return data


# --------------------------------------------------------------------------- the format


def test_a_checkpoint_is_a_versioned_header_line_and_a_typed_state_line(tmp_path, plant, sim_messages):
    readings, _ = sim_messages
    p = _partition(P.ReadingsPartition, tmp_path, plant)
    _feed(p, readings[:60])
    path = C.checkpoint_path(tmp_path, READINGS, 0)
    assert path.name == "0.json"
    header, state, rest = path.read_bytes().split(b"\n")
    assert rest == b""
    assert orjson.loads(header) == {"format_version": C.FORMAT_VERSION, "kind": "readings", "topic": READINGS,
                                    "partition": 0, "next_offset": 60}
    assert set(orjson.loads(state)) == {f for f in C.ReadingsState.__dataclass_fields__}
    assert P.committed_next_offset(tmp_path, READINGS, 0) == 60
    assert P.committed_next_offset(tmp_path, READINGS, 1) == 0  # no checkpoint yet


@pytest.mark.parametrize("kind", [P.ReadingsPartition, P.EventsPartition])
def test_resuming_from_a_checkpoint_gives_the_lake_of_an_uninterrupted_run(tmp_path, plant, sim_messages, kind):
    messages = sim_messages[0] if kind is P.ReadingsPartition else sim_messages[1]
    half = len(messages) // 2
    _feed(_partition(kind, tmp_path / "resumed", plant), messages[:half])
    q = _partition(kind, tmp_path / "resumed", plant)  # a restart: everything from the checkpoint file
    assert q.next_offset == half
    _feed(q, messages, final=True)  # redelivered messages below the checkpoint are skipped
    _feed(_partition(kind, tmp_path / "ref", plant), messages, final=True)
    _assert_same_lake(tmp_path / "resumed", tmp_path / "ref", kind)


# --------------------------------------------------------------------------- the previous format


@pytest.mark.parametrize("kind", [P.ReadingsPartition, P.EventsPartition])
def test_a_legacy_pickled_checkpoint_is_migrated_and_resumes_exactly(tmp_path, plant, sim_messages, kind, caplog):
    messages = sim_messages[0] if kind is P.ReadingsPartition else sim_messages[1]
    topic = READINGS if kind is P.ReadingsPartition else EVENTS
    lake = tmp_path / "lake"
    half = len(messages) // 2
    p = _partition(kind, lake, plant)
    _feed(p, messages[:half])
    legacy = C.legacy_checkpoint_path(lake, topic, 0)
    legacy.write_bytes(_legacy_pickle(p))
    C.checkpoint_path(lake, topic, 0).unlink()  # as the previous code left the lake
    assert P.committed_next_offset(lake, topic, 0) == half
    with caplog.at_level(logging.WARNING, logger="transforms.checkpoint"):
        q = _partition(kind, lake, plant)
    assert [r.getMessage() for r in caplog.records if "legacy" in r.getMessage()] == [
        f"{legacy}: migrated a legacy pickled checkpoint (next offset {half}); the next commit replaces it "
        "with 0.json"]
    assert q.next_offset == half
    _feed(q, messages[half:half + 1])
    assert not legacy.exists() and C.checkpoint_path(lake, topic, 0).exists()
    _feed(q, messages[half + 1:], final=True)
    _feed(_partition(kind, tmp_path / "ref", plant), messages, final=True)
    _assert_same_lake(lake, tmp_path / "ref", kind)


def test_a_legacy_pickle_naming_anything_but_state_objects_is_refused_unexecuted(tmp_path, plant):
    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    legacy = C.legacy_checkpoint_path(tmp_path, READINGS, 0)
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(pickle.dumps({"next_offset": 5, "state": Exploit()}))
    with pytest.raises(C.CheckpointError, match=f"legacy checkpoint {legacy} cannot be read.*builtins.print"):
        _partition(P.ReadingsPartition, tmp_path, plant)


# --------------------------------------------------------------------------- refusals


def _valid_checkpoint(lake, plant, messages) -> bytes:
    _feed(_partition(P.ReadingsPartition, lake, plant), messages[:30])
    return C.checkpoint_path(lake, READINGS, 0).read_bytes()


def _future(data: bytes) -> bytes:
    header, rest = data.split(b"\n", 1)
    return orjson.dumps({**orjson.loads(header), "format_version": C.FORMAT_VERSION + 1}) + b"\n" + rest


@pytest.mark.parametrize(("damage", "message"), [
    (_future, "has format version 2, this gigapulse reads version 1: run the gigapulse that wrote it"),
    (lambda d: b"\x00\x17garbage\xff" * 40, "is not a gigapulse checkpoint"),
    (lambda d: b"", "is not a gigapulse checkpoint"),
    (lambda d: d[: len(d) // 2], "is corrupt or truncated"),
    (lambda d: d.split(b"\n")[0], "is corrupt or truncated"),
    (lambda d: d.replace(b'"max_ts"', b'"max_tss"'), r"is corrupt or truncated .*missing \['max_ts'\]"),
    (lambda d: d.replace(b'"kind":"readings"', b'"kind":"events"'), "holds the state of a events partition"),
    (lambda d: d.replace(b'"partition":0', b'"partition":4'), r"has a bad header \(it belongs to plant.readings.v1\[4\]"),
])
def test_a_checkpoint_that_cannot_be_read_exactly_is_refused_naming_the_file(tmp_path, plant, sim_messages,
                                                                              damage, message):
    data = _valid_checkpoint(tmp_path, plant, sim_messages[0])
    path = C.checkpoint_path(tmp_path, READINGS, 0)
    path.write_bytes(damage(data))
    with pytest.raises(C.CheckpointError, match=f"checkpoint {path} {message}") as err:
        _partition(P.ReadingsPartition, tmp_path, plant)
    assert "\n" not in str(err.value)
    assert isinstance(err.value, OSError)  # the worker reports it in one line, without a traceback


@pytest.mark.parametrize("data", [_future, lambda d: b"garbage"])
def test_committed_next_offset_refuses_what_it_cannot_read(tmp_path, plant, sim_messages, data):
    path = C.checkpoint_path(tmp_path, READINGS, 0)
    raw = _valid_checkpoint(tmp_path, plant, sim_messages[0])
    path.write_bytes(data(raw))
    with pytest.raises(C.CheckpointError, match=str(path)):
        P.committed_next_offset(tmp_path, READINGS, 0)


def test_a_garbage_legacy_pickle_is_refused_naming_the_file(tmp_path, plant):
    legacy = C.legacy_checkpoint_path(tmp_path, READINGS, 0)
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(b"\x80\x05not really a pickle")
    with pytest.raises(C.CheckpointError, match=f"legacy checkpoint {legacy} cannot be read"):
        _partition(P.ReadingsPartition, tmp_path, plant)
    with pytest.raises(C.CheckpointError, match=f"legacy checkpoint {legacy}"):
        P.committed_next_offset(tmp_path, READINGS, 0)


def test_drop_uncommitted_removes_only_this_partitions_files_at_or_after_the_offset(tmp_path):
    day = tmp_path / "readings" / "date=2024-05-01"
    day.mkdir(parents=True)
    names = {"kept": "plant.readings.v1+0+00000000000000000000+00000000000000000009.parquet",
             "dropped": "plant.readings.v1+0+00000000000000000010+00000000000000000019.parquet",
             "other": "plant.readings.v1+1+00000000000000000010+00000000000000000019.parquet",
             "tmp": ".plant.readings.v1+0+00000000000000000020+00000000000000000029.parquet." + "a" * 32 + ".tmp",
             "other_tmp": ".plant.readings.v1+1+00000000000000000020+00000000000000000029.parquet." + "b" * 32 + ".tmp"}
    for name in names.values():
        (day / name).write_bytes(b"x")
    assert C.drop_uncommitted(tmp_path, READINGS, 0, 10) == 1
    assert sorted(p.name for p in day.iterdir()) == sorted(names[k] for k in ("kept", "other", "other_tmp"))
