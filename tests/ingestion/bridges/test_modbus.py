"""The Modbus register map (every type, byte and word order) and the poller against a real pymodbus server."""

from __future__ import annotations

import asyncio
import struct
import threading

import pytest

from ingestion.bridges.config import ModbusBlock, ModbusConfig, ModbusPoint
from ingestion.bridges.modbus import DecodeError, ModbusPoller, decode_registers, encode_value, point_value
from ingestion.bridges.modbus_server import RegisterStore, ServerThread
from schemas.asset_model import load_plant
from schemas.contracts import Reason
from tests.conftest import free_port

TYPES = ["int16", "uint16", "int32", "uint32", "float32", "float64"]
ORDERS = [("big", "big"), ("big", "little"), ("little", "big"), ("little", "little")]
SAMPLES = {"int16": [-32768, -1, 0, 1234, 32767], "uint16": [0, 1, 40000, 65535],
           "int32": [-2**31, -70000, 0, 123456, 2**31 - 1], "uint32": [0, 70000, 2**32 - 1],
           "float32": [-1.5, 0.0, 3.25, 2.0**100], "float64": [-1e300, 0.1, 12345.678901234, 2.0**60]}


@pytest.mark.parametrize("type_", TYPES)
@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
def test_decode_inverts_encode_for_every_type_and_order(type_, byte_order, word_order):
    for v in SAMPLES[type_]:
        regs = encode_value(v, type_, byte_order, word_order)
        assert len(regs) == {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "float64": 4}[type_]
        assert decode_registers(regs, type_, byte_order, word_order) == v


@pytest.mark.parametrize(("regs", "type_", "byte_order", "word_order", "expected"), [
    ([0x4049, 0x0FDB], "float32", "big", "big", struct.unpack(">f", bytes.fromhex("40490fdb"))[0]),  # ABCD
    ([0x0FDB, 0x4049], "float32", "big", "little", struct.unpack(">f", bytes.fromhex("40490fdb"))[0]),  # CDAB
    ([0x4940, 0xDB0F], "float32", "little", "big", struct.unpack(">f", bytes.fromhex("40490fdb"))[0]),  # BADC
    ([0xDB0F, 0x4940], "float32", "little", "little", struct.unpack(">f", bytes.fromhex("40490fdb"))[0]),  # DCBA
    ([0xFFFF], "int16", "big", "big", -1.0),
    ([0xFFFF], "uint16", "big", "big", 65535.0),
    ([0x0100], "uint16", "little", "big", 1.0),
    ([0x0001, 0x0000], "uint32", "big", "big", 65536.0),
    ([0x0001, 0x0000], "uint32", "big", "little", 1.0),
    ([0xFFFF, 0xFFFE], "int32", "big", "big", -2.0),
    ([0x3FF0, 0, 0, 0], "float64", "big", "big", 1.0),
    ([0, 0, 0, 0x3FF0], "float64", "big", "little", 1.0),
])
def test_known_register_layouts(regs, type_, byte_order, word_order, expected):
    assert decode_registers(regs, type_, byte_order, word_order) == expected


@pytest.mark.parametrize(("regs", "type_"), [([0x7FC0, 0], "float32"), ([0x7F80, 0], "float32"),
                                             ([0x7FF8, 0, 0, 0], "float64"), ([1], "float32"), ([1, 2], "int16")])
def test_nan_infinity_and_wrong_counts_do_not_decode(regs, type_):
    with pytest.raises(DecodeError):
        decode_registers(regs, type_)


def test_scale_and_offset_apply_to_the_decoded_value():
    p = ModbusPoint(sensor="s", address=11, type="int16", scale=0.1, offset=-40)
    assert point_value(p, [0, 9, 655], block_address=9) == pytest.approx(25.5)


class RecordingSink:
    """A recording fake of the sink (the poller's only collaborator besides the server)."""

    def __init__(self):
        self.readings: list[tuple[str, int, float]] = []
        self.gaps: list[tuple[list[str], Reason, str, bytes]] = []

    def reading(self, sensor_id, ts_ms, value, quality=0):
        self.readings.append((sensor_id, ts_ms, value))

    def gap(self, sensor_ids, ts_ms, reason, detail, payload=b""):
        self.gaps.append((list(sensor_ids), reason, detail, payload))


def run_for(config: ModbusConfig, sink, seconds: float) -> ModbusPoller:
    poller = ModbusPoller(config, sink)
    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    asyncio.run(poller.run(stop))
    return poller


@pytest.fixture
def served():
    plant = load_plant("legacy")
    store = RegisterStore(plant)
    for i, e in enumerate(plant.sensors):
        store.set_value(e.sensor_id, 100 + i * 0.5)
    port = free_port()
    with ServerThread(store, port=port):
        yield plant, store, port


def config_for(plant, port: int, units: list[int], interval_s: float = 0.2, **extra) -> ModbusConfig:
    from ingestion.bridges.config import GENERATORS

    generate, model = GENERATORS["modbus"]
    raw = generate(plant, plant.sensors, "legacy")
    blocks = [{**b, "interval_s": interval_s} for b in raw["blocks"] if b["unit"] in units]
    return model.model_validate({**raw, "port": port, "blocks": blocks, **extra})


def test_the_poller_reads_what_the_server_holds(served):
    plant, store, port = served
    cfg = config_for(plant, port, [1, 2, 5])
    sink = RecordingSink()
    poller = run_for(cfg, sink, 1.0)
    expected = {p.sensor: 100 + [e.sensor_id for e in plant.sensors].index(p.sensor) * 0.5
                for b in cfg.blocks for p in b.points}
    assert sink.readings and not sink.gaps
    for sensor, _ts, value in sink.readings:
        assert value == pytest.approx(expected[sensor], rel=1e-6)  # float32 on the wire
    assert {s for s, _, _ in sink.readings} == set(expected)
    assert all(st.polls >= 3 for st in poller.blocks)


def test_a_read_error_is_a_gap_with_its_reason_never_a_value(served):
    plant, store, port = served
    store.fail_unit(2)
    cfg = config_for(plant, port, [1, 2])
    sink = RecordingSink()
    run_for(cfg, sink, 0.7)
    failing = {p.sensor for b in cfg.blocks if b.unit == 2 for p in b.points}
    assert not failing & {s for s, _, _ in sink.readings}
    assert sink.gaps and all(set(g[0]) == failing and g[1] is Reason.SOURCE_ERROR for g in sink.gaps)
    assert "exception response 4 (device_failure)" in sink.gaps[0][2]


def test_a_nan_register_is_a_bad_payload_gap_for_that_sensor_only(served):
    plant, store, port = served
    cfg = config_for(plant, port, [3])
    first = cfg.blocks[0].points[0]
    assert first.type == "float32"
    store.set_raw(3, first.address, [0x7FC0, 0x0000])
    sink = RecordingSink()
    run_for(cfg, sink, 0.5)
    assert sink.gaps and all(g[0] == [first.sensor] and g[1] is Reason.BAD_PAYLOAD for g in sink.gaps)
    assert sink.gaps[0][3] == b"\x7f\xc0\x00\x00"
    assert first.sensor not in {s for s, _, _ in sink.readings} and sink.readings


def test_an_unreachable_server_gives_gaps_then_readings_once_it_answers():
    plant = load_plant("legacy")
    store = RegisterStore(plant)
    port = free_port()
    cfg = config_for(plant, port, [1], interval_s=0.1, reconnect_min_s=0.1, reconnect_max_s=0.3)
    sink = RecordingSink()
    poller = ModbusPoller(cfg, sink)
    stop = threading.Event()
    server = ServerThread(store, port=port)
    threading.Timer(1.0, server.start).start()
    threading.Timer(2.5, stop.set).start()
    try:
        asyncio.run(poller.run(stop))
    finally:
        server.close()
    assert sink.gaps and sink.gaps[0][1] is Reason.SOURCE_ERROR and "not made" in sink.gaps[0][2]
    assert sink.readings, "the poller reconnected"
    assert all(v == 0.0 for _, _, v in sink.readings)  # what the server holds: zeros, and only once it answered


def test_a_block_outside_the_units_registers_is_a_gap():
    plant = load_plant("legacy")
    store = RegisterStore(plant)
    port = free_port()
    cfg = ModbusConfig(port=port, blocks=[ModbusBlock(unit=1, address=500, count=2, interval_s=0.2,
                                                      points=[ModbusPoint(sensor=plant.sensors[0].sensor_id,
                                                                          address=500)])])
    sink = RecordingSink()
    with ServerThread(store, port=port):
        run_for(cfg, sink, 0.5)
    assert sink.gaps and not sink.readings
    assert "exception response 2 (illegal_address)" in sink.gaps[0][2]


def test_simulate_serve_modbus_serves_the_simulated_plant(tmp_path):
    """``gigapulse simulate --serve modbus``: the legacy plant's values at their registers, changing each tick."""
    import subprocess
    import sys
    import time

    plant = load_plant("legacy")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gigapulse.cli", "simulate", "--serve", "modbus", "--plant",
                             "legacy", "--duration", "8s", "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        cfg = config_for(plant, port, [3, 4], interval_s=0.5, reconnect_min_s=0.2, reconnect_max_s=0.5)
        import socket

        deadline = time.monotonic() + 60
        while True:  # the child starts (imports, plant, simulator) and listens
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        time.sleep(1.5)  # its first tick is written
        sink = RecordingSink()
        run_for(cfg, sink, 2.5)
    finally:
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    served = {s: v for s, _, v in sink.readings if v != 0.0}
    assert len(served) >= 0.8 * sum(len(b.points) for b in cfg.blocks), sink.gaps[:2]
    for sensor, value in served.items():
        e = plant.by_id[sensor]
        if e.lsl is not None and e.usl is not None:
            span = e.usl - e.lsl
            assert e.lsl - 2 * span < value < e.usl + 2 * span, (sensor, value)
    assert "served" in out


# --------------------------------------------------------------------------- concurrency and the schedule

def unit_blocks(plant, units: list[int], interval_s: float, endpoints: dict[int, int] | None = None) -> list[dict]:
    """One 10-register block per unit (its first sensors), at ``endpoints[unit]``'s port if given.

    Units 3.. of the legacy plant are stations with 20 or more registers (1 and 2 hold one meter each)."""
    from schemas.addresses import modbus_addresses

    addrs = modbus_addresses(plant)
    out = []
    for u in units:
        points = [{"sensor": s, "address": a.address, "type": a.type} for s, a in addrs.items()
                  if a.unit == u and a.address + a.count <= 10]
        out.append({"unit": u, "address": 0, "count": 10, "interval_s": interval_s, "points": points,
                    **({"port": endpoints[u]} if endpoints and u in endpoints else {})})
    return out


def intervals(st) -> list[float]:
    s = list(st.starts)
    return [b - a for a, b in zip(s, s[1:], strict=False)]


@pytest.mark.parametrize("connections", [2, 1])
def test_a_slow_device_delays_only_the_blocks_on_its_connection(served, connections):
    """Unit 3 answers in 0.35 s (the blocks poll every 0.1 s); unit 4 answers at once. On a connection each,
    unit 4 keeps its schedule; sharing one connection, unit 4's polls queue behind unit 3's."""
    plant, store, port = served
    store.slow_unit(3, 0.35)
    cfg = ModbusConfig(plant="legacy", port=port, connections=connections, timeout_s=1.0,
                       blocks=unit_blocks(plant, [3, 4], 0.1))
    sink = RecordingSink()
    poller = run_for(cfg, sink, 2.0)
    slow, fast = poller.blocks
    assert slow.skipped >= 5 and slow.failed == 0  # late answers: slots skipped, still read, no gap
    assert not sink.gaps
    read = {s for s, _, _ in sink.readings}
    assert set(slow.sensors) <= read and set(fast.sensors) <= read
    if connections == 2:
        assert slow.link is not fast.link
        assert fast.polls >= 15 and fast.skipped <= 3, (fast.polls, fast.skipped)  # a busy machine may cost one
        assert sorted(intervals(fast))[len(intervals(fast)) // 2] == pytest.approx(0.1, abs=0.01)
    else:
        assert slow.link is fast.link
        assert fast.skipped >= 5 and fast.polls <= 8, (fast.polls, fast.skipped)


def test_a_device_past_its_timeout_is_a_gap_and_the_other_devices_keep_their_schedule(served):
    plant, store, port = served
    store.slow_unit(3, 1.5)
    cfg = ModbusConfig(plant="legacy", port=port, connections=3, timeout_s=0.3,
                       blocks=unit_blocks(plant, [3, 4, 5], 0.1))
    sink = RecordingSink()
    poller = run_for(cfg, sink, 1.5)
    dead, *alive = poller.blocks
    seen = [(g[0][0], g[1], g[2]) for g in sink.gaps]
    assert dead.failed >= 1 and dead.skipped >= 2, (dead.failed, dead.skipped, seen)
    assert sink.gaps and all(g[1] is Reason.SOURCE_ERROR and set(g[0]) == set(dead.sensors) for g in sink.gaps), seen
    assert f"unit 3 holding registers 0..9 on 127.0.0.1:{port}" in sink.gaps[0][2], seen
    assert not set(dead.sensors) & {s for s, _, _ in sink.readings}  # no value invented for a failed read
    for st in alive:
        assert st.polls >= 10 and st.skipped <= 3 and st.failed == 0, (st.polls, st.skipped)


def test_two_endpoints_poll_side_by_side_and_one_down_does_not_hold_the_other(served):
    """Two PLCs: one answers, the other's port has nobody listening (reconnect with backoff, gaps)."""
    plant, store, port = served
    dead_port = free_port()
    cfg = ModbusConfig(plant="legacy", port=port, timeout_s=0.5, reconnect_min_s=0.1, reconnect_max_s=0.4,
                       blocks=unit_blocks(plant, [3, 4, 5], 0.1, endpoints={5: dead_port}))
    sink = RecordingSink()
    poller = run_for(cfg, sink, 1.5)
    assert len(poller.links) == 2
    a, b, down = poller.blocks
    assert a.link is b.link and down.link.port == dead_port
    for st in (a, b):
        assert st.polls >= 10 and st.skipped <= 3 and st.failed == 0, (st.polls, st.skipped)
    gaps = [g for g in sink.gaps if set(g[0]) == set(down.sensors)]
    assert gaps and len(gaps) == len(sink.gaps) and all("not made" in g[2] and str(dead_port) in g[2] for g in gaps)
    assert not set(down.sensors) & {s for s, _, _ in sink.readings}


def test_a_late_poll_does_not_shift_the_later_slots(served):
    """The schedule is anchored: after a slow answer, the next polls fall back on the original grid."""
    plant, store, port = served
    cfg = ModbusConfig(plant="legacy", port=port, timeout_s=1.0, blocks=unit_blocks(plant, [4], 0.1))
    poller = ModbusPoller(cfg, RecordingSink())
    stop = threading.Event()

    def slow_once():
        store.slow_unit(4, 0.25)
        threading.Timer(0.2, store.slow_unit, (4, 0)).start()

    threading.Timer(0.55, slow_once).start()
    threading.Timer(1.6, stop.set).start()
    asyncio.run(poller.run(stop))
    st = poller.blocks[0]
    starts = list(st.starts)
    assert st.skipped >= 2
    grid = starts[0]
    # off the grid of the first poll, in slots (0 = on a slot, 0.5 = half way between two)
    off = [min(f, 1 - f) for f in (((t - grid) / 0.1) % 1.0 for t in starts)]
    after = off[len(off) // 2:]  # the polls after the slow answers: a relative sleep would have moved them by 0.5
    assert sorted(after)[len(after) // 2] < 0.1, off
