"""Security against real brokers: SASL/SCRAM-SHA-512 with and without TLS, the role ACLs, refusals as one
line, and secrets that never show.

Two brokers for the module (one SASL_PLAINTEXT, one SASL_SSL with the development certificates), started
by the project's own code with known passwords; every command's captured output is searched for them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import stat
import subprocess
import sys
from base64 import b64decode
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from infra import security
from infra.broker import BrokerSettings
from infra.security import BrokerSecuritySettings
from infra.temporary import temporary_broker
from ingestion.security import KafkaSecuritySettings, aiokafka_kwargs, kafka_python_kwargs
from schemas import topics
from tests.conftest import free_port

PASSWORDS = {"admin": "adm1n-Kx81-secret", "ingest": "1ngest-Qv27-secret", "stream": "str3am-Lp55-secret",
             "analyst": "an4lyst-Zt03-secret"}
WRONG = "wr0ng-Hb64-password"
SECRETS = (*PASSWORDS.values(), WRONG)


def _broker_security(mode: str) -> BrokerSecuritySettings:
    return BrokerSecuritySettings(security=mode, **{f"{r}_password": SecretStr(p) for r, p in PASSWORDS.items()})


@contextmanager
def secured_broker(data_dir: Path, mode: str) -> Iterator[tuple[BrokerSettings, BrokerSecuritySettings]]:
    sec = _broker_security(mode)
    with temporary_broker(data_dir, sec=sec) as settings:
        yield settings, sec


@pytest.fixture(scope="module")
def sasl(tmp_path_factory):
    with secured_broker(tmp_path_factory.mktemp("sasl") / "kafka", "sasl") as b:
        yield b


@pytest.fixture(scope="module")
def sasl_ssl(tmp_path_factory):
    with secured_broker(tmp_path_factory.mktemp("sasl_ssl") / "kafka", "sasl_ssl") as b:
        yield b


def _client(b: tuple[BrokerSettings, BrokerSecuritySettings], role: str, password: str | None = None
            ) -> KafkaSecuritySettings:
    settings, sec = b
    ca = security.tls_dir(settings.data_dir) / "ca.pem" if sec.protocol == "SASL_SSL" else None
    return KafkaSecuritySettings(security_protocol=sec.protocol, sasl_username=role,
                                 sasl_password=SecretStr(password or PASSWORDS[role]), ssl_cafile=ca)


def _produce(b: tuple[BrokerSettings, BrokerSecuritySettings], role: str, topic: str, value: bytes,
             timeout_s: float) -> None:
    """One acks=all record to ``topic`` as ``role``, waited for: a refusal raises the client's error."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=b[0].bootstrap, acks="all", max_block_ms=int(timeout_s * 1000),
                             **kafka_python_kwargs(_client(b, role)))
    try:
        producer.send(topic, key=b"k", value=value).get(timeout=timeout_s)
    finally:
        producer.close(timeout=5)


def _env(b, role: str | None, password: str | None = None, **extra: str) -> dict[str, str]:
    """A clean environment for a CLI run as ``role`` (None: no credentials at all)."""
    settings, sec = b
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIGAPULSE_KAFKA_", "GIGAPULSE_BROKER_"))}
    env.update(GIGAPULSE_BOOTSTRAP_SERVERS=settings.bootstrap, GIGAPULSE_CONNECT_TIMEOUT_S="10")
    if role is not None:
        env.update(GIGAPULSE_KAFKA_SECURITY_PROTOCOL=sec.protocol, GIGAPULSE_KAFKA_SASL_USERNAME=role,
                   GIGAPULSE_KAFKA_SASL_PASSWORD=password or PASSWORDS[role])
        if sec.protocol == "SASL_SSL":
            env["GIGAPULSE_KAFKA_SSL_CAFILE"] = str(security.tls_dir(settings.data_dir) / "ca.pem")
    env.update(extra)
    return env


def _cli(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gigapulse.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def _no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"a password shows in: {text[-500:]}"


def _refused_in_one_line(res: subprocess.CompletedProcess, pattern: str) -> None:
    assert res.returncode != 0, res.stdout[-500:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("gigapulse: error: "), res.stderr[-1500:]
    assert "Traceback" not in res.stderr
    assert re.search(pattern, lines[0]), lines[0]
    _no_secret(res.stdout, res.stderr)


def _scorer_joins_and_stops(env: dict[str, str]) -> None:
    """``gigapulse score`` logs in, joins its consumer group and is given the events partitions; SIGTERM ends it."""
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "gigapulse.cli", "score"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "scorer: partitions [0, 1, 2] assigned" in line:
                break
        assert any("partitions [0, 1, 2] assigned" in ln for ln in lines), "".join(lines)[-2000:]
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0 and "scorer done" in rest, rest[-2000:]
    _no_secret("".join(lines), rest)


SIMULATE = ("simulate", "--plant", "reference", "--duration", "30s", "--seed", "3", "--start", "2026-01-05T06:00:00Z")


# --------------------------------------------------------------------------- without a broker

def test_security_off_changes_nothing():
    sec = BrokerSecuritySettings(security="none")
    assert security.server_overrides(sec, "127.0.0.1", 1, 2, Path("/nowhere")) == {}
    assert security.format_args(sec) == []
    plain = KafkaSecuritySettings(security_protocol="PLAINTEXT")
    assert kafka_python_kwargs(plain) == {} and aiokafka_kwargs(plain) == {}


def test_a_role_without_its_password_is_one_line_naming_the_setting():
    sec = BrokerSecuritySettings(security="sasl", admin_password=SecretStr("x"))
    with pytest.raises(security.SecurityError, match="GIGAPULSE_BROKER_INGEST_PASSWORD"):
        security.format_args(sec)


def test_the_storage_tool_gets_salted_hashes_never_the_password():
    arg = security.scram_credential("pencil", "alice")
    assert "pencil" not in arg
    m = re.fullmatch(r'SCRAM-SHA-512=\[name=alice,iterations=(\d+),salt="([^"]+)",saltedpassword="([^"]+)"\]', arg)
    assert m, arg
    salt, salted = b64decode(m[2]), b64decode(m[3])
    assert hmac.compare_digest(salted, hashlib.pbkdf2_hmac("sha512", b"pencil", salt, int(m[1])))


def test_client_settings_keep_the_password_out_of_reprs_and_errors(tmp_path):
    s = KafkaSecuritySettings(security_protocol="SASL_PLAINTEXT", sasl_username="ingest",
                              sasl_password=SecretStr(WRONG))
    assert WRONG not in repr(s) and WRONG not in str(s) and WRONG not in s.describe()
    assert kafka_python_kwargs(s)["sasl_plain_password"] == WRONG
    pw = tmp_path / "pw"
    pw.write_text(PASSWORDS["stream"] + "\n")
    from_file = KafkaSecuritySettings(security_protocol="SASL_PLAINTEXT", sasl_username="s", sasl_password_file=pw)
    assert from_file.password() == PASSWORDS["stream"]
    with pytest.raises(ValidationError) as exc:
        KafkaSecuritySettings(security_protocol="SASL_SSL", sasl_password=SecretStr(WRONG))
    assert "GIGAPULSE_KAFKA_SASL_USERNAME" in str(exc.value) and WRONG not in str(exc.value)


def test_broker_start_without_a_role_password_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIGAPULSE_KAFKA_", "GIGAPULSE_BROKER_"))}
    env.update(GIGAPULSE_BROKER_SECURITY="sasl", GIGAPULSE_BROKER_ADMIN_PASSWORD=PASSWORDS["admin"])
    res = _cli("broker", "start", "--data-dir", str(tmp_path / "kafka"), "--port", str(free_port()),
               "--controller-port", str(free_port()), env=env, timeout=60)
    _refused_in_one_line(res, r"GIGAPULSE_BROKER_INGEST_PASSWORD \(or GIGAPULSE_BROKER_INGEST_PASSWORD_FILE\) is "
                              r"required with GIGAPULSE_BROKER_SECURITY=sasl")
    assert not (tmp_path / "kafka" / "broker.pid").exists()


def test_help_shows_no_secret():
    env = dict(os.environ, GIGAPULSE_KAFKA_SASL_PASSWORD=WRONG, GIGAPULSE_BROKER_ADMIN_PASSWORD=WRONG,
               GIGAPULSE_KAFKA_SECURITY_PROTOCOL="SASL_SSL", GIGAPULSE_KAFKA_SASL_USERNAME="ingest")
    for args in (("--help",), ("simulate", "--help"), ("stream", "--help"), ("broker", "start", "--help"),
                 ("topics", "apply", "--help")):
        res = _cli(*args, env=env, timeout=60)
        assert res.returncode == 0, res.stderr
        _no_secret(res.stdout, res.stderr)


# --------------------------------------------------------------------------- real brokers

@pytest.mark.integration
@pytest.mark.parametrize("mode", ["sasl", "sasl_ssl"])
def test_simulate_then_stream_into_the_lake_with_the_right_credentials(mode, request, tmp_path):
    b = request.getfixturevalue(mode)
    settings, _ = b
    res = _cli(*SIMULATE, env=_env(b, "ingest"))
    assert res.returncode == 0, res.stderr[-2000:]
    _no_secret(res.stdout, res.stderr)
    # The stream role reads its password from a file, as a mounted secret would give it.
    pw = tmp_path / "stream.pw"
    pw.write_text(PASSWORDS["stream"])
    env = _env(b, "stream", GIGAPULSE_DATA_DIR=str(tmp_path / "data"), GIGAPULSE_STREAM_PUBLISH_FEATURES="true",
               GIGAPULSE_STREAM_GROUP_ID=f"gigapulse-stream-{mode}")
    del env["GIGAPULSE_KAFKA_SASL_PASSWORD"]
    env["GIGAPULSE_KAFKA_SASL_PASSWORD_FILE"] = str(pw)
    res = _cli("stream", "--drain", "--loglevel", "info", env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Unclosed AIOKafkaProducer" not in res.stderr, res.stderr[-2000:]
    rows = dict(re.findall(r"(\w+)=([\d,]+)", res.stdout.splitlines()[-1]))
    assert int(rows["readings"].replace(",", "")) > 5_000 and int(rows["sensor_features_1m"].replace(",", "")) > 0
    _no_secret(res.stdout, res.stderr)
    if mode == "sasl":  # the scorer (kafka-python, group gigapulse-scorer) as the stream role: joins its group
        _scorer_joins_and_stops(env)
    # The features the worker published (as stream) are on their topic, read back as the admin.
    from kafka import KafkaConsumer, TopicPartition

    admin = _client(b, "admin")
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, **kafka_python_kwargs(admin))
    try:
        tps = [TopicPartition(topics.FEATURES_SENSOR_1M, p) for p in range(3)]
        assert sum(consumer.end_offsets(tps).values()) > 0
    finally:
        consumer.close()
    assert stat.S_IMODE((settings.data_dir / "server.properties").stat().st_mode) == 0o600
    _no_secret(settings.log_file.read_text(errors="replace"))


@pytest.mark.integration
@pytest.mark.parametrize("args", [SIMULATE, ("stream", "--drain"), ("topics", "apply")], ids=lambda a: a[0])
def test_a_wrong_password_is_refused_in_one_line(sasl_ssl, args):
    res = _cli(*args, env=_env(sasl_ssl, "ingest", WRONG), timeout=90)
    _refused_in_one_line(res, r"refused the login as 'ingest' .*SaslAuthenticationFailed")


@pytest.mark.integration
@pytest.mark.parametrize("mode, pattern", [("sasl", "requires a login"), ("sasl_ssl", "requires TLS and a login")])
def test_no_credentials_are_refused_in_one_line(mode, pattern, request):
    b = request.getfixturevalue(mode)
    for args in (SIMULATE, ("topics", "apply")):
        _refused_in_one_line(_cli(*args, env=_env(b, None), timeout=90), pattern)


@pytest.mark.integration
def test_tls_without_the_ca_is_refused_in_one_line(sasl_ssl):
    env = _env(sasl_ssl, "ingest")
    del env["GIGAPULSE_KAFKA_SSL_CAFILE"]  # the system's CAs do not know the development CA
    _refused_in_one_line(_cli(*SIMULATE, env=env, timeout=90), r"TLS .* failed .*GIGAPULSE_KAFKA_SSL_CAFILE")


@pytest.mark.integration
def test_a_role_writes_and_reads_only_its_own_topics(sasl_ssl):
    """ingest writes plant topics, not features; stream writes features, not plant readings; analyst reads
    nothing. kafka-python for the producers and the analyst's consumer, aiokafka for the stream role."""
    import asyncio

    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import TopicAuthorizationFailedError as AioTopicDenied
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError, TopicAuthorizationFailedError

    settings, _ = sasl_ssl

    def produce(role: str, topic: str) -> None:
        _produce(sasl_ssl, role, topic, b"{}", timeout_s=20)

    produce("ingest", topics.READINGS)
    for topic in (topics.FEATURES_SENSOR_1M, topics.FEATURES_CELL_RISK):
        with pytest.raises(TopicAuthorizationFailedError):
            produce("ingest", topic)
    for role, topic in (("stream", topics.READINGS), ("stream", topics.EVENTS), ("analyst", topics.READINGS)):
        with pytest.raises(TopicAuthorizationFailedError):
            produce(role, topic)

    async def aio(topic: str) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, request_timeout_ms=20_000,
                                    **aiokafka_kwargs(_client(sasl_ssl, "stream")))
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"{}", key=b"k")
        finally:
            await producer.stop()

    asyncio.run(aio(topics.FEATURES_SENSOR_1M))
    with pytest.raises(AioTopicDenied):
        asyncio.run(aio(topics.READINGS))

    def read(role: str) -> list:
        """What ``role`` reads of the readings topic in a few seconds (ingest wrote one record above)."""
        consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False,
                                 request_timeout_ms=15_000, **kafka_python_kwargs(_client(sasl_ssl, role)))
        got: list = []
        try:
            consumer.assign([TopicPartition(topics.READINGS, p) for p in range(6)])
            consumer.seek_to_beginning()
            for _ in range(16):
                got += [r for recs in consumer.poll(timeout_ms=500).values() for r in recs]
                if got:
                    break
            if role == "analyst":
                with pytest.raises(KafkaError):  # refused outright, not just empty
                    consumer.end_offsets([TopicPartition(topics.READINGS, 0)])
        finally:
            consumer.close()
        return got

    assert read("stream"), "the stream role reads the plant topics"
    assert read("analyst") == []


@pytest.mark.integration
def test_a_client_logging_its_configuration_shows_no_password(sasl):
    """kafka-python's admin client logs its whole configuration, password included, at DEBUG; with the CLI's
    logging set up, the line is printed with the password masked."""
    settings, _ = sasl
    script = (
        "import logging\n"
        "from gigapulse.cli.common import _setup_logging\n"
        "from ingestion.security import active, kafka_python_kwargs\n"
        "from kafka import KafkaAdminClient\n"
        "_setup_logging(True)\n"
        "logging.getLogger('kafka').setLevel(logging.DEBUG)\n"
        f"admin = KafkaAdminClient(bootstrap_servers={settings.bootstrap!r}, **kafka_python_kwargs(active()))\n"
        "print(sorted(admin.list_topics())[:1])\n"
        "admin.close()\n"
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=90,
                         env=_env(sasl, "admin"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Starting KafkaAdminClient with configuration" in res.stderr and "'sasl_plain_password': '***'" in res.stderr
    _no_secret(res.stdout, res.stderr)


@pytest.mark.integration
def test_a_secured_three_node_cluster_replicates_and_enforces_the_roles(tmp_path):
    """SASL on a 3-node cluster: the nodes log in to each other (replication under min ISR 2 needs it), the
    ingest role's acks=all write is acknowledged and read back by the stream role, and ingest is refused on
    a features topic, as on one broker."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import TopicAuthorizationFailedError

    sec = _broker_security("sasl")
    with temporary_broker(tmp_path / "kafka", nodes=3, heap="384m", sec=sec) as settings:
        cluster = (settings, sec)

        def produce(role: str, topic: str) -> None:
            _produce(cluster, role, topic, b'{"n": 1}', timeout_s=30)

        produce("ingest", topics.READINGS)
        with pytest.raises(TopicAuthorizationFailedError):
            produce("ingest", topics.FEATURES_SENSOR_1M)
        consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False,
                                 request_timeout_ms=20_000, **kafka_python_kwargs(_client(cluster, "stream")))
        got: list = []
        try:
            consumer.assign([TopicPartition(topics.READINGS, p) for p in range(6)])
            consumer.seek_to_beginning()
            for _ in range(40):
                got += [r.value for recs in consumer.poll(timeout_ms=500).values() for r in recs]
                if got:
                    break
        finally:
            consumer.close()
        assert got == [b'{"n": 1}']
        log = "".join(n.log_file.read_text(errors="replace") for n in settings.node_list)
        _no_secret(log)
