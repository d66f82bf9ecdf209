"""How every Kafka client of the platform authenticates: one settings class, one function per client library.

A process runs as one role (``ingest``, ``stream``, an admin command), so its identity is process-wide:
``GIGAPULSE_KAFKA_*`` is read once, the first time a command needs a Kafka client (the CLI does it as it
starts, in ``_bootstrap``), and every client built afterwards gets its keyword arguments from here. Code
that needs another identity (the broker's own admin steps, tests) passes a :class:`KafkaSecuritySettings`
explicitly. With the defaults (``PLAINTEXT``) every function returns nothing and the clients are built
exactly as before.

The password is a ``SecretStr`` and is only unwrapped into the client's own arguments: no repr, log line
or error message of ours carries it. It comes from ``GIGAPULSE_KAFKA_SASL_PASSWORD`` or, better in a
container, from ``GIGAPULSE_KAFKA_SASL_PASSWORD_FILE`` (a mounted secret), the way the MQTT bridge reads its
broker password.
"""

from __future__ import annotations

import functools
import ssl
import time
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
TLS_PROTOCOLS = ("SSL", "SASL_SSL")


class KafkaSecurityError(ValueError):
    """The security settings are incomplete or unreadable; the message is one line and never holds a secret."""


class KafkaSecuritySettings(BaseSettings):
    """How this process authenticates to Kafka. Environment: ``GIGAPULSE_KAFKA_*``."""

    model_config = SettingsConfigDict(env_prefix="GIGAPULSE_KAFKA_", frozen=True)

    security_protocol: str = Field("PLAINTEXT", pattern=r"^(PLAINTEXT|SASL_PLAINTEXT|SASL_SSL|SSL)$",
                                   description="PLAINTEXT (no security, the local default), SASL_PLAINTEXT, "
                                   "SASL_SSL or SSL.")
    sasl_mechanism: str = Field("SCRAM-SHA-512", pattern=r"^(SCRAM-SHA-512|SCRAM-SHA-256|PLAIN)$",
                                description="SASL mechanism; the project's broker offers SCRAM-SHA-512.")
    sasl_username: str | None = Field(None, description="The SCRAM user, i.e. the role this process runs as "
                                      "(ingest, stream, or the admin).")
    sasl_password: SecretStr | None = Field(None, description="Its password (prefer the _FILE variant).")
    sasl_password_file: Path | None = Field(None, description="A file holding the password (a mounted secret); "
                                            "used when GIGAPULSE_KAFKA_SASL_PASSWORD is unset.")
    ssl_cafile: Path | None = Field(None, description="PEM file of the CA that signed the broker's certificate "
                                    "(unset: the system's trusted CAs).")
    ssl_check_hostname: bool = Field(True, description="Check that the broker's certificate names the host "
                                     "connected to. Leave on outside tests.")

    @model_validator(mode="after")
    def _complete(self) -> KafkaSecuritySettings:
        if self.sasl and not self.sasl_username:
            raise ValueError(f"GIGAPULSE_KAFKA_SASL_USERNAME is required with {self.security_protocol}")
        if self.sasl and self.sasl_password is None and self.sasl_password_file is None:
            raise ValueError(f"GIGAPULSE_KAFKA_SASL_PASSWORD or GIGAPULSE_KAFKA_SASL_PASSWORD_FILE is required "
                             f"with {self.security_protocol}")
        return self

    @property
    def sasl(self) -> bool:
        return self.security_protocol in SASL_PROTOCOLS

    @property
    def tls(self) -> bool:
        return self.security_protocol in TLS_PROTOCOLS

    def password(self) -> str:
        """The password in clear, for a client's arguments only (and remembered for :func:`redact`)."""
        if self.sasl_password is not None:
            return remember(self.sasl_password.get_secret_value())
        if self.sasl_password_file is None:
            return ""
        try:
            return remember(self.sasl_password_file.read_text().strip())
        except OSError as exc:
            raise KafkaSecurityError(f"GIGAPULSE_KAFKA_SASL_PASSWORD_FILE: cannot read {self.sasl_password_file} "
                                     f"({exc.strerror or type(exc).__name__})") from None

    def ssl_context(self) -> ssl.SSLContext | None:
        """A TLS context trusting ``ssl_cafile`` (or the system's CAs); None without TLS."""
        if not self.tls:
            return None
        try:
            ctx = ssl.create_default_context(cafile=str(self.ssl_cafile) if self.ssl_cafile else None)
        except (OSError, ssl.SSLError) as exc:
            raise KafkaSecurityError(f"GIGAPULSE_KAFKA_SSL_CAFILE: cannot load {self.ssl_cafile} "
                                     f"({getattr(exc, 'strerror', None) or exc})") from None
        ctx.check_hostname = self.ssl_check_hostname
        return ctx

    def describe(self) -> str:
        """One line for logs: protocol and user, never the password."""
        if not self.sasl:
            return self.security_protocol
        return f"{self.security_protocol} as {self.sasl_username} ({self.sasl_mechanism})"


#: Every password this process has handed to a client, so that a library logging its configuration (kafka-python's
#: admin client does, at DEBUG) cannot print one: the CLI's log handler passes each line through :func:`redact`.
_SECRETS: set[str] = set()


def remember(secret: str) -> str:
    if len(secret) >= 4:
        _SECRETS.add(secret)
    return secret


def redact(text: str) -> str:
    """``text`` with every remembered password replaced by ``***``."""
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "***")
    return text


@functools.cache
def active() -> KafkaSecuritySettings:
    """This process's settings: read from the environment once, on first use (never at import)."""
    return KafkaSecuritySettings()


def _resolve(sec: KafkaSecuritySettings | None) -> KafkaSecuritySettings:
    return active() if sec is None else sec


def kafka_python_kwargs(sec: KafkaSecuritySettings | None = None) -> dict[str, Any]:
    """Keyword arguments for kafka-python's KafkaProducer, KafkaConsumer and KafkaAdminClient."""
    s = _resolve(sec)
    if s.security_protocol == "PLAINTEXT":
        return {}
    kw: dict[str, Any] = {"security_protocol": s.security_protocol}
    if s.sasl:
        kw.update(sasl_mechanism=s.sasl_mechanism, sasl_plain_username=s.sasl_username,
                  sasl_plain_password=s.password())
    if s.tls:
        kw["ssl_context"] = s.ssl_context()
    return kw


def aiokafka_kwargs(sec: KafkaSecuritySettings | None = None) -> dict[str, Any]:
    """Keyword arguments for aiokafka's producers and consumers.

    aiokafka took kafka-python's names for these options, so today the two sets are the same; callers still
    ask for their library's set, so that a divergence is fixed here and nowhere else.
    """
    return kafka_python_kwargs(sec)


def faust_credentials(sec: KafkaSecuritySettings | None = None) -> Any:
    """``broker_credentials`` for a faust-streaming app (None: PLAINTEXT)."""
    s = _resolve(sec)
    if s.security_protocol == "PLAINTEXT":
        return None
    import faust
    from faust.types.auth import SASLMechanism

    if s.sasl:
        return faust.SASLCredentials(username=s.sasl_username, password=s.password(),
                                     mechanism=SASLMechanism(s.sasl_mechanism), ssl_context=s.ssl_context())
    return faust.SSLCredentials(s.ssl_context())


class KafkaAuthError(ConnectionError):
    """The broker refused this process's credentials or TLS; one line, never the password."""


def check_credentials(bootstrap: str, sec: KafkaSecuritySettings | None = None, timeout_s: float = 5.0) -> None:
    """Log in to a bootstrap server once (TLS handshake and SASL), so a wrong password, a missing CA or
    credentials the broker does not know are reported in seconds as one line, not as a client retrying
    its bootstrap for half a minute (kafka-python only sees the connection drop). PLAINTEXT: nothing to do.
    """
    s = _resolve(sec)
    if s.security_protocol == "PLAINTEXT":
        return
    import asyncio

    from aiokafka.conn import create_conn
    from aiokafka.errors import KafkaError

    from ingestion.reachability import KafkaUnreachable, parse_bootstrap

    kw = aiokafka_kwargs(s)

    async def attempt(host: str, port: int) -> None:
        conn = await asyncio.wait_for(create_conn(host, port, client_id="gigapulse-login",
                                                  request_timeout_ms=int(timeout_s * 1000), **kw), timeout_s)
        conn.close()

    who = f"as {s.sasl_username!r} " if s.sasl else ""
    reasons: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    while True:
        for host, port in parse_bootstrap(bootstrap):
            try:
                asyncio.run(attempt(host, port))
                return
            except ssl.SSLError as exc:
                raise KafkaAuthError(f"TLS with Kafka at {host}:{port} failed ({exc.reason or exc}); is "
                                     "GIGAPULSE_KAFKA_SSL_CAFILE the CA that signed the broker's certificate?"
                                     ) from None
            except KafkaError as exc:
                text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if "Authentication" in type(exc).__name__ or "authentication" in text.lower() or "Sasl" in text:
                    raise KafkaAuthError(f"Kafka at {host}:{port} refused the login {who}({text}); check "
                                         "GIGAPULSE_KAFKA_SASL_USERNAME and the password") from None
                reasons[f"{host}:{port}"] = text
            except (OSError, TimeoutError) as exc:  # refused or no answer: a starting broker gets its time
                reasons[f"{host}:{port}"] = getattr(exc, "strerror", None) or type(exc).__name__
        if time.monotonic() + 0.25 >= deadline:
            break
        time.sleep(0.25)
    why = "; ".join(f"{k}: {v}" for k, v in reasons.items())
    raise KafkaUnreachable(f"cannot log in to Kafka at {bootstrap} {who}within {timeout_s:g} s ({why})")
