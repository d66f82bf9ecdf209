"""Settings read at start-up: the stream worker's recovery bounds and the rollups' shifts; refusals in one line."""

from __future__ import annotations

import socket

import pytest
from pydantic import ValidationError

from gigapulse.cli import main
from transforms.settings import DEFAULT_SHIFT_STARTS, RollupSettings, StreamSettings


def test_defaults_hand_a_dead_workers_partitions_on_within_the_bound():
    s = StreamSettings()
    # Detection takes the session timeout after the last heartbeat; the survivor hears of the
    # rebalance at its next heartbeat. What is left of 10 s is for the rejoin and the catch-up.
    assert s.session_timeout_s + 2 * s.heartbeat_interval_s <= 6.0
    assert s.heartbeat_interval_s * 3 <= s.session_timeout_s
    assert s.instance_id is None  # static membership is opted into per worker


def test_a_heartbeat_above_a_third_of_the_session_is_refused(monkeypatch):
    monkeypatch.setenv("GIGAPULSE_STREAM_SESSION_TIMEOUT_S", "6")
    monkeypatch.setenv("GIGAPULSE_STREAM_HEARTBEAT_INTERVAL_S", "2.5")
    with pytest.raises(ValidationError, match="at most a third of session_timeout_s"):
        StreamSettings()
    monkeypatch.setenv("GIGAPULSE_STREAM_HEARTBEAT_INTERVAL_S", "2")
    assert StreamSettings().heartbeat_interval_s == 2


@pytest.mark.parametrize(("raw", "expected"), [
    ("stream-worker-{hostname}", f"stream-worker-{socket.gethostname()}"),
    ("worker-1", "worker-1"),
    ("", None),
    ("  ", None),
])
def test_instance_id_expands_the_hostname_and_empty_means_unset(monkeypatch, raw, expected):
    monkeypatch.setenv("GIGAPULSE_STREAM_INSTANCE_ID", raw)
    assert StreamSettings().instance_id == expected


@pytest.mark.parametrize(("env", "needle"), [
    ({"GIGAPULSE_STREAM_HEARTBEAT_INTERVAL_S": "3"}, "heartbeat_interval_s"),
    ({"GIGAPULSE_STREAM_INSTANCE_ID": "a worker"}, "instance_id"),
    ({"GIGAPULSE_STREAM_SESSION_TIMEOUT_S": "soon"}, "session_timeout_s"),
])
def test_a_bad_recovery_setting_stops_the_worker_with_one_line(monkeypatch, capsys, env, needle):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as exc:
        main(["stream", "--bootstrap", "127.0.0.1:1"])
    err = capsys.readouterr().err
    assert exc.value.code == 1
    assert err.startswith("gigapulse: error: invalid setting") and err.count("\n") == 1, err
    assert needle in err


@pytest.mark.parametrize(("raw", "minutes", "spelled"), [
    ("06:00,14:00,22:00", (360, 840, 1320), "06:00,14:00,22:00"),
    (" 22:00, 6:00 ,14:30", (360, 870, 1320), "06:00,14:30,22:00"),
    ("00:00", (0,), "00:00"),
])
def test_shift_starts_are_sorted_and_spelled_one_way(monkeypatch, raw, minutes, spelled):
    monkeypatch.setenv("GIGAPULSE_SHIFT_STARTS", raw)
    s = RollupSettings()
    assert s.shift_start_minutes == minutes and s.shift_starts == spelled


@pytest.mark.parametrize(("raw", "needle"), [
    ("24:00", "'24:00' is not a time HH:MM"), ("6", "'6' is not a time"), ("06:0", "'06:0' is not a time"),
    ("", "'' is not a time"), ("06:00,06:00", "names a shift start twice"),
])
def test_a_bad_shift_start_is_refused(monkeypatch, raw, needle):
    monkeypatch.setenv("GIGAPULSE_SHIFT_STARTS", raw)
    with pytest.raises(ValidationError, match=needle):
        RollupSettings()
    assert RollupSettings.model_fields["shift_starts"].default == DEFAULT_SHIFT_STARTS


def test_material_settings_read_files_and_plants_from_the_environment(monkeypatch, tmp_path):
    from transforms.settings import MaterialSettings

    assert MaterialSettings().bom_file is None and MaterialSettings().plants == ["reference", "legacy"]
    monkeypatch.setenv("GIGAPULSE_MATERIAL_BOM_FILE", str(tmp_path / "bom.yaml"))
    monkeypatch.setenv("GIGAPULSE_MATERIAL_PLANTS", '["reference"]')
    settings = MaterialSettings()
    assert settings.bom_file == tmp_path / "bom.yaml" and settings.plants == ["reference"]
