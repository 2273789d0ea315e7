"""The demo's TLS material: a throwaway CA and a ``localhost`` certificate it signed, made at
start so ``a3s-gateway demo`` can serve HTTPS without any setup (issue #17 item 7).

Ring 1 (writes files; no trio, no sockets): ``write_demo_certificates(directory, now)`` makes
an EC P-256 CA and a leaf for ``localhost``, ``127.0.0.1`` and ``::1`` (``serverAuth``), valid
from an hour before ``now`` for ``VALIDITY``, and writes ``ca.pem`` (what clients trust:
``curl --cacert``), ``localhost.pem`` and ``localhost-key.pem`` (the key readable by the owner
only). A second leaf, for ``echo.localhost`` alone, is the TLS echo backend's own
(``echo.localhost.pem``, ``echo.localhost-key.pem``): the gateway relays that backend's TLS
unopened (passthrough by SNI, ``demo.hcl``), so a client sees this certificate and not the
gateway's. ``demo.run`` calls it in a worker thread, in a temporary directory it removes at exit.

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

__all__ = [
    "CA_FILE",
    "CERT_FILE",
    "ECHO_CERT_FILE",
    "ECHO_KEY_FILE",
    "ECHO_SERVER_NAME",
    "KEY_FILE",
    "DemoCertificates",
    "write_demo_certificates",
]

CA_FILE: Final = "ca.pem"
CERT_FILE: Final = "localhost.pem"
KEY_FILE: Final = "localhost-key.pem"
#: The one name in the TLS echo backend's certificate: the SNI the demo routes to it.
ECHO_SERVER_NAME: Final = "echo.localhost"
ECHO_CERT_FILE: Final = f"{ECHO_SERVER_NAME}.pem"
ECHO_KEY_FILE: Final = f"{ECHO_SERVER_NAME}-key.pem"
#: How long the demo's certificates are valid: longer than any demo session.
VALIDITY: Final = datetime.timedelta(days=7)
_SKEW: Final = datetime.timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class DemoCertificates:
    """Where the demo's files are."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    #: The TLS echo backend's certificate (``echo.localhost``) and key.
    echo_cert_file: Path
    echo_key_file: Path


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


#: The gateway's HTTPS certificate names.
_LOCALHOST: Final[tuple[x509.GeneralName, ...]] = (
    x509.DNSName("localhost"),
    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    x509.IPAddress(ipaddress.ip_address("::1")),
)


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    now: datetime.datetime,
    names: tuple[x509.GeneralName, ...],
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A server certificate for ``names`` (the first one, a DNS name, is its common name)."""
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(str(names[0].value)))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
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
    """Make the CA, the ``localhost`` certificate and the TLS echo backend's
    ``echo.localhost`` one, and write them into ``directory``."""
    ca_key, ca = _ca(now)
    written = DemoCertificates(
        directory / CA_FILE,
        directory / CERT_FILE,
        directory / KEY_FILE,
        directory / ECHO_CERT_FILE,
        directory / ECHO_KEY_FILE,
    )
    written.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    key, leaf = _leaf(ca_key, ca, now, _LOCALHOST)
    _write_pair(key, leaf, written.cert_file, written.key_file)
    echo_key, echo_leaf = _leaf(ca_key, ca, now, (x509.DNSName(ECHO_SERVER_NAME),))
    _write_pair(echo_key, echo_leaf, written.echo_cert_file, written.echo_key_file)
    return written


def _write_pair(
    key: ec.EllipticCurvePrivateKey, leaf: x509.Certificate, cert_file: Path, key_file: Path
) -> None:
    """Write a certificate and its key (the key readable by the owner only)."""
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(pem_key)
