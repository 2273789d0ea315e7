"""The ``retry`` middleware in the running gateway (SPEC §8.12): an in-process ``Gateway`` in
front of real test origins, driven by curl. A retry really reaches another backend, a held
response never reaches the client, the body is replayed byte for byte, and the safety rules
(non-idempotent methods, the body bound, the attempt count, the budget) hold."""

from __future__ import annotations

import hashlib

import pytest
import trio

from tests.support.gateway import (
    config_text,
    curl,
    free_port,
    running_gateway,
    server_entry,
)
from tests.support.origin import Fixed, Origin, ResetBeforeResponse

pytestmark = pytest.mark.integration

#: Keeps every backend in rotation: these tests are about retry, not outlier ejection.
NO_PASSIVE = "  passive_health {\n    enabled = false\n  }\n  connect_attempts = 1"


@pytest.fixture
async def origin_a(nursery: trio.Nursery) -> Origin:
    server = Origin("a")
    await nursery.start(server.serve)
    return server


@pytest.fixture
async def origin_b(nursery: trio.Nursery) -> Origin:
    server = Origin("b")
    await nursery.start(server.serve)
    return server


def retry_config(servers: list[str], settings: str = "") -> str:
    definition = (
        'middlewares "retry" {\n  type = "retry"\n  retry_interval_ms = 0\n' + settings + "}\n"
    )
    text = config_text(servers, balancer=NO_PASSIVE, more=definition)
    return text.replace('service = "main"\n}', 'service = "main"\n  middlewares = ["retry"]\n}', 1)


def first_a(a: Origin, b: Origin | int) -> list[str]:
    """``a`` first: with weights 100:1 the smooth weighted round robin starts on ``a``."""
    return [server_entry(a, weight=100), server_entry(b, weight=1)]


async def test_a_reset_is_retried_on_the_other_backend(origin_a: Origin, origin_b: Origin) -> None:
    origin_a.on("/", ResetBeforeResponse())
    async with running_gateway(retry_config(first_a(origin_a, origin_b))) as gw:
        result = await curl(gw.url("/"))
    assert result.code == 0, result.stderr
    assert result.response.status == 200
    assert result.response.json()["origin"] == "b"
    assert len(origin_a.requests) == 1  # the first attempt reached a and was reset
    assert len(origin_b.requests) == 1


async def test_a_held_503_never_reaches_the_client(origin_a: Origin, origin_b: Origin) -> None:
    origin_a.on("/", Fixed(503, b"a says no", ((b"x-from", b"a"),)))
    async with running_gateway(retry_config(first_a(origin_a, origin_b))) as gw:
        result = await curl(gw.url("/"))
    response = result.response
    assert response.status == 200
    assert response.header(b"x-from") is None
    assert b"a says no" not in response.body
    assert response.json()["origin"] == "b"


async def test_status_not_in_retry_on_is_passed_at_once(origin_a: Origin, origin_b: Origin) -> None:
    origin_a.on("/", Fixed(500, b"a failed"))
    async with running_gateway(retry_config(first_a(origin_a, origin_b))) as gw:
        result = await curl(gw.url("/"))
    assert result.response.status == 500  # 500 is not a gateway error; 5xx is not listed
    assert result.response.body == b"a failed"
    assert not origin_b.requests


async def test_5xx_and_status_codes_conditions(origin_a: Origin, origin_b: Origin) -> None:
    origin_a.on("/five", Fixed(500, b"a failed"))
    origin_a.on("/teapot", Fixed(418, b"a teapot"))
    settings = '  retry_on = ["5xx", "status-codes"]\n  retry_status_codes = [418]\n'
    async with running_gateway(retry_config(first_a(origin_a, origin_b), settings)) as gw:
        five = await curl(gw.url("/five"))
        teapot = await curl(gw.url("/teapot"))
    assert five.response.json()["origin"] == "b"
    assert teapot.response.json()["origin"] == "b"


async def test_post_is_not_retried_after_a_reset(origin_a: Origin, origin_b: Origin) -> None:
    origin_a.on("/", ResetBeforeResponse())
    async with running_gateway(retry_config(first_a(origin_a, origin_b))) as gw:
        result = await curl(gw.url("/"), "--data-binary", "payload")
    assert result.response.status == 502
    assert len(origin_a.requests) == 1
    assert not origin_b.requests


async def test_post_is_retried_after_a_connect_failure(origin_b: Origin) -> None:
    dead = free_port()
    servers = [server_entry(dead, weight=100), server_entry(origin_b, weight=1)]
    async with running_gateway(retry_config(servers)) as gw:
        result = await curl(gw.url("/"), "--data-binary", "payload")
    assert result.response.status == 200
    assert result.response.json()["body_length"] == len(b"payload")


async def test_the_body_is_replayed_byte_for_byte(
    origin_a: Origin, origin_b: Origin, tmp_path: object
) -> None:
    origin_a.on("/", ResetBeforeResponse())
    body = bytes(range(256)) * 600  # 150 KiB: several reads
    settings = "  retry_non_idempotent = true\n"
    async with running_gateway(retry_config(first_a(origin_a, origin_b), settings)) as gw:
        result = await curl(gw.url("/"), "--data-binary", "@-", stdin=body)
    document = result.response.json()
    assert result.response.status == 200
    assert document["origin"] == "b"
    assert document["body_length"] == len(body)
    assert document["body_sha256"] == hashlib.sha256(body).hexdigest()


async def test_a_body_over_the_replay_bound_is_not_retried(
    origin_a: Origin, origin_b: Origin
) -> None:
    origin_a.on("/", ResetBeforeResponse())
    settings = "  retry_non_idempotent = true\n  retry_max_body_bytes = 1000\n"
    async with running_gateway(retry_config(first_a(origin_a, origin_b), settings)) as gw:
        result = await curl(gw.url("/"), "--data-binary", "@-", stdin=b"x" * 5000)
        retry = gw.gateway.runtime.middlewares["retry"] if gw.gateway.runtime else None
    assert result.response.status == 502
    assert not origin_b.requests
    assert retry is not None
    assert retry.skipped == {"body_too_large": 1}  # type: ignore[attr-defined]  # a RetryMiddleware


async def test_attempts_stop_after_max_retries(origin_a: Origin, origin_b: Origin) -> None:
    origin_a.on("/", Fixed(503, b"a busy"))
    origin_b.on("/", Fixed(503, b"b busy"))
    servers = [server_entry(origin_a), server_entry(origin_b)]
    async with running_gateway(retry_config(servers, "  max_retries = 2\n")) as gw:
        result = await curl(gw.url("/"))
    assert result.response.status == 503  # the last attempt's own response, relayed
    assert result.response.body in {b"a busy", b"b busy"}
    assert len(origin_a.requests) + len(origin_b.requests) == 3  # one try plus two retries


async def test_an_empty_budget_allows_no_retry(origin_a: Origin, origin_b: Origin) -> None:
    origin_a.on("/", Fixed(503, b"a busy"))
    settings = "  retry_budget_percent = 0\n  retry_budget_min = 0\n"
    async with running_gateway(retry_config(first_a(origin_a, origin_b), settings)) as gw:
        result = await curl(gw.url("/"))
        retry = gw.gateway.runtime.middlewares["retry"] if gw.gateway.runtime else None
    assert result.response.status == 503
    assert result.response.body == b"a busy"
    assert not origin_b.requests
    assert retry is not None
    assert retry.skipped == {"budget": 1}  # type: ignore[attr-defined]  # a RetryMiddleware
    assert retry.active_retries == 0  # type: ignore[attr-defined]  # a RetryMiddleware
    assert retry.active_requests == 0  # type: ignore[attr-defined]  # a RetryMiddleware


async def test_middlewares_after_retry_run_per_attempt(origin_a: Origin, origin_b: Origin) -> None:
    """A headers middleware listed after retry sets its field on every attempt's fresh copy
    of the request, and the retried request does not carry anything twice."""
    origin_a.on("/", Fixed(503, b"a busy"))
    more = (
        'middlewares "tag" {\n  type = "headers"\n'
        '  request_headers = { "x-tag" = "t" }\n}\n'
        'middlewares "retry" {\n  type = "retry"\n  retry_interval_ms = 0\n}\n'
    )
    text = config_text(first_a(origin_a, origin_b), balancer=NO_PASSIVE, more=more)
    text = text.replace(
        'service = "main"\n}', 'service = "main"\n  middlewares = ["retry", "tag"]\n}', 1
    )
    async with running_gateway(text) as gw:
        result = await curl(gw.url("/"))
    headers = result.response.json()["headers"]
    assert isinstance(headers, list)
    assert [value for name, value in headers if name == "x-tag"] == ["t"]
    assert origin_a.requests[0].values(b"x-tag") == [b"t"]
