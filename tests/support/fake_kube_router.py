"""What the fake Kubernetes API server (``tests/support/fake_kube.py``) answers to a request.

Test support, synchronous: ``Router.route`` maps one authenticated request (method, path,
query, body, content type) to a ``Reply`` (status and JSON) or to a ``Watch`` to stream:
discovery and OpenAPI documents (``fake_kube_api``), LIST/GET/POST/PUT/PATCH/DELETE on the
resources of ``fake_kube_store.RESOURCES`` at their real paths, namespaced and across all
namespaces, the ``/scale`` subresource, and the registration of watches with their replayed
events (``watches``; ``FakeKube`` fans new events out to them and streams them).

Must not: touch sockets, threads or trio (``FakeKube`` calls it with its lock held and does the
I/O); raise anything but ``KubeError`` for a bad request.
"""

from __future__ import annotations

import datetime
import json
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from tests.support import fake_kube_api as api
from tests.support.fake_kube_match import (
    JsonObject,
    KubeError,
    Selector,
    merge_patch,
    parse_field_selector,
    parse_label_selector,
    strategic_merge_patch,
)
from tests.support.fake_kube_store import RESOURCES, LogEntry, ObjectStore, ResourceType

ExpiredAs: TypeAlias = Literal["event", "status"]


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"


def json_reply(status: int, obj: JsonObject) -> Reply:
    return Reply(status, json.dumps(obj).encode())


def error_reply(error: KubeError) -> Reply:
    return json_reply(error.code, api.status(error.code, error.message, error.reason))


QueueItem: TypeAlias = tuple[str, JsonObject, JsonObject | None]  # (type, object, old object)


@dataclass(eq=False)
class Watch:
    """One open watch: what it filters on and the events waiting to be sent."""

    resource: ResourceType
    namespace: str | None
    selector: Selector
    bookmarks: bool
    timeout: float
    queue: deque[QueueItem] = field(default_factory=deque)
    dropped: bool = False
    #: Only what is queued, then the end (an expired watch's single ERROR event).
    finite: bool = False

    def wants(self, entry: LogEntry) -> bool:
        namespace = entry.obj.get("metadata", {}).get("namespace")
        return entry.resource == self.resource and self.namespace in (None, namespace)

    def shape(self, item: QueueItem) -> tuple[str, JsonObject] | None:
        """The event this watcher sends for ``item``, after its selectors (None: nothing)."""
        event_type, obj, old = item
        if event_type not in ("ADDED", "MODIFIED", "DELETED"):
            return (event_type, obj) if event_type != "BOOKMARK" or self.bookmarks else None
        now = self.selector.matches(obj)
        before = old is not None and event_type == "MODIFIED" and self.selector.matches(old)
        if event_type == "MODIFIED" and before != now:
            return ("ADDED", obj) if now else ("DELETED", obj)
        return (event_type, obj) if now else None


@dataclass(frozen=True)
class Target:
    resource: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


def resource_target(path: str) -> Target | None:
    """The resource a ``/api/v1/...`` or ``/apis/<g>/<v>/...`` path names, if any."""
    parts = path.strip("/").split("/")
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif parts[0] == "apis" and len(parts) >= 4:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    served = {r.plural: r for r in RESOURCES if (r.group, r.version) == (group, version)}
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] in served:
        if not served[rest[2]].namespaced:
            return None
        namespace, rest = rest[1], rest[2:]
    if not rest or rest[0] not in served or len(rest) > 3:
        return None
    resource = served[rest[0]]
    if resource.namespaced and namespace is None and len(rest) > 1:
        return None
    name = rest[1] if len(rest) > 1 else None
    return Target(resource, namespace, name, rest[2] if len(rest) > 2 else None)


def _with_manager(obj: JsonObject, manager: str, api_version: str, subresource: str) -> None:
    """Record ``manager`` in ``obj``'s managedFields (one entry per manager and subresource)."""
    entries = obj.setdefault("metadata", {}).setdefault("managedFields", [])
    entries[:] = [
        e for e in entries if (e.get("manager"), e.get("subresource", "")) != (manager, subresource)
    ]
    entry: JsonObject = {
        "manager": manager,
        "operation": "Update",
        "apiVersion": api_version,
        "time": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:replicas": {}}} if subresource == "scale" else {},
    }
    if subresource:
        entry["subresource"] = subresource
    entries.append(entry)


def _body(raw: bytes, content_type: str) -> JsonObject:
    if "protobuf" in content_type or "yaml" in content_type:
        raise KubeError(415, "UnsupportedMediaType", f"the fake reads JSON, not {content_type}")
    try:
        decoded = json.loads(raw)
    except ValueError as exc:
        raise KubeError(400, "BadRequest", f"the body is not JSON: {exc}") from exc
    if not isinstance(decoded, dict):
        raise KubeError(400, "BadRequest", "the body is not a JSON object")
    return decoded


class Router:
    """Answers requests from ``store``; ``watches`` are the open watches, ``changed`` is called
    after every write, ``address`` gives ``host:port`` for ``/api``."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        changed: Callable[[], None],
        address: Callable[[], str],
        expired_as: ExpiredAs = "event",
    ) -> None:
        self.store = store
        self.changed = changed
        self.address = address
        #: How a watch from an expired resourceVersion is answered (see ``FakeKube``).
        self.expired_as: ExpiredAs = expired_as
        self.watches: list[Watch] = []

    def _discovery(self, path: str) -> JsonObject | None:
        parts = path.strip("/").split("/")
        doc: JsonObject | None = None
        if path == "/version":
            doc = api.version_info()
        elif path == "/api":
            doc = api.core_versions(self.address())
        elif path == "/apis":
            doc = api.group_list()
        elif parts == ["api", "v1"]:
            doc = api.resource_list("", "v1")
        elif parts[0] == "apis" and len(parts) == 2:
            doc = api.group(parts[1])
        elif parts[0] == "apis" and len(parts) == 3:
            doc = api.resource_list(parts[1], parts[2])
        elif path == "/openapi/v3":
            doc = api.openapi_root()
        elif parts[:2] == ["openapi", "v3"]:
            doc = api.openapi_group_version(path)
        return doc

    def route(
        self, method: str, path: str, query: dict[str, str], raw: bytes, content_type: str
    ) -> Reply | Watch:
        path = path.rstrip("/") or "/"
        if path in ("/healthz", "/livez", "/readyz"):
            return Reply(200, b"ok", "text/plain; charset=utf-8")
        if method == "GET" and (doc := self._discovery(path)) is not None:
            return json_reply(200, doc)
        target = resource_target(path)
        if target is None:
            message = "the server could not find the requested resource"
            return json_reply(404, api.status(404, message))
        if target.subresource == "scale" and target.resource.scalable:
            return self._scale(method, target, query, raw, content_type)
        if target.subresource is not None:
            return json_reply(404, api.status(404, f"no subresource {target.subresource!r}"))
        if target.name is None:
            return self._collection(method, target, query, raw, content_type)
        return self._item(method, target, query, raw, content_type)

    def _selector(self, target: Target, query: dict[str, str]) -> Selector:
        labels = parse_label_selector(query.get("labelSelector", ""))
        fields = parse_field_selector(
            query.get("fieldSelector", ""), secret=target.resource.kind == "Secret"
        )
        return Selector(labels, fields)

    def _collection(
        self, method: str, target: Target, query: dict[str, str], raw: bytes, content_type: str
    ) -> Reply | Watch:
        resource = target.resource
        if method == "GET" and query.get("watch") in ("1", "true"):
            return self._open_watch(target, query)
        if method == "GET":
            selector = self._selector(target, query)
            self._check_list_rv(query)
            items = self.store.list_objects(resource, target.namespace, selector)
            return json_reply(200, api.object_list(resource, items, self.store.rv))
        if method == "POST":
            obj = _body(raw, content_type)
            if target.namespace is not None:
                meta = obj.setdefault("metadata", {})
                if meta.setdefault("namespace", target.namespace) != target.namespace:
                    raise KubeError(
                        400,
                        "BadRequest",
                        "the namespace of the object does not match the namespace on the request",
                    )
            if manager := query.get("fieldManager", ""):
                _with_manager(obj, manager, resource.api_version, "")
            stored = self.store.write(
                resource, obj, create=True, dry_run=query.get("dryRun") == "All"
            )
            self.changed()
            return json_reply(201, stored)
        return json_reply(405, api.status(405, f"{method} is not supported on a collection"))

    def _check_list_rv(self, query: dict[str, str]) -> None:
        """A LIST at an exact resourceVersion older than the compaction point is 410."""
        if query.get("resourceVersionMatch") != "Exact":
            return
        try:
            wanted = int(query.get("resourceVersion", ""))
        except ValueError:
            raise KubeError(400, "BadRequest", "resourceVersion must be an integer") from None
        if wanted < self.store.compacted:
            raise KubeError(410, "Expired", f"too old resource version: {wanted}")

    def _item(
        self, method: str, target: Target, query: dict[str, str], raw: bytes, content_type: str
    ) -> Reply:
        resource, namespace, name = target.resource, target.namespace or "", target.name or ""
        dry_run, manager = query.get("dryRun") == "All", query.get("fieldManager", "")
        if method == "GET":
            return json_reply(200, self.store.get(resource, namespace, name))
        if method == "DELETE":
            gone = self.store.delete(resource, namespace, name, dry_run=dry_run)
            self.changed()
            return json_reply(200, gone)
        if method == "PUT":
            obj = _body(raw, content_type)
            if obj.get("metadata", {}).get("name") != name:
                raise KubeError(
                    400, "BadRequest", "the name of the object does not match the name on the URL"
                )
        elif method == "PATCH":
            obj = self._patched(
                resource, self.store.get(resource, namespace, name), raw, content_type
            )
        else:
            return json_reply(405, api.status(405, f"{method} is not supported"))
        if manager:
            _with_manager(obj, manager, resource.api_version, "")
        if target.namespace is not None:
            obj.setdefault("metadata", {})["namespace"] = target.namespace
        stored = self.store.write(resource, obj, create=False, dry_run=dry_run)
        self.changed()
        return json_reply(200, stored)

    def _patched(
        self, resource: ResourceType, current: JsonObject, raw: bytes, content_type: str
    ) -> JsonObject:
        kind = content_type.split(";")[0].strip()
        if kind == "application/merge-patch+json":
            patched = merge_patch(current, _body(raw, "application/json"))
        elif kind == "application/strategic-merge-patch+json" and not resource.custom:
            patched = strategic_merge_patch(current, _body(raw, "application/json"))
        else:
            raise KubeError(415, "UnsupportedMediaType", f"the fake does not take {kind} patches")
        assert isinstance(patched, dict)
        return patched

    def _scale(
        self, method: str, target: Target, query: dict[str, str], raw: bytes, content_type: str
    ) -> Reply:
        """The autoscaling/v1 Scale of a Deployment or StatefulSet: GET, PUT, merge PATCH."""
        resource, namespace, name = target.resource, target.namespace or "", target.name or ""
        manager = query.get("fieldManager", "")
        current = self.store.get(resource, namespace, name)
        if method == "GET":
            return json_reply(200, api.scale_of(current))
        if method == "PATCH":
            kind = content_type.split(";")[0].strip()
            if kind not in (
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
            ):
                raise KubeError(
                    415, "UnsupportedMediaType", f"the fake does not take {kind} patches"
                )
            scale = merge_patch(api.scale_of(current), _body(raw, "application/json"))
        elif method == "PUT":
            scale = _body(raw, content_type)
        else:
            return json_reply(405, api.status(405, f"{method} is not supported on scale"))
        assert isinstance(scale, dict)
        replicas = scale.get("spec", {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise KubeError(422, "Invalid", "Scale: spec.replicas: must be a non-negative integer")
        current.setdefault("spec", {})["replicas"] = replicas
        if manager:
            _with_manager(current, manager, "autoscaling/v1", "scale")
        stored = self.store.write(resource, current, create=False)
        self.changed()
        return json_reply(200, api.scale_of(stored))

    # -- watches ----------------------------------------------------------------------------

    def _open_watch(self, target: Target, query: dict[str, str]) -> Reply | Watch:
        """Register a watch (the lock is held) with its replayed events queued."""
        try:
            timeout = float(query.get("timeoutSeconds") or math.inf)
        except ValueError:
            raise KubeError(400, "BadRequest", "timeoutSeconds must be a number") from None
        watch = Watch(
            target.resource,
            target.namespace,
            self._selector(target, query),
            bookmarks=query.get("allowWatchBookmarks") == "true",
            timeout=timeout,
        )
        text = query.get("resourceVersion", "")
        initial = query.get("sendInitialEvents") == "true"
        if text in ("", "0") or initial:
            for obj in self.store.list_objects(target.resource, target.namespace, watch.selector):
                watch.queue.append(("ADDED", obj, None))
            if initial and watch.bookmarks:
                mark = api.bookmark(target.resource, self.store.rv, initial_end=True)
                watch.queue.append(("BOOKMARK", mark, None))
        else:
            try:
                entries = self.store.events_after(target.resource, int(text))
            except ValueError:
                raise KubeError(400, "BadRequest", f"invalid resourceVersion {text!r}") from None
            except KubeError as error:
                if self.expired_as == "status":
                    raise
                watch.queue.append(("ERROR", api.status(410, error.message, "Expired"), None))
                watch.finite = True
                return watch
            watch.queue.extend((e.type, e.obj, e.old) for e in entries if watch.wants(e))
        self.watches.append(watch)
        self.changed()
        return watch
