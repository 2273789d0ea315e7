"""Shared state of the semantic checks: the context, the problem collector and the lookups.

Ring 0: pure bookkeeping over a converted ``Config``. The ``semantic_*`` modules each check one
part of the config (SPEC §3.15) and report through one ``Report``, which locates every problem
through the source map and knows how to resolve references (defined, broken, pending).

Must not: raise on any schema-valid config, or put a secret value into a message (messages name
secret fields only, SPEC §2.3, §14.4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, TypeAlias

from a3s_gateway.config.problems import Path, Problem, Severity, SourceMap, make_problem
from a3s_gateway.config.suggest import closest

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Iterator

    from a3s_gateway.config.schema import Config, Service
    from a3s_gateway.config.schema_services import Server

RouterKind: TypeAlias = Literal["http", "tcp", "udp"]

#: Router section → the kind of router it holds.
ROUTER_SECTIONS: Final[dict[str, RouterKind]] = {
    "routers": "http",
    "tcp_routers": "tcp",
    "udp_routers": "udp",
}
#: Server transports (``ServerUrl.transport``) each router kind can use (SPEC §3.15 check 5).
KIND_TRANSPORTS: Final[dict[RouterKind, frozenset[str]]] = {
    "http": frozenset({"http", "https", "h2c"}),
    "tcp": frozenset({"tcp", "tls", "bare"}),
    "udp": frozenset({"udp", "bare"}),
}
#: The same, as users write the schemes.
KIND_SCHEMES: Final[dict[RouterKind, str]] = {
    "http": "http, https, h2c, ws, wss",
    "tcp": "tcp, tls or bare host:port",
    "udp": "udp or bare host:port",
}
#: Section → the noun used for its blocks in messages.
SECTION_NOUNS: Final[dict[str, str]] = {
    "entrypoints": "entrypoint",
    "routers": "router",
    "tcp_routers": "tcp router",
    "udp_routers": "udp router",
    "services": "service",
    "middlewares": "middleware",
}
_LISTED_NAMES: Final = 20


@dataclass(frozen=True, slots=True)
class SemanticContext:
    """What the semantic checks need besides the config itself."""

    sources: SourceMap
    default_file: str
    #: ``(section, label)`` of blocks that failed schema conversion and were dropped: references
    #: to them are never reported as undefined (their own problem is already reported).
    broken: frozenset[tuple[str, str]]
    #: ``--workers`` (SPEC §2.1); > 1 makes in-memory rate limits per worker.
    workers: int = 1
    #: Whether the variable named by ``management.auth_token_env`` is set and non-empty (the
    #: loader reads the environment; the checks themselves never do).
    admin_token_set: bool = False


@dataclass(frozen=True, slots=True)
class ServiceUse:
    """One router that uses a service."""

    kind: RouterKind
    section: str
    router: str


class Report:
    """Collects problems and answers the questions every check asks about the config."""

    __slots__ = ("config", "context", "dns_services", "pending_from", "problems", "service_uses")

    def __init__(self, config: Config, context: SemanticContext) -> None:
        self.config = config
        self.context = context
        self.problems: list[Problem] = []
        providers = config.providers
        dns = providers.dns if providers is not None else None
        #: Services whose backends come from ``providers.dns`` (they need no HCL block).
        self.dns_services = frozenset(dns.services if dns is not None else ())
        #: Dynamic providers that may still supply a missing service (SPEC §3.15 check 3).
        self.pending_from: tuple[str, ...] = _dynamic_providers(config)
        self.service_uses: dict[str, list[ServiceUse]] = _service_uses(config)

    # -- reporting -------------------------------------------------------------------------

    def add(self, severity: Severity, path: Path, message: str) -> None:
        """Record one problem located at ``path``."""
        self.problems.append(
            make_problem(
                severity,
                path,
                message,
                self.context.sources,
                default_file=self.context.default_file,
            )
        )

    def error(self, path: Path, message: str) -> None:
        """Record an error at ``path``."""
        self.add("error", path, message)

    def warning(self, path: Path, message: str) -> None:
        """Record a warning at ``path``."""
        self.add("warning", path, message)

    # -- lookups ---------------------------------------------------------------------------

    def is_broken(self, section: str, label: str) -> bool:
        """Whether ``section "label"`` existed but was dropped by schema conversion."""
        return (section, label) in self.context.broken

    def section_broken(self, section: str) -> bool:
        """Whether any block of ``section`` was dropped (its contents are then unknown)."""
        return any(broken_section == section for broken_section, _ in self.context.broken)

    def service(self, path: Path, name: str, *, what: str = "service") -> Service | None:
        """Resolve a service reference; report it if undefined (or pending, SPEC §3.15 check 3).

        Returns the HCL service block, or ``None`` when there is none to check further.
        """
        found = self.config.services.get(name)
        if found is not None:
            return found
        if self.is_broken("services", name) or name in self.dns_services:
            return None
        if self.pending_from:
            providers = " or ".join(self.pending_from)
            self.warning(
                path,
                f'{what} "{name}" is not defined yet: pending until the {providers} provider '
                "supplies it",
            )
            return None
        known = [*self.config.services, *sorted(self.dns_services - set(self.config.services))]
        self.error(path, undefined("service", name, known))
        return None

    def known(self, path: Path, section: str, names: Collection[str], name: str) -> bool:
        """Whether ``name`` is one of ``names`` (the labels of ``section``); reports it when it
        is neither defined nor a broken block of that section."""
        if name in names:
            return True
        if not self.is_broken(section, name):
            self.error(path, undefined(SECTION_NOUNS.get(section, section), name, list(names)))
        return False


def undefined(noun: str, name: str, known: list[str]) -> str:
    """``service "billing" is not defined (defined: a, b)``, with a suggestion when close."""
    suggestion = closest(name, known)
    if suggestion is not None:
        return f'{noun} "{name}" is not defined (did you mean "{suggestion}"?)'
    return f'{noun} "{name}" is not defined ({defined_list(known)})'


def defined_list(names: Iterable[str]) -> str:
    """``defined: a, b`` (at most 20 names) or ``none is defined``."""
    listed = list(names)
    if not listed:
        return "none is defined"
    shown = ", ".join(listed[:_LISTED_NAMES])
    more = f", and {len(listed) - _LISTED_NAMES} more" if len(listed) > _LISTED_NAMES else ""
    return f"defined: {shown}{more}"


def all_servers(service: Service) -> list[tuple[Path, Server]]:
    """Every server of a service with its path below the service: pool, then revisions."""
    found: list[tuple[Path, Server]] = []
    if service.load_balancer is not None:
        for index, server in enumerate(service.load_balancer.servers):
            found.append((("load_balancer", "servers", index), server))
    for number, revision in enumerate(service.revisions):
        for index, server in enumerate(revision.servers):
            found.append((("revisions", number, "servers", index), server))
    return found


def article(word: str) -> str:
    """``an http``, ``a tcp``: the indefinite article for a protocol or kind word."""
    return f"an {word}" if word.startswith(("a", "e", "i", "o", "http", "h2")) else f"a {word}"


def _dynamic_providers(config: Config) -> tuple[str, ...]:
    providers = config.providers
    if providers is None:
        return ()
    found: list[str] = []
    if providers.discovery is not None:
        found.append("discovery")
    if providers.kubernetes is not None:
        found.append("kubernetes")
    return tuple(found)


def router_services(config: Config) -> Iterator[tuple[ServiceUse, str]]:
    """Every router (HTTP, then TCP, then UDP, each in config order) with its service name."""
    for name, router in config.routers.items():
        yield ServiceUse("http", "routers", name), router.service
    for name, tcp_router in config.tcp_routers.items():
        yield ServiceUse("tcp", "tcp_routers", name), tcp_router.service
    for name, udp_router in config.udp_routers.items():
        yield ServiceUse("udp", "udp_routers", name), udp_router.service


def _service_uses(config: Config) -> dict[str, list[ServiceUse]]:
    uses: dict[str, list[ServiceUse]] = {}
    for use, service in router_services(config):
        uses.setdefault(service, []).append(use)
    return uses
