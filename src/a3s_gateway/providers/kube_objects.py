"""Decoded Kubernetes objects as the translation reads them (SPEC §10.6): the watch caches
(``KubeObjects``, objects by namespace and name), ``Node``, a checked reader over decoded JSON
that names where a wrong field sits (``spec.rules[0].host``), the two ways a read fails, and
``object_name``, the name of anything made from an object.

Failures: ``MalformedError`` (a field has the wrong shape) skips the whole object it was read
from; ``UnusableError`` (one path, route or Secret cannot be used) skips only that part. Both
carry a message for the provider's ``skipped`` list, never a Secret's data.

Names: the parts joined with ``-`` (``k8s-<ns>-<name>-...``); a name over 128 characters (the
config's limit) keeps its first 117 and ends with ``-`` and 10 hex digits of its SHA-256, the
same in every run.

Ring 1 by place (``providers/``), pure by nature: no I/O, no clock, no trio. Nurseries: none.
Deadlines: none. Must not: raise anything but ``MalformedError`` for a malformed field, or
quote a field's value in a message.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "KubeObject",
    "KubeObjects",
    "MalformedError",
    "Node",
    "ObjectKey",
    "UnusableError",
    "object_name",
]

#: (namespace, name) of a cached object.
ObjectKey: TypeAlias = tuple[str, str]
#: A decoded Kubernetes object.
KubeObject: TypeAlias = "Mapping[str, object]"
_MAX_NAME: Final = 128
_HASHED_KEEP: Final = 117


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


def object_name(*parts: str) -> str:
    """``parts`` joined with ``-``; over 128 characters, cut to 117 and suffixed with ``-`` and
    10 hex digits of the whole name's SHA-256 (stable across runs)."""
    name = "-".join(parts)
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[:_HASHED_KEEP]}-{digest}"


# -- reading decoded JSON --------------------------------------------------------------------


class MalformedError(Exception):
    """A field has the wrong shape: the whole object is skipped."""


class UnusableError(Exception):
    """One path or route cannot be translated: only it is skipped."""


@dataclass(frozen=True, slots=True)
class Node:
    """A JSON object and where it is in its Kubernetes object (``spec.rules[0]``)."""

    value: Mapping[str, object]
    path: str = ""

    def _at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def node(self, key: str) -> Node:
        """The object at ``key`` (empty when absent or null)."""
        raw = self.value.get(key)
        if raw is None:
            return Node({}, self._at(key))
        if not isinstance(raw, dict):
            raise MalformedError(f"{self._at(key)}: expected an object")
        return Node(raw, self._at(key))

    def nodes(self, key: str) -> list[Node]:
        """The list of objects at ``key`` (empty when absent or null)."""
        raw = self.value.get(key)
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise MalformedError(f"{self._at(key)}: expected a list")
        found: list[Node] = []
        for index, item in enumerate(raw):
            where = f"{self._at(key)}[{index}]"
            if not isinstance(item, dict):
                raise MalformedError(f"{where}: expected an object")
            found.append(Node(item, where))
        return found

    def text(self, key: str) -> str | None:
        """The string at ``key``, or None when absent or null."""
        raw = self.value.get(key)
        if raw is None or isinstance(raw, str):
            return raw
        raise MalformedError(f"{self._at(key)}: expected a string")

    def required(self, key: str) -> str:
        """The non-empty string at ``key``."""
        raw = self.text(key)
        if not raw:
            raise MalformedError(f"{self._at(key)}: missing")
        return raw

    def integer(self, key: str) -> int | None:
        """The integer at ``key``, or None when absent or null."""
        raw = self.value.get(key)
        if raw is None:
            return None
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise MalformedError(f"{self._at(key)}: expected an integer")
        return raw

    def port(self, key: str) -> int | str:
        """A port given as a number or a name (IngressRoute ``port``, ``targetPort``)."""
        raw = self.value.get(key)
        if isinstance(raw, str) and raw:
            return raw
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        raise MalformedError(f"{self._at(key)}: expected a port number or name")

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
            raise MalformedError(f"{self._at(key)}: expected a list of strings")
        return [str(item) for item in raw]
