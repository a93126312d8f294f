"""A throwaway certificate authority and broker certificate for the local secure broker.

PEM files, made with Python's cryptography."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["RENEW_BEFORE", "LocalTls", "make_local_tls", "write_private"]

VALID_FOR = dt.timedelta(days=30)  # a dev CA: short-lived on purpose, made anew by the launcher when it runs out
RENEW_BEFORE = dt.timedelta(days=1)  # the launcher makes new files when a start finds less than this left


@dataclass(frozen=True)
class LocalTls:
    """Where the files are: the CA certificate clients trust, and the broker's certificate chain and private key."""

    ca_cert: Path
    broker_cert: Path  # the broker's certificate followed by the CA's: what Kafka's PEM keystore wants
    broker_key: Path  # PKCS#8, unencrypted, readable by its owner only

    def valid_until(self) -> dt.datetime:
        return x509.load_pem_x509_certificate(self.broker_cert.read_bytes()).not_valid_after_utc

    def expires_within(self, margin: dt.timedelta, now: dt.datetime | None = None) -> bool:
        return self.valid_until() - margin <= (now or dt.datetime.now(dt.UTC))


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "eventfleet local"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def make_local_tls(
    folder: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"), *, now: dt.datetime | None = None
) -> LocalTls:
    """A new CA and a broker certificate it signed, for `hosts` (IP addresses and DNS names), into `folder`.
    The CA's key is not kept: nothing else is ever signed with it, so a leaked folder cannot mint more certificates."""
    now = now or dt.datetime.now(dt.UTC)
    ca_key, broker_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("eventfleet local CA"))
        .issuer_name(_name("eventfleet local CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    names = [x509.IPAddress(ipaddress.ip_address(h)) if _is_ip(h) else x509.DNSName(h) for h in hosts]
    broker = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca.subject)
        .public_key(broker_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    tls = LocalTls(folder / "ca.pem", folder / "broker-chain.pem", folder / "broker-key.pem")
    folder.mkdir(parents=True, exist_ok=True)
    tls.ca_cert.write_bytes(ca.public_bytes(pem))
    tls.broker_cert.write_bytes(broker.public_bytes(pem) + ca.public_bytes(pem))
    write_private(
        tls.broker_key, broker_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return tls


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False
