"""A single-node Apache Kafka (KRaft) broker fetched from Maven Central and run on loopback.

No Docker engine is assumed: Maven resolves the broker's jars (``infra/kafka/pom.xml``) into a
git-ignored cache once, and the broker runs as ``java -cp 'libs/*' kafka.Kafka``. The process is
started in its own session so it survives the CLI that launched it; a JSON pid file in the data
directory records pid and ports so ``status`` and ``stop`` can find it, and a stale pid file (the
process is gone, or the pid now belongs to something else) is recovered rather than trusted.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
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
    port: int = Field(9092, ge=1, le=65535, description="Client listener port.")
    controller_port: int = Field(9093, ge=1, le=65535, description="KRaft controller listener port.")
    data_dir: Path = Field(REPO_ROOT / "var" / "kafka", description="Log dirs, config, pid file, broker.log.")
    cache_dir: Path = Field(REPO_ROOT / ".cache" / "kafka", description="Where Maven copies Kafka's jars.")
    heap: str = Field("512m", description="JVM heap (-Xmx).")
    start_timeout_s: float = Field(90.0, gt=0)
    default_partitions: int = Field(3, ge=1, description="num.partitions for auto-created topics.")

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def libs_dir(self) -> Path:
        return self.cache_dir / KAFKA_VERSION / "libs"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"


@dataclass(frozen=True)
class BrokerStatus:
    """What ``gigapulse broker status`` reports."""

    running: bool
    pid: int | None
    bootstrap: str
    controller_port: int
    data_dir: Path
    topics: tuple[str, ...] = ()


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


def server_properties(settings: BrokerSettings, overrides: dict[str, str] | None = None) -> str:
    """The broker+controller config of a one-node KRaft cluster on loopback; ``overrides`` (the security
    settings' listeners, SASL and authorizer, :mod:`infra.security`) replace or add properties."""
    h, p, c = settings.host, settings.port, settings.controller_port
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{h}:{c}",
        "listeners": f"PLAINTEXT://{h}:{p},CONTROLLER://{h}:{c}",
        "advertised.listeners": f"PLAINTEXT://{h}:{p}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(settings.data_dir / "logs"),
        "num.partitions": str(settings.default_partitions),
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "6",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Our workers' session timeout is 4 s (GIGAPULSE_STREAM_SESSION_TIMEOUT_S), so that a dead worker's
        # partitions move on within seconds; Kafka's floor is 6 s. A handful of workers heartbeating
        # every second costs the broker nothing.
        "group.min.session.timeout.ms": "2000",
        "auto.create.topics.enable": "true",
        "message.max.bytes": "4194304",
        "log.retention.check.interval.ms": "60000",
    }
    props.update(overrides or {})
    return "".join(f"{k}={v}\n" for k, v in props.items())


def _read_pid(settings: BrokerSettings) -> dict | None:
    try:
        return json.loads(settings.pid_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _live_broker_pid(settings: BrokerSettings) -> int | None:
    """The pid of our broker if it still runs; a stale pid file is removed."""
    info = _read_pid(settings)
    if not info:
        if settings.pid_file.exists():
            settings.pid_file.unlink()
        return None
    pid = int(info.get("pid", -1))
    try:
        proc = psutil.Process(pid)
        cmd = proc.cmdline()
        if proc.status() != psutil.STATUS_ZOMBIE and MAIN_CLASS in cmd and str(settings.data_dir) in " ".join(cmd):
            return pid
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        pass
    settings.pid_file.unlink(missing_ok=True)
    return None


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def _log_tail(settings: BrokerSettings, n: int = 5) -> str:
    try:
        lines = [ln for ln in settings.log_file.read_text(errors="replace").splitlines() if ln.strip()]
    except FileNotFoundError:
        return "(no log)"
    errors = [ln for ln in lines if "ERROR" in ln or "Exception" in ln]
    return " | ".join((errors or lines)[-n:])[:600]


def start(settings: BrokerSettings, sec: BrokerSecuritySettings | None = None) -> BrokerStatus:
    """Start the broker (fetching jars and formatting storage on first use) and wait until it serves.

    A second start while it runs is harmless and returns its status. ``sec`` (default: from the
    environment) switches on authentication and ACLs (:mod:`infra.security`).
    """
    sec = sec or BrokerSecuritySettings()
    pid = _live_broker_pid(settings)
    if pid is not None:
        return status(settings, sec)
    java = _need("java", "install OpenJDK 17 or newer (Debian: apt-get install openjdk-17-jre-headless)")
    for port in (settings.port, settings.controller_port):
        if port_open(settings.host, port):
            raise BrokerError(f"port {port} on {settings.host} is already in use by another process; "
                              "set GIGAPULSE_BROKER_PORT / GIGAPULSE_BROKER_CONTROLLER_PORT")
    libs = fetch_jars(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    props = settings.data_dir / "server.properties"
    try:
        overrides = security.server_overrides(sec, settings.host, settings.port, settings.controller_port,
                                              settings.data_dir)
        client = security.admin_client(sec, settings.data_dir, settings.host)
    except security.SecurityError as exc:
        raise BrokerError(str(exc)) from None
    props.unlink(missing_ok=True)  # it may hold the admin password: created readable by its owner only
    props.touch(mode=0o600)
    props.write_text(server_properties(settings, overrides))
    log4j = settings.data_dir / "log4j2.properties"
    log4j.write_text(
        "rootLogger.level=INFO\nrootLogger.appenderRef.out.ref=OUT\n"
        "appender.out.type=Console\nappender.out.name=OUT\nappender.out.layout.type=PatternLayout\n"
        "appender.out.layout.pattern=[%d] %p %m (%c)%n\n"
        "logger.kafka.name=kafka\nlogger.kafka.level=WARN\nlogger.apache.name=org.apache.kafka\n"
        "logger.apache.level=WARN\n"
    )
    jvm = [java, f"-Xmx{settings.heap}", f"-Xms{settings.heap}", "-XX:+UseG1GC",
           f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{libs}/*"]
    if not (settings.data_dir / "logs" / "meta.properties").exists():
        fmt = subprocess.run([*jvm, "kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(props),
                              *security.format_args(sec)],
                             capture_output=True, text=True)
        if fmt.returncode != 0:
            raise BrokerError(f"formatting KRaft storage failed: {(fmt.stdout + fmt.stderr).strip()[-300:]}")
    with open(settings.log_file, "ab") as log:
        proc = subprocess.Popen([*jvm, MAIN_CLASS, str(props)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    settings.pid_file.write_text(json.dumps({"pid": proc.pid, "port": settings.port,
                                             "controller_port": settings.controller_port}))
    deadline = time.monotonic() + settings.start_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            settings.pid_file.unlink(missing_ok=True)
            raise BrokerError(f"broker exited with code {proc.returncode}: {_log_tail(settings)}")
        if port_open(settings.host, settings.port) and _serves_metadata(settings, client):
            try:
                security.apply_acls(sec, settings.bootstrap, settings.data_dir, settings.host)
            except Exception as exc:  # noqa: BLE001 - a broker without its ACLs is of no use: report, stop it
                stop(settings)
                raise BrokerError(f"applying the role ACLs failed: {exc}") from None
            return status(settings, sec)
        time.sleep(0.3)
    stop(settings)
    raise BrokerError(f"broker did not accept connections within {settings.start_timeout_s:.0f}s: "
                      f"{_log_tail(settings)}")


def _serves_metadata(settings: BrokerSettings, client: KafkaSecuritySettings | None = None) -> bool:
    try:
        list_topics(settings.bootstrap, timeout_ms=3000, security=client)
        return True
    except Exception:  # noqa: BLE001 - any client failure means "not ready yet" while we poll
        return False


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


def stop(settings: BrokerSettings, timeout_s: float = 30.0) -> bool:
    """Stop the broker (SIGTERM, then SIGKILL after ``timeout_s``); False if none was running."""
    pid = _live_broker_pid(settings)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    try:
        psutil.Process(pid).wait(timeout_s)
    except psutil.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).wait(10)
    except psutil.NoSuchProcess:
        pass
    settings.pid_file.unlink(missing_ok=True)
    return True


def status(settings: BrokerSettings, sec: BrokerSecuritySettings | None = None) -> BrokerStatus:
    """Whether our broker runs, its pid and ports, and its topics when it answers (asked as the admin)."""
    pid = _live_broker_pid(settings)
    topics: tuple[str, ...] = ()
    if pid is not None:
        with contextlib.suppress(Exception):
            client = security.admin_client(sec or BrokerSecuritySettings(), settings.data_dir, settings.host)
            topics = tuple(list_topics(settings.bootstrap, timeout_ms=5000, security=client))
    return BrokerStatus(pid is not None, pid, settings.bootstrap, settings.controller_port,
                        settings.data_dir, topics)
