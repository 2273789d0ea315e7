"""Loading a TLS entrypoint's certificates into server SSL contexts (SPEC §3.8, §5.9).

Ring 1 (``ssl``, files). Synchronous and blocking on purpose: ``server/tls.py`` calls
``load_certificate`` and ``stamp`` only inside ``trio.to_thread.run_sync``, never on the event
loop. Nurseries and deadlines: none.

``load_certificate(pair, settings)`` builds one ``ssl.SSLContext`` per certificate pair with
every entrypoint setting applied (``min_version``, the ALPN list, ``client_auth`` with the
``client_ca_file`` bundle) and reads the leaf certificate's DNS names (SAN DNS names, or the
subject CN when there is no SAN) and its ``notAfter`` with ``cryptography``. The key must fit
the certificate (``load_cert_chain`` checks it); an encrypted key fails at once instead of
prompting on the terminal. Any failure is ``CertificateError`` naming the file.

``stamp(path)`` is the (mtime, size, inode) triple the hot-reload poller compares.

``fallback_pair(storage)`` is the self-signed ``CN=a3s-gateway default`` certificate an ACME
entrypoint without ``cert_file`` serves by default (SPEC §12.5), kept by the ACME storage
(``AcmeStorage.fallback``: ``<storage>/fallback/pair.pem``).

Must not: touch trio, or be called on the event loop.
"""

from __future__ import annotations

import datetime
import os
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeAlias

from cryptography import x509
from cryptography.x509.oid import NameOID

from a3s_gateway.acme.storage import AcmeStorage, StorageError

if TYPE_CHECKING:
    from a3s_gateway.runtime.compile import TlsSettings

__all__ = [
    "CertificateError",
    "LoadedCertificate",
    "Stamp",
    "fallback_pair",
    "load_certificate",
    "stamp",
]

#: (st_mtime_ns, st_size, st_ino) of a file; None when it cannot be stat'ed.
Stamp: TypeAlias = "tuple[int, int, int] | None"

#: Bound on a certificate file read for its names (a chain is a few KiB).
_MAX_PEM_BYTES: Final = 1024 * 1024

_VERSIONS: Final = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_VERIFY: Final = {"none": ssl.CERT_NONE, "request": ssl.CERT_OPTIONAL, "require": ssl.CERT_REQUIRED}


class CertificateError(Exception):
    """A certificate pair or CA bundle that cannot be used; the message names the file."""


@dataclass(frozen=True, slots=True)
class LoadedCertificate:
    """One certificate pair as loaded: its server context and what it says about itself."""

    cert_file: str
    key_file: str
    context: ssl.SSLContext
    #: DNS names (SAN, else CN), as written in the certificate.
    names: tuple[str, ...]
    #: The leaf's notAfter, Unix time.
    not_after: float
    #: The files' stamps when they were read (cert, key).
    stamps: tuple[Stamp, Stamp]

    @property
    def label(self) -> str:
        """The certificate's name in metrics and logs: its first DNS name, else its file."""
        return self.names[0] if self.names else self.cert_file


def stamp(path: str) -> Stamp:
    """``path``'s (mtime, size, inode), or None when it cannot be stat'ed (the poller then
    waits for it to come back)."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size, info.st_ino)


def _refuse_passphrase() -> bytes:
    raise CertificateError("the key is encrypted; a passphrase-protected key is not supported")


def server_context(settings: TlsSettings) -> ssl.SSLContext:
    """A server context with ``settings`` applied and no certificate yet."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[settings.min_version]
    context.options |= ssl.OP_NO_COMPRESSION
    if settings.alpn:
        context.set_alpn_protocols(list(settings.alpn))
    if settings.client_auth != "none" and settings.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=settings.client_ca_file)
        except (OSError, ssl.SSLError, ValueError) as error:
            raise CertificateError(f"client_ca_file {settings.client_ca_file}: {error}") from error
        context.verify_mode = _VERIFY[settings.client_auth]
    return context


def load_certificate(pair: tuple[str, str], settings: TlsSettings) -> LoadedCertificate:
    """Load ``pair`` (cert_file, key_file) into a new server context (module docstring)."""
    cert_file, key_file = pair
    stamps = (stamp(cert_file), stamp(key_file))
    context = server_context(settings)
    try:
        context.load_cert_chain(cert_file, key_file, password=_refuse_passphrase)
    except CertificateError as error:
        raise CertificateError(f"key_file {key_file}: {error}") from error
    except ssl.SSLError as error:
        reason = (
            "the key does not fit the certificate" if "KEY_VALUES_MISMATCH" in str(error) else error
        )
        raise CertificateError(f"cert_file {cert_file} / key_file {key_file}: {reason}") from error
    except (OSError, ValueError) as error:
        raise CertificateError(f"cert_file {cert_file} / key_file {key_file}: {error}") from error
    names, not_after = _describe(cert_file)
    return LoadedCertificate(cert_file, key_file, context, names, not_after, stamps)


def _describe(cert_file: str) -> tuple[tuple[str, ...], float]:
    """The leaf certificate's DNS names (SAN, else CN) and notAfter."""
    try:
        with open(cert_file, "rb") as file:
            data = file.read(_MAX_PEM_BYTES)
        leaf = x509.load_pem_x509_certificates(data)[0]
    except (OSError, ValueError) as error:
        raise CertificateError(f"cert_file {cert_file}: {error}") from error
    names: list[str] = []
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(name) for name in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        pass
    if not names:
        names = [
            str(attribute.value)
            for attribute in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ]
    return tuple(names), leaf.not_valid_after_utc.timestamp()


def fallback_pair(storage: str) -> tuple[str, str]:
    """The (cert_file, key_file) of the self-signed fallback certificate in ACME storage
    ``storage`` (one file holds both: ``AcmeStorage.fallback``), made when needed;
    ``CertificateError`` naming the storage when it cannot be written."""
    try:
        path = AcmeStorage(storage).fallback(datetime.datetime.now(datetime.UTC))
    except StorageError as error:
        raise CertificateError(
            f"acme_storage_path {storage}: cannot write the fallback certificate: {error}"
        ) from error
    return path, path
