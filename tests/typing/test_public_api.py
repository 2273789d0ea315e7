"""Type-level checks over the public library API (SPEC §2.7), checked by ``mypy --strict``.

The functions also run under pytest so a broken annotation and a broken runtime both show.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import assert_type

import pytest
import trio

import a3s_gateway
from a3s_gateway import (
    Config,
    ConfigError,
    Gateway,
    GatewayState,
    HealthSnapshot,
    Problem,
    load_config_text,
    validate_config,
)
from a3s_gateway.config import interpolate, parse_duration
from tests.support.cli import FIXTURES

TEXT = 'entrypoints "web" {\n  address = ":0"\n}\n'


def test_loading_functions_are_typed() -> None:
    config = load_config_text(TEXT)
    assert_type(config, Config)
    assert_type(a3s_gateway.load_config(FIXTURES / "quickstart.hcl"), Config)
    problems = validate_config(FIXTURES / "quickstart.hcl", offline=True)
    assert_type(problems, tuple[Problem, ...])
    assert_type(config.to_json(), bytes)
    assert_type(parse_duration("1s"), float)
    assert_type(interpolate("${X}", {"X": "1"}), str)


def test_config_error_carries_problems() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text("nope = 1")
    assert_type(caught.value.problems, tuple[Problem, ...])
    assert caught.value.problems


async def test_gateway_methods_are_typed() -> None:
    gateway = Gateway(load_config_text(TEXT))
    async with trio.open_nursery() as nursery:
        await nursery.start(gateway.serve)
        assert_type(gateway.state(), GatewayState)
        assert_type(gateway.health(), HealthSnapshot)
        assert_type(gateway.config(), Config)
        assert_type(gateway.addresses(), Mapping[str, tuple[tuple[str, int], ...]])
        assert_type(await gateway.reload(gateway.config()), int)
        await gateway.shutdown()
