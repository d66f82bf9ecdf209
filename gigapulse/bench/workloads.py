"""The workloads benches produce: the real ingest path into fresh topics, and its exact bytes."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from gigapulse.bench.harness import MIB, PLANT

# --------------------------------------------------------------------------- producing the workload

def bench_producer(bootstrap: str, readings: str, events: str, dlq: str):
    """A :class:`ingestion.producer.PlantProducer` aimed at fresh bench topics, and its settings.

    :class:`ingestion.pipeline.IngestRun` sends to the catalog topics by default; the subclass only
    changes those defaults and counts the bytes of reading messages, so what is measured is the
    real producer, settings and all.
    """
    from ingestion.producer import PlantProducer
    from ingestion.settings import ProducerSettings

    class _Producer(PlantProducer):
        reading_messages = 0
        reading_bytes = 0

        def send_frame(self, gateway, payload, n_readings, topic=None):
            self.reading_messages += 1
            self.reading_bytes += len(payload)
            super().send_frame(gateway, payload, n_readings, topic or readings)

        def send_raw_reading(self, key, payload, topic=None):
            self.reading_messages += 1
            self.reading_bytes += len(payload)
            super().send_raw_reading(key, payload, topic or readings)

        def send_event(self, event, topic=None):
            super().send_event(event, topic or events)

        def send_dead_letter(self, letter, topic=None):
            super().send_dead_letter(letter, topic or dlq)

    settings = ProducerSettings()
    return _Producer(bootstrap, settings, client_id="gigapulse-bench"), settings


class _Capture:
    """Stands in for the producer to keep the exact bytes IngestRun would send (payload files)."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def send_frame(self, gateway, payload, n_readings, topic=None):
        self.payloads.append(payload)

    def send_raw_reading(self, key, payload, topic=None):
        self.payloads.append(payload)

    def send_event(self, *a, **k):
        pass

    def send_dead_letter(self, *a, **k):
        pass

    def _send(self, *a, **k):
        pass


def sample_payloads(fmt: str, seconds: float, seed: int, frame_max: int) -> list[bytes]:
    """Reading messages exactly as ``gigapulse simulate`` encodes them (for ProducerPerformance)."""
    from ingestion.pipeline import IngestRun
    from ingestion.simulator import PlantSimulator
    from schemas.asset_model import load_plant

    plant = load_plant(PLANT)
    start = datetime.now(UTC).replace(microsecond=0)
    cap = _Capture()
    run = IngestRun(plant, cap, seed, start, fmt, frame_max)
    for tick in PlantSimulator(plant, seed=seed, start=start).run(seconds):
        run.emit_frames(tick.frames, tick.sim_time)
    return cap.payloads


def simulate_into(bootstrap: str, topics: tuple[str, str, str], fmt: str, seconds: float, seed: int,
                  bar=None, label: str = "simulating", with_events: bool = True) -> dict[str, Any]:
    """The real ingest path at speed max (simulate → edge validation → produce) into bench topics.

    Timed from the first tick to the end of the final flush; the asset model is published first,
    untimed, which also opens the connection and fetches metadata as any long-running producer has.
    """
    from ingestion.pipeline import IngestRun, paced
    from ingestion.simulator import PlantSimulator
    from schemas.asset_model import load_plant

    plant = load_plant(PLANT)
    producer, settings = bench_producer(bootstrap, *topics)
    start = datetime.now(UTC).replace(microsecond=0)
    run = IngestRun(plant, producer, seed, start, fmt, settings.frame_max_readings)
    sim = PlantSimulator(plant, seed=seed, start=start)
    task = bar.add_task(label, total=int(seconds), info="") if bar else None
    try:
        run.publish_assets()
        producer.flush()
        t0 = time.perf_counter()
        for tick in paced(sim.run(seconds), start, None):
            run.emit_frames(tick.frames, tick.sim_time)
            if with_events:
                run.emit_events(tick.events, tick.sim_time)
            run.maybe_inject_fault(tick.sim_time)
            if task is not None:
                bar.update(task, completed=int((tick.sim_time - start).total_seconds()),
                           info=f"{producer.stats.readings:,} readings")
    finally:
        stats = producer.close()
        if task is not None:
            bar.remove_task(task)
    wall = time.perf_counter() - t0
    return {
        "simulated_s": seconds, "wall_s": wall, "readings": stats.readings, "messages": producer.reading_messages,
        "bytes": producer.reading_bytes, "events": stats.events, "dead_letters": stats.dead_letters,
        "readings_per_s": stats.readings / wall, "messages_per_s": producer.reading_messages / wall,
        "mib_per_s": producer.reading_bytes / MIB / wall,
    }
