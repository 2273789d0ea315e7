"""What every dynamic provider (DNS, discovery, Kubernetes; SPEC §10.4-10.6) hands the reload
path, and what it reports about itself.

Ring 1 (the types are plain; ``build_router`` and ``build_service`` are pure). A dynamic
provider runs as a trio task (``DynamicProvider.run``) and *publishes* a whole ``Snapshot``
whenever what it supplies changed: routers and services in config form, servers for services
that may also be written in HCL (DNS), and PEM certificates for SNI (Kubernetes TLS secrets).
``providers/provider_hub.py`` keeps the latest snapshot of each provider, pokes the
debounced reload and merges the snapshots into every candidate (static objects win; an
invalid object is dropped with a warning naming ``Snapshot.origins``). Each provider keeps a
``ProviderStatus`` that ``/providers`` and the metrics read.

Must not: block the event loop, raise out of ``run`` for a peer's failure (record it in the
status and go on), or put a secret (a token, a key) in a status, log line or origin.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

import msgspec
import trio

from a3s_gateway.config.schema_routers import Router
from a3s_gateway.config.schema_services import Server, Service
from a3s_gateway.config.values import dec_hook

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DynamicProvider",
    "PemPair",
    "ProviderState",
    "ProviderStatus",
    "Publish",
    "Snapshot",
    "build_router",
    "build_server",
    "build_service",
]

ProviderState = Literal["starting", "ok", "error"]


@dataclass(frozen=True, slots=True)
class PemPair:
    """A certificate chain and its private key from a provider, for the SNI maps.

    ``origin`` names where it came from without its contents (``Secret default/web-tls``).
    ``entrypoints``: the http entrypoints with ``tls`` that get it; empty = every one.
    """

    origin: str
    cert_pem: bytes
    key_pem: bytes
    entrypoints: tuple[str, ...] = ()


def _no_routers() -> Mapping[str, Router]:
    return {}


def _no_services() -> Mapping[str, Service]:
    return {}


def _no_servers() -> Mapping[str, tuple[Server, ...]]:
    return {}


def _no_origins() -> Mapping[tuple[str, str], str]:
    return {}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one provider supplies now, in config form (compared with ``==``).

    ``routers`` and ``services``: whole objects by name. ``servers``: the backends of a
    service the provider fills but does not define (DNS): merged into the HCL service of that
    name when there is one (its ``servers`` are empty), else a service with default settings.
    ``certificates``: PEM pairs for SNI. ``origins``: ``(section, name)`` → the external object
    it came from (``Ingress default/web``), named in warnings. ``skipped``: one message per
    external object the provider itself could not translate (shown in ``/providers`` and
    logged by the hub when it changes).
    """

    routers: Mapping[str, Router] = field(default_factory=_no_routers)
    services: Mapping[str, Service] = field(default_factory=_no_services)
    servers: Mapping[str, tuple[Server, ...]] = field(default_factory=_no_servers)
    certificates: tuple[PemPair, ...] = ()
    origins: Mapping[tuple[str, str], str] = field(default_factory=_no_origins)
    skipped: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        """Object counts for ``/providers``."""
        return {
            "routers": len(self.routers),
            "services": len(self.services) + len(self.servers),
            "servers": sum(len(servers) for servers in self.servers.values())
            + sum(_servers_of(service) for service in self.services.values()),
            "certificates": len(self.certificates),
            "skipped": len(self.skipped),
        }


def _servers_of(service: Service) -> int:
    """The servers of ``service``: its load balancer's and its revisions'."""
    balancer = service.load_balancer
    own = len(balancer.servers) if balancer is not None else 0
    return own + sum(len(revision.servers) for revision in service.revisions)


@dataclass(slots=True)
class ProviderStatus:
    """What ``/providers`` shows of one dynamic provider (times are Unix seconds).

    The provider calls ``synced`` after every successful look at its peer and ``failed`` for
    every failure (a failure keeps the last good snapshot unless the provider says otherwise);
    the hub counts ``changes`` when a published snapshot differs. ``details`` is JSON-able and
    provider-specific (per seed, per host name, per watched resource).
    """

    name: str
    state: ProviderState = "starting"
    last_sync: float | None = None
    last_change: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    changes: int = 0
    errors: int = 0
    details: dict[str, object] = field(default_factory=dict)

    def synced(self) -> None:
        """The peer answered and the snapshot is current."""
        self.state = "ok"
        self.last_sync = time.time()

    def failed(self, message: str) -> None:
        """A failure (one line, no secret): counted, shown as ``last_error``."""
        self.state = "error"
        self.errors += 1
        self.last_error = message
        self.last_error_at = time.time()


class Publish(Protocol):
    """Hands the hub a provider's whole current snapshot (callable from trio only)."""

    def __call__(self, snapshot: Snapshot, /) -> None: ...


class DynamicProvider(Protocol):
    """A provider task (``providers/dns.py``, ``discovery.py``, ``kubernetes.py``)."""

    @property
    def status(self) -> ProviderStatus: ...

    async def run(
        self, publish: Publish, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until cancelled, publishing a snapshot whenever what it supplies changes;
        ``started()`` once running (not after the first sync)."""


def build_router(tree: Mapping[str, object]) -> Router:
    """A ``Router`` from HCL-shaped builtins, checked like the loader checks one (the rule is
    compiled later, by the semantic checks). Raises ``ValueError`` naming the problem."""
    try:
        return msgspec.convert(dict(tree), type=Router, dec_hook=dec_hook)
    except msgspec.ValidationError as error:
        raise ValueError(str(error)) from None


def build_service(tree: Mapping[str, object]) -> Service:
    """A ``Service`` from HCL-shaped builtins (``{"load_balancer": {"servers": [...]}}``).
    Raises ``ValueError`` naming the problem."""
    try:
        return msgspec.convert(dict(tree), type=Service, dec_hook=dec_hook)
    except msgspec.ValidationError as error:
        raise ValueError(str(error)) from None


def build_server(url: str, weight: int = 1) -> Server:
    """A ``Server`` for ``url`` (``http://10.0.0.1:8080``, IPv6 bracketed). Raises
    ``ValueError``."""
    try:
        return msgspec.convert({"url": url, "weight": weight}, type=Server, dec_hook=dec_hook)
    except msgspec.ValidationError as error:
        raise ValueError(str(error)) from None
