"""The simulated plant served over OPC UA (``gigapulse simulate --serve opcua``), and the tests' server.

Address space, by the project's address scheme (``docs/connectors.md``): one namespace per site,
``urn:gigapulse:<site>``; ISA-95 folders Objects/<site>/<area>/<line>/<station>/<equipment>; under the
equipment one Double variable per sensor, named by the sensor's name within it (the last element of
its path) and with node id ``ns=<the namespace's index>;s=<sensor_id>``. Folders' node ids are their
slash-separated path in the same namespace (``s=ref/electrode/L1``), so they cannot collide with a
sensor id.

Values: each sample the simulator makes is written with its own source timestamp and a status code
from its quality code (good -> Good, uncertain -> UncertainSensorNotAccurate, bad -> BadSensorFailure).
A Bad sample goes out without its value: OPC UA servers null the value of a Bad DataValue (Part 4,
7.7.1) and asyncua does so on every write. A tick's samples are written when the tick ends (paced as ``gigapulse simulate`` paces
its frames, :func:`ingestion.pipeline.paced`), in time order, so a client sees every sample if its
monitored items queue at least one tick's worth (10 at 10 Hz; the bridge asks for 50). Until a
sensor's first sample its node is BadWaitingForInitialData with no value, never a made-up zero.

Security: any of None, Sign and SignAndEncrypt (Basic256Sha256) with the certificate and key of
:mod:`ingestion.bridges.certs`. With ``trusted_clients`` (a folder of client certificates) a client
whose certificate is not in it is refused at CreateSession with BadCertificateUntrusted; without
it any client certificate is accepted (what asyncua does by default: fine for a demo, not for a plant).

:class:`PlantServer` runs in the caller's event loop, so tests start it in-process on a free port
with the sensors they choose and write exact values with :meth:`PlantServer.write`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from pydantic_settings import BaseSettings, SettingsConfigDict

from ingestion.bridges.certs import SERVER_APPLICATION_URI
from schemas.addresses import opcua_browse_path, opcua_namespace_uri
from schemas.asset_model import Plant

log = logging.getLogger(__name__)

SecurityMode = Literal["None", "Sign", "SignAndEncrypt"]
SECURITY_MODES: tuple[SecurityMode, ...] = ("None", "Sign", "SignAndEncrypt")

_POLICY_TYPES = {
    "None": ua.SecurityPolicyType.NoSecurity,
    "Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
}

#: The status code a sample of each quality code is served with (the bridge maps severities back).
STATUS_OF_QUALITY: dict[int, int] = {
    0: ua.StatusCodes.Good,
    1: ua.StatusCodes.UncertainSensorNotAccurate,
    2: ua.StatusCodes.BadSensorFailure,
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ms_to_datetime(ts_ms: int) -> datetime:
    """Epoch milliseconds to an aware UTC datetime, exactly (no float rounding)."""
    return _EPOCH + timedelta(milliseconds=int(ts_ms))


@dataclass(frozen=True)
class ServerSecurity:
    """Which endpoints the server offers and with what certificate.

    ``modes`` other than None need ``cert`` and ``key``; ``trusted_clients`` is a folder of client
    certificates (DER or PEM) that are the only ones accepted.
    """

    modes: tuple[SecurityMode, ...] = ("None",)
    cert: Path | None = None
    key: Path | None = None
    trusted_clients: Path | None = None

    def __post_init__(self) -> None:
        unknown = [m for m in self.modes if m not in SECURITY_MODES]
        if unknown or not self.modes:
            raise ValueError(f"security modes must be among {', '.join(SECURITY_MODES)}; got {list(self.modes)}")
        if any(m != "None" for m in self.modes) and (self.cert is None or self.key is None):
            raise ValueError("Sign and SignAndEncrypt need the server's certificate and private key "
                             "(gigapulse bridge certs --out DIR makes a pair)")


class _PasswordUsers:
    """asyncua user manager accepting only the given user names with their passwords."""

    def __init__(self, users: dict[str, str]):
        self._users = dict(users)

    def get_user(self, iserver, username=None, password=None, certificate=None) -> User | None:
        expected = self._users.get(username or "")
        if expected is None or password is None or not hmac.compare_digest(expected, password):
            return None
        return User(role=UserRole.User, name=username)


class PlantServer:
    """An asyncua server holding a plant's sensors (all, or ``sensors``) as ISA-95 variables.

    ``users`` (name -> password): when given, sessions must log in as one of them; otherwise
    sessions are anonymous.
    """

    def __init__(self, plant: Plant, sensors: Iterable[str] | None = None, host: str = "127.0.0.1",
                 port: int = 4840, security: ServerSecurity | None = None, users: dict[str, str] | None = None):
        self.plant = plant
        chosen = list(sensors) if sensors is not None else [e.sensor_id for e in plant.sensors]
        unknown = [s for s in chosen if s not in plant.by_id]
        if unknown:
            raise ValueError(f"not sensors of plant {plant.name}: {unknown[:3]}")
        self.sensor_ids = chosen
        self.host = host
        self.port = port
        self.security = security or ServerSecurity()
        self.users = users
        self.ns = 0
        self._server: Server | None = None
        self._node_ids: dict[str, ua.NodeId] = {}
        self._last: dict[str, ua.DataValue] = {}
        self.writes = 0

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/gigapulse/"

    @property
    def namespace_uri(self) -> str:
        return opcua_namespace_uri(self.plant.template.site)

    def node_id(self, sensor_id: str) -> ua.NodeId:
        """The node id a served sensor has (its namespace index is known once started)."""
        return self._node_ids[sensor_id]

    async def start(self) -> PlantServer:
        """Build the address space and listen; returns self (``await PlantServer(...).start()``)."""
        server = Server(user_manager=_PasswordUsers(self.users) if self.users else None)
        await server.init()
        server.set_identity_tokens([ua.UserNameIdentityToken] if self.users else [ua.AnonymousIdentityToken])
        server.set_endpoint(self.endpoint)
        server.set_server_name(f"gigapulse {self.plant.name} plant")
        await server.set_application_uri(SERVER_APPLICATION_URI)
        server.product_uri = "urn:gigapulse"
        server.disable_clock()  # the 1 Hz CurrentTime write is load nobody here reads
        sec = self.security
        server.set_security_policy([_POLICY_TYPES[m] for m in sec.modes])
        if sec.cert is not None and sec.key is not None:
            await server.load_certificate(str(sec.cert))
            await server.load_private_key(str(sec.key))
        if sec.trusted_clients is not None:
            store = TrustStore([Path(sec.trusted_clients)], [])
            await store.load()
            server.set_certificate_validator(CertificateValidator(
                CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_CLIENT, store))
        self.ns = await server.register_namespace(self.namespace_uri)
        await self._build(server)
        await server.start()
        self._server = server
        log.info("OPC UA server on %s: %d sensors in ns=%d (%s), security %s", self.endpoint,
                 len(self.sensor_ids), self.ns, self.namespace_uri, "/".join(sec.modes))
        return self

    async def _build(self, server: Server) -> None:
        folders: dict[tuple[str, ...], object] = {(): server.nodes.objects}
        waiting = ua.DataValue(ua.Variant(None, ua.VariantType.Null),
                               StatusCode=ua.StatusCode(ua.StatusCodes.BadWaitingForInitialData))
        for sid in self.sensor_ids:
            *parts_, name = opcua_browse_path(self.plant.by_id[sid])
            parts = tuple(parts_)
            for depth in range(1, len(parts) + 1):
                key = parts[:depth]
                if key not in folders:
                    parent = folders[key[:-1]]
                    folders[key] = await parent.add_folder(ua.NodeId("/".join(key), self.ns),
                                                           ua.QualifiedName(key[-1], self.ns))
            node = await folders[parts].add_variable(ua.NodeId(sid, self.ns), ua.QualifiedName(name, self.ns),
                                                     ua.Variant(0.0, ua.VariantType.Double),
                                                     datatype=ua.NodeId(ua.ObjectIds.Double))
            self._node_ids[sid] = node.nodeid
            await server.write_attribute_value(node.nodeid, waiting)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None

    async def __aenter__(self) -> PlantServer:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def write(self, sensor_id: str, value: float | None, ts_ms: int, quality: int = 0,
                    status: int | None = None) -> None:
        """Publish one sample: its value, source time and status (from ``quality`` unless ``status``).

        ``value=None`` publishes a status without a value (what a server does when a read of the
        device failed): give it a Bad ``status``.
        """
        assert self._server is not None, "server not started"
        code = ua.StatusCode(STATUS_OF_QUALITY[quality] if status is None else status)
        variant = ua.Variant(None, ua.VariantType.Null) if value is None else ua.Variant(float(value),
                                                                                         ua.VariantType.Double)
        dv = ua.DataValue(variant, StatusCode=code, SourceTimestamp=ms_to_datetime(ts_ms),
                          ServerTimestamp=datetime.now(UTC))
        self._last[sensor_id] = dv
        self.writes += 1
        await self._server.write_attribute_value(self._node_ids[sensor_id], dv)

    async def set_quality(self, sensor_id: str, quality: int, ts_ms: int | None = None) -> None:
        """Re-publish a sensor's current value with another quality (a sensor turning Bad or Uncertain)."""
        last = self._last.get(sensor_id)
        value = None if last is None or last.Value is None else last.Value.Value
        now_ms = int(datetime.now(UTC).timestamp() * 1000) if ts_ms is None else ts_ms
        await self.write(sensor_id, value, now_ms, quality,
                         status=ua.StatusCodes.BadWaitingForInitialData if value is None else None)

    async def write_frames(self, frames) -> int:
        """Publish one simulator tick (its :class:`FrameBatch` es) in time order; returns samples written."""
        served = self._node_ids
        rows: list[tuple[int, str, float, int]] = []
        for fr in frames:
            sensors = fr.sensors
            keep = np.fromiter((sensors[i] in served for i in range(len(sensors))), bool, len(sensors))
            sel = keep[fr.idx]
            if not sel.any():
                continue
            rows.extend(zip(fr.ts_ms[sel].tolist(), [sensors[i] for i in fr.idx[sel].tolist()],
                            fr.value[sel].tolist(), fr.quality[sel].tolist(), strict=True))
        rows.sort(key=lambda r: r[0])
        for ts_ms, sid, value, quality in rows:
            await self.write(sid, value, ts_ms, quality)
        return len(rows)


async def serve_simulation(server: PlantServer, seconds: float, speed: float | None, seed: int, start: datetime,
                           wall_clock: bool = False, stop: asyncio.Event | None = None) -> int:
    """Run the plant's simulator and publish its ticks on ``server`` until ``seconds`` or ``stop``.

    The simulator and its pacing (:func:`ingestion.pipeline.paced`) run in a thread, so numpy's work
    and the sleeps stay off the event loop the server answers clients from; ticks come over a
    two-slot queue, so at ``speed=None`` the simulator cannot run ahead of what was published.
    Returns the number of samples written.
    """
    from ingestion.pipeline import paced
    from ingestion.simulator import PlantSimulator

    loop = asyncio.get_running_loop()
    ticks: asyncio.Queue = asyncio.Queue(maxsize=2)
    halt = threading.Event()
    done = object()
    sim = PlantSimulator(server.plant, seed=seed, start=start)
    behind = max(0.0, datetime.now(UTC).timestamp() - start.timestamp()) if wall_clock else 0.0

    def produce() -> None:
        try:
            for tick in paced(sim.run(seconds), start, speed, behind_s=behind):
                if halt.is_set():
                    break
                asyncio.run_coroutine_threadsafe(ticks.put(tick), loop).result()
        finally:
            asyncio.run_coroutine_threadsafe(ticks.put(done), loop).result()

    thread = threading.Thread(target=produce, name="opcua-sim", daemon=True)
    thread.start()
    written = 0
    try:
        while stop is None or not stop.is_set():
            getter = asyncio.ensure_future(ticks.get())
            waits = {getter} | ({asyncio.ensure_future(stop.wait())} if stop is not None else set())
            finished, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for p in pending:
                p.cancel()
            if getter not in finished:
                break
            tick = getter.result()
            if tick is done:
                break
            written += await server.write_frames(tick.frames)
    finally:
        halt.set()
        while thread.is_alive():  # unblock a producer waiting on the full queue
            try:
                ticks.get_nowait()
            except asyncio.QueueEmpty:
                await asyncio.sleep(0.05)
        thread.join()
    return written


class OpcUaServeSettings(BaseSettings):
    """How ``gigapulse simulate --serve opcua`` secures its endpoints. Environment: ``GIGAPULSE_OPCUA_SERVE_*``.

    ``security_modes``: comma-separated, of None, Sign, SignAndEncrypt. ``cert_dir``: a folder written by
    ``gigapulse bridge certs --out DIR`` (its ``server.der``, ``server.key.pem`` and ``trusted-clients/``);
    needed for Sign and SignAndEncrypt.
    """

    model_config = SettingsConfigDict(env_prefix="GIGAPULSE_OPCUA_SERVE_", frozen=True)

    security_modes: str = "None"
    cert_dir: Path | None = None

    def security(self) -> ServerSecurity:
        modes = tuple(m.strip() for m in self.security_modes.split(",") if m.strip())
        d = self.cert_dir
        if d is None:
            return ServerSecurity(modes=modes)  # type: ignore[arg-type]
        trusted = d / "trusted-clients"
        return ServerSecurity(modes=modes, cert=d / "server.der", key=d / "server.key.pem",  # type: ignore[arg-type]
                              trusted_clients=trusted if trusted.is_dir() else None)


def serve_plant(plant_name: str, host: str, port: int, seed: int, start: datetime, seconds: float) -> int:
    """``gigapulse simulate --serve opcua``: the plant's OPC UA sensors in real time, until ``seconds`` or
    SIGINT/SIGTERM; security from :class:`OpcUaServeSettings`. Returns the samples published."""
    from schemas.asset_model import load_plant

    plant = load_plant(plant_name)
    wall_clock = abs(datetime.now(UTC).timestamp() - start.timestamp()) < 5
    return run_server(plant, seconds, 1.0, seed, start, host=host, port=port,
                      security=OpcUaServeSettings().security(), wall_clock=wall_clock)


def run_server(plant: Plant, seconds: float, speed: float | None, seed: int, start: datetime, *,
               host: str = "0.0.0.0", port: int = 4840, sensors: Iterable[str] | None = None,
               security: ServerSecurity | None = None, wall_clock: bool = False) -> int:
    """``gigapulse simulate --serve opcua``: serve the simulated plant until ``seconds`` or SIGINT/SIGTERM.

    ``sensors`` defaults to the plant's OPC UA sensors (all of the reference plant, 18 of the legacy
    one). Returns the number of samples published.
    """
    import signal

    chosen = list(sensors) if sensors is not None else [e.sensor_id for e in plant.sensors
                                                           if e.protocol == "opcua"]

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with PlantServer(plant, chosen, host=host, port=port, security=security) as server:
            return await serve_simulation(server, seconds, speed, seed, start, wall_clock=wall_clock, stop=stop)

    return asyncio.run(main())
