"""Walking msgspec Struct annotations alongside plain data (for ``convert.py``).

Ring 0: pure introspection of ``typing`` annotations: which union member a value is meant for
(by middleware ``type`` tag, then container kind), the type of a field, map value or list item,
and which map entry fails to convert. Must not: mutate the data it inspects.
"""

from __future__ import annotations

import types
from typing import Annotated, Union, get_args, get_origin

import msgspec

from a3s_gateway.config.values import dec_hook


def strip_annotated(tp: object) -> object:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def resolve_member(tp: object, value: object) -> object:
    """Pick the union member that ``value`` is meant for (tag, then container kind)."""
    tp = strip_annotated(tp)
    if get_origin(tp) not in (Union, types.UnionType):
        return tp
    members = [strip_annotated(a) for a in get_args(tp) if a is not type(None)]
    if isinstance(value, dict):
        tag = value.get("type")
        for member in members:
            struct = (
                member if isinstance(member, type) and issubclass(member, msgspec.Struct) else None
            )
            if struct is not None and struct.__struct_config__.tag == tag:
                return member
    for member in members:
        if isinstance(value, dict) and (is_struct(member) or get_origin(member) is dict):
            return member
        if isinstance(value, list) and get_origin(member) in (tuple, list):
            return member
    return members[0] if len(members) == 1 else tp


def is_struct(tp: object) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def struct_type(tp: object, value: object) -> type[msgspec.Struct] | None:
    resolved = resolve_member(tp, value)
    if isinstance(resolved, type) and issubclass(resolved, msgspec.Struct):
        return resolved
    return None


def field_names(struct: type[msgspec.Struct] | None) -> tuple[str, ...]:
    if struct is None:
        return ()
    return tuple(f.encode_name for f in msgspec.structs.fields(struct))


def field_type(tp: object, node: dict[str, object], name: str) -> object:
    struct = struct_type(tp, node)
    if struct is not None:
        for info in msgspec.structs.fields(struct):
            if info.encode_name == name:
                return info.type
        return object
    return value_type(tp, node)


def value_type(tp: object, node: object) -> object:
    resolved = resolve_member(tp, node)
    if get_origin(resolved) is dict:
        return get_args(resolved)[1]
    return object


def item_type(tp: object, item: object) -> object:
    resolved = strip_annotated(tp)
    if get_origin(resolved) in (tuple, list):
        args = get_args(resolved)
        return resolve_member(args[0], item) if args else object
    return object


def find_failing_key(node: dict[str, object], value_tp: object) -> str | None:
    """The first entry of ``node`` that does not convert to ``value_tp`` on its own."""
    if value_tp is object:
        return None
    for key, value in node.items():
        try:
            msgspec.convert(value, value_tp, dec_hook=dec_hook)
        except msgspec.ValidationError:
            return key
    return None
