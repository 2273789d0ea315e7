"""Kubernetes objects → the provider's ``Snapshot`` (SPEC §10.6), through ``translate``:
Ingresses and IngressRoutes become routers (``kube_ingress``: each object read into a draft),
the Services they name become services whose servers come from EndpointSlices or cluster DNS
names, and the TLS Secrets they name become SNI certificates (``kube_backends``). The caches it
reads and the checked reader of decoded objects are ``kube_objects``'s.

Objects are visited in sorted order (Ingresses, then IngressRoutes), so equal inputs give equal
snapshots. A malformed object is skipped whole with a message naming its kind and
namespace/name, and the others translate; an object that read cleanly is committed whole.

Names can collide, since ``-`` both joins the parts and occurs in them: namespace ``victim``
with Service ``a-web`` and namespace ``victim-a`` with Service ``web`` both give service
``k8s-victim-a-web-80``. A service name is owned by the first identity that uses it, a Service
port (namespace, Service, port) or one route's revisions service; an object that would use it
for another identity, or that makes a router name another object already made, is skipped
whole (none of its routers, services or certificates) with a message naming both objects, and
the first in sorted order keeps the name. So a router only ever points at a service made from
the Service port its own object names. A Service port is one service shared by every router
that points at it; when two objects set different strategies on one shared service, the first
in sorted order wins and the other gets a message. Routers and services are built with
``build_router`` and ``build_service``: one the config would refuse is left out with a message,
and so is every router pointing at a service left out. Every message lands in the snapshot's
``skipped``.

Ring 1 by place (``providers/``), pure by nature: ``translate`` takes the watch caches as plain
dicts (decoded JSON) and the settings, and returns a ``Snapshot``; no I/O, no clock, no trio.
Nurseries: none. Deadlines: none. Must not: raise for a malformed object, or put a Secret's
data in a message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from a3s_gateway.providers.dynamic import PemPair, Snapshot, build_router, build_service
from a3s_gateway.providers.kube_backends import Resolver, pem_pair
from a3s_gateway.providers.kube_ingress import Draft, read_ingress, read_ingress_route
from a3s_gateway.providers.kube_objects import MalformedError, Node, UnusableError

if TYPE_CHECKING:
    from collections.abc import Callable

    from a3s_gateway.config.schema import KubernetesProvider
    from a3s_gateway.config.schema_routers import Router
    from a3s_gateway.config.schema_services import Service
    from a3s_gateway.providers.kube_backends import Backend
    from a3s_gateway.providers.kube_objects import KubeObject, KubeObjects, ObjectKey

__all__ = ["translate"]

#: Reads one object into a draft (``read_ingress``, ``read_ingress_route``).
_Reader: TypeAlias = "Callable[[KubernetesProvider, Resolver, ObjectKey, Node, Draft], None]"


@dataclass(slots=True)
class _ServiceEntry:
    """A service being assembled: its backend (None: synthesised), the identity that owns its
    name, its tree and first user."""

    backend: Backend | None
    owner: _Identity
    origin: str
    tree: dict[str, object]
    strategy: str | None = None
    strategy_origin: str = ""


#: What a service name stands for: a Service port (``Backend``), or the revisions service of
#: one route, named by the object it comes from (``_Synthesised``).
_Identity: TypeAlias = "Backend | _Synthesised"


@dataclass(frozen=True, slots=True)
class _Synthesised:
    """The identity of a service made for one route (an IngressRoute's weighted services)."""

    origin: str
    name: str

    def __str__(self) -> str:
        return f"the revisions of {self.origin}"


def _identity(origin: str, name: str, backend: Backend | None) -> _Identity:
    return backend if backend is not None else _Synthesised(origin, name)


class _Translation:
    """Collects routers, services, certificates and messages, object by object."""

    def __init__(self, objects: KubeObjects, settings: KubernetesProvider) -> None:
        self.objects = objects
        self.settings = settings
        self.resolver = Resolver(objects, use_endpoints=settings.use_endpoints)
        self.routers: dict[str, tuple[str, dict[str, object]]] = {}
        self.services: dict[str, _ServiceEntry] = {}
        self.secrets: dict[ObjectKey, str] = {}
        self.notes: list[str] = []

    def add(self, origin: str, draft: Draft) -> None:
        """Commit ``draft`` (an object that read cleanly), or nothing of it when one of its
        router or service names is already taken by something else (a collision)."""
        clash = self._clash(draft)
        if clash is not None:
            self.notes.append(f"{origin}: skipped: {clash}")
            return
        for name, tree in draft.routers.items():
            self.routers[name] = (origin, tree)
        for name, backend, tree, strategy in draft.uses:
            self._use(draft, name, backend, tree, strategy)
        for key in draft.secrets:
            self.secrets.setdefault(key, origin)
        self.notes.extend(draft.notes)

    def _clash(self, draft: Draft) -> str | None:
        """Why ``draft`` cannot be committed: a router name already made from another object,
        or a service name that stands for another Service port (or route) than it does here;
        None when it can."""
        for name in draft.routers:
            if name in self.routers:
                return f"router {name} is already made from {self.routers[name][0]}"
        claimed: dict[str, _Identity] = {}
        for name, backend, _, _ in draft.uses:
            identity = _identity(draft.origin, name, backend)
            entry = self.services.get(name)
            if entry is not None and entry.owner != identity:
                return (
                    f"service {name} ({identity}) is already made from {entry.origin} "
                    f"({entry.owner})"
                )
            first = claimed.setdefault(name, identity)
            if first != identity:
                return f"service {name} would stand for both {first} and {identity}"
        return None

    def _use(
        self,
        draft: Draft,
        name: str,
        backend: Backend | None,
        tree: dict[str, object],
        strategy: str | None,
    ) -> None:
        entry = self.services.get(name)
        if entry is None:
            owner = _identity(draft.origin, name, backend)
            entry = _ServiceEntry(backend, owner, draft.origin, tree)
            self.services[name] = entry
        if strategy is None or strategy == entry.strategy:
            return
        if entry.strategy is None:
            entry.strategy, entry.strategy_origin = strategy, draft.origin
        else:
            draft.note(
                f"strategy {strategy} of service {name} ignored: {entry.strategy_origin} set "
                f"{entry.strategy}"
            )

    def snapshot(self) -> Snapshot:
        """The routers, services and certificates committed so far."""
        routers: dict[str, Router] = {}
        services: dict[str, Service] = {}
        origins: dict[tuple[str, str], str] = {}
        notes = list(self.notes)
        for name, entry in sorted(self.services.items()):
            tree = self._service_tree(entry, notes)
            try:
                services[name] = build_service(tree)
            except ValueError as error:
                notes.append(f"{entry.origin}: service {name}: {error}")
                continue
            origins["services", name] = entry.origin
        for name, (origin, tree) in sorted(self.routers.items()):
            if tree.get("service") not in services:
                # (left out above: the router must not meet another service of that name)
                notes.append(f"{origin}: router {name} skipped: its service was left out")
                continue
            try:
                routers[name] = build_router(tree)
            except ValueError as error:
                notes.append(f"{origin}: router {name}: {error}")
                continue
            origins["routers", name] = origin
        certificates = self._certificates(notes)
        return Snapshot(
            routers=routers,
            services=services,
            certificates=certificates,
            origins=origins,
            skipped=tuple(dict.fromkeys(notes)),
        )

    def _service_tree(self, entry: _ServiceEntry, notes: list[str]) -> dict[str, object]:
        if entry.backend is None:
            return entry.tree
        urls, problem = self.resolver.servers(entry.backend)
        if problem is not None:
            notes.append(f"{entry.origin}: {problem}")
        balancer: dict[str, object] = {"servers": [{"url": url} for url in urls]}
        if entry.strategy is not None:
            balancer["strategy"] = entry.strategy
        return {"load_balancer": balancer}

    def _certificates(self, notes: list[str]) -> tuple[PemPair, ...]:
        pairs: list[PemPair] = []
        for (namespace, name), user in sorted(self.secrets.items()):
            origin = f"Secret {namespace}/{name}"
            secret = self.objects.secrets.get((namespace, name))
            if secret is None:
                notes.append(f"{user}: TLS {origin} does not exist")
                continue
            try:
                pairs.append(pem_pair(secret, origin, self.settings.tls_entrypoints))
            except UnusableError as error:
                notes.append(f"{user}: {error}")
        return tuple(pairs)


def translate(objects: KubeObjects, settings: KubernetesProvider) -> Snapshot:
    """The snapshot of ``objects`` under ``settings`` (module docstring). Never raises for
    the content of an object."""
    translation = _Translation(objects, settings)
    if settings.ingress:
        for key, ingress in sorted(objects.ingresses.items()):
            _translate_one(translation, "Ingress", key, ingress, read_ingress)
    if settings.ingress_route_crd:
        for key, route in sorted(objects.ingress_routes.items()):
            _translate_one(translation, "IngressRoute", key, route, read_ingress_route)
    return translation.snapshot()


def _translate_one(
    translation: _Translation,
    kind: str,
    key: ObjectKey,
    value: KubeObject,
    reader: _Reader,
) -> None:
    origin = f"{kind} {key[0]}/{key[1]}"
    draft = Draft(origin)
    try:
        reader(translation.settings, translation.resolver, key, Node(value), draft)
    except MalformedError as error:
        translation.notes.append(f"{origin}: skipped: {error}")
        return
    translation.add(origin, draft)
