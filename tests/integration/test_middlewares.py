"""Middlewares in the running gateway (issue #7, SPEC §8): an in-process ``Gateway`` in front
of a real test origin, driven by curl. Covers the pipeline (a short-circuit answer keeps the
CORS fields of a middleware listed before it; gateway errors pass the whole chain) and the
types that are implemented so far."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import pytest
import trio

from tests.support.gateway import (
    config_text,
    curl,
    free_port,
    router_block,
    running_gateway,
    server_entry,
    service_block,
)
from tests.support.origin import Fixed, Origin

pytestmark = pytest.mark.integration

ORIGIN = "https://app.example"


@pytest.fixture
async def origin(nursery: trio.Nursery) -> Origin:
    server = Origin("a")
    await nursery.start(server.serve)
    return server


def with_chain(origin: Origin, chain: list[str], definitions: str, more: str = "") -> str:
    listed = ", ".join(f'"{name}"' for name in chain)
    text = config_text([server_entry(origin)], more=definitions + more)
    return text.replace(
        'service = "main"\n}', f'service = "main"\n  middlewares = [{listed}]\n}}', 1
    )


CORS = f"""
middlewares "cors" {{
  type            = "cors"
  allowed_origins = ["{ORIGIN}"]
}}
"""
KEY = """
middlewares "key" {
  type = "api-key"
  keys = ["k-1234567890abcdef"]
}
"""


async def test_a_rejected_request_keeps_the_cors_fields_of_an_earlier_middleware(
    origin: Origin,
) -> None:
    config = with_chain(origin, ["cors", "key"], CORS + KEY)
    async with running_gateway(config) as gw:
        denied = await curl(gw.url("/x"), "-H", f"Origin: {ORIGIN}")
        allowed = await curl(
            gw.url("/x"), "-H", f"Origin: {ORIGIN}", "-H", "X-API-Key: k-1234567890abcdef"
        )
        preflight = await curl(
            gw.url("/x"),
            "-X",
            "OPTIONS",
            "-H",
            f"Origin: {ORIGIN}",
            "-H",
            "Access-Control-Request-Method: GET",
        )
    assert denied.response.status == 401
    assert denied.response.header(b"access-control-allow-origin") == ORIGIN.encode()
    assert denied.response.header(b"www-authenticate") == b'ApiKey header="X-API-Key"'
    assert allowed.response.status == 200
    assert allowed.response.header(b"access-control-allow-origin") == ORIGIN.encode()
    assert preflight.response.status == 204
    assert [r.path for r in origin.requests] == [b"/x"]  # only the allowed request


async def test_strip_prefix_and_headers_rewrite_what_the_backend_sees(origin: Origin) -> None:
    definitions = """
middlewares "strip" {
  type     = "strip-prefix"
  prefixes = ["/api"]
}
middlewares "hdrs" {
  type             = "headers"
  request_headers  = { "X-Env" = "prod", "X-Drop" = "" }
  response_headers = { "X-Frame-Options" = "DENY" }
}
"""
    async with running_gateway(with_chain(origin, ["strip", "hdrs"], definitions)) as gw:
        result = await curl(gw.url("/api/users?page=2"), "-H", "X-Drop: secret")
    assert result.response.status == 200
    assert result.response.header(b"x-frame-options") == b"DENY"
    [seen] = origin.requests
    assert seen.target == b"/users?page=2"
    assert seen.values(b"x-forwarded-prefix") == [b"/api"]
    assert seen.values(b"x-env") == [b"prod"]
    assert seen.values(b"x-drop") == []


@pytest.mark.parametrize(("network", "status"), [("10.0.0.0/8", 403), ("127.0.0.0/8", 200)])
async def test_ip_allow(origin: Origin, network: str, status: int) -> None:
    definitions = (
        f'middlewares "local" {{\n  type = "ip-allow"\n  allowed_ips = ["{network}"]\n}}\n'
    )
    async with running_gateway(with_chain(origin, ["local"], definitions)) as gw:
        result = await curl(gw.url("/x"))
    assert result.response.status == status
    if status == 403:
        assert result.response.json() == {"error": "forbidden", "status": 403}
        assert origin.requests == []


async def test_basic_auth(origin: Origin) -> None:
    definitions = """
middlewares "auth" {
  type          = "basic-auth"
  username      = "ada"
  password      = "correct horse"
  realm         = "ops"
  remove_header = true
}
"""
    async with running_gateway(with_chain(origin, ["auth"], definitions)) as gw:
        good = await curl(gw.url("/x"), "-u", "ada:correct horse")
        bad = await curl(gw.url("/x"), "-u", "ada:wrong")
        none = await curl(gw.url("/x"))
    assert good.response.status == 200
    assert [r.values(b"authorization") for r in origin.requests] == [[]]  # removed
    assert bad.response.status == none.response.status == 401
    assert bad.response.header(b"www-authenticate") == b'Basic realm="ops", charset="UTF-8"'


async def test_a_gateway_error_passes_the_whole_chain(origin: Origin) -> None:
    refused = router_block("down", "PathPrefix(`/down`)", "down") + service_block(
        "down", [server_entry(free_port())], balancer="    connect_attempts = 1"
    )
    config = with_chain(origin, ["cors"], CORS, more=refused).replace(
        'service = "down"\n}', 'service = "down"\n  middlewares = ["cors"]\n}'
    )
    async with running_gateway(config) as gw:
        result = await curl(gw.url("/down"), "-H", f"Origin: {ORIGIN}")
    assert result.response.status == 502
    assert result.response.header(b"access-control-allow-origin") == ORIGIN.encode()


async def test_rate_limit_answers_429_with_retry_after_and_keeps_cors(origin: Origin) -> None:
    limit = """
middlewares "limit" {
  type  = "rate-limit"
  rate  = 0.1
  burst = 2
}
"""
    async with running_gateway(with_chain(origin, ["cors", "limit"], CORS + limit)) as gw:
        results = [await curl(gw.url("/x"), "-H", f"Origin: {ORIGIN}") for _ in range(3)]
    assert [r.response.status for r in results] == [200, 200, 429]
    assert [r.response.header(b"ratelimit-remaining") for r in results] == [b"1", b"0", b"0"]
    rejected = results[2].response
    assert rejected.json() == {"error": "rate limit exceeded", "status": 429}
    assert rejected.header(b"retry-after") == b"10"
    assert rejected.header(b"access-control-allow-origin") == ORIGIN.encode()
    assert len(origin.requests) == 2


LIMIT = """
middlewares "small" {
  type           = "body-limit"
  max_body_bytes = 4096
}
"""


async def test_body_limit_on_content_length_and_on_a_chunked_upload(
    origin: Origin, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"z" * 200_000)
    async with running_gateway(with_chain(origin, ["cors", "small"], CORS + LIMIT)) as gw:
        fits = await curl(gw.url("/ok"), "--data-binary", "x" * 4096)
        declared = await curl(gw.url("/declared"), "--data-binary", f"@{big}")
        chunked = await curl(
            gw.url("/chunked"),
            "-H",
            "Transfer-Encoding: chunked",
            "-H",
            f"Origin: {ORIGIN}",
            "--data-binary",
            f"@{big}",
        )
    assert fits.response.status == 200
    for result in (declared, chunked):
        assert result.response.status == 413, result.stderr
        assert result.response.json() == {"error": "request body too large", "max_bytes": 4096}
        assert result.response.header(b"connection") == b"close"
    # The streamed 413 still passed the response side of "cors" listed before.
    assert chunked.response.header(b"access-control-allow-origin") == ORIGIN.encode()
    # The declared one never reached the backend; the chunked one never arrived whole.
    assert [r.path for r in origin.completed] == [b"/ok"]
    assert b"/declared" not in [r.path for r in origin.requests]


SECRET = "0123456789abcdef0123456789abcdef"


def hs256(claims: dict[str, object]) -> str:
    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims).encode())
    signature = hmac.new(SECRET.encode(), header + b"." + payload, hashlib.sha256).digest()
    return (header + b"." + payload + b"." + b64(signature)).decode()


async def test_jwt_admits_a_valid_token_and_forwards_only_its_own_subject(origin: Origin) -> None:
    definitions = f'middlewares "auth" {{\n  type = "jwt"\n  value = "{SECRET}"\n}}\n'
    valid = hs256({"sub": "ada", "exp": int(time.time()) + 300})
    expired = hs256({"sub": "ada", "exp": int(time.time()) - 300})
    async with running_gateway(with_chain(origin, ["auth"], definitions)) as gw:
        good = await curl(
            gw.url("/x"), "-H", f"Authorization: Bearer {valid}", "-H", "X-JWT-Subject: admin"
        )
        old = await curl(gw.url("/x"), "-H", f"Authorization: Bearer {expired}")
        none = await curl(gw.url("/x"))
    assert good.response.status == 200
    [seen] = origin.requests
    assert seen.values(b"x-jwt-subject") == [b"ada"]  # the client's copy was dropped
    assert (old.response.status, none.response.status) == (401, 401)
    assert old.response.json()["detail"] == "expired"
    assert (none.response.header(b"www-authenticate") or b"").startswith(b"Bearer")


async def test_the_circuit_breaker_opens_after_consecutive_failures(origin: Origin) -> None:
    origin.on("/x", Fixed(500, b"boom"))
    definitions = """
middlewares "breaker" {
  type              = "circuit-breaker"
  failure_threshold = 2
  cooldown_secs     = 60
}
"""
    config = with_chain(origin, ["breaker"], definitions)
    async with running_gateway(config) as gw:
        results = [await curl(gw.url("/x")) for _ in range(4)]
    assert [r.response.status for r in results] == [500, 500, 503, 503]
    rejected = results[2].response
    assert rejected.json()["error"] == "service unavailable (circuit breaker open)"
    assert int(rejected.header(b"retry-after") or b"0") >= 59
    assert len(origin.requests) == 2  # the open breaker answered the rest itself
