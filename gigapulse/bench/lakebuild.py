"""A lake built without Kafka: the simulator fed straight into the stream's partition processors.

``gigapulse bench warehouse`` needs a lake of up to 100M readings, and the warehouse query tests a
small one, both exactly as the stream would have written them (the same features, the same
offset-named files, the same checkpoints, so :func:`transforms.warehouse.maintenance.compact` can
merge them). A broker adds nothing to that but time, so this module plays the broker's part:

* every frame of :class:`ingestion.simulator.PlantSimulator` is encoded as ``gigapulse simulate``
  sends it and handed to the :class:`~transforms.partitions.ReadingsPartition` that Kafka's default
  partitioner would have given its gateway key (six partitions, as in the topic catalog); events go
  to the :class:`~transforms.partitions.EventsPartition` of their ``site/line`` key (three);
* each partition commits (lake files, then its checkpoint) every ``checkpoint_s`` simulated
  seconds, and once more at the end, closing its windows as a drain does;
* with ``workers > 1`` the partitions are shared out among processes, each running its own copy of
  the (deterministic) simulator and keeping only its partitions' frames, so two cores build about
  twice as fast; the lake holds the same rows whatever the number of workers.

Gateway outages are injected on purpose (``outage_every_s``, ``outage_s``): every so often one
gateway, in turn, sends nothing for a while. The reference plant never drops a sample by itself,
and the query "sensors with gaps longer than ten times their nominal interval" needs something to
find. The outages pass through the stream like real ones, so ``sensor_health`` sees them too.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from queue import Empty
from typing import Any

from schemas import topics

READINGS_PARTITIONS = topics.TOPICS_BY_NAME[topics.READINGS].partitions
EVENTS_PARTITIONS = topics.TOPICS_BY_NAME[topics.EVENTS].partitions
#: Raised when what a build writes changes, so a cached lake of an older format is rebuilt.
BUILD_FORMAT = 1


@dataclass(frozen=True)
class LakePlan:
    """What to simulate into the lake; equal plans give identical lakes."""

    seconds: int
    start: datetime
    seed: int = 42
    checkpoint_s: int = 600
    outage_every_s: int = 3600
    outage_s: int = 120
    microbatch_rows: int = 200_000

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["start"] = self.start.astimezone(UTC).isoformat()
        d["format"] = BUILD_FORMAT
        return d


@dataclass
class BuildReport:
    """What a build wrote, and how long it took."""

    readings: int = 0
    events: int = 0
    frames_dropped: int = 0
    wall_s: float = 0.0
    end: datetime | None = None
    workers: int = 1
    per_worker: list[dict[str, Any]] = field(default_factory=list)


def in_outage(gateway_index: int, n_gateways: int, t_s: int, plan: LakePlan) -> bool:
    """Whether gateway ``gateway_index`` is silent at simulated second ``t_s`` (from the start).

    Outage ``k`` starts at ``(k + 1/2) * outage_every_s`` and silences gateway ``k mod n``.
    """
    if plan.outage_every_s <= 0 or plan.outage_s <= 0:
        return False
    shifted = t_s - plan.outage_every_s // 2
    if shifted < 0:
        return False
    k, into = divmod(shifted, plan.outage_every_s)
    return into < plan.outage_s and k % n_gateways == gateway_index


def _settings(plan: LakePlan):
    from transforms.settings import StreamSettings

    # flush_rows only matters to the app's flush timer; checkpoints here follow checkpoint_s.
    return StreamSettings(microbatch_rows=plan.microbatch_rows, publish_features=False)


def _run_part(plant: Any, lake_root: Path, plan: LakePlan, parts: tuple[int, ...], with_events: bool,
              done: Any = None, truth_out: Path | None = None) -> dict[str, Any]:
    """Simulate the whole plant and process the readings partitions ``parts`` (and the events if asked).

    The part with the events also writes the simulator's ground truth at the gate to ``truth_out``.
    """
    from ingestion.simulator import PlantSimulator
    from schemas.contracts import encode
    from transforms.partitions import EventsPartition, ReadingsPartition

    t0 = time.perf_counter()
    settings = _settings(plan)
    readers = {p: ReadingsPartition(topics.READINGS, p, lake_root, settings, plant.by_id) for p in parts}
    eventers = ({p: EventsPartition(topics.EVENTS, p, lake_root, settings) for p in range(EVENTS_PARTITIONS)}
                if with_events else {})
    offsets = dict.fromkeys(readers, 0)
    ev_offsets = dict.fromkeys(eventers, 0)
    record_truth = with_events and truth_out is not None
    sim = PlantSimulator(plant, seed=plan.seed, start=plan.start, record_truth=record_truth)
    route: dict[str, int] = {}
    gateway_no: dict[str, int] = {}
    n_gateways = len({e.station for e in plant.sensors})
    readings = events = dropped = 0
    start_ms = int(plan.start.timestamp() * 1000)
    for tick in sim.run(plan.seconds):
        now_ms = int(tick.sim_time.timestamp() * 1000)
        t_s = (now_ms - start_ms) // 1000 - 1  # the second this tick covered
        for fr in tick.frames:
            p = route.get(fr.gateway)
            if p is None:
                p = route[fr.gateway] = topics.key_partition(fr.gateway.encode(), range(READINGS_PARTITIONS))
                gateway_no[fr.gateway] = len(gateway_no) % n_gateways
            if in_outage(gateway_no[fr.gateway], n_gateways, t_s, plan):
                dropped += 1
                continue
            if p not in readers:
                continue
            readers[p].add(offsets[p], now_ms, fr.encode())
            offsets[p] += 1
            readings += len(fr)
        for ev in tick.events if with_events else ():
            p = topics.key_partition(f"{ev.site}/{ev.line}".encode(), range(EVENTS_PARTITIONS))
            eventers[p].add(ev_offsets[p], now_ms, encode(ev))
            ev_offsets[p] += 1
            events += 1
        # Not in the last half interval: a checkpoint with nothing taken since the previous one is a
        # no-op, so the final one below must take messages (a gateway's outage may silence a
        # partition for a while) to close the windows.
        if (t_s + 1) % plan.checkpoint_s == 0 and plan.seconds - (t_s + 1) >= plan.checkpoint_s // 2:
            for part in (*readers.values(), *eventers.values()):
                part.checkpoint()
        if done is not None:
            done.value = t_s + 1
    for part in (*readers.values(), *eventers.values()):
        if part.first_offset is None and part.next_offset:
            raise RuntimeError(f"{part.topic}[{part.partition}] took nothing after its last checkpoint: its "
                               "windows cannot be closed (a longer checkpoint_s or a shorter outage_s)")
        part.checkpoint(final=True)
    failed = [p for p in (*readers.values(), *eventers.values()) if p.internal_errors]
    if failed:
        raise RuntimeError(f"{len(failed)} partition(s) set records aside as internal errors")
    if record_truth:
        from ingestion.simulator.truth import write_truth

        write_truth(truth_out, sim.truth_rows)
    return {"parts": list(parts), "events": with_events, "readings": readings, "events_n": events,
            "frames_dropped": dropped, "end": sim.sim_time.isoformat(), "wall_s": time.perf_counter() - t0}


class _Reporter:
    """Stands in for a worker's shared counter in-process: setting ``value`` reports progress."""

    def __init__(self, on_progress: Callable[[int], None] | None):
        self._on_progress = on_progress

    @property
    def value(self) -> int:
        return 0

    @value.setter
    def value(self, seconds: int) -> None:
        if self._on_progress is not None:
            self._on_progress(seconds)


def _worker(i: int, queue: Any, *args: Any) -> None:
    """A build process: its result (or its exception) goes back on ``queue``."""
    try:
        queue.put((i, _run_part(*args)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        queue.put((i, RuntimeError(f"{type(exc).__name__}: {exc}")))


#: The cost of the events partitions in readings per simulated second (decoding and quality windows
#: cost about 40 readings' worth per event, at about 28 events/s), for sharing work among workers.
EVENTS_LOAD = 1_000.0


def _split(plant: Any, workers: int) -> list[tuple[tuple[int, ...], bool]]:
    """Readings partitions per worker, balanced by their nominal readings/s; the first also takes the events."""
    workers = max(1, min(workers, READINGS_PARTITIONS))
    load = dict.fromkeys(range(READINGS_PARTITIONS), 0.0)
    for e in plant.sensors:
        load[topics.key_partition(f"{e.site}.{e.station}".encode(), range(READINGS_PARTITIONS))] += e.nominal_rate_hz
    totals = [EVENTS_LOAD] + [0.0] * (workers - 1)
    parts: list[list[int]] = [[] for _ in range(workers)]
    for p in sorted(load, key=lambda k: -load[k]):
        w = min(range(workers), key=lambda i: totals[i])
        parts[w].append(p)
        totals[w] += load[p]
    return [(tuple(sorted(ps)), i == 0) for i, ps in enumerate(parts)]


def build_lake(plant: Any, lake_root: Path, plan: LakePlan, workers: int = 1,
               on_progress: Callable[[int], None] | None = None, truth_out: Path | None = None) -> BuildReport:
    """Simulate ``plan`` into a new lake at ``lake_root`` (sensors table included); see the module doc.

    ``on_progress`` is called with the simulated seconds done (by the slowest worker). With
    ``truth_out``, the simulator's ground truth at the gate is written there (outside the lake).
    """
    from transforms.warehouse import write_sensors

    lake_root = Path(lake_root)
    if lake_root.exists() and any(lake_root.iterdir()):
        raise FileExistsError(f"{lake_root} is not empty: a lake is built once, into a new directory")
    lake_root.mkdir(parents=True, exist_ok=True)
    write_sensors(lake_root, plant.sensors)
    t0 = time.perf_counter()
    split = _split(plant, workers)
    if len(split) == 1:
        results = [_run_part(plant, lake_root, plan, split[0][0], True, _Reporter(on_progress), truth_out)]
    else:
        ctx = multiprocessing.get_context("spawn")
        counters = [ctx.Value("q", 0) for _ in split]
        queue = ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(i, queue, plant, lake_root, plan, parts, ev, c, truth_out),
                             daemon=True)
                 for i, ((parts, ev), c) in enumerate(zip(split, counters, strict=True))]
        for proc in procs:
            proc.start()
        results_by: dict[int, dict[str, Any]] = {}
        try:
            while len(results_by) < len(procs):
                try:
                    i, result = queue.get(timeout=0.25)
                except Empty:
                    dead = [p for p in procs if p.exitcode not in (None, 0)]
                    if dead:
                        raise RuntimeError(f"a build worker exited with code {dead[0].exitcode}") from None
                else:
                    if isinstance(result, BaseException):
                        raise RuntimeError(f"build worker {i} failed: {result}") from result
                    results_by[i] = result
                if on_progress is not None:
                    on_progress(min(c.value for c in counters))
        finally:
            for proc in procs:
                proc.join(timeout=5)
                if proc.is_alive():
                    proc.kill()
        results = [results_by[i] for i in range(len(procs))]
    report = BuildReport(workers=len(split), per_worker=results, wall_s=time.perf_counter() - t0)
    report.readings = sum(r["readings"] for r in results)
    report.events = sum(r["events_n"] for r in results)
    report.frames_dropped = results[0]["frames_dropped"]
    report.end = datetime.fromisoformat(results[0]["end"])
    return report


def reuse_or_clear(root: Path, plan: LakePlan, rebuild: bool) -> dict[str, Any] | None:
    """The build record of the cached lake in ``root`` if it was completed for ``plan``; else None, with
    ``root`` emptied and recreated for a new build."""
    import json
    import shutil

    record_path = root / "build.json"
    if not rebuild and record_path.exists():
        record = json.loads(record_path.read_text())
        if record.get("plan") == plan.to_dict() and record.get("complete"):
            return record
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    return None


def plan_for_readings(plant: Any, readings: int, start: datetime, **kwargs: Any) -> LakePlan:
    """The plan whose simulated time gives about ``readings`` readings of ``plant`` (at its nominal rates)."""
    per_s = sum(e.nominal_rate_hz for e in plant.sensors)
    return LakePlan(seconds=max(1, round(readings / per_s)), start=start, **kwargs)


def lake_end(plan: LakePlan) -> datetime:
    return plan.start + timedelta(seconds=plan.seconds)
