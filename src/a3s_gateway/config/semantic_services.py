"""Semantic checks of ``services`` (SPEC §3.10, §3.15 checks 3, 5, 8 and the service warnings).

Ring 0: pure. Checks that a service has a backend source, duplicate server URLs, the
``load_balancer`` rules (health check, passive health, sticky, ``hash_key``, upstream TLS),
mirror and failover targets and ``websocket_mux``. Revisions, rollout and scaling are checked by
``semantic_revisions``.

Must not: raise, or echo the sticky ``secret`` or header values.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from a3s_gateway.config.semantic_middlewares import check_header_values
from a3s_gateway.config.semantic_report import (
    KIND_SCHEMES,
    KIND_TRANSPORTS,
    Report,
    RouterKind,
    all_servers,
    article,
)
from a3s_gateway.config.semantic_revisions import check_revisions, check_scaling
from a3s_gateway.config.values import ServerUrl, quote_value

if TYPE_CHECKING:
    from a3s_gateway.config.problems import Path
    from a3s_gateway.config.schema import Service
    from a3s_gateway.config.schema_services import HealthCheck, LoadBalancer, Server, Sticky

_MIN_STICKY_SECRET: Final = 16
_STATUS_ITEM: Final = re.compile(r"\s*([0-9]{3})(?:\s*-\s*([0-9]{3}))?\s*")
#: Every service field other than ``websocket_mux``, with "is it set" tests.
_MUX_EXCLUDES: Final = (
    "load_balancer",
    "mirror",
    "failover",
    "scaling",
    "revisions",
    "revision_affinity",
    "revision_header",
    "rollout",
)


def check_services(report: Report) -> None:
    """Check every service in config order."""
    for name, service in report.config.services.items():
        base: Path = ("services", name)
        if service.websocket_mux is not None:
            _check_mux(report, base, service)
            continue
        _check_backend_source(report, base, name, service)
        balancer = service.load_balancer
        if balancer is not None:
            _check_load_balancer(report, (*base, "load_balancer"), service, balancer)
        for number, revision in enumerate(service.revisions):
            _check_duplicate_urls(report, (*base, "revisions", number, "servers"), revision.servers)
        _check_shared_urls(report, base, service)
        check_revisions(report, base, name, service)
        if service.scaling is not None:
            check_scaling(report, base, service, service.scaling)
        _check_targets(report, base, name, service)


def _check_backend_source(report: Report, base: Path, name: str, service: Service) -> None:
    """SPEC §3.10: servers, revisions, a provider entry or the local executor."""
    balancer = service.load_balancer
    if balancer is not None and balancer.servers:
        return
    if service.revisions or name in report.dns_services or report.pending_from:
        return
    scaling = service.scaling
    if scaling is not None and scaling.executor == "local":
        return
    # providers.dns joins the hint when it lands (config/availability.py).
    report.error(
        base,
        f'service "{name}" has no backends: set load_balancer.servers, e.g. '
        'servers = [{ url = "http://127.0.0.1:8001" }], revisions, or a scaling block with '
        'executor = "local"',
    )


def _check_shared_urls(report: Report, base: Path, service: Service) -> None:
    """A server in two pools (the load balancer's and a revision's, or two revisions') is two
    backends with one address, each with its own in-flight count and concurrency limit: a
    warning (the A3S README's example lists its v1 server in both, SPEC §3.10)."""
    balancer = service.load_balancer
    owner: dict[ServerUrl, str] = {}
    for server in balancer.servers if balancer is not None else ():
        owner.setdefault(server.url, "load_balancer.servers")
    for number, revision in enumerate(service.revisions):
        here = f"revisions[{number}]"
        for index, server in enumerate(revision.servers):
            other = owner.setdefault(server.url, here)
            if other != here:
                report.warning(
                    (*base, "revisions", number, "servers", index, "url"),
                    f'server url "{server.url.text}" is also in {other}: each pool counts '
                    "its requests to it apart (container_concurrency applies per pool)",
                )


def _check_duplicate_urls(report: Report, base: Path, servers: tuple[Server, ...]) -> None:
    first: dict[ServerUrl, int] = {}
    for index, server in enumerate(servers):
        seen = first.setdefault(server.url, index)
        if seen != index:
            report.error(
                (*base, index, "url"),
                f'duplicate server url "{server.url.text}" (also servers[{seen}])',
            )


# -- load_balancer -----------------------------------------------------------------------------


def _check_load_balancer(
    report: Report, base: Path, service: Service, balancer: LoadBalancer
) -> None:
    _check_duplicate_urls(report, (*base, "servers"), balancer.servers)
    if balancer.servers and service.revisions:
        report.warning(
            (*base, "servers"),
            "load_balancer.servers next to revisions is only the fallback pool, used when no "
            "revision has an available backend",
        )
    if balancer.hash_key is not None:
        _check_hash_key(report, (*base, "hash_key"), service, balancer)
    if balancer.health_check is not None:
        _check_health_check(report, (*base, "health_check"), service, balancer.health_check)
    passive = balancer.passive_health
    if passive.max_recovery_time.seconds < passive.recovery_time.seconds:
        report.error(
            (*base, "passive_health", "max_recovery_time"),
            f'max_recovery_time ("{passive.max_recovery_time.text}") must be at least '
            f'recovery_time ("{passive.recovery_time.text}")',
        )
    if balancer.sticky is not None:
        _check_sticky(report, (*base, "sticky"), balancer.sticky)
    upstream = balancer.upstream_tls
    if upstream is not None and (upstream.cert_file is None) != (upstream.key_file is None):
        missing = "key_file" if upstream.key_file is None else "cert_file"
        report.error(
            (*base, "upstream_tls", missing),
            "upstream_tls cert_file and key_file must be set together (both or neither)",
        )
    if upstream is not None and upstream.insecure_skip_verify:
        report.warning(
            (*base, "upstream_tls", "insecure_skip_verify"),
            "insecure_skip_verify = true: the backends' certificates and names are not checked, "
            "so anyone on the path can pose as them; set ca_file instead where possible",
        )


def _check_hash_key(report: Report, path: Path, service: Service, balancer: LoadBalancer) -> None:
    strategies = {balancer.strategy, *(r.strategy for r in service.revisions if r.strategy)}
    if "consistent-hash" not in strategies:
        report.error(
            path,
            'field "hash_key" applies only to strategy "consistent-hash" (strategy is '
            f'"{balancer.strategy}")',
        )
    elif balancer.hash_key == "global":
        report.error(
            path,
            'hash_key "global" would send every request to one backend; expected client-ip, '
            "host, path, header:<name>, cookie:<name> or query:<name>",
        )


def _check_health_check(report: Report, base: Path, service: Service, check: HealthCheck) -> None:
    kind = check.type
    if kind is None:
        servers = [server for _, server in all_servers(service)]
        kind = "tcp" if servers and not any(s.url.is_http_like for s in servers) else "http"
    if kind == "http" and check.path is None:
        report.error(
            (*base, "path"), 'field "path" is required for http health checks, e.g. "/health"'
        )
    elif kind == "tcp" and check.path is not None:
        report.error((*base, "path"), 'field "path" does not apply to a tcp health check')
    if check.path is not None and not check.path.startswith("/"):
        report.error((*base, "path"), f'path {quote_value(check.path)} must start with "/"')
    if check.timeout.seconds > check.interval.seconds:
        report.error(
            (*base, "timeout"),
            f'timeout ("{check.timeout.text}") must be at most interval ("{check.interval.text}")',
        )
    if not _valid_status_list(check.expected_status):
        report.error(
            (*base, "expected_status"),
            f"expected_status {quote_value(check.expected_status)} is invalid: expected codes "
            'and ranges like "200,204,300-399" (codes 100-599)',
        )
    check_header_values(report, (*base, "headers"), check.headers)


def _valid_status_list(text: str) -> bool:
    for item in text.split(","):
        matched = _STATUS_ITEM.fullmatch(item)
        if matched is None:
            return False
        low = int(matched[1])
        high = int(matched[2]) if matched[2] is not None else low
        if not 100 <= low <= high <= 599:
            return False
    return True


def _check_sticky(report: Report, base: Path, sticky: Sticky) -> None:
    if sticky.secret is None:
        report.warning(
            base,
            'sticky without "secret": the cookie key is derived from the service name, so a '
            "client could forge a cookie for another backend; set a shared secret",
        )
    elif len(sticky.secret.encode()) < _MIN_STICKY_SECRET:
        report.error((*base, "secret"), "secret must be at least 16 bytes")
    if sticky.same_site == "none" and sticky.secure is False:
        report.error(
            (*base, "same_site"),
            'same_site "none" needs Secure cookies; remove secure = false',
        )
    if not sticky.path.startswith("/"):
        report.error((*base, "path"), f'path {quote_value(sticky.path)} must start with "/"')
    for field, value in (("path", sticky.path), ("domain", sticky.domain)):
        # RFC 6265 §4.1.1: anything else would end or inject a cookie attribute.
        if value is not None and not _cookie_attribute_ok(value):
            report.error(
                (*base, field),
                f"{field} {quote_value(value)} must be ASCII without control characters or ';'",
            )


def _cookie_attribute_ok(text: str) -> bool:
    return text.isascii() and ";" not in text and all(0x20 <= ord(c) != 0x7F for c in text)


# -- mirror, failover (check 8) ----------------------------------------------------------------


def _check_targets(report: Report, base: Path, name: str, service: Service) -> None:
    kind = _kind_of(report, name)
    if service.mirror is not None:
        path = (*base, "mirror", "service")
        if kind != "http":
            report.error((*base, "mirror"), "mirror applies only to services of http routers")
        _check_target(report, path, name, service.mirror.service, "mirror", "http")
    if service.failover is not None:
        path = (*base, "failover", "service")
        _check_target(report, path, name, service.failover.service, "failover", kind)


def _check_target(
    report: Report, path: Path, name: str, target: str, what: str, kind: RouterKind
) -> None:
    if target == name:
        report.error(path, f'{what} target must be another service, not "{name}" itself')
        return
    found = report.service(path, target, what=f"{what} service")
    if found is None:
        return
    if found.websocket_mux is not None:
        report.error(
            path, f'{what} target "{target}" uses websocket_mux; expected {article(kind)} service'
        )
        return
    for _, server in all_servers(found):
        if server.url.transport not in KIND_TRANSPORTS[kind]:
            report.error(
                path,
                f'{what} target "{target}" is not {article(kind)} service: server '
                f'"{server.url.text}" (accepted: {KIND_SCHEMES[kind]})',
            )
            return


def _kind_of(report: Report, name: str) -> RouterKind:
    uses = report.service_uses.get(name)
    return uses[0].kind if uses else "http"


# -- websocket_mux -----------------------------------------------------------------------------


def _check_mux(report: Report, base: Path, service: Service) -> None:
    for field in _MUX_EXCLUDES:
        value = getattr(service, field, None)
        if value is not None and value not in ("", ()):
            report.error((*base, field), f'field "{field}" cannot be combined with websocket_mux')
    mux = service.websocket_mux
    if mux is None:
        return
    if not mux.channels:
        report.error(
            (*base, "websocket_mux", "channels"), "websocket_mux needs at least one channel"
        )
    for channel_name, channel in mux.channels.items():
        path = (*base, "websocket_mux", "channels", channel_name)
        if (channel.service is None) == (not channel.broadcast):
            report.error(
                path, f'channel "{channel_name}" needs exactly one of service or broadcast = true'
            )
        if channel.echo and not channel.broadcast:
            report.error((*path, "echo"), "echo applies only to broadcast channels")
        if not channel.path.startswith("/"):
            report.error((*path, "path"), f'path {quote_value(channel.path)} must start with "/"')
        if channel.service is not None:
            _check_channel_service(report, (*path, "service"), channel.service)


def _check_channel_service(report: Report, path: Path, target: str) -> None:
    found = report.service(path, target)
    if found is None:
        return
    if found.websocket_mux is not None:
        report.error(path, f'channel service "{target}" uses websocket_mux itself')
        return
    for _, server in all_servers(found):
        if not server.url.is_http_like:
            report.error(
                path,
                f'channel service "{target}" is not a WebSocket-capable http service: server '
                f'"{server.url.text}" (accepted: {KIND_SCHEMES["http"]})',
            )
            return
