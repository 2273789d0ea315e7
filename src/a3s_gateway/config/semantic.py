"""Semantic checks of a converted config (SPEC §3.15 and the per-field rules of §3.7-3.14 that
the schema types cannot express).

Ring 0: pure. ``check_semantics`` runs every check in a fixed order (entrypoints, routers,
services, middlewares, providers, management; each section in config order) and returns every
problem found, errors and warnings alike, each located through the source map. The checks live
beside this module: ``semantic_entrypoints`` (listeners, addresses, management),
``semantic_tls``, ``semantic_routers`` (references, router kinds, rules), ``semantic_services``,
``semantic_revisions`` (revisions, rollout, scaling) and ``semantic_middlewares``; this module
holds the driver, the name rules and the provider references.

Must not: raise on any config the schema accepted, stop at the first problem, report a
reference to a block that failed conversion (``SemanticContext.broken``), or echo a secret.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, Final

from a3s_gateway.config.schema import LABELLED_SECTIONS
from a3s_gateway.config.semantic_entrypoints import check_entrypoints, check_management
from a3s_gateway.config.semantic_middlewares import check_middlewares
from a3s_gateway.config.semantic_report import ROUTER_SECTIONS, Report, SemanticContext, article
from a3s_gateway.config.semantic_routers import check_routers
from a3s_gateway.config.semantic_services import check_services
from a3s_gateway.config.values import NAME_PATTERN

if TYPE_CHECKING:
    from a3s_gateway.config.problems import Problem
    from a3s_gateway.config.schema import Config

__all__ = ["SemanticContext", "check_semantics"]

_NAME: Final = re.compile(NAME_PATTERN)
_NAME_RULE: Final = (
    "expected letters, digits, '_', '.', '-', starting with a letter or digit, "
    "at most 128 characters"
)


def check_semantics(config: Config, context: SemanticContext) -> list[Problem]:
    """Every semantic error and warning of ``config`` (SPEC §3.15). Never raises."""
    report = Report(config, context)
    _check_names(report)
    check_entrypoints(report)
    check_routers(report)
    check_services(report)
    check_middlewares(report)
    _check_providers(report)
    check_management(report)
    return report.problems


# -- names (check 1) ---------------------------------------------------------------------------


def _check_names(report: Report) -> None:
    config = report.config
    sections: dict[str, list[str]] = {
        "entrypoints": list(config.entrypoints),
        "routers": list(config.routers),
        "tcp_routers": list(config.tcp_routers),
        "udp_routers": list(config.udp_routers),
        "services": list(config.services),
        "middlewares": list(config.middlewares),
    }
    for section in LABELLED_SECTIONS:
        for name in sections[section]:
            _check_name(report, (section, name), name)
    for service_name, service in config.services.items():
        if service.websocket_mux is not None:
            for channel in service.websocket_mux.channels:
                path = ("services", service_name, "websocket_mux", "channels", channel)
                _check_name(report, path, channel)
    _check_router_namespace(report, sections)


def _check_name(report: Report, path: tuple[str, ...], name: str) -> None:
    if _NAME.match(name) is None:
        shown = name if name.isprintable() and len(name) <= 140 else repr(name[:140])
        report.error(path, f'name "{shown}" is invalid: {_NAME_RULE}')


def _check_router_namespace(report: Report, sections: dict[str, list[str]]) -> None:
    """``routers``, ``tcp_routers`` and ``udp_routers`` share one namespace (SPEC §3.3.2)."""
    owner: dict[str, str] = {}
    for section in ROUTER_SECTIONS:
        for name in sections[section]:
            first = owner.setdefault(name, section)
            if first != section:
                report.error(
                    (section, name),
                    f'router name "{name}" is already used by {first} "{name}"; routers, '
                    "tcp_routers and udp_routers share one namespace",
                )


# -- providers ---------------------------------------------------------------------------------


def _check_providers(report: Report) -> None:
    providers = report.config.providers
    if providers is None:
        return
    if providers.dns is not None:
        _check_dns(report)
    if providers.discovery is not None:
        for index, seed in enumerate(providers.discovery.seeds):
            if "?" in seed.url.target:
                # A seed is also a backend URL, which has no query (and it may hold a secret).
                report.error(
                    ("providers", "discovery", "seeds", index, "url"),
                    "a seed url may not have a query: the seed is also the service's backend "
                    'url, e.g. "http://10.0.0.5:8080"',
                )
        base = ("providers", "discovery", "entrypoints")
        for index, name in enumerate(providers.discovery.entrypoints):
            _provider_entrypoint(report, (*base, index), name, need_tls=False)
    if providers.kubernetes is not None:
        base = ("providers", "kubernetes", "entrypoints")
        for index, name in enumerate(providers.kubernetes.entrypoints):
            _provider_entrypoint(report, (*base, index), name, need_tls=False)
        base = ("providers", "kubernetes", "tls_entrypoints")
        for index, name in enumerate(providers.kubernetes.tls_entrypoints):
            _provider_entrypoint(report, (*base, index), name, need_tls=True)


def _provider_entrypoint(
    report: Report, path: tuple[str | int, ...], name: str, *, need_tls: bool
) -> None:
    entrypoints = report.config.entrypoints
    if not report.known(path, "entrypoints", entrypoints, name):
        return
    entrypoint = entrypoints[name]
    if entrypoint.protocol != "http":
        report.error(
            path, f'entrypoint "{name}" is {article(entrypoint.protocol)} entrypoint; expected http'
        )
    elif need_tls and entrypoint.tls is None:
        report.error(path, f'entrypoint "{name}" has no tls; expected an http entrypoint with tls')


def _check_dns(report: Report) -> None:
    providers = report.config.providers
    dns = providers.dns if providers is not None else None
    if dns is None:
        return
    for index, nameserver in enumerate(dns.nameservers):
        if not _is_nameserver(nameserver):
            report.error(
                ("providers", "dns", "nameservers", index),
                f'nameserver "{nameserver}" is invalid: expected ip or ip:port, e.g. "10.0.0.2:53"',
            )
    for name, entry in dns.services.items():
        path = ("providers", "dns", "services", name)
        _check_name(report, path, name)
        if entry.record_type != "SRV" and entry.port is None:
            report.error(
                (*path, "port"),
                f'field "port" is required for record_type "{entry.record_type}" '
                "(only SRV records carry ports)",
            )
        service = report.config.services.get(name)
        balancer = service.load_balancer if service is not None else None
        if balancer is not None and balancer.servers:
            report.error(
                path,
                f'service "{name}" gets its servers from DNS; its load_balancer.servers must be '
                "empty",
            )


def _is_nameserver(text: str) -> bool:
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                return False
            port = rest[1:]
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return 1 <= len(port) <= 5 and port.isascii() and port.isdigit() and 1 <= int(port) <= 65535
