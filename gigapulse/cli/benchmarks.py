"""``gigapulse bench``: the benchmark commands (the measuring code is :mod:`gigapulse.bench`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gigapulse.cli.common import _parse

bench_app = typer.Typer(help="Benchmarks (figures go to docs/BENCHMARKS.md).", no_args_is_help=True)

RunsOpt = Annotated[int, typer.Option(min=1, help="Repeat each measurement this many times; the report gives "
                                              "the median and the min–max spread.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the simulated plant.")]


@bench_app.command("ingest")
def bench_ingest(
    runs: RunsOpt = 3,
    frames_duration: Annotated[str, typer.Option(help="Simulated time produced as frames per run.")] = "10m",
    json_duration: Annotated[str, typer.Option(help="Simulated time produced as JSON singles per run.")] = "1m",
    memory_durations: Annotated[str, typer.Option(help="Comma-separated simulated durations whose "
                                                       "`gigapulse simulate` peak RSS is measured.")] = "5m,20m",
    seed: SeedOpt = 42,
    nodes: NodesOpt = 1,
    out: Annotated[Path, typer.Option(help="JSON report.")] = Path("var/bench/ingest.json"),
):
    """Readings/s from the simulator into Kafka (frames, JSON singles) beside Kafka's ProducerPerformance.

    Runs on a private broker (free ports, temp dir) with fresh topics; also measures the peak RSS of
    `gigapulse simulate` for each of --memory-durations.
    """
    from gigapulse import bench
    from ingestion.pipeline import parse_duration

    memory = tuple(_parse(parse_duration, d, "--memory-durations") for d in memory_durations.split(",") if d.strip())
    opts = bench.IngestOptions(runs=runs, frames_s=_parse(parse_duration, frames_duration, "--frames-duration"),
                               json_s=_parse(parse_duration, json_duration, "--json-duration"), memory_s=memory,
                               seed=seed, nodes=_nodes(nodes))
    bench.emit(bench.run_ingest(opts), out)


NodesOpt = Annotated[int, typer.Option(help="1: a private broker; 3: a private 3-node cluster (RF 3, min ISR 2, "
                                            "acks=all; docs/cluster.md).")]


def _nodes(nodes: int) -> int:
    if nodes not in (1, 3):
        raise typer.BadParameter("use 1 or 3", param_hint="--nodes")
    return nodes


@bench_app.command("stream")
def bench_stream(
    runs: RunsOpt = 3,
    prefill: Annotated[str, typer.Option(help="Simulated time of the reference plant pre-filled as frames "
                                              "(15m is about 5M readings).")] = "15m",
    quix_readings: Annotated[int, typer.Option(min=0, help="Readings Quix Streams processes per run (a prefix of "
                                                           "the same topic; 0: all of it).")] = 1_000_000,
    quix_variant: Annotated[str, typer.Option(help="key: window by the gateway key with a per-sensor "
                                                   "accumulator; group_by: re-key rows by sensor.")] = "key",
    profile: Annotated[Path | None, typer.Option(help="Also run our worker once under cProfile (untimed) and "
                                                      "write the profile here.")] = None,
    compact_every: Annotated[str, typer.Option(help="Also drain with `gigapulse lake compact --loop` at this "
                                                    "interval beside the worker; 'off' to skip.")] = "10s",
    seed: SeedOpt = 42,
    nodes: NodesOpt = 1,
    out: Annotated[Path, typer.Option(help="JSON report.")] = Path("var/bench/stream.json"),
):
    """Readings/s from a pre-filled topic to features in Parquet: ours, Quix Streams, an aiokafka ceiling."""
    from gigapulse import bench
    from ingestion.pipeline import parse_duration

    if quix_variant not in ("key", "group_by"):
        raise typer.BadParameter("use key or group_by", param_hint="--quix-variant")
    compact_s = None if compact_every == "off" else _parse(parse_duration, compact_every, "--compact-every")
    opts = bench.StreamOptions(runs=runs, prefill_s=_parse(parse_duration, prefill, "--prefill"),
                               quix_readings=quix_readings, quix_variant=quix_variant, profile=profile, seed=seed,
                               compact_every_s=compact_s, nodes=_nodes(nodes))
    bench.emit(bench.run_stream(opts), out)


bridges_app = typer.Typer(help="Benchmarks of the factory connectors (docs/connectors.md).", no_args_is_help=True)
bench_app.add_typer(bridges_app, name="bridges")


@bridges_app.command("modbus")
def bench_bridges_modbus(
    runs: RunsOpt = 1,
    blocks: Annotated[int, typer.Option(min=1, max=10_000, help="Register blocks (10 registers each) polled.")] = 100,
    rate: Annotated[float, typer.Option(min=0.1, max=100, help="Polls per second of each block.")] = 10.0,
    duration: Annotated[str, typer.Option(help="Measured time per run (after a 3 s warm-up).")] = "30s",
    endpoints: Annotated[int, typer.Option(min=1, max=27, help="Server processes (PLCs or gateways), the "
                                                                "plant's units dealt among them.")] = 4,
    connections: Annotated[int, typer.Option(min=1, max=32, help="Poller connections per endpoint.")] = 1,
    peer_seconds: Annotated[float, typer.Option(min=0, max=600, help="Seconds the bare pymodbus ceiling reads "
                                                                     "after the poller (0: none).")] = 5.0,
    seed: SeedOpt = 42,
    out: Annotated[Path, typer.Option(help="JSON report.")] = Path("var/bench/bridges-modbus.json"),
):
    """Modbus poller: achieved polls/s and the poll interval's jitter against the simulated plant's servers."""
    from gigapulse import bench
    from ingestion.pipeline import parse_duration

    opts = bench.BridgeBenchOptions(runs=runs, blocks=blocks, rate_hz=rate, seed=seed,
                                    duration_s=_parse(parse_duration, duration, "--duration"),
                                    endpoints=endpoints, connections=connections,
                                    peer_s=peer_seconds)
    bench.emit(bench.run_bridges(opts), out)


@bench_app.command("freshness")
def bench_freshness(
    runs: RunsOpt = 3,
    rate: Annotated[int, typer.Option(min=1, help="Readings per second produced.")] = 20_000,
    duration: Annotated[str, typer.Option(help="Measured time per run (after the warm-up).")] = "60s",
    poll: Annotated[float, typer.Option(min=0.01, help="Seconds between DuckDB polls.")] = 0.1,
    compact_every: Annotated[str, typer.Option(help="Run `gigapulse lake compact --loop` beside the worker with "
                                                    "this interval, as the compose stack does; 'off' for none.")] = "10s",
    profile: Annotated[Path | None, typer.Option(help="Also run once with the worker under cProfile (not in "
                                                      "the figures) and write the profile here.")] = None,
    seed: SeedOpt = 42,
    out: Annotated[Path, typer.Option(help="JSON report.")] = Path("var/bench/freshness.json"),
):
    """p50/p99 seconds from a reading's timestamp to its visibility in a DuckDB query, at a fixed rate."""
    from gigapulse import bench
    from ingestion.pipeline import parse_duration

    compact_s = None if compact_every == "off" else _parse(parse_duration, compact_every, "--compact-every")
    opts = bench.FreshnessOptions(runs=runs, rate=rate, duration_s=_parse(parse_duration, duration, "--duration"),
                                  poll_s=poll, seed=seed, profile=profile, compact_every_s=compact_s)
    bench.emit(bench.run_freshness(opts), out)


@bench_app.command("recovery")
def bench_recovery(
    runs: RunsOpt = 3,
    rate: Annotated[int, typer.Option(min=1, help="Readings per second produced.")] = 20_000,
    instance_ids: Annotated[bool, typer.Option("--instance-ids/--no-instance-ids", help="Give each worker a "
                                               "static group instance id, as docker-compose.yml does.")] = True,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds after the kill before a run counts as not "
                                                       "recovered.")] = 90.0,
    seed: SeedOpt = 42,
    out: Annotated[Path, typer.Option(help="JSON report.")] = Path("var/bench/recovery.json"),
):
    """Seconds from a worker's kill -9 until freshness is back under 2 s: restarted at once, or taken over."""
    from gigapulse import bench

    opts = bench.RecoveryOptions(runs=runs, rate=rate, instance_ids=instance_ids, timeout_s=timeout, seed=seed)
    bench.emit(bench.run_recovery(opts), out)


@bench_app.command("warehouse")
def bench_warehouse(
    readings: Annotated[int, typer.Option(min=10_000, help="Readings in the lake (the reference plant at its "
                                                           "nominal rates: 100M is about five simulated hours).")]
    = 100_000_000,
    runs: RunsOpt = 3,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Build the lake again even if a cached one matches.")]
    = False,
    workers: Annotated[int, typer.Option(min=1, max=6, help="Processes that build the lake.")] = 2,
    engines: Annotated[str, typer.Option(help="Comma-separated engines to run (gigapulse always runs).")]
    = "gigapulse,chDB,Polars,naive DuckDB",
    cache: Annotated[Path, typer.Option(help="Where built lakes are kept (warehouse-<readings>/ under it).")]
    = Path("var/bench"),
    seed: SeedOpt = 42,
    out: Annotated[Path, typer.Option(help="JSON report.")] = Path("var/bench/warehouse.json"),
):
    """The warehouse query set over a lake of --readings readings: gigapulse beside chDB, Polars and naive DuckDB.

    Builds the lake once without Kafka (simulator → the stream's partition processors → Parquet),
    compacts it, caches it under --cache, then times every query of the set on every engine, each
    answer checked against gigapulse's first.
    """
    from gigapulse import bench
    from gigapulse.cli.common import UserError

    known = ("gigapulse", "chDB", "Polars", "naive DuckDB")
    chosen = [e.strip() for e in engines.split(",") if e.strip()]
    unknown = [e for e in chosen if e not in known]
    if unknown:
        raise UserError(f"--engines: unknown {', '.join(unknown)} (choose from {', '.join(known)})")
    chosen = ["gigapulse"] + [e for e in known[1:] if e in chosen]
    opts = bench.WarehouseOptions(readings=readings, runs=runs, rebuild=rebuild, workers=workers, seed=seed,
                                  cache=cache, engines=tuple(chosen))
    try:
        report = bench.run_warehouse(opts)
    except bench.BenchError as exc:
        raise UserError(str(exc)) from None
    bench.emit(report, out)


@bench_app.command("quality")
def bench_quality(
    hours: Annotated[float, typer.Option(min=0.5, max=240, help="Simulated hours of each plant (the reference "
                                                                 "plant makes 7,200 cells an hour).")] = 12.0,
    plants: Annotated[str, typer.Option(help="Comma-separated plants (reference, legacy).")] = "reference,legacy",
    test_share: Annotated[float, typer.Option(min=0.05, max=0.8, help="Share of the latest cells held out "
                                                                       "for testing (a split in time).")] = 0.3,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Build the lakes again even if cached ones match.")]
    = False,
    workers: Annotated[int, typer.Option(min=1, max=6, help="Processes that build each lake.")] = 2,
    cache: Annotated[Path, typer.Option(help="Where built lakes are kept (quality-<plant>-<hours>h/ under it).")]
    = Path("var/bench"),
    seed: SeedOpt = 42,
    out: Annotated[Path, typer.Option(help="JSON report.")] = Path("var/bench/quality.json"),
):
    """The gate model (scrapped or graded C, before formation) against its baselines and the simulator's truth.

    Builds each plant's lake once without Kafka, with the simulator's true probability of every cell
    beside it, lands cell_features per day, trains on the earliest cells and tests on the latest.
    """
    from gigapulse import bench
    from gigapulse.bench.quality import QualityOptions, run_quality
    from gigapulse.cli.common import UserError

    chosen = tuple(p.strip() for p in plants.split(",") if p.strip())
    unknown = [p for p in chosen if p not in ("reference", "legacy")]
    if unknown or not chosen:
        raise UserError(f"--plants: unknown {', '.join(unknown) or 'none given'} (choose from reference, legacy)")
    opts = QualityOptions(hours=hours, plants=chosen, test_share=test_share, rebuild=rebuild, workers=workers,
                          cache=cache, seed=seed)
    try:
        report = run_quality(opts)
    except bench.BenchError as exc:
        raise UserError(str(exc)) from None
    bench.emit(report, out)


@bench_app.command("scoring")
def bench_scoring(
    minutes: Annotated[float, typer.Option(min=6, max=240, help="Real-time minutes of the plant; cells reach the "
                                                                "gate from about 4.5 minutes in.")] = 10.0,
    plant: Annotated[str, typer.Option(help="reference or legacy.")] = "reference",
    poll: Annotated[float, typer.Option(min=0.01, max=1, help="Seconds between polls of cell_risk.")] = 0.1,
    compact_every: Annotated[float, typer.Option(min=1, help="Seconds between maintenance steps beside the "
                                                             "worker (the catalog's publisher).")] = 10.0,
    model_hours: Annotated[float, typer.Option(min=0.5, help="Hours of the cached quality lake the champion "
                                                             "is trained on.")] = 3.0,
    stream_flush: Annotated[float | None, typer.Option(min=0.05, help="The stream worker's checkpoint interval, "
                                                                      "s (GIGAPULSE_STREAM_FLUSH_SECONDS; default: "
                                                                      "the worker's own, 0.5).")] = None,
    cache: Annotated[Path, typer.Option(help="Where the quality bench's lakes are kept.")] = Path("var/bench"),
    seed: SeedOpt = 42,
    out: Annotated[Path, typer.Option(help="JSON report.")] = Path("var/bench/scoring.json"),
):
    """Live scoring: seconds from a cell's filling leave event to its score visible in DuckDB (target p99 ≤ 2 s).

    Runs the plant in real time on a private broker with a stream worker, the lake maintenance loop and
    the scorer, after training a champion on the cached quality lake; a poller watches cell_risk.
    """
    from gigapulse import bench
    from gigapulse.bench.scoring import ScoringOptions, run_scoring
    from gigapulse.cli.common import UserError

    if plant not in ("reference", "legacy"):
        raise UserError(f"--plant: unknown {plant} (choose from reference, legacy)")
    opts = ScoringOptions(minutes=minutes, plant=plant, poll_s=poll, compact_every_s=compact_every,
                          model_hours=model_hours, cache=cache, seed=seed, stream_flush_s=stream_flush)
    try:
        report = run_scoring(opts)
    except bench.BenchError as exc:
        raise UserError(str(exc)) from None
    bench.emit(report, out)


@bridges_app.command("opcua")
def bench_bridges_opcua(
    runs: RunsOpt = 1,
    nodes: Annotated[int, typer.Option(min=1, max=1004, help="Nodes served and subscribed (reference plant "
                                                             "sensors, in asset-model order).")] = 1000,
    rate: Annotated[float, typer.Option(min=0.1, max=20, help="Writes per node per second.")] = 1.0,
    duration: Annotated[str, typer.Option(help="How long the server writes, per run.")] = "60s",
    publishing_interval: Annotated[float, typer.Option(min=10, help="The subscription's publishing interval, "
                                                                    "ms.")] = 500.0,
    out: Annotated[Path, typer.Option(help="JSON report.")] = Path("var/bench/bridges_opcua.json"),
):
    """OPC UA subscriptions on 1,000 nodes at 1 Hz: changes written vs received (target: none missed),
    time to subscribe, bridge and server CPU. The server runs in a child process."""
    from gigapulse import bench
    from gigapulse.bench.bridges_opcua import OpcUaBenchOptions, run_bridges_opcua
    from gigapulse.cli.common import UserError
    from ingestion.pipeline import parse_duration

    opts = OpcUaBenchOptions(runs=runs, nodes=nodes, rate_hz=rate,
                             duration_s=_parse(parse_duration, duration, "--duration"),
                             publishing_interval_ms=publishing_interval)
    try:
        report = run_bridges_opcua(opts)
    except bench.BenchError as exc:
        raise UserError(str(exc)) from None
    bench.emit(report, out)


@bridges_app.command("mqtt")
def bench_bridges_mqtt(
    runs: RunsOpt = 3,
    sim: Annotated[str, typer.Option(help="Simulated time of the reference plant queued in Mosquitto per run "
                                          "(1m is about 336,000 values).")] = "1m",
    fmt: Annotated[str, typer.Option("--format", help="sparkplug (DDATA by alias, a station's tick per "
                                                      "message) or uns (one JSON message per value).")] = "sparkplug",
    profile: Annotated[Path | None, typer.Option(help="Also profile our bridge in the first run (cProfile) and "
                                                      "write the profile here.")] = None,
    seed: SeedOpt = 42,
    out: Annotated[Path, typer.Option(help="JSON report.")] = Path("var/bench/bridges-mqtt.json"),
):
    """MQTT bridge: values/s from a pre-filled Mosquitto into Kafka (ours, one process) beside a paho
    subscriber that only decodes (the ceiling), in the same run (target: 50,000 values/s)."""
    from gigapulse import bench
    from gigapulse.bench.bridges_mqtt import BridgeMqttOptions, run_bridges_mqtt
    from gigapulse.cli.common import UserError
    from ingestion.pipeline import parse_duration

    if fmt not in ("sparkplug", "uns"):
        raise UserError(f"--format {fmt!r}: sparkplug or uns")
    opts = BridgeMqttOptions(runs=runs, sim_s=_parse(parse_duration, sim, "--sim"), mode=fmt, seed=seed,
                             profile=profile)
    try:
        report = run_bridges_mqtt(opts)
    except bench.BenchError as exc:
        raise UserError(str(exc)) from None
    bench.emit(report, out)


@bench_app.command("all")
def bench_all(
    only: Annotated[str, typer.Option(help="Comma-separated benches to run (default: all of them): "
                                           "ingest, stream, freshness, recovery, warehouse, bridges-modbus, "
                                           "bridges-opcua, bridges-mqtt, quality, scoring.")] = "",
    skip: Annotated[str, typer.Option(help="Comma-separated benches to leave out.")] = "",
    quick: Annotated[bool, typer.Option("--quick", help="The smallest sizes and one run each: a smoke test of "
                                                        "the machinery in minutes, not figures to quote.")] = False,
    write: Annotated[bool, typer.Option("--write/--no-write", help="Rewrite the figures section of --out (else "
                                                                   "print it).")] = True,
    out: Annotated[Path, typer.Option(help="The markdown file whose section between <!-- bench-all:begin --> and "
                                           "<!-- bench-all:end --> is rewritten (appended if it has none).")]
    = Path("docs/BENCHMARKS.md"),
    json_dir: Annotated[Path, typer.Option(help="Where each bench's JSON report goes (<bench>.json).")]
    = Path("var/bench"),
):
    """Every bench with its peers, at the defaults of `make bench` (hours), then the figures section of
    docs/BENCHMARKS.md rewritten: machine, versions, and per bench its medians, spreads and ratio to its peer.

    A bench that fails is reported as failed and the others still run; a peer that is not installed (the
    `.[bench]` extra) is left out with a note. Exit code 1 when any bench failed.
    """
    from datetime import UTC, datetime

    from gigapulse.bench import suite
    from gigapulse.cli.common import UserError, _progress, console
    from gigapulse.cli.common import out as stdout

    try:
        benches = suite.select(only.split(","), skip.split(","))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--only/--skip") from None
    if not benches:
        raise typer.BadParameter("nothing left to run", param_hint="--only/--skip")
    if write and out.exists():
        try:  # refuse bad markers now, not after hours of benches
            suite.rewrite(out.read_text(), f"{suite.BEGIN}\n{suite.END}")
        except ValueError as exc:
            raise UserError(f"{out}: {exc}") from None
    started = datetime.now(UTC).isoformat(timespec="seconds")

    def say(text: str) -> None:  # one line each, taken literally (notes hold "[bench]", not markup)
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    say(f"bench all: {', '.join(b.name for b in benches)}" + (" (quick)" if quick else ""))
    with _progress() as bar:
        task = bar.add_task("bench all", total=len(benches), info="")

        def start(bench, i):
            bar.update(task, description=f"bench {bench.name}", info=f"{i + 1} of {len(benches)}")
            say(f"[{i + 1}/{len(benches)}] {bench.name} ...")

        def done(result):
            bar.advance(task)
            n = [b.name for b in benches].index(result.name) + 1
            say(f"[{n}/{len(benches)}] {result.name}: {result.status} in {result.wall_s / 60:.1f} min"
                + (f" ({result.note})" if result.note else ""))

        results = suite.run_all(benches, quick, json_dir, start, done)
    text = suite.section(results, quick, started)
    if write:
        doc = out.read_text() if out.exists() else "# Benchmarks\n"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(suite.rewrite(doc, text))
        console.print(f"figures section of {out} rewritten ({len(results)} benches)")
    else:
        stdout.print(text, markup=False, highlight=False)
    failed = [r.name for r in results if r.status == "failed"]
    if failed:
        raise UserError(f"bench all: {', '.join(failed)} failed (see {out if write else 'above'})")
