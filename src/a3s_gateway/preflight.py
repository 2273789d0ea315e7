"""Environment checks of a loaded config (SPEC §3.1 step 6) and ``validate_config``.

Ring 1 (reads files and uses ``ssl``), no trio: TLS certificate/key files readable, parseable
and matching, CA bundles parseable, JWT public keys parseable. These run at start and in
``validate`` without ``--offline``; never at ``load_config``. Must not: print or return the
contents of any key file, or contact the network.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Final

from cryptography.hazmat.primitives.serialization import load_pem_public_key

from a3s_gateway.config.load import LoadOptions, LoadResult, load
from a3s_gateway.config.problems import Path, Problem, SourceMap, make_problem, sort_problems
from a3s_gateway.config.schema_middlewares import Jwt

if TYPE_CHECKING:
    import os
    from collections.abc import Iterator, Mapping

    from a3s_gateway.config.schema import Config

MAX_KEY_FILE_BYTES: Final = 1024 * 1024


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
    """``result``'s problems plus, unless ``offline``, the environment checks."""
    if offline or result.partial is None:
        return result.problems
    extra = check_environment(result.partial, result.sources, default_file=result.main_file)
    return sort_problems([*result.problems, *extra])


def check_environment(config: Config, sources: SourceMap, *, default_file: str) -> list[Problem]:
    """Every file the config names, checked the way the gateway will use it."""
    problems: list[Problem] = []
    for path, message in _findings(config):
        problems.append(make_problem("error", path, message, sources, default_file=default_file))
    return problems


def _findings(config: Config) -> Iterator[tuple[Path, str]]:
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
    for name, service in config.services.items():
        upstream = service.load_balancer.upstream_tls if service.load_balancer else None
        if upstream is None:
            continue
        base = ("services", name, "load_balancer", "upstream_tls")
        if upstream.ca_file is not None:
            yield from _ca((*base, "ca_file"), upstream.ca_file)
        if upstream.cert_file is not None and upstream.key_file is not None:
            yield from _pair(base, upstream.cert_file, upstream.key_file)
    management = config.management
    if management is not None and management.tls is not None:
        base = ("management", "tls")
        yield from _pair(base, management.tls.cert_file, management.tls.key_file)
        if management.tls.client_ca_file is not None:
            yield from _ca((*base, "client_ca_file"), management.tls.client_ca_file)
    for name, middleware in config.middlewares.items():
        if isinstance(middleware, Jwt) and middleware.public_key_file is not None:
            path: Path = ("middlewares", name, "public_key_file")
            yield from _public_key(path, middleware.public_key_file)


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
