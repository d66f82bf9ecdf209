"""A single-node Apache Kafka (KRaft) broker, or a cluster of N such nodes, fetched from Maven Central and
run on loopback.

No Docker engine is assumed: Maven resolves the broker's jars (``infra/kafka/pom.xml``) into a
git-ignored cache once, and the broker runs as ``java -cp 'libs/*' kafka.Kafka``. The process is
started in its own session so it survives the CLI that launched it; a JSON pid file in the data
directory records pid and ports so ``status`` and ``stop`` can find it, and a stale pid file (the
process is gone, or the pid now belongs to something else) is recovered rather than trusted. A cluster
(``nodes=3``) is three combined broker+controller processes, one directory each under the data directory,
listed together in that one pid file (docs/cluster.md).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from infra import security
from infra.security import BrokerSecuritySettings
from ingestion.security import KafkaSecuritySettings, kafka_python_kwargs

REPO_ROOT = Path(__file__).resolve().parent.parent
POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
KAFKA_VERSION = "4.4.0"
MAIN_CLASS = "kafka.Kafka"


class BrokerError(RuntimeError):
    """A broker operation failed; the message is one line a user can act on."""


class BrokerSettings(BaseSettings):
    """Where and how the local broker runs. Environment: ``GIGAPULSE_BROKER_*``."""

    model_config = SettingsConfigDict(env_prefix="GIGAPULSE_BROKER_", frozen=True)

    host: str = Field("127.0.0.1", description="Loopback address to listen on.")
    port: int = Field(9092, ge=1, le=65535, description="Client listener port (of node 1 on a cluster).")
    controller_port: int = Field(9093, ge=1, le=65535, description="KRaft controller listener port (of node 1).")
    nodes: int = Field(1, ge=1, le=9, description="Broker+controller processes: 1, or 3 for a cluster that "
                                                  "survives the loss of any one node. Node n listens on "
                                                  "port + 2(n-1) and controller_port + 2(n-1).")
    data_dir: Path = Field(REPO_ROOT / "var" / "kafka", description="Log dirs, config, pid file, broker.log.")
    cache_dir: Path = Field(REPO_ROOT / ".cache" / "kafka", description="Where Maven copies Kafka's jars.")
    heap: str = Field("512m", description="JVM heap (-Xmx) of each node.")
    start_timeout_s: float = Field(90.0, gt=0)
    default_partitions: int = Field(3, ge=1, description="num.partitions for auto-created topics.")

    @property
    def node_list(self) -> tuple[Node, ...]:
        """The nodes of this broker or cluster; a single node keeps the layout it always had."""
        if self.nodes == 1:
            return (Node(1, self.port, self.controller_port, self.data_dir),)
        return tuple(Node(i, self.port + NODE_PORT_STEP * (i - 1), self.controller_port + NODE_PORT_STEP * (i - 1),
                          self.data_dir / f"node-{i}") for i in range(1, self.nodes + 1))

    def node(self, node_id: int) -> Node:
        for n in self.node_list:
            if n.node_id == node_id:
                return n
        raise BrokerError(f"no node {node_id}: this broker has nodes 1..{self.nodes}")

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{self.host}:{n.port}" for n in self.node_list)

    @property
    def replication_factor(self) -> int:
        """Replicas of every topic: all nodes, up to three."""
        return min(3, self.nodes)

    @property
    def min_insync_replicas(self) -> int:
        """With three replicas an acks=all write needs two: one node may be down without stopping producers,
        and an acknowledged write is on two disks before the producer hears of it."""
        return 2 if self.replication_factor >= 3 else 1

    @property
    def libs_dir(self) -> Path:
        return self.cache_dir / KAFKA_VERSION / "libs"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"


#: Node n of a cluster listens on port + 2(n-1): with the defaults 9092/9093, 9094/9095 and 9096/9097.
NODE_PORT_STEP = 2


@dataclass(frozen=True)
class Node:
    """One broker+controller process: its id, ports and directory (config, log dirs, broker.log)."""

    node_id: int
    port: int
    controller_port: int
    dir: Path

    @property
    def log_dirs(self) -> Path:
        return self.dir / "logs"

    @property
    def props_file(self) -> Path:
        return self.dir / "server.properties"

    @property
    def log_file(self) -> Path:
        return self.dir / "broker.log"


@dataclass(frozen=True)
class NodeStatus:
    """One node of ``gigapulse broker status``."""

    node_id: int
    pid: int | None
    port: int
    controller_port: int


@dataclass(frozen=True)
class BrokerStatus:
    """What ``gigapulse broker status`` reports."""

    running: bool
    pid: int | None
    bootstrap: str
    controller_port: int
    data_dir: Path
    topics: tuple[str, ...] = ()
    nodes: tuple[NodeStatus, ...] = ()


def _need(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise BrokerError(f"'{tool}' was not found on PATH: {hint}")
    return path


def fetch_jars(settings: BrokerSettings, quiet: bool = True) -> Path:
    """Resolve Kafka's jars with Maven once; later calls find the cache and return at once."""
    marker = settings.libs_dir / ".complete"
    if marker.exists():
        return settings.libs_dir
    _need("java", "install OpenJDK 17 or newer (Debian: apt-get install openjdk-17-jre-headless)")
    mvn = _need("mvn", "install Apache Maven (Debian: apt-get install maven)")
    tmp = settings.libs_dir.with_name("libs.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cmd = [mvn, "-B", "-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={tmp}",
           "-DincludeScope=runtime", f"-Dkafka.version={KAFKA_VERSION}"]
    if quiet:
        cmd.insert(1, "-q")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        raise BrokerError(f"Maven could not fetch Kafka {KAFKA_VERSION}: {' | '.join(tail)}")
    if settings.libs_dir.exists():
        shutil.rmtree(settings.libs_dir)
    tmp.rename(settings.libs_dir)
    marker.touch()
    return settings.libs_dir


def _cluster_id() -> str:
    """A KRaft cluster id: a random UUID as 22 characters of unpadded base64url."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cid.startswith("-"):  # the storage tool would read a leading '-' as an option
            return cid


def node_properties(settings: BrokerSettings, node: Node | None = None) -> dict[str, str]:
    """The broker+controller config of one node, as a dict (other fragments, e.g. security, merge into it).

    A single node keeps the config it always had. On a cluster every node is a voter of a static quorum of
    all nodes, every topic (the internal ones too) gets three replicas of which two must acknowledge a
    write, and an out-of-sync replica never becomes leader: losing acknowledged data is not an option.
    """
    node = node or settings.node_list[0]
    h, p, c = settings.host, node.port, node.controller_port
    voters = ",".join(f"{n.node_id}@{h}:{n.controller_port}" for n in settings.node_list)
    rf, isr = str(settings.replication_factor), str(settings.min_insync_replicas)
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://{h}:{p},CONTROLLER://{h}:{c}",
        "advertised.listeners": f"PLAINTEXT://{h}:{p}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(node.log_dirs),
        "num.partitions": str(settings.default_partitions),
        "offsets.topic.replication.factor": rf,
        "offsets.topic.num.partitions": "6",
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": isr,
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": isr,
        "group.initial.rebalance.delay.ms": "0",
        # Our workers' session timeout is 4 s (GIGAPULSE_STREAM_SESSION_TIMEOUT_S), so that a dead worker's
        # partitions move on within seconds; Kafka's floor is 6 s. A handful of workers heartbeating
        # every second costs the broker nothing.
        "group.min.session.timeout.ms": "2000",
        "auto.create.topics.enable": "true",
        "message.max.bytes": "4194304",
        "log.retention.check.interval.ms": "60000",
    }
    if settings.nodes > 1:
        props.update({
            "default.replication.factor": rf,
            "min.insync.replicas": isr,
            "unclean.leader.election.enable": "false",
            # A restarted node takes its leaderships back soon, so load spreads again after a roll.
            "leader.imbalance.check.interval.seconds": "30",
        })
    return props


def server_properties(settings: BrokerSettings, node: Node | None = None,
                      overrides: dict[str, str] | None = None) -> str:
    """``node_properties`` as the text of a server.properties file; ``overrides`` (the security settings'
    listeners, SASL and authorizer, :mod:`infra.security`) replace or add properties."""
    return "".join(f"{k}={v}\n" for k, v in {**node_properties(settings, node), **(overrides or {})}.items())


def _read_pid(settings: BrokerSettings) -> dict[int, dict]:
    """Node id -> {"pid", "port", "controller_port"} as the pid file records them.

    A single node's file keeps its old flat shape; a cluster's lists its nodes under ``"nodes"``.
    """
    try:
        info = json.loads(settings.pid_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    if "nodes" in info:
        return {int(k): v for k, v in info["nodes"].items()}
    return {1: info} if "pid" in info else {}


def as_recorded(settings: BrokerSettings) -> BrokerSettings:
    """``settings`` with the node count and ports its data dir's pid file records, so that ``stop`` and
    ``status`` find a cluster without being told ``--nodes`` again (no pid file: unchanged)."""
    entries = _read_pid(settings)
    nodes = len(entries) if "nodes" in _raw_pid(settings) else 1
    if not entries or 1 not in entries:
        return settings
    first = entries[1]
    return settings.model_copy(update={"nodes": nodes, "port": int(first.get("port", settings.port)),
                                       "controller_port": int(first.get("controller_port", settings.controller_port))})


def _raw_pid(settings: BrokerSettings) -> dict:
    try:
        return json.loads(settings.pid_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _write_pid(settings: BrokerSettings, entries: dict[int, dict]) -> None:
    if settings.nodes == 1:
        settings.pid_file.write_text(json.dumps(entries[1]))
    else:
        settings.pid_file.write_text(json.dumps({"nodes": {str(k): v for k, v in sorted(entries.items())}}))


def _is_our_node(pid: int, node: Node) -> bool:
    """True if ``pid`` is a live Kafka process running ``node``'s config (a reused pid is not)."""
    try:
        proc = psutil.Process(pid)
        cmd = proc.cmdline()
        return proc.status() != psutil.STATUS_ZOMBIE and MAIN_CLASS in cmd and cmd[-1] == str(node.props_file)
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError, IndexError):
        return False


def node_pid(settings: BrokerSettings, node_id: int = 1) -> int | None:
    """The pid of one node if it runs (the pid file's entry is checked against the process)."""
    entry = _read_pid(settings).get(node_id)
    if entry and _is_our_node(int(entry.get("pid", -1)), settings.node(node_id)):
        return int(entry["pid"])
    return None


def _live_pids(settings: BrokerSettings) -> dict[int, int]:
    """Node id -> pid of the nodes that run; a pid file none of whose nodes runs is removed as stale."""
    live = {n.node_id: pid for n in settings.node_list if (pid := node_pid(settings, n.node_id)) is not None}
    if not live:
        settings.pid_file.unlink(missing_ok=True)
    return live


def _live_broker_pid(settings: BrokerSettings) -> int | None:
    """The pid of our (first live) broker node if one still runs; a stale pid file is removed."""
    live = _live_pids(settings)
    return next(iter(live.values()), None)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def _log_tail(path: Path, n: int = 5) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except FileNotFoundError:
        return "(no log)"
    errors = [ln for ln in lines if "ERROR" in ln or "Exception" in ln]
    return " | ".join((errors or lines)[-n:])[:600]


def _jvm(settings: BrokerSettings, java: str, libs: Path) -> list[str]:
    log4j = settings.data_dir / "log4j2.properties"
    log4j.write_text(
        "rootLogger.level=INFO\nrootLogger.appenderRef.out.ref=OUT\n"
        "appender.out.type=Console\nappender.out.name=OUT\nappender.out.layout.type=PatternLayout\n"
        "appender.out.layout.pattern=[%d] %p %m (%c)%n\n"
        "logger.kafka.name=kafka\nlogger.kafka.level=WARN\nlogger.apache.name=org.apache.kafka\n"
        "logger.apache.level=WARN\n"
    )
    return [java, f"-Xmx{settings.heap}", f"-Xms{settings.heap}", "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{libs}/*"]


def _format(settings: BrokerSettings, jvm: list[str], nodes: list[Node], extra: list[str]) -> None:
    """Format the storage of the nodes that have none, all with the cluster's id (a new one if no node has it).

    The formatting JVMs run side by side: on a busy machine each one takes seconds to start.
    """
    todo = [n for n in nodes if not (n.log_dirs / "meta.properties").exists()]
    if not todo:
        return
    cid = next((m.group(1) for n in settings.node_list if (n.log_dirs / "meta.properties").exists()
                for m in [re.search(r"^cluster\.id=(\S+)", (n.log_dirs / "meta.properties").read_text(), re.M)]
                if m), None) or _cluster_id()
    procs = [subprocess.Popen([*jvm, "kafka.tools.StorageTool", "format", "-t", cid, "-c", str(n.props_file), *extra],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for n in todo]
    fails = [out for p in procs if (out := p.communicate()[0]) is not None and p.returncode != 0]
    if fails:
        raise BrokerError(f"formatting KRaft storage failed: {fails[0].strip()[-300:]}")


def start(settings: BrokerSettings, sec: BrokerSecuritySettings | None = None) -> BrokerStatus:
    """Start the broker or cluster (fetching jars and formatting storage on first use) and wait until it serves.

    A second start while it runs is harmless and returns its status; on a cluster where some nodes run,
    only the missing ones are started (that is how a node killed by a test comes back). ``sec`` (default:
    from the environment) switches on authentication and ACLs (:mod:`infra.security`).
    """
    sec = sec or BrokerSecuritySettings()
    ports = [p for n in settings.node_list for p in (n.port, n.controller_port)]
    if len(set(ports)) != len(ports):
        raise BrokerError(f"the nodes' ports overlap ({sorted(ports)}): node n listens on port + "
                          f"{NODE_PORT_STEP}(n-1) and controller_port + {NODE_PORT_STEP}(n-1); "
                          "set GIGAPULSE_BROKER_CONTROLLER_PORT farther from GIGAPULSE_BROKER_PORT")
    live = _live_pids(settings)
    missing = [n for n in settings.node_list if n.node_id not in live]
    if not missing:
        return status(settings, sec)
    java = _need("java", "install OpenJDK 17 or newer (Debian: apt-get install openjdk-17-jre-headless)")
    for n in missing:
        for port in (n.port, n.controller_port):
            if port_open(settings.host, port):
                raise BrokerError(f"port {port} on {settings.host} is already in use by another process; "
                                  "set GIGAPULSE_BROKER_PORT / GIGAPULSE_BROKER_CONTROLLER_PORT")
    libs = fetch_jars(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        client = security.admin_client(sec, settings.data_dir, settings.host)
        overrides = {n.node_id: security.server_overrides(sec, settings.host, n.port, n.controller_port,
                                                          settings.data_dir) for n in missing}
    except security.SecurityError as exc:
        raise BrokerError(str(exc)) from None
    for n in missing:
        n.dir.mkdir(parents=True, exist_ok=True)
        n.props_file.unlink(missing_ok=True)  # it may hold the admin password: readable by its owner only
        n.props_file.touch(mode=0o600)
        n.props_file.write_text(server_properties(settings, n, overrides[n.node_id]))
    jvm = _jvm(settings, java, libs)
    _format(settings, jvm, missing, security.format_args(sec))
    procs: dict[int, subprocess.Popen] = {}
    for n in missing:
        with open(n.log_file, "ab") as log:
            procs[n.node_id] = subprocess.Popen([*jvm, MAIN_CLASS, str(n.props_file)], stdout=log,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                start_new_session=True)
    entries = {k: v for k, v in _read_pid(settings).items() if k in live}
    for n in missing:
        entries[n.node_id] = {"pid": procs[n.node_id].pid, "port": n.port, "controller_port": n.controller_port}
    _write_pid(settings, entries)
    deadline = time.monotonic() + settings.start_timeout_s
    while time.monotonic() < deadline:
        for node_id, proc in procs.items():
            if proc.poll() is not None:
                if len(missing) == settings.nodes:
                    stop(settings)
                else:
                    _write_pid(settings, {k: v for k, v in entries.items() if k != node_id})
                raise BrokerError(f"broker node {node_id} exited with code {proc.returncode}: "
                                  f"{_log_tail(settings.node(node_id).log_file)}")
        if _serves_metadata(settings, missing, client):
            try:
                security.apply_acls(sec, settings.bootstrap, settings.data_dir, settings.host)
            except Exception as exc:  # noqa: BLE001 - a broker without its ACLs is of no use: report, stop it
                stop(settings)
                raise BrokerError(f"applying the role ACLs failed: {exc}") from None
            return status(settings, sec)
        time.sleep(0.3)
    stop(settings)
    raise BrokerError(f"broker did not accept connections within {settings.start_timeout_s:.0f}s: "
                      f"{_log_tail(missing[0].log_file)}")


def _serves_metadata(settings: BrokerSettings, started: list[Node], client: KafkaSecuritySettings | None = None
                     ) -> bool:
    """A single node: it answers a metadata request. A cluster: each node just started answers one itself, with
    every node registered (asking the others would count a node killed moments ago as still there)."""
    if settings.nodes == 1:
        if not port_open(settings.host, settings.port):
            return False
        try:
            list_topics(settings.bootstrap, timeout_ms=3000, security=client)
            return True
        except Exception:  # noqa: BLE001 - any client failure means "not ready yet" while we poll
            return False
    # Only ask a node whose port is open: a client bootstrapping from a closed port backs off for many seconds.
    return all(port_open(settings.host, n.port) for n in started) and all(
        len(cluster_brokers(f"{settings.host}:{n.port}", timeout_ms=3000, security=client)) == settings.nodes
        for n in started)


def cluster_brokers(bootstrap: str, timeout_ms: int = 10_000, security: KafkaSecuritySettings | None = None
                    ) -> list[int]:
    """Ids of the brokers the cluster's metadata lists (empty when no node answers)."""
    from kafka import KafkaAdminClient

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms,
                                 client_id="gigapulse-status", **kafka_python_kwargs(security))
    except Exception:  # noqa: BLE001 - no node answers yet
        return []
    try:
        return sorted(int(b["node_id"] if "node_id" in b else b["broker_id"])
                      for b in admin.describe_cluster()["brokers"])
    except Exception:  # noqa: BLE001 - not ready yet
        return []
    finally:
        admin.close()


def list_topics(bootstrap: str, timeout_ms: int = 10_000, security: KafkaSecuritySettings | None = None) -> list[str]:
    """Topic names on the cluster (internal topics left out); ``security``: as whom (default: this process)."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms,
                             client_id="gigapulse-status", **kafka_python_kwargs(security))
    try:
        return sorted(t for t in admin.list_topics() if not t.startswith("__"))
    finally:
        admin.close()


def group_session_bounds(bootstrap: str, timeout_ms: int = 10_000) -> tuple[int, int] | None:
    """The session timeouts (ms) the cluster accepts from a group member, or None if it won't say.

    A member whose session is outside ``group.min/max.session.timeout.ms`` is refused at join, and
    Faust then waits forever without consuming; asking first turns that into a one-line error.
    Best effort: a cluster that denies DescribeConfigs is not checked.
    """
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    keys = ("group.min.session.timeout.ms", "group.max.session.timeout.ms")
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms,
                                 client_id="gigapulse-preflight", **kafka_python_kwargs())
    except Exception:  # noqa: BLE001 - the worker's own connection reports an unreachable broker
        return None
    try:
        ids = [str(b["broker_id"]) for b in admin.describe_cluster()["brokers"]]
        found = admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, i, dict.fromkeys(keys))
                                        for i in ids], config_filter="all")["broker"]
        lows = [int(found[i][keys[0]]["value"]) for i in ids]
        highs = [int(found[i][keys[1]]["value"]) for i in ids]
        return max(lows), min(highs)
    except Exception:  # noqa: BLE001 - not authorized, an old broker: skip the check
        return None
    finally:
        admin.close()


def _terminate(pids: list[int], timeout_s: float) -> None:
    """SIGTERM every pid at once (controlled shutdowns overlap), then SIGKILL what is left after ``timeout_s``."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for pid in pids:
        try:
            psutil.Process(pid).wait(max(0.1, deadline - time.monotonic()))
        except psutil.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).wait(10)
        except psutil.NoSuchProcess:
            pass


def stop(settings: BrokerSettings, timeout_s: float = 30.0) -> bool:
    """Stop the broker or every node of the cluster (SIGTERM, then SIGKILL after ``timeout_s``).

    False if none was running.
    """
    live = _live_pids(settings)
    if not live:
        return False
    _terminate(list(live.values()), timeout_s)
    settings.pid_file.unlink(missing_ok=True)
    return True


def status(settings: BrokerSettings, sec: BrokerSecuritySettings | None = None) -> BrokerStatus:
    """Whether our broker runs (any node of a cluster), its pids and ports, and its topics when it answers
    (asked as the admin)."""
    live = _live_pids(settings)
    topics: tuple[str, ...] = ()
    if live:
        with contextlib.suppress(Exception):
            client = security.admin_client(sec or BrokerSecuritySettings(), settings.data_dir, settings.host)
            topics = tuple(list_topics(settings.bootstrap, timeout_ms=5000, security=client))
    nodes = tuple(NodeStatus(n.node_id, live.get(n.node_id), n.port, n.controller_port) for n in settings.node_list)
    return BrokerStatus(bool(live), next(iter(live.values()), None), settings.bootstrap, settings.controller_port,
                        settings.data_dir, topics, nodes)


def apply_catalog(settings: BrokerSettings, sec: BrokerSecuritySettings | None = None) -> None:
    """Apply the topic catalog with this broker's replication (RF 1 on one node; RF 3 and min ISR 2 on a
    cluster), as its admin when security is on."""
    from ingestion.topics import apply_topics

    apply_topics(settings.bootstrap, replication_factor=settings.replication_factor,
                 min_insync_replicas=settings.min_insync_replicas if settings.nodes > 1 else None,
                 security=security.admin_client(sec or BrokerSecuritySettings(), settings.data_dir, settings.host))
