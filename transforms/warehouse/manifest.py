"""The lake's compaction manifest: which compacted files each table has, and what they cover.

The stream writes small "hot" files named by their source offset range
(``<table>/date=D/<topic>+<partition>+<first>+<last>.parquet``, see :mod:`transforms.lake`). The
maintenance step (:mod:`transforms.warehouse.maintenance`) merges the committed ones into compacted
segments per table and date (``<table>/compacted/date=D/<table>-g<generation>-L<level>.parquet``): a
few per recent date, one per settled date. The manifest is what makes that swap safe for readers, and its atomic replacement is the one commit
point of maintenance:

* ``watermarks[table]["<topic>+<partition>"] = W`` says every hot file of that source partition
  whose range ends at or below ``W`` is held by the table's compacted files; hot files starting
  above ``W`` are read beside them. Committed offsets never change, so a watermark can only move up.
* ``files[table][date]`` lists the compacted segments of that date. A file is never rewritten: a
  new generation writes a new name and retires the ones it merged.
* ``history`` keeps, per recent generation, its watermarks and when the catalog built from it was
  published. Files leave the disk only once a generation that no longer reads them has been
  published for longer than the grace period (:func:`deletable_before`), so a query that listed
  them a moment earlier still finds them.

The catalog's views are generated from the manifest with its file names and watermarks written in
as constants, so every reader sees exactly one generation: a new catalog file replaces the old one
by rename, and connections opened before keep the old file and its consistent view.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from transforms.lake import make_dirs_durable, write_atomic

MANIFEST_DIR = "_manifest"
MANIFEST_FILE = "manifest.json"
LOCK_FILE = "maintenance.lock"
FORMAT_VERSION = 2
#: Format 1 held one compacted file per date (a string instead of a list); it is read as a list of one.
_READABLE_FORMATS = (1, 2)
COMPACTED_DIR = "compacted"


class ManifestError(OSError):
    """The manifest file exists but cannot be trusted (corrupt, unknown format)."""


class MaintenanceBusy(RuntimeError):
    """Another maintenance step holds the lake's maintenance lock."""


@dataclass(frozen=True)
class Generation:
    """What one committed generation let readers see, and when its catalog went live."""

    generation: int
    committed_at: str
    watermarks: dict[str, dict[str, int]]
    published_at: str | None = None


@dataclass(frozen=True)
class Manifest:
    """The compaction state of the whole lake at one generation (0: nothing compacted yet)."""

    generation: int = 0
    committed_at: str | None = None
    #: table -> "<topic>+<partition>" -> last offset held by the compacted files
    watermarks: dict[str, dict[str, int]] = field(default_factory=dict)
    #: table -> ISO date -> paths of the compacted segments, relative to the lake root, oldest first
    files: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    #: table -> first ISO date kept (older dates are expired)
    cutoffs: dict[str, str] = field(default_factory=dict)
    #: relative path -> generation that stopped reading it
    retired: dict[str, int] = field(default_factory=dict)
    history: tuple[Generation, ...] = ()

    def watermark(self, table: str, source: str) -> int:
        """Last offset of ``source`` held by ``table``'s compacted files; -1 when none is."""
        return self.watermarks.get(table, {}).get(source, -1)

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "generation": self.generation,
            "committed_at": self.committed_at,
            "watermarks": self.watermarks,
            "files": self.files,
            "cutoffs": self.cutoffs,
            "retired": self.retired,
            "history": [g.__dict__ for g in self.history],
        }
        return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Manifest:
        try:
            doc = json.loads(data)
            if doc.get("format") not in _READABLE_FORMATS:
                raise ManifestError(f"{where}: unknown manifest format {doc.get('format')!r}")
            return cls(
                generation=int(doc["generation"]),
                committed_at=doc["committed_at"],
                watermarks={t: {s: int(w) for s, w in m.items()} for t, m in doc["watermarks"].items()},
                files={t: {d: [v] if isinstance(v, str) else list(v) for d, v in m.items()}
                       for t, m in doc["files"].items()},
                cutoffs=dict(doc["cutoffs"]),
                retired={p: int(g) for p, g in doc["retired"].items()},
                history=tuple(Generation(**g) for g in doc["history"]),
            )
        except ManifestError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ManifestError(f"{where} is not a readable manifest ({exc}); restore it from a backup, or "
                                "move the lake's compacted/ folders and the manifest away to start over") from None

    def referenced(self) -> set[str]:
        """Relative paths of every compacted file this generation reads."""
        return {p for by_date in self.files.values() for segments in by_date.values() for p in segments}


def manifest_path(lake_root: Path) -> Path:
    return Path(lake_root) / MANIFEST_DIR / MANIFEST_FILE


def load_manifest(lake_root: Path) -> Manifest:
    """The committed manifest, or the empty generation 0 when the lake was never compacted."""
    path = manifest_path(lake_root)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Manifest()
    return Manifest.from_json(data, str(path))


def commit_manifest(lake_root: Path, manifest: Manifest) -> None:
    """Replace the manifest atomically and durably: the commit point of a maintenance step."""
    data = manifest.to_json()
    write_atomic(manifest_path(lake_root), lambda f: f.write(data))


def mark_published(manifest: Manifest, generation: int, at: datetime) -> Manifest:
    """The manifest with ``generation``'s catalog recorded as live since ``at`` (first publish wins)."""
    history = tuple(
        replace(g, published_at=at.isoformat()) if g.generation == generation and g.published_at is None else g
        for g in manifest.history
    )
    return replace(manifest, history=history)


def deletable_before(manifest: Manifest, now: datetime, grace_s: float) -> Generation | None:
    """The newest generation whose catalog has been live for at least ``grace_s``.

    Whatever that generation no longer reads (files it retired, hot files under its watermarks) no
    reader opened in the last ``grace_s`` can still be reading, so it may be deleted.
    """
    best = None
    for g in manifest.history:
        if g.published_at is None:
            continue
        live_for = (now - datetime.fromisoformat(g.published_at)).total_seconds()
        if live_for >= grace_s and (best is None or g.generation > best.generation):
            best = g
    return best


def trim_history(manifest: Manifest, now: datetime, grace_s: float) -> Manifest:
    """Drop generations older than the newest one :func:`deletable_before` gives (they decide nothing)."""
    keep_from = deletable_before(manifest, now, grace_s)
    if keep_from is None:
        return manifest
    return replace(manifest, history=tuple(g for g in manifest.history if g.generation >= keep_from.generation))


@contextmanager
def maintenance_lock(lake_root: Path, wait: bool = False) -> Iterator[None]:
    """Hold the lake's maintenance lock: one compactor, expirer or catalog publisher at a time.

    An advisory ``flock`` on a file beside the manifest: the kernel drops it when its holder dies,
    so a compactor killed with -9 never leaves the lake locked.
    """
    path = Path(lake_root) / MANIFEST_DIR / LOCK_FILE
    make_dirs_durable(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise MaintenanceBusy(f"another maintenance step is running on {lake_root} (it holds {path})") from None
        yield
    finally:
        os.close(fd)
