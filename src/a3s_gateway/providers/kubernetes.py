"""The Kubernetes provider (SPEC §10.6, §3.12 ``providers.kubernetes``): watches Ingresses,
Services, EndpointSlices, TLS Secrets and (optionally) IngressRoutes, and publishes what
``kube_translate.translate`` makes of them whenever they change.

Watching, per resource, in its own task: LIST (paginated), then WATCH from the list's
``resourceVersion`` with ``allowWatchBookmarks=true``; ADDED/MODIFIED/DELETED change a local
cache, BOOKMARK (and every event) moves the resource version on. A 410 (the HTTP status, or an
``ERROR`` event with code 410) means the version is too old: LIST again at once (after one
backoff step when it answers the first WATCH after a LIST, before any event). A failed LIST, a
refused or dropped WATCH or a stream error (a line over 16 MiB, a silence past
``kube_api.WATCH_IDLE``) is recorded in ``status`` (one line naming the resource) and retried
after a backoff of 1 s doubling to 30 s, reset by a successful LIST or by a stream that
delivered events; a WATCH resumes from the last version seen. A stream the server ends cleanly
(its ``timeoutSeconds``) is re-opened at once. Every ``watch_interval_secs`` the WATCH is cut
and the resource LISTed in full (the cache is replaced), so a missed event is repaired within
that period.

Filters: ``namespace`` ("" = all namespaces) applies to every resource. ``label_selector``
applies to Ingresses and IngressRoutes only: the Services, EndpointSlices and Secrets they name
rarely carry the Ingress's labels, so those are watched unfiltered (Secrets with
``fieldSelector=type=kubernetes.io/tls``; only the ones an Ingress or IngressRoute names become
certificates). EndpointSlices are watched only with ``use_endpoints``, IngressRoutes only with
``ingress_route_crd``, Ingresses only with ``ingress``. The cache keeps objects without
``metadata.managedFields`` and the ``last-applied-configuration`` annotation, and Secrets with
their ``tls.crt`` and ``tls.key`` only.

Publishing: nothing is published until every resource's first LIST succeeded (a partial view
would remove routes); after that, every change to a cache marks the snapshot dirty and the
publisher task rebuilds it (changes that arrive together are coalesced) and publishes it when
it differs from the last one.

Why plain HTTPS (``kube_access.py`` finds the server and credentials, ``kube_api.py`` makes
the calls) and not a client library: kr8s and lightkube (both on httpx and anyio) were
considered. kr8s does not run under trio yet: its own trio test is marked xfail
("trio support is not yet implemented"; its issue #77 is open) and its ``Api`` still calls
asyncio directly; it also follows redirects and retries 401/403 and TLS failures on its own.
lightkube's async watch loop sleeps with ``asyncio.sleep`` between retries, takes the resource
version from every line without telling BOOKMARK or an ``ERROR`` Status (410) apart, has no
read-idle bound (its watch read timeout is None) and no cap on a line's length; so the parts
this provider needs under its own control (resume, 410 → LIST, backoff, 16 MiB lines) would be
ours anyway, on top of httpx, httpcore, anyio, sniffio, certifi and lightkube-models. What is
left (a GET, chunked decoding, kubeconfig token and client-certificate auth) is a few hundred
lines over h11, which the gateway already uses.

Ring 1. Nurseries: ``run`` owns one: the publisher and one watch loop per resource, all
cancelled with the provider. Deadlines: those of ``kube_api`` per call; the resync period
(``watch_interval_secs``) cuts each WATCH. Must not: raise out of ``run`` for the API server's
failures, publish before every resource was listed, or log a token or a Secret's data.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol
from urllib.parse import quote

import trio

from a3s_gateway.providers.dynamic import ProviderStatus
from a3s_gateway.providers.kube_access import SERVICE_ACCOUNT_DIR, load_access
from a3s_gateway.providers.kube_api import (
    WATCH_SERVER_TIMEOUT,
    KubeApiError,
    KubeClient,
    KubeList,
    WatchEvent,
)
from a3s_gateway.providers.kube_backends import TLS_SECRET_TYPE
from a3s_gateway.providers.kube_objects import KubeObjects, ObjectKey
from a3s_gateway.providers.kube_translate import translate

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from a3s_gateway.config.schema import KubernetesProvider
    from a3s_gateway.providers.dynamic import Publish, Snapshot
    from a3s_gateway.providers.kube_access import ApiAccess

__all__ = [
    "BACKOFF_CAP",
    "BACKOFF_FIRST",
    "ApiClient",
    "KubernetesDiscovery",
    "WatchedResource",
    "watched_resources",
]

log: Final = logging.getLogger("a3s_gateway.providers")

#: The first retry delay after a failure, doubled per failure up to ``BACKOFF_CAP``.
BACKOFF_FIRST: Final = 1.0
BACKOFF_CAP: Final = 30.0
_LAST_APPLIED: Final = "kubectl.kubernetes.io/last-applied-configuration"
_TLS_KEYS: Final = ("tls.crt", "tls.key")


class ApiClient(Protocol):
    """What the watch loops call (``kube_api.KubeClient``; tests inject fakes)."""

    async def list_objects(self, path: str, query: Mapping[str, str]) -> KubeList: ...

    async def watch(
        self, path: str, query: Mapping[str, str], on_event: Callable[[WatchEvent], None]
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class WatchedResource:
    """One watched resource: its cache (``KubeObjects`` field), kind, API group path, plural,
    whether ``label_selector`` applies, and a fixed field selector."""

    key: str
    kind: str
    api: str
    plural: str
    labelled: bool = False
    field_selector: str = ""

    def path(self, namespace: str) -> str:
        """The collection's path, in one namespace or ("") in all."""
        if not namespace:
            return f"{self.api}/{self.plural}"
        return f"{self.api}/namespaces/{quote(namespace, safe='')}/{self.plural}"

    def query(self, label_selector: str) -> dict[str, str]:
        """The selectors of a LIST (and of a WATCH, which adds its own parameters)."""
        query: dict[str, str] = {}
        if self.labelled and label_selector:
            query["labelSelector"] = label_selector
        if self.field_selector:
            query["fieldSelector"] = self.field_selector
        return query


def watched_resources(settings: KubernetesProvider) -> tuple[WatchedResource, ...]:
    """The resources ``settings`` needs watched, in a fixed order."""
    found: list[WatchedResource] = []
    if settings.ingress:
        found.append(
            WatchedResource("ingresses", "Ingress", "/apis/networking.k8s.io/v1", "ingresses", True)
        )
    found.append(WatchedResource("services", "Service", "/api/v1", "services"))
    if settings.use_endpoints:
        found.append(
            WatchedResource(
                "endpoint_slices", "EndpointSlice", "/apis/discovery.k8s.io/v1", "endpointslices"
            )
        )
    found.append(
        WatchedResource(
            "secrets", "Secret", "/api/v1", "secrets", field_selector=f"type={TLS_SECRET_TYPE}"
        )
    )
    if settings.ingress_route_crd:
        found.append(
            WatchedResource(
                "ingress_routes",
                "IngressRoute",
                "/apis/a3s-gateway.io/v1alpha1",
                "ingressroutes",
                True,
            )
        )
    return tuple(found)


class _Backoff:
    """Retry delays: ``BACKOFF_FIRST`` doubling to ``BACKOFF_CAP``; ``reset`` starts over."""

    def __init__(self) -> None:
        self._next = BACKOFF_FIRST

    def reset(self) -> None:
        self._next = BACKOFF_FIRST

    async def sleep(self) -> None:
        delay = self._next
        self._next = min(self._next * 2, BACKOFF_CAP)
        await trio.sleep(delay)


@dataclass(slots=True)
class _Cursor:
    """Where a WATCH resumes, and how many events the current stream delivered."""

    version: str
    events: int = 0


def _object_key(value: Mapping[str, object]) -> ObjectKey | None:
    metadata = value.get("metadata")
    if not isinstance(metadata, dict):
        return None
    namespace, name = metadata.get("namespace", ""), metadata.get("name")
    if not isinstance(namespace, str) or not isinstance(name, str) or not name:
        return None
    return namespace, name


def _version_of(value: Mapping[str, object]) -> str:
    metadata = value.get("metadata")
    version = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
    return version if isinstance(version, str) else ""


def _pruned(resource: WatchedResource, value: dict[str, object]) -> dict[str, object]:
    """``value`` without what the translation never reads and memory should not keep."""
    metadata = value.get("metadata")
    if isinstance(metadata, dict):
        metadata = {k: v for k, v in metadata.items() if k != "managedFields"}
        annotations = metadata.get("annotations")
        if isinstance(annotations, dict) and _LAST_APPLIED in annotations:
            metadata["annotations"] = {k: v for k, v in annotations.items() if k != _LAST_APPLIED}
        value = {**value, "metadata": metadata}
    if resource.key == "secrets":
        data = value.get("data")
        kept = {k: v for k, v in data.items() if k in _TLS_KEYS} if isinstance(data, dict) else {}
        value = {"metadata": value.get("metadata"), "type": value.get("type"), "data": kept}
    return value


class KubernetesDiscovery:
    """The Kubernetes provider task (module docstring). ``client`` replaces the API access
    found from ``settings`` (tests); ``service_account_dir`` and ``environ`` are where
    in-cluster access is looked for."""

    def __init__(
        self,
        settings: KubernetesProvider,
        *,
        service_account_dir: Path = SERVICE_ACCOUNT_DIR,
        environ: Mapping[str, str] = os.environ,
        client: ApiClient | None = None,
    ) -> None:
        self.status = ProviderStatus("kubernetes")
        self._settings = settings
        self._account = service_account_dir
        self._environ = dict(environ)
        self._client = client
        self._resources = watched_resources(settings)
        self._caches: dict[str, dict[ObjectKey, dict[str, object]]] = {
            resource.key: {} for resource in self._resources
        }
        self._listed: set[str] = set()
        self._dirty = trio.Event()
        self._last: Snapshot | None = None
        self._details: dict[str, dict[str, object]] = {
            resource.key: {"kind": resource.kind, "listed": False, "objects": 0, "errors": 0}
            for resource in self._resources
        }
        self.status.details["resources"] = self._details

    async def run(
        self, publish: Publish, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Watch until cancelled, publishing every changed snapshot; ``started()`` at once."""
        task_status.started()
        client = self._client
        if client is None:
            client = KubeClient(await self._access())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._publisher, publish)
            for resource in self._resources:
                nursery.start_soon(self._watch_loop, client, resource)

    async def _access(self) -> ApiAccess:
        """The API access from the settings, retried with backoff until it loads."""
        backoff = _Backoff()
        load = functools.partial(
            load_access, self._settings, service_account_dir=self._account, environ=self._environ
        )
        while True:
            try:
                access = await trio.to_thread.run_sync(load)
            except KubeApiError as error:
                self._fail(None, f"API access: {error}")
                await backoff.sleep()
                continue
            except (OSError, ValueError) as error:  # (a file it could not even look at)
                reason = getattr(error, "strerror", None) or type(error).__name__
                self._fail(None, f"API access: {reason}")
                await backoff.sleep()
                continue
            self.status.details["api"] = f"{access.source}: {access.server}"
            if access.insecure:
                log.warning(
                    "kubernetes provider: %s: insecure-skip-tls-verify is set; the API "
                    "server's certificate is not checked",
                    access.source,
                )
            return access

    # -- one resource ------------------------------------------------------------------------

    async def _watch_loop(self, client: ApiClient, resource: WatchedResource) -> None:
        """LIST, WATCH until the resync period ends or a 410, LIST again; forever."""
        backoff = _Backoff()
        while True:
            version = await self._list(client, resource, backoff)
            with trio.move_on_after(self._settings.watch_interval_secs):
                await self._follow(client, resource, _Cursor(version), backoff)

    async def _list(self, client: ApiClient, resource: WatchedResource, backoff: _Backoff) -> str:
        """Replace the resource's cache with a full LIST (retried until it succeeds); return
        the list's resource version."""
        path = resource.path(self._settings.namespace)
        query = resource.query(self._settings.label_selector)
        while True:
            try:
                listed = await client.list_objects(path, query)
            except KubeApiError as error:
                self._fail(resource, str(error))
                await backoff.sleep()
                continue
            backoff.reset()
            cache: dict[ObjectKey, dict[str, object]] = {}
            for item in listed.items:
                key = _object_key(item)
                if key is not None:
                    cache[key] = _pruned(resource, item)
            self._caches[resource.key] = cache
            self._listed.add(resource.key)
            detail = self._details[resource.key]
            detail.update(listed=True, resource_version=listed.resource_version)
            self._recovered(resource)
            self._dirty.set()
            return listed.resource_version

    async def _follow(
        self, client: ApiClient, resource: WatchedResource, cursor: _Cursor, backoff: _Backoff
    ) -> None:
        """WATCH from ``cursor.version`` until a 410 (then return: LIST again). A 410 on the
        very first WATCH after a LIST, before any event, waits one backoff step first: the
        list's own version was already too old, and LISTing again at once could spin."""
        path = resource.path(self._settings.namespace)
        on_event = functools.partial(self._apply, resource, cursor)
        first = True
        while True:
            query = resource.query(self._settings.label_selector)
            query.update(
                watch="1",
                resourceVersion=cursor.version,
                allowWatchBookmarks="true",
                timeoutSeconds=str(WATCH_SERVER_TIMEOUT),
            )
            cursor.events = 0
            try:
                await client.watch(path, query, on_event)
            except KubeApiError as error:
                if cursor.events:
                    backoff.reset()
                if error.status == 410:
                    self._details[resource.key]["relists"] = self._relists(resource) + 1
                    if first and not cursor.events:
                        await backoff.sleep()
                    return
                self._fail(resource, str(error))
                await backoff.sleep()
            else:
                backoff.reset()
            first = False

    def _relists(self, resource: WatchedResource) -> int:
        count = self._details[resource.key].get("relists", 0)
        return count if isinstance(count, int) else 0

    def _apply(self, resource: WatchedResource, cursor: _Cursor, event: WatchEvent) -> None:
        """One WATCH event into the cache (synchronous: no checkpoint between the change and
        the new resource version)."""
        cursor.events += 1
        version = _version_of(event.obj)
        if version:
            cursor.version = version
            self._details[resource.key]["resource_version"] = version
        if event.type not in ("ADDED", "MODIFIED", "DELETED"):
            return  # BOOKMARK (or a type this version does not know): the version only
        key = _object_key(event.obj)
        if key is None:
            return
        cache = self._caches[resource.key]
        if event.type == "DELETED":
            cache.pop(key, None)
        else:
            cache[key] = _pruned(resource, event.obj)
        self._recovered(resource)
        self._dirty.set()

    # -- status and publishing ---------------------------------------------------------------

    def _fail(self, resource: WatchedResource | None, message: str) -> None:
        line = message if resource is None else f"{resource.kind}: {message}"
        if self.status.last_error != line or self.status.state != "error":
            log.warning("kubernetes provider: %s", line)
        self.status.failed(line)
        if resource is not None:
            detail = self._details[resource.key]
            detail["last_error"] = message
            errors = detail.get("errors", 0)
            detail["errors"] = errors + 1 if isinstance(errors, int) else 1

    def _recovered(self, resource: WatchedResource) -> None:
        detail = self._details[resource.key]
        if detail.pop("last_error", None) is not None:
            log.info("kubernetes provider: %s: watching again", resource.kind)
        if self._listed.issuperset(self._caches) and not any(
            "last_error" in other for other in self._details.values()
        ):
            self.status.synced()

    async def _publisher(self, publish: Publish) -> None:
        """Rebuild and publish the snapshot after changes, once every resource was listed."""
        while True:
            await self._dirty.wait()
            self._dirty = trio.Event()
            if not self._listed.issuperset(self._caches):
                continue
            for key, cache in self._caches.items():
                self._details[key]["objects"] = len(cache)
            snapshot = translate(self._objects(), self._settings)
            if snapshot != self._last:
                self._last = snapshot
                publish(snapshot)

    def _objects(self) -> KubeObjects:
        """The caches as the translation reads them (not copied: it is synchronous)."""
        caches = self._caches
        return KubeObjects(
            ingresses=caches.get("ingresses", {}),
            services=caches.get("services", {}),
            endpoint_slices=caches.get("endpoint_slices", {}),
            secrets=caches.get("secrets", {}),
            ingress_routes=caches.get("ingress_routes", {}),
        )
