"""The schema's own guarantees: frozen values, equality that agrees with hashing."""

from __future__ import annotations

from typing import Annotated, get_args, get_origin

import msgspec
import pytest

from a3s_gateway.config import (
    schema,
    schema_entrypoints,
    schema_middlewares,
    schema_routers,
    schema_services,
)
from a3s_gateway.config.block import Block
from a3s_gateway.config.schema import Config
from a3s_gateway.config.schema_services import LoadBalancer, Mirror
from a3s_gateway.config.values import Duration, DurationOrZero


def test_equal_values_hash_alike_across_int_float_and_duration_spellings() -> None:
    assert Mirror(service="x", percentage=50) == Mirror(service="x", percentage=50.0)
    assert hash(Mirror(service="x", percentage=50)) == hash(Mirror(service="x", percentage=50.0))
    one = LoadBalancer(connect_timeout=Duration("60s"), stream_idle_timeout=DurationOrZero("0s"))
    two = LoadBalancer(connect_timeout=Duration("1m"), stream_idle_timeout=DurationOrZero("0ms"))
    assert one == two
    assert hash(one) == hash(two)


def test_blocks_are_frozen() -> None:
    config = Config()
    with pytest.raises(AttributeError):
        config.shutdown_timeout_secs = 5  # type: ignore[misc]  # the point: frozen


def _all_blocks() -> list[type[msgspec.Struct]]:
    found: list[type[msgspec.Struct]] = []
    for module in (schema, schema_entrypoints, schema_middlewares, schema_routers, schema_services):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Block) and value not in found:
                found.append(value)
    return found


def test_float_field_defaults_are_floats() -> None:
    # A default written as an int compares equal to the converted float but is a different
    # value on the wire; every float field's default must be a float.
    checked = 0
    for block in _all_blocks():
        for info in msgspec.structs.fields(block):
            base = info.type
            while get_origin(base) is Annotated:
                base = get_args(base)[0]
            if base is float and info.default is not msgspec.NODEFAULT:
                assert isinstance(info.default, float), f"{block.__name__}.{info.name}"
                checked += 1
    assert checked >= 8
