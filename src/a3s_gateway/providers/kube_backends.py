"""The Services and Secrets the Kubernetes routes point at (SPEC §10.6): a Service port as an
Ingress or IngressRoute names it (``Backend``), its servers (``Resolver``, from Services and
EndpointSlices), and the certificate of a TLS Secret (``pem_pair``).

A Service port → service ``k8s-<ns>-<service>-<port>`` (the port's number, or its name when the
Ingress names it; ``Backend.name``). Its servers, with ``use_endpoints``: the addresses of the
Service's EndpointSlices (label ``kubernetes.io/service-name``) whose ``conditions.ready`` is
true or absent, on the slice port named like the Service port (named and numbered Ingress ports
are both resolved through the Service; a slice without that port falls back to a numeric
``targetPort``). Without: the cluster DNS name ``<svc>.<ns>.svc.cluster.local`` and the Service
port. An ``ExternalName`` Service is not routed (no servers and a message saying why: whoever may
create a Service could otherwise send a route to any host, loopback included; Traefik's default
too). The scheme is always ``http`` in this version (no annotation changes it). A missing
Service or port → no servers (the service answers 503) and a message. URLs are sorted and
unique. (EndpointSlice addresses are not filtered: the API server refuses loopback and
link-local endpoint addresses itself.)

TLS Secrets: of type ``kubernetes.io/tls``, with ``data.tls.crt`` (a PEM chain) and
``data.tls.key`` (an unencrypted PEM private key whose public key is the first certificate's),
both base64; anything else is an ``UnusableError`` naming the Secret and the reason, and so is
a cached Secret marked ``DATA_NOT_KEPT`` (its data is being loaded again). The check is
memoised by the SHA-256 of the pair, for the last ``CHECKED_PAIRS`` pairs (the snapshot is
rebuilt after every change; no key is kept in the memo).

Ring 1 by place (``providers/``), pure by nature: no I/O, no clock, no trio. Nurseries: none.
Deadlines: none. Must not: raise for a malformed Service or EndpointSlice (it becomes a
message), or put a Secret's data in a message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from a3s_gateway.providers.dynamic import PemPair
from a3s_gateway.providers.kube_objects import (
    KubeObject,
    KubeObjects,
    MalformedError,
    Node,
    ObjectKey,
    UnusableError,
    object_name,
)

__all__ = [
    "CHECKED_PAIRS",
    "DATA_NOT_KEPT",
    "EXTERNAL_NAME_REFUSED",
    "SERVICE_NAME_LABEL",
    "TLS_SECRET_TYPE",
    "Backend",
    "Resolver",
    "pem_pair",
]

SERVICE_NAME_LABEL: Final = "kubernetes.io/service-name"
TLS_SECRET_TYPE: Final = "kubernetes.io/tls"
#: Why a route to an ``ExternalName`` Service gets no servers.
EXTERNAL_NAME_REFUSED: Final = (
    "ExternalName Services are not routed (whoever may create a Service could point a route "
    "at any host, the gateway's own management API included)"
)
#: Set (True) on a cached TLS Secret whose data the provider did not keep: no Ingress or
#: IngressRoute named it when it arrived (``providers/kubernetes.py`` loads it again).
DATA_NOT_KEPT: Final = "a3s-gateway.io/data-not-kept"
#: How many checked certificate and key pairs are remembered (by their SHA-256).
CHECKED_PAIRS: Final = 256


@dataclass(frozen=True, slots=True)
class Backend:
    """A Service port as an Ingress or IngressRoute names it."""

    namespace: str
    service: str
    port: int | str

    @property
    def name(self) -> str:
        return object_name("k8s", self.namespace, self.service, str(self.port))

    def __str__(self) -> str:
        return f"Service {self.namespace}/{self.service} port {self.port}"


class Resolver:
    """Servers of a Service port, from the caches (each backend resolved once)."""

    def __init__(self, objects: KubeObjects, *, use_endpoints: bool) -> None:
        self._services = objects.services
        self._use_endpoints = use_endpoints
        self._slices: dict[ObjectKey, list[Node]] = {}
        for (namespace, _), slice_object in sorted(objects.endpoint_slices.items()):
            labels = slice_object.get("metadata")
            owner = labels.get("labels") if isinstance(labels, dict) else None
            service = owner.get(SERVICE_NAME_LABEL) if isinstance(owner, dict) else None
            if isinstance(service, str):
                self._slices.setdefault((namespace, service), []).append(Node(slice_object))
        self._known: dict[Backend, tuple[tuple[str, ...], str | None]] = {}

    def servers(self, backend: Backend) -> tuple[tuple[str, ...], str | None]:
        """Server URLs (sorted, unique) and a problem (None when the Service port exists)."""
        if backend not in self._known:
            try:
                self._known[backend] = self._resolve(backend)
            except MalformedError as error:
                self._known[backend] = (
                    (),
                    f"{backend}: malformed Service or EndpointSlice: {error}",
                )
        return self._known[backend]

    def _resolve(self, backend: Backend) -> tuple[tuple[str, ...], str | None]:
        found = self._services.get((backend.namespace, backend.service))
        if found is None:
            return (), f"{backend}: the Service does not exist"
        spec = Node(found).node("spec")
        if spec.text("type") == "ExternalName":
            return (), f"{backend}: {EXTERNAL_NAME_REFUSED}"
        port = next((p for p in spec.nodes("ports") if _port_matches(p, backend.port)), None)
        if port is None:
            return (), f"{backend}: the Service has no such port"
        number = port.integer("port")
        if number is None:
            raise MalformedError(f"{port.path}.port: missing")
        if not self._use_endpoints:
            dns = f"{backend.service}.{backend.namespace}.svc.cluster.local"
            return (_url(dns, number),), None
        slices = self._slices.get((backend.namespace, backend.service), [])
        urls = {url for part in slices for url in _slice_urls(part, port)}
        return tuple(sorted(urls)), None


def _port_matches(port: Node, wanted: int | str) -> bool:
    if isinstance(wanted, int):
        return port.integer("port") == wanted
    return port.text("name") == wanted


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _slice_urls(part: Node, service_port: Node) -> list[str]:
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


def pem_pair(secret: KubeObject, origin: str, entrypoints: tuple[str, ...]) -> PemPair:
    """The certificate of a TLS Secret. Raises ``UnusableError`` (never quoting its data)."""
    node = Node(secret)
    if secret.get(DATA_NOT_KEPT) is True:
        raise UnusableError(f"{origin}: its certificate is being loaded (Secrets listed again)")
    try:
        if node.text("type") != TLS_SECRET_TYPE:
            raise UnusableError(f"{origin}: not of type {TLS_SECRET_TYPE}")
        data = node.node("data")
        cert_pem = _decoded(data.text("tls.crt"), origin, "tls.crt")
        key_pem = _decoded(data.text("tls.key"), origin, "tls.key")
    except MalformedError as error:
        raise UnusableError(f"{origin}: {error}") from None
    problem = _pair_problem(cert_pem, key_pem)
    if problem is not None:
        raise UnusableError(f"{origin}: {problem}")
    return PemPair(origin=origin, cert_pem=cert_pem, key_pem=key_pem, entrypoints=entrypoints)


_checked: Final[OrderedDict[bytes, str | None]] = OrderedDict()


def _pair_problem(cert_pem: bytes, key_pem: bytes) -> str | None:
    """Why the pair is unusable (None: the certificate parses and the key is its key).
    Memoised by the pair's SHA-256 (the snapshot is rebuilt after every change, and loading
    an RSA key costs milliseconds), for the last ``CHECKED_PAIRS`` pairs: neither the
    certificate nor the key is kept."""
    digest = hashlib.sha256(len(cert_pem).to_bytes(8, "big") + cert_pem + key_pem).digest()
    if digest in _checked:
        _checked.move_to_end(digest)
        return _checked[digest]
    problem = _check_pair(cert_pem, key_pem)
    _checked[digest] = problem
    while len(_checked) > CHECKED_PAIRS:
        _checked.popitem(last=False)
    return problem


def _check_pair(cert_pem: bytes, key_pem: bytes) -> str | None:
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
        raise UnusableError(f"{origin}: data.{key} is missing")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise UnusableError(f"{origin}: data.{key} is not valid base64") from None
