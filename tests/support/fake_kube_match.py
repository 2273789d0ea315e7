"""How the fake Kubernetes API server (``tests/support/fake_kube.py``) selects and patches objects.

Test support, synchronous and pure: the JSON object type, ``KubeError`` (an API error the HTTP
layer turns into a ``Status``), label selectors (``=``, ``==``, ``!=``, ``in``, ``notin``,
``key``, ``!key``, as kube-apiserver parses them), field selectors (``metadata.name``,
``metadata.namespace``, a secret's ``type``), RFC 7386 merge patches and the approximation of
strategic merge patches the fake applies.

Must not: know about resources, HTTP, threads or trio; change its arguments (patches return new
values).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

JsonObject: TypeAlias = dict[str, Any]


class KubeError(Exception):
    """An API error: HTTP ``code``, Status ``reason`` (``NotFound``, ``Expired``…), message."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


# -- selectors ------------------------------------------------------------------------------

_KEY: Final = r"(?:[A-Za-z0-9.-]+/)?[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?"
_VALUE: Final = r"(?:[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?)?"
_KEY_RE: Final = re.compile(_KEY)
_VALUE_RE: Final = re.compile(_VALUE)
_SET_RE: Final = re.compile(rf"^({_KEY})\s+(in|notin)\s+\((.*)\)$")
_EQ_RE: Final = re.compile(rf"^({_KEY})\s*(==|!=|=)\s*(.*)$")

Requirement: TypeAlias = tuple[str, str, frozenset[str]]  # (key, operator, values)


def _split_terms(text: str) -> list[str]:
    """Split a selector at the commas outside ``( )``."""
    terms, depth, start = [], 0, 0
    for index, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(text[start:index].strip())
            start = index + 1
    terms.append(text[start:].strip())
    return terms


def _check_value(value: str, selector: str) -> str:
    if not _VALUE_RE.fullmatch(value):
        raise KubeError(400, "BadRequest", f"unable to parse requirement: {selector!r}")
    return value


def _requirement(term: str) -> Requirement:
    if match := _SET_RE.match(term):
        values = frozenset(_check_value(v.strip(), term) for v in match.group(3).split(","))
        return match.group(1), match.group(2), values
    if match := _EQ_RE.match(term):
        operator = "!=" if match.group(2) == "!=" else "="
        return match.group(1), operator, frozenset({_check_value(match.group(3).strip(), term)})
    if term.startswith("!") and _KEY_RE.fullmatch(term[1:].strip()):
        return term[1:].strip(), "!", frozenset()
    if _KEY_RE.fullmatch(term):
        return term, "exists", frozenset()
    raise KubeError(400, "BadRequest", f"unable to parse requirement: {term!r}")


def parse_label_selector(text: str) -> tuple[Requirement, ...]:
    """Parse ``app=web,tier!=db,env in (a,b),env notin (c),key,!key``; 400 on anything else."""
    if not text.strip():
        return ()
    return tuple(_requirement(term) for term in _split_terms(text))


def labels_match(requirements: Iterable[Requirement], labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` satisfy every requirement (a missing key satisfies ``!=``/``notin``)."""
    for key, operator, values in requirements:
        value = labels.get(key)
        ok = {
            "=": value in values,
            "in": value in values,
            "!=": value not in values,
            "notin": value not in values,
            "exists": value is not None,
            "!": value is None,
        }[operator]
        if not ok:
            return False
    return True


def parse_field_selector(text: str, *, secret: bool = False) -> tuple[Requirement, ...]:
    """``metadata.name``, ``metadata.namespace`` (and ``type`` on secrets) with ``=``/``==``/
    ``!=``, as the real server supports them; any other field is a 400."""
    allowed = {"metadata.name", "metadata.namespace"} | ({"type"} if secret else set())
    out: list[Requirement] = []
    for term in _split_terms(text) if text.strip() else []:
        match = re.fullmatch(r"([A-Za-z.]+)\s*(==|!=|=)\s*(.*)", term)
        if match is None or match.group(1) not in allowed:
            message = f"field label not supported: {term.split('=')[0].rstrip('!')!r}"
            raise KubeError(400, "BadRequest", message)
        operator = "!=" if match.group(2) == "!=" else "="
        out.append((match.group(1), operator, frozenset({match.group(3)})))
    return tuple(out)


def object_fields(obj: JsonObject) -> dict[str, str]:
    """The selectable fields of ``obj`` (the field selector's view of it)."""
    meta = obj.get("metadata", {})
    fields = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
    }
    if isinstance(obj.get("type"), str):
        fields["type"] = obj["type"]
    return fields


@dataclass(frozen=True)
class Selector:
    """A label selector and a field selector, both parsed."""

    labels: tuple[Requirement, ...] = ()
    fields: tuple[Requirement, ...] = ()

    def matches(self, obj: JsonObject) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return labels_match(self.labels, labels) and labels_match(self.fields, object_fields(obj))


# -- patches --------------------------------------------------------------------------------


def merge_patch(target: object, patch: object) -> object:
    """RFC 7386 JSON merge patch of ``target`` by ``patch`` (returns a new value)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _merge_list(original: object, items: list[Any], order: list[Any]) -> list[Any]:
    """A merge-keyed list under a strategic merge patch, ordered by ``$setElementOrder``."""
    base = original if isinstance(original, list) else []
    if not order or not isinstance(order[0], dict):  # a set of primitives: the order is it
        return list(order)
    (merge_key,) = order[0]
    by_key = {item.get(merge_key): item for item in base if isinstance(item, dict)}
    patches = {item.get(merge_key): item for item in items if isinstance(item, dict)}
    merged = []
    for entry in order:
        value = entry[merge_key]
        if value in patches:
            merged.append(strategic_merge_patch(by_key.get(value), patches[value]))
        elif value in by_key:
            merged.append(copy.deepcopy(by_key[value]))
    return merged


def strategic_merge_patch(target: object, patch: object) -> object:
    """What the fake makes of a strategic merge patch: a merge patch whose lists listed in
    ``$setElementOrder/<field>`` merge element-wise by their merge key (the form client-side
    ``kubectl apply`` sends), ``$patch: replace``/``$retainKeys``/``$deleteFromPrimitiveList``
    honoured, other directives dropped; lists without an order are replaced. Not the full
    algorithm (it needs the schema's merge keys), enough for the patches kubectl computes."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    plain = {k: v for k, v in patch.items() if not k.startswith("$")}
    if patch.get("$patch") == "replace":
        return copy.deepcopy(plain)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    orders = {
        k.removeprefix("$setElementOrder/"): v
        for k, v in patch.items()
        if k.startswith("$setElementOrder/") and isinstance(v, list)
    }
    for key, value in plain.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and key in orders:
            result[key] = _merge_list(result.get(key), value, orders[key])
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    for key, order in orders.items():
        if key not in plain:
            result[key] = _merge_list(result.get(key), [], order)
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/") and isinstance(value, list):
            name = key.removeprefix("$deleteFromPrimitiveList/")
            result[name] = [v for v in result.get(name, []) if v not in value]
    if isinstance(patch.get("$retainKeys"), list):
        result = {k: v for k, v in result.items() if k in patch["$retainKeys"]}
    return result
