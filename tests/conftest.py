"""Suite-wide setup.

- Helpers in tests/support get pytest's assertion rewriting, so a failing assertion inside a
  shared helper shows the compared values.
- Every async (trio) test runs under a time limit on trio's clock (DESIGN.md §3.6 item 6, as
  in trio-websocket): with ``autojump_clock`` a hang fails in virtual time at once instead of
  stalling the suite; with the real clock it bounds the test. An async Hypothesis test
  (``@given`` on an ``async def``) gets the limit per example, around its inner test. A test
  marked ``time_limit(seconds)`` gets that limit instead (a real-process test whose steps are
  each bounded, and together take longer on a loaded machine).
- Logging does not leak between tests: the ``a3s_gateway`` logger's handlers, level and
  ``propagate`` flag are put back after every test, whatever it (or the CLI it ran in-process,
  or a helper that installed the application log) did to them.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterator
from typing import Final

import pytest
import trio

from a3s_gateway.observability.applog import LoggerState

pytest.register_assert_rewrite("tests.support")

TEST_TIME_LIMIT: Final = 60.0


def _limited(
    test: Callable[..., Awaitable[None]], seconds: float = TEST_TIME_LIMIT
) -> Callable[..., Awaitable[None]]:
    @functools.wraps(test)
    async def limited(*args: object, **kwargs: object) -> None:
        with trio.fail_after(seconds):
            await test(*args, **kwargs)

    limited.time_limited = True  # type: ignore[attr-defined] # a marker against double wrapping
    return limited


def _seconds(item: pytest.Function) -> float:
    """The test's limit: ``@pytest.mark.time_limit(seconds)`` (a real-process test whose own
    steps are bounded longer), else ``TEST_TIME_LIMIT``."""
    marker = item.get_closest_marker("time_limit")
    return TEST_TIME_LIMIT if marker is None else float(marker.args[0])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        if inspect.iscoroutinefunction(item.obj):
            item.obj = _limited(item.obj, _seconds(item))
            continue
        # @given wraps an async test in a synchronous function; pytest-trio runs the inner
        # test (``.hypothesis.inner_test``) once per example, so the limit goes around that.
        hypothesis = getattr(item.obj, "hypothesis", None)
        if hypothesis is None:
            continue
        inner = getattr(hypothesis, "inner_test", None)
        if inspect.iscoroutinefunction(inner) and not getattr(inner, "time_limited", False):
            # (shared by the test's parametrisations)
            hypothesis.inner_test = _limited(inner, _seconds(item))


@pytest.fixture(autouse=True)
def _app_logger_restored() -> Iterator[None]:
    """Put the ``a3s_gateway`` logger back as it was before the test (``applog.install``,
    which ``cli.main`` calls for ``run`` and ``demo``, replaces its settings)."""
    before = LoggerState.now()
    try:
        yield
    finally:
        before.restore()
