"""The object store of the fake Kubernetes API server (``tests/support/fake_kube.py``).

Test support, synchronous and pure (no trio, no sockets): the resource table the fake serves
(``RESOURCES``: group, version, plural, kind, scope, short names, ``/scale``) and
``ObjectStore`` — objects keyed by (resource, namespace, name), one global resourceVersion
counter, the metadata the API server fills in (``uid``, ``creationTimestamp``,
``resourceVersion``, ``generation``; with ``instant_rollout`` a Deployment's or StatefulSet's
status replica counts follow its spec at once, as if its controller were instantaneous) and the
event log watches replay from, with a compaction point (a watch from an older resourceVersion
is "expired", HTTP 410 in the real server).

Failures are ``KubeError(code, reason, message)``, which the HTTP layer turns into a ``Status``
object. The store is not thread-safe: ``FakeKube`` serialises every call with its lock.

Must not: know about HTTP, threads or trio; hand out its own dicts (every object goes in and out
as a deep copy, so a test cannot change the store behind its back).
"""

from __future__ import annotations

import copy
import datetime
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias

from tests.support.fake_kube_match import JsonObject, KubeError, Selector

EventType: TypeAlias = Literal["ADDED", "MODIFIED", "DELETED"]

VERBS: Final = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    """One resource the fake serves, as discovery describes it."""

    group: str  # "" for the core group
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    #: Has the ``/scale`` subresource (autoscaling/v1 Scale).
    scalable: bool = False
    #: A custom resource: list items keep ``kind``/``apiVersion`` (built-in ones do not).
    custom: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


RESOURCES: Final = (
    ResourceType("", "v1", "namespaces", "namespace", "Namespace", False, ("ns",)),
    ResourceType("", "v1", "services", "service", "Service", True, ("svc",)),
    ResourceType("", "v1", "secrets", "secret", "Secret", True),
    ResourceType("", "v1", "configmaps", "configmap", "ConfigMap", True, ("cm",)),
    ResourceType("networking.k8s.io", "v1", "ingresses", "ingress", "Ingress", True, ("ing",)),
    ResourceType(
        "networking.k8s.io", "v1", "ingressclasses", "ingressclass", "IngressClass", False
    ),
    ResourceType(
        "discovery.k8s.io", "v1", "endpointslices", "endpointslice", "EndpointSlice", True
    ),
    ResourceType("apps", "v1", "deployments", "deployment", "Deployment", True, ("deploy",), True),
    ResourceType("apps", "v1", "statefulsets", "statefulset", "StatefulSet", True, ("sts",), True),
    ResourceType(
        "a3s-gateway.io",
        "v1alpha1",
        "ingressroutes",
        "ingressroute",
        "IngressRoute",
        True,
        ("ir",),
        custom=True,
    ),
    ResourceType(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "customresourcedefinition",
        "CustomResourceDefinition",
        False,
        ("crd", "crds"),
    ),
)


def find_resource(api_version: str, kind_or_plural: str) -> ResourceType:
    """The resource of ``api_version`` whose kind, plural or singular is ``kind_or_plural``."""
    for resource in RESOURCES:
        names = (resource.kind, resource.plural, resource.singular)
        if resource.api_version == api_version and kind_or_plural in names:
            return resource
    raise KubeError(404, "NotFound", f"the server doesn't have a resource type {kind_or_plural!r}")


def group_versions() -> list[tuple[str, str]]:
    """Every (group, version) served, core first, in table order."""
    seen: list[tuple[str, str]] = []
    for resource in RESOURCES:
        if (resource.group, resource.version) not in seen:
            seen.append((resource.group, resource.version))
    return seen


# -- the store ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogEntry:
    """One write: its resourceVersion, type, resource, the object after it (before it for
    DELETED, with the deletion's resourceVersion) and the object before it (None on ADDED)."""

    rv: int
    type: EventType
    resource: ResourceType
    obj: JsonObject
    old: JsonObject | None


Key: TypeAlias = tuple[ResourceType, str, str]  # (resource, namespace or "", name)


def _now() -> str:
    # creationTimestamp is data the server stamps, not a timer: wall-clock time is right here.
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _without_meta(obj: JsonObject) -> JsonObject:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


@dataclass
class ObjectStore:
    """Objects, the resourceVersion counter and the event log (see the module docstring)."""

    rv: int = 1
    #: Watches from a resourceVersion below this are expired (``compact`` moves it).
    compacted: int = 1
    #: Deployments and StatefulSets report ``status.replicas = spec.replicas`` at once.
    instant_rollout: bool = True
    objects: dict[Key, JsonObject] = field(default_factory=dict)
    log: list[LogEntry] = field(default_factory=list)
    #: Called with every new log entry (the HTTP layer fans it out to open watches).
    on_event: Callable[[LogEntry], None] | None = None

    # .. reads

    def get(self, resource: ResourceType, namespace: str, name: str) -> JsonObject:
        found = self.objects.get((resource, namespace if resource.namespaced else "", name))
        if found is None:
            what = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
            raise KubeError(404, "NotFound", f'{what} "{name}" not found')
        return copy.deepcopy(found)

    def list_objects(
        self, resource: ResourceType, namespace: str | None, selector: Selector
    ) -> list[JsonObject]:
        """Matching objects of ``resource`` in ``namespace`` (None: all), by namespace, name."""
        keys = sorted(
            (k for k in self.objects if k[0] == resource), key=lambda k: (k[1], k[2])
        )  # fmt: skip
        return [
            copy.deepcopy(self.objects[k])
            for k in keys
            if (namespace is None or k[1] == namespace) and selector.matches(self.objects[k])
        ]

    def events_after(self, resource: ResourceType, rv: int) -> list[LogEntry]:
        """The log entries of ``resource`` newer than ``rv``; 410 Expired if ``rv`` is older
        than the compaction point."""
        if rv < self.compacted:
            message = f"too old resource version: {rv} ({self.compacted})"
            raise KubeError(410, "Expired", message)
        return [e for e in self.log if e.rv > rv and e.resource == resource]

    # .. writes

    def _key(self, resource: ResourceType, obj: JsonObject) -> Key:
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            raise KubeError(422, "Invalid", f"{resource.kind}: metadata.name: Required value")
        return resource, meta.get("namespace", "") if resource.namespaced else "", name

    def _stamp(self, resource: ResourceType, obj: JsonObject, old: JsonObject | None) -> None:
        """Fill the server-owned fields of ``obj`` (a fresh copy) before it is stored."""
        meta = obj.setdefault("metadata", {})
        obj["apiVersion"], obj["kind"] = resource.api_version, resource.kind
        if old is None:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            meta["generation"] = 1
        else:
            for key in ("uid", "creationTimestamp"):
                meta[key] = old["metadata"][key]
            changed = _without_meta(obj) != _without_meta(old)
            meta["generation"] = old["metadata"]["generation"] + (1 if changed else 0)
        if resource.scalable:
            spec = obj.setdefault("spec", {})
            spec.setdefault("replicas", 1)
            if self.instant_rollout:
                status = obj.setdefault("status", {})
                for key in ("replicas", "readyReplicas", "availableReplicas", "updatedReplicas"):
                    status[key] = spec["replicas"]
        meta.pop("deletionTimestamp", None)

    def _record(self, entry_type: EventType, resource: ResourceType, obj: JsonObject,
                old: JsonObject | None) -> None:  # fmt: skip
        entry = LogEntry(self.rv, entry_type, resource, copy.deepcopy(obj), old)
        self.log.append(entry)
        if self.on_event is not None:
            self.on_event(entry)

    def write(
        self,
        resource: ResourceType,
        obj: JsonObject,
        *,
        create: bool | None = None,
        dry_run: bool = False,
    ) -> JsonObject:
        """Create (``create`` True: 409 if it exists), replace (False: 404 if missing) or
        either (None) the object ``obj`` names; returns the stored object."""
        obj = copy.deepcopy(obj)
        if resource.namespaced:
            obj.setdefault("metadata", {}).setdefault("namespace", "default")
        key = self._key(resource, obj)
        old = self.objects.get(key)
        if create is True and old is not None:
            message = f'{resource.plural} "{key[2]}" already exists'
            raise KubeError(409, "AlreadyExists", message)
        if create is False and old is None:
            self.get(resource, key[1], key[2])  # raises NotFound
        wanted = obj.get("metadata", {}).get("resourceVersion")
        if old is not None and wanted and wanted != old["metadata"]["resourceVersion"]:
            message = f"the object has been modified; please apply your changes to the latest version (resourceVersion {wanted})"  # noqa: E501
            raise KubeError(409, "Conflict", message)
        self._stamp(resource, obj, old)
        if dry_run:
            obj["metadata"]["resourceVersion"] = str(self.rv)
            return obj
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.objects[key] = obj
        self._record("ADDED" if old is None else "MODIFIED", resource, obj, old)
        return copy.deepcopy(obj)

    def delete(
        self, resource: ResourceType, namespace: str, name: str, *, dry_run: bool = False
    ) -> JsonObject:
        """Remove the object (404 if missing); returns it as it was last stored."""
        old = self.get(resource, namespace, name)
        if dry_run:
            return old
        del self.objects[(resource, namespace if resource.namespaced else "", name)]
        self.rv += 1
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(self.rv)
        self._record("DELETED", resource, gone, old)
        return old

    def compact(self) -> None:
        """Forget the event log: watches from any older resourceVersion are now expired."""
        self.log.clear()
        self.compacted = self.rv
