"""Security of the local broker, switched on by ``GIGAPULSE_BROKER_SECURITY`` (none, sasl, sasl_ssl).

With ``none`` (the default) nothing here changes the broker. Otherwise:

- the client listener (named ``BROKER``) takes SASL/SCRAM-SHA-512 only, over TLS with ``sasl_ssl``;
  inter-broker traffic uses the same listener, authenticated as the admin user;
- the KRaft controller listener takes SASL/PLAIN from the admin user only (SCRAM credentials live in the
  metadata log the controller serves, so they cannot guard the controller itself); it stays without TLS
  and is bound to the same host as the client listener (loopback by default);
- the SCRAM users (admin and one per role) are written into the metadata log when the storage is formatted,
  as salted hashes computed here, so no password is ever on a command line;
- Kafka's ``StandardAuthorizer`` refuses everything no ACL allows; the admin is the super user, and
  :func:`apply_acls` grants each role what it needs (``ROLE_ACLS``, docs/security.md).

Certificates: ``sasl_ssl`` without ``GIGAPULSE_BROKER_TLS_KEYSTORE`` generates a development CA and a broker
certificate for 127.0.0.1/localhost under ``<data dir>/tls`` once; production brings its own PEM files.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas import topics

SCRAM = "SCRAM-SHA-512"
SCRAM_ITERATIONS = 8192
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
ROLES = ("ingest", "stream", "analyst")


class SecurityError(RuntimeError):
    """A security setting is missing or unusable; one line, never a secret."""


class BrokerSecuritySettings(BaseSettings):
    """Who may talk to the local broker. Environment: ``GIGAPULSE_BROKER_SECURITY`` and ``GIGAPULSE_BROKER_*``.

    Passwords come from the environment or from files (``*_PASSWORD_FILE``, e.g. mounted secrets); the
    users are the role names unless renamed.
    """

    model_config = SettingsConfigDict(env_prefix="GIGAPULSE_BROKER_", frozen=True)

    security: str = Field("none", pattern=r"^(none|sasl|sasl_ssl)$",
                          description="none (PLAINTEXT, no authentication), sasl (SASL_PLAINTEXT) or sasl_ssl.")
    admin_user: str = Field("admin", pattern=r"^[A-Za-z0-9._-]+$", description="The super user.")
    admin_password: SecretStr | None = None
    admin_password_file: Path | None = None
    ingest_user: str = Field("ingest", pattern=r"^[A-Za-z0-9._-]+$")
    ingest_password: SecretStr | None = None
    ingest_password_file: Path | None = None
    stream_user: str = Field("stream", pattern=r"^[A-Za-z0-9._-]+$")
    stream_password: SecretStr | None = None
    stream_password_file: Path | None = None
    analyst_user: str = Field("analyst", pattern=r"^[A-Za-z0-9._-]+$")
    analyst_password: SecretStr | None = None
    analyst_password_file: Path | None = None
    tls_keystore: Path | None = Field(None, description="PEM file: the broker's private key (PKCS#8) and its "
                                      "certificate chain. Unset: a development CA and certificate are made.")
    tls_key_password: SecretStr | None = Field(None, description="Password of an encrypted keystore key.")
    tls_cafile: Path | None = Field(None, description="PEM file of the CA clients trust (with tls_keystore).")

    @property
    def enabled(self) -> bool:
        return self.security != "none"

    @property
    def protocol(self) -> str:
        """The client listener's security protocol."""
        return {"none": "PLAINTEXT", "sasl": "SASL_PLAINTEXT", "sasl_ssl": "SASL_SSL"}[self.security]

    def user(self, role: str) -> str:
        return getattr(self, f"{role}_user")

    def password(self, role: str) -> str:
        """The role's password in clear (for the broker's config and the storage tool's hashes only)."""
        from ingestion.security import remember

        value: SecretStr | None = getattr(self, f"{role}_password")
        if value is not None:
            return remember(value.get_secret_value())
        path: Path | None = getattr(self, f"{role}_password_file")
        var = f"GIGAPULSE_BROKER_{role.upper()}_PASSWORD"
        if path is None:
            raise SecurityError(f"{var} (or {var}_FILE) is required with GIGAPULSE_BROKER_SECURITY={self.security}")
        try:
            text = path.read_text().strip()
        except OSError as exc:
            raise SecurityError(f"{var}_FILE: cannot read {path} ({exc.strerror or type(exc).__name__})") from None
        if not text:
            raise SecurityError(f"{var}_FILE: {path} is empty")
        return remember(text)


@dataclass(frozen=True)
class TlsFiles:
    """Where the broker's PEM keystore and the CA its clients trust are."""

    keystore: Path
    cafile: Path


def tls_dir(data_dir: Path) -> Path:
    return data_dir / "tls"


def tls_files(sec: BrokerSecuritySettings, data_dir: Path, host: str) -> TlsFiles:
    """The configured PEM files, or the development ones (made on first use)."""
    if sec.tls_keystore is not None:
        if sec.tls_cafile is None:
            raise SecurityError("GIGAPULSE_BROKER_TLS_CAFILE is required with GIGAPULSE_BROKER_TLS_KEYSTORE")
        return TlsFiles(sec.tls_keystore, sec.tls_cafile)
    return make_dev_certificates(tls_dir(data_dir), host)


def make_dev_certificates(directory: Path, host: str = "127.0.0.1", days: int = 825) -> TlsFiles:
    """A development CA and a broker certificate for ``host``, 127.0.0.1 and localhost; kept once made.

    For tests and laptops only: the CA's key sits next to it unencrypted. ``ca.pem`` is what clients
    trust (GIGAPULSE_KAFKA_SSL_CAFILE); ``broker.pem`` holds the broker's key and certificate chain.
    """
    files = TlsFiles(directory / "broker.pem", directory / "ca.pem")
    if files.keystore.exists() and files.cafile.exists():
        return files
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gigapulse development CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(now + dt.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    try:
        ip = ipaddress.ip_address(host)
        if str(ip) != "127.0.0.1":
            names.append(x509.IPAddress(ip))
    except ValueError:
        if host != "localhost":
            names.append(x509.DNSName(host))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gigapulse broker")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    _write_private(directory / "ca-key.pem", ca_key.private_bytes(pem, pkcs8, serialization.NoEncryption()))
    _write_private(files.keystore, key.private_bytes(pem, pkcs8, serialization.NoEncryption())
                   + cert.public_bytes(pem) + ca.public_bytes(pem))
    files.cafile.write_bytes(ca.public_bytes(pem))
    return files


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _jaas_value(text: str) -> str:
    """A JAAS option value in double quotes (a quote or backslash escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def server_overrides(sec: BrokerSecuritySettings, host: str, port: int, controller_port: int,
                     data_dir: Path) -> dict[str, str]:
    """Server properties to merge over the plain ones (empty with ``none``).

    The result holds the admin password (the broker's own logins need it): the properties file is
    written readable by its owner only.
    """
    if not sec.enabled:
        return {}
    admin, pw = _jaas_value(sec.user("admin")), _jaas_value(sec.password("admin"))
    props = {
        "listeners": f"BROKER://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"BROKER://{host}:{port}",
        "listener.security.protocol.map": f"BROKER:{sec.protocol},CONTROLLER:SASL_PLAINTEXT",
        "inter.broker.listener.name": "BROKER",
        "controller.listener.names": "CONTROLLER",
        "sasl.enabled.mechanisms": SCRAM,
        "sasl.mechanism.inter.broker.protocol": SCRAM,
        "listener.name.broker.sasl.enabled.mechanisms": SCRAM,
        "listener.name.broker.scram-sha-512.sasl.jaas.config":
            f"org.apache.kafka.common.security.scram.ScramLoginModule required username={admin} password={pw};",
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config":
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f"username={admin} password={pw} user_{sec.user('admin')}={pw};",
        "authorizer.class.name": AUTHORIZER,
        "super.users": f"User:{sec.user('admin')}",
        "allow.everyone.if.no.acl.found": "false",
        # A refused login is not retried for a second: slows a password guesser, costs a real client nothing.
        "connection.failed.authentication.delay.ms": "1000",
    }
    if sec.protocol == "SASL_SSL":
        files = tls_files(sec, data_dir, host)
        props.update({
            "listener.name.broker.ssl.keystore.type": "PEM",
            "listener.name.broker.ssl.keystore.location": str(files.keystore),
            "listener.name.broker.ssl.truststore.type": "PEM",
            "listener.name.broker.ssl.truststore.location": str(files.cafile),
            "listener.name.broker.ssl.client.auth": "none",
        })
        if sec.tls_key_password is not None:
            props["listener.name.broker.ssl.key.password"] = sec.tls_key_password.get_secret_value()
    return props


def scram_credential(password: str, name: str, iterations: int = SCRAM_ITERATIONS) -> str:
    """A storage tool ``--add-scram`` argument holding the salted password, not the password.

    SCRAM's salted password is PBKDF2-HMAC over the password with the salt (RFC 5802), which is what
    the tool would compute itself; doing it here keeps the clear password off the process list.
    """
    salt = secrets.token_bytes(32)
    salted = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    b64 = base64.b64encode
    return (f'{SCRAM}=[name={name},iterations={iterations},salt="{b64(salt).decode()}",'
            f'saltedpassword="{b64(salted).decode()}"]')


def format_args(sec: BrokerSecuritySettings) -> list[str]:
    """Extra arguments of ``kafka-storage format``: the SCRAM users (none with security off)."""
    if not sec.enabled:
        return []
    args: list[str] = []
    for role in ("admin", *ROLES):
        args += ["--add-scram", scram_credential(sec.password(role), sec.user(role))]
    return args


def admin_client(sec: BrokerSecuritySettings, data_dir: Path, host: str):
    """The client settings of the admin user (PLAINTEXT with security off), for the broker's own steps."""
    from ingestion.security import KafkaSecuritySettings

    if not sec.enabled:
        return KafkaSecuritySettings(security_protocol="PLAINTEXT")
    cafile = tls_files(sec, data_dir, host).cafile if sec.protocol == "SASL_SSL" else None
    return KafkaSecuritySettings(security_protocol=sec.protocol, sasl_mechanism=SCRAM,
                                 sasl_username=sec.user("admin"), sasl_password=SecretStr(sec.password("admin")),
                                 ssl_cafile=cafile)


#: What each role may do: (resource type, name, pattern, operations). Prefixed names cover every topic of
#: a family (plant.*, features.*) and every group of the platform (gigapulse-*).
ROLE_ACLS: dict[str, tuple[tuple[str, str, str, tuple[str, ...]], ...]] = {
    # Simulator, replay and bridges: write the plant topics (readings, events, assets, and the dead letters
    # of edge validation); an idempotent producer needs nothing more on Kafka 3+ (KIP-679).
    "ingest": (("TOPIC", "plant.", "PREFIXED", ("WRITE", "DESCRIBE")),),
    # Stream workers and the scorer: read the plant topics, write the features and dead letters, and
    # commit offsets in their consumer groups (gigapulse-stream, gigapulse-scorer).
    "stream": (("TOPIC", "plant.", "PREFIXED", ("READ", "DESCRIBE")),
               ("TOPIC", topics.DLQ, "LITERAL", ("WRITE",)),
               ("TOPIC", "features.", "PREFIXED", ("WRITE", "DESCRIBE")),
               ("GROUP", "gigapulse-", "PREFIXED", ("READ", "DESCRIBE"))),
    # Analysts query the lake through DuckDB; on Kafka they may do nothing.
    "analyst": (),
}


def role_acls(sec: BrokerSecuritySettings) -> list[Any]:
    """kafka-python ACL bindings for :data:`ROLE_ACLS`, with the configured user names."""
    from kafka.admin import (
        ACL,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourceType,
    )

    acls = []
    for role, grants in ROLE_ACLS.items():
        for rtype, name, pattern, ops in grants:
            resource = ResourcePattern(ResourceType[rtype], name, ACLResourcePatternType[pattern])
            acls += [ACL(f"User:{sec.user(role)}", "*", ACLOperation[op], ACLPermissionType.ALLOW, resource)
                     for op in ops]
    return acls


def apply_acls(sec: BrokerSecuritySettings, bootstrap: str, data_dir: Path, host: str,
               timeout_ms: int = 30_000) -> int:
    """Create the role ACLs (creating an existing ACL again is a no-op); returns how many were asked for."""
    if not sec.enabled:
        return 0
    from kafka import KafkaAdminClient

    from ingestion.security import kafka_python_kwargs

    acls = role_acls(sec)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="gigapulse-acls", request_timeout_ms=timeout_ms,
                             **kafka_python_kwargs(admin_client(sec, data_dir, host)))
    try:
        result = admin.create_acls(acls)
    finally:
        admin.close()
    failed = result.get("failed") or []
    if failed:
        acl, err = failed[0]
        raise SecurityError(f"creating {len(failed)} ACL(s) failed, first {acl}: {err}")
    return len(acls)
