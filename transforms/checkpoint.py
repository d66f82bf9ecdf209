"""The commit point of a source partition: its typed, versioned checkpoint, and how it is made durable.

A *checkpoint* makes everything a partition processor (:mod:`transforms.partitions`) did since the
previous one durable, in this order:

1. the lake files of every table, named by the source offset range they cover (atomic renames,
   :mod:`transforms.lake`);
2. the checkpoint file ``<lake>/_checkpoints/<topic>/<partition>.json``: the next offset to read
   and the feature state (open windows, SPC charts), written with an atomic rename.

Step 2 is the commit point, and this module is its only owner. On (re)assignment a partition loads
its checkpoint and deletes lake files that start at or after the checkpointed offset: those were
written by a checkpoint that crashed before its commit point. Messages below the checkpointed
offset are skipped, so Kafka's own offset commits are an optimisation, never the source of truth.
A crash at any moment repeats work but never loses or duplicates a row, and because the feature
state is restored with the offset, features resume exactly where they stopped.

The file is two JSON lines, so that reading the offset never parses the state::

    {"format_version": 1, "kind": "readings", "topic": "plant.readings.v1", "partition": 3, "next_offset": 1300}
    {"table": {"sensor_id": [...], ...}, "windows": {"clock": {...}, "open": {...}, ...}, ...}

The second line is the partition kind's state document (:class:`ReadingsState`,
:class:`EventsState`, :class:`DeadLettersState`), built from the feature classes' ``snapshot()``
and turned back into live objects by their ``restore()`` (Bytewax's snapshot-and-resume, not
pickled objects): renaming an attribute of a feature class cannot change what a checkpoint means.
A change to what the state documents hold must raise :data:`FORMAT_VERSION`; a file of any other
version, or one that does not parse into the documents, is refused with :class:`CheckpointError`
naming the file, never guessed at. Numeric arrays are JSON lists (NaN as null, infinities as
the strings ``"inf"``/``"-inf"``; a single non-finite float as ``"nan"``/``"inf"``/``"-inf"``), so
restored floats are bit-identical.

Legacy: the format before this one pickled the live objects to ``<partition>.pkl``. Such a file is
migrated on load: read with an unpickler that only accepts numpy arrays, plain containers and the
feature classes, converted with ``snapshot()``, logged once, and replaced by the ``.json`` file at
the next commit. One it cannot read is refused like any other bad checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import io
import logging
import math
import pickle
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa

from schemas import tables as T
from schemas.contracts import DeadLetter
from transforms import features as F
from transforms import lake
from transforms.lake import parse_file_name

if TYPE_CHECKING:
    from transforms.partitions import _Partition

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "_checkpoints"
#: Version of the checkpoint documents below; raise it with any change to what they hold.
FORMAT_VERSION = 1


class CheckpointError(OSError):
    """A checkpoint file that cannot be trusted (corrupt, truncated, unknown version, legacy unreadable).

    An OSError like :class:`gzip.BadGzipFile`: it is about a file on disk, not a bug, so the worker
    reports it in one line and stops instead of resuming from a state it would have to guess.
    """


def checkpoint_path(lake_root: Path, topic: str, partition: int) -> Path:
    """Where the commit point of one source partition lives."""
    return Path(lake_root) / CHECKPOINT_DIR / topic / f"{partition}.json"


def legacy_checkpoint_path(lake_root: Path, topic: str, partition: int) -> Path:
    """Where the format before :data:`FORMAT_VERSION` 1 pickled the partition's state."""
    return Path(lake_root) / CHECKPOINT_DIR / topic / f"{partition}.pkl"


# --------------------------------------------------------------------------- state documents


@dataclass(frozen=True, slots=True)
class ReadingsState:
    """State of a ``plant.readings.v1`` partition: the sensor table and every feature class on it."""

    table: F.SensorTableSnapshot
    #: parameter and unit per sensor key (enrichment the sensor table does not hold)
    param: list[str]
    unit: list[str]
    windows: F.WindowStatsSnapshot
    windows_long: F.WindowStatsSnapshot
    health: F.SensorHealthSnapshot
    energy: F.EnergyWindowsSnapshot
    spc: F.SpcStateSnapshot
    #: latest event time seen (per-message lateness); the int64 minimum before any
    max_ts: int
    #: ``[sensor key, window start, late readings]`` not yet reported on a sensor_health row
    late_by_window: list[list[int]]

    @classmethod
    def capture(cls, st: dict[str, Any]) -> ReadingsState:
        return cls(st["table"].snapshot(), st["param"].tolist(), st["unit"].tolist(), st["windows"].snapshot(),
                   st["windows_long"].snapshot(), st["health"].snapshot(), st["energy"].snapshot(),
                   st["spc"].snapshot(), int(st["max_ts"]), [[k, w, n] for (k, w), n in st["late_by_window"].items()])

    def restore(self) -> dict[str, Any]:
        table = F.SensorTable.restore(self.table)
        n = len(table)
        if len(self.param) != n or len(self.unit) != n:
            raise ValueError(f"param/unit cover {len(self.param)}/{len(self.unit)} sensors, the table {n}")
        param, unit = np.empty(n, dtype=object), np.empty(n, dtype=object)
        param[:], unit[:] = self.param, self.unit
        return {
            "table": table, "param": param, "unit": unit,
            "windows": F.WindowStats.restore(self.windows, table),
            "windows_long": F.WindowStats.restore(self.windows_long, table),
            "health": F.SensorHealth.restore(self.health, table),
            "energy": F.EnergyWindows.restore(self.energy, table),
            "spc": F.SpcState.restore(self.spc, table),
            "max_ts": int(self.max_ts),
            "late_by_window": {(int(k), int(w)): int(c) for k, w, c in self.late_by_window},
        }


@dataclass(frozen=True, slots=True)
class EventsState:
    """State of a ``plant.events.v1`` partition: the quality windows and per-unit visits."""

    quality: F.QualityWindowsSnapshot

    @classmethod
    def capture(cls, st: dict[str, Any]) -> EventsState:
        return cls(st["quality"].snapshot())

    def restore(self) -> dict[str, Any]:
        return {"quality": F.QualityWindows.restore(self.quality)}


@dataclass(frozen=True, slots=True)
class DeadLettersState:
    """A dead-letter partition keeps no state beyond its offset."""

    @classmethod
    def capture(cls, st: dict[str, Any]) -> DeadLettersState:  # noqa: ARG003 - same signature as the others
        return cls()

    def restore(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True, slots=True)
class ScoresState:
    """The live scorer's partition of ``plant.events.v1`` (``gigapulse score``): cells waiting for their
    readings are re-read from Kafka after a restart, so nothing beyond the offset is kept."""

    @classmethod
    def capture(cls, st: dict[str, Any]) -> ScoresState:  # noqa: ARG003 - same signature as the others
        return cls()

    def restore(self) -> dict[str, Any]:
        return {}


State = ReadingsState | EventsState | DeadLettersState | ScoresState
STATE_KINDS: dict[str, type] = {"readings": ReadingsState, "events": EventsState, "dead_letters": DeadLettersState,
                                "scores": ScoresState}
_KIND_OF = {cls: kind for kind, cls in STATE_KINDS.items()}


@dataclass(frozen=True, slots=True)
class CheckpointHeader:
    """First line of a checkpoint file: what it is and where its partition resumes."""

    format_version: int
    kind: str
    topic: str
    partition: int
    next_offset: int


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A partition's commit point: resume at ``next_offset`` with ``state``."""

    topic: str
    partition: int
    next_offset: int
    state: State

    def encode(self) -> bytes:
        """The file's bytes: header line, state line. Cheap enough for the event loop (numpy arrays
        are written by orjson directly, no Python float per value)."""
        header = CheckpointHeader(FORMAT_VERSION, _KIND_OF[type(self.state)], self.topic, self.partition,
                                  int(self.next_offset))
        return b"".join((orjson.dumps(header), b"\n", dump_snapshot(self.state), b"\n"))


def state_line(encoded: bytes) -> bytes:
    """The state line of :meth:`Checkpoint.encode`'s bytes, for :func:`load_snapshot`."""
    return encoded.split(b"\n", 2)[1]


def dump_snapshot(snapshot: Any) -> bytes:
    """A snapshot dataclass (of a feature class or a partition) as one line of JSON."""
    return orjson.dumps(_plain(snapshot), option=orjson.OPT_SERIALIZE_NUMPY, default=_array_default)


def load_snapshot(cls: type, data: bytes | str) -> Any:
    """The snapshot dataclass ``cls`` from :func:`dump_snapshot`'s JSON (ValueError if it does not fit)."""
    return _build(cls, orjson.loads(data), cls.__name__)


def _plain(obj: Any) -> Any:
    """A snapshot as dicts for orjson: float arrays holding infinities spelled so JSON keeps them."""
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)  # "nan", "inf", "-inf": float() reads them back
    if isinstance(obj, np.ndarray) and obj.dtype.kind == "f" and np.isinf(obj).any():
        out = obj.astype(object)
        out[np.isposinf(obj)] = "inf"
        out[np.isneginf(obj)] = "-inf"
        return out.tolist()
    return obj


def _array_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):  # object arrays and non-contiguous views
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not part of a checkpoint document")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type, data: Any, where: str) -> Any:
    """The dataclass ``cls`` from its JSON object; nested snapshot dataclasses are built too."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    if set(data) != set(names):
        missing, extra = sorted(set(names) - set(data)), sorted(set(data) - set(names))
        raise ValueError(f"{where}: fields do not match {cls.__name__} (missing {missing}, unexpected {extra})")
    hints = _hints(cls)
    kwargs = {}
    for name in names:
        hint = hints[name]
        value = data[name]
        kwargs[name] = _build(hint, value, f"{where}.{name}") if dataclasses.is_dataclass(hint) else value
    return cls(**kwargs)


def _check_int(value: Any, what: str) -> int:
    if type(value) is not int:
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return value


def read_header(path: Path, topic: str, partition: int) -> CheckpointHeader | None:
    """The header of a checkpoint file (None if there is none); refuses any version but this one."""
    try:
        with open(path, "rb") as fh:
            line = fh.readline(4096)
    except FileNotFoundError:
        return None
    return _header(line, path, topic, partition)


def _header(line: bytes, path: Path, topic: str, partition: int) -> CheckpointHeader:
    try:
        raw = orjson.loads(line)
        if not isinstance(raw, dict) or "format_version" not in raw:
            raise ValueError("no format_version")
        version = raw["format_version"]
    except (orjson.JSONDecodeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is not a gigapulse checkpoint (corrupt or truncated: {exc}); "
                              "move it away to reprocess the partition from the start") from None
    if version != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {version!r}, this gigapulse reads version "
                              f"{FORMAT_VERSION}: run the gigapulse that wrote it, or move the file away to "
                              "reprocess the partition from the start")
    try:
        header = _build(CheckpointHeader, raw, "header")
        _check_int(header.next_offset, "next_offset")
        if header.topic != topic or header.partition != partition:
            raise ValueError(f"it belongs to {header.topic}[{header.partition}]")
        if header.kind not in STATE_KINDS:
            raise ValueError(f"unknown partition kind {header.kind!r}")
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} has a bad header ({exc}); move it away to reprocess the "
                              "partition from the start") from None
    return header


def committed_next_offset(lake_root: Path, topic: str, partition: int) -> int:
    """The next offset to process for a partition according to its checkpoint (0 if none).

    Reads only the header line, so a drain can poll it often; a legacy pickle is read whole.
    """
    path = checkpoint_path(lake_root, topic, partition)
    header = read_header(path, topic, partition)
    if header is not None:
        return header.next_offset
    legacy = legacy_checkpoint_path(lake_root, topic, partition)
    if not legacy.exists():
        return 0
    return _read_legacy(legacy)[0]


def load_checkpoint(lake_root: Path, topic: str, partition: int, kind: type) -> tuple[int, dict[str, Any]] | None:
    """``(next_offset, live state)`` from the partition's checkpoint; None when it has none yet.

    ``kind`` is the state document the partition expects (:class:`ReadingsState`...). Raises
    :class:`CheckpointError` naming the file for anything it cannot read exactly.
    """
    path = checkpoint_path(lake_root, topic, partition)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        legacy = legacy_checkpoint_path(lake_root, topic, partition)
        if not legacy.exists():
            return None
        return _migrate_legacy(legacy, kind)
    head, sep, body = data.partition(b"\n")
    header = _header(head, path, topic, partition)
    if STATE_KINDS[header.kind] is not kind:
        raise CheckpointError(f"checkpoint {path} holds the state of a {header.kind} partition, not of "
                              f"{_KIND_OF[kind]}; move it away to reprocess the partition from the start")
    try:
        if not sep or not body.endswith(b"\n"):
            raise ValueError("the file ends inside its header or state")
        state = _build(kind, orjson.loads(body), "state").restore()
    except (orjson.JSONDecodeError, TypeError, ValueError, KeyError, IndexError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({exc}); move it away to reprocess the "
                              "partition from the start") from None
    return header.next_offset, state


# --------------------------------------------------------------------------- legacy pickles

_LEGACY_BUILTINS = frozenset({"dict", "list", "tuple", "set", "frozenset", "int", "float", "bool", "str", "bytes",
                              "bytearray", "complex", "slice", "object"})
_LEGACY_GLOBALS = frozenset({("collections", "OrderedDict"), ("copyreg", "_reconstructor"), ("copyreg", "__newobj__"),
                             ("_codecs", "encode"), *(("builtins", n) for n in _LEGACY_BUILTINS)})
_FEATURE_MODULES = ("windows", "sensors", "stats", "health", "spc", "quality", "energy")


class _LegacyUnpickler(pickle.Unpickler):
    """Only what the pickling format held: numpy arrays, plain containers, the feature classes.

    The feature classes are looked up by name in the package's modules, wherever they live now
    (the legacy files name them ``transforms.features.<Class>``); anything else is refused.
    """

    def find_class(self, module: str, name: str) -> Any:
        if module == "transforms.features" or module.startswith("transforms.features."):
            for sub in _FEATURE_MODULES:
                mod = importlib.import_module(f"transforms.features.{sub}")
                if name in vars(mod) and isinstance(vars(mod)[name], type):
                    return vars(mod)[name]
        elif module.split(".")[0] == "numpy" or (module, name) in _LEGACY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name}")


def _read_legacy(path: Path) -> tuple[int, dict[str, Any]]:
    try:
        saved = _LegacyUnpickler(io.BytesIO(path.read_bytes())).load()
        return _check_int(saved["next_offset"], "next_offset"), saved["state"]
    except Exception as exc:  # noqa: BLE001 - whatever a foreign or broken pickle raises, the answer is one line
        raise CheckpointError(f"legacy checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); move it "
                              "away to reprocess the partition from the start") from None


def _migrate_legacy(path: Path, kind: type) -> tuple[int, dict[str, Any]]:
    next_offset, live = _read_legacy(path)
    try:
        # Through the typed snapshot and back: the migrated state is exactly what the next commit writes.
        state = load_snapshot(kind, dump_snapshot(kind.capture(live))).restore()
    except Exception as exc:  # noqa: BLE001 - see _read_legacy
        raise CheckpointError(f"legacy checkpoint {path} does not hold a {_KIND_OF[kind]} partition's state "
                              f"({type(exc).__name__}: {exc}); move it away to reprocess the partition from the "
                              "start") from None
    log.warning("%s: migrated a legacy pickled checkpoint (next offset %d); the next commit replaces it with %s",
                path, next_offset, path.with_suffix(".json").name)
    return next_offset, state


# --------------------------------------------------------------------------- making it durable


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a reader (or a crash) sees the old file or the new one whole."""
    lake.write_atomic(path, lambda fh: fh.write(data))


def drop_uncommitted(lake_root: Path, topic: str, partition: int, next_offset: int) -> int:
    """Delete lake files of (topic, partition) that start at or after ``next_offset``.

    They come from a checkpoint that crashed between its file renames and its commit point.
    """
    removed = 0
    for table in T.TABLES:
        tdir = lake_root / table
        if not tdir.is_dir():
            continue
        for path in tdir.rglob(f"{topic}+{partition}+*.parquet"):
            rng = parse_file_name(path.name)
            if rng and rng.topic == topic and rng.partition == partition and rng.first_offset >= next_offset:
                path.unlink()
                removed += 1
        for tmp in tdir.rglob(f".{topic}+{partition}+*.tmp"):
            tmp.unlink(missing_ok=True)
    if removed:
        log.warning("%s[%d]: removed %d uncommitted lake file(s) at or after offset %d",
                    topic, partition, removed, next_offset)
    return removed


@dataclass
class CheckpointResult:
    """What one checkpoint made durable."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int
    rows: dict[str, int] = field(default_factory=dict)
    features: dict[str, pa.Table] = field(default_factory=dict)
    #: Refused messages, for the caller to send to plant.dlq.v1 before acknowledging.
    dead_letters: list[DeadLetter] = field(default_factory=list)


class CheckpointFailed(RuntimeError):
    """A checkpoint of this partition failed earlier: later ones must not commit past it."""


class CheckpointJob:
    """The durable half of a checkpoint: lake files first, then the checkpoint file (the commit point).

    Built by the partition's ``prepare()`` on the event loop; :meth:`write` may run in a worker
    thread, where pyarrow encodes, compresses and fsyncs without holding the GIL, so the loop keeps
    decoding the next batch on the other core. Once one job of a partition fails, every later job of
    that partition refuses to run: committing a later offset would skip the failed batch's rows.
    """

    __slots__ = ("owner", "first_offset", "last_offset", "tables", "state", "dead_letters", "result")

    def __init__(self, owner: _Partition, first_offset: int, last_offset: int, tables: dict[str, pa.Table],
                 state: bytes, dead_letters: list[DeadLetter]):
        self.owner = owner
        self.first_offset = first_offset
        self.last_offset = last_offset
        self.tables = tables
        #: the encoded :class:`Checkpoint`
        self.state = state
        self.dead_letters = dead_letters
        self.result: CheckpointResult | None = None

    def write(self) -> CheckpointResult:
        """Write the lake files, then commit: the whole checkpoint in the caller's thread."""
        self.write_files()
        self.commit()
        return self.result

    def write_files(self) -> CheckpointResult:
        """Step 1: the lake files (atomic renames); readers see the rows from here on.

        Until :meth:`commit` they are uncommitted: a crash now makes the next owner delete them and
        redo the batch. The caller may deliver the dead letters and feature rows in between.
        """
        self._check()
        owner = self.owner
        first, last = self.first_offset, self.last_offset
        result = CheckpointResult(owner.topic, owner.partition, first, last, dead_letters=self.dead_letters)
        try:
            for name, table in self.tables.items():
                owner.writers[name].write(owner.topic, owner.partition, first, last, table)
                result.rows[name] = table.num_rows
                if name in owner.FEATURE_TABLES:
                    result.features[name] = table
        except BaseException as exc:
            owner.failed = exc
            raise
        self.result = result
        return result

    def commit(self) -> None:
        """Step 2, the commit point: the partition's checkpoint file says the batch is done."""
        self._check()
        owner = self.owner
        try:
            write_atomic(checkpoint_path(owner.lake_root, owner.topic, owner.partition), self.state)
            if owner.legacy_checkpoint is not None:
                # The new file is the commit point from here on; the migrated pickle goes.
                owner.legacy_checkpoint.unlink(missing_ok=True)
                owner.legacy_checkpoint = None
        except BaseException as exc:
            owner.failed = exc
            raise

    def _check(self) -> None:
        failed = self.owner.failed
        if failed is not None:
            raise CheckpointFailed(f"{self.owner.topic}[{self.owner.partition}]: an earlier checkpoint failed "
                                   f"({failed}); restart the worker to resume from the lake") from failed
