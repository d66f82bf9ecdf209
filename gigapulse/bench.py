"""The benchmark harness behind ``gigapulse bench ingest|stream|freshness``.

A figure is only worth quoting if someone else can reproduce it and knows what it was compared
with, so every bench here follows the same rules (see docs/BENCHMARKS.md):

* It starts its **own broker** (:mod:`infra.broker`) on free loopback ports in a temporary
  directory and stops it at the end, and uses **fresh topic names**, so a run neither disturbs nor
  is disturbed by a developer's broker or another run.
* Machines are shared and noisy: each measurement is repeated ``--runs`` times and reported as the
  **median with the min–max spread**, and each **peer runs in the same run**, so the ratio to the
  peer is the figure to trust, not the absolute rate.
* The report names the machine (cores, memory, load), the date, and the versions of Kafka and of
  every library involved; it is printed as a markdown table and written as JSON.

Peers that must not share our process (Quix Streams, the aiokafka ceiling) run as
``python -m gigapulse.bench <peer> <json-args>`` children, measured exactly like our own stream
worker: wall time from process start to exit, peak RSS by polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console

console = Console(stderr=True)

#: What the project promises (docs/BENCHMARKS.md); a report says which are met.
TARGETS = {
    "ingest_frames_readings_per_s": 500_000,
    "ingest_json_readings_per_s": 15_000,
    "stream_readings_per_s": 300_000,
    "stream_net_readings_per_s": 300_000,
    "stream_ratio_vs_quix": 3.0,
    "freshness_p99_s": 2.0,
}
LIBRARIES = ("kafka-python", "aiokafka", "faust-streaming", "quixstreams", "confluent-kafka", "duckdb",
             "pyarrow", "numpy", "orjson", "zstandard")
#: Ports other people's brokers and tests use on shared machines; a bench never takes them.
RESERVED_PORTS = frozenset({9092, 9093, 19092, 19093})
MIB = 1024 * 1024  # Kafka's ProducerPerformance reports "MB/sec" in units of 2^20 bytes
PLANT = "reference"


class BenchError(RuntimeError):
    """A bench could not produce a trustworthy figure (a child failed, a peer did not finish)."""


# --------------------------------------------------------------------------- reporting

def spread(values: list[float]) -> dict[str, Any]:
    """Median and min–max of repeated runs: the median resists one run hit by a noisy neighbour."""
    vals = [float(v) for v in values]
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": vals}


def fmt_num(v: float | None, digits: int = 0) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:,.{digits}f}"


def fmt_spread(s: dict[str, Any] | None, digits: int = 0, unit: str = "") -> str:
    """``median (min–max)`` as the markdown tables show it."""
    if not s:
        return "–"
    u = f" {unit}" if unit else ""
    return f"{fmt_num(s['median'], digits)}{u} ({fmt_num(s['min'], digits)}–{fmt_num(s['max'], digits)})"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _java_version() -> str | None:
    java = shutil.which("java")
    if not java:
        return None
    res = subprocess.run([java, "-version"], capture_output=True, text=True)
    lines = (res.stderr or res.stdout).strip().splitlines()
    return lines[0] if lines else None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """The machine, date and versions a figure belongs to (a figure without them cannot be compared)."""
    from infra.broker import KAFKA_VERSION

    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    vm = psutil.virtual_memory()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu": _cpu_model(),
            "logical_cores": psutil.cpu_count(),
            "physical_cores": psutil.cpu_count(logical=False),
            "memory_gib": round(vm.total / 2**30, 1),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "os": platform.platform(),
        },
        "python": platform.python_version(),
        "kafka": KAFKA_VERSION,
        "java": _java_version(),
        "libraries": versions,
    }


def environment_markdown(env: dict[str, Any]) -> str:
    m = env["machine"]
    libs = ", ".join(f"{k} {v}" for k, v in env["libraries"].items() if v)
    return (f"{env['date']} · {m['cpu']}, {m['logical_cores']} logical cores, {m['memory_gib']} GiB · "
            f"load {'/'.join(str(x) for x in m['load_average_at_start'])} at start · Python {env['python']} · "
            f"Kafka {env['kafka']} ({env['java']}) · {libs}")


def write_report(report: dict[str, Any], out: Path) -> Path:
    """JSON for machines (docs and regressions are compared from it); the markdown goes to stdout."""
    out.parent.mkdir(parents=True, exist_ok=True)
    report["environment"]["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return out


def emit(report: dict[str, Any], out: Path) -> Path:
    """Print the report as markdown (what docs/BENCHMARKS.md quotes) and write its JSON."""
    path = write_report(report, out)
    print(f"## bench {report['bench']}\n\n{environment_markdown(report['environment'])}\n\n{report['table']}\n")
    if report.get("profile_top"):
        print("```\n" + report["profile_top"].strip() + "\n```\n")
    console.print(f"report written to {path}")
    return path


def progress():
    """A rich progress bar on stderr (shown on a terminal, or when GIGAPULSE_PROGRESS is set)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console, transient=True,
                    disable=not console.is_terminal and not os.environ.get("GIGAPULSE_PROGRESS"))


# --------------------------------------------------------------------------- broker, topics, children

def free_port() -> int:
    """A loopback port that was free a moment ago and is none of the shared machines' broker ports."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in RESERVED_PORTS:
            return port


@dataclass
class BenchBroker:
    """A private broker and the scratch space of one bench invocation."""

    settings: Any  # infra.broker.BrokerSettings
    tmp: Path

    @property
    def bootstrap(self) -> str:
        return self.settings.bootstrap

    def scratch(self, name: str) -> Path:
        path = self.tmp / f"{name}_{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        return path


@contextlib.contextmanager
def bench_broker(heap: str = "1g") -> Iterator[BenchBroker]:
    """Start a broker on free ports in a temp dir (catalog topics applied); always stop and remove it."""
    from infra import broker
    from infra.broker import BrokerSettings
    from ingestion.topics import apply_topics

    # Only [A-Za-z0-9._/] in the path: Quix Streams' file sink refuses anything else.
    tmp = Path(tempfile.mkdtemp(prefix="gigapulse_bench_"))
    settings = BrokerSettings(port=free_port(), controller_port=free_port(), data_dir=tmp / "kafka", heap=heap)
    try:
        with console.status(f"starting a private Kafka broker on {settings.bootstrap} ..."):
            for attempt in range(3):
                try:
                    broker.start(settings)
                    break
                except broker.BrokerError as exc:
                    # A random cluster id that starts with '-' is read as an option by kafka-storage
                    # (about 1 start in 64); a new id on the next attempt gets past it.
                    if "formatting KRaft storage failed" not in str(exc) or attempt == 2:
                        raise
            apply_topics(settings.bootstrap)
        yield BenchBroker(settings, tmp)
    finally:
        with console.status("stopping the private broker ..."):
            broker.stop(settings)
        shutil.rmtree(tmp, ignore_errors=True)


def new_topic(bootstrap: str, prefix: str, partitions: int, config: dict[str, str] | None = None) -> str:
    """Create a topic with a fresh name, so no run reads what another one wrote."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    name = f"bench.{prefix}.{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="gigapulse-bench")
    try:
        admin.create_topics([NewTopic(name, partitions, 1, topic_configs=config or {})], wait_for_metadata=True)
    finally:
        admin.close()
    return name


def delete_topics(bootstrap: str, names: list[str]) -> None:
    """Drop a run's topics once measured, so long benches don't fill the temp disk."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="gigapulse-bench")
    try:
        with contextlib.suppress(Exception):
            admin.delete_topics(names)
    finally:
        admin.close()


def readings_topic_config() -> dict[str, str]:
    """The catalog's settings for readings (message size limit, compression), on a bench topic."""
    from schemas import topics

    return topics.TOPICS_BY_NAME[topics.READINGS].config()


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    from transforms.app import end_offsets as _end

    return {p: off for (_, p), off in _end(bootstrap, [topic]).items()}


def stream_settings() -> dict[str, Any]:
    """The worker's settings as the children will read them (GIGAPULSE_STREAM_* pass through)."""
    from transforms.settings import StreamSettings

    return StreamSettings().model_dump(exclude={"group_id"})


def child_env(bb: BenchBroker, **extra: str) -> dict[str, str]:
    """Environment of a measured child: the bench broker, and compiled bytecode cached in scratch.

    Installed software runs from compiled bytecode; an environment with PYTHONDONTWRITEBYTECODE set
    would make every child recompile about a thousand modules (seconds of a stream worker's start)
    on every run. The cache lives in the bench's temp dir, so nothing in the venv changes.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(bb.tmp / "pycache")
    env["GIGAPULSE_BOOTSTRAP_SERVERS"] = bb.bootstrap
    env.update(extra)
    return env


def warm_bytecode(bb: BenchBroker, modules: list[str]) -> None:
    """Import once, untimed, so measured children start from cached bytecode like a deployment."""
    code = "import " + ", ".join(modules)
    subprocess.run([sys.executable, "-c", code], env=child_env(bb), check=True, capture_output=True)


@dataclass
class Measured:
    """One child process: exit code, wall time (start to exit), peak RSS, output."""

    returncode: int
    wall_s: float
    peak_rss_bytes: int
    stdout: str
    stderr: str

    @property
    def peak_rss_mib(self) -> float:
        return self.peak_rss_bytes / MIB

    def check(self, what: str) -> Measured:
        if self.returncode != 0:
            raise BenchError(f"{what} exited with code {self.returncode}: {output_tail(self.stderr or self.stdout)}")
        return self


def output_tail(text: str, lines: int = 6, width: int = 240) -> str:
    """The last lines of a child's output, each cut short (Faust can log one line of megabytes)."""
    return " | ".join(ln[:width] for ln in text.strip().splitlines()[-lines:])


def run_measured(cmd: list[str], env: dict[str, str], timeout_s: float, poll_s: float = 0.02,
                 on_poll: Callable[[], None] | None = None) -> Measured:
    """Run a child to completion, polling its RSS; a child past its timeout is stopped (it is ours)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = psutil.Popen(cmd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        peak = 0
        try:
            while True:
                with contextlib.suppress(psutil.Error):
                    peak = max(peak, proc.memory_info().rss)
                try:
                    rc = proc.wait(timeout=poll_s)
                    break
                except psutil.TimeoutExpired:
                    pass
                if on_poll:
                    on_poll()
                if time.perf_counter() - t0 > timeout_s:
                    raise BenchError(f"{Path(cmd[0]).name} {' '.join(cmd[1:4])} ... did not finish in {timeout_s:.0f}s")
            wall = time.perf_counter() - t0
        finally:
            stop_child(proc)
        out.seek(0)
        err.seek(0)
        return Measured(rc, wall, peak, out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def stop_child(proc: psutil.Popen, grace_s: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``: only for a process this module started."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(psutil.Error):
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(10)


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


# --------------------------------------------------------------------------- ingest

_PERF_LINE = re.compile(r"(\d+) (steady state )?records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\)")


def producer_performance(bb: BenchBroker, topic: str, payload_file: Path, num_records: int, keys: int,
                         settings) -> dict[str, Any]:
    """Kafka's own ProducerPerformance on the same broker, messages and producer settings: the ceiling.

    It sends ``num_records`` after as many warm-up records (a JVM needs seconds of JIT before it
    shows what it can do) and the steady-state line is the one reported; records are keyed over
    ``keys`` distinct keys, as ours are by gateway or sensor.
    """
    java = shutil.which("java")
    if not java:
        raise BenchError("java is not on PATH (ProducerPerformance needs it)")
    log4j = bb.tmp / "perf-log4j2.properties"
    if not log4j.exists():
        log4j.write_text("rootLogger.level=WARN\nrootLogger.appenderRef.out.ref=OUT\nappender.out.type=Console\n"
                         "appender.out.name=OUT\nappender.out.target=SYSTEM_ERR\n"
                         "appender.out.layout.type=PatternLayout\nappender.out.layout.pattern=%p %m%n\n")
    cmd = [java, "-Xmx768m", f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{bb.settings.libs_dir}/*",
           "org.apache.kafka.tools.ProducerPerformance", "--topic", topic, "--num-records", str(2 * num_records),
           "--warmup-records", str(num_records), "--key-distribution", "range", "--record-key-range", str(keys),
           "--throughput", "-1", "--payload-file", str(payload_file), "--command-property",
           f"acks={settings.acks}", f"compression.type={settings.compression}", f"linger.ms={settings.linger_ms}",
           f"batch.size={settings.batch_size}", f"max.request.size={settings.max_request_size}",
           f"bootstrap.servers={bb.bootstrap}"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    matches = _PERF_LINE.findall(res.stdout)
    if res.returncode != 0 or not matches:
        tail = " | ".join((res.stderr + res.stdout).strip().splitlines()[-4:])
        raise BenchError(f"ProducerPerformance failed (code {res.returncode}): {tail[-600:]}")
    steady = [m for m in matches if m[1]] or matches
    records, _, rps, mibps = steady[-1]
    return {"records": int(records), "warmup_records": num_records, "keys": keys, "messages_per_s": float(rps),
            "mib_per_s": float(mibps), "summary": [ln for ln in res.stdout.splitlines() if "records sent" in ln][-1]}


def simulate_peak_rss(bb: BenchBroker, seconds: float, seed: int) -> dict[str, Any]:
    """Peak RSS of a ``gigapulse simulate`` child: bounded by the plant's sensors, not by readings."""
    summary = bb.tmp / f"simulate-{uuid.uuid4().hex[:8]}.json"
    cmd = [sys.executable, "-m", "gigapulse.cli", "simulate", "--plant", PLANT, "--duration", f"{seconds:g}s",
           "--speed", "max", "--seed", str(seed), "--summary-json", str(summary)]
    m = run_measured(cmd, child_env(bb), timeout_s=1800).check("gigapulse simulate")
    s = json.loads(summary.read_text())
    return {"simulated_s": seconds, "readings": s["readings"], "wall_s": m.wall_s,
            "peak_rss_mib": m.peak_rss_mib}


@dataclass
class IngestOptions:
    runs: int = 3
    frames_s: float = 600.0
    json_s: float = 60.0
    memory_s: tuple[float, ...] = (300.0, 1200.0)
    seed: int = 42
    sample_frames_s: float = 120.0
    sample_json_s: float = 10.0


def run_ingest(opts: IngestOptions) -> dict[str, Any]:
    """Our producer (frames, JSON singles) against ProducerPerformance, plus the simulator's memory."""
    from ingestion.settings import ProducerSettings
    from schemas.asset_model import load_plant

    env = environment()
    runs: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    with bench_broker() as bb:
        psettings = ProducerSettings()
        gateways = len({f"{e.site}.{e.station}" for e in load_plant(PLANT).sensors})
        keys = {"frames": gateways, "json": len(load_plant(PLANT).sensors)}
        payload_files = {}
        with console.status("encoding sample messages for ProducerPerformance ..."):
            for fmt, secs in (("frames", opts.sample_frames_s), ("json", opts.sample_json_s)):
                payloads = sample_payloads(fmt, secs, opts.seed, psettings.frame_max_readings)
                if any(b"\n" in p for p in payloads):
                    raise BenchError("an encoded message holds a newline; it cannot be a payload-file line")
                path = bb.tmp / f"payloads-{fmt}.txt"
                path.write_bytes(b"\n".join(payloads))
                payload_files[fmt] = (path, len(payloads), sum(map(len, payloads)) / len(payloads))
        warm_bytecode(bb, ["gigapulse.cli", "ingestion.pipeline", "ingestion.simulator"])
        with progress() as bar:
            for i in range(opts.runs):
                run: dict[str, Any] = {}
                for fmt, secs in (("frames", opts.frames_s), ("json", opts.json_s)):
                    names = (new_topic(bb.bootstrap, f"ingest.{fmt}", 6, readings_topic_config()),
                             new_topic(bb.bootstrap, f"ingest.{fmt}.events", 3), new_topic(bb.bootstrap, "dlq", 1))
                    ours = simulate_into(bb.bootstrap, names, fmt, secs, opts.seed, bar,
                                         f"run {i + 1}/{opts.runs}: ours, {fmt}")
                    delete_topics(bb.bootstrap, list(names))
                    perf_topic = new_topic(bb.bootstrap, f"ingest.perf.{fmt}", 6, readings_topic_config())
                    t = bar.add_task(f"run {i + 1}/{opts.runs}: ProducerPerformance, {fmt}", total=None, info="")
                    perf = producer_performance(bb, perf_topic, payload_files[fmt][0], ours["messages"], keys[fmt],
                                                psettings)
                    bar.remove_task(t)
                    delete_topics(bb.bootstrap, [perf_topic])
                    run[fmt] = {"ours": ours, "kafka": perf,
                                "ratio_messages": ours["messages_per_s"] / perf["messages_per_s"],
                                "ratio_mib": ours["mib_per_s"] / perf["mib_per_s"]}
                runs.append(run)
                for secs in opts.memory_s:
                    t = bar.add_task(f"run {i + 1}/{opts.runs}: simulate {secs:g}s, peak RSS", total=None, info="")
                    memory.append(simulate_peak_rss(bb, secs, opts.seed))
                    bar.remove_task(t)
    results: dict[str, Any] = {}
    for fmt in ("frames", "json"):
        rs = [r[fmt] for r in runs]
        results[fmt] = {
            "readings_per_s": spread([r["ours"]["readings_per_s"] for r in rs]),
            "messages_per_s": spread([r["ours"]["messages_per_s"] for r in rs]),
            "mib_per_s": spread([r["ours"]["mib_per_s"] for r in rs]),
            "kafka_messages_per_s": spread([r["kafka"]["messages_per_s"] for r in rs]),
            "kafka_mib_per_s": spread([r["kafka"]["mib_per_s"] for r in rs]),
            "ratio_messages": spread([r["ratio_messages"] for r in rs]),
            "ratio_mib": spread([r["ratio_mib"] for r in rs]),
            "readings": rs[0]["ours"]["readings"], "messages": rs[0]["ours"]["messages"],
            "mean_message_bytes": rs[0]["ours"]["bytes"] / max(1, rs[0]["ours"]["messages"]),
        }
    results["memory"] = [
        {"simulated_s": s, "readings": [m["readings"] for m in memory if m["simulated_s"] == s][0],
         "peak_rss_mib": spread([m["peak_rss_mib"] for m in memory if m["simulated_s"] == s])}
        for s in opts.memory_s
    ]
    fr, js = results["frames"], results["json"]
    met = {
        "ingest_frames_readings_per_s": fr["readings_per_s"]["median"] >= TARGETS["ingest_frames_readings_per_s"],
        "ingest_json_readings_per_s": js["readings_per_s"]["median"] >= TARGETS["ingest_json_readings_per_s"],
    }
    rows = []
    for fmt, label in (("frames", "frames"), ("json", "JSON singles")):
        r = results[fmt]
        target = TARGETS[f"ingest_{fmt}_readings_per_s"]
        rows.append([f"{label}: readings/s", fmt_spread(r["readings_per_s"]), "–", "–",
                     f"≥ {target:,} ({'met' if met[f'ingest_{fmt}_readings_per_s'] else 'MISSED'})"])
        rows.append([f"{label}: messages/s", fmt_spread(r["messages_per_s"]), fmt_spread(r["kafka_messages_per_s"]),
                     fmt_spread(r["ratio_messages"], 2), ""])
        rows.append([f"{label}: MiB/s", fmt_spread(r["mib_per_s"], 1), fmt_spread(r["kafka_mib_per_s"], 1),
                     fmt_spread(r["ratio_mib"], 2), ""])
    for m in results["memory"]:
        span = f"{m['simulated_s'] / 60:g} min" if m["simulated_s"] % 60 == 0 else f"{m['simulated_s']:g} s"
        rows.append([f"simulate {span} ({m['readings']:,} readings): peak RSS MiB",
                     fmt_spread(m["peak_rss_mib"], 1), "–", "–", "flat with duration"])
    table = markdown_table(["measure", "ours, median (min–max)", "Kafka ProducerPerformance", "ours / Kafka",
                            "target"], rows)
    return {
        "bench": "ingest", "environment": env, "targets": {k: TARGETS[k] for k in met}, "met": met,
        "params": {
            "runs": opts.runs, "plant": PLANT, "seed": opts.seed, "frames_simulated_s": opts.frames_s,
            "json_simulated_s": opts.json_s, "memory_simulated_s": list(opts.memory_s),
            "producer": {"acks": psettings.acks, "compression": psettings.compression,
                         "linger_ms": psettings.linger_ms, "batch_size": psettings.batch_size,
                         "frame_max_readings": psettings.frame_max_readings},
            "payload_files": {k: {"messages": v[1], "mean_bytes": round(v[2], 1)} for k, v in payload_files.items()},
        },
        "results": results, "runs": runs, "memory_runs": memory, "table": table,
    }


# --------------------------------------------------------------------------- stream

@dataclass
class StreamOptions:
    runs: int = 3
    prefill_s: float = 900.0
    quix_readings: int = 1_000_000
    quix_variant: str = "key"
    seed: int = 42
    profile: Path | None = None
    timeout_s: float = 1800.0


def lake_counts(data_dir: Path) -> dict[str, int]:
    """Rows our worker committed, read back through the DuckDB catalog as an analyst would."""
    from transforms.warehouse import build_catalog, query

    db = data_dir / "gigapulse.duckdb"
    build_catalog(data_dir / "lake", db)
    _, rows = query(db, "SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM sensor_features_1m), "
                        "(SELECT coalesce(sum(count), 0) FROM sensor_features_1m)")
    readings, feature_rows, feature_count = rows[0]
    return {"readings": int(readings), "feature_rows": int(feature_rows), "feature_readings": int(feature_count)}


_DONE_LINE = re.compile(r"stream worker done: ([\d,]+) messages.* in ([\d.]+)s")


class DrainWatchdog:
    """Fails a drain that stopped moving, instead of waiting out the timeout.

    A worker whose agent crashed keeps running without progress; a worker that committed every
    end offset but does not exit is stuck in shutdown. Both are read from the lake checkpoints,
    the drain's own notion of done.
    """

    def __init__(self, lake_root: Path, topic: str, ends: dict[int, int], stall_s: float = 120.0,
                 exit_s: float = 60.0, every_s: float = 2.0):
        self.lake_root, self.topic, self.ends = lake_root, topic, ends
        self.stall_s, self.exit_s, self.every_s = stall_s, exit_s, every_s
        self.last_check = self.last_move = self.done_at = None
        self.last_sum = -1

    def __call__(self) -> None:
        from transforms.partitions import committed_next_offset

        now = time.monotonic()
        if self.last_check is not None and now - self.last_check < self.every_s:
            return
        self.last_check = now
        if self.last_move is None:
            self.last_move = now
        offs = {p: committed_next_offset(self.lake_root, self.topic, p) for p in self.ends}
        total = sum(offs.values())
        if total != self.last_sum:
            self.last_sum, self.last_move = total, now
        if all(offs[p] >= end for p, end in self.ends.items()):
            self.done_at = self.done_at or now
            if now - self.done_at > self.exit_s:
                raise BenchError(f"the drain reached every end offset but the worker did not exit in {self.exit_s:.0f}s")
        elif now - self.last_move > self.stall_s:
            raise BenchError(f"the drain made no progress for {self.stall_s:.0f}s (checkpoints at {offs}, "
                             f"end offsets {self.ends}); see the worker's log")


def stream_ours(bb: BenchBroker, topics: tuple[str, str, str], expected: int, timeout_s: float,
                profile: Path | None = None, ends: dict[int, int] | None = None) -> dict[str, Any]:
    """``gigapulse stream --drain`` as a child: wall from start to exit, readings found in the lake."""
    data_dir = bb.scratch("lake")
    env = child_env(bb, GIGAPULSE_DATA_DIR=str(data_dir),
                    GIGAPULSE_STREAM_GROUP_ID=f"bench-stream-{uuid.uuid4().hex[:8]}")
    prefix = [sys.executable, "-m", "cProfile", "-o", str(profile)] if profile else [sys.executable]
    cmd = [*prefix, "-m", "gigapulse.cli", "stream", "--drain", "--readings-topic", topics[0],
           "--events-topic", topics[1], "--dlq-topic", topics[2]]
    watchdog = DrainWatchdog(data_dir / "lake", topics[0], ends) if ends else None
    m = run_measured(cmd, env, timeout_s, on_poll=watchdog).check("gigapulse stream --drain")
    counts = lake_counts(data_dir)
    if counts["readings"] != expected:
        raise BenchError(f"the lake holds {counts['readings']:,} readings, the topic {expected:,}")
    done = _DONE_LINE.search(m.stdout)
    shutil.rmtree(data_dir, ignore_errors=True)
    return {"readings": counts["readings"], "feature_rows": counts["feature_rows"], "wall_s": m.wall_s,
            "worker_s": float(done.group(2)) if done else None, "peak_rss_mib": m.peak_rss_mib,
            "readings_per_s": counts["readings"] / m.wall_s}


def stream_peer(bb: BenchBroker, peer: str, args: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """A peer in its own process (``python -m gigapulse.bench <peer>``), measured like ours."""
    result = bb.tmp / f"{peer}-{uuid.uuid4().hex[:8]}.json"
    cmd = [sys.executable, "-m", "gigapulse.bench", peer, json.dumps({**args, "result": str(result)})]
    m = run_measured(cmd, child_env(bb), timeout_s).check(f"the {peer} peer")
    r = json.loads(result.read_text())
    r.update(wall_s=m.wall_s, peak_rss_mib=m.peak_rss_mib, readings_per_s=r["readings"] / m.wall_s)
    return r


def profile_top(path: Path, n: int = 25) -> str:
    """The top of a cProfile dump by own time, for the report."""
    import io
    import pstats

    buf = io.StringIO()
    pstats.Stats(str(path), stream=buf).strip_dirs().sort_stats("tottime").print_stats(n)
    return buf.getvalue()


def run_stream(opts: StreamOptions) -> dict[str, Any]:
    """Our drain against Quix Streams and the aiokafka decode-only ceiling, on one pre-filled topic."""
    env = environment()
    runs: list[dict[str, Any]] = []
    with bench_broker() as bb:
        topics = (new_topic(bb.bootstrap, "stream.readings", 6, readings_topic_config()),
                  new_topic(bb.bootstrap, "stream.events", 3), new_topic(bb.bootstrap, "stream.dlq", 1))
        with progress() as bar:
            fill = simulate_into(bb.bootstrap, topics, "frames", opts.prefill_s, opts.seed, bar,
                                 "pre-filling the readings topic", with_events=False)
        total = fill["readings"]
        ends = end_offsets(bb.bootstrap, topics[0])
        warm_bytecode(bb, ["gigapulse.cli", "transforms.app", "faust", "aiokafka", "quixstreams", "gigapulse.bench"])
        quix_limit = min(opts.quix_readings, total) if opts.quix_readings > 0 else total
        with progress() as bar:
            for i in range(opts.runs):
                run: dict[str, Any] = {}
                for name in ("ceiling", "ours", "start-up", "quix"):
                    t = bar.add_task(f"run {i + 1}/{opts.runs}: {name}", total=None, info="")
                    if name == "ours":
                        run[name] = stream_ours(bb, topics, total, opts.timeout_s, ends=ends)
                    elif name == "start-up":
                        # The same drain over empty topics: what a run pays before and after its data.
                        empty = (new_topic(bb.bootstrap, "stream.empty", 6), new_topic(bb.bootstrap, "stream.empty", 3),
                                 new_topic(bb.bootstrap, "stream.empty", 1))
                        run["ours"]["startup_s"] = stream_ours(bb, empty, 0, opts.timeout_s)["wall_s"]
                        run["ours"]["net_readings_per_s"] = total / (run["ours"]["wall_s"] - run["ours"]["startup_s"])
                        delete_topics(bb.bootstrap, list(empty))
                    elif name == "quix":
                        run[name] = stream_peer(bb, "quix", {
                            "bootstrap": bb.bootstrap, "topic": topics[0], "end_offsets": ends, "limit": quix_limit,
                            "variant": opts.quix_variant, "out_dir": str(bb.scratch("quix")),
                        }, opts.timeout_s)
                    else:
                        run[name] = stream_peer(bb, "ceiling", {"bootstrap": bb.bootstrap, "topic": topics[0],
                                                                "end_offsets": ends}, opts.timeout_s)
                    bar.remove_task(t)
                run["ratio_vs_quix"] = run["ours"]["readings_per_s"] / run["quix"]["readings_per_s"]
                run["ratio_vs_ceiling"] = run["ours"]["readings_per_s"] / run["ceiling"]["readings_per_s"]
                runs.append(run)
            profile_text = None
            if opts.profile:
                t = bar.add_task("profiling ours (cProfile, untimed)", total=None, info="")
                opts.profile.parent.mkdir(parents=True, exist_ok=True)
                stream_ours(bb, topics, total, opts.timeout_s, profile=opts.profile.resolve(), ends=ends)
                profile_text = profile_top(opts.profile)
                bar.remove_task(t)
    res = {
        name: {"readings_per_s": spread([r[name]["readings_per_s"] for r in runs]),
               "wall_s": spread([r[name]["wall_s"] for r in runs]),
               "peak_rss_mib": spread([r[name]["peak_rss_mib"] for r in runs]),
               "readings": runs[0][name]["readings"]}
        for name in ("ours", "quix", "ceiling")
    }
    res["ours"]["worker_s"] = spread([r["ours"]["worker_s"] for r in runs if r["ours"]["worker_s"] is not None])
    res["ours"]["startup_s"] = spread([r["ours"]["startup_s"] for r in runs])
    res["ours"]["net_readings_per_s"] = spread([r["ours"]["net_readings_per_s"] for r in runs])
    res["ours"]["feature_rows"] = runs[0]["ours"]["feature_rows"]
    res["quix"]["feature_rows"] = runs[0]["quix"].get("feature_rows")
    res["ratio_vs_quix"] = spread([r["ratio_vs_quix"] for r in runs])
    res["ratio_vs_ceiling"] = spread([r["ratio_vs_ceiling"] for r in runs])
    met = {"stream_readings_per_s": res["ours"]["readings_per_s"]["median"] >= TARGETS["stream_readings_per_s"],
           "stream_net_readings_per_s": res["ours"]["net_readings_per_s"]["median"] >= TARGETS["stream_readings_per_s"],
           "stream_ratio_vs_quix": res["ratio_vs_quix"]["median"] >= TARGETS["stream_ratio_vs_quix"]}
    published = "" if stream_settings()["publish_features"] else ", features not published to Kafka"
    label = {"ours": f"ours: `gigapulse stream --drain` (raw lake and every feature table{published})",
             "quix": f"Quix Streams {env['libraries'].get('quixstreams')} (1-min window per sensor → Parquet, "
                     f"{'rows re-keyed by sensor' if opts.quix_variant == 'group_by' else 'windowed by gateway key'})",
             "ceiling": "aiokafka consumer, decode only (Python ceiling)"}
    rows = []
    for name in ("ours", "quix", "ceiling"):
        r = res[name]
        ratio = "1" if name == "ours" else fmt_spread(res[f"ratio_vs_{name}"], 2)
        rows.append([label[name], f"{r['readings']:,}", fmt_spread(r["readings_per_s"]), fmt_spread(r["wall_s"], 1),
                     fmt_spread(r["peak_rss_mib"], 0), ratio])
    table = markdown_table(["worker", "readings", "readings/s, median (min–max)", "wall s", "peak RSS MiB",
                            "ours / it"], rows)
    ours = res["ours"]
    table += (f"\n\nOurs net of start-up: {fmt_spread(ours['net_readings_per_s'])} readings/s (the same drain over "
              f"empty topics takes {fmt_spread(ours['startup_s'], 1)} s: interpreter, imports, asset model, Faust "
              f"start, group join, shutdown).\n\nTargets: ≥ {TARGETS['stream_readings_per_s']:,} readings/s per worker: "
              f"end to end {'met' if met['stream_readings_per_s'] else 'MISSED'}, net of start-up "
              f"{'met' if met['stream_net_readings_per_s'] else 'MISSED'}; ≥ {TARGETS['stream_ratio_vs_quix']:g}× Quix "
              f"{'met' if met['stream_ratio_vs_quix'] else 'MISSED'}.")
    return {
        "bench": "stream", "environment": env, "targets": {k: TARGETS[k] for k in met}, "met": met,
        "params": {"runs": opts.runs, "plant": PLANT, "seed": opts.seed, "prefill_simulated_s": opts.prefill_s,
                   "prefill": {k: fill[k] for k in ("readings", "messages", "bytes", "wall_s")},
                   "partitions": 6, "quix_readings": quix_limit, "quix_variant": opts.quix_variant,
                   "stream_settings": stream_settings()},
        "results": res, "runs": runs, "table": table, "profile_top": profile_text,
    }


# --------------------------------------------------------------------------- stream peers (child processes)

def _quix_peer(args: dict[str, Any]) -> dict[str, Any]:
    """The same per-sensor 1-minute features, written the way Quix Streams' docs write them.

    Frames are expanded into one row per reading, the row's event time set from the reading, and a
    tumbling 1-minute window aggregates count, mean, std, min, max and last per sensor; closed
    windows go to Quix's Parquet file sink. ``variant="key"`` windows by the message key (the
    gateway, which owns its sensors) with a per-sensor accumulator; ``variant="group_by"``
    re-keys every row by sensor through a repartition topic, the textbook form, which is slower.
    The app stops once it has consumed ``limit`` readings or reached the end offsets, and its final
    checkpoint flushes the sink.
    """
    import pyarrow.parquet as pq
    from quixstreams import Application
    from quixstreams.context import message_context
    from quixstreams.dataframe.windows import Count, Last, Max, Mean, Min, Reduce
    from quixstreams.sinks.community.file.local import LocalFileSink

    from schemas.contracts import decode_reading_message

    out_dir = Path(args["out_dir"])
    app = Application(broker_address=args["bootstrap"], consumer_group=f"bench-quix-{uuid.uuid4().hex[:8]}",
                      auto_offset_reset="earliest", state_dir=str(out_dir / "state"), loglevel="WARNING")
    source = app.topic(args["topic"], value_deserializer="bytes", key_deserializer="bytes")
    ends = {int(p): int(o) for p, o in args["end_offsets"].items()}
    pending = {p for p, o in ends.items() if o > 0}
    limit = int(args["limit"])
    regroup = args["variant"] == "group_by"
    seen = {"readings": 0, "messages": 0, "first": None, "target": None, "windowed": 0}

    def rows(payload: bytes) -> list[dict[str, Any]]:
        if seen["target"] is not None:
            return []  # past the limit: consumed, not processed
        ctx = message_context()
        frame = decode_reading_message(payload)
        if seen["first"] is None:
            seen["first"] = time.perf_counter()
        seen["readings"] += len(frame)
        seen["messages"] += 1
        if ctx.offset + 1 >= ends.get(ctx.partition, 0):
            pending.discard(ctx.partition)
        if seen["readings"] >= limit or not pending:
            seen["target"] = seen["readings"]
            if not regroup:
                app.stop()  # takes effect once this message has gone through the whole pipeline
        s = frame.sensors
        return [{"sensor_id": s[i], "ts": t, "value": v}
                for i, t, v in zip(frame.idx.tolist(), frame.ts_ms.tolist(), frame.value.tolist(), strict=True)]

    sdf = app.dataframe(source)
    sdf = sdf.apply(rows, expand=True)
    sdf = sdf.set_timestamp(lambda value, key, timestamp, headers: value["ts"])
    if regroup:
        sdf = sdf.group_by("sensor_id")

        def windowed(row):
            # Rows come back through the repartition topic: stop when all of them are windowed.
            seen["windowed"] += 1
            if seen["target"] is not None and seen["windowed"] >= seen["target"]:
                app.stop()

        sdf = sdf.update(windowed)

        def welford_init(row):
            return (1, row["value"], 0.0)

        def welford(acc, row):
            n, mean, m2 = acc
            x = row["value"]
            n += 1
            d = x - mean
            mean += d / n
            return (n, mean, m2 + d * (x - mean))

        sdf = sdf.tumbling_window(60_000).agg(count=Count(), mean=Mean("value"), min=Min("value"),
                                             max=Max("value"), last=Last("value"),
                                             m2=Reduce(welford, welford_init)).final()

        def finish(w, key, timestamp, headers):
            n, _, m2 = w["m2"]
            return {"sensor_id": key, "window_start": w["start"], "window_end": w["end"], "count": w["count"],
                    "mean": w["mean"], "std": math.sqrt(m2 / (n - 1)) if n > 1 else None, "min": w["min"],
                    "max": w["max"], "last": w["last"]}

        sdf = sdf.apply(finish, metadata=True)
    else:
        def init(row):
            x = row["value"]
            return {row["sensor_id"]: [1, x, 0.0, x, x, x]}

        def reduce(acc, row):
            x = row["value"]
            st = acc.get(row["sensor_id"])
            if st is None:
                acc[row["sensor_id"]] = [1, x, 0.0, x, x, x]
                return acc
            n = st[0] + 1
            d = x - st[1]
            mean = st[1] + d / n
            st[0], st[1], st[2] = n, mean, st[2] + d * (x - mean)
            st[3], st[4], st[5] = min(st[3], x), max(st[4], x), x
            return acc

        def per_sensor(w):
            return [{"sensor_id": sid, "window_start": w["start"], "window_end": w["end"], "count": n, "mean": mean,
                     "std": math.sqrt(m2 / (n - 1)) if n > 1 else None, "min": lo, "max": hi, "last": last}
                    for sid, (n, mean, m2, lo, hi, last) in w["value"].items()]

        sdf = sdf.tumbling_window(60_000).reduce(reduce, init).final().apply(per_sensor, expand=True)
    sdf.sink(LocalFileSink(directory=str(out_dir / "features"), format="parquet"))
    app.run()
    done = time.perf_counter()
    feature_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in (out_dir / "features").rglob("*.parquet"))
    return {"readings": seen["readings"], "messages": seen["messages"], "feature_rows": feature_rows,
            "active_s": done - seen["first"] if seen["first"] else None}


async def _ceiling_async(args: dict[str, Any]) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from schemas.contracts import decode_reading_message

    consumer = AIOKafkaConsumer(bootstrap_servers=args["bootstrap"], group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=8 * MIB,
                                fetch_max_bytes=64 * MIB)
    await consumer.start()
    try:
        end = {TopicPartition(args["topic"], int(p)): int(o) for p, o in args["end_offsets"].items()}
        consumer.assign(list(end))
        await consumer.seek_to_beginning(*end)
        pending = {tp for tp, o in end.items() if o > 0}
        readings = messages = 0
        first = None
        while pending:
            batch = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            for tp, records in batch.items():
                if first is None:
                    first = time.perf_counter()
                for rec in records:
                    readings += len(decode_reading_message(rec.value))
                messages += len(records)
                if records and records[-1].offset + 1 >= end[tp]:
                    pending.discard(tp)
        return {"readings": readings, "messages": messages,
                "active_s": time.perf_counter() - first if first else None}
    finally:
        await consumer.stop()


def _ceiling_peer(args: dict[str, Any]) -> dict[str, Any]:
    """A plain aiokafka consumer that only decodes frames: what any Python worker must pay at least."""
    return asyncio.run(_ceiling_async(args))


# --------------------------------------------------------------------------- freshness

@dataclass
class FreshnessOptions:
    runs: int = 3
    rate: int = 20_000
    duration_s: float = 60.0
    warmup_s: float = 15.0
    poll_s: float = 0.1
    grace_s: float = 20.0
    seed: int = 42
    profile: Path | None = None


class PacedFrames:
    """Frames of the reference plant's sensors at a fixed rate, time-stamped when produced.

    One reading per sensor per tick, grouped into one frame per gateway (station) and keyed by it,
    as a plant's edge gateways send them; the tick length makes the rate exact (sensors / rate).
    ``ts_ms`` is the wall clock at the moment the frame is encoded, so what the poller measures is
    everything after the plant: produce, broker, worker, Parquet, DuckDB.
    """

    def __init__(self, plant, rate: int, seed: int):
        import numpy as np

        self.rate = rate
        by_gw: dict[str, list] = {}
        for e in plant.sensors:
            by_gw.setdefault(f"{e.site}.{e.station}", []).append(e)
        self.gateways = []
        rng = np.random.default_rng(seed)
        for gw, entries in by_gw.items():
            ids = [e.sensor_id for e in entries]
            base = np.array([e.target if e.target is not None else
                             ((e.lsl + e.usl) / 2 if e.lsl is not None and e.usl is not None else 1.0)
                             for e in entries], dtype=np.float64)
            noise = np.array([abs(e.usl - e.lsl) / 12 if e.lsl is not None and e.usl is not None else 0.01
                              for e in entries], dtype=np.float64)
            meter = np.array([e.is_energy_meter for e in entries], dtype=bool)
            self.gateways.append((gw, ids, np.arange(len(ids), dtype=np.int32), base, noise, meter))
        self.n_sensors = sum(len(g[1]) for g in self.gateways)
        self.tick_s = self.n_sensors / rate
        self._rng = rng
        self._kwh = 0.0

    def tick(self) -> list[tuple[str, bytes, int, int]]:
        """(gateway, payload, readings, ts_ms) of one tick, stamped with the current wall clock."""
        import numpy as np

        from schemas.contracts import encode_frame_arrays

        out = []
        self._kwh += 0.001
        for gw, ids, idx, base, noise, meter in self.gateways:
            value = base + noise * self._rng.standard_normal(len(ids))
            value[meter] = self._kwh
            ts_ms = int(time.time() * 1000)
            ts = np.full(len(ids), ts_ms, dtype=np.int64)
            out.append((gw, encode_frame_arrays(gw, ids, idx, ts, value), len(ids), ts_ms))
        return out


class Visibility:
    """Polls DuckDB for the newest reading visible per gateway, and times each frame's first sighting.

    Frames of one gateway go to one partition in order, and a worker commits a partition's lake
    files in offset order, so a frame is visible exactly when its gateway's newest visible ``ts``
    has reached the frame's ``ts``. The time credited is the end of the poll that first saw it
    (never earlier than true visibility).
    """

    SQL = ("SELECT site || '.' || station AS gateway, epoch_ms(max(ts)) FROM readings "
           "WHERE ts >= make_timestamptz(? * 1000) GROUP BY ALL")

    def __init__(self, data_dir: Path, poll_s: float):
        self.lake = data_dir / "lake"
        self.db = data_dir / "gigapulse.duckdb"
        self.poll_s = poll_s
        self.pending: dict[str, deque] = {}
        self.latencies: list[tuple[float, float]] = []  # (ts_s, latency_s)
        self.poll_times: list[float] = []
        self.first_seen: float | None = None
        self.catalog = False
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="visibility", daemon=True)

    def expect(self, gateway: str, ts_ms: int) -> None:
        self.pending.setdefault(gateway, deque()).append(ts_ms)

    def oldest_pending_ms(self) -> int | None:
        heads = [q[0] for q in list(self.pending.values()) if q]
        return min(heads) if heads else None

    def _poll(self) -> None:
        from transforms.warehouse import build_catalog, query

        if not self.catalog:
            if not any((self.lake / "readings").rglob("*.parquet")):
                return
            build_catalog(self.lake, self.db)  # once: the view's glob picks up every later file
            self.catalog = True
        since = self.oldest_pending_ms()
        if since is None:
            return
        t0 = time.time()
        _, rows = query(self.db, self.SQL, [since])
        t1 = time.time()
        self.poll_times.append(t1 - t0)
        for gw, max_ms in rows:
            q = self.pending.get(gw)
            while q and q[0] <= max_ms:
                ts = q.popleft()
                self.latencies.append((ts / 1000, t1 - ts / 1000))
                if self.first_seen is None:
                    self.first_seen = t1

    def _loop(self) -> None:
        nxt = time.monotonic()
        try:
            while not self.stop.is_set():
                self._poll()
                nxt += self.poll_s
                self.stop.wait(max(0.0, nxt - time.monotonic()))
        except BaseException as exc:  # noqa: BLE001 - surfaced by the caller after join
            self.error = exc


def _percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def freshness_once(bb: BenchBroker, opts: FreshnessOptions, plant, bar=None, label: str = "",
                   profile: Path | None = None) -> dict[str, Any]:
    """One worker, one paced producer, one poller: latency from reading ts to DuckDB visibility."""
    from ingestion.producer import PlantProducer
    from ingestion.settings import ProducerSettings

    topics = (new_topic(bb.bootstrap, "fresh.readings", 6, readings_topic_config()),
              new_topic(bb.bootstrap, "fresh.events", 3), new_topic(bb.bootstrap, "fresh.dlq", 1))
    data_dir = bb.scratch("fresh")
    env = child_env(bb, GIGAPULSE_DATA_DIR=str(data_dir),
                    GIGAPULSE_STREAM_GROUP_ID=f"bench-fresh-{uuid.uuid4().hex[:8]}")
    prefix = [sys.executable, "-m", "cProfile", "-o", str(profile)] if profile else [sys.executable]
    cmd = [*prefix, "-m", "gigapulse.cli", "stream", "--readings-topic", topics[0],
           "--events-topic", topics[1], "--dlq-topic", topics[2]]
    log = open(data_dir / "worker.log", "wb")  # noqa: SIM115 - closed in finally, after the child
    worker = psutil.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    producer = PlantProducer(bb.bootstrap, ProducerSettings(), client_id="gigapulse-bench-fresh")
    frames = PacedFrames(plant, opts.rate, opts.seed)
    vis = Visibility(data_dir, opts.poll_s)
    vis.thread.start()
    peak_rss = 0
    cpu0 = 0.0
    worker_cpu = float("nan")
    measured_from = None
    produced = 0
    task = bar.add_task(label, total=int(opts.duration_s), info="waiting for the worker") if bar else None
    try:
        t0 = time.monotonic()
        k = 0
        deadline_first = t0 + 120.0
        while True:
            now = time.monotonic()
            if worker.poll() is not None:
                raise BenchError(f"the stream worker exited with code {worker.returncode}: "
                                 f"{(data_dir / 'worker.log').read_text(errors='replace')[-600:]}")
            if measured_from is None:
                if vis.first_seen is not None and time.time() - vis.first_seen >= opts.warmup_s:
                    # The worker starts (group join, asset load) while frames already flow; its
                    # catch-up after the first sighting is start-up, not steady-state freshness.
                    measured_from = time.time()
                    produced = 0
                    t_measure = now
                    with contextlib.suppress(psutil.Error):
                        cpu = worker.cpu_times()
                        cpu0 = cpu.user + cpu.system
                elif now > deadline_first:
                    raise BenchError("no reading became visible in DuckDB within 120 s of starting the worker")
            elif now - t_measure >= opts.duration_s:
                break
            for gw, payload, n, ts_ms in frames.tick():
                vis.expect(gw, ts_ms)
                producer.send_frame(gw, payload, n, topics[0])
                produced += n
            k += 1
            if k % 20 == 0:
                with contextlib.suppress(psutil.Error):
                    peak_rss = max(peak_rss, worker.memory_info().rss)
                if task is not None and measured_from is not None:
                    bar.update(task, completed=int(now - t_measure), info=f"{len(vis.latencies):,} frames seen")
            sleep = t0 + k * frames.tick_s - time.monotonic()
            if sleep > 0:
                time.sleep(sleep)
        produced_rate = produced / (time.monotonic() - t_measure)
        with contextlib.suppress(psutil.Error):
            cpu = worker.cpu_times()
            worker_cpu = (cpu.user + cpu.system - cpu0) / (time.monotonic() - t_measure)
        producer.flush()
        grace_end = time.monotonic() + opts.grace_s
        while vis.oldest_pending_ms() is not None and time.monotonic() < grace_end and vis.error is None:
            time.sleep(0.1)
    finally:
        vis.stop.set()
        vis.thread.join(10)
        producer.close()
        stop_child(worker)
        log.close()
        if task is not None:
            bar.remove_task(task)
    if vis.error is not None:
        raise BenchError(f"polling DuckDB failed: {vis.error}")
    lat = [latency for ts, latency in vis.latencies if ts >= measured_from]
    never = sum(1 for q in vis.pending.values() for ts in q if ts / 1000 >= measured_from)
    delete_topics(bb.bootstrap, list(topics))
    shutil.rmtree(data_dir, ignore_errors=True)
    return {"frames": len(lat), "never_visible": never, "rate": produced_rate,
            "p50_s": _percentile(lat, 50), "p99_s": _percentile(lat, 99), "max_s": max(lat) if lat else None,
            "poll_p50_s": _percentile(vis.poll_times, 50), "worker_peak_rss_mib": peak_rss / MIB,
            "worker_cpu_pct": 100 * worker_cpu}


def run_freshness(opts: FreshnessOptions) -> dict[str, Any]:
    """p50/p99 of reading-ts → visible-in-DuckDB at a fixed rate, against a live worker."""
    from ingestion.pipeline import IngestRun
    from ingestion.producer import PlantProducer
    from ingestion.settings import ProducerSettings
    from schemas.asset_model import load_plant

    env = environment()
    plant = load_plant(PLANT)
    runs = []
    with bench_broker() as bb:
        # The worker refuses readings of sensors it does not know: publish the model as simulate does.
        producer = PlantProducer(bb.bootstrap, ProducerSettings(), client_id="gigapulse-bench-assets")
        IngestRun(plant, producer, opts.seed, datetime.now(UTC)).publish_assets()
        producer.close()
        warm_bytecode(bb, ["gigapulse.cli", "transforms.app", "faust"])
        with progress() as bar:
            for i in range(opts.runs):
                runs.append(freshness_once(bb, opts, plant, bar, f"run {i + 1}/{opts.runs}: {opts.rate:,} readings/s"))
            profile_text = None
            if opts.profile:
                opts.profile.parent.mkdir(parents=True, exist_ok=True)
                freshness_once(bb, opts, plant, bar, "profiling the worker (cProfile, not in the figures)",
                               profile=opts.profile.resolve())
                profile_text = profile_top(opts.profile)
    res = {k: spread([r[k] for r in runs]) for k in ("p50_s", "p99_s", "max_s", "rate", "poll_p50_s",
                                                     "worker_peak_rss_mib", "worker_cpu_pct")}
    res["frames"] = [r["frames"] for r in runs]
    res["never_visible"] = [r["never_visible"] for r in runs]
    met = {"freshness_p99_s": res["p99_s"]["median"] <= TARGETS["freshness_p99_s"]
           and not any(res["never_visible"])}
    rows = [["p50 s", fmt_spread(res["p50_s"], 2), ""],
            ["p99 s", fmt_spread(res["p99_s"], 2),
             f"≤ {TARGETS['freshness_p99_s']:g} ({'met' if met['freshness_p99_s'] else 'MISSED'})"],
            ["max s", fmt_spread(res["max_s"], 2), ""],
            ["achieved rate, readings/s", fmt_spread(res["rate"]), f"{opts.rate:,} asked"],
            ["frames measured per run", ", ".join(f"{n:,}" for n in res["frames"]),
             f"never visible: {sum(res['never_visible'])}"],
            ["DuckDB poll, median s", fmt_spread(res["poll_p50_s"], 3), f"every {opts.poll_s:g} s"],
            ["worker peak RSS MiB", fmt_spread(res["worker_peak_rss_mib"], 0), ""],
            ["worker CPU, % of one core", fmt_spread(res["worker_cpu_pct"], 0), "while measured"]]
    table = markdown_table(["measure", "median (min–max) over runs", "target / note"], rows)
    return {
        "bench": "freshness", "environment": env, "targets": {k: TARGETS[k] for k in met}, "met": met,
        "params": {"runs": opts.runs, "rate": opts.rate, "duration_s": opts.duration_s, "warmup_s": opts.warmup_s,
                   "poll_s": opts.poll_s, "plant": PLANT, "sensors": sum(1 for _ in plant.sensors),
                   "stream_settings": stream_settings()},
        "results": res, "runs": runs, "table": table, "profile_top": profile_text,
    }


# --------------------------------------------------------------------------- entry point for peers

_PEERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"quix": _quix_peer, "ceiling": _ceiling_peer}


def _peer_main(argv: list[str]) -> int:
    """``python -m gigapulse.bench <peer> '<json args>'``: run a peer, write its result JSON."""
    if len(argv) != 2 or argv[0] not in _PEERS:
        print(f"usage: python -m gigapulse.bench {{{','.join(_PEERS)}}} '<json args>'", file=sys.stderr)
        return 2
    args = json.loads(argv[1])
    result = _PEERS[argv[0]](args)
    Path(args["result"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_peer_main(sys.argv[1:]))
