"""Self-signed OPC UA application instance certificates, so Sign and SignAndEncrypt work out of the box.

OPC UA secures a channel with each side's *application instance certificate*: an X.509 certificate
whose SubjectAltName carries the application's URI (the peer checks it against the ApplicationUri
the application announces; a certificate without it is refused by most stacks), plus the host's DNS
names and addresses. A self-signed one is its own issuer, so it is marked as a CA that may sign
(keyCertSign): a trust list holding it then accepts exactly that certificate and nothing it did not
sign itself. Key usage covers what the Basic256Sha256 policy does with the key (sign, encrypt keys
and data); the extended key usage names both roles, so one file can serve a server or a client.

Files: the certificate in DER (``.der``, the usual OPC UA form), the key as unencrypted PKCS#8 PEM
(``.pem``, created readable by its owner only). ``gigapulse bridge certs --out DIR`` writes a server
and a client pair and a ``trusted/`` folder for each side.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: The URIs the project's own applications announce (and put in their certificates).
SERVER_APPLICATION_URI = "urn:gigapulse:opcua:server"
CLIENT_APPLICATION_URI = "urn:gigapulse:opcua:bridge"


@dataclass(frozen=True)
class CertificatePair:
    """Where a generated certificate and its private key were written."""

    cert: Path
    key: Path
    application_uri: str


def make_certificate(application_uri: str, common_name: str, hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
                     days: int = 365, key_bits: int = 2048,
                     now: datetime | None = None) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A self-signed application instance certificate and its RSA key (in memory).

    ``hosts``: DNS names or IP addresses the application is reached at, added to the SubjectAltName
    next to the URI. Validity starts a minute early so that a peer whose clock lags slightly does not
    refuse a certificate made a moment ago.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_bits)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gigapulse")])
    alt_names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    start = (now or datetime.now(UTC)) - timedelta(minutes=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=True,
                                     data_encipherment=True, key_agreement=False, key_cert_sign=True,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def write_certificate(folder: Path, stem: str, application_uri: str, common_name: str,
                      hosts: tuple[str, ...] = ("localhost", "127.0.0.1"), days: int = 365) -> CertificatePair:
    """Generate a pair and write ``<stem>.der`` and ``<stem>.key.pem`` into ``folder`` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = make_certificate(application_uri, common_name, hosts, days)
    cert_path = folder / f"{stem}.der"
    key_path = folder / f"{stem}.key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_bytes = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_bytes)
    return CertificatePair(cert_path, key_path, application_uri)


def write_server_and_client(out: Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
                            days: int = 365) -> tuple[CertificatePair, CertificatePair]:
    """A server pair and a bridge (client) pair, each side trusting the other.

    Layout: ``server.der``/``server.key.pem``, ``client.der``/``client.key.pem``, and
    ``trusted-clients/client.der`` (what the server accepts) and ``trusted-servers/server.der``
    (what the bridge accepts). Copying a certificate into a trusted folder is how a real plant's
    administrator approves a peer; here both are approved from the start.
    """
    server = write_certificate(out, "server", SERVER_APPLICATION_URI, "gigapulse OPC UA server", hosts, days)
    client = write_certificate(out, "client", CLIENT_APPLICATION_URI, "gigapulse OPC UA bridge", hosts, days)
    for folder, pair in (("trusted-clients", client), ("trusted-servers", server)):
        (out / folder).mkdir(exist_ok=True)
        (out / folder / pair.cert.name).write_bytes(pair.cert.read_bytes())
    return server, client
