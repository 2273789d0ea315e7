"""Merging the dynamic providers' snapshots into a reload candidate (SPEC §10.1, §3.15 check 3).

Ring 1 by package, pure in practice: ``merge`` takes the static config (the HCL files, already
checked), the latest ``Snapshot`` of each dynamic provider and a ``place`` function that turns
a PEM pair into certificate files (``providers/provider_hub.py`` owns those files), and
returns the config to swap in:

- A provider's routers and services join the config under their own names. A name the static
  config already uses (routers, tcp_routers and udp_routers share one namespace) or an earlier
  provider supplied hides the provider's object, with a warning naming it (static objects win);
  the provider's routers onto a service of its own that was hidden are left out too (they would
  reach backends their object never named).
- ``Snapshot.servers`` fill a service: the HCL service of that name gets them as its
  ``load_balancer.servers`` (the checks require them empty there), or a service with default
  settings is created. A ``providers.dns`` service with no answer yet exists without servers
  (503 rather than 404 while the provider starts).
- Certificates are placed and added to the ``tls.certificates`` of their entrypoints (every
  http entrypoint with ``tls`` when the pair names none); the ACME manager's are listed in
  ``provider_sources`` as ``certificates/<cert_file>``, so that they win their names in the
  SNI map over configured certificates (SPEC §12.5).
- The result is checked with the same semantic checks as a file (``check_semantics``); every
  error located in a provider's object drops that object (a warning quotes the error) and the
  check runs again, so one bad object never takes the others down. An error left in a static
  object (a provider's object that broke it indirectly) drops every provider object, with a
  warning: the static config alone is known to be valid.
- Finally *pending references* go: a router whose service is missing stays out of the table,
  and a mirror or failover naming a missing service is left out, until a provider supplies it.

Without a dynamic provider in the config the config is returned as it is: no check, no copy.

Must not: raise for any snapshot content, or echo a certificate or key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import msgspec

from a3s_gateway.config.problems import Problem, SourceMap, format_path
from a3s_gateway.config.schema_services import LoadBalancer, Server, Service
from a3s_gateway.config.semantic import SemanticContext, check_semantics

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from a3s_gateway.config.schema import Config, ProviderSource
    from a3s_gateway.config.schema_entrypoints import CertificatePair, Entrypoint
    from a3s_gateway.config.schema_routers import Router
    from a3s_gateway.providers.dynamic import PemPair, Snapshot

__all__ = ["DYNAMIC_KINDS", "Merged", "Source", "dynamic_kinds", "merge"]

#: The dynamic providers, in the order their snapshots are merged (earlier wins a name).
#: ``acme`` supplies certificates only (``acme/manager.py``); it runs when an entrypoint has
#: ``tls { acme = true }`` rather than from the ``providers`` block.
DYNAMIC_KINDS: Final = ("dns", "discovery", "kubernetes", "acme")

#: ``(section, name)`` of one object in the merged config.
_Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Source:
    """One provider's latest snapshot."""

    provider: str
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class Merged:
    """The config to swap in, the merge's own warnings, and the references left pending."""

    config: Config
    warnings: tuple[Problem, ...] = ()
    #: ``router "x" → service "y"`` for every reference to a service nobody supplies yet.
    pending: tuple[str, ...] = ()


def dynamic_kinds(config: Config) -> tuple[str, ...]:
    """The dynamic providers ``config`` enables, in merge order."""
    providers = config.providers
    kinds = [
        kind
        for kind in DYNAMIC_KINDS[:-1]
        if providers is not None and getattr(providers, kind) is not None
    ]
    if any(entry.tls is not None and entry.tls.acme for entry in config.entrypoints.values()):
        kinds.append("acme")
    return tuple(kinds)


@dataclass(frozen=True, slots=True)
class _Owner:
    provider: str
    origin: str


class _Draft:
    """The objects of the merged config while it is built and repaired."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.routers: dict[str, Router] = dict(config.routers)
        self.services: dict[str, Service] = dict(config.services)
        self.entrypoints: dict[str, Entrypoint] = dict(config.entrypoints)
        #: Objects a provider added, and static services a provider filled with servers.
        self.added: dict[_Key, _Owner] = {}
        self.filled: dict[_Key, _Owner] = {}
        self.warnings: list[Problem] = []
        self._taken = set(config.routers) | set(config.tcp_routers) | set(config.udp_routers)
        #: The certificate files the ACME manager supplied (they win their names, SPEC §12.5).
        self.acme_files: set[str] = set()
        #: DNS services added without servers because their provider has not answered yet.
        self._unresolved: set[str] = set()
        providers = config.providers
        dns = providers.dns if providers is not None else None
        #: The names ``providers.dns`` fills now (a restarted provider's old answer may
        #: name one no longer listed: ignored).
        self._dns_names = frozenset(dns.services) if dns is not None else frozenset()

    def warn(self, provider: str, key: _Key | None, message: str) -> None:
        path = format_path(key) if key is not None else ""
        self.warnings.append(
            Problem(
                severity="warning",
                file=f"provider {provider}",
                line=None,
                column=None,
                path=path,
                message=message,
            )
        )

    def build(self) -> Config:
        return msgspec.structs.replace(
            self.config,
            routers=self.routers,
            services=self.services,
            entrypoints=self.entrypoints,
            provider_sources=self.provenance(),
        )

    def provenance(self) -> dict[str, ProviderSource]:
        """``Config.provider_sources`` of the objects providers added (an IngressRoute's
        are ``kubernetes-crd``: they sort after Ingresses, SPEC §4.7)."""
        found: dict[str, ProviderSource] = {}
        for (section, name), owner in sorted(self.added.items()):
            source = _source(owner)
            if source is not None:
                found[f"{section}/{name}"] = source
        for cert_file in sorted(self.acme_files):
            found[f"certificates/{cert_file}"] = "acme"
        return found

    # -- adding --------------------------------------------------------------------------

    def add_source(self, source: Source, place: Callable[[PemPair], CertificatePair | str]) -> None:
        snapshot, provider = source.snapshot, source.provider
        for name, servers in sorted(snapshot.servers.items()):
            self._fill(provider, snapshot, name, servers)
        hidden: set[str] = set()
        for name, service in sorted(snapshot.services.items()):
            key = ("services", name)
            owner = _Owner(provider, snapshot.origins.get(key, f"service {name}"))
            if name in self.services:
                self._hidden(owner, key, "service")
                hidden.add(name)
                continue
            self.services[name] = service
            self.added[key] = owner
        for name, router in sorted(snapshot.routers.items()):
            key = ("routers", name)
            owner = _Owner(provider, snapshot.origins.get(key, f"router {name}"))
            if name in self._taken:
                self._hidden(owner, key, "router")
                continue
            if router.service in hidden:
                # Its own service lost the name: routing it to whoever owns the name instead
                # would send the provider object's traffic to backends it never named.
                self.warn(
                    provider,
                    key,
                    f'{owner.origin}: not applied: its service "{router.service}" is hidden by '
                    "an object of the same name",
                )
                continue
            self._taken.add(name)
            self.routers[name] = router
            self.added[key] = owner
        for pair in snapshot.certificates:
            self._certificate(provider, pair, place)

    def _fill(
        self, provider: str, snapshot: Snapshot, name: str, servers: Iterable[Server]
    ) -> None:
        key = ("services", name)
        owner = _Owner(provider, snapshot.origins.get(key, f"service {name}"))
        if provider == "dns" and name not in self._dns_names:
            return
        if key in self.added or key in self.filled:
            self._hidden(owner, key, "service")
            return
        listed = tuple(servers)
        static = self.services.get(name)
        if static is None:
            self.services[name] = Service(load_balancer=LoadBalancer(servers=listed))
            self.added[key] = owner
            return
        balancer = static.load_balancer if static.load_balancer is not None else LoadBalancer()
        filled = msgspec.structs.replace(balancer, servers=listed)
        self.services[name] = msgspec.structs.replace(static, load_balancer=filled)
        self.filled[key] = owner

    def droppable(self) -> bool:
        """Whether any provider object could still be dropped."""
        return bool(self.filled) or any(
            owner.provider != "dns" or key[0] != "services" or key[1] not in self._unresolved
            for key, owner in self.added.items()
        )

    def add_unresolved_dns(self) -> None:
        """A DNS service with no answer yet (the provider is starting) exists without servers:
        its routers answer 503, not 404, until the first answer."""
        providers = self.config.providers
        dns = providers.dns if providers is not None else None
        if dns is None:
            return
        for name in dns.services:
            if name not in self.services:
                self._unresolved.add(name)
                self.services[name] = Service(load_balancer=LoadBalancer())
                self.added[("services", name)] = _Owner("dns", f"DNS {dns.services[name].hostname}")

    def _hidden(self, owner: _Owner, key: _Key, noun: str) -> None:
        by = "the static config" if key[1] in self._static_names(key[0]) else "another provider"
        self.warn(
            owner.provider,
            key,
            f'{owner.origin}: not applied: {noun} "{key[1]}" is already defined by {by}',
        )

    def _static_names(self, section: str) -> set[str]:
        config = self.config
        if section == "services":
            return set(config.services)
        return set(config.routers) | set(config.tcp_routers) | set(config.udp_routers)

    def _certificate(
        self, provider: str, pair: PemPair, place: Callable[[PemPair], CertificatePair | str]
    ) -> None:
        targets = pair.entrypoints or tuple(
            name
            for name, entry in self.entrypoints.items()
            if entry.protocol == "http" and entry.tls is not None
        )
        usable = []
        for name in targets:
            entry = self.entrypoints.get(name)
            if entry is None or entry.protocol != "http" or entry.tls is None:
                self.warn(
                    provider,
                    None,
                    f'{pair.origin}: not loaded on entrypoint "{name}": '
                    "it is not an http entrypoint with tls",
                )
                continue
            usable.append(name)
        if not usable:
            return
        placed = place(pair)
        if isinstance(placed, str):
            self.warn(provider, None, f"{pair.origin}: not loaded: {placed}")
            return
        if provider == "acme":
            self.acme_files.add(placed.cert_file)
        for name in usable:
            entry = self.entrypoints[name]
            tls = entry.tls
            assert tls is not None
            if placed in tls.certificates:
                continue
            tls = msgspec.structs.replace(tls, certificates=(*tls.certificates, placed))
            self.entrypoints[name] = msgspec.structs.replace(entry, tls=tls)

    # -- repairing -----------------------------------------------------------------------

    def drop(self, key: _Key, reasons: Sequence[str]) -> None:
        owner = self.added.pop(key, None)
        if owner is not None:
            section, name = key
            if section == "routers":
                del self.routers[name]
                self._taken.discard(name)
            else:
                del self.services[name]
        else:
            owner = self.filled.pop(key)
            self.services[key[1]] = self.config.services[key[1]]
        self.warn(owner.provider, key, f"{owner.origin}: skipped: {'; '.join(reasons)}")

    def drop_all(self, reasons: Sequence[str]) -> None:
        providers = sorted(
            {owner.provider for owner in (*self.added.values(), *self.filled.values())}
        )
        self.routers = dict(self.config.routers)
        self.services = dict(self.config.services)
        self.entrypoints = dict(self.config.entrypoints)
        self.added.clear()
        self.filled.clear()
        self.add_unresolved_dns()
        for provider in providers:
            self.warn(
                provider,
                None,
                "no provider object applied: with them the config has errors outside them: "
                + "; ".join(reasons),
            )


def _source(owner: _Owner) -> ProviderSource | None:
    match owner.provider:
        case "kubernetes" if owner.origin.startswith("IngressRoute"):
            return "kubernetes-crd"
        case "dns" | "discovery" | "kubernetes" as known:
            return known
        case _:
            return None


def _located(path: str, key: _Key) -> bool:
    prefix = format_path(key)
    return path == prefix or path.startswith((prefix + ".", prefix + "["))


def _repair(draft: _Draft, context: SemanticContext) -> Config:
    """Check the draft; drop provider objects with errors until none is left (module doc)."""
    while True:
        config = draft.build()
        # The providers block was checked with the static config; in the merged one the
        # services it fills have servers, which that check (rightly) refuses in a file.
        errors = [
            p
            for p in check_semantics(config, context)
            if p.severity == "error" and not p.path.startswith("providers.")
        ]
        if not errors:
            return config
        keys = [*draft.added, *draft.filled]
        culprits: dict[_Key, list[str]] = {}
        for problem in errors:
            for key in keys:
                if _located(problem.path, key):
                    culprits.setdefault(key, []).append(problem.message)
        if not culprits:
            culprits = _indirect_culprits(draft, errors)
        if not culprits:
            if not draft.droppable():  # the static config itself: not ours to judge
                return config
            draft.drop_all([f"{p.path}: {p.message}" if p.path else p.message for p in errors])
            continue
        for key, reasons in culprits.items():
            draft.drop(key, reasons)


_NAMED: Final = re.compile(r'^(services|routers|tcp_routers|udp_routers)\["([^"]+)"\]')


def _indirect_culprits(draft: _Draft, errors: Sequence[Problem]) -> dict[_Key, list[str]]:
    """Provider objects behind errors located in static objects: a provider router (or a
    filled service) whose service is a static service an error names, or the service of a
    static router an error names (a discovered route onto a TCP service, say)."""
    hit: dict[str, list[str]] = {}
    for problem in errors:
        found = _NAMED.match(problem.path)
        if found is None:
            continue
        section, name = found.groups()
        service = name
        if section != "services":
            router = getattr(draft.config, section).get(name)
            service = router.service if router is not None else ""
        hit.setdefault(service, []).append(f"{problem.path}: {problem.message}")
    culprits: dict[_Key, list[str]] = {}
    for key in draft.added:
        section, name = key
        if section == "routers" and draft.routers[name].service in hit:
            culprits[key] = hit[draft.routers[name].service]
    for key in draft.filled:
        if key[1] in hit:
            culprits[key] = hit[key[1]]
    return culprits


def _without_pending(config: Config) -> tuple[Config, tuple[str, ...]]:
    """Routers whose service is missing leave the table; mirrors and failovers naming a missing
    service are left out (SPEC §3.15 check 3)."""
    services = config.services
    pending: list[str] = []
    routers = {}
    for name, router in config.routers.items():
        if router.service in services:
            routers[name] = router
        else:
            pending.append(f'router "{name}" → service "{router.service}"')
    streams: dict[str, dict[str, object]] = {}
    for section in ("tcp_routers", "udp_routers"):
        kept: dict[str, object] = {}
        for name, stream_router in getattr(config, section).items():
            if stream_router.service in services:
                kept[name] = stream_router
            else:
                pending.append(f'{section[:3]} router "{name}" → service "{stream_router.service}"')
        streams[section] = kept
    kept_services = {}
    for name, service in services.items():
        if service.mirror is not None and service.mirror.service not in services:
            pending.append(f'service "{name}" mirror → service "{service.mirror.service}"')
            service = msgspec.structs.replace(service, mirror=None)
        if service.failover is not None and service.failover.service not in services:
            pending.append(f'service "{name}" failover → service "{service.failover.service}"')
            service = msgspec.structs.replace(service, failover=None)
        kept_services[name] = service
    if not pending:
        return config, ()
    provenance = {
        key: source
        for key, source in config.provider_sources.items()
        if not key.startswith("routers/") or key.removeprefix("routers/") in routers
    }
    merged = msgspec.structs.replace(
        config,
        routers=routers,
        tcp_routers=streams["tcp_routers"],
        udp_routers=streams["udp_routers"],
        services=kept_services,
        provider_sources=provenance,
    )
    return merged, tuple(pending)


def merge(
    config: Config,
    sources: Sequence[Source],
    *,
    place: Callable[[PemPair], CertificatePair | str],
    workers: int = 1,
    default_file: str = "",
) -> Merged:
    """``config`` with ``sources`` merged in, checked and repaired (module docstring)."""
    if not dynamic_kinds(config):
        return Merged(config)
    draft = _Draft(config)
    for source in sources:
        draft.add_source(source, place)
    draft.add_unresolved_dns()
    context = SemanticContext(
        sources=SourceMap(), default_file=default_file, broken=frozenset(), workers=workers
    )
    merged = _repair(draft, context) if draft.added or draft.filled else draft.build()
    merged, pending = _without_pending(merged)
    return Merged(merged, tuple(draft.warnings), pending)
