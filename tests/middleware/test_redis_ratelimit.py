"""The ``rate-limit-redis`` middleware (SPEC §8.7, with §8.6's bucket semantics and headers):
unit tests over a fake ``RedisClient``, then the real script on a real redis-server."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterator

import msgspec
import pytest
import trio

from a3s_gateway.config.load import load_config_text
from a3s_gateway.config.schema_middlewares import RateLimitRedis
from a3s_gateway.config.urls import RedisUrl
from a3s_gateway.config.values import dec_hook
from a3s_gateway.errors import StartError
from a3s_gateway.middleware import compile_chains
from a3s_gateway.middleware.contract import RequestState
from a3s_gateway.middleware.outbound import (
    MiddlewareDeps,
    OutboundFailed,
    OutboundTimeout,
    RedisReplyError,
)
from a3s_gateway.middleware.redis_ratelimit import (
    MIRROR_KEYS,
    SCRIPT,
    SCRIPT_SHA1,
    WARNING_TOPIC,
    RedisRateLimitMiddleware,
    bucket_key,
)
from a3s_gateway.protocols.headers import Headers
from a3s_gateway.protocols.responses import GeneratedResponse
from a3s_gateway.server.outbound_clients import Outbound
from a3s_gateway.upstream.redis import RedisClients
from tests.support.redis_server import RedisServer, running_redis

URL = "redis://127.0.0.1:6379/0"


def make_state(
    now: float = 0.0, *, client_ip: str = "192.0.2.1", headers: Headers | None = None
) -> RequestState:
    return RequestState(
        method=b"GET",
        path=b"/",
        query=b"",
        headers=list(headers or []),
        authority=b"example.com",
        client_ip=client_ip,
        peer_ip="203.0.113.9",
        tls=False,
        now=now,
    )


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


def response_fields(middleware: RedisRateLimitMiddleware, state: RequestState) -> Headers:
    headers: Headers = [(b"content-type", b"text/plain")]
    middleware.response(state, 200, headers)
    return headers


class FakeRedis:
    """A ``RedisClient`` that answers from a script of replies (an exception is raised)."""

    def __init__(self, *replies: object) -> None:
        self.replies = list(replies)
        self.calls: list[tuple[tuple[bytes | str | int, ...], float]] = []

    async def execute(self, *args: bytes | str | int, within: float) -> object:
        self.calls.append((args, within))
        await trio.lowlevel.checkpoint()
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


class FakeConnector:
    def __init__(self, client: FakeRedis) -> None:
        self.client_for: FakeRedis = client
        self.urls: list[RedisUrl] = []

    def client(self, url: RedisUrl) -> FakeRedis:
        self.urls.append(url)
        return self.client_for


def block(**fields: object) -> RateLimitRedis:
    data = {"type": "rate-limit-redis", "redis_url": URL, **fields}
    return msgspec.convert(data, RateLimitRedis, dec_hook=dec_hook)


def limiter(client: FakeRedis, **fields: object) -> RedisRateLimitMiddleware:
    deps = MiddlewareDeps(redis=FakeConnector(client))
    return RedisRateLimitMiddleware.from_config("limit", block(**fields), deps)


# --------------------------------------------------------------------------- keys


def test_short_printable_keys_are_used_as_they_are() -> None:
    prefix = b"a3s:ratelimit:limit:"
    assert bucket_key(prefix, b"192.0.2.1") == prefix + b"192.0.2.1"
    assert bucket_key(prefix, b"") == prefix
    assert bucket_key(prefix, b"x" * 64) == prefix + b"x" * 64
    assert bucket_key(prefix, b"a b~") == prefix + b"a b~"


@pytest.mark.parametrize(
    "key",
    [
        b"x" * 65,  # over 64 bytes
        b"tab\there",  # a control character
        b"caf\xc3\xa9",  # not ASCII
        b"\x7f",
        hashlib.sha256(b"victim").hexdigest().encode(),  # would alias another key's hash
    ],
)
def test_long_unprintable_or_digest_like_keys_become_their_sha256(key: bytes) -> None:
    assert bucket_key(b"p:", key) == b"p:" + hashlib.sha256(key).hexdigest().encode()


async def test_the_key_is_prefix_name_and_request_key() -> None:
    client = FakeRedis([1, 4000, 0])
    middleware = limiter(client, rate=20, burst=5, redis_key_prefix="rl/")
    assert await middleware.request(make_state(client_ip="2001:db8::1")) is None
    ((args, within),) = client.calls
    assert args == (b"EVALSHA", SCRIPT_SHA1, 1, b"rl/limit:2001:db8::1", "20.0", 5)
    assert within == 0.1  # redis_timeout's default


# --------------------------------------------------------------------------- construction


def test_without_a_redis_client_the_middleware_cannot_be_built() -> None:
    with pytest.raises(StartError, match='rate-limit-redis "limit": no Redis client'):
        RedisRateLimitMiddleware.from_config("limit", block(rate=1), MiddlewareDeps())


def test_the_client_is_the_one_for_the_configured_url() -> None:
    connector = FakeConnector(FakeRedis())
    RedisRateLimitMiddleware.from_config(
        "limit",
        block(rate=1, redis_url="redis://:pw@10.0.0.7:6380/2"),
        MiddlewareDeps(redis=connector),
    )
    assert connector.urls == [RedisUrl("redis://:pw@10.0.0.7:6380/2")]


CHAIN = """
entrypoints "web" { address = "127.0.0.1:0" }
routers "r" {
  rule        = "PathPrefix(`/`)"
  service     = "svc"
  middlewares = ["shared"]
}
middlewares "shared" {
  type      = "rate-limit-redis"
  rate      = 5
  redis_url = "redis://127.0.0.1:6379"
}
services "svc" {
  load_balancer { servers = [{ url = "http://127.0.0.1:9" }] }
}
"""


def test_compile_chains_builds_it_with_the_deps_and_refuses_it_without() -> None:
    config = load_config_text(CHAIN)
    deps = MiddlewareDeps(redis=FakeConnector(FakeRedis()))
    instances, chains = compile_chains(config, deps=deps)
    assert isinstance(instances["shared"], RedisRateLimitMiddleware)
    assert chains["r"] == (instances["shared"],)
    with pytest.raises(StartError, match="no Redis client"):
        compile_chains(config)


# --------------------------------------------------------------------------- decisions


async def test_an_allowed_request_passes_and_a_rejected_one_gets_429() -> None:
    client = FakeRedis([1, 0, 0], [0, 250, 1500])
    middleware = limiter(client, rate=0.5, burst=3)
    assert await middleware.request(make_state()) is None
    response = await middleware.request(make_state())
    assert response is not None
    assert response.head.status == 429
    assert json.loads(response.body) == {"error": "rate limit exceeded", "status": 429}
    assert field(response.head.headers, b"retry-after") == b"2"  # ⌈1.5 s⌉
    # Remaining ⌊0.25⌋; Reset ⌈(3 − 0.25) ÷ 0.5⌉ = ⌈5.5⌉.
    assert rate_fields(response.head.headers) == (b"3", b"0", b"6")


async def test_retry_after_is_at_least_one_second() -> None:
    middleware = limiter(FakeRedis([0, 999, 1]), rate=1000, burst=1)
    response = await middleware.request(make_state())
    assert response is not None
    assert field(response.head.headers, b"retry-after") == b"1"


async def test_without_rate_limit_headers_a_429_has_only_retry_after() -> None:
    middleware = limiter(FakeRedis([0, 0, 1000]), rate=1, rate_limit_headers=False)
    response = await middleware.request(make_state())
    assert response is not None
    assert field(response.head.headers, b"retry-after") == b"1"
    assert rate_fields(response.head.headers) == (None, None, None)
    assert response_fields(middleware, make_state()) == [(b"content-type", b"text/plain")]


async def test_noscript_falls_back_to_eval_with_the_script() -> None:
    client = FakeRedis(RedisReplyError("NOSCRIPT No matching script."), [1, 2000, 0])
    middleware = limiter(client, rate=2, burst=3)
    assert await middleware.request(make_state()) is None
    assert [args[:2] for args, _ in client.calls] == [
        (b"EVALSHA", SCRIPT_SHA1),
        (b"EVAL", SCRIPT),
    ]
    assert client.calls[0][0][2:] == client.calls[1][0][2:]
    assert middleware.errors == 0


# --------------------------------------------------------------------------- failures


FAILURES = [
    OutboundTimeout("redis 127.0.0.1:6379: no reply within 0.1s"),
    OutboundFailed("redis 127.0.0.1:6379: connect failed (refused)"),
    RedisReplyError("ERR Error running script"),
    [1, 2],
    b"OK",
    [1, -1, 0],
    [b"1", 0, 0],
    None,
]


@pytest.mark.parametrize("failure", FAILURES)
async def test_fail_open_lets_the_request_through_and_counts_it(failure: object) -> None:
    middleware = limiter(FakeRedis(failure), rate=1)
    assert await middleware.request(make_state()) is None
    assert middleware.errors == 1


@pytest.mark.parametrize("failure", FAILURES)
async def test_fail_closed_answers_503_with_retry_after_1(failure: object) -> None:
    middleware = limiter(FakeRedis(failure), rate=1, fail_open=False)
    response = await middleware.request(make_state())
    assert response is not None
    assert response.head.status == 503
    assert json.loads(response.body) == {"error": "rate limiter unavailable", "status": 503}
    assert field(response.head.headers, b"retry-after") == b"1"
    assert middleware.errors == 1


class Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def logged() -> Iterator[Collected]:
    """What reaches the ``a3s_gateway.ratelimit`` logger, whatever the process' logging setup
    (no propagation needed)."""
    logger = logging.getLogger("a3s_gateway.ratelimit")
    handler = Collected()
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


async def test_failures_are_reported_at_most_every_10_seconds() -> None:
    reported: list[tuple[str, str]] = []
    failure = OutboundFailed("redis 127.0.0.1:6379: connect failed (refused)")
    deps = MiddlewareDeps(
        redis=FakeConnector(FakeRedis(*[failure] * 5)),
        warn=lambda topic, message: reported.append((topic, message)),
    )
    middleware = RedisRateLimitMiddleware.from_config("limit", block(rate=1), deps)
    for now in (100.0, 105.0, 109.9, 110.0, 125.0):
        await middleware.request(make_state(now))
    assert middleware.errors == 5
    assert len(reported) == 3  # at 100, 110 and 125
    assert {topic for topic, _ in reported} == {WARNING_TOPIC}
    assert reported[0][1] == (
        'rate-limit-redis "limit": Redis failed (OutboundFailed: redis 127.0.0.1:6379: connect'
        " failed (refused)); letting requests through (1 failures so far)"
    )
    assert reported[2][1].endswith("(5 failures so far)")


async def test_the_gateways_deps_log_the_warning_on_the_ratelimit_logger(
    logged: Collected,
) -> None:
    """The shell's sink (``Outbound.deps().warn``) writes the line users see, as it is (a ``%``
    in an error text is not a format directive)."""
    failure = OutboundFailed("redis 127.0.0.1:6379: 100% refused")
    deps = dataclasses.replace(Outbound().deps(), redis=FakeConnector(FakeRedis(failure)))
    middleware = RedisRateLimitMiddleware.from_config("limit", block(rate=1), deps)
    await middleware.request(make_state(100.0))
    assert logged.messages == [
        'rate-limit-redis "limit": Redis failed (OutboundFailed: redis 127.0.0.1:6379: 100%'
        " refused); letting requests through (1 failures so far)"
    ]


async def test_without_a_sink_the_warnings_go_nowhere(logged: Collected) -> None:
    middleware = limiter(FakeRedis(OutboundFailed("down")), rate=1, fail_open=False)
    response = await middleware.request(make_state(100.0))
    assert response is not None
    assert response.head.status == 503
    assert logged.messages == []


# --------------------------------------------------------------------------- response side


async def test_the_response_side_reports_the_last_answer_refilled_to_now() -> None:
    middleware = limiter(FakeRedis([1, 500, 0]), rate=2, burst=4)
    assert await middleware.request(make_state(10.0)) is None
    assert rate_fields(response_fields(middleware, make_state(10.0))) == (b"4", b"0", b"2")
    # 0.5 token + 1 s × 2/s = 2.5 tokens; ⌈(4 − 2.5) ÷ 2⌉ = 1.
    assert rate_fields(response_fields(middleware, make_state(11.0))) == (b"4", b"2", b"1")
    # Another key has no answer yet: a full bucket, which is what Redis would start it with.
    other = make_state(11.0, client_ip="192.0.2.2")
    assert rate_fields(response_fields(middleware, other)) == (b"4", b"4", b"0")


async def test_an_answer_to_an_older_request_does_not_replace_a_newer_one() -> None:
    middleware = limiter(FakeRedis([1, 1000, 0], [1, 3000, 0]), rate=1, burst=4)
    await middleware.request(make_state(20.0))
    await middleware.request(make_state(19.5))  # started earlier, answered later
    assert rate_fields(response_fields(middleware, make_state(20.0))) == (b"4", b"1", b"3")


async def test_a_lower_remaining_already_on_the_response_is_kept() -> None:
    middleware = limiter(FakeRedis([1, 3000, 0]), rate=1, burst=4)
    await middleware.request(make_state())
    headers: Headers = [(b"ratelimit-limit", b"10"), (b"ratelimit-remaining", b"1")]
    middleware.response(make_state(), 200, headers)
    assert rate_fields(headers) == (b"10", b"1", None)


async def test_the_mirror_is_bounded() -> None:
    replies = [[1, 0, 0] for _ in range(MIRROR_KEYS + 1)]
    middleware = limiter(FakeRedis(*replies), rate=1, burst=2)
    for n in range(MIRROR_KEYS + 1):
        await middleware.request(make_state(client_ip=f"10.0.{n // 256}.{n % 256}"))
    # The first key was evicted: it reads as full again; the last is still known.
    assert field(response_fields(middleware, make_state()), b"ratelimit-remaining") == b"2"
    first = make_state(client_ip="10.0.0.0")
    last_ip = f"10.0.{MIRROR_KEYS // 256}.{MIRROR_KEYS % 256}"
    assert field(response_fields(middleware, first), b"ratelimit-remaining") == b"2"
    last = make_state(client_ip=last_ip)
    assert field(response_fields(middleware, last), b"ratelimit-remaining") == b"0"


# --------------------------------------------------------------------------- real redis-server


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


def real_limiter(
    redis: RedisServer, clients: RedisClients, name: str = "limit", **fields: object
) -> RedisRateLimitMiddleware:
    config = block(redis_url=redis.url, redis_timeout="2s", **fields)
    return RedisRateLimitMiddleware.from_config(name, config, MiddlewareDeps(redis=clients))


async def rejected(middleware: RedisRateLimitMiddleware, state: RequestState) -> GeneratedResponse:
    response = await middleware.request(state)
    assert response is not None
    assert response.head.status == 429
    return response


def command_calls(redis: RedisServer, name: str) -> int:
    info = redis.command("INFO", "commandstats")
    assert isinstance(info, bytes)
    for line in info.decode().splitlines():
        if line.startswith(f"cmdstat_{name}:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


@pytest.mark.integration
async def test_real_burst_then_429_with_headers(redis: RedisServer) -> None:
    clients = RedisClients()
    middleware = real_limiter(redis, clients, rate=1, burst=3)
    remaining = []
    for _ in range(3):
        assert await middleware.request(make_state()) is None
        remaining.append(field(response_fields(middleware, make_state()), b"ratelimit-remaining"))
    assert remaining == [b"2", b"1", b"0"]
    response = await rejected(middleware, make_state())
    assert field(response.head.headers, b"retry-after") == b"1"
    assert rate_fields(response.head.headers) == (b"3", b"0", b"3")
    assert middleware.errors == 0
    await clients.aclose()


@pytest.mark.integration
async def test_real_retry_after_follows_the_rate(redis: RedisServer) -> None:
    clients = RedisClients()
    middleware = real_limiter(redis, clients, rate=0.1, burst=1)
    assert await middleware.request(make_state()) is None
    response = await rejected(middleware, make_state())
    assert field(response.head.headers, b"retry-after") == b"10"
    assert json.loads(response.body) == {"error": "rate limit exceeded", "status": 429}
    await clients.aclose()


@pytest.mark.integration
async def test_real_refill_over_time_on_the_redis_clock(redis: RedisServer) -> None:
    clients = RedisClients()
    middleware = real_limiter(redis, clients, rate=5, burst=2)
    assert await middleware.request(make_state()) is None
    assert await middleware.request(make_state()) is None
    await rejected(middleware, make_state())
    saved = redis.command("HGETALL", "a3s:ratelimit:limit:192.0.2.1")
    assert isinstance(saved, list)
    assert saved[0::2] == [b"tokens", b"ts"]
    ttl = redis.command("PTTL", "a3s:ratelimit:limit:192.0.2.1")
    assert isinstance(ttl, int)
    assert 10_000 < ttl <= 10_000 + 400  # ≤ 0.4 s to refill 2 tokens at 5/s, plus 10 s
    await trio.sleep(0.22)  # the behaviour under test: 1.1 tokens come back in 0.22 s
    assert await middleware.request(make_state()) is None
    await rejected(middleware, make_state())
    await clients.aclose()


@pytest.mark.integration
async def test_two_instances_on_separate_clients_share_one_limit(redis: RedisServer) -> None:
    one, two = RedisClients(), RedisClients()  # as two workers would
    first = real_limiter(redis, one, rate=0.01, burst=4)
    second = real_limiter(redis, two, rate=0.01, burst=4)
    admitted = 0
    for _ in range(5):
        for middleware in (first, second):
            if await middleware.request(make_state()) is None:
                admitted += 1
    assert admitted == 4
    await one.aclose()
    await two.aclose()


@pytest.mark.integration
@pytest.mark.parametrize("fail_open", [True, False])
async def test_real_server_stopped(redis: RedisServer, fail_open: bool) -> None:
    clients = RedisClients()
    middleware = real_limiter(redis, clients, rate=1, burst=1, fail_open=fail_open)
    assert await middleware.request(make_state()) is None
    await rejected(middleware, make_state())
    redis.stop()
    response = await middleware.request(make_state())
    assert middleware.errors == 1
    if fail_open:
        assert response is None
    else:
        assert response is not None
        assert response.head.status == 503
        assert field(response.head.headers, b"retry-after") == b"1"
    redis.start()  # empty again (no persistence): the bucket starts full
    assert await middleware.request(make_state()) is None
    await clients.aclose()


@pytest.mark.integration
async def test_real_noscript_fallback_after_script_flush(redis: RedisServer) -> None:
    clients = RedisClients()
    middleware = real_limiter(redis, clients, rate=0.01, burst=5)
    for _ in range(3):
        assert await middleware.request(make_state()) is None
    # The first EVALSHA found no script; EVAL ran it and cached it for the next two.
    assert (command_calls(redis, "evalsha"), command_calls(redis, "eval")) == (3, 1)
    assert redis.command("SCRIPT", "FLUSH") == b"OK"
    assert redis.command("SCRIPT", "EXISTS", SCRIPT_SHA1) == [0]
    assert await middleware.request(make_state()) is None
    assert (command_calls(redis, "evalsha"), command_calls(redis, "eval")) == (4, 2)
    assert redis.command("SCRIPT", "EXISTS", SCRIPT_SHA1) == [1]
    headers = response_fields(middleware, make_state())
    assert field(headers, b"ratelimit-remaining") == b"1"  # the bucket went on: 5 − 4
    assert middleware.errors == 0
    await clients.aclose()


@pytest.mark.integration
async def test_real_long_and_binary_keys_are_hashed(redis: RedisServer) -> None:
    clients = RedisClients()
    middleware = real_limiter(redis, clients, rate=1, rate_limit_key="header:X-Key")
    values = [b"alice", b"k" * 100, b"bin\x00\xff"]
    for value in values:
        assert await middleware.request(make_state(headers=[(b"x-key", value)])) is None
    keys = redis.command("KEYS", "a3s:ratelimit:limit:*")
    assert isinstance(keys, list)
    expected = {
        b"a3s:ratelimit:limit:alice",
        *(b"a3s:ratelimit:limit:" + hashlib.sha256(v).hexdigest().encode() for v in values[1:]),
    }
    assert set(keys) == expected
    await clients.aclose()
