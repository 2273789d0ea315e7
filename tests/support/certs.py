"""Certificate files for TLS tests: what ``trustme`` cannot make on its own.

``trustme`` issues well-formed leaves (``serverAuth`` + ``clientAuth``) with any validity window;
these helpers add a leaf whose extended key usage is only what the test says, an encrypted copy
of a key, and a leaf that is not a CA, all signed by a ``trustme.CA`` with ``cryptography``.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

if TYPE_CHECKING:
    from pathlib import Path

    import trustme

#: The extended key usages tests ask for, by RFC 5280 short name.
USAGES = {
    "serverAuth": ExtendedKeyUsageOID.SERVER_AUTH,
    "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "codeSigning": ExtendedKeyUsageOID.CODE_SIGNING,
}


def _pem_key(key: ec.EllipticCurvePrivateKey, passphrase: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if passphrase is None
        else serialization.BestAvailableEncryption(passphrase)
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def issue(
    ca: trustme.CA, name: str, *, usages: tuple[str, ...] | None, ca_flag: bool = False
) -> tuple[bytes, bytes]:
    """``(cert PEM, key PEM)`` for ``name`` signed by ``ca``; ``usages`` None leaves the
    extended key usage out, ``ca_flag`` makes it a CA."""
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=ca_flag, path_length=None), critical=True)
    )
    if usages is not None:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([USAGES[usage] for usage in usages]), critical=False
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def encrypted_key(ca_leaf: trustme.LeafCert, passphrase: bytes = b"s3cret-pass") -> bytes:
    """The leaf's private key as an encrypted PKCS#8 PEM."""
    key = serialization.load_pem_private_key(ca_leaf.private_key_pem.bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return _pem_key(key, passphrase)


def write_pair(directory: Path, stem: str, pair: tuple[bytes, bytes]) -> tuple[Path, Path]:
    """Write ``(cert PEM, key PEM)`` as ``<stem>.pem`` and ``<stem>-key.pem`` in ``directory``."""
    cert, key = directory / f"{stem}.pem", directory / f"{stem}-key.pem"
    cert.write_bytes(pair[0])
    key.write_bytes(pair[1])
    return cert, key


def issue_ca(not_before: datetime.datetime, not_after: datetime.datetime) -> bytes:
    """A self-signed CA certificate (PEM) valid from ``not_before`` to ``not_after``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "window test CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)
