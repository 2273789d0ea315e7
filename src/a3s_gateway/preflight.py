"""Environment checks of a loaded config (SPEC §3.1 step 6) and ``validate_config``.

Ring 1 (reads files and uses ``ssl``), no trio: TLS certificate/key files readable, parseable
and matching, CA bundles parseable, JWT public keys parseable, and, with ``otlp_endpoint``
set, an http(s) URL there and the OpenTelemetry packages of the ``otel`` extra importable
(SPEC §9.4 "Export"; ``server/otlp.py`` needs them). These run at start and in ``validate``
without ``--offline``; never at ``load_config``. Must not: print or return the contents of any
key file or an interpolated value (``LoadResult.redactor``), or contact the network.

Certificate pairs are loaded exactly as the TLS layer loads them (``SSLContext.load_cert_chain``
with a passphrase callback that refuses, so an encrypted key is an error here and never a
prompt on the terminal), then the leaf certificate is read with ``cryptography.x509``: it must
be valid at ``now`` (``not_before`` ≤ now ≤ ``not_after``) and, when it has an extended key
usage, be meant for its side (``serverAuth`` for entrypoints and the management API,
``clientAuth`` for ``upstream_tls`` client certificates). A ``client_ca_file`` must hold CA
certificates only; any CA bundle must hold at least one certificate valid at ``now``. The
checks over parsed certificates (``certificate_findings``, ``ca_findings``) are pure and take
``now`` as an argument.
"""

from __future__ import annotations

import importlib
import ssl
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from cryptography.x509.oid import ExtendedKeyUsageOID

from a3s_gateway.config.load import LoadOptions, LoadResult, load
from a3s_gateway.config.problems import Path, Problem, SourceMap, make_problem, sort_problems
from a3s_gateway.config.schema_middlewares import Jwt
from a3s_gateway.config.urls import HttpUrl

if TYPE_CHECKING:
    import os
    from collections.abc import Iterator, Mapping

    from a3s_gateway.config.schema import Config

MAX_KEY_FILE_BYTES: Final = 1024 * 1024
#: The largest certificate file or CA bundle read for the ``x509`` checks (a system bundle is
#: about 200 KiB).
MAX_CERT_FILE_BYTES: Final = 16 * 1024 * 1024
#: Which side of a TLS connection a certificate is for: its extended key usage must allow it.
Purpose = Literal["server", "client"]
_PURPOSE_OIDS: Final[dict[Purpose, x509.ObjectIdentifier]] = {
    "server": ExtendedKeyUsageOID.SERVER_AUTH,
    "client": ExtendedKeyUsageOID.CLIENT_AUTH,
}
#: RFC 5280 short names of the usual extended key usages, for messages.
_USAGE_NAMES: Final[dict[x509.ObjectIdentifier, str]] = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
}
_PURPOSE_NAMES: Final[dict[Purpose, str]] = {"server": "TLS servers", "client": "TLS clients"}
#: What OTLP export imports (``server/otlp.py``): the packages of the ``otel`` extra.
OTEL_MODULES: Final = (
    "opentelemetry.sdk.trace.export",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
)
#: How to get them, for messages.
OTEL_EXTRA_HINT: Final = 'install the "otel" extra: pip install "a3s-gateway[otel]"'


def validate_config(
    path: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    offline: bool = False,
    workers: int = 1,
) -> tuple[Problem, ...]:
    """The ``validate`` command as a function (SPEC §2.7): every problem, warnings included."""
    return check(load(path, env=env, options=LoadOptions(workers=workers)), offline=offline)


def check(result: LoadResult, *, offline: bool, now: datetime | None = None) -> tuple[Problem, ...]:
    """``result``'s problems plus, unless ``offline``, the environment checks (interpolated
    values redacted as in the load's own problems); certificates are judged at ``now``
    (default: the current time)."""
    if offline or result.partial is None:
        return result.problems
    extra = check_environment(
        result.partial, result.sources, default_file=result.main_file, now=now
    )
    return sort_problems([*result.problems, *result.redactor.problems(extra)])


def check_environment(
    config: Config, sources: SourceMap, *, default_file: str, now: datetime | None = None
) -> list[Problem]:
    """Every file the config names, checked the way the gateway will use it; certificates
    must be valid at ``now`` (an aware datetime; default: the current time)."""
    when = datetime.now(UTC) if now is None else now
    problems: list[Problem] = []
    for path, message in _findings(config, when):
        problems.append(make_problem("error", path, message, sources, default_file=default_file))
    return problems


def _findings(config: Config, now: datetime) -> Iterator[tuple[Path, str]]:
    yield from _entrypoint_files(config, now)
    yield from _upstream_files(config, now)
    management = config.management
    if management is not None and management.tls is not None:
        base: Path = ("management", "tls")
        tls = management.tls
        yield from _pair(base, tls.cert_file, tls.key_file, purpose="server", now=now)
        if tls.client_ca_file is not None:
            yield from _ca((*base, "client_ca_file"), tls.client_ca_file, now=now, clients=True)
    for name, middleware in config.middlewares.items():
        if isinstance(middleware, Jwt) and middleware.public_key_file is not None:
            path: Path = ("middlewares", name, "public_key_file")
            yield from _public_key(path, middleware.public_key_file)
    observability = config.observability
    if observability.otlp_endpoint:
        yield from _otlp(observability.otlp_endpoint, tracing=observability.tracing_enabled)


def _entrypoint_files(config: Config, now: datetime) -> Iterator[tuple[Path, str]]:
    """The certificates, keys and CA bundles of the entrypoints' ``tls`` blocks."""
    for name, entrypoint in config.entrypoints.items():
        tls = entrypoint.tls
        if tls is None:
            continue
        base: Path = ("entrypoints", name, "tls")
        if tls.cert_file is not None and tls.key_file is not None:
            yield from _pair(base, tls.cert_file, tls.key_file, purpose="server", now=now)
        for index, pair in enumerate(tls.certificates):
            where = (*base, "certificates", index)
            yield from _pair(where, pair.cert_file, pair.key_file, purpose="server", now=now)
        if tls.client_ca_file is not None:
            yield from _ca((*base, "client_ca_file"), tls.client_ca_file, now=now, clients=True)
        if tls.acme_ca_file is not None:
            yield from _ca((*base, "acme_ca_file"), tls.acme_ca_file, now=now)


def _upstream_files(config: Config, now: datetime) -> Iterator[tuple[Path, str]]:
    """The CA bundles and client certificates of the services' ``upstream_tls`` blocks."""
    for name, service in config.services.items():
        upstream = service.load_balancer.upstream_tls if service.load_balancer else None
        if upstream is None:
            continue
        base: Path = ("services", name, "load_balancer", "upstream_tls")
        if upstream.ca_file is not None:
            yield from _ca((*base, "ca_file"), upstream.ca_file, now=now)
        if upstream.cert_file is not None and upstream.key_file is not None:
            cert, key = upstream.cert_file, upstream.key_file
            yield from _pair(base, cert, key, purpose="client", now=now)


def otel_missing() -> str | None:
    """Why the ``otel`` extra's packages cannot be used (the first module that does not
    import, and its error), or None when they can."""
    for module in OTEL_MODULES:
        try:
            importlib.import_module(module)
        except Exception as error:  # ImportError, or a broken install (protobuf mismatch)
            return f"{module} cannot be imported ({type(error).__name__}: {error})"
    return None


def _otlp(endpoint: str, *, tracing: bool) -> Iterator[tuple[Path, str]]:
    """``otlp_endpoint``: an http(s) URL, and (spans are exported only with tracing on) the
    packages that export to it."""
    path: Path = ("observability", "otlp_endpoint")
    try:
        HttpUrl(endpoint)
    except ValueError as error:
        yield path, str(error)
    if not tracing:
        return
    missing = otel_missing()
    if missing is not None:
        yield path, f"OTLP export needs the OpenTelemetry packages ({missing}): {OTEL_EXTRA_HINT}"


def _unreadable(file: str) -> str | None:
    try:
        with open(file, "rb") as handle:
            handle.read(1)
    except FileNotFoundError:
        return f'file "{file}" not found'
    except IsADirectoryError:
        return f'"{file}" is a directory, not a file'
    except PermissionError:
        return f'file "{file}" is not readable (permission denied)'
    except OSError as error:
        return f'file "{file}" cannot be read: {error.strerror or error}'
    return None


class _EncryptedKeyError(Exception):
    """Raised by the passphrase callback: the key file asks for a passphrase."""


def _refuse_passphrase() -> str:
    """``load_cert_chain``'s ``password``: the gateway has no passphrase to give (and OpenSSL
    must not prompt on the terminal for one)."""
    raise _EncryptedKeyError


def _pair(
    base: Path, cert_file: str, key_file: str, *, purpose: Purpose, now: datetime
) -> Iterator[tuple[Path, str]]:
    cert_problem = _unreadable(cert_file)
    key_problem = _unreadable(key_file)
    if cert_problem is not None:
        yield (*base, "cert_file"), cert_problem
    if key_problem is not None:
        yield (*base, "key_file"), key_problem
    if cert_problem is not None or key_problem is not None:
        return
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_file, key_file, password=_refuse_passphrase)
    except _EncryptedKeyError:
        yield (
            (*base, "key_file"),
            (
                f'the key in "{key_file}" is encrypted; a passphrase-protected key is not '
                f"supported (store it decrypted, e.g. openssl pkey -in {key_file} -out <new "
                "file>, readable only by the gateway)"
            ),
        )
        return
    except ssl.SSLError as error:
        yield (*base, "cert_file"), _tls_message(error, cert_file, key_file)
        return
    except (OSError, ValueError) as error:
        yield (*base, "cert_file"), f'certificate "{cert_file}" cannot be loaded: {error}'
        return
    certificates = _certificates(cert_file)
    if certificates:
        for message in certificate_findings(cert_file, certificates[0], purpose=purpose, now=now):
            yield (*base, "cert_file"), message


def _tls_message(error: ssl.SSLError, cert_file: str, key_file: str) -> str:
    reason = (error.reason or "").upper()
    if "MISMATCH" in reason:
        return f'key "{key_file}" does not match certificate "{cert_file}"'
    if "PEM" in reason or "NO_START_LINE" in reason:
        return f'certificate "{cert_file}" or key "{key_file}" is not valid PEM'
    return f'certificate "{cert_file}" and key "{key_file}" cannot be loaded ({reason.lower()})'


def _certificates(file: str) -> list[x509.Certificate]:
    """The PEM certificates in ``file`` (other PEM blocks skipped); empty if none parse."""
    try:
        with open(file, "rb") as handle:
            data = handle.read(MAX_CERT_FILE_BYTES)
        return x509.load_pem_x509_certificates(data)
    except (OSError, ValueError):
        return []


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def certificate_findings(
    file: str, certificate: x509.Certificate, *, purpose: Purpose, now: datetime
) -> list[str]:
    """What is wrong with ``certificate`` (the leaf of ``file``) as a ``purpose`` certificate
    at ``now``: expired, not valid yet, or an extended key usage without that purpose."""
    found: list[str] = []
    not_after = certificate.not_valid_after_utc
    not_before = certificate.not_valid_before_utc
    if not_after < now:
        found.append(f'certificate "{file}" has expired: not valid after {_when(not_after)}')
    if not_before > now:
        found.append(f'certificate "{file}" is not valid yet: not valid before {_when(not_before)}')
    try:
        usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return found  # no extended key usage: any purpose
    wanted = _PURPOSE_OIDS[purpose]
    if wanted not in usage and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in usage:
        listed = ", ".join(_usage_name(oid) for oid in usage) or "none"
        found.append(
            f'certificate "{file}" is not for {_PURPOSE_NAMES[purpose]}: its extended key usage '
            f"({listed}) lacks {_usage_name(wanted)}"
        )
    return found


def _usage_name(oid: x509.ObjectIdentifier) -> str:
    """``serverAuth`` for the OID of that name (RFC 5280 short names), else the dotted OID."""
    return _USAGE_NAMES.get(oid, oid.dotted_string)


def ca_findings(
    file: str, certificates: list[x509.Certificate], *, clients: bool, now: datetime
) -> list[str]:
    """What is wrong with the CA bundle ``file`` at ``now``: every certificate expired or not
    yet valid, or (``clients``: a ``client_ca_file``) a certificate that is not a CA."""
    found: list[str] = []
    if clients:
        for certificate in certificates:
            if not _is_ca(certificate):
                found.append(
                    f'CA file "{file}" holds a certificate that is not a CA '
                    f"({certificate.subject.rfc4514_string()}): client certificates are verified "
                    "against CA certificates (basicConstraints CA:TRUE)"
                )
                break
    if certificates and not any(
        cert.not_valid_before_utc <= now <= cert.not_valid_after_utc for cert in certificates
    ):
        latest = max(cert.not_valid_after_utc for cert in certificates)
        if latest < now:
            found.append(f'every certificate in CA file "{file}" has expired (by {_when(latest)})')
        else:
            found.append(f'no certificate in CA file "{file}" is valid yet at {_when(now)}')
    return found


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca


def _ca(
    path: Path, file: str, *, now: datetime, clients: bool = False
) -> Iterator[tuple[Path, str]]:
    problem = _unreadable(file)
    if problem is not None:
        yield path, problem
        return
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=file)
    except (ssl.SSLError, OSError, ValueError):
        yield path, f'CA file "{file}" holds no parseable PEM certificate'
        return
    for message in ca_findings(file, _certificates(file), clients=clients, now=now):
        yield path, message


def _public_key(path: Path, file: str) -> Iterator[tuple[Path, str]]:
    problem = _unreadable(file)
    if problem is not None:
        yield path, problem
        return
    with open(file, "rb") as handle:
        data = handle.read(MAX_KEY_FILE_BYTES)
    try:
        load_pem_public_key(data)
    except (ValueError, TypeError):
        yield path, f'public key file "{file}" is not a PEM public key'
