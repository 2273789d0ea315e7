"""Semantic checks of ``entrypoints`` and ``management`` (SPEC §3.6, §3.7, §3.13, §3.15 check 10).

Ring 0: pure. Checks that each entrypoint field applies to its protocol, the HTTP/2 windows,
``redirect_to`` (another http entrypoint with tls, on a fixed port), address collisions between
listeners (TCP-based entrypoints may not share ip:port; a UDP one may share a port number with
them; ``:port`` collides with every host on that port) and the management listener, and warns
about TCP/UDP entrypoints without a router and a management API on a non-loopback address.
TLS blocks are checked by ``semantic_tls``.

The management warning is issued when the address is not loopback and no admin token is set
(the loader tells, through ``SemanticContext.admin_token_set``; this module reads no environment).

Must not: raise, or read the environment.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Final

from a3s_gateway.config.schema_entrypoints import (
    ENTRYPOINT_FIELD_PROTOCOLS,
    TIMEOUT_FIELD_PROTOCOLS,
    Entrypoint,
)
from a3s_gateway.config.semantic_report import article
from a3s_gateway.config.semantic_tls import check_tls

if TYPE_CHECKING:
    from a3s_gateway.config.problems import Path
    from a3s_gateway.config.semantic_report import Report
    from a3s_gateway.config.values import Address

#: Entrypoint fields that apply only to an ``http`` entrypoint *without* ``tls``.
_PLAINTEXT_ONLY: Final = ("redirect_to", "h2c")
_IPV4_ANY: Final = "0.0.0.0"
_IPV6_ANY: Final = "::"


def check_entrypoints(report: Report) -> None:
    """Check every entrypoint and the listener addresses; a config needs one entrypoint."""
    config = report.config
    if not config.entrypoints and not report.section_broken("entrypoints"):
        report.error(("entrypoints",), "no entrypoints are defined; at least one is required")
    for name, entrypoint in config.entrypoints.items():
        base: Path = ("entrypoints", name)
        _check_fields(report, base, entrypoint)
        _check_timeouts(report, base, entrypoint)
        if entrypoint.http2 is not None and entrypoint.protocol == "http":
            http2 = entrypoint.http2
            if http2.connection_window_size < http2.initial_window_size:
                report.error(
                    (*base, "http2", "connection_window_size"),
                    f"connection_window_size ({http2.connection_window_size}) must be at least "
                    f"initial_window_size ({http2.initial_window_size})",
                )
        plaintext_http = entrypoint.protocol == "http" and entrypoint.tls is None
        if entrypoint.redirect_to is not None and plaintext_http:
            _check_redirect(report, base, name, entrypoint.redirect_to)
        if entrypoint.tls is not None and entrypoint.protocol != "udp":
            check_tls(report, (*base, "tls"), entrypoint.tls)
            if entrypoint.tls.acme and entrypoint.protocol != "http":
                report.error(
                    (*base, "tls", "acme"),
                    "acme = true applies to http entrypoints only (the certificates are for the "
                    "host names of HTTP routers)",
                )
    _check_collisions(report)
    _warn_without_router(report)


def _check_fields(report: Report, base: Path, entrypoint: Entrypoint) -> None:
    protocol = entrypoint.protocol
    for field, protocols in ENTRYPOINT_FIELD_PROTOCOLS.items():
        if getattr(entrypoint, field, None) is None:
            continue
        if protocol not in protocols:
            applies = ", ".join(sorted(protocols))
            report.error(
                (*base, field),
                f'field "{field}" does not apply to {article(protocol)} entrypoint (applies to: '
                f"{applies})",
            )
        elif field in _PLAINTEXT_ONLY and entrypoint.tls is not None:
            report.error(
                (*base, field),
                f'field "{field}" does not apply to an http entrypoint with tls (applies to: '
                "http without tls)",
            )


def _check_timeouts(report: Report, base: Path, entrypoint: Entrypoint) -> None:
    timeouts = entrypoint.timeouts
    if timeouts is None:
        return
    protocol = entrypoint.protocol
    for field, protocols in TIMEOUT_FIELD_PROTOCOLS.items():
        value = getattr(timeouts, field, None)
        if value is None:
            continue
        path = (*base, "timeouts", field)
        if protocol not in protocols:
            applies = ", ".join(sorted(protocols))
            report.error(
                path,
                f'field "{field}" does not apply to {article(protocol)} entrypoint (applies to: '
                f"{applies})",
            )
    idle = timeouts.idle
    if idle is not None and idle.seconds == 0 and protocol == "http":
        report.error(
            (*base, "timeouts", "idle"),
            'idle = "0s" (disabled) is accepted only on tcp entrypoints; http entrypoints '
            "need an idle timeout",
        )


def _check_redirect(report: Report, base: Path, name: str, target: str) -> None:
    path = (*base, "redirect_to")
    entrypoints = report.config.entrypoints
    if target == name:
        report.error(path, "redirect_to must name another entrypoint, not this one")
        return
    if not report.known(path, "entrypoints", entrypoints, target):
        return
    found = entrypoints[target]
    if found.protocol != "http" or found.tls is None:
        report.error(
            path,
            f'redirect_to target "{target}" must be an http entrypoint with tls',
        )
    elif found.address.port == 0:
        # The Location names the target's port, which an ephemeral port does not have yet.
        report.error(
            path,
            f'redirect_to target "{target}" listens on port 0 (any free port): a redirect '
            "needs the port clients should use; give it a fixed port",
        )


# -- addresses ---------------------------------------------------------------------------------


def collides(first: Address, second: Address) -> bool:
    """Whether two listen addresses of one transport cannot both be bound.

    Port 0 (ephemeral) never collides. ``:port`` collides with every host on that port;
    ``0.0.0.0`` with every IPv4 host and ``[::]`` with every IPv6 host on that port.
    """
    if first.port != second.port or first.port == 0:
        return False
    if first.host == second.host or "" in (first.host, second.host):
        return True
    return _covers(first.host, second.host) or _covers(second.host, first.host)


def _covers(wildcard: str, host: str) -> bool:
    if wildcard == _IPV4_ANY:
        return ":" not in host
    if wildcard == _IPV6_ANY:
        return ":" in host
    return False


def _check_collisions(report: Report) -> None:
    seen: list[tuple[str, Entrypoint]] = []
    for name, entrypoint in report.config.entrypoints.items():
        udp = entrypoint.protocol == "udp"
        for other_name, other in seen:
            if (other.protocol == "udp") == udp and collides(entrypoint.address, other.address):
                report.error(
                    ("entrypoints", name, "address"),
                    f'address "{entrypoint.address.text}" collides with entrypoint '
                    f'"{other_name}" ("{other.address.text}")',
                )
                break
        seen.append((name, entrypoint))


def check_management(report: Report) -> None:
    """The management listener may not collide with an entrypoint (UDP ones excepted, since
    UDP may share a port number with TCP) and warns on a non-loopback address without a token."""
    management = report.config.management
    if management is None or not management.enabled:
        return
    address = management.address
    path: Path = ("management", "address")
    for name, entrypoint in report.config.entrypoints.items():
        if entrypoint.protocol != "udp" and collides(address, entrypoint.address):
            report.error(
                path,
                f'management address "{address.text}" collides with entrypoint "{name}" '
                f'("{entrypoint.address.text}")',
            )
            break
    if not _is_loopback(address.host) and not report.context.admin_token_set:
        report.warning(
            path,
            "management API listens on a non-loopback address; set "
            f"{management.auth_token_env} to require a token",
        )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- warnings ----------------------------------------------------------------------------------


def _warn_without_router(report: Report) -> None:
    config = report.config
    tcp_known = not report.section_broken("tcp_routers")
    udp_known = not report.section_broken("udp_routers")
    for name, entrypoint in config.entrypoints.items():
        if entrypoint.protocol == "tcp" and tcp_known:
            if not any(
                not router.entrypoints or name in router.entrypoints
                for router in config.tcp_routers.values()
            ):
                report.warning(
                    ("entrypoints", name),
                    f'tcp entrypoint "{name}" has no tcp router; its connections are closed',
                )
        elif (
            entrypoint.protocol == "udp"
            and udp_known
            and not any(name in router.entrypoints for router in config.udp_routers.values())
        ):
            report.warning(
                ("entrypoints", name),
                f'udp entrypoint "{name}" has no udp router; its datagrams are dropped',
            )
