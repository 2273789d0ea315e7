"""Kubernetes objects → the provider's ``Snapshot`` (SPEC §10.6): Ingresses and IngressRoutes
become routers, the Services they name become services whose servers come from EndpointSlices
(or cluster DNS names), and the TLS Secrets they name become SNI certificates.

Ring 1 by place (``providers/``), pure by nature: ``translate`` takes the watch caches as plain
dicts (decoded JSON) and the settings, and returns a ``Snapshot``; no I/O, no clock, no trio.
Equal inputs give equal snapshots (objects are visited in sorted order). Must not: raise for a
malformed object (it is skipped with a message naming its kind and namespace/name, and the
others translate), or put a Secret's data in a message.

Naming. Ingress rule ``r``, path ``p`` → router ``k8s-<ns>-<ingress>-<r>-<p>``; its
``defaultBackend`` → ``k8s-<ns>-<ingress>-default`` (``PathPrefix(`/`)``, priority −1);
IngressRoute route ``i`` → ``k8s-<ns>-<name>-<i>``. A Service port → service
``k8s-<ns>-<service>-<port>`` (the port's number, or its name when the Ingress names it),
shared by every router that points at it; an IngressRoute route with several services → a
service ``k8s-<ns>-<name>-<i>`` whose revisions are those Services (``traffic_percent`` from
the weights, ``traffic_percents``). A name over 128 characters (the config's limit) keeps its
first 117 and ends with ``-`` and 10 hex digits of its SHA-256. Two objects whose names
collide (``a-b/c`` and ``a/b-c``) keep the first in sorted order; the other is skipped.

Ingress paths (Kubernetes semantics in the rule language): ``Exact`` → ``Path``; ``Prefix``
matches whole path elements: ``/foo`` (or ``/foo/``) → ``(Path(`/foo`) || PathPrefix(`/foo/`))``
and ``/`` → ``PathPrefix(`/`)``; ``ImplementationSpecific`` → ``PathPrefix``. A host is
``Host(`h`)``; ``*.example.com`` is the rule language's one-label wildcard. Arguments are raw
strings, or ``"..."`` strings when they contain a backtick; a host that is not a DNS name (with
an optional ``*.``), a path not starting with ``/`` or holding a control character, a
``resource`` backend and an unknown ``pathType`` skip that path with a message. Router priority
is 0 (the rule's length, longer first, SPEC §4.7) unless ``a3s-gateway.io/priority`` is set.

Backends. With ``use_endpoints``: the addresses of the Service's EndpointSlices (label
``kubernetes.io/service-name``) whose ``conditions.ready`` is true or absent, on the slice port
named like the Service port (named and numbered Ingress ports are both resolved through the
Service; a slice without that port falls back to a numeric ``targetPort``). Without: the
cluster DNS name ``<svc>.<ns>.svc.cluster.local`` and the Service port. An ``ExternalName``
Service → its external name. The scheme is always ``http`` in this version (no annotation
changes it). A missing Service or port → the service exists with no servers (503) and a
message. ``a3s-gateway.io/strategy`` (Ingress) and a service entry's ``strategy``
(IngressRoute) set the load-balancing strategy of the services they use; when two objects set
different strategies on one shared service, the first in sorted order wins and the other gets
a message.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, TypeAlias, get_args

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from a3s_gateway.config.schema_services import Strategy
from a3s_gateway.providers.dynamic import PemPair, Snapshot, build_router, build_service

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from a3s_gateway.config.schema import KubernetesProvider
    from a3s_gateway.config.schema_routers import Router
    from a3s_gateway.config.schema_services import Service

__all__ = [
    "INGRESS_CLASS_ANNOTATION",
    "SERVICE_NAME_LABEL",
    "TLS_SECRET_TYPE",
    "KubeObject",
    "KubeObjects",
    "ObjectKey",
    "ingress_rule",
    "object_name",
    "traffic_percents",
    "translate",
]

#: (namespace, name) of a cached object.
ObjectKey: TypeAlias = tuple[str, str]
#: A decoded Kubernetes object.
KubeObject: TypeAlias = "Mapping[str, object]"
#: Reads one object into a draft (``_ingress``, ``_ingress_route``).
_Reader: TypeAlias = "Callable[[_Translation, ObjectKey, _Node, _Draft], None]"

INGRESS_CLASS_ANNOTATION: Final = "kubernetes.io/ingress.class"
SERVICE_NAME_LABEL: Final = "kubernetes.io/service-name"
TLS_SECRET_TYPE: Final = "kubernetes.io/tls"
_ENTRYPOINTS: Final = "a3s-gateway.io/entrypoints"
_MIDDLEWARES: Final = "a3s-gateway.io/middlewares"
_STRATEGY: Final = "a3s-gateway.io/strategy"
_PRIORITY: Final = "a3s-gateway.io/priority"
_STRATEGIES: Final = frozenset(get_args(Strategy))
_MAX_NAME: Final = 128
_HASHED_KEEP: Final = 117
_TOTAL_PERCENT: Final = 100
_DEFAULT_PRIORITY: Final = -1
_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST: Final = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*")
_INTEGER: Final = re.compile(r"[+-]?[0-9]{1,12}")


def _no_objects() -> Mapping[ObjectKey, KubeObject]:
    return {}


@dataclass(frozen=True, slots=True)
class KubeObjects:
    """The watch caches: decoded objects by (namespace, name)."""

    ingresses: Mapping[ObjectKey, KubeObject] = field(default_factory=_no_objects)
    services: Mapping[ObjectKey, KubeObject] = field(default_factory=_no_objects)
    endpoint_slices: Mapping[ObjectKey, KubeObject] = field(default_factory=_no_objects)
    secrets: Mapping[ObjectKey, KubeObject] = field(default_factory=_no_objects)
    ingress_routes: Mapping[ObjectKey, KubeObject] = field(default_factory=_no_objects)


# -- pure helpers (public for the property tests) --------------------------------------------


def object_name(*parts: str) -> str:
    """``parts`` joined with ``-``; over 128 characters, cut to 117 and suffixed with ``-`` and
    10 hex digits of the whole name's SHA-256 (stable across runs)."""
    name = "-".join(parts)
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[:_HASHED_KEEP]}-{digest}"


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


# -- reading decoded JSON --------------------------------------------------------------------


class _MalformedError(Exception):
    """A field has the wrong shape: the whole object is skipped."""


class _UnusableError(Exception):
    """One path or route cannot be translated: only it is skipped."""


@dataclass(frozen=True, slots=True)
class _Node:
    """A JSON object and where it is in its Kubernetes object (``spec.rules[0]``)."""

    value: Mapping[str, object]
    path: str = ""

    def _at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def node(self, key: str) -> _Node:
        """The object at ``key`` (empty when absent or null)."""
        raw = self.value.get(key)
        if raw is None:
            return _Node({}, self._at(key))
        if not isinstance(raw, dict):
            raise _MalformedError(f"{self._at(key)}: expected an object")
        return _Node(raw, self._at(key))

    def nodes(self, key: str) -> list[_Node]:
        """The list of objects at ``key`` (empty when absent or null)."""
        raw = self.value.get(key)
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise _MalformedError(f"{self._at(key)}: expected a list")
        found: list[_Node] = []
        for index, item in enumerate(raw):
            where = f"{self._at(key)}[{index}]"
            if not isinstance(item, dict):
                raise _MalformedError(f"{where}: expected an object")
            found.append(_Node(item, where))
        return found

    def text(self, key: str) -> str | None:
        """The string at ``key``, or None when absent or null."""
        raw = self.value.get(key)
        if raw is None or isinstance(raw, str):
            return raw
        raise _MalformedError(f"{self._at(key)}: expected a string")

    def required(self, key: str) -> str:
        """The non-empty string at ``key``."""
        raw = self.text(key)
        if not raw:
            raise _MalformedError(f"{self._at(key)}: missing")
        return raw

    def integer(self, key: str) -> int | None:
        """The integer at ``key``, or None when absent or null."""
        raw = self.value.get(key)
        if raw is None:
            return None
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise _MalformedError(f"{self._at(key)}: expected an integer")
        return raw

    def port(self, key: str) -> int | str:
        """A port given as a number or a name (IngressRoute ``port``, ``targetPort``)."""
        raw = self.value.get(key)
        if isinstance(raw, str) and raw:
            return raw
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        raise _MalformedError(f"{self._at(key)}: expected a port number or name")

    def strings(self, key: str) -> dict[str, str]:
        """A string map (labels, annotations; empty when absent)."""
        return {
            name: value for name, value in self.node(key).value.items() if isinstance(value, str)
        }

    def names(self, key: str) -> list[str]:
        """A list of strings."""
        raw = self.value.get(key)
        if raw is None:
            return []
        if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
            raise _MalformedError(f"{self._at(key)}: expected a list of strings")
        return [str(item) for item in raw]


def _csv(text: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


# -- backends --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Backend:
    """A Service port as an Ingress or IngressRoute names it."""

    namespace: str
    service: str
    port: int | str

    @property
    def name(self) -> str:
        return object_name("k8s", self.namespace, self.service, str(self.port))

    def __str__(self) -> str:
        return f"Service {self.namespace}/{self.service} port {self.port}"


@dataclass(slots=True)
class _ServiceEntry:
    """A service being assembled: its backend (None: synthesised), tree and first user."""

    backend: _Backend | None
    origin: str
    tree: dict[str, object]
    strategy: str | None = None
    strategy_origin: str = ""


class _Resolver:
    """Servers of a Service port, from the caches (each backend resolved once)."""

    def __init__(self, objects: KubeObjects, *, use_endpoints: bool) -> None:
        self._services = objects.services
        self._use_endpoints = use_endpoints
        self._slices: dict[ObjectKey, list[_Node]] = {}
        for (namespace, _), slice_object in sorted(objects.endpoint_slices.items()):
            labels = slice_object.get("metadata")
            owner = labels.get("labels") if isinstance(labels, dict) else None
            service = owner.get(SERVICE_NAME_LABEL) if isinstance(owner, dict) else None
            if isinstance(service, str):
                self._slices.setdefault((namespace, service), []).append(_Node(slice_object))
        self._known: dict[_Backend, tuple[tuple[str, ...], str | None]] = {}

    def servers(self, backend: _Backend) -> tuple[tuple[str, ...], str | None]:
        """Server URLs (sorted, unique) and a problem (None when the Service port exists)."""
        if backend not in self._known:
            try:
                self._known[backend] = self._resolve(backend)
            except _MalformedError as error:
                self._known[backend] = (
                    (),
                    f"{backend}: malformed Service or EndpointSlice: {error}",
                )
        return self._known[backend]

    def _resolve(self, backend: _Backend) -> tuple[tuple[str, ...], str | None]:
        found = self._services.get((backend.namespace, backend.service))
        if found is None:
            return (), f"{backend}: the Service does not exist"
        spec = _Node(found).node("spec")
        port = next((p for p in spec.nodes("ports") if _port_matches(p, backend.port)), None)
        if port is None:
            return (), f"{backend}: the Service has no such port"
        number = port.integer("port")
        if number is None:
            raise _MalformedError(f"{port.path}.port: missing")
        if spec.text("type") == "ExternalName":
            external = spec.required("externalName")
            return (_url(external, number),), None
        if not self._use_endpoints:
            dns = f"{backend.service}.{backend.namespace}.svc.cluster.local"
            return (_url(dns, number),), None
        slices = self._slices.get((backend.namespace, backend.service), [])
        urls = {url for part in slices for url in _slice_urls(part, port)}
        return tuple(sorted(urls)), None


def _port_matches(port: _Node, wanted: int | str) -> bool:
    if isinstance(wanted, int):
        return port.integer("port") == wanted
    return port.text("name") == wanted


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _slice_urls(part: _Node, service_port: _Node) -> list[str]:
    """The ready endpoints of one EndpointSlice on the Service port's slice port."""
    wanted = service_port.text("name") or ""
    number = next(
        (p.integer("port") for p in part.nodes("ports") if (p.text("name") or "") == wanted),
        None,
    )
    if number is None:
        target = service_port.value.get("targetPort")
        if not isinstance(target, int) or isinstance(target, bool):
            return []
        number = target
    urls: list[str] = []
    for endpoint in part.nodes("endpoints"):
        if endpoint.node("conditions").value.get("ready") is False:
            continue
        addresses = endpoint.names("addresses")
        urls.extend(_url(address, number) for address in addresses)
    return urls


# -- TLS -------------------------------------------------------------------------------------


def _pem_pair(secret: KubeObject, origin: str, entrypoints: tuple[str, ...]) -> PemPair:
    """The certificate of a TLS Secret. Raises ``_UnusableError`` (never quoting its data)."""
    node = _Node(secret)
    try:
        if node.text("type") != TLS_SECRET_TYPE:
            raise _UnusableError(f"{origin}: not of type {TLS_SECRET_TYPE}")
        data = node.node("data")
        cert_pem = _decoded(data.text("tls.crt"), origin, "tls.crt")
        key_pem = _decoded(data.text("tls.key"), origin, "tls.key")
    except _MalformedError as error:
        raise _UnusableError(f"{origin}: {error}") from None
    problem = _pair_problem(cert_pem, key_pem)
    if problem is not None:
        raise _UnusableError(f"{origin}: {problem}")
    return PemPair(origin=origin, cert_pem=cert_pem, key_pem=key_pem, entrypoints=entrypoints)


@functools.lru_cache(maxsize=1024)
def _pair_problem(cert_pem: bytes, key_pem: bytes) -> str | None:
    """Why the pair is unusable (None: the certificate parses and the key is its key).
    Memoised: the snapshot is rebuilt after every change, and loading an RSA key costs
    milliseconds."""
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        return "tls.crt holds no valid PEM certificate"
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return "tls.key is not an unencrypted PEM private key"
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if chain[0].public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        return "tls.key does not belong to the certificate in tls.crt"
    return None


def _decoded(text: str | None, origin: str, key: str) -> bytes:
    if not text:
        raise _UnusableError(f"{origin}: data.{key} is missing")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _UnusableError(f"{origin}: data.{key} is not valid base64") from None


# -- the translation -------------------------------------------------------------------------


@dataclass(slots=True)
class _Draft:
    """What one object produces, committed only when the whole object read cleanly."""

    origin: str
    routers: dict[str, dict[str, object]] = field(default_factory=dict)
    uses: list[tuple[str, _Backend | None, dict[str, object], str | None]] = field(
        default_factory=list
    )
    secrets: list[ObjectKey] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def note(self, message: str) -> None:
        self.notes.append(f"{self.origin}: {message}")

    def use(self, backend: _Backend, strategy: str | None) -> str:
        """Route to ``backend``'s service; returns its name."""
        self.uses.append((backend.name, backend, {}, strategy))
        return backend.name


class _Translation:
    """Collects routers, services, certificates and messages, object by object."""

    def __init__(self, objects: KubeObjects, settings: KubernetesProvider) -> None:
        self.objects = objects
        self.settings = settings
        self.resolver = _Resolver(objects, use_endpoints=settings.use_endpoints)
        self.routers: dict[str, tuple[str, dict[str, object]]] = {}
        self.services: dict[str, _ServiceEntry] = {}
        self.secrets: dict[ObjectKey, str] = {}
        self.notes: list[str] = []

    def add(self, origin: str, draft: _Draft) -> None:
        """Commit ``draft`` (an object that read cleanly)."""
        for name, tree in draft.routers.items():
            if name in self.routers:
                draft.note(f"router {name} is already made from {self.routers[name][0]}")
                continue
            self.routers[name] = (origin, tree)
        for name, backend, tree, strategy in draft.uses:
            self._use(draft, name, backend, tree, strategy)
        for key in draft.secrets:
            self.secrets.setdefault(key, origin)
        self.notes.extend(draft.notes)

    def _use(
        self,
        draft: _Draft,
        name: str,
        backend: _Backend | None,
        tree: dict[str, object],
        strategy: str | None,
    ) -> None:
        entry = self.services.get(name)
        if entry is None:
            entry = _ServiceEntry(backend, draft.origin, tree)
            self.services[name] = entry
        elif entry.backend != backend or backend is None:
            draft.note(f"service {name} is already made from {entry.origin}")
            return
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
                pairs.append(_pem_pair(secret, origin, self.settings.tls_entrypoints))
            except _UnusableError as error:
                notes.append(f"{user}: {error}")
        return tuple(pairs)


def translate(objects: KubeObjects, settings: KubernetesProvider) -> Snapshot:
    """The snapshot of ``objects`` under ``settings`` (module docstring). Never raises for
    the content of an object."""
    translation = _Translation(objects, settings)
    if settings.ingress:
        for key, ingress in sorted(objects.ingresses.items()):
            _translate_one(translation, "Ingress", key, ingress, _ingress)
    if settings.ingress_route_crd:
        for key, route in sorted(objects.ingress_routes.items()):
            _translate_one(translation, "IngressRoute", key, route, _ingress_route)
    return translation.snapshot()


def _translate_one(
    translation: _Translation,
    kind: str,
    key: ObjectKey,
    value: KubeObject,
    reader: _Reader,
) -> None:
    origin = f"{kind} {key[0]}/{key[1]}"
    draft = _Draft(origin)
    try:
        reader(translation, key, _Node(value), draft)
    except _MalformedError as error:
        translation.notes.append(f"{origin}: skipped: {error}")
        return
    translation.add(origin, draft)


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
        raise _MalformedError(f"annotation {_STRATEGY}: {strategy!r} is not one of {allowed}")
    priority_text = annotations.get(_PRIORITY, "").strip()
    if priority_text and _INTEGER.fullmatch(priority_text) is None:
        raise _MalformedError(f"annotation {_PRIORITY}: {priority_text!r} is not an integer")
    return _IngressOptions(
        entrypoints=_csv(annotations.get(_ENTRYPOINTS)) or default,
        middlewares=_csv(annotations.get(_MIDDLEWARES)),
        strategy=strategy,
        priority=int(priority_text) if priority_text else 0,
    )


def _ingress(translation: _Translation, key: ObjectKey, root: _Node, draft: _Draft) -> None:
    settings = translation.settings
    annotations = root.node("metadata").strings("annotations")
    spec = root.node("spec")
    if settings.ingress_class:
        wanted = spec.text("ingressClassName") or annotations.get(INGRESS_CLASS_ANNOTATION)
        if wanted != settings.ingress_class:
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
            except (_UnusableError, ValueError) as error:
                draft.note(f"{path.path} skipped: {error}")
                continue
            service = draft.use(target, options.strategy)
            draft.routers[router] = _router_tree(rule_text, service, options, options.priority)
    default = spec.node("defaultBackend")
    if default.value:
        try:
            target = _ingress_backend(namespace, default)
        except _UnusableError as error:
            draft.note(f"spec.defaultBackend skipped: {error}")
        else:
            service = draft.use(target, options.strategy)
            router = object_name("k8s", namespace, name, "default")
            draft.routers[router] = _router_tree(
                "PathPrefix(`/`)", service, options, _DEFAULT_PRIORITY
            )
    for entry in spec.nodes("tls"):
        secret = entry.text("secretName")
        if secret:
            draft.secrets.append((namespace, secret))


def _ingress_backend(namespace: str, backend: _Node) -> _Backend:
    if backend.value.get("resource") is not None:
        raise _UnusableError("resource backends are not supported")
    service = backend.node("service")
    name = service.required("name")
    port = service.node("port")
    number = port.integer("number")
    if number is not None:
        return _Backend(namespace, name, number)
    return _Backend(namespace, name, port.required("name"))


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

    backend: _Backend
    weight: int
    strategy: str | None


def _route_services(namespace: str, route: _Node) -> list[_Weighted]:
    found: list[_Weighted] = []
    for entry in route.nodes("services"):
        weight = entry.integer("weight")
        weight = 1 if weight is None else weight
        if weight < 0:
            raise _MalformedError(f"{entry.path}.weight: must not be negative")
        strategy = entry.text("strategy") or None
        if strategy is not None and strategy not in _STRATEGIES:
            raise _MalformedError(f"{entry.path}.strategy: {strategy!r} is not a strategy")
        backend = _Backend(namespace, entry.required("name"), entry.port("port"))
        found.append(_Weighted(backend, weight, strategy))
    return found


def _ingress_route(translation: _Translation, key: ObjectKey, root: _Node, draft: _Draft) -> None:
    namespace, name = key
    spec = root.node("spec")
    entrypoints = tuple(spec.names("entrypoints")) or translation.settings.entrypoints
    for index, route in enumerate(spec.nodes("routes")):
        match = route.required("match")
        priority = route.integer("priority") or 0
        middlewares = tuple(m.required("name") for m in route.nodes("middlewares"))
        weighted = _route_services(namespace, route)
        router = object_name("k8s", namespace, name, str(index))
        try:
            service = _route_service(translation, draft, router, weighted)
        except _UnusableError as error:
            draft.note(f"{route.path} skipped: {error}")
            continue
        options = _IngressOptions(entrypoints, middlewares, None, priority)
        draft.routers[router] = _router_tree(match, service, options, priority)
    secret = spec.node("tls").text("secretName")
    if secret:
        draft.secrets.append((namespace, secret))


def _route_service(
    translation: _Translation, draft: _Draft, synthesised: str, weighted: list[_Weighted]
) -> str:
    """The service a route points at: its one Service port's, or a service with revisions."""
    if not weighted:
        raise _UnusableError("no services")
    if len(weighted) == 1:
        return draft.use(weighted[0].backend, weighted[0].strategy)
    if sum(entry.weight for entry in weighted) == 0:
        raise _UnusableError("every service has weight 0")
    names = [entry.backend.service for entry in weighted]
    if len(set(names)) != len(names):
        raise _UnusableError("a Service appears twice (revisions are named after Services)")
    revisions: list[dict[str, object]] = []
    percents = traffic_percents([entry.weight for entry in weighted])
    for entry, percent in zip(weighted, percents, strict=True):
        urls, problem = translation.resolver.servers(entry.backend)
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
