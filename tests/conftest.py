"""Suite-wide setup.

- Helpers in tests/support get pytest's assertion rewriting, so a failing assertion inside a
  shared helper shows the compared values.
- Every async (trio) test runs under a time limit on trio's clock (DESIGN.md §3.6 item 6, as
  in trio-websocket): with ``autojump_clock`` a hang fails in virtual time at once instead of
  stalling the suite; with the real clock it bounds the test.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Final

import pytest
import trio

pytest.register_assert_rewrite("tests.support")

TEST_TIME_LIMIT: Final = 60.0


def _limited(
    test: Callable[..., Awaitable[None]], seconds: float = TEST_TIME_LIMIT
) -> Callable[..., Awaitable[None]]:
    @functools.wraps(test)
    async def limited(*args: object, **kwargs: object) -> None:
        with trio.fail_after(seconds):
            await test(*args, **kwargs)

    return limited


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.obj = _limited(item.obj)
