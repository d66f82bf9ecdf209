"""The OPC UA bridge: subscribe to a server's sensor variables and hand every data change to the sink.

What it reads: either a configured list of node ids or every Variable under a browse root (an
ISA-95 folder path such as ``ref/electrode/L1`` below Objects, or a node id), following hierarchical
references within the site's namespace only (``urn:gigapulse:<site>``, so the server's own
diagnostics are never walked). Each node maps to a sensor by the address scheme: a string node id
in the site's namespace whose identifier is a sensor id of the plant. A node that maps to no sensor
is **reported once per session and not subscribed** (a warning naming the first few, and the
``unmapped`` counter): it is a configuration mistake, and dead-lettering each of its changes would
only repeat the same message at the sampling rate.

How: one subscription (publishing interval configurable) with monitored items created in batches
(``batch_size``, 500 by default, one CreateMonitoredItems call each), a queue per item so a burst of
samples between two publishes is delivered whole, and the data change trigger Status+Value+Timestamp,
so a sensor that repeats a value with a new source time is still a sample.

Each change becomes ``sink.reading(sensor, source time, value, quality)`` with the status code's
severity as quality (Good 0, Uncertain 1, Bad 2). A Bad status comes without a value (OPC UA Part 4,
7.7.1: the server sets it to null, as asyncua does): that is a gap (reason ``source_error``, naming
the status; never an invented value) and the sensor is marked bad from that time (``sink.mark_bad``:
its last value again with quality bad, or nothing if it never had one) until its next good value.
A Bad status that still carries a number (some servers send one) is a reading with quality 2.
BadWaitingForInitialData (a node that has not had a value yet) is only counted; a value that is not
a number is a dead letter ``wrong_type`` with the value's text as payload.

Connection loss (the server stops, the network drops, the watchdog's probe times out): the sensors of
the lost session are marked bad (``sink.mark_bad``: their last value again, with quality bad, stamped
with the time of the loss), as OPC UA clients show the last value with a Bad status while a
connection is down; the next good value after reconnecting ends it. Then the bridge reconnects
with exponential backoff (``reconnect_initial_s`` doubling up to ``reconnect_max_s``), creating a new
session, resolving the nodes again (a restarted server may have other namespace indexes) and
subscribing again; the new monitored items deliver each node's current value first (dropped, and
counted as ``repeats``, when it is the very sample already passed on before the loss), then every
change. Changes made while no session existed are not recovered (the server keeps no history
for us); a session that survives a short network drop is not reused either, which keeps one path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, NamedTuple, Protocol

from asyncua import Client, ua
from asyncua.crypto import security_policies
from pydantic import SecretStr

from ingestion.bridges.config import BridgeConfigError, OpcUaConfig
from schemas.addresses import opcua_namespace_uri
from schemas.asset_model import Plant
from schemas.contracts import Reason

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = 1_000  # microseconds per millisecond


class OpcUaConfigError(BridgeConfigError):
    """What the configuration points to is not there (an unset environment variable, a browse root the
    server lacks, a certificate without an application URI): one line naming the field."""


class OpcUaRefused(OpcUaConfigError):
    """The server refused the bridge's first session for a reason retrying cannot fix (certificate,
    security mode or policy, identity): one line saying why, instead of retrying forever."""


class ReadingSink(Protocol):
    """What the bridge needs of :class:`ingestion.bridges.sink.BridgeSink`."""

    def reading(self, sensor_id: str, ts_ms: int, value: float, quality: int = 0) -> None: ...
    def reject(self, reason: Reason, detail: str, payload: bytes = b"", key: str | None = None) -> None: ...
    def gap(self, sensor_ids: list[str], ts_ms: int, reason: Reason, detail: str, payload: bytes = b"") -> None: ...
    def mark_bad(self, sensor_ids: list[str], ts_ms: int) -> None: ...


@dataclass(frozen=True)
class Credentials:
    """A user name and password read at start-up; the password never reaches a log or a repr."""

    username: str
    password: SecretStr | None


def read_credentials(cfg: OpcUaConfig, env: dict[str, str] | None = None) -> Credentials | None:
    """The credentials the settings point to, from the environment or a secret file."""
    env = dict(os.environ) if env is None else env
    if not cfg.username_env:
        return None
    user = env.get(cfg.username_env)
    if not user:
        raise OpcUaConfigError(f"username_env: environment variable {cfg.username_env} is not set")
    password: str | None = None
    if cfg.password_env:
        password = env.get(cfg.password_env)
        if password is None:
            raise OpcUaConfigError(f"password_env: environment variable {cfg.password_env} is not set")
    elif cfg.password_file:
        try:
            password = Path(cfg.password_file).read_text().rstrip("\r\n")
        except OSError as exc:
            raise OpcUaConfigError(f"password_file: cannot read {cfg.password_file} "
                                   f"({exc.strerror or exc})") from None
    return Credentials(user, SecretStr(password) if password is not None else None)


# --------------------------------------------------------------------------- the address scheme, pure

def quality_of(status: ua.StatusCode | int | None) -> int:
    """A status code's severity as a quality code: Good 0, Uncertain 1, Bad 2 (and the reserved 11: bad)."""
    value = 0 if status is None else (status.value if isinstance(status, ua.StatusCode) else int(status))
    severity = (value >> 30) & 0b11
    return 0 if severity == 0 else 1 if severity == 1 else 2


def sensor_for_node(node: ua.NodeId, site_ns: int, sensor_ids) -> str | None:
    """The sensor a node id stands for by the scheme (``ns=<site ns>;s=<sensor_id>``), or None."""
    ident = node.Identifier
    if node.NamespaceIndex != site_ns or not isinstance(ident, str) or ident not in sensor_ids:
        return None
    return ident


def parse_node_id(text: str, namespaces: list[str]) -> ua.NodeId | None:
    """A configured node id (``ns=2;s=...`` or ``nsu=<uri>;s=...``) against the server's namespace array.

    None when its namespace URI is not on the server; ValueError when the text is no node id.
    """
    try:
        nid = ua.NodeId.from_string(text)
    except Exception:  # asyncua raises several types for malformed text
        raise ValueError(f"not a node id: {text!r} (use ns=<index>;s=<id> or nsu=<uri>;s=<id>)") from None
    uri = getattr(nid, "NamespaceUri", None)
    if uri:
        if uri not in namespaces:
            return None
        return ua.NodeId(nid.Identifier, namespaces.index(uri), nid.NodeIdType)
    return ua.NodeId(nid.Identifier, nid.NamespaceIndex, nid.NodeIdType)


def to_ms(ts: datetime) -> int:
    """An OPC UA timestamp (aware, or naive meaning UTC) to epoch milliseconds, exactly."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // _MS


Kind = Literal["reading", "gap", "waiting", "wrong_type"]


class Sample(NamedTuple):
    """What one data change means for the sink."""

    kind: Kind
    ts_ms: int
    value: float | None
    quality: int
    status: str


def interpret(dv: ua.DataValue, now_ms: int) -> Sample:
    """Classify a data change: a reading, a gap (Bad, no value), still waiting for data, or a wrong type.

    Source time first; a server that sends none is stamped with its own time, else with ours.
    """
    ts = dv.SourceTimestamp or dv.ServerTimestamp
    ts_ms = to_ms(ts) if ts is not None else now_ms
    status = dv.StatusCode if dv.StatusCode is not None else ua.StatusCode()
    quality = quality_of(status)
    raw = dv.Value.Value if dv.Value is not None else None
    name = status.name
    if raw is None:
        if status.value == ua.StatusCodes.BadWaitingForInitialData:
            return Sample("waiting", ts_ms, None, quality, name)
        return Sample("gap", ts_ms, None, quality, name)
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return Sample("wrong_type", ts_ms, None, quality, name)
    return Sample("reading", ts_ms, float(raw), quality, name)


# --------------------------------------------------------------------------- the bridge

@dataclass
class OpcUaStats:
    """Counters of one bridge run (on ``/status`` next to the sink's)."""

    connected: bool = False
    sessions: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    subscribed: int = 0
    unmapped: int = 0
    refused: int = 0
    changes: int = 0
    readings: int = 0
    gaps: int = 0
    waiting: int = 0
    wrong_type: int = 0
    marked_bad: int = 0
    repeats: int = 0
    subscribe_s: float = 0.0
    last_error: str = ""
    #: Data changes per sensor, for tests and the bench (not on /status: 1,000 entries).
    per_sensor: dict[str, int] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("per_sensor")
        return d


class _Changes:
    """asyncua subscription handler: forwards notifications to the bridge (called on the event loop)."""

    def __init__(self, bridge: OpcUaBridge, lost: asyncio.Event):
        self.bridge = bridge
        self.lost = lost

    def datachange_notification(self, node, val, data) -> None:
        self.bridge._on_change(data.monitored_item)

    def status_change_notification(self, status) -> None:
        code = getattr(status, "Status", status)
        if isinstance(code, ua.StatusCode) and code.is_bad():
            log.warning("subscription status %s: treating it as a lost session", code.name)
            self.lost.set()


class OpcUaBridge:
    """Runs sessions against one server until stopped, reconnecting with backoff."""

    def __init__(self, cfg: OpcUaConfig, plant: Plant, sink: ReadingSink, credentials: Credentials | None = None):
        self.cfg = cfg
        self.plant = plant
        self.sink = sink
        self.credentials = credentials
        self.stats = OpcUaStats()
        self.site_uri = opcua_namespace_uri(plant.template.site)
        self._sensor_ids = plant.by_id.keys()
        self._handles: dict[int, str] = {}
        self._subscribed: list[str] = []
        #: Per sensor, the last sample passed on (kind, source time, value, status), across sessions.
        self._last_seen: dict[str, tuple] = {}
        self.ready = asyncio.Event()  # set while a session is subscribed (tests wait on it)

    # -- per change, on the event loop: cheap, no awaits

    def _on_change(self, item: ua.MonitoredItemNotification) -> None:
        sid = self._handles.get(item.ClientHandle)
        if sid is None or item.Value is None:
            return
        st = self.stats
        st.changes += 1
        st.per_sensor[sid] = st.per_sensor.get(sid, 0) + 1
        now_ms = int(time.time() * 1000)
        s = interpret(item.Value, now_ms)
        if s.kind in ("reading", "gap"):
            seen = (s.kind, s.ts_ms, s.value, s.status)
            if self._last_seen.get(sid) == seen:
                # a new monitored item's first notification is the node's current value: after a reconnect
                # to a server that kept it, that sample was already sent
                st.repeats += 1
                return
            self._last_seen[sid] = seen
        if s.kind == "reading":
            st.readings += 1
            self.sink.reading(sid, s.ts_ms, s.value, s.quality)
        elif s.kind == "gap":
            st.gaps += 1
            self.sink.gap([sid], s.ts_ms, Reason.SOURCE_ERROR, f"OPC UA status {s.status} without a value")
            if s.quality == 2:
                st.marked_bad += 1
                self.sink.mark_bad([sid], s.ts_ms)
        elif s.kind == "waiting":
            st.waiting += 1
        else:
            st.wrong_type += 1
            raw = item.Value.Value
            text = repr(raw.Value) if raw is not None else "null"
            self.sink.reject(Reason.WRONG_TYPE, f"{sid}: OPC UA value of type "
                             f"{raw.VariantType.name if raw is not None else 'Null'} is not a number",
                             text.encode()[:4096], key=sid)

    # -- sessions

    async def run(self, stop: asyncio.Event) -> OpcUaStats:
        """Keep a subscribed session until ``stop`` is set; returns the counters."""
        delay = self.cfg.reconnect_initial_s
        while not stop.is_set():
            started = await self._session(stop)
            if stop.is_set():
                break
            if started:
                delay = self.cfg.reconnect_initial_s  # a session that got going resets the backoff
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, self.cfg.reconnect_max_s)
        return self.stats

    async def _client(self) -> Client:
        cfg = self.cfg
        client = Client(cfg.endpoint, timeout=cfg.request_timeout_s, watchdog_intervall=cfg.watchdog_s)
        client.name = f"gigapulse bridge ({self.plant.name})"
        client.session_timeout = int(cfg.session_timeout_s * 1000)
        if cfg.security_mode != "None":
            assert cfg.certificate is not None and cfg.private_key is not None
            client.application_uri = await _application_uri(cfg.certificate)
            policy = getattr(security_policies, f"SecurityPolicy{cfg.security_policy}")
            await client.set_security(policy, str(cfg.certificate), str(cfg.private_key),
                                      server_certificate=str(cfg.server_certificate) if cfg.server_certificate
                                      else None, mode=getattr(ua.MessageSecurityMode, cfg.security_mode))
        if cfg.trusted_servers is not None:
            from asyncua.crypto.truststore import TrustStore
            from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions

            store = TrustStore([Path(cfg.trusted_servers)], [])
            await store.load()
            client.certificate_validator = CertificateValidator(
                CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_SERVER, store)
        if self.credentials is not None:
            client.set_user(self.credentials.username)
            if self.credentials.password is not None:
                client.set_password(self.credentials.password.get_secret_value())
        return client

    async def _session(self, stop: asyncio.Event) -> bool:
        """One session: connect, subscribe, wait for loss or stop. True if it got subscribed."""
        lost = asyncio.Event()
        client: Client | None = None
        subscribed = False
        try:
            client = await self._client()

            async def on_lost(exc: Exception) -> None:
                log.warning("OPC UA connection to %s lost: %s", self.cfg.endpoint, describe_error(exc))
                lost.set()

            client.connection_lost_callback = on_lost
            await client.connect()
            self.stats.sessions += 1
            if self.stats.sessions > 1:
                self.stats.reconnects += 1
            self.stats.connected = True
            await self._subscribe(client, lost)
            subscribed = True
            self.ready.set()
            waiters = [asyncio.ensure_future(lost.wait()), asyncio.ensure_future(stop.wait())]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure of one attempt: count it, log one line, retry
            if not subscribed:
                self.stats.connect_failures += 1
            self.stats.last_error = describe_error(exc)
            log.warning("OPC UA session with %s failed: %s", self.cfg.endpoint, self.stats.last_error)
            if isinstance(exc, OpcUaConfigError):
                raise
            if self.stats.sessions == 0 and is_refusal(exc):
                # never connected yet: a wrong certificate, mode or password will not fix itself; once a
                # session has worked, the same error is retried (the server may be mid-restart)
                raise OpcUaRefused(f"{self.cfg.endpoint} refused the bridge: {self.stats.last_error}") from None
        finally:
            self.ready.clear()
            self.stats.connected = False
            if subscribed and not stop.is_set():
                self._mark_lost()
            if client is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.disconnect(), 2.0)
        return subscribed

    def _mark_lost(self) -> None:
        if self._subscribed:
            self.stats.marked_bad += len(self._subscribed)
            self.sink.mark_bad(list(self._subscribed), int(time.time() * 1000))

    async def _targets(self, client: Client, namespaces: list[str]) -> list[ua.NodeId]:
        if self.cfg.nodes:
            out = []
            for text in self.cfg.nodes:
                try:
                    nid = parse_node_id(text, namespaces)
                except ValueError as exc:
                    raise OpcUaConfigError(f"nodes: {exc}") from None
                if nid is None:
                    self._unmapped.append(text)
                else:
                    out.append(nid)
            return out
        if self.site_uri not in namespaces:
            raise OpcUaConfigError(f"the server has no namespace {self.site_uri} (plant {self.plant.name})")
        ns = namespaces.index(self.site_uri)
        root = await resolve_browse_root(client, self.cfg.browse_root or "", ns, namespaces)
        return await browse_variables(client, root, ns, self.cfg.batch_size)

    async def _subscribe(self, client: Client, lost: asyncio.Event) -> None:
        cfg = self.cfg
        t0 = time.monotonic()
        self._unmapped: list[str] = []
        namespaces = await client.get_namespace_array()
        site_ns = namespaces.index(self.site_uri) if self.site_uri in namespaces else -1
        targets = await self._targets(client, namespaces)
        mapped: list[tuple[ua.NodeId, str]] = []
        seen: set[str] = set()
        for nid in targets:
            sid = sensor_for_node(nid, site_ns, self._sensor_ids)
            if sid is None:
                self._unmapped.append(nid.to_string())
            elif sid not in seen:
                seen.add(sid)
                mapped.append((nid, sid))
        self.stats.unmapped = len(self._unmapped)
        if self._unmapped:
            log.warning("%d OPC UA nodes map to no sensor of plant %s and are not subscribed (e.g. %s)",
                        len(self._unmapped), self.plant.name, ", ".join(self._unmapped[:3]))
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=cfg.publishing_interval_ms,
            RequestedLifetimeCount=max(30, int(3 * cfg.session_timeout_s * 1000 / cfg.publishing_interval_ms)),
            RequestedMaxKeepAliveCount=max(3, int(5000 / cfg.publishing_interval_ms)),
            MaxNotificationsPerPublish=0, PublishingEnabled=True, Priority=0)
        sub = await client.create_subscription(params, _Changes(self, lost))
        self._handles = {}
        self._subscribed = []
        refused: list[str] = []
        trigger = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValueTimestamp)
        for lo in range(0, len(mapped), cfg.batch_size):
            batch = mapped[lo:lo + cfg.batch_size]
            requests = [monitored_item(nid, lo + i + 1, cfg.sampling_interval_ms, cfg.queue_size, trigger)
                        for i, (nid, _) in enumerate(batch)]
            # handles first: the initial values can arrive before the call returns
            for i, (_, sid) in enumerate(batch):
                self._handles[lo + i + 1] = sid
            results = await sub.create_monitored_items(requests)
            for i, res in enumerate(results):
                if isinstance(res, ua.StatusCode):
                    refused.append(f"{batch[i][1]} ({res.name})")
                    self._handles.pop(lo + i + 1, None)
                else:
                    self._subscribed.append(batch[i][1])
        self.stats.refused = len(refused)
        if refused:
            log.warning("the server refused %d monitored items (e.g. %s)", len(refused), ", ".join(refused[:3]))
        self.stats.subscribed = len(self._subscribed)
        self.stats.subscribe_s = time.monotonic() - t0
        log.info("OPC UA session %d: %d sensors subscribed in %.2f s (%d unmapped, %d refused)",
                 self.stats.sessions, len(self._subscribed), self.stats.subscribe_s, len(self._unmapped), len(refused))


def monitored_item(nid: ua.NodeId, handle: int, sampling_ms: float, queue_size: int,
                   flt: ua.DataChangeFilter) -> ua.MonitoredItemCreateRequest:
    """A CreateMonitoredItems entry for a node's Value, queueing ``queue_size`` changes, oldest dropped last."""
    params = ua.MonitoringParameters(ClientHandle=handle, SamplingInterval=sampling_ms, Filter=flt,
                                     QueueSize=queue_size, DiscardOldest=True)
    return ua.MonitoredItemCreateRequest(ItemToMonitor=ua.ReadValueId(NodeId=nid, AttributeId=ua.AttributeIds.Value),
                                         MonitoringMode=ua.MonitoringMode.Reporting, RequestedParameters=params)


async def resolve_browse_root(client: Client, root: str, ns: int, namespaces: list[str]) -> ua.NodeId:
    """A browse root as a node id: given as one (``ns=``/``nsu=``/``i=``), or as a folder path below Objects."""
    if root.startswith(("ns=", "nsu=", "i=", "s=")):
        nid = parse_node_id(root, namespaces)
        if nid is None:
            raise OpcUaConfigError(f"browse_root: namespace of {root!r} is not on the server")
        return nid
    names = [p for p in root.strip("/").split("/") if p]
    if not names:
        return ua.NodeId(ua.ObjectIds.ObjectsFolder)
    elements = [ua.RelativePathElement(ReferenceTypeId=ua.NodeId(ua.ObjectIds.HierarchicalReferences),
                                       IsInverse=False, IncludeSubtypes=True, TargetName=ua.QualifiedName(n, ns))
                for n in names]
    path = ua.BrowsePath(StartingNode=ua.NodeId(ua.ObjectIds.ObjectsFolder),
                         RelativePath=ua.RelativePath(Elements=elements))
    result = (await client.uaclient.translate_browsepaths_to_nodeids([path]))[0]
    if not result.StatusCode.is_good() or not result.Targets:
        raise OpcUaConfigError(f"browse_root: {root!r} is not a folder path on the server "
                               f"({result.StatusCode.name})")
    return result.Targets[0].TargetId


async def browse_variables(client: Client, root: ua.NodeId, ns: int, batch: int = 500) -> list[ua.NodeId]:
    """Every Variable below ``root`` in namespace ``ns``, one Browse call per level (and per ``batch`` nodes)."""
    found: list[ua.NodeId] = []
    seen: set[ua.NodeId] = {root}
    frontier = [root]
    while frontier:
        children: list[ua.NodeId] = []
        for lo in range(0, len(frontier), batch):
            descs = [ua.BrowseDescription(NodeId=n, BrowseDirection=ua.BrowseDirection.Forward,
                                          ReferenceTypeId=ua.NodeId(ua.ObjectIds.HierarchicalReferences),
                                          IncludeSubtypes=True,
                                          NodeClassMask=ua.NodeClass.Object | ua.NodeClass.Variable,
                                          ResultMask=ua.BrowseResultMask.All)
                     for n in frontier[lo:lo + batch]]
            results = await client.uaclient.browse(ua.BrowseParameters(NodesToBrowse=descs,
                                                                       RequestedMaxReferencesPerNode=0))
            for res in results:
                refs = list(res.References or [])
                cp = res.ContinuationPoint
                while cp:
                    more = (await client.uaclient.browse_next(ua.BrowseNextParameters(
                        ReleaseContinuationPoints=False, ContinuationPoints=[cp])))[0]
                    refs.extend(more.References or [])
                    cp = more.ContinuationPoint
                for ref in refs:
                    nid = ua.NodeId(ref.NodeId.Identifier, ref.NodeId.NamespaceIndex, ref.NodeId.NodeIdType)
                    if nid.NamespaceIndex != ns or nid in seen:
                        continue
                    seen.add(nid)
                    if ref.NodeClass == ua.NodeClass.Variable:
                        found.append(nid)
                    else:
                        children.append(nid)
        frontier = children
    return found


async def _application_uri(cert_path: Path) -> str:
    """The URI in a certificate's SubjectAltName: the client must announce the same one."""
    from asyncua.crypto.uacrypto import load_certificate
    from cryptography import x509

    cert = await load_certificate(str(cert_path))
    try:
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if not uris:
        raise OpcUaConfigError(f"certificate: {cert_path} has no application URI in its SubjectAltName")
    return uris[0]


_REFUSALS = ("BadCertificate", "BadSecurity", "BadIdentityToken", "BadUserAccessDenied", "BadNoValidCertificates")


def is_refusal(exc: BaseException) -> bool:
    """A connect error that is the server saying no (security, identity), not a network failure."""
    if isinstance(exc, ua.UaStatusCodeError):
        return ua.StatusCode(exc.code).name.startswith(_REFUSALS)
    return isinstance(exc, ua.UaError) and str(exc).startswith("No matching endpoints")


def describe_error(exc: BaseException) -> str:
    """One line for a failed connect or a lost session (asyncua's errors are often bare status names)."""
    if isinstance(exc, ua.UaStatusCodeError):
        code = ua.StatusCode(exc.code)
        return f"{code.name}: {code.doc}" if code.doc else code.name
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, ua.UaError) and text.startswith("No matching endpoints"):
        mode, _, policy = text.removeprefix("No matching endpoints:").partition(",")
        names = {str(int(m)): m.name.rstrip("_") for m in ua.MessageSecurityMode}
        return (f"the server offers no endpoint with security mode {names.get(mode.strip(), mode.strip())} "
                f"and policy {policy.strip().rsplit('#', 1)[-1]}")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__



def run_opcua(config: OpcUaConfig, sink: ReadingSink, stop: threading.Event) -> None:
    """``gigapulse bridge opcua``'s runner: bridge until ``stop`` is set (the caller owns the sink).

    Raises :class:`OpcUaRefused` when the server refuses the very first session, and
    :class:`OpcUaConfigError` for credentials the environment lacks.
    """
    from schemas.asset_model import load_plant

    logging.getLogger("asyncua").setLevel(logging.WARNING)  # asyncua logs every publish at INFO
    credentials = read_credentials(config)
    plant = load_plant(config.plant)

    async def main() -> None:
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        waiter = loop.run_in_executor(None, stop.wait)
        waiter.add_done_callback(lambda _: done.set())
        try:
            bridge = OpcUaBridge(config, plant, sink, credentials)
            sink.protocol_status = bridge.stats.to_dict  # sessions, subscriptions, repeats on /status
            stats = await bridge.run(done)
        finally:
            stop.set()  # a bridge that ended on its own releases the waiting thread
        log.info("opcua bridge stopped: %s", stats.to_dict())

    asyncio.run(main())
