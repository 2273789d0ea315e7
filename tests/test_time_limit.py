"""The suite-wide virtual time limit (tests/conftest.py) fails a hung trio test."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tests.conftest import TEST_TIME_LIMIT, _limited


async def test_a_hang_fails_in_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    async def hangs() -> None:
        await trio.sleep_forever()

    start = trio.current_time()
    with pytest.raises(trio.TooSlowError):
        await _limited(hangs, 5.0)()
    assert trio.current_time() - start == pytest.approx(5.0)
    assert TEST_TIME_LIMIT > 5.0


async def test_async_tests_are_wrapped(request: pytest.FixtureRequest) -> None:
    assert isinstance(request.node, pytest.Function)
    assert getattr(request.node.obj, "__wrapped__", None) is not None
