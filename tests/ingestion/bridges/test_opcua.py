"""The OPC UA bridge: its pure mapping rules, its configuration, and the bridge against a real asyncua
server (in-process, free loopback port) with a recording sink. The same paths into the real broker
and the lake are in ``test_opcua_integration.py``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from asyncua import ua

from ingestion.bridges.certs import CLIENT_APPLICATION_URI, write_certificate, write_server_and_client
from ingestion.bridges.config import GENERATORS, BridgeConfigError, OpcUaConfig, dump_config, load_config
from ingestion.bridges.opcua import (
    OpcUaBridge,
    OpcUaConfigError,
    OpcUaRefused,
    interpret,
    parse_node_id,
    quality_of,
    read_credentials,
    sensor_for_node,
    to_ms,
)
from ingestion.bridges.opcua_server import ServerSecurity, ms_to_datetime
from schemas.addresses import opcua_namespace_uri
from schemas.asset_model import load_plant
from tests.ingestion.bridges.opcua_support import (
    PLANT,
    T0_MS,
    RecordingSink,
    bridged,
    sensors,
    served,
    settings,
    until,
)

# --------------------------------------------------------------------------- pure rules


@pytest.mark.parametrize(("code", "quality"), [
    (ua.StatusCodes.Good, 0),
    (ua.StatusCodes.GoodClamped, 0),
    (ua.StatusCodes.Uncertain, 1),
    (ua.StatusCodes.UncertainLastUsableValue, 1),
    (ua.StatusCodes.UncertainSensorNotAccurate, 1),
    (ua.StatusCodes.Bad, 2),
    (ua.StatusCodes.BadSensorFailure, 2),
    (ua.StatusCodes.BadCommunicationError, 2),
    (0xC0000000, 2),  # reserved severity 11: treat as bad
])
def test_status_severity_is_the_quality(code, quality):
    assert quality_of(ua.StatusCode(code)) == quality
    assert quality_of(code) == quality


def test_no_status_is_good():
    assert quality_of(None) == 0


def test_node_ids_map_to_sensors_only_by_the_scheme():
    sid = PLANT.sensors[5].sensor_id
    known = PLANT.by_id.keys()
    assert sensor_for_node(ua.NodeId(sid, 2), 2, known) == sid
    assert sensor_for_node(ua.NodeId(sid, 3), 2, known) is None  # another namespace
    assert sensor_for_node(ua.NodeId("ref.L9-nothing.x", 2), 2, known) is None
    assert sensor_for_node(ua.NodeId(2258, 0), 2, known) is None  # numeric id (the server's clock)


def test_configured_node_ids_resolve_against_the_namespace_array():
    nss = ["http://opcfoundation.org/UA/", "urn:gigapulse:opcua:server", opcua_namespace_uri("ref")]
    assert parse_node_id("nsu=urn:gigapulse:ref;s=ref.a.b", nss) == ua.NodeId("ref.a.b", 2)
    assert parse_node_id("ns=2;s=ref.a.b", nss) == ua.NodeId("ref.a.b", 2)
    assert parse_node_id("nsu=urn:other;s=ref.a.b", nss) is None
    with pytest.raises(ValueError, match="not a node id"):
        parse_node_id("ref.a.b", nss)


def test_timestamps_round_trip_to_the_millisecond():
    for ms in (0, T0_MS, T0_MS + 1, T0_MS + 999, 4_102_444_800_123):
        assert to_ms(ms_to_datetime(ms)) == ms
    assert to_ms(datetime(2026, 1, 5, 8)) == T0_MS  # naive means UTC


def _dv(value, code=ua.StatusCodes.Good, ts_ms=T0_MS, vtype=ua.VariantType.Double):
    variant = ua.Variant(value, vtype) if value is not None else ua.Variant(None, ua.VariantType.Null)
    return ua.DataValue(variant, StatusCode=ua.StatusCode(code),
                        SourceTimestamp=ms_to_datetime(ts_ms) if ts_ms is not None else None)


def test_interpret_good_uncertain_and_bad_with_a_value():
    assert interpret(_dv(1.5), 0)[:4] == ("reading", T0_MS, 1.5, 0)
    assert interpret(_dv(1.5, ua.StatusCodes.UncertainSensorNotAccurate), 0)[:4] == ("reading", T0_MS, 1.5, 1)
    assert interpret(_dv(1.5, ua.StatusCodes.BadSensorFailure), 0)[:4] == ("reading", T0_MS, 1.5, 2)
    assert interpret(_dv(7, vtype=ua.VariantType.Int32), 0)[:3] == ("reading", T0_MS, 7.0)


def test_a_bad_status_without_a_value_is_a_gap_never_a_value():
    s = interpret(_dv(None, ua.StatusCodes.BadCommunicationError), 0)
    assert (s.kind, s.value, s.quality, s.status) == ("gap", None, 2, "BadCommunicationError")


def test_waiting_for_initial_data_is_neither_value_nor_gap():
    assert interpret(_dv(None, ua.StatusCodes.BadWaitingForInitialData), 0).kind == "waiting"


@pytest.mark.parametrize(("value", "vtype"), [("high", ua.VariantType.String), (True, ua.VariantType.Boolean),
                                              ([1.0, 2.0], ua.VariantType.Double)])
def test_non_numbers_are_the_wrong_type(value, vtype):
    assert interpret(_dv(value, vtype=vtype), 0).kind == "wrong_type"


def test_without_source_time_the_server_time_then_ours():
    dv = ua.DataValue(ua.Variant(1.0, ua.VariantType.Double), ServerTimestamp=ms_to_datetime(T0_MS + 5))
    assert interpret(dv, 42).ts_ms == T0_MS + 5
    assert interpret(ua.DataValue(ua.Variant(1.0, ua.VariantType.Double)), 42).ts_ms == 42


# --------------------------------------------------------------------------- configuration

def _file(tmp_path, **fields):
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump({"kind": "opcua", "plant": "reference", "endpoint": "opc.tcp://127.0.0.1:4840/",
                                    **fields}))
    return path


def _cfg(**fields) -> OpcUaConfig:
    return OpcUaConfig.model_validate({"endpoint": "opc.tcp://127.0.0.1:4840/", **fields})


@pytest.mark.parametrize(("fields", "message"), [
    ({}, "(top level): Value error, give either nodes"),
    ({"nodes": ["ns=2;s=x"], "browse_root": "ref"}, "give either nodes"),
    ({"browse_root": "ref", "security_mode": "SignAndEncrypt"}, "needs certificate and private_key"),
    ({"browse_root": "ref", "security_mode": "Encrypt"}, "security_mode: Input should be"),
    ({"browse_root": "ref", "endpoint": "http://x"}, "endpoint: String should match"),
    ({"browse_root": "ref", "password_env": "P"}, "a password needs username_env"),
    ({"browse_root": "ref", "queue_size": 0}, "queue_size: Input should be greater than"),
    ({"browse_root": "ref", "password": "secret"}, "password: unknown key (the OpcUaConfig keys are"),
])
def test_config_errors_are_one_line_naming_the_field(tmp_path, fields, message):
    path = _file(tmp_path, **fields)
    with pytest.raises(BridgeConfigError) as err:
        load_config(path, OpcUaConfig)
    text = str(err.value)
    assert message in text and "\n" not in text and text.startswith(f"{path}: ")


def test_generated_config_lists_every_opcua_sensor_and_loads(tmp_path):
    generate, model = GENERATORS["opcua"]
    assert model is OpcUaConfig
    for name in ("reference", "legacy"):
        plant = load_plant(name)
        wanted = [e for e in plant.sensors if e.protocol == "opcua"]
        path = tmp_path / f"{name}.yaml"
        path.write_text(dump_config(OpcUaConfig.model_validate(generate(plant, wanted, name))))
        cfg = load_config(path, OpcUaConfig)
        assert len(cfg.nodes) == len(wanted) > 0 and cfg.plant == name and cfg.bridge_name("opcua") == f"opcua-{name}"
        assert cfg.nodes[0] == f"nsu={opcua_namespace_uri(plant.template.site)};s={wanted[0].sensor_id}"
        assert cfg.endpoint == "opc.tcp://127.0.0.1:4840/gigapulse/"


def test_the_compose_profile_config_loads_and_points_at_the_served_plant():
    repo = Path(__file__).resolve().parents[3]
    cfg = load_config(repo / "infra" / "bridges" / "opcua.yaml", OpcUaConfig)
    services = yaml.safe_load((repo / "docker-compose.yml").read_text())["services"]
    host = cfg.endpoint.removeprefix("opc.tcp://").split(":")[0]
    assert host in services and services[host]["command"][:3] == ["simulate", "--serve", "opcua"]
    bridge = services["bridge-opcua"]
    assert bridge["command"][-1].endswith("/opcua.yaml") and bridge["profiles"] == ["bridges"]
    certs = services["opcua-certs"]["command"]
    assert certs[certs.index("--out") + 1] == str(cfg.certificate.parent)


def test_credentials_come_from_the_environment_or_a_file_and_never_show(tmp_path):
    cfg = _cfg(browse_root="ref", username_env="U", password_env="P")
    creds = read_credentials(cfg, {"U": "op", "P": "s3cret"})
    assert creds.username == "op" and creds.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(creds) and "s3cret" not in str(creds)
    with pytest.raises(OpcUaConfigError, match="environment variable P is not set"):
        read_credentials(cfg, {"U": "op"})
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    cfg = _cfg(browse_root="ref", username_env="U", password_file=str(secret))
    assert read_credentials(cfg, {"U": "op"}).password.get_secret_value() == "from-file"
    cfg = _cfg(browse_root="ref", username_env="U", password_file=str(tmp_path / "no"))
    with pytest.raises(OpcUaConfigError, match="cannot read"):
        read_credentials(cfg, {"U": "op"})
    assert read_credentials(_cfg(browse_root="ref"), {}) is None


# --------------------------------------------------------------------------- against a real server

def test_browse_subscribe_and_every_change_with_its_source_time():
    """A subtree of 40 sensors: each of 3 rounds of known values arrives once, with its time and quality."""
    ids = sensors(40)

    async def scenario():
        async with served(ids + sensors(5, start=500)) as server:
            sink = RecordingSink()
            root = "/".join(PLANT.by_id[ids[0]].path.split("/")[1:4])  # ref/<area>/<line>
            in_root = [s for s in ids if PLANT.by_id[s].path.split("/")[1:4] == root.split("/")]
            async with bridged(OpcUaBridge(settings(server, browse_root=root), PLANT, sink)) as bridge:
                assert bridge.stats.subscribed == len(in_root) and bridge.stats.unmapped == 0
                sent = []
                for k in range(3):
                    for i, sid in enumerate(in_root):
                        ts = T0_MS + 100 * k + i
                        await server.write(sid, 10.0 * i + k, ts, quality=k % 2)
                        sent.append((sid, ts, 10.0 * i + k, k % 2))
                await until(lambda: len(sink.readings) >= len(sent), what="every change")
                await asyncio.sleep(0.3)
            assert sorted(sink.readings) == sorted(sent)
            assert bridge.stats.waiting == len(in_root)  # the initial BadWaitingForInitialData, nothing sent
            assert not sink.gaps and not sink.rejects and not sink.marked_bad

    asyncio.run(scenario())


def test_configured_nodes_and_unmapped_nodes_reported_not_subscribed(caplog):
    ids = sensors(6)

    async def scenario():
        async with served(ids) as server:
            nodes = [f"nsu=urn:gigapulse:ref;s={s}" for s in ids[:4]] + [
                "nsu=urn:gigapulse:ref;s=ref.nowhere.sensor",  # no such sensor in the plant
                "nsu=urn:elsewhere;s=ref.L1-mix-c.x",  # namespace not on the server
                f"ns=0;s={ids[4]}",  # wrong namespace
            ]
            sink = RecordingSink()
            async with bridged(OpcUaBridge(settings(server, browse_root=None, nodes=nodes), PLANT, sink)) as bridge:
                assert bridge.stats.subscribed == 4 and bridge.stats.unmapped == 3
                await server.write(ids[0], 1.0, T0_MS)
                await server.write(ids[5], 2.0, T0_MS)  # served, not configured
                await until(lambda: len(sink.readings) == 1, what="the configured node's change")
                await asyncio.sleep(0.3)
            assert sink.readings == [(ids[0], T0_MS, 1.0, 0)]

    with caplog.at_level("WARNING", logger="ingestion.bridges.opcua"):
        asyncio.run(scenario())
    assert sum("map to no sensor" in r.getMessage() for r in caplog.records) == 1


def test_a_configured_node_the_server_lacks_is_refused_and_counted():
    ids = sensors(3)

    async def scenario():
        async with served(ids[:2]) as server:
            nodes = [f"nsu=urn:gigapulse:ref;s={s}" for s in ids]
            async with bridged(OpcUaBridge(settings(server, browse_root=None, nodes=nodes), PLANT,
                                           RecordingSink())) as bridge:
                assert (bridge.stats.subscribed, bridge.stats.refused) == (2, 1)

    asyncio.run(scenario())


def test_bad_uncertain_gap_and_wrong_type():
    """Uncertain keeps the value; Bad arrives without one: a gap and the sensor marked bad; a string is
    dead-lettered wrong_type."""
    a, b, c, d = sensors(4)

    async def scenario():
        async with served([a, b, c]) as server:
            # a server that serves a sensor as text (a misconfigured tag): the sensor's node id, a String
            site_folder = server._server.get_node(ua.NodeId("ref", server.ns))
            text_node = await site_folder.add_variable(ua.NodeId(d, server.ns), ua.QualifiedName("text", server.ns),
                                                       "OK", ua.VariantType.String)
            sink = RecordingSink()
            async with bridged(OpcUaBridge(settings(server), PLANT, sink)):
                await server.write(a, 5.0, T0_MS)
                await server.write(a, 5.5, T0_MS + 100, quality=1)
                await server.write(b, 7.0, T0_MS)
                await until(lambda: len(sink.readings) == 3 and sink.rejects, what="three readings")
                await server.set_quality(b, 2, ts_ms=T0_MS + 200)
                await server.write(c, None, T0_MS + 300, status=ua.StatusCodes.BadCommunicationError)
                await text_node.write_value(ua.DataValue(ua.Variant("HIGH", ua.VariantType.String),
                                                         SourceTimestamp=ms_to_datetime(T0_MS + 400)))
                await until(lambda: len(sink.gaps) == 2 and len(sink.rejects) == 2, what="gaps and dead letters")
            assert sink.readings == [(a, T0_MS, 5.0, 0), (a, T0_MS + 100, 5.5, 1), (b, T0_MS, 7.0, 0)]
            assert sorted(g[:3] for g in sink.gaps) == [([b], T0_MS + 200, "source_error"),
                                                        ([c], T0_MS + 300, "source_error")]
            assert "BadSensorFailure" in sink.gaps[0][3] or "BadSensorFailure" in sink.gaps[1][3]
            assert sorted(sink.marked_bad) == [([b], T0_MS + 200), ([c], T0_MS + 300)]
            assert [(r[0], r[2], r[3]) for r in sink.rejects] == [("wrong_type", b"'OK'", d),
                                                                  ("wrong_type", b"'HIGH'", d)]
            assert "String" in sink.rejects[0][1]

    asyncio.run(scenario())


def test_server_restart_marks_bad_reconnects_and_misses_nothing_after():
    ids = sensors(30)

    async def scenario():
        sink = RecordingSink()
        async with served(ids) as server:
            port = server.port
            bridge = OpcUaBridge(settings(server), PLANT, sink)
            async with bridged(bridge):
                for i, sid in enumerate(ids):
                    await server.write(sid, float(i), T0_MS)
                await until(lambda: len(sink.readings) == len(ids), what="first round")
                await server.stop()
                await until(lambda: sink.marked_bad, what="the loss marked")
                assert sorted(sink.marked_bad[0][0]) == sorted(ids) and not bridge.stats.connected
                await asyncio.sleep(1.5)  # a few failed attempts with backoff
                assert bridge.stats.connect_failures >= 2
                async with served(ids, port=port) as again:
                    for i, sid in enumerate(ids):  # a server that kept its values: nothing to send again
                        await again.write(sid, float(i), T0_MS)
                    await until(lambda: bridge.stats.sessions == 2 and bridge.ready.is_set(), 20,
                                "the bridge back")
                    sent = []
                    for k in range(5):
                        for i, sid in enumerate(ids):
                            ts = T0_MS + 10_000 + 100 * k + i
                            await again.write(sid, 100.0 + i + k, ts)
                            sent.append((sid, ts, 100.0 + i + k, 0))
                    await until(lambda: len(sink.readings) >= len(ids) + len(sent), what="every change after")
                    await asyncio.sleep(0.3)
            assert sorted(sink.readings[len(ids):]) == sorted(sent)
            assert bridge.stats.reconnects == 1 and bridge.stats.repeats == len(ids)

    asyncio.run(scenario())


def test_sign_and_encrypt_with_generated_certificates(tmp_path):
    server_pair, client_pair = write_server_and_client(tmp_path)
    security = ServerSecurity(modes=("SignAndEncrypt",), cert=server_pair.cert, key=server_pair.key,
                              trusted_clients=tmp_path / "trusted-clients")
    ids = sensors(4)

    async def scenario():
        async with served(ids, security=security) as server:
            sink = RecordingSink()
            cfg = settings(server, security_mode="SignAndEncrypt", certificate=client_pair.cert,
                           private_key=client_pair.key, trusted_servers=tmp_path / "trusted-servers")
            async with bridged(OpcUaBridge(cfg, PLANT, sink)) as bridge:
                assert bridge.stats.subscribed == 4
                await server.write(ids[0], 3.25, T0_MS)
                await until(lambda: sink.readings, what="a reading over the encrypted channel")
            assert sink.readings == [(ids[0], T0_MS, 3.25, 0)]

            rogue = write_certificate(tmp_path / "rogue", "client", CLIENT_APPLICATION_URI, "not approved")
            refusals = []
            for bad in (settings(server, security_mode="SignAndEncrypt", certificate=rogue.cert,
                                 private_key=rogue.key),
                        settings(server)):  # no security at all
                with pytest.raises(OpcUaRefused) as err:
                    async with bridged(OpcUaBridge(bad, PLANT, RecordingSink())):
                        pass
                assert "\n" not in str(err.value)
                refusals.append(str(err.value))
            return refusals

    untrusted, no_security = asyncio.run(scenario())
    assert "refused the bridge: BadCertificateUntrusted" in untrusted
    assert "no endpoint with security mode None" in no_security


def test_user_and_password(tmp_path):
    ids = sensors(2)

    async def scenario():
        async with served(ids, users={"operator": "pw-1"}) as server:
            cfg = settings(server, username_env="U", password_env="P")
            good = read_credentials(cfg, {"U": "operator", "P": "pw-1"})
            async with bridged(OpcUaBridge(cfg, PLANT, RecordingSink(), good)) as bridge:
                assert bridge.stats.subscribed == 2
            wrong = read_credentials(cfg, {"U": "operator", "P": "nope"})
            with pytest.raises(OpcUaRefused, match="BadUserAccessDenied|BadIdentityToken") as err:
                async with bridged(OpcUaBridge(cfg, PLANT, RecordingSink(), wrong)):
                    pass
            assert "nope" not in str(err.value)

    asyncio.run(scenario())


def test_subscribing_a_thousand_nodes_takes_seconds_not_minutes():
    async def scenario():
        async with served(None) as server:  # the whole reference plant: 1,004 sensors
            bridge = OpcUaBridge(settings(server), PLANT, RecordingSink())
            async with bridged(bridge):
                assert bridge.stats.subscribed == len(PLANT.sensors)
                assert bridge.stats.subscribe_s < 10

    asyncio.run(scenario())

