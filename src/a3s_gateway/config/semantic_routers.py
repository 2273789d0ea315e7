"""Semantic checks of ``routers``, ``tcp_routers`` and ``udp_routers`` (SPEC §3.9, §3.15 checks
2-5 and the router warnings).

Ring 0: pure. Checks that every referenced entrypoint, middleware and service exists and fits
the router kind, that a service serves one router kind with fitting server schemes, that a UDP
entrypoint has at most one UDP router, and compiles every rule (``a3s_gateway.routing``), so a
syntax or argument error is reported with its column. Warns about ``cors`` after an auth
middleware, the compiler's warnings (``*`` inside a ``Host`` argument, v2 templates that never
match) and catch-all TCP routers that shadow an HTTP entrypoint.

Must not: raise, or report references to blocks that failed conversion.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from a3s_gateway.config.schema_middlewares import (
    AUTH_MIDDLEWARE_TYPES,
    TCP_MIDDLEWARE_TYPES,
    middleware_type,
)
from a3s_gateway.config.semantic_report import (
    KIND_SCHEMES,
    KIND_TRANSPORTS,
    Report,
    RouterKind,
    ServiceUse,
    all_servers,
    article,
)
from a3s_gateway.routing import CompiledRule, RuleKind, RuleSyntax, RuleSyntaxError, compile_rule

if TYPE_CHECKING:
    from a3s_gateway.config.problems import Path
    from a3s_gateway.config.schema_routers import Router, TcpRouter
    from a3s_gateway.config.schema_services import Service

_DNS_TRANSPORTS: Final = {"ws": "http", "wss": "https"}


def check_routers(report: Report) -> None:
    """Check every HTTP, TCP and UDP router, then the services they use."""
    for name, router in report.config.routers.items():
        _check_http_router(report, name, router)
    for name, tcp_router in report.config.tcp_routers.items():
        _check_tcp_router(report, name, tcp_router)
    _check_udp_routers(report)
    for service, uses in report.service_uses.items():
        _check_service_kind(report, service, uses)


def _check_http_router(report: Report, name: str, router: Router) -> None:
    base: Path = ("routers", name)
    _check_rule(report, (*base, "rule"), router.rule, "http", router.rule_syntax)
    report.service((*base, "service"), router.service)
    _check_entrypoint_list(report, base, router.entrypoints, "http")
    _check_middleware_list(report, base, router.middlewares, "http")
    _warn_cors_after_auth(report, base, router.middlewares)


def _check_tcp_router(report: Report, name: str, router: TcpRouter) -> None:
    base: Path = ("tcp_routers", name)
    compiled = _check_rule(report, (*base, "rule"), router.rule, "tcp", router.rule_syntax)
    report.service((*base, "service"), router.service)
    _check_entrypoint_list(report, base, router.entrypoints, "tcp")
    _check_middleware_list(report, base, router.middlewares, "tcp")
    if router.tls_passthrough:
        _check_passthrough(report, base, router)
    if compiled is None or not compiled.catch_all:
        return
    for index, entrypoint_name in enumerate(router.entrypoints):
        entrypoint = report.config.entrypoints.get(entrypoint_name)
        if entrypoint is not None and entrypoint.protocol == "http" and entrypoint.tls is not None:
            report.warning(
                (*base, "entrypoints", index),
                f"catch-all tcp router takes every connection on http entrypoint "
                f'"{entrypoint_name}"; its http routers are never reached',
            )


def _check_passthrough(report: Report, base: Path, router: TcpRouter) -> None:
    """``tls_passthrough`` changes something only on an entrypoint with ``tls``: on one without,
    TLS is relayed as it comes anyway (a warning, so the config still says what it means)."""
    config = report.config
    names = router.entrypoints or tuple(
        name for name, entrypoint in config.entrypoints.items() if entrypoint.protocol == "tcp"
    )
    attached = [config.entrypoints[name] for name in names if name in config.entrypoints]
    if attached and all(entrypoint.tls is None for entrypoint in attached):
        report.warning(
            (*base, "tls_passthrough"),
            "tls_passthrough has no effect: none of this router's entrypoints has tls, so "
            "TLS connections are relayed unchanged (and routed by their SNI) anyway",
        )


def _check_udp_routers(report: Report) -> None:
    owners: dict[str, str] = {}
    for name, router in report.config.udp_routers.items():
        base: Path = ("udp_routers", name)
        report.service((*base, "service"), router.service)
        _check_entrypoint_list(report, base, router.entrypoints, "udp")
        for index, entrypoint in enumerate(router.entrypoints):
            owner = owners.setdefault(entrypoint, name)
            if owner != name:
                report.error(
                    (*base, "entrypoints", index),
                    f'udp entrypoint "{entrypoint}" already has udp router "{owner}"; '
                    "a udp entrypoint takes at most one udp router",
                )


# -- entrypoints and middlewares of a router (check 2) -----------------------------------------


def _check_entrypoint_list(
    report: Report, base: Path, names: tuple[str, ...], kind: RouterKind
) -> None:
    entrypoints = report.config.entrypoints
    if not names and kind != "udp":
        if not report.section_broken("entrypoints") and not any(
            e.protocol == kind for e in entrypoints.values()
        ):
            report.error(
                (*base, "entrypoints"),
                f"no {kind} entrypoint is defined; {article(kind)} router with no entrypoints "
                f"attaches to every {kind} entrypoint",
            )
        return
    seen: set[str] = set()
    for index, name in enumerate(names):
        path = (*base, "entrypoints", index)
        if name in seen:
            report.error(path, f'entrypoint "{name}" is listed twice')
            continue
        seen.add(name)
        if report.known(path, "entrypoints", entrypoints, name):
            _check_entrypoint_fit(report, path, name, kind)


def _check_entrypoint_fit(report: Report, path: Path, name: str, kind: RouterKind) -> None:
    entrypoint = report.config.entrypoints[name]
    protocol = entrypoint.protocol
    if kind == "tcp":
        if protocol == "tcp" or (protocol == "http" and entrypoint.tls is not None):
            return
        what = "an http entrypoint without tls" if protocol == "http" else "a udp entrypoint"
        report.error(
            path,
            f'entrypoint "{name}" is {what}; tcp routers need tcp entrypoints or http '
            "entrypoints with tls",
        )
    elif protocol != kind:
        report.error(
            path,
            f'entrypoint "{name}" is {article(protocol)} entrypoint; {kind} routers need {kind} '
            "entrypoints",
        )


def _check_middleware_list(
    report: Report, base: Path, names: tuple[str, ...], kind: RouterKind
) -> None:
    middlewares = report.config.middlewares
    seen: set[str] = set()
    for index, name in enumerate(names):
        path = (*base, "middlewares", index)
        if name in seen:
            report.error(path, f'middleware "{name}" is listed twice')
            continue
        seen.add(name)
        if not report.known(path, "middlewares", middlewares, name):
            continue
        tag = middleware_type(middlewares[name])
        if kind == "tcp" and tag not in TCP_MIDDLEWARE_TYPES:
            report.error(
                path,
                f'middleware "{name}" has type "{tag}"; tcp routers accept only tcp-filter '
                "middlewares",
            )
        elif kind == "http" and tag in TCP_MIDDLEWARE_TYPES:
            report.error(
                path,
                f'middleware "{name}" has type "{tag}", which applies only to tcp routers',
            )


def _warn_cors_after_auth(report: Report, base: Path, names: tuple[str, ...]) -> None:
    auth: str | None = None
    for index, name in enumerate(names):
        middleware = report.config.middlewares.get(name)
        if middleware is None:
            continue
        tag = middleware_type(middleware)
        if tag in AUTH_MIDDLEWARE_TYPES and auth is None:
            auth = name
        elif tag == "cors" and auth is not None:
            report.warning(
                (*base, "middlewares", index),
                f'cors middleware "{name}" comes after auth middleware "{auth}", so preflight '
                "requests would be rejected; list it before the auth middleware",
            )


# -- services by router kind (check 5) ---------------------------------------------------------


def _check_service_kind(report: Report, name: str, uses: list[ServiceUse]) -> None:
    kinds: list[RouterKind] = []
    for use in uses:
        if use.kind in kinds:
            continue
        if kinds:
            first = next(u for u in uses if u.kind == kinds[0])
            report.error(
                (use.section, use.router, "service"),
                f'service "{name}" is used by {first.kind} router "{first.router}" and '
                f'{use.kind} router "{use.router}"; a service serves one router kind',
            )
        kinds.append(use.kind)
    primary = uses[0]
    service = report.config.services.get(name)
    if service is None:
        _check_dns_scheme(report, name, primary)
        return
    if service.websocket_mux is not None:
        for use in uses:
            if use.kind != "http":
                report.error(
                    (use.section, use.router, "service"),
                    f'service "{name}" uses websocket_mux; only http routers can use it',
                )
        return
    if primary.kind != "http":
        _check_stream_service(report, name, service, primary)
    for path, server in all_servers(service):
        if server.url.transport not in KIND_TRANSPORTS[primary.kind]:
            scheme = server.url.scheme or "bare host:port"
            report.error(
                ("services", name, *path, "url"),
                f'server scheme "{scheme}" does not fit {primary.kind} router '
                f'"{primary.router}" (accepted: {KIND_SCHEMES[primary.kind]})',
            )
    _check_dns_scheme(report, name, primary)


def _check_stream_service(report: Report, name: str, service: Service, use: ServiceUse) -> None:
    """Settings of a service that a TCP or UDP router cannot honour are errors, never ignored:
    sticky cookies (no HTTP), a ``hash_key`` other than the client IP (no request to read
    one from), and for UDP active health checks (a datagram has no probe to answer)."""
    where = f'{use.kind} router "{use.router}"'
    for field in ("scaling", "revisions", "rollout"):
        if getattr(service, field):
            report.error(
                ("services", name, field),
                f"{field} applies to HTTP services (it counts and splits requests); service "
                f'"{name}" is used by {where}',
            )
    balancer = service.load_balancer
    if balancer is None:
        return
    base: Path = ("services", name, "load_balancer")
    if balancer.sticky is not None:
        report.error(
            (*base, "sticky"),
            f'sticky cookies need HTTP; service "{name}" is used by {where} '
            '(for affinity use strategy = "consistent-hash": it hashes the client IP)',
        )
    if balancer.hash_key not in (None, "client-ip"):
        report.error(
            (*base, "hash_key"),
            f'a {use.kind} connection has only its client IP to hash; service "{name}" is used '
            f'by {where}: remove hash_key or set it to "client-ip"',
        )
    if use.kind == "udp" and balancer.health_check is not None:
        report.error(
            (*base, "health_check"),
            f'UDP backends cannot be probed; service "{name}" is used by {where} (passive '
            "health still applies: a backend that answers with ICMP unreachable is ejected)",
        )


def _check_dns_scheme(report: Report, name: str, use: ServiceUse) -> None:
    providers = report.config.providers
    dns = providers.dns if providers is not None else None
    entry = dns.services.get(name) if dns is not None else None
    if entry is None:
        return
    transport = _DNS_TRANSPORTS.get(entry.scheme, entry.scheme)
    if transport not in KIND_TRANSPORTS[use.kind]:
        report.error(
            ("providers", "dns", "services", name, "scheme"),
            f'scheme "{entry.scheme}" does not fit {use.kind} router "{use.router}" '
            f"(accepted: {KIND_SCHEMES[use.kind]})",
        )


# -- rules (check 4) ---------------------------------------------------------------------------


def _check_rule(
    report: Report, path: Path, rule: str, kind: RuleKind, syntax: RuleSyntax = "v3"
) -> CompiledRule | None:
    """Compile the rule (SPEC §4): a syntax or argument error is one problem naming the
    column; the compiler's warnings (e.g. a literal ``*`` in ``Host``) become warnings."""
    try:
        compiled = compile_rule(rule, kind=kind, syntax=syntax)
    except RuleSyntaxError as error:
        where = f" at column {error.column}" if error.column is not None else ""
        report.error(path, f"rule {_quoted(rule)}: {error.message}{where}")
        return None
    for warning in compiled.warnings:
        report.warning(path, warning)
    return compiled


def _quoted(rule: str) -> str:
    shown = rule if len(rule) <= 80 else rule[:80] + "..."
    return "'" + shown.replace("\n", "\\n") + "'"
