"""The documents the fake Kubernetes API server answers with, apart from stored objects.

Test support, pure: discovery (``/api``, ``/apis``, ``/apis/<group>``, the APIResourceList of
each group version, with verbs, scope, kind, short names and the ``/scale`` subresources),
``/version``, ``Status`` objects for errors, ``<Kind>List`` envelopes, watch event lines and the
autoscaling/v1 ``Scale`` view of a Deployment or StatefulSet — shaped like the real
kube-apiserver's JSON, which kubectl and the Kubernetes provider read.

Must not: hold state; answer the aggregated discovery format (kubectl asks for it first and
falls back to this legacy discovery when the answer is plain ``application/json``, as with an
older server).
"""

from __future__ import annotations

import json
from typing import Final

from tests.support.fake_kube_match import JsonObject
from tests.support.fake_kube_store import RESOURCES, VERBS, ResourceType, group_versions

#: The Kubernetes version the fake claims to be (kubectl 1.32 is within its skew).
SERVER_VERSION: Final = ("1", "32", "v1.32.0-fake")

_REASONS: Final = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def reason_for(code: int) -> str:
    """The Status ``reason`` the real server gives with ``code``."""
    return _REASONS.get(code, "Unknown")


def status(code: int, message: str, reason: str | None = None) -> JsonObject:
    """A ``Status`` failure object (what every API error's body is)."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or reason_for(code),
        "code": code,
    }


def version_info() -> JsonObject:
    major, minor, git = SERVER_VERSION
    return {
        "major": major,
        "minor": minor,
        "gitVersion": git,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.23.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def core_versions(address: str) -> JsonObject:
    """``/api``."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
    }


def _group(name: str) -> JsonObject:
    versions = [
        {"groupVersion": f"{g}/{v}", "version": v} for g, v in group_versions() if g == name
    ]
    return {"name": name, "versions": versions, "preferredVersion": versions[0]}


def group_list() -> JsonObject:
    """``/apis``: every named group."""
    names = [g for g, _ in group_versions() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(n) for n in names]}


def group(name: str) -> JsonObject | None:
    """``/apis/<group>``, or None for a group the fake does not serve."""
    if name not in {g for g, _ in group_versions() if g}:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name)}


def _resource_entry(resource: ResourceType) -> JsonObject:
    entry: JsonObject = {
        "name": resource.plural,
        "singularName": resource.singular,
        "namespaced": resource.namespaced,
        "kind": resource.kind,
        "verbs": list(VERBS),
    }
    if resource.short_names:
        entry["shortNames"] = list(resource.short_names)
    return entry


def resource_list(group_name: str, version: str) -> JsonObject | None:
    """``/api/v1`` or ``/apis/<group>/<version>``, or None if not served."""
    resources = [r for r in RESOURCES if (r.group, r.version) == (group_name, version)]
    if not resources:
        return None
    entries = []
    for resource in resources:
        entries.append(_resource_entry(resource))
        if resource.scalable:
            entries.append({
                "name": f"{resource.plural}/scale",
                "singularName": "",
                "namespaced": resource.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            })  # fmt: skip
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": resources[0].api_version,
        "resources": entries,
    }


def object_list(resource: ResourceType, items: list[JsonObject], rv: int) -> JsonObject:
    """A ``<Kind>List``; built-in items lose ``kind``/``apiVersion`` as in the real server."""
    if not resource.custom:
        items = [{k: v for k, v in i.items() if k not in ("kind", "apiVersion")} for i in items]
    return {
        "kind": f"{resource.kind}List",
        "apiVersion": resource.api_version,
        "metadata": {"resourceVersion": str(rv)},
        "items": items,
    }


def event_line(event_type: str, obj: JsonObject) -> bytes:
    """One watch event as the JSON line the server streams."""
    return json.dumps({"type": event_type, "object": obj}, separators=(",", ":")).encode() + b"\n"


def bookmark(resource: ResourceType, rv: int, *, initial_end: bool = False) -> JsonObject:
    """A BOOKMARK event's object: only kind, apiVersion and the resourceVersion."""
    meta: JsonObject = {"resourceVersion": str(rv)}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {"kind": resource.kind, "apiVersion": resource.api_version, "metadata": meta}


def scale_of(obj: JsonObject) -> JsonObject:
    """The autoscaling/v1 ``Scale`` of a Deployment or StatefulSet."""
    meta = obj["metadata"]
    match_labels = (obj.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
    selector = ",".join(f"{k}={v}" for k, v in sorted(match_labels.items()))
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            key: meta[key]
            for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if key in meta
        },
        "spec": {"replicas": obj.get("spec", {}).get("replicas", 0)},
        "status": {"replicas": obj.get("status", {}).get("replicas", 0), "selector": selector},
    }


def openapi_root() -> JsonObject:
    """``/openapi/v3``: where each group version's document is."""
    paths = {}
    for group_name, version in group_versions():
        key = f"apis/{group_name}/{version}" if group_name else f"api/{version}"
        paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash=fake-{key.replace('/', '-')}"}
    return {"paths": paths}


def _patch_operation(resource: ResourceType) -> JsonObject:
    return {
        "operationId": f"patch{resource.kind}",
        "parameters": [
            {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
            for name in ("dryRun", "fieldManager", "fieldValidation")
        ],
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": "patch",
        "x-kubernetes-group-version-kind": {
            "group": resource.group,
            "version": resource.version,
            "kind": resource.kind,
        },
    }


def openapi_group_version(path: str) -> JsonObject | None:
    """``/openapi/v3/api/v1`` or ``/openapi/v3/apis/<group>/<version>`` (None: not served)."""
    parts = path.strip("/").split("/")[2:]
    if parts[:1] == ["api"] and len(parts) == 2:
        group_name, version = "", parts[1]
    elif parts[:1] == ["apis"] and len(parts) == 3:
        group_name, version = parts[1], parts[2]
    else:
        return None
    resources = [r for r in RESOURCES if (r.group, r.version) == (group_name, version)]
    if not resources:
        return None
    paths = {}
    for resource in resources:
        prefix = f"/apis/{resource.api_version}" if resource.group else f"/api/{version}"
        scope = "/namespaces/{namespace}" if resource.namespaced else ""
        item = f"{prefix}{scope}/{resource.plural}/{{name}}"
        paths[item] = {"patch": _patch_operation(resource)}
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": SERVER_VERSION[2]},
        "paths": paths,
        "components": {"schemas": {}},
    }
