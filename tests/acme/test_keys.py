"""Keys, CSRs and certificates of the ACME client (``acme/keys.py``; RFC 8555, RFC 8737)."""

from __future__ import annotations

import base64
import hashlib
import string
from datetime import UTC, datetime, timedelta

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from a3s_gateway.acme.keys import (
    ACME_IDENTIFIER_OID,
    FALLBACK_COMMON_NAME,
    KEY_TYPES,
    certificate_names,
    certificate_validity,
    dns01_value,
    fallback_certificate,
    key_authorization_digest,
    key_matches,
    make_csr,
    new_private_key,
    tls_alpn_certificate,
)

NOW = datetime(2030, 5, 17, 12, 0, tzinfo=UTC)
KEY_AUTHORIZATION = (
    "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
)


def load_key(key_pem: bytes) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey))
    return key


def san(certificate: x509.Certificate | x509.CertificateSigningRequest) -> list[str]:
    extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return extension.value.get_values_for_type(x509.DNSName)


@pytest.fixture(scope="module")
def keys() -> dict[str, bytes]:
    """One key of each type (RSA 4096 takes a moment: made once)."""
    return {key_type: new_private_key(key_type) for key_type in KEY_TYPES}


@pytest.mark.parametrize(
    ("key_type", "kind", "size"),
    [
        ("ec256", ec.EllipticCurvePrivateKey, 256),
        ("ec384", ec.EllipticCurvePrivateKey, 384),
        ("rsa2048", rsa.RSAPrivateKey, 2048),
        ("rsa4096", rsa.RSAPrivateKey, 4096),
    ],
)
def test_every_key_type_is_pkcs8_pem_of_its_kind_and_size(
    keys: dict[str, bytes], key_type: str, kind: type, size: int
) -> None:
    key_pem = keys[key_type]
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS#8, unencrypted
    key = load_key(key_pem)
    assert isinstance(key, kind)
    assert key.key_size == size
    if isinstance(key, rsa.RSAPrivateKey):
        assert key.private_numbers().public_numbers.e == 65537


def test_two_keys_differ() -> None:
    assert new_private_key("ec256") != new_private_key("ec256")


def test_an_unknown_key_type_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown key type 'ed25519'"):
        new_private_key("ed25519")


def public_der(key_pem: bytes) -> bytes:
    return (
        load_key(key_pem)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


@pytest.mark.parametrize(
    ("key_type", "domain"),
    [(key_type, "www.example.com") for key_type in KEY_TYPES] + [("ec256", "*.example.com")],
)
def test_the_csr_is_signed_by_the_key_and_names_only_the_domain(
    keys: dict[str, bytes], key_type: str, domain: str
) -> None:
    request = x509.load_pem_x509_csr(make_csr(domain, keys[key_type]))
    assert request.is_signature_valid
    assert san(request) == [domain]
    assert len(request.subject) == 0  # identifiers come from the SAN (RFC 8555 §7.4)
    assert request.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == public_der(keys[key_type])


def test_a_csr_for_a_key_that_does_not_parse_names_no_key_material() -> None:
    garbage = b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz\n-----END PRIVATE KEY-----\n"
    with pytest.raises(ValueError, match="not an unencrypted PEM key") as caught:
        make_csr("a.example.com", garbage)
    assert "c2VjcmV0" not in str(caught.value)


def test_a_csr_refuses_a_key_it_cannot_sign_with() -> None:
    key_pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="neither EC nor RSA"):
        make_csr("a.example.com", key_pem)


def test_the_key_authorization_digest_is_its_sha256() -> None:
    assert key_authorization_digest(KEY_AUTHORIZATION) == (
        hashlib.sha256(KEY_AUTHORIZATION.encode()).digest()
    )


def test_the_dns01_value_is_unpadded_base64url_of_the_digest() -> None:
    value = dns01_value(KEY_AUTHORIZATION)
    assert len(value) == 43
    assert set(value) <= set(string.ascii_letters + string.digits + "-_")
    assert base64.urlsafe_b64decode(value + "=") == key_authorization_digest(KEY_AUTHORIZATION)
    # A known vector: SHA-256 of the empty string, base64url without padding.
    assert dns01_value("") == "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"


def test_the_tls_alpn_certificate_carries_the_critical_acme_identifier() -> None:
    cert_pem, key_pem = tls_alpn_certificate("www.example.com", KEY_AUTHORIZATION, NOW)
    certificate = x509.load_pem_x509_certificate(cert_pem)
    extension = certificate.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
    assert extension.critical
    assert isinstance(extension.value, x509.UnrecognizedExtension)
    # The extnValue is the DER OCTET STRING (tag 4, length 32) of the SHA-256 (RFC 8737 §3).
    digest = hashlib.sha256(KEY_AUTHORIZATION.encode()).digest()
    assert extension.value.value == b"\x04\x20" + digest
    assert str(ACME_IDENTIFIER_OID.dotted_string) == "1.3.6.1.5.5.7.1.31"
    assert san(certificate) == ["www.example.com"]
    assert certificate.not_valid_before_utc == NOW - timedelta(days=1)
    assert certificate.not_valid_after_utc == NOW + timedelta(days=7)
    certificate.verify_directly_issued_by(certificate)  # self-signed
    key = load_key(key_pem)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert key_matches(cert_pem, key_pem)


def test_each_tls_alpn_certificate_has_its_own_key() -> None:
    _, first = tls_alpn_certificate("a.example.com", KEY_AUTHORIZATION, NOW)
    _, second = tls_alpn_certificate("a.example.com", KEY_AUTHORIZATION, NOW)
    assert first != second


def test_the_fallback_certificate_is_the_gateway_default() -> None:
    cert_pem, key_pem = fallback_certificate(NOW)
    certificate = x509.load_pem_x509_certificate(cert_pem)
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [name.value for name in names] == [FALLBACK_COMMON_NAME] == ["a3s-gateway default"]
    assert certificate.issuer == certificate.subject
    assert certificate.not_valid_before_utc == NOW - timedelta(days=1)
    assert certificate.not_valid_after_utc > NOW + timedelta(days=300)
    certificate.verify_directly_issued_by(certificate)
    assert key_matches(cert_pem, key_pem)
    assert certificate_names(cert_pem) == ()


def test_validity_and_names_come_from_the_first_certificate_of_a_chain() -> None:
    ca = trustme.CA()
    intermediate = ca.create_child_ca()
    start = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    end = datetime(2031, 4, 2, 3, 4, 5, tzinfo=UTC)
    leaf = intermediate.issue_cert(
        "b.example.com", "a.example.com", "192.0.2.1", not_before=start, not_after=end
    )
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    assert len(leaf.cert_chain_pems) == 2  # the leaf, then the intermediate
    assert certificate_validity(chain) == (start.timestamp(), end.timestamp())
    assert certificate_names(chain) == ("b.example.com", "a.example.com")
    assert key_matches(chain, leaf.private_key_pem.bytes())
    assert not key_matches(chain, new_private_key("ec256"))


@pytest.mark.parametrize(
    "chain",
    [b"", b"not a certificate", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"],
)
def test_no_readable_certificate_is_a_value_error(chain: bytes) -> None:
    with pytest.raises(ValueError, match="no PEM certificate"):
        certificate_validity(chain)
    with pytest.raises(ValueError, match="no PEM certificate"):
        certificate_names(chain)
