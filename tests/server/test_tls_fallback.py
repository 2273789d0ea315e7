"""The self-signed default certificate of an ACME entrypoint without ``cert_file``
(server/tls_material.py ``fallback_pair``, SPEC §12.5): made once in
``<storage>/fallback/`` (private modes, ``CN=a3s-gateway default``), reused while valid,
made again when it ends within a day or is broken, a ``CertificateError`` naming the storage
when it cannot be written; and the terminator serving it first."""

from __future__ import annotations

import datetime
import os
import stat
from pathlib import Path
from typing import Final

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from a3s_gateway.acme.keys import key_matches
from a3s_gateway.runtime.compile import TlsSettings
from a3s_gateway.server.tls import build_terminator
from a3s_gateway.server.tls_material import CertificateError, fallback_pair, load_certificate

DAY: Final = datetime.timedelta(days=1)
DEFAULT_NAME: Final = "a3s-gateway default"


def settings(*pairs: tuple[str, str], fallback: str | None = None) -> TlsSettings:
    return TlsSettings(
        pairs=pairs,
        min_version="1.2",
        alpn=("h2", "http/1.1"),
        client_auth="none",
        client_ca_file=None,
        sni_strict=False,
        fallback=fallback,
    )


def the_file(storage: Path) -> Path:
    """Where the fallback pair lives: key and certificate in one file."""
    return storage / "fallback" / "pair.pem"


def leaf(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(path.read_bytes())[0]


def common_names(certificate: x509.Certificate) -> list[str]:
    found = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return [str(attribute.value) for attribute in found]


def self_signed(not_after: datetime.datetime) -> tuple[bytes, bytes]:
    """A ``CN=a3s-gateway default`` pair ending at ``not_after`` (cert PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DEFAULT_NAME)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - 400 * DAY)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def place(storage: Path, data: bytes) -> Path:
    """Put ``data`` where the fallback pair lives (as an earlier run would have)."""
    path = the_file(storage)
    path.parent.mkdir(parents=True, mode=0o700)
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def assert_fresh(path: Path) -> None:
    """``path`` holds a usable pair with more than 300 days ahead of it."""
    data = path.read_bytes()
    assert key_matches(data, data)
    certificate = leaf(path)
    assert common_names(certificate) == [DEFAULT_NAME]
    left = certificate.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert left > 300 * DAY


def test_it_is_made_once_private_and_loads(tmp_path: Path) -> None:
    storage = tmp_path / "acme"
    cert_file, key_file = fallback_pair(str(storage))
    path = the_file(storage)
    assert (cert_file, key_file) == (str(path), str(path))
    assert stat.S_IMODE(os.stat(storage).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(path.parent) == ["pair.pem"]  # no temporary file left behind
    assert_fresh(path)
    loaded = load_certificate((cert_file, key_file), settings())
    assert loaded.names == (DEFAULT_NAME,)
    assert loaded.not_after == leaf(path).not_valid_after_utc.timestamp()


def test_an_existing_storage_is_made_private(tmp_path: Path) -> None:
    storage = tmp_path / "acme"
    storage.mkdir(mode=0o755)
    storage.chmod(0o755)
    fallback_pair(str(storage))
    assert stat.S_IMODE(os.stat(storage).st_mode) == 0o700


def test_a_valid_one_is_reused(tmp_path: Path) -> None:
    storage = tmp_path / "acme"
    first = fallback_pair(str(storage))
    path = the_file(storage)
    before = os.stat(path)
    data = path.read_bytes()
    assert fallback_pair(str(storage)) == first
    after = os.stat(path)
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)
    assert path.read_bytes() == data


def test_one_with_days_left_is_kept(tmp_path: Path) -> None:
    storage = tmp_path / "acme"
    cert_pem, key_pem = self_signed(datetime.datetime.now(datetime.UTC) + 3 * DAY)
    path = place(storage, key_pem + cert_pem)
    fallback_pair(str(storage))
    assert path.read_bytes() == key_pem + cert_pem


@pytest.mark.parametrize("ends", [-30 * DAY, -DAY, DAY / 2], ids=["long-expired", "expired", "12h"])
def test_an_expired_or_ending_one_is_made_again(tmp_path: Path, ends: datetime.timedelta) -> None:
    storage = tmp_path / "acme"
    cert_pem, key_pem = self_signed(datetime.datetime.now(datetime.UTC) + ends)
    path = place(storage, key_pem + cert_pem)
    assert fallback_pair(str(storage)) == (str(path), str(path))
    assert path.read_bytes() != key_pem + cert_pem
    assert_fresh(path)


def broken_contents() -> dict[str, bytes]:
    now = datetime.datetime.now(datetime.UTC)
    cert_pem, key_pem = self_signed(now + 100 * DAY)
    _, other_key = self_signed(now + 100 * DAY)
    return {
        "empty": b"",
        "garbage": b"not a certificate\n",
        "certificate-only": cert_pem,
        "key-only": key_pem,
        "someone-elses-key": other_key + cert_pem,
        "truncated": (key_pem + cert_pem)[:-80],
        "key-cut": key_pem[:60] + cert_pem,
    }


@pytest.mark.parametrize("case", sorted(broken_contents()))
def test_a_broken_one_is_made_again(tmp_path: Path, case: str) -> None:
    storage = tmp_path / "acme"
    path = place(storage, broken_contents()[case])
    fallback_pair(str(storage))
    assert_fresh(path)
    load_certificate((str(path), str(path)), settings())


def test_a_storage_that_cannot_be_made_is_a_certificate_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"a regular file, not a directory\n")
    storage = blocker / "acme"
    with pytest.raises(CertificateError) as caught:
        fallback_pair(str(storage))
    assert str(storage) in str(caught.value)
    assert "PRIVATE KEY" not in str(caught.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory anyway")
def test_a_read_only_storage_is_a_certificate_error(tmp_path: Path) -> None:
    storage = tmp_path / "acme"
    storage.mkdir()
    storage.chmod(0o500)
    try:
        with pytest.raises(CertificateError) as caught:
            fallback_pair(str(storage))
    finally:
        storage.chmod(0o700)
    assert str(storage) in str(caught.value)


def test_the_terminator_serves_the_fallback_first(tmp_path: Path) -> None:
    issued = trustme.CA().issue_cert("shop.example.test")
    cert_file, key_file = tmp_path / "shop.pem", tmp_path / "shop.key"
    issued.cert_chain_pems[0].write_to_path(str(cert_file))
    issued.private_key_pem.write_to_path(str(key_file))
    storage = tmp_path / "acme"
    pair = (str(cert_file), str(key_file))
    terminator = build_terminator("websecure", settings(pair, fallback=str(storage)))
    names = [certificate.names for certificate in terminator.certificates]
    assert names == [(DEFAULT_NAME,), ("shop.example.test",)]
    alone = build_terminator("websecure", settings(fallback=str(storage)))
    assert [certificate.names for certificate in alone.certificates] == [(DEFAULT_NAME,)]
    with pytest.raises(CertificateError, match="no certificate configured"):
        build_terminator("websecure", settings())
    without = build_terminator("websecure", settings(pair))
    assert [certificate.names for certificate in without.certificates] == [("shop.example.test",)]
