"""The plant over OPC UA: the address space follows the scheme, samples carry their time and status,
the simulator's ticks arrive at a bridge whole, and the certificates are what OPC UA peers expect."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from asyncua import Client, ua
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from ingestion.bridges.certs import SERVER_APPLICATION_URI, make_certificate, write_server_and_client
from ingestion.bridges.opcua import OpcUaBridge
from ingestion.bridges.opcua_server import ServerSecurity, serve_simulation
from ingestion.simulator import PlantSimulator
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


def test_address_space_follows_the_isa95_scheme():
    ids = sensors(3) + sensors(2, start=700)

    async def scenario():
        async with served(ids) as server, Client(server.endpoint) as client:
            nss = await client.get_namespace_array()
            ns = nss.index("urn:gigapulse:ref")
            assert server.ns == ns
            for sid in ids:
                entry = PLANT.by_id[sid]
                names = entry.path.split("/")[1:]  # site/area/line/station/equipment/name
                node = await client.nodes.objects.get_child([f"{ns}:{n}" for n in names])
                assert node.nodeid == ua.NodeId(sid, ns)
                assert await node.read_data_type() == ua.NodeId(ua.ObjectIds.Double)
                dv = await node.read_attribute(ua.AttributeIds.Value, raise_on_bad_status=False)
                assert dv.StatusCode.value == ua.StatusCodes.BadWaitingForInitialData
                assert dv.Value.Value is None  # no made-up value before the first sample

    asyncio.run(scenario())


def test_a_sample_keeps_its_time_and_its_quality_becomes_a_status():
    (sid,) = sensors(1)

    async def scenario():
        async with served([sid]) as server, Client(server.endpoint) as client:
            node = client.get_node(server.node_id(sid))
            seen = []
            for value, quality in ((1.25, 0), (1.5, 1), (1.75, 2)):
                await server.write(sid, value, T0_MS + quality, quality)
                seen.append(await node.read_attribute(ua.AttributeIds.Value, raise_on_bad_status=False))
            return seen

    good, uncertain, bad = asyncio.run(scenario())
    assert good.Value.Value == 1.25 and good.StatusCode.is_good()
    assert good.SourceTimestamp == datetime(2026, 1, 5, 8, tzinfo=UTC)  # T0_MS, to the millisecond
    assert uncertain.Value.Value == 1.5 and uncertain.StatusCode.value == ua.StatusCodes.UncertainSensorNotAccurate
    assert bad.Value.Value is None and bad.StatusCode.value == ua.StatusCodes.BadSensorFailure


def test_unknown_sensors_and_bad_security_are_refused():
    with pytest.raises(ValueError, match="not sensors of plant reference"):
        from ingestion.bridges.opcua_server import PlantServer

        PlantServer(PLANT, ["ref.nowhere.x"])
    with pytest.raises(ValueError, match="need the server's certificate"):
        ServerSecurity(modes=("SignAndEncrypt",))
    with pytest.raises(ValueError, match="security modes must be among"):
        ServerSecurity(modes=("Encrypt",))


def test_served_simulation_reaches_the_bridge_sample_for_sample():
    """Three simulated seconds of 25 sensors, realtime: every good sample the simulator made arrives once,
    with its time and value; its bad samples arrive as gaps."""
    ids = sensors(25, start=100)
    start = datetime(2026, 1, 5, 8, tzinfo=UTC)
    expected, bad = [], []
    for tick in PlantSimulator(PLANT, seed=7, start=start).run(3):
        for fr in tick.frames:
            for i, ts, v, q in zip(fr.idx.tolist(), fr.ts_ms.tolist(), fr.value.tolist(), fr.quality.tolist(),
                                   strict=True):
                if fr.sensors[i] in ids:
                    (bad if q == 2 else expected).append((fr.sensors[i], ts, v, q))

    async def scenario():
        async with served(ids) as server:
            sink = RecordingSink()
            async with bridged(OpcUaBridge(settings(server), PLANT, sink)):
                written = await serve_simulation(server, 3, 1.0, seed=7, start=start)
                await until(lambda: len(sink.readings) + len(sink.gaps) >= written, what="every sample")
                await asyncio.sleep(0.3)
            return written, sink

    written, sink = asyncio.run(scenario())
    assert written == len(expected) + len(bad) > 25
    assert sorted(sink.readings) == sorted(expected)
    assert sorted((g[0][0], g[1]) for g in sink.gaps) == sorted((b[0], b[1]) for b in bad)


def test_serving_stops_when_asked():
    ids = sensors(5)

    async def scenario():
        async with served(ids) as server:
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(0.5, stop.set)
            t0 = asyncio.get_running_loop().time()
            await serve_simulation(server, 3600, 1.0, seed=1, start=datetime(2026, 1, 5, tzinfo=UTC), stop=stop)
            return asyncio.get_running_loop().time() - t0

    assert asyncio.run(scenario()) < 3


def test_certificates_carry_what_opc_ua_peers_check(tmp_path):
    cert, _ = make_certificate(SERVER_APPLICATION_URI, "srv", hosts=("localhost", "127.0.0.1", "plant-gw"))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [SERVER_APPLICATION_URI]
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "plant-gw"}
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.content_commitment and usage.key_encipherment
    assert usage.data_encipherment and usage.key_cert_sign
    ext = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(ext)
    assert cert.issuer == cert.subject

    server, client = write_server_and_client(tmp_path)
    assert (tmp_path / "trusted-clients" / "client.der").read_bytes() == client.cert.read_bytes()
    assert (tmp_path / "trusted-servers" / "server.der").read_bytes() == server.cert.read_bytes()
    assert oct(client.key.stat().st_mode & 0o777) == "0o600"
