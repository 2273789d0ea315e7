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
delivered events; a WATCH resumes from the last version seen. A WATCH the server accepts
clears the resource's error (``state`` is ``ok`` again once no resource has one), even on a
quiet resource that sends no event. A stream the server ends cleanly (its ``timeoutSeconds``)
is re-opened at once, unless it ended within ``QUICK_END`` without delivering an event: then
after a backoff step (a server or proxy that ends every WATCH at once is not asked again in a
hot loop). Every ``watch_interval_secs`` the WATCH is cut and the resource LISTed in full (the
cache is replaced), so a missed event is repaired within that period.

IngressRoutes and Secrets are optional: a 403 (RBAC) or 404 (the CRD is not installed) on their
first LIST makes them count as listed and empty, so Ingresses are still published; the status
is an error naming the resource and the likely cause, and the LIST is retried with backoff
until it succeeds. (Once listed, a refused re-LIST keeps the cache, like any failure.)
Ingresses, Services and EndpointSlices hold publishing back until they are listed.

Filters: ``namespace`` ("" = all namespaces) applies to every resource. ``label_selector``
applies to Ingresses and IngressRoutes only: the Services, EndpointSlices and Secrets they name
rarely carry the Ingress's labels, so those are watched unfiltered (Secrets with
``fieldSelector=type=kubernetes.io/tls``; only the ones an Ingress or IngressRoute names become
certificates). EndpointSlices are watched only with ``use_endpoints``, IngressRoutes only with
``ingress_route_crd``, Ingresses only with ``ingress``. The cache keeps objects without
``metadata.managedFields`` and the ``last-applied-configuration`` annotation.

Secrets: LISTed ``kube_api.SECRET_PAGE_SIZE`` (50) at a time (a Secret may be 1 MiB), first
after the Ingresses and IngressRoutes were listed. The cache keeps every TLS Secret's metadata
and type, but its ``tls.crt`` and ``tls.key`` only while an Ingress (of ``ingress_class``) or
an IngressRoute names it; the others are marked ``kube_backends.DATA_NOT_KEPT`` (trimmed as
each LIST page arrives, and again whenever the snapshot is rebuilt, so a Secret no longer named
loses its key). When a named Secret's data was not kept (an existing Secret newly named), the
Secrets WATCH is cut and they are LISTed again: one consistent LIST that reuses the loop's
retries, rather than a GET per Secret racing the WATCH. Publishing waits for that LIST's first
attempt; if it fails, the snapshot is published with the certificate marked as being loaded,
and the LIST retried with backoff.

Publishing: nothing is published until every resource's first LIST succeeded (a partial view
would remove routes), or was refused for an optional one; after that, every change to a cache
marks the snapshot dirty and the publisher task rebuilds it (changes that arrive together are
coalesced) and publishes it when it differs from the last one.

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
(``watch_interval_secs``) cuts each WATCH, and so does a needed re-LIST of Secrets. Must not:
raise out of ``run`` for the API server's failures, publish before every resource was listed
(or counted as empty), keep the key of a Secret nothing names, or log a token or a Secret's
data.
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
    LIST_PAGE_SIZE,
    SECRET_PAGE_SIZE,
    WATCH_SERVER_TIMEOUT,
    KubeApiError,
    KubeClient,
    KubeList,
    WatchEvent,
)
from a3s_gateway.providers.kube_backends import DATA_NOT_KEPT, TLS_SECRET_TYPE
from a3s_gateway.providers.kube_ingress import ingress_secret_names, route_secret_names
from a3s_gateway.providers.kube_objects import KubeObjects, MalformedError, Node, ObjectKey
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
    "QUICK_END",
    "ApiClient",
    "KubernetesDiscovery",
    "WatchedResource",
    "watched_resources",
]

log: Final = logging.getLogger("a3s_gateway.providers")

#: The first retry delay after a failure, doubled per failure up to ``BACKOFF_CAP``.
BACKOFF_FIRST: Final = 1.0
BACKOFF_CAP: Final = 30.0
#: A WATCH the server ends cleanly before this many seconds, without an event, is opened again
#: only after a backoff step (a server or proxy that ends every WATCH at once would otherwise
#: be asked again in a hot loop).
QUICK_END: Final = 5.0
_LAST_APPLIED: Final = "kubectl.kubernetes.io/last-applied-configuration"
_TLS_KEYS: Final = ("tls.crt", "tls.key")
#: The caches whose objects name TLS Secrets.
_NAMING: Final = ("ingresses", "ingress_routes")
#: A LIST refused with these (a CRD not installed, RBAC) counts as empty for an optional
#: resource.
_REFUSED: Final = (403, 404)


class ApiClient(Protocol):
    """What the watch loops call (``kube_api.KubeClient``; tests inject fakes)."""

    async def list_objects(
        self,
        path: str,
        query: Mapping[str, str],
        *,
        page_size: int = ...,
        shape: Callable[[dict[str, object]], dict[str, object]] | None = None,
    ) -> KubeList: ...

    async def watch(
        self,
        path: str,
        query: Mapping[str, str],
        on_event: Callable[[WatchEvent], None],
        *,
        on_open: Callable[[], None] | None = None,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class WatchedResource:
    """One watched resource: its cache (``KubeObjects`` field), kind, API group path, plural,
    whether ``label_selector`` applies, a fixed field selector, the LIST page size, and
    whether a LIST refused with 403 or 404 counts as an empty list (``optional``: the others
    are published meanwhile)."""

    key: str
    kind: str
    api: str
    plural: str
    labelled: bool = False
    field_selector: str = ""
    page_size: int = LIST_PAGE_SIZE
    optional: bool = False

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
            "secrets",
            "Secret",
            "/api/v1",
            "secrets",
            field_selector=f"type={TLS_SECRET_TYPE}",
            page_size=SECRET_PAGE_SIZE,
            optional=True,
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
                optional=True,
            )
        )
    return tuple(found)


def _refusal_hint(resource: WatchedResource, status: int | None) -> str:
    """The likely cause of a LIST of ``resource`` refused with ``status`` (403 or 404)."""
    if status == 404 and resource.key == "ingress_routes":
        return (
            "is the IngressRoute CRD installed? deploy/crds/ingressroutes.a3s-gateway.io.yaml "
            "defines it"
        )
    if status == 404:
        return "the API server does not serve it"
    return f"RBAC: may the gateway's account list and watch {resource.plural}?"


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


def _trimmed(value: dict[str, object]) -> dict[str, object]:
    """``value`` without what the translation never reads and memory should not keep."""
    metadata = value.get("metadata")
    if isinstance(metadata, dict):
        metadata = {k: v for k, v in metadata.items() if k != "managedFields"}
        annotations = metadata.get("annotations")
        if isinstance(annotations, dict) and _LAST_APPLIED in annotations:
            metadata["annotations"] = {k: v for k, v in annotations.items() if k != _LAST_APPLIED}
        value = {**value, "metadata": metadata}
    return value


def _secret(value: Mapping[str, object], *, keep: bool) -> dict[str, object]:
    """A cached Secret: its metadata and type, and its ``tls.crt`` and ``tls.key`` when
    ``keep`` (else marked ``DATA_NOT_KEPT``)."""
    if not keep:
        return {"metadata": value.get("metadata"), "type": value.get("type"), DATA_NOT_KEPT: True}
    data = value.get("data")
    kept = {k: v for k, v in data.items() if k in _TLS_KEYS} if isinstance(data, dict) else {}
    return {"metadata": value.get("metadata"), "type": value.get("type"), "data": kept}


def _names_secrets(
    settings: KubernetesProvider, key: str, namespace: str, value: Mapping[str, object]
) -> list[ObjectKey]:
    """The TLS Secrets an Ingress or IngressRoute (from cache ``key``) names."""
    try:
        if key == "ingresses":
            names = ingress_secret_names(settings, Node(value))
        else:
            names = route_secret_names(Node(value))
    except MalformedError:
        return []  # (the translation skips it whole)
    return [(namespace, name) for name in names]


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
        # The TLS Secrets the Ingresses and IngressRoutes name (None: to be found again).
        self._named: set[ObjectKey] | None = None
        # Set once the caches that name Secrets were listed: the first LIST of Secrets waits
        # for it, so it keeps the data of the named ones.
        self._naming_listed = trio.Event()
        self._note_listed()
        # A re-LIST of Secrets, for a named Secret whose data was not kept: "idle", "asked"
        # (publishing waits for its first attempt), "tried" (that attempt failed).
        self._secrets_relist = "idle"
        self._follow_scopes: dict[str, trio.CancelScope] = {}

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
        """LIST, WATCH until the resync period ends, a 410 or a re-LIST of Secrets is asked
        for, LIST again; forever."""
        backoff = _Backoff()
        if resource.key == "secrets":
            await self._naming_listed.wait()
        while True:
            version = await self._list(client, resource, backoff)
            with trio.move_on_after(self._settings.watch_interval_secs) as scope:
                self._follow_scopes[resource.key] = scope
                await self._follow(client, resource, _Cursor(version), backoff)
            del self._follow_scopes[resource.key]

    async def _list(self, client: ApiClient, resource: WatchedResource, backoff: _Backoff) -> str:
        """Replace the resource's cache with a full LIST (retried until it succeeds); return
        the list's resource version. A 403 or 404 on an optional resource's first LIST makes
        it count as listed and empty meanwhile."""
        path = resource.path(self._settings.namespace)
        query = resource.query(self._settings.label_selector)
        shape = functools.partial(self._shape, resource)
        while True:
            try:
                listed = await client.list_objects(
                    path, query, page_size=resource.page_size, shape=shape
                )
            except KubeApiError as error:
                if resource.optional and error.status in _REFUSED:
                    self._refused(resource, error)
                else:
                    self._fail(resource, str(error))
                if resource.key == "secrets" and self._secrets_relist == "asked":
                    self._secrets_relist = "tried"
                    self._dirty.set()
                await backoff.sleep()
                continue
            backoff.reset()
            cache: dict[ObjectKey, dict[str, object]] = {}
            for item in listed.items:
                key = _object_key(item)
                if key is not None:
                    cache[key] = item
            self._replace(resource, cache)
            detail = self._details[resource.key]
            detail.update(listed=True, resource_version=listed.resource_version)
            self._recovered(resource)
            return listed.resource_version

    def _refused(self, resource: WatchedResource, error: KubeApiError) -> None:
        """A LIST of an optional resource refused for good (403, 404): an error in the status
        and, until a LIST succeeds, an empty cache that does not hold publishing back."""
        hint = _refusal_hint(resource, error.status)
        self._fail(
            resource,
            f"{error} ({hint}); counted as no {resource.kind}s until a LIST succeeds",
        )
        if resource.key not in self._listed:
            self._replace(resource, {})

    def _replace(
        self, resource: WatchedResource, cache: dict[ObjectKey, dict[str, object]]
    ) -> None:
        """``cache`` becomes the resource's (listed); the snapshot is rebuilt."""
        self._caches[resource.key] = cache
        self._listed.add(resource.key)
        if resource.key in _NAMING:
            self._named = None
        elif resource.key == "secrets":
            self._secrets_relist = "idle"
        self._note_listed()
        self._dirty.set()

    def _note_listed(self) -> None:
        if self._listed.issuperset(key for key in _NAMING if key in self._caches):
            self._naming_listed.set()

    async def _follow(
        self, client: ApiClient, resource: WatchedResource, cursor: _Cursor, backoff: _Backoff
    ) -> None:
        """WATCH from ``cursor.version`` until a 410 (then return: LIST again). A 410 on the
        very first WATCH after a LIST, before any event, waits one backoff step first: the
        list's own version was already too old, and LISTing again at once could spin. So
        does a stream that ends cleanly within ``QUICK_END`` without an event."""
        path = resource.path(self._settings.namespace)
        on_event = functools.partial(self._apply, resource, cursor)
        first = True
        while True:
            opened = trio.current_time()
            query = resource.query(self._settings.label_selector)
            query.update(
                watch="1",
                resourceVersion=cursor.version,
                allowWatchBookmarks="true",
                timeoutSeconds=str(WATCH_SERVER_TIMEOUT),
            )
            cursor.events = 0
            on_open = functools.partial(self._recovered, resource)
            try:
                await client.watch(path, query, on_event, on_open=on_open)
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
                if cursor.events or trio.current_time() - opened >= QUICK_END:
                    backoff.reset()
                else:
                    await backoff.sleep()
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
        if resource.key in _NAMING:
            self._named = None
        if event.type == "DELETED":
            cache.pop(key, None)
        else:
            cache[key] = self._shape(resource, event.obj)
        self._recovered(resource)
        self._dirty.set()

    def _shape(self, resource: WatchedResource, value: dict[str, object]) -> dict[str, object]:
        """``value`` as the cache keeps it: trimmed, and a Secret with its data only when an
        Ingress or IngressRoute names it."""
        value = _trimmed(value)
        if resource.key == "secrets":
            key = _object_key(value)
            return _secret(value, keep=key is not None and key in self._named_secrets())
        return value

    def _named_secrets(self) -> set[ObjectKey]:
        """The TLS Secrets the cached Ingresses and IngressRoutes name (found again after a
        change to them)."""
        if self._named is None:
            self._named = {
                secret
                for key in _NAMING
                for (namespace, _), value in self._caches.get(key, {}).items()
                for secret in _names_secrets(self._settings, key, namespace, value)
            }
        return self._named

    def _loading_secrets(self) -> bool:
        """Drop the data of Secrets no longer named; when a named one's data was not kept,
        ask for a re-LIST of Secrets (the WATCH is cut). True while that re-LIST's first
        attempt runs: publishing waits for it (after a failed attempt, the snapshot says the
        certificate is being loaded)."""
        cache = self._caches.get("secrets", {})
        named = self._named_secrets()
        missing = False
        for key, value in cache.items():
            kept = value.get(DATA_NOT_KEPT) is not True
            if kept and key not in named:
                cache[key] = _secret(value, keep=False)
            elif not kept and key in named:
                missing = True
        if not missing:
            self._secrets_relist = "idle"
            return False
        if self._secrets_relist == "idle":
            self._secrets_relist = "asked"
            scope = self._follow_scopes.get("secrets")
            if scope is not None:
                scope.cancel()
        return self._secrets_relist == "asked"

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
            if not self._listed.issuperset(self._caches) or self._loading_secrets():
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
