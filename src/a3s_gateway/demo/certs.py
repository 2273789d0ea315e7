"""The demo's TLS material: a throwaway CA and a ``localhost`` certificate it signed, made at
start so ``a3s-gateway demo`` can serve HTTPS without any setup (issue #17 item 7).

Ring 1 (writes files; no trio, no sockets): ``write_demo_certificates(directory, now)`` makes
an EC P-256 CA and a leaf for ``localhost``, ``127.0.0.1`` and ``::1`` (``serverAuth``), valid
from an hour before ``now`` for ``VALIDITY``, and writes ``ca.pem`` (what clients trust:
``curl --cacert``), ``localhost.pem`` and ``localhost-key.pem`` (the key readable by the owner
only). ``demo.run`` calls it in a worker thread, in a temporary directory it removes at exit.

Must not: be used for anything but the demo (the CA key is thrown away with the directory).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["CA_FILE", "CERT_FILE", "KEY_FILE", "DemoCertificates", "write_demo_certificates"]

CA_FILE: Final = "ca.pem"
CERT_FILE: Final = "localhost.pem"
KEY_FILE: Final = "localhost-key.pem"
#: How long the demo's certificates are valid: longer than any demo session.
VALIDITY: Final = datetime.timedelta(days=7)
_SKEW: Final = datetime.timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class DemoCertificates:
    """Where the demo's files are."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "a3s-gateway demo"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca(now: datetime.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("a3s-gateway demo CA (this run only)")
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(now + VALIDITY)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, now: datetime.datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, certificate


def write_demo_certificates(directory: Path, now: datetime.datetime) -> DemoCertificates:
    """Make the CA and the ``localhost`` certificate and write them into ``directory``."""
    ca_key, ca = _ca(now)
    key, leaf = _leaf(ca_key, ca, now)
    written = DemoCertificates(directory / CA_FILE, directory / CERT_FILE, directory / KEY_FILE)
    written.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    written.cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(written.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(pem_key)
    return written
