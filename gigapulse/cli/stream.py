"""``gigapulse stream``, ``health`` and ``warehouse``: the stream worker and the catalog build
(``gigapulse sql``, the reading side, is :mod:`gigapulse.cli.sql`)."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from gigapulse.cli.common import BootstrapOpt, UserError, _bootstrap, _reachable, app, log, out


@app.command()
def stream(
    drain: Annotated[bool, typer.Option(help="Process everything currently in the topics, flush, and exit.")]
    = False,
    plant: Annotated[str | None, typer.Option(help="Also load this asset model (reference, legacy or a YAML "
                                                   "file) besides the plant.assets.v1 topic.")] = None,
    bootstrap: BootstrapOpt = None,
    loglevel: Annotated[str, typer.Option(help="Faust log level: crit, error, warn, info, debug.")] = "warn",
    readings_topic: Annotated[str | None, typer.Option(hidden=True, help="Read readings from this topic "
                                                       "(benchmarks use fresh topics).")] = None,
    events_topic: Annotated[str | None, typer.Option(hidden=True, help="Read events from this topic.")] = None,
    dlq_topic: Annotated[str | None, typer.Option(hidden=True, help="Dead letters go to, and are landed "
                                                  "from, this topic.")] = None,
    assets_topic: Annotated[str | None, typer.Option(hidden=True, help="Read the asset model from this "
                                                     "topic.")] = None,
):
    """Run a stream worker (Faust): validate, enrich, compute features, land everything in the lake.

    Start several to scale out: they share the partitions through the consumer group. Settings:
    GIGAPULSE_DATA_DIR (lake location) and GIGAPULSE_STREAM_* (window_ms, long_window_ms,
    lateness_ms, flush_seconds, flush_rows, microbatch_rows, checkpoints_in_flight, group_id,
    publish_features, log_every_s, max_future_s, internal_retries, health_port, health_host,
    session_timeout_s, heartbeat_interval_s, rebalance_timeout_s, instance_id). With --loglevel info
    it logs its rates and intake lag. With GIGAPULSE_STREAM_HEALTH_PORT it serves /healthz, /readyz
    and /status (gigapulse health).
    """
    from infra.broker import group_session_bounds
    from schemas.asset_model import load_plant
    from schemas.topics import ASSETS
    from transforms.settings import DataSettings, StreamSettings

    if loglevel not in ("crit", "error", "warn", "info", "debug"):
        raise typer.BadParameter("use crit, error, warn, info or debug", param_hint="--loglevel")
    data = DataSettings()
    settings = StreamSettings()
    servers = _bootstrap(bootstrap)
    extra = load_plant(plant).sensors if plant else ()  # a bad --plant is reported before the broker is asked
    _reachable(servers)  # before importing Faust: an unreachable cluster is reported seconds sooner
    bounds = group_session_bounds(servers)
    if bounds and not bounds[0] <= settings.session_timeout_s * 1000 <= bounds[1]:
        raise UserError(f"GIGAPULSE_STREAM_SESSION_TIMEOUT_S={settings.session_timeout_s:g} is outside what the "
                        f"broker accepts ({bounds[0] / 1000:g}–{bounds[1] / 1000:g} s, its "
                        "group.min/max.session.timeout.ms)")

    from transforms.app import StreamFailed, create_app, load_assets, run_worker
    from transforms.warehouse import write_sensors

    snapshot = load_assets(servers, topic=assets_topic or ASSETS)
    # The topic is the live model: it wins over --plant, and its tombstones retire sensors of either.
    assets = {e.sensor_id: e for e in extra}
    snapshot.apply_to(assets)
    if assets:
        write_sensors(data.lake_root, sorted(assets.values(), key=lambda e: e.sensor_id))
    log.info("stream worker: %d sensors in the asset model, lake at %s", len(assets), data.lake_root)
    overrides = {k: v for k, v in {"readings_topic": readings_topic, "events_topic": events_topic,
                                   "dlq_topic": dlq_topic, "assets_topic": assets_topic}.items() if v}
    faust_app = create_app(servers, data.lake_root, settings, assets, drain=drain,
                           asset_rejects=snapshot.rejected, **overrides)
    data.faust_dir.parent.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    faust_app.conf.datadir = data.faust_dir
    t0 = time.monotonic()
    try:
        run_worker(faust_app, loglevel=loglevel)
    except StreamFailed as exc:
        if isinstance(exc.__cause__, OSError):  # the environment (disk full, read-only): one line, no type
            raise UserError(str(exc)) from exc
        raise
    st = faust_app.gigapulse_stats
    wall = time.monotonic() - t0
    out.print(f"stream worker done: {st.messages:,} messages, {st.checkpoints:,} checkpoints in {wall:.1f}s; "
              + ", ".join(f"{k}={v:,}" for k, v in sorted(st.rows.items())))


@app.command()
def score(
    drain: Annotated[bool, typer.Option(help="Score every cell whose leave event is in the topic now, then exit.")]
    = False,
    bootstrap: BootstrapOpt = None,
    events_topic: Annotated[str | None, typer.Option(hidden=True, help="Read events from this topic.")] = None,
    readings_topic: Annotated[str | None, typer.Option(hidden=True, help="The stream workers read readings "
                                                       "from this topic.")] = None,
    out_topic: Annotated[str | None, typer.Option(hidden=True, help="Publish scores to this topic.")] = None,
):
    """Run the live scorer: each cell leaving electrolyte filling, scored before formation.

    Waits until the cell's history up to the gate has landed (its leave event, and every reading that
    was in Kafka when the event was read), computes its features with the same code as training
    (cell_features), scores them with the champion of the model registry (gigapulse models), and
    lands the row in the cell_risk table and on features.cell_risk.v1. A new champion is used from
    the next cell on, without a restart; without one, cells are landed with a null score. Start
    several to scale out (consumer group). When a cell's first event names the rolls it is made of, a
    second thread sums those rolls' visits (and their batches') ahead, so the gate reads only the cell's
    own. Settings: GIGAPULSE_DATA_DIR and GIGAPULSE_SCORE_* (group_id, poll_ms, check_s, max_wait_s,
    max_batch, publish, visit_cache, warm, log_every_s, trace: a JSON line per cell with where its latency
    went); docs/predictive-quality.md.
    """
    import signal
    import threading

    from schemas.topics import EVENTS, FEATURES_CELL_RISK, READINGS
    from transforms.scorer import Scorer
    from transforms.settings import DataSettings, ScoreSettings

    data = DataSettings()
    settings = ScoreSettings()
    servers = _bootstrap(bootstrap)
    _reachable(servers)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    scorer = Scorer(servers, data.lake_root, data.db_path, settings, events_topic=events_topic or EVENTS,
                    out_topic=out_topic or FEATURES_CELL_RISK, readings_topic=readings_topic or READINGS)
    st = scorer.run(stop, drain=drain)
    out.print(f"scorer done: {st.scored:,} cells scored, {st.unscored:,} without a champion, "
              f"{st.incomplete:,} incomplete, in {st.batches:,} batches; {scorer.visits.warmed:,} upstream visit "
              f"streams summed ahead of the gate")


@app.command()
def health(
    port: Annotated[int | None, typer.Option(min=1, max=65_535, help="The worker's health port (env "
                                                                   "GIGAPULSE_STREAM_HEALTH_PORT).")] = None,
    host: Annotated[str, typer.Option(help="Where the worker runs.")] = "127.0.0.1",
    live: Annotated[bool, typer.Option("--live", help="Only check liveness (the worker runs, no checkpoint "
                                                      "failed), not readiness.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole /status document.")] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait for the answer.")] = 5.0,
):
    """Ask a stream worker's health endpoint (see docs/stream.md, Health); exit 0 if it is ready (or live), 1 if not.

    The docker-compose healthcheck of the stream workers; prints one line: state, partitions, lag, last
    checkpoint and dead letters by reason.
    """
    from gigapulse.cli.common import fetch_status
    from transforms.health import summary_line
    from transforms.settings import StreamSettings

    port = port or StreamSettings().health_port
    if port is None:
        raise UserError("no health port: give --port or set GIGAPULSE_STREAM_HEALTH_PORT (as the worker has it)")
    _, doc = fetch_status(host, port, "stream worker", timeout)
    if as_json:
        print(json.dumps(doc, indent=2))
    else:
        print(summary_line(doc))
    if not (doc.get("live") if live else doc.get("ready")):
        raise typer.Exit(1)


@app.command()
def warehouse(
):
    """Publish the DuckDB catalog of the lake's current compaction generation (views and macros).

    Built in a new file and renamed over the old one, so readers never wait; `gigapulse lake compact`
    does this too after each step. Needed once on a new lake, and after the sensors table's first file.
    """
    from transforms.settings import DataSettings
    from transforms.warehouse import build_catalog

    data = DataSettings()
    views = build_catalog(data.lake_root, data.db_path)
    for name, kind in views.items():
        out.print(f"{name:24s} {kind}")
    out.print(f"catalog: {data.db_path}")
