"""The retry policy (SPEC §8.12): which outcomes are retried, for which methods and requests,
the budget, the counters and the config mapping. The attempts themselves are tested end to
end in tests/integration/test_retry.py."""

from __future__ import annotations

import pytest

from a3s_gateway.config.schema_middlewares import Retry
from a3s_gateway.middleware.contract import RequestState
from a3s_gateway.middleware.retry import RetryMiddleware, failure_kind


def test_failure_kinds() -> None:
    assert failure_kind(502, connect=True, before_head=True) == "connect-failure"
    assert failure_kind(504, connect=False, before_head=True) == "timeout"
    assert failure_kind(502, connect=False, before_head=True) == "reset"
    assert failure_kind(503, connect=False, before_head=False) == "status"


@pytest.mark.parametrize(
    ("retry_on", "kind", "status", "expected"),
    [
        (("connect-failure",), "connect-failure", 502, "connect-failure"),
        (("reset",), "reset", 502, "reset"),
        (("timeout",), "timeout", 504, "timeout"),
        (("timeout",), "reset", 502, None),
        (("gateway-error",), "status", 503, "gateway-error"),
        (("gateway-error",), "reset", 502, "gateway-error"),  # a dispatch 502 is one too
        (("gateway-error",), "status", 500, None),
        (("5xx",), "status", 500, "5xx"),
        (("5xx",), "status", 499, None),
        (("status-codes",), "status", 429, "status-codes"),
        (("status-codes",), "status", 430, None),
        ((), "status", 503, None),
    ],
)
def test_reason(retry_on: tuple[str, ...], kind: str, status: int, expected: str | None) -> None:
    policy = RetryMiddleware("r", retry_on=retry_on, status_codes=(429,))
    assert policy.reason(kind, status) == expected


@pytest.mark.parametrize("method", [b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"])
def test_idempotent_methods_may_repeat(method: bytes) -> None:
    policy = RetryMiddleware("r")
    assert policy.may_repeat("reset", method=method, stream=False)


@pytest.mark.parametrize("method", [b"POST", b"PATCH", b"CONNECT", b"PURGE"])
def test_other_methods_repeat_only_after_connect_failure(method: bytes) -> None:
    policy = RetryMiddleware("r")
    assert not policy.may_repeat("reset", method=method, stream=False)
    assert not policy.may_repeat("gateway-error", method=method, stream=False)
    assert policy.may_repeat("connect-failure", method=method, stream=False)
    assert RetryMiddleware("r", non_idempotent=True).may_repeat(
        "reset", method=method, stream=False
    )


def test_streams_repeat_only_after_connect_failure() -> None:
    policy = RetryMiddleware("r", non_idempotent=True)
    assert not policy.may_repeat("reset", method=b"GET", stream=True)
    assert policy.may_repeat("connect-failure", method=b"GET", stream=True)


def test_budget_minimum_and_percent() -> None:
    policy = RetryMiddleware("r", budget_percent=50, budget_min=1)
    policy.active_requests = 4  # 50 % of 4 = 2 retries at once
    assert policy.begin_retry("svc", "reset")
    assert policy.begin_retry("svc", "reset")
    assert not policy.begin_retry("svc", "reset")
    policy.end_retry()
    assert policy.begin_retry("svc", "gateway-error")
    assert policy.retries == {("svc", "reset"): 2, ("svc", "gateway-error"): 1}
    assert policy.skipped == {"budget": 1}


async def test_request_side_counts_active_requests() -> None:
    policy = RetryMiddleware("r")
    state = RequestState(
        method=b"GET",
        path=b"/",
        query=b"",
        headers=[],
        authority=b"x",
        client_ip="1.2.3.4",
        peer_ip="1.2.3.4",
        tls=False,
    )
    assert await policy.request(state) is None
    assert policy.active_requests == 1
    policy.completed(state, 200)
    assert policy.active_requests == 0


def test_state_copy_is_independent() -> None:
    state = RequestState(
        method=b"GET",
        path=b"/a",
        query=b"q",
        headers=[(b"x", b"1")],
        authority=b"host",
        client_ip="1.2.3.4",
        peer_ip="5.6.7.8",
        tls=True,
        now=3.0,
        service="svc",
    )
    state.body_limit = 10
    twin = state.copy()
    twin.headers.append((b"y", b"2"))
    twin.path = b"/b"
    assert state.headers == [(b"x", b"1")]
    assert state.path == b"/a"
    assert (twin.authority, twin.client_ip, twin.tls, twin.now, twin.service) == (
        b"host",
        "1.2.3.4",
        True,
        3.0,
        "svc",
    )
    assert twin.body_limit == 10


def test_from_config() -> None:
    block = Retry(
        max_retries=5,
        retry_interval_ms=50,
        retry_max_interval_ms=400,
        retry_on=("5xx",),
        retry_status_codes=(418,),
        retry_non_idempotent=True,
        retry_max_body_bytes=10,
        retry_budget_percent=7,
        retry_budget_min=2,
    )
    policy = RetryMiddleware.from_config("r", block)
    assert policy.max_retries == 5
    assert policy.interval == 0.05
    assert policy.max_interval == 0.4
    assert policy.kinds == {"5xx"}
    assert policy.status_codes == {418}
    assert policy.non_idempotent
    assert policy.max_body_bytes == 10
    assert (policy.budget_percent, policy.budget_min) == (7, 2)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        RetryMiddleware("r", interval_ms=-1)
    with pytest.raises(ValueError, match="budget"):
        RetryMiddleware("r", budget_percent=101)
