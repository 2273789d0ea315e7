"""Keys, certificate signing requests and certificates of the ACME client (RFC 8555, RFC 8737;
SPEC §12.2, §12.3, §12.5).

Ring 0: pure functions over bytes, built on ``cryptography``; time arrives as a ``datetime``
argument and randomness comes from ``cryptography``'s own generators. Everything here is PEM in,
PEM out: private keys as unencrypted PKCS#8, certificates and CSRs as PEM blocks.

* ``new_private_key`` makes the account and certificate keys (``acme_key_type``);
* ``make_csr`` is the finalize request of one order (one domain, SAN only);
* ``key_authorization_digest`` and ``dns01_value`` are the challenge values of RFC 8555 §8.4
  and RFC 8737 §3;
* ``tls_alpn_certificate`` is the self-signed answer to a TLS-ALPN-01 challenge;
* ``fallback_certificate`` is served while no certificate exists (SPEC §12.5);
* ``certificate_validity``, ``certificate_names`` and ``key_matches`` read stored chains.

Must not: read files, clocks or the environment, log, or put a key's bytes into an exception
message (the messages name what is wrong, never the material).
"""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from typing import TYPE_CHECKING, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier

if TYPE_CHECKING:
    from datetime import datetime

__all__ = [
    "ACME_IDENTIFIER_OID",
    "FALLBACK_COMMON_NAME",
    "KEY_TYPES",
    "certificate_names",
    "certificate_validity",
    "dns01_value",
    "fallback_certificate",
    "key_authorization_digest",
    "key_matches",
    "make_csr",
    "new_private_key",
    "tls_alpn_certificate",
]

#: ``id-pe-acmeIdentifier`` (RFC 8737 §6.1).
ACME_IDENTIFIER_OID: Final = ObjectIdentifier("1.3.6.1.5.5.7.1.31")
#: The subject of the self-signed certificate served until one is issued (SPEC §12.5).
FALLBACK_COMMON_NAME: Final = "a3s-gateway default"
#: ``acme_key_type`` values (SPEC §3.8).
KEY_TYPES: Final = ("ec256", "ec384", "rsa2048", "rsa4096")

#: DER header of an OCTET STRING of 32 bytes: tag 0x04, length 0x20 (RFC 8737 §3).
_OCTET_STRING_32: Final = b"\x04\x20"
_RSA_EXPONENT: Final = 65537
_CHALLENGE_LIFETIME: Final = timedelta(days=7)
_FALLBACK_LIFETIME: Final = timedelta(days=365)
_BACKDATE: Final = timedelta(days=1)

_SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def new_private_key(key_type: str) -> bytes:
    """A new private key of ``key_type`` (``ec256``, ``ec384``, ``rsa2048``, ``rsa4096``) as
    PKCS#8 PEM. Raises ``ValueError`` for any other type."""
    key: _SigningKey
    if key_type == "ec256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif key_type == "ec384":
        key = ec.generate_private_key(ec.SECP384R1())
    elif key_type in {"rsa2048", "rsa4096"}:
        key = rsa.generate_private_key(_RSA_EXPONENT, int(key_type.removeprefix("rsa")))
    else:
        raise ValueError(f"unknown key type {key_type!r} (expected one of {', '.join(KEY_TYPES)})")
    return _key_pem(key)


def _key_pem(key: _SigningKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_key(key_pem: bytes) -> _SigningKey:
    """The EC or RSA private key in ``key_pem``; ``ValueError`` (without the bytes) otherwise."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise ValueError("the private key is not an unencrypted PEM key") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise ValueError("the private key is neither EC nor RSA")
    return key


def make_csr(domain: str, key_pem: bytes) -> bytes:
    """A PEM CSR signed by ``key_pem`` whose only identifier is the SAN dNSName ``domain``
    (wildcards allowed). The subject is empty: RFC 8555 §7.4 takes the identifiers from the
    SAN, and a common name is limited to 64 characters where a name may have 253."""
    key = _load_key(key_pem)
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


def key_authorization_digest(key_authorization: str) -> bytes:
    """SHA-256 of the key authorization (RFC 8555 §8.1), the value both DNS-01 and TLS-ALPN-01
    carry."""
    return hashlib.sha256(key_authorization.encode("utf-8")).digest()


def dns01_value(key_authorization: str) -> str:
    """The TXT value of ``_acme-challenge.<domain>``: base64url of the digest, no padding
    (RFC 8555 §8.4)."""
    digest = key_authorization_digest(key_authorization)
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _self_signed(
    key: _SigningKey,
    subject: x509.Name,
    extensions: list[tuple[x509.ExtensionType, bool]],
    not_before: datetime,
    not_after: datetime,
) -> bytes:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def tls_alpn_certificate(domain: str, key_authorization: str, now: datetime) -> tuple[bytes, bytes]:
    """``(cert_pem, key_pem)``: the TLS-ALPN-01 answer for ``domain`` (RFC 8737 §3).

    Self-signed with a new EC P-256 key; the SAN holds exactly ``domain``; the critical
    ``id-pe-acmeIdentifier`` extension's value is the DER OCTET STRING of the SHA-256 of the
    key authorization. Valid from a day before ``now`` to seven days after it.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    identifier = x509.UnrecognizedExtension(
        ACME_IDENTIFIER_OID, _OCTET_STRING_32 + key_authorization_digest(key_authorization)
    )
    cert_pem = _self_signed(
        key,
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a3s-gateway acme-tls/1")]),
        [(x509.SubjectAlternativeName([x509.DNSName(domain)]), False), (identifier, True)],
        now - _BACKDATE,
        now + _CHALLENGE_LIFETIME,
    )
    return cert_pem, _key_pem(key)


def fallback_certificate(now: datetime) -> tuple[bytes, bytes]:
    """``(cert_pem, key_pem)``: a self-signed EC P-256 certificate with subject
    ``CN=a3s-gateway default``, valid from a day before ``now`` for a year (SPEC §12.5)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert_pem = _self_signed(
        key,
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, FALLBACK_COMMON_NAME)]),
        [(x509.BasicConstraints(ca=False, path_length=None), True)],
        now - _BACKDATE,
        now + _FALLBACK_LIFETIME,
    )
    return cert_pem, _key_pem(key)


def _first_certificate(chain_pem: bytes) -> x509.Certificate:
    """The first certificate of a PEM chain; ``ValueError`` (without the bytes) if none."""
    try:
        certificates = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        raise ValueError("no PEM certificate could be read") from None
    return certificates[0]


def certificate_validity(chain_pem: bytes) -> tuple[float, float]:
    """``(not_before, not_after)`` of the first certificate in ``chain_pem``, in Unix seconds.
    Raises ``ValueError`` when there is no readable certificate."""
    first = _first_certificate(chain_pem)
    return first.not_valid_before_utc.timestamp(), first.not_valid_after_utc.timestamp()


def certificate_names(chain_pem: bytes) -> tuple[str, ...]:
    """The SAN dNSNames of the first certificate in ``chain_pem``, in certificate order (empty
    without a SAN). Raises ``ValueError`` when there is no readable certificate."""
    first = _first_certificate(chain_pem)
    try:
        names = first.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    return tuple(names.value.get_values_for_type(x509.DNSName))


def key_matches(chain_pem: bytes, key_pem: bytes) -> bool:
    """Whether ``key_pem`` is the private key of the first certificate in ``chain_pem``.
    Raises ``ValueError`` when either does not parse."""
    first = _first_certificate(chain_pem)
    key = _load_key(key_pem)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return first.public_key().public_bytes(der, public) == key.public_key().public_bytes(
        der, public
    )


def key_type_of(key_pem: bytes) -> str | None:
    """The ``acme_key_type`` of ``key_pem`` (``ec256``, ``ec384``, ``rsa2048``,
    ``rsa4096``), or None for a key of another kind or size, or one that does not parse."""
    try:
        key = _load_key(key_pem)
    except ValueError:
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        name = {"secp256r1": "ec256", "secp384r1": "ec384"}.get(key.curve.name)
    else:
        name = f"rsa{key.key_size}"
    return name if name in KEY_TYPES else None
