"""The benchmark harness behind ``gigapulse bench ingest|stream|freshness|recovery|warehouse``.

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

One module per concern: :mod:`~gigapulse.bench.report` (spread, markdown, environment, JSON),
:mod:`~gigapulse.bench.harness` (private broker, topics, measured children),
:mod:`~gigapulse.bench.workloads` (the ingest path into bench topics), one module per bench, and
:mod:`~gigapulse.bench.peers`. The warehouse bench needs no broker: :mod:`~gigapulse.bench.lakebuild`
feeds the simulator straight into the stream's partition processors, and its peers (chDB, Polars,
a naive DuckDB) are in :mod:`~gigapulse.bench.warehouse_peers`. The names the CLI uses are re-exported here.
"""


from gigapulse.bench.bridges import BridgeBenchOptions, run_bridges
from gigapulse.bench.freshness import FreshnessOptions, run_freshness
from gigapulse.bench.harness import BenchError
from gigapulse.bench.ingest import IngestOptions, run_ingest
from gigapulse.bench.recovery import RecoveryOptions, run_recovery
from gigapulse.bench.report import TARGETS, emit
from gigapulse.bench.stream import StreamOptions, run_stream
from gigapulse.bench.warehouse import WarehouseOptions, run_warehouse

__all__ = ["TARGETS", "BenchError", "BridgeBenchOptions", "FreshnessOptions", "IngestOptions", "RecoveryOptions", "StreamOptions",
           "WarehouseOptions", "emit", "run_bridges", "run_freshness", "run_ingest", "run_recovery", "run_stream", "run_warehouse"]
