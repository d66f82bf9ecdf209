"""The front door: every command has a working --help, and a mistake a user can fix is one line on stderr.

Most cases run ``gigapulse.cli.main`` in-process (it is the console-script entry point, with the same
error handling); a few run the real process to show nothing else reaches stderr. None needs a broker:
every refusal happens before a connection is made.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer

from gigapulse.cli import app
from tests.cli_support import run_cli

REPO = Path(__file__).resolve().parents[1]


def _commands(group, path=()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in sorted(group.commands.items()):
        out.append((*path, name))
        if hasattr(cmd, "commands"):
            out.extend(_commands(cmd, (*path, name)))
    return out


COMMANDS = _commands(typer.main.get_command(app))


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    return run_cli(argv, capsys)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for k in list(os.environ):
        if k.startswith("GIGAPULSE_"):
            monkeypatch.delenv(k)
    # nothing here may reach a developer's broker or data dir
    monkeypatch.setenv("GIGAPULSE_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    monkeypatch.setenv("GIGAPULSE_DATA_DIR", str(tmp_path / "data"))


def test_the_command_tree_is_complete():
    names = {" ".join(c) for c in COMMANDS}
    for expected in ("broker start", "broker stop", "broker status", "broker fetch", "topics apply", "topics list",
                     "schemas export", "simulate", "replay", "stream", "sql", "warehouse", "bench", "jobs"):
        assert expected in names


@pytest.mark.parametrize("command", [(), *COMMANDS], ids=lambda c: " ".join(c) or "gigapulse")
def test_help_exits_zero(command, capsys):
    rc, out, err = run([*command, "--help"], capsys)
    assert rc == 0, err
    assert "Usage:" in out and "--help" in out
    assert err == ""


def test_help_in_a_real_process():
    res = subprocess.run([sys.executable, "-m", "gigapulse.cli", "--help"], capture_output=True, text=True,
                         timeout=60, cwd=REPO, env={k: v for k, v in os.environ.items() if k != "GIGAPULSE_DEBUG"})
    assert res.returncode == 0, res.stderr
    for command in ("simulate", "replay", "stream", "sql", "broker", "topics", "jobs", "bench"):
        assert command in res.stdout



def test_each_command_works_with_only_its_own_section_imported():
    """``main`` imports only the section a command line names: each must stand on its own."""
    top = sorted({c[0] for c in COMMANDS})
    code = ("import sys\nfrom gigapulse.cli import main\ntry:\n    main([sys.argv[1], '--help'])\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "import gigapulse.cli as c\nprint(len(c._loaded))")
    env = {k: v for k, v in os.environ.items() if k != "GIGAPULSE_DEBUG"}
    for command in top:
        res = subprocess.run([sys.executable, "-c", code, command], capture_output=True, text=True, timeout=60,
                             cwd=REPO, env=env)
        assert res.returncode == 0, (command, res.stderr)
        assert "Usage:" in res.stdout and res.stdout.rstrip().endswith("1"), (command, res.stdout[-200:])

BAD = [
    (["simulate", "--duration", "forever"], 2, "invalid duration"),
    (["simulate", "--duration", "0s"], 2, "invalid duration"),
    (["simulate", "--speed", "-3"], 2, "speed"),
    (["simulate", "--speed", "nan"], 2, "invalid speed"),
    (["simulate", "--plant", "nope"], 1, "nope"),
    (["simulate", "--start", "yesterday"], 2, "--start"),
    (["simulate", "--start", "2026-01-05T06:00:00"], 2, "UTC offset"),
    (["simulate", "--inject-faults", "2"], 2, "--inject-faults"),
    (["simulate", "--format", "xml"], 2, "--format"),
    (["simulate", "--seed", "many"], 2, "--seed"),
    (["simulate", "--seed", "-1"], 2, "--seed"),
    (["simulate", "--no-such-option"], 2, "no-such-option"),
    (["topics", "apply", "--min-insync-replicas", "2"], 2, "--min-insync-replicas"),
    (["topics", "apply", "--replication-factor", "0"], 2, "--replication-factor"),
    (["broker", "start", "--nodes", "0"], 2, "--nodes"),
    (["broker", "start", "--nodes", "3", "--port", "19192", "--controller-port", "19194"], 1, "overlap"),
    (["replay", "missing.csv"], 1, "file not found"),
    (["replay"], 2, "Missing argument"),
    (["replay", "missing.csv", "--map", "ts"], 2, "--map"),
    (["sql", "DROP VIEW readings"], 1, "read-only"),
    (["sql", "CREATE TABLE t AS SELECT 1"], 1, "read-only"),
    (["sql", "SELECT * FROM no_such_table"], 1, "no warehouse in the data directory"),
    (["no-such-command"], 2, "no-such-command"),
    (["health"], 1, "no health port"),
    (["health", "--port", "9", "--timeout", "2"], 1, "no stream worker answers at http://127.0.0.1:9/status"),
]


@pytest.mark.parametrize(("argv", "code", "needle"), BAD, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_user_errors_are_one_line(argv, code, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = run(argv, capsys)
    assert rc == code
    assert err.startswith("gigapulse: error:"), err
    assert err.count("\n") == 1, err
    assert needle in err


def test_a_bad_setting_is_one_line(capsys, monkeypatch):
    monkeypatch.setenv("GIGAPULSE_PRODUCER_ACKS", "maybe")
    rc, _, err = run(["simulate", "--duration", "1s"], capsys)
    assert rc == 1
    assert err.startswith("gigapulse: error: invalid setting") and err.count("\n") == 1, err
    assert "acks" in err


@pytest.mark.parametrize(("argv", "env", "code"), [
    (["simulate", "--duration", "forever"], {}, 2),
    (["simulate", "--duration", "1s"], {"GIGAPULSE_PRODUCER_ACKS": "maybe"}, 1),
])
def test_user_errors_in_a_real_process(argv, env, code, tmp_path):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GIGAPULSE_")}
    full_env.update(env, GIGAPULSE_BOOTSTRAP_SERVERS="127.0.0.1:9", PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-m", "gigapulse.cli", *argv], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path, env=full_env)
    assert res.returncode == code
    assert res.stderr.startswith("gigapulse: error:") and res.stderr.count("\n") == 1, res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""


def test_kafka_pythons_cancelled_refresh_error_is_dropped_and_real_errors_kept():
    import logging

    from gigapulse.cli import _closed_client_refresh

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("kafka.cluster", logging.ERROR, __file__, 1, msg, (), None)

    assert not _closed_client_refresh(record("Metadata refresh: failed Cancelled"))
    assert _closed_client_refresh(record("Metadata refresh: failed NodeNotReadyError"))


def test_kafka_pythons_close_race_error_is_dropped_and_other_close_errors_kept():
    import logging

    from gigapulse.cli import _closed_client_close_race

    def record(msg: str, exc: BaseException | None) -> logging.LogRecord:
        info = (type(exc), exc, None) if exc else None
        return logging.LogRecord("kafka.net.selector", logging.ERROR, __file__, 1, msg, (), info)

    closing = "Error closing coroutine for cancelled task"
    assert not _closed_client_close_race(record(closing, ValueError("generator already executing")))
    assert _closed_client_close_race(record(closing, ValueError("something else")))
    assert _closed_client_close_race(record(closing, RuntimeError("generator already executing")))
    assert _closed_client_close_race(record("Task ran for 0.2s", None))


UNREACHABLE = [
    (["simulate", "--duration", "10s"], {"GIGAPULSE_CONNECT_TIMEOUT_S": "1"}),
    (["stream", "--drain"], {"GIGAPULSE_CONNECT_TIMEOUT_S": "1"}),
    (["replay", "readings.csv"], {"GIGAPULSE_CONNECT_TIMEOUT_S": "1"}),
    (["topics", "apply"], {"GIGAPULSE_CONNECT_TIMEOUT_S": "1"}),
]


@pytest.mark.parametrize(("argv", "env"), UNREACHABLE, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_an_unreachable_kafka_is_one_line_within_seconds(argv, env, tmp_path):
    """Nothing listens on the port: one line naming the servers and the fix, in seconds, not 30 s of retries."""
    from tests.conftest import free_port

    (tmp_path / "readings.csv").write_text("sensor_id,ts,value\nplant.a,2026-01-05T06:00:00Z,1.0\n")
    bootstrap = f"127.0.0.1:{free_port()}"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GIGAPULSE_")}
    full_env.update(env, GIGAPULSE_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(REPO))
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "gigapulse.cli", *argv, "--bootstrap", bootstrap],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path, env=full_env)
    wall = time.monotonic() - t0
    assert res.returncode == 1, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"gigapulse: error: cannot reach Kafka at {bootstrap}"), lines[0]
    assert "gigapulse broker start" in lines[0] and "GIGAPULSE_BOOTSTRAP_SERVERS" in lines[0]
    assert "Traceback" not in res.stderr and "kafka.net" not in res.stderr and "aiokafka" not in res.stderr
    # The 1 s connect timeout, not the clients' own 30+ s of retries; the rest is a busy machine's start-up.
    assert wall < 20, f"took {wall:.1f}s"
    assert not (tmp_path / "gigapulse-stream-data").exists()


def test_routine_worker_warnings_are_info_and_real_errors_keep_their_level():
    import logging

    from aiokafka.errors import GroupAuthorizationFailedError, GroupCoordinatorNotAvailableError

    from gigapulse.cli import _routine_to_info

    def record(name: str, level: int, msg: str, *args) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, msg, args, None)

    root = logging.getLogger()
    old = root.level
    try:
        root.setLevel(logging.WARNING)  # a worker at the default --loglevel warn
        coordinator = record("aiokafka.consumer.group_coordinator", logging.ERROR,
                             "Group Coordinator Request failed: %s", GroupCoordinatorNotAvailableError())
        assert not _routine_to_info(coordinator)
        assert coordinator.levelno == logging.INFO and coordinator.levelname == "INFO"
        timer = record("mode.timers", logging.WARNING, "Timer %s is overlapping (interval=%r runtime=%r)",
                       "flush_due_partitions", 0.1, 0.4)
        assert not _routine_to_info(timer)
        fatal = record("aiokafka.consumer.group_coordinator", logging.ERROR,
                       "Group Coordinator Request failed: %s", GroupAuthorizationFailedError())
        assert _routine_to_info(fatal) and fatal.levelno == logging.ERROR
        other = record("aiokafka.consumer.group_coordinator", logging.ERROR, "OffsetCommit failed for group %s", "g")
        assert _routine_to_info(other) and other.levelno == logging.ERROR
        root.setLevel(logging.INFO)  # --loglevel info: shown, as INFO
        assert _routine_to_info(record("mode.timers", logging.WARNING, "Timer %s is overlapping (x)", "t"))
    finally:
        root.setLevel(old)


def test_a_broker_outage_logs_each_connection_error_once_per_interval_with_a_count():
    import logging

    from gigapulse.cli import _OutageThrottle

    def record(msg: str, *args) -> logging.LogRecord:
        return logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, msg, args, None)

    throttle = _OutageThrottle(every_s=3600)
    connect = [record("Unable connect to node with id %s: %s", 1, "refused") for _ in range(500)]
    passed = [r for r in connect if throttle.filter(r)]
    assert len(passed) == 1  # the first one shows when the outage started
    assert throttle.filter(record("Unable to update metadata from %s", [1]))  # another kind: its own first line
    assert throttle.filter(record("OffsetCommit failed for group %s", "g"))  # anything else always passes
    throttle.every_s = 0  # the interval is over: the next one passes, saying how many were held back
    later = record("Unable connect to node with id %s: %s", 1, "refused")
    assert throttle.filter(later) and "499 more like it" in later.getMessage()
