"""The success summary printed by ``validate`` (SPEC §2.3), as text lines or a JSON-ready dict.

Ring 0: pure formatting of a ``Config``. Must not: include secrets (only names, addresses,
types and counts appear).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from a3s_gateway.config.schema_middlewares import middleware_type

if TYPE_CHECKING:
    from a3s_gateway.config.schema import Config
    from a3s_gateway.config.schema_entrypoints import Tls

_DEFAULT_STRATEGY: Final = "round-robin"


def effective_priority(priority: int, rule: str) -> int:
    """SPEC §4.7: ``priority`` if not 0, else the UTF-8 length of the rule text."""
    return priority if priority != 0 else len(rule.encode())


def router_order(config: Config) -> list[tuple[str, int]]:
    """HTTP routers in match order with their effective priority (ties by name)."""
    ranked = [
        (name, effective_priority(router.priority, router.rule))
        for name, router in config.routers.items()
    ]
    return sorted(ranked, key=lambda item: (-item[1], item[0]))


def summary(config: Config) -> dict[str, object]:
    """Entrypoints, routers in match order, services, middlewares and providers."""
    entrypoints = [
        {
            "name": name,
            "address": entrypoint.address.text,
            "protocol": entrypoint.protocol,
            "tls": _tls_names(entrypoint.tls),
        }
        for name, entrypoint in config.entrypoints.items()
    ]
    routers = [{"name": name, "priority": priority} for name, priority in router_order(config)]
    services = [
        {"name": name, "backends": backends, "strategy": kind}
        for name, backends, kind in _service_rows(config)
    ]
    middlewares = [
        {"name": name, "type": middleware_type(middleware)}
        for name, middleware in config.middlewares.items()
    ]
    return {
        "entrypoints": entrypoints,
        "routers": routers,
        "tcp_routers": sorted(config.tcp_routers),
        "udp_routers": sorted(config.udp_routers),
        "services": services,
        "middlewares": middlewares,
        "providers": _providers(config),
    }


def summary_lines(config: Config) -> list[str]:
    """The summary as indented text lines."""
    lines = ["entrypoints:"]
    for name, entrypoint in config.entrypoints.items():
        names = _tls_names(entrypoint.tls)
        tls = f"tls: {', '.join(names)}" if names else "no tls"
        lines.append(f"  {name}  {entrypoint.address.text}  {entrypoint.protocol}  {tls}")
    lines.append("routers (match order):")
    for name, priority in router_order(config):
        lines.append(f"  {name}  priority {priority}")
    for section in ("tcp_routers", "udp_routers"):
        names = sorted(getattr(config, section))
        if names:
            lines.append(f"{section.replace('_', ' ')}: {', '.join(names)}")
    lines.append("services:")
    for name, backends, kind in _service_rows(config):
        lines.append(f"  {name}  {backends} backend(s)  {kind}")
    if config.middlewares:
        lines.append("middlewares:")
        for name, middleware in config.middlewares.items():
            lines.append(f"  {name}  ({middleware_type(middleware)})")
    providers = _providers(config)
    if providers:
        lines.append(f"providers: {', '.join(providers)}")
    return lines


#: ``executor`` spellings by the name the summary shows.
_EXECUTORS: Final = {"k8s": "kubernetes"}


def _service_rows(config: Config) -> list[tuple[str, int, str]]:
    rows: list[tuple[str, int, str]] = []
    for name, service in config.services.items():
        balancer = service.load_balancer
        backends = len(balancer.servers) if balancer is not None else 0
        backends += sum(len(revision.servers) for revision in service.revisions)
        scaling = service.scaling
        if scaling is not None and scaling.executor == "local":
            backends += scaling.max_replicas  # the local executor's possible replicas
        strategy = balancer.strategy if balancer is not None else _DEFAULT_STRATEGY
        kind: str = "websocket-mux" if service.websocket_mux is not None else strategy
        if scaling is not None:
            kind += f", scaled by {_EXECUTORS.get(scaling.executor, scaling.executor)}"
        rows.append((name, backends, kind))
    return rows


def _providers(config: Config) -> list[str]:
    found = config.providers
    if found is None:
        return []
    candidates = (("file", found.file), ("dns", found.dns))
    more = (("discovery", found.discovery), ("kubernetes", found.kubernetes))
    return [name for name, block in (*candidates, *more) if block is not None]


def _tls_names(tls: Tls | None) -> list[str]:
    """What identifies an entrypoint's certificates: files, or ACME domains."""
    if tls is None:
        return []
    names = [f for f in (tls.cert_file,) if f is not None]
    names += [pair.cert_file for pair in tls.certificates]
    if tls.acme:
        names += [f"acme:{domain}" for domain in tls.acme_domains] or ["acme"]
    return names
