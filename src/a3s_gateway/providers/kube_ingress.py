"""Ingresses and IngressRoutes → routers (SPEC §10.6): ``read_ingress`` and
``read_ingress_route`` read one object into a ``Draft`` (its routers, the Service ports they
use, the TLS Secrets it names, and messages), which ``kube_translate`` commits only when the
whole object read cleanly.

Naming. Ingress rule ``r``, path ``p`` → router ``k8s-<ns>-<ingress>-<r>-<p>``; its
``defaultBackend`` → ``k8s-<ns>-<ingress>-default`` (``PathPrefix(`/`)``, priority −1);
IngressRoute route ``i`` → ``k8s-<ns>-<name>-<i>``. An IngressRoute route with several services
→ a service ``k8s-<ns>-<name>-<i>`` whose revisions are those Services (``traffic_percent`` from
the weights, ``traffic_percents``); with one, the Service port's shared service.

Ingress paths (Kubernetes semantics in the rule language): ``Exact`` → ``Path``; ``Prefix``
matches whole path elements: ``/foo`` (or ``/foo/``) → ``(Path(`/foo`) || PathPrefix(`/foo/`))``
and ``/`` → ``PathPrefix(`/`)``; ``ImplementationSpecific`` → ``PathPrefix``. A host is
``Host(`h`)``; ``*.example.com`` is the rule language's one-label wildcard. Arguments are raw
strings, or ``"..."`` strings when they contain a backtick; a host that is not a DNS name (with
an optional ``*.``), a path not starting with ``/`` or holding a control character, a
``resource`` backend and an unknown ``pathType`` skip that path with a message. Router priority
is 0 (the rule's length, longer first, SPEC §4.7) unless ``a3s-gateway.io/priority`` is set.

Annotations of an Ingress: ``a3s-gateway.io/entrypoints`` and ``a3s-gateway.io/middlewares``
(comma-separated), ``a3s-gateway.io/priority``, and ``a3s-gateway.io/strategy``, the
load-balancing strategy of the services it uses (an IngressRoute service entry's ``strategy``
does the same); an unknown strategy or a priority that is not an integer skips the object.

Ring 1 by place (``providers/``), pure by nature: no I/O, no clock, no trio. Nurseries: none.
Deadlines: none. Must not: raise anything but ``MalformedError`` for an object's content (an
unusable path or route becomes a message on the draft), or commit anything itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, get_args

from a3s_gateway.config.schema_services import Strategy
from a3s_gateway.providers.kube_backends import Backend
from a3s_gateway.providers.kube_objects import MalformedError, UnusableError, object_name

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from a3s_gateway.config.schema import KubernetesProvider
    from a3s_gateway.providers.kube_backends import Resolver
    from a3s_gateway.providers.kube_objects import Node, ObjectKey

__all__ = [
    "INGRESS_CLASS_ANNOTATION",
    "Draft",
    "ingress_rule",
    "ingress_secret_names",
    "read_ingress",
    "read_ingress_route",
    "route_secret_names",
    "traffic_percents",
]

INGRESS_CLASS_ANNOTATION: Final = "kubernetes.io/ingress.class"
_ENTRYPOINTS: Final = "a3s-gateway.io/entrypoints"
_MIDDLEWARES: Final = "a3s-gateway.io/middlewares"
_STRATEGY: Final = "a3s-gateway.io/strategy"
_PRIORITY: Final = "a3s-gateway.io/priority"
_STRATEGIES: Final = frozenset(get_args(Strategy))
_TOTAL_PERCENT: Final = 100
_DEFAULT_PRIORITY: Final = -1
_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST: Final = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*")
_INTEGER: Final = re.compile(r"[+-]?[0-9]{1,12}")


@dataclass(slots=True)
class Draft:
    """What one object produces, committed only when the whole object read cleanly."""

    origin: str
    routers: dict[str, dict[str, object]] = field(default_factory=dict)
    uses: list[tuple[str, Backend | None, dict[str, object], str | None]] = field(
        default_factory=list
    )
    secrets: list[ObjectKey] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def note(self, message: str) -> None:
        self.notes.append(f"{self.origin}: {message}")

    def use(self, backend: Backend, strategy: str | None) -> str:
        """Route to ``backend``'s service; returns its name."""
        self.uses.append((backend.name, backend, {}, strategy))
        return backend.name


# -- pure helpers (public for the property tests) --------------------------------------------


def traffic_percents(weights: Sequence[int]) -> tuple[int, ...]:
    """Whole percentages proportional to ``weights`` that sum to exactly 100 (largest-remainder
    rounding: each share is rounded down, and the points left go one each to the largest
    remainders; equal remainders go to the earlier entry). All-zero weights split equally (the
    earlier entries get the points left). Raises ``ValueError`` for no weights or a negative
    one."""
    if not weights:
        raise ValueError("no weights")
    if any(weight < 0 for weight in weights):
        raise ValueError("a weight is negative")
    total = sum(weights)
    shares = list(weights) if total > 0 else [1] * len(weights)
    total = sum(shares)
    percents = [share * _TOTAL_PERCENT // total for share in shares]
    remainders = [share * _TOTAL_PERCENT % total for share in shares]
    left = _TOTAL_PERCENT - sum(percents)
    order = sorted(range(len(shares)), key=lambda index: (-remainders[index], index))
    for index in order[:left]:
        percents[index] += 1
    return tuple(percents)


def _quote(text: str) -> str:
    """``text`` as a rule string: raw unless it holds a backtick (then ``"..."``)."""
    if "`" not in text:
        return f"`{text}`"
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ingress_rule(host: str | None, path: str | None, path_type: str) -> str:
    """The rule for one Ingress path (module docstring). Raises ``ValueError`` naming what the
    rule language cannot carry."""
    path = path or "/"
    if not path.startswith("/"):
        raise ValueError(f"path {path!r} does not start with /")
    if not path.isprintable():
        raise ValueError(f"path {path!r} holds a control character")
    if path_type == "Exact":
        matcher = f"Path({_quote(path)})"
    elif path_type == "Prefix":
        base = path.rstrip("/")
        if base:
            matcher = f"(Path({_quote(base)}) || PathPrefix({_quote(base + '/')}))"
        else:
            matcher = "PathPrefix(`/`)"
    elif path_type == "ImplementationSpecific":
        matcher = f"PathPrefix({_quote(path)})"
    else:
        raise ValueError(f"unknown pathType {path_type!r}")
    if not host:
        return matcher
    if _HOST.fullmatch(host) is None:
        raise ValueError(f"host {host!r} is not a DNS name")
    return f"Host({_quote(host.lower())}) && {matcher}"


def _csv(text: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


# -- Ingress ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _IngressOptions:
    """An Ingress's annotations, checked."""

    entrypoints: tuple[str, ...]
    middlewares: tuple[str, ...]
    strategy: str | None
    priority: int


def _ingress_options(annotations: Mapping[str, str], default: tuple[str, ...]) -> _IngressOptions:
    strategy = annotations.get(_STRATEGY, "").strip() or None
    if strategy is not None and strategy not in _STRATEGIES:
        allowed = ", ".join(sorted(_STRATEGIES))
        raise MalformedError(f"annotation {_STRATEGY}: {strategy!r} is not one of {allowed}")
    priority_text = annotations.get(_PRIORITY, "").strip()
    if priority_text and _INTEGER.fullmatch(priority_text) is None:
        raise MalformedError(f"annotation {_PRIORITY}: {priority_text!r} is not an integer")
    return _IngressOptions(
        entrypoints=_csv(annotations.get(_ENTRYPOINTS)) or default,
        middlewares=_csv(annotations.get(_MIDDLEWARES)),
        strategy=strategy,
        priority=int(priority_text) if priority_text else 0,
    )


def read_ingress(
    settings: KubernetesProvider, resolver: Resolver, key: ObjectKey, root: Node, draft: Draft
) -> None:
    """Read an Ingress into ``draft`` (nothing when it is for another ingress class).
    ``resolver`` is unused: an Ingress's services are resolved when the snapshot is built."""
    annotations = root.node("metadata").strings("annotations")
    spec = root.node("spec")
    if not _our_class(settings, root):
        return
    options = _ingress_options(annotations, settings.entrypoints)
    namespace, name = key
    for r, rule in enumerate(spec.nodes("rules")):
        host = rule.text("host")
        for p, path in enumerate(rule.node("http").nodes("paths")):
            router = object_name("k8s", namespace, name, str(r), str(p))
            try:
                target = _ingress_backend(namespace, path.node("backend"))
                rule_text = ingress_rule(host, path.text("path"), path.required("pathType"))
            except (UnusableError, ValueError) as error:
                draft.note(f"{path.path} skipped: {error}")
                continue
            service = draft.use(target, options.strategy)
            draft.routers[router] = _router_tree(rule_text, service, options, options.priority)
    default = spec.node("defaultBackend")
    if default.value:
        try:
            target = _ingress_backend(namespace, default)
        except UnusableError as error:
            draft.note(f"spec.defaultBackend skipped: {error}")
        else:
            service = draft.use(target, options.strategy)
            router = object_name("k8s", namespace, name, "default")
            draft.routers[router] = _router_tree(
                "PathPrefix(`/`)", service, options, _DEFAULT_PRIORITY
            )
    draft.secrets.extend((namespace, secret) for secret in ingress_secret_names(settings, root))


def _our_class(settings: KubernetesProvider, root: Node) -> bool:
    """Whether the Ingress is for this gateway's ``ingress_class`` (any, when it is "")."""
    if not settings.ingress_class:
        return True
    spec = root.node("spec")
    annotations = root.node("metadata").strings("annotations")
    wanted = spec.text("ingressClassName") or annotations.get(INGRESS_CLASS_ANNOTATION)
    return wanted == settings.ingress_class


def ingress_secret_names(settings: KubernetesProvider, root: Node) -> list[str]:
    """The TLS Secrets (in its namespace) an Ingress for this gateway names."""
    if not _our_class(settings, root):
        return []
    names = (entry.text("secretName") for entry in root.node("spec").nodes("tls"))
    return [name for name in names if name]


def route_secret_names(root: Node) -> list[str]:
    """The TLS Secret (in its namespace) an IngressRoute names, if any."""
    secret = root.node("spec").node("tls").text("secretName")
    return [secret] if secret else []


def _ingress_backend(namespace: str, backend: Node) -> Backend:
    if backend.value.get("resource") is not None:
        raise UnusableError("resource backends are not supported")
    service = backend.node("service")
    name = service.required("name")
    port = service.node("port")
    number = port.integer("number")
    if number is not None:
        return Backend(namespace, name, number)
    return Backend(namespace, name, port.required("name"))


def _router_tree(
    rule: str, service: str, options: _IngressOptions, priority: int
) -> dict[str, object]:
    return {
        "rule": rule,
        "service": service,
        "entrypoints": list(options.entrypoints),
        "middlewares": list(options.middlewares),
        "priority": priority,
    }


# -- IngressRoute ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Weighted:
    """One entry of an IngressRoute route's ``services``."""

    backend: Backend
    weight: int
    strategy: str | None


def _route_services(namespace: str, route: Node) -> list[_Weighted]:
    found: list[_Weighted] = []
    for entry in route.nodes("services"):
        weight = entry.integer("weight")
        weight = 1 if weight is None else weight
        if weight < 0:
            raise MalformedError(f"{entry.path}.weight: must not be negative")
        strategy = entry.text("strategy") or None
        if strategy is not None and strategy not in _STRATEGIES:
            raise MalformedError(f"{entry.path}.strategy: {strategy!r} is not a strategy")
        backend = Backend(namespace, entry.required("name"), entry.port("port"))
        found.append(_Weighted(backend, weight, strategy))
    return found


def read_ingress_route(
    settings: KubernetesProvider, resolver: Resolver, key: ObjectKey, root: Node, draft: Draft
) -> None:
    """Read an IngressRoute into ``draft`` (``resolver`` gives the servers of revisions)."""
    namespace, name = key
    spec = root.node("spec")
    entrypoints = tuple(spec.names("entrypoints")) or settings.entrypoints
    for index, route in enumerate(spec.nodes("routes")):
        match = route.required("match")
        priority = route.integer("priority") or 0
        middlewares = tuple(m.required("name") for m in route.nodes("middlewares"))
        weighted = _route_services(namespace, route)
        router = object_name("k8s", namespace, name, str(index))
        try:
            service = _route_service(resolver, draft, router, weighted)
        except UnusableError as error:
            draft.note(f"{route.path} skipped: {error}")
            continue
        options = _IngressOptions(entrypoints, middlewares, None, priority)
        draft.routers[router] = _router_tree(match, service, options, priority)
    draft.secrets.extend((namespace, secret) for secret in route_secret_names(root))


def _route_service(
    resolver: Resolver, draft: Draft, synthesised: str, weighted: list[_Weighted]
) -> str:
    """The service a route points at: its one Service port's, or a service with revisions."""
    if not weighted:
        raise UnusableError("no services")
    if len(weighted) == 1:
        return draft.use(weighted[0].backend, weighted[0].strategy)
    if sum(entry.weight for entry in weighted) == 0:
        raise UnusableError("every service has weight 0")
    names = [entry.backend.service for entry in weighted]
    if len(set(names)) != len(names):
        raise UnusableError("a Service appears twice (revisions are named after Services)")
    revisions: list[dict[str, object]] = []
    percents = traffic_percents([entry.weight for entry in weighted])
    for entry, percent in zip(weighted, percents, strict=True):
        urls, problem = resolver.servers(entry.backend)
        if problem is not None:
            draft.note(problem)
        revision: dict[str, object] = {
            "name": entry.backend.service,
            "traffic_percent": percent,
            "servers": [{"url": url} for url in urls],
        }
        if entry.strategy is not None:
            revision["strategy"] = entry.strategy
        revisions.append(revision)
    draft.uses.append((synthesised, None, {"revisions": revisions}, None))
    return synthesised
