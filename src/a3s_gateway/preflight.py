"""Environment checks of a loaded config (SPEC §3.1 step 6) and ``validate_config``.

Ring 1 (reads files and uses ``ssl``), no trio: TLS certificate/key files readable, parseable
and matching, CA bundles parseable, JWT public keys parseable, and, with ``otlp_endpoint``
set, an http(s) URL there and the OpenTelemetry packages of the ``otel`` extra importable
(SPEC §9.4 "Export"; ``server/otlp.py`` needs them). These run at start and in ``validate``
without ``--offline``; never at ``load_config``. Must not: print or return the contents of any
key file or an interpolated value (``LoadResult.redactor``), or contact the network.
"""

from __future__ import annotations

import importlib
import ssl
from typing import TYPE_CHECKING, Final

from cryptography.hazmat.primitives.serialization import load_pem_public_key

from a3s_gateway.config.load import LoadOptions, LoadResult, load
from a3s_gateway.config.problems import Path, Problem, SourceMap, make_problem, sort_problems
from a3s_gateway.config.schema_middlewares import Jwt
from a3s_gateway.config.urls import HttpUrl

if TYPE_CHECKING:
    import os
    from collections.abc import Iterator, Mapping

    from a3s_gateway.config.schema import Config

MAX_KEY_FILE_BYTES: Final = 1024 * 1024
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


def check(result: LoadResult, *, offline: bool) -> tuple[Problem, ...]:
    """``result``'s problems plus, unless ``offline``, the environment checks (interpolated
    values redacted as in the load's own problems)."""
    if offline or result.partial is None:
        return result.problems
    extra = check_environment(result.partial, result.sources, default_file=result.main_file)
    return sort_problems([*result.problems, *result.redactor.problems(extra)])


def check_environment(config: Config, sources: SourceMap, *, default_file: str) -> list[Problem]:
    """Every file the config names, checked the way the gateway will use it."""
    problems: list[Problem] = []
    for path, message in _findings(config):
        problems.append(make_problem("error", path, message, sources, default_file=default_file))
    return problems


def _findings(config: Config) -> Iterator[tuple[Path, str]]:
    yield from _entrypoint_files(config)
    yield from _upstream_files(config)
    management = config.management
    if management is not None and management.tls is not None:
        base: Path = ("management", "tls")
        yield from _pair(base, management.tls.cert_file, management.tls.key_file)
        if management.tls.client_ca_file is not None:
            yield from _ca((*base, "client_ca_file"), management.tls.client_ca_file)
    for name, middleware in config.middlewares.items():
        if isinstance(middleware, Jwt) and middleware.public_key_file is not None:
            path: Path = ("middlewares", name, "public_key_file")
            yield from _public_key(path, middleware.public_key_file)
    observability = config.observability
    if observability.otlp_endpoint:
        yield from _otlp(observability.otlp_endpoint, tracing=observability.tracing_enabled)


def _entrypoint_files(config: Config) -> Iterator[tuple[Path, str]]:
    """The certificates, keys and CA bundles of the entrypoints' ``tls`` blocks."""
    for name, entrypoint in config.entrypoints.items():
        tls = entrypoint.tls
        if tls is None:
            continue
        base: Path = ("entrypoints", name, "tls")
        if tls.cert_file is not None and tls.key_file is not None:
            yield from _pair(base, tls.cert_file, tls.key_file)
        for index, pair in enumerate(tls.certificates):
            yield from _pair((*base, "certificates", index), pair.cert_file, pair.key_file)
        if tls.client_ca_file is not None:
            yield from _ca((*base, "client_ca_file"), tls.client_ca_file)
        if tls.acme_ca_file is not None:
            yield from _ca((*base, "acme_ca_file"), tls.acme_ca_file)


def _upstream_files(config: Config) -> Iterator[tuple[Path, str]]:
    """The CA bundles and client certificates of the services' ``upstream_tls`` blocks."""
    for name, service in config.services.items():
        upstream = service.load_balancer.upstream_tls if service.load_balancer else None
        if upstream is None:
            continue
        base: Path = ("services", name, "load_balancer", "upstream_tls")
        if upstream.ca_file is not None:
            yield from _ca((*base, "ca_file"), upstream.ca_file)
        if upstream.cert_file is not None and upstream.key_file is not None:
            yield from _pair(base, upstream.cert_file, upstream.key_file)


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


def _pair(base: Path, cert_file: str, key_file: str) -> Iterator[tuple[Path, str]]:
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
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as error:
        yield (*base, "cert_file"), _tls_message(error, cert_file, key_file)
    except (OSError, ValueError) as error:
        yield (*base, "cert_file"), f'certificate "{cert_file}" cannot be loaded: {error}'


def _tls_message(error: ssl.SSLError, cert_file: str, key_file: str) -> str:
    reason = (error.reason or "").upper()
    if "MISMATCH" in reason:
        return f'key "{key_file}" does not match certificate "{cert_file}"'
    if "PEM" in reason or "NO_START_LINE" in reason:
        return f'certificate "{cert_file}" or key "{key_file}" is not valid PEM'
    return f'certificate "{cert_file}" and key "{key_file}" cannot be loaded ({reason.lower()})'


def _ca(path: Path, file: str) -> Iterator[tuple[Path, str]]:
    problem = _unreadable(file)
    if problem is not None:
        yield path, problem
        return
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=file)
    except (ssl.SSLError, OSError, ValueError):
        yield path, f'CA file "{file}" holds no parseable PEM certificate'


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
