"""The in-process ``rate-limit`` middleware (SPEC §8.6), with explicit ``now`` values."""

from __future__ import annotations

import math

import msgspec
import pytest

from a3s_gateway.config.schema_middlewares import RateLimit
from a3s_gateway.middleware.contract import RequestState
from a3s_gateway.middleware.ratelimit import (
    MAX_DEFAULT_BURST,
    MAX_SECONDS,
    RATE_LIMITED,
    BucketTable,
    RateLimitMiddleware,
    default_burst,
    key_function,
)
from a3s_gateway.protocols.headers import Headers
from a3s_gateway.protocols.responses import GeneratedResponse


def make_state(
    now: float = 0.0,
    *,
    client_ip: str = "192.0.2.1",
    path: bytes = b"/",
    query: bytes = b"",
    headers: Headers | None = None,
    authority: bytes = b"example.com",
) -> RequestState:
    return RequestState(
        method=b"GET",
        path=path,
        query=query,
        headers=list(headers or []),
        authority=authority,
        client_ip=client_ip,
        peer_ip="203.0.113.9",
        tls=False,
        now=now,
    )


def limiter(
    rate: float = 1.0,
    burst: int | None = None,
    *,
    key: str = "client-ip",
    headers: bool = True,
    max_keys: int = 100000,
) -> RateLimitMiddleware:
    fields: dict[str, object] = {
        "type": "rate-limit",
        "rate": rate,
        "rate_limit_key": key,
        "rate_limit_headers": headers,
        "max_keys": max_keys,
    }
    if burst is not None:
        fields["burst"] = burst
    return RateLimitMiddleware.from_config("limit", msgspec.convert(fields, RateLimit))


def field(headers: Headers, name: bytes) -> bytes | None:
    found = [value for line_name, value in headers if line_name == name]
    assert len(found) <= 1, f"{name!r} sent {len(found)} times"
    return found[0] if found else None


def rate_fields(headers: Headers) -> tuple[bytes | None, bytes | None, bytes | None]:
    return (
        field(headers, b"ratelimit-limit"),
        field(headers, b"ratelimit-remaining"),
        field(headers, b"ratelimit-reset"),
    )


async def passes(middleware: RateLimitMiddleware, state: RequestState) -> bool:
    response = await middleware.request(state)
    if response is not None:
        assert response.head.status == 429
    return response is None


async def rejected(middleware: RateLimitMiddleware, state: RequestState) -> GeneratedResponse:
    response = await middleware.request(state)
    assert response is not None
    assert response.head.status == 429
    return response


# --------------------------------------------------------------------------- bucket arithmetic


def test_a_new_bucket_starts_full_and_each_request_costs_one() -> None:
    table = BucketTable(rate=1.0, burst=3, max_keys=10)
    decisions = [table.take(b"k", 100.0) for _ in range(4)]
    assert [decision.allowed for decision in decisions] == [True, True, True, False]
    assert [decision.tokens for decision in decisions] == [2.0, 1.0, 0.0, 0.0]
    assert [decision.remaining for decision in decisions] == [2, 1, 0, 0]


def test_refill_is_continuous_at_rate_per_second() -> None:
    table = BucketTable(rate=2.0, burst=4, max_keys=10)
    for _ in range(4):
        assert table.take(b"k", 0.0).allowed
    assert not table.take(b"k", 0.25).allowed  # 0.5 token
    decision = table.take(b"k", 0.5)  # 1.0 token
    assert decision.allowed
    assert decision.tokens == 0.0
    assert table.take(b"k", 1.25).tokens == 0.5  # 1.5 tokens, one taken


def test_refill_stops_at_burst() -> None:
    table = BucketTable(rate=10.0, burst=2, max_keys=10)
    table.take(b"k", 0.0)
    decision = table.take(b"k", 1000.0)
    assert decision.tokens == 1.0  # full (2), one taken


def test_a_request_needs_a_whole_token() -> None:
    table = BucketTable(rate=1.0, burst=1, max_keys=10)
    assert table.take(b"k", 0.0).allowed
    assert not table.take(b"k", 0.999).allowed
    assert table.take(b"k", 1.0).allowed


def test_a_rejected_request_takes_nothing() -> None:
    table = BucketTable(rate=1.0, burst=1, max_keys=10)
    table.take(b"k", 0.0)
    assert table.take(b"k", 0.5).tokens == 0.5
    assert table.take(b"k", 0.5).tokens == 0.5
    assert table.take(b"k", 1.0).allowed


def test_an_earlier_now_refills_nothing_and_keeps_the_clock() -> None:
    table = BucketTable(rate=1.0, burst=2, max_keys=10)
    table.take(b"k", 10.0)
    table.take(b"k", 10.0)
    assert not table.take(b"k", 5.0).allowed  # out of order: no refill, no credit
    assert not table.take(b"k", 10.5).allowed  # 0.5 token since 10.0, not since 5.0
    assert table.take(b"k", 11.0).allowed


def test_keys_have_separate_buckets() -> None:
    table = BucketTable(rate=1.0, burst=1, max_keys=10)
    assert table.take(b"a", 0.0).allowed
    assert not table.take(b"a", 0.0).allowed
    assert table.take(b"b", 0.0).allowed
    assert len(table) == 2


def test_least_recently_used_is_evicted_and_starts_full() -> None:
    table = BucketTable(rate=1.0, burst=1, max_keys=2)
    table.take(b"a", 0.0)
    table.take(b"b", 0.0)
    table.take(b"a", 0.0)  # a is now the most recently used (rejected requests count too)
    table.take(b"c", 0.0)  # evicts b
    assert len(table) == 2
    assert b"b" not in table
    assert b"a" in table
    assert b"c" in table
    assert table.take(b"b", 0.0).allowed  # evicted: starts full again (evicts a)
    assert b"a" not in table
    assert table.take(b"a", 0.0).allowed


def test_retry_after_is_the_wait_for_one_token_rounded_up_at_least_one() -> None:
    table = BucketTable(rate=0.25, burst=1, max_keys=10)
    table.take(b"k", 0.0)
    assert table.take(b"k", 0.0).retry_after == 4
    assert table.take(b"k", 1.0).retry_after == 3  # 0.25 token: 0.75 / 0.25
    assert table.take(b"k", 1.5).retry_after == 3  # 0.375 token: 2.5 s → 3
    fast = BucketTable(rate=100.0, burst=1, max_keys=10)
    fast.take(b"k", 0.0)
    assert fast.take(b"k", 0.0).retry_after == 1  # 0.01 s, but at least 1


def test_reset_is_the_time_until_full_rounded_up() -> None:
    table = BucketTable(rate=2.0, burst=5, max_keys=10)
    assert table.take(b"k", 0.0).reset == 1  # 4 tokens: 0.5 s → 1
    for _ in range(4):
        table.take(b"k", 0.0)
    assert table.take(b"k", 0.0).reset == 3  # empty: 2.5 s → 3
    assert table.take(b"k", 100.0).reset == 1


def test_peek_computes_without_charging_creating_or_reordering() -> None:
    table = BucketTable(rate=1.0, burst=2, max_keys=2)
    table.take(b"a", 0.0)
    table.take(b"a", 0.0)
    table.take(b"b", 0.0)
    seen = table.peek(b"a", 1.5)
    assert seen.tokens == 1.5
    assert seen.remaining == 1
    assert seen.allowed
    assert table.tokens(b"a") == 0.0  # nothing stored
    missing = table.peek(b"z", 0.0)
    assert (missing.tokens, missing.remaining, missing.reset) == (2.0, 2, 0)
    assert b"z" not in table
    table.take(b"c", 0.0)  # a is still the least recently used
    assert b"a" not in table


def test_extreme_rates_give_bounded_seconds() -> None:
    slow = BucketTable(rate=5e-324, burst=1, max_keys=1)
    slow.take(b"k", 0.0)
    decision = slow.take(b"k", 1.0)
    assert decision.retry_after == MAX_SECONDS
    assert decision.reset == MAX_SECONDS
    fast = BucketTable(rate=math.inf, burst=3, max_keys=1)
    for _ in range(3):
        fast.take(b"k", 0.0)
    assert not fast.take(b"k", 0.0).allowed  # no time has passed
    refilled = fast.take(b"k", 1e-9)
    assert refilled.allowed
    assert refilled.tokens == 2.0
    assert refilled.reset == 0


@pytest.mark.parametrize(
    ("rate", "burst", "max_keys"),
    [(0.0, 1, 1), (-1.0, 1, 1), (math.nan, 1, 1), (1.0, 0, 1), (1.0, 1, 0)],
)
def test_bad_limits_are_refused(rate: float, burst: int, max_keys: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        BucketTable(rate=rate, burst=burst, max_keys=max_keys)


@pytest.mark.parametrize(
    ("rate", "expected"),
    [(0.001, 1), (0.5, 1), (1.0, 1), (1.5, 2), (10.0, 10), (10.2, 11), (math.inf, 2**53)],
)
def test_default_burst_is_rate_rounded_up(rate: float, expected: int) -> None:
    assert default_burst(rate) == expected
    assert default_burst(rate) <= MAX_DEFAULT_BURST


async def test_burst_defaults_to_the_rate_rounded_up() -> None:
    middleware = limiter(rate=2.5)
    assert middleware.table.burst == 3
    results = [await passes(middleware, make_state(0.0)) for _ in range(4)]
    assert results == [True, True, True, False]


# --------------------------------------------------------------------------- keys


def test_client_ip_key() -> None:
    assert key_function("client-ip")(make_state(client_ip="2001:db8::7")) == b"2001:db8::7"


def test_global_key_is_one_bucket() -> None:
    key = key_function("global")
    assert key(make_state(client_ip="192.0.2.1")) == key(make_state(client_ip="192.0.2.2")) == b""


@pytest.mark.parametrize(
    ("authority", "expected"),
    [
        (b"Example.COM", b"example.com"),
        (b"example.com:8080", b"example.com"),
        (b"example.com.", b"example.com"),
        (b"[2001:DB8::1]:443", b"2001:db8::1"),
        (b"", b""),
    ],
)
def test_host_key_is_the_canonical_host(authority: bytes, expected: bytes) -> None:
    assert key_function("host")(make_state(authority=authority)) == expected


def test_path_key_is_the_raw_path_without_query() -> None:
    key = key_function("path")
    assert key(make_state(path=b"/api/a%2Fb", query=b"x=1")) == b"/api/a%2Fb"


def test_header_key_is_case_insensitive_and_joins_lines() -> None:
    key = key_function("header:X-Api-Key")
    assert key(make_state(headers=[(b"x-api-key", b"k1")])) == b"k1"
    assert key(make_state(headers=[(b"x-api-key", b"a"), (b"x-api-key", b"b")])) == b"a, b"
    assert key(make_state(headers=[(b"x-other", b"k1")])) == b""
    assert key(make_state(headers=[(b"x-api-key", b"")])) == b""


def test_cookie_key_finds_the_first_exact_name_across_lines() -> None:
    key = key_function("cookie:session")
    lines: Headers = [
        (b"cookie", b"theme=dark; Session=upper"),
        (b"cookie", b"xsession=no;  session = s1 ; session=s2"),
    ]
    assert key(make_state(headers=lines)) == b"s1"
    assert key(make_state(headers=[(b"cookie", b"session")])) == b""  # no '=': no name
    assert key(make_state(headers=[(b"cookie", b"session=")])) == b""
    assert key(make_state(headers=[(b"cookie", b"a=b; c=d")])) == b""
    assert key(make_state()) == b""


def test_query_key_is_the_first_decoded_value() -> None:
    key = key_function("query:user")
    assert key(make_state(query=b"user=alice&user=bob")) == b"alice"
    assert key(make_state(query=b"a=1&us%65r=b%20c+d")) == b"b c d"
    assert key(make_state(query=b"user")) == b""  # present but empty
    assert key(make_state(query=b"other=1")) == b""
    assert key(make_state(query=b"")) == b""
    assert key(make_state(query=b"user=%zz")) == b""  # invalid escape: pair dropped
    assert key_function("query:café")(make_state(query=b"caf%C3%A9=%FF")) == b"\xff"


@pytest.mark.parametrize(
    "expression",
    ["", "ip", "header:", "cookie", "query:", "Global", "header:X Y", "header:é", "path\n"],
)
def test_unknown_key_expressions_are_refused(expression: str) -> None:
    with pytest.raises(ValueError, match="not a rate_limit_key"):
        key_function(expression)


async def test_requests_are_counted_per_configured_key() -> None:
    middleware = limiter(rate=1.0, burst=1, key="header:X-Tenant")
    tenant_a = [(b"x-tenant", b"a")]
    assert await passes(middleware, make_state(0.0, headers=tenant_a, client_ip="192.0.2.1"))
    assert not await passes(middleware, make_state(0.0, headers=tenant_a, client_ip="192.0.2.2"))
    assert await passes(middleware, make_state(0.0, headers=[(b"x-tenant", b"b")]))
    assert await passes(middleware, make_state(0.0))  # missing: key ""
    assert not await passes(middleware, make_state(0.0, headers=[(b"x-tenant", b"")]))
    assert middleware.key_count == 3


# --------------------------------------------------------------------------- the middleware


async def test_the_429_has_the_json_error_retry_after_and_fields() -> None:
    middleware = limiter(rate=0.5, burst=2)
    assert await passes(middleware, make_state(0.0))
    assert await passes(middleware, make_state(0.0))
    response = await rejected(middleware, make_state(1.0))  # 0.5 token
    assert msgspec.json.decode(response.body) == {"error": RATE_LIMITED, "status": 429}
    headers = response.head.headers
    assert field(headers, b"content-type") == b"application/json"
    assert field(headers, b"retry-after") == b"1"  # (1 − 0.5) ÷ 0.5
    assert rate_fields(headers) == (b"2", b"0", b"3")  # 1.5 tokens missing ÷ 0.5 → 3 s


async def test_the_429_without_rate_limit_headers_has_only_retry_after() -> None:
    middleware = limiter(rate=1.0, burst=1, headers=False)
    await passes(middleware, make_state(0.0))
    response = await rejected(middleware, make_state(0.2))
    assert field(response.head.headers, b"retry-after") == b"1"
    assert rate_fields(response.head.headers) == (None, None, None)


async def test_the_429_retry_after_rounds_up() -> None:
    middleware = limiter(rate=0.1, burst=1)
    await passes(middleware, make_state(0.0))
    response = await rejected(middleware, make_state(2.5))  # 0.25 token: 7.5 s
    assert field(response.head.headers, b"retry-after") == b"8"


async def test_a_passed_request_gets_the_fields_of_its_bucket() -> None:
    middleware = limiter(rate=1.0, burst=5)
    state = make_state(10.0)
    assert await passes(middleware, state)
    headers: Headers = [(b"content-type", b"text/plain")]
    middleware.response(state, 200, headers)
    assert rate_fields(headers) == (b"5", b"4", b"1")
    assert headers[0] == (b"content-type", b"text/plain")


async def test_gateway_errors_get_the_fields_too() -> None:
    middleware = limiter(rate=1.0, burst=2)
    state = make_state(0.0)
    await passes(middleware, state)
    headers: Headers = []
    middleware.response(state, 502, headers)
    assert rate_fields(headers) == (b"2", b"1", b"1")


async def test_no_fields_when_rate_limit_headers_is_off() -> None:
    middleware = limiter(headers=False)
    state = make_state(0.0)
    await passes(middleware, state)
    headers: Headers = [(b"ratelimit-remaining", b"7")]
    middleware.response(state, 200, headers)
    assert headers == [(b"ratelimit-remaining", b"7")]


async def test_the_response_side_reads_the_bucket_without_charging() -> None:
    middleware = limiter(rate=1.0, burst=2)
    state = make_state(0.0)
    await passes(middleware, state)
    for _ in range(3):
        middleware.response(state, 200, [])
    assert await passes(middleware, make_state(0.0))  # the second token is still there


async def test_the_response_side_sees_tokens_taken_since_the_request() -> None:
    middleware = limiter(rate=1.0, burst=3)
    first = make_state(0.0)
    await passes(middleware, first)
    await passes(middleware, make_state(0.0))
    headers: Headers = []
    middleware.response(first, 200, headers)
    assert rate_fields(headers) == (b"3", b"1", b"2")


async def test_a_key_without_a_bucket_reads_full_on_the_response_side() -> None:
    middleware = limiter(rate=1.0, burst=4, key="path")
    state = make_state(0.0, path=b"/api/users")
    await passes(middleware, state)
    state.path = b"/users"  # a later strip-prefix changed the key source
    headers: Headers = []
    middleware.response(state, 200, headers)
    assert rate_fields(headers) == (b"4", b"4", b"0")
    assert middleware.key_count == 1


async def test_upstream_fields_are_replaced_unless_lower() -> None:
    middleware = limiter(rate=1.0, burst=10)
    state = make_state(0.0)
    await passes(middleware, state)  # remaining 9
    higher: Headers = [
        (b"ratelimit-limit", b"100"),
        (b"ratelimit-remaining", b"50"),
        (b"ratelimit-reset", b"60"),
        (b"x-other", b"1"),
    ]
    middleware.response(state, 200, higher)
    assert rate_fields(higher) == (b"10", b"9", b"1")
    assert field(higher, b"x-other") == b"1"
    lower: Headers = [
        (b"ratelimit-limit", b"100"),
        (b"ratelimit-remaining", b"3"),
        (b"ratelimit-reset", b"60"),
    ]
    middleware.response(state, 200, lower)
    assert rate_fields(lower) == (b"100", b"3", b"60")
    garbage: Headers = [(b"ratelimit-remaining", b"-1"), (b"ratelimit-reset", b"9" * 40)]
    middleware.response(state, 200, garbage)
    assert rate_fields(garbage) == (b"10", b"9", b"1")


async def test_an_inner_429_keeps_its_fields_through_an_outer_limit() -> None:
    outer = limiter(rate=100.0, burst=100, key="global")
    inner = limiter(rate=1.0, burst=1)
    state = make_state(0.0)
    assert await passes(outer, state)
    assert await passes(inner, state)
    second = make_state(0.0)
    assert await passes(outer, second)
    response = await rejected(inner, second)
    headers = list(response.head.headers)
    outer.response(second, 429, headers)
    assert rate_fields(headers) == (b"1", b"0", b"1")
    assert field(headers, b"retry-after") == b"1"


async def test_out_of_order_request_times_do_not_refill() -> None:
    middleware = limiter(rate=1.0, burst=1)
    assert await passes(middleware, make_state(5.0))
    assert not await passes(middleware, make_state(4.0))
    assert not await passes(middleware, make_state(5.5))
    assert await passes(middleware, make_state(6.0))


async def test_max_keys_bounds_the_table_and_an_evicted_client_starts_full() -> None:
    middleware = limiter(rate=1.0, burst=1, max_keys=2)
    for ip in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        assert await passes(middleware, make_state(0.0, client_ip=ip))
    assert middleware.key_count == 2
    assert await passes(middleware, make_state(0.0, client_ip="192.0.2.1"))  # was evicted
    assert not await passes(middleware, make_state(0.0, client_ip="192.0.2.3"))


def test_from_config_uses_every_field() -> None:
    block = RateLimit(
        rate=3.0, burst=7, rate_limit_key="global", rate_limit_headers=False, max_keys=9
    )
    middleware = RateLimitMiddleware.from_config("api", block)
    assert middleware.name == "api"
    assert (middleware.table.rate, middleware.table.burst, middleware.table.max_keys) == (
        3.0,
        7,
        9,
    )
    assert repr(middleware) == "<RateLimitMiddleware 'api'>"


def test_the_defaults_match_the_config_defaults() -> None:
    middleware = RateLimitMiddleware("d", rate=4.0)
    assert (middleware.table.burst, middleware.table.max_keys) == (4, 100000)
