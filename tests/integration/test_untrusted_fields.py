"""Fields a client could use to get around the gateway's rules, through the real CLI with raw
sockets: one authority per request, and no request trailers.


With an absolute-form target (``GET http://app.example/x``) the target's authority is the
request's host and the ``Host`` field is replaced by it (RFC 9112 §3.2.2). Routing, the
middlewares, ``X-Forwarded-Host`` and the upstream ``Host`` must all read that one value:
before, a router with middlewares forwarded the client's ``Host`` while routing by the target,
so ``Host: admin.example`` reached the admin backend's virtual host through the app router
without the admin router's basic-auth ever running.

Request trailers are never passed on (as NGINX does): RFC 9110 §6.5.1 forbids framing, routing,
authentication and control fields in trailers, and a trailer reached the backend untouched by
the header-side cleaning (hop-by-hop removal, ``X-Forwarded-*``, identity fields).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import signal
import time
from typing import TYPE_CHECKING

import pytest
import trio

from tests.support.cli import start_gateway
from tests.support.gateway import RawClient, free_port
from tests.support.origin import Origin

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.integration

SECRET = "a-jwt-secret-that-is-long-enough-0123456789"

CONFIG = """
entrypoints "web" {{
  address = "127.0.0.1:{port}"
}}
routers "admin" {{
  rule        = "Host(`admin.example`)"
  service     = "backend"
  middlewares = ["auth"]
}}
routers "app" {{
  rule        = "Host(`app.example`)"
  service     = "backend"
  middlewares = ["limit"]
}}
routers "plain" {{
  rule    = "Host(`plain.example`)"
  service = "backend"
}}
routers "identity" {{
  rule        = "Host(`jwt.example`)"
  service     = "backend"
  middlewares = ["token"]
}}
services "backend" {{
  load_balancer {{
    servers = [{{ url = "http://127.0.0.1:{origin}" }}]
  }}
}}
middlewares "auth" {{
  type     = "basic-auth"
  username = "ops"
  password = "a-long-enough-password-123"
}}
middlewares "token" {{
  type           = "jwt"
  value          = "{secret}"
  subject_header = "X-User"
}}
middlewares "limit" {{
  type  = "rate-limit"
  rate  = 1000
  burst = 1000
}}
observability {{
  access_log_enabled = false
}}
"""


@pytest.fixture
async def gateway_port(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[tuple[int, Origin]]:
    origin = Origin("authority")
    await nursery.start(origin.serve)
    port = free_port()
    config = tmp_path / "gateway.hcl"
    config.write_text(CONFIG.format(port=port, origin=origin.port, secret=SECRET))
    gateway = await start_gateway(str(config))
    try:
        with trio.fail_after(30):
            await gateway.wait_for_line("gateway running")
        yield port, origin
    finally:
        with trio.move_on_after(10):
            gateway.process.send_signal(signal.SIGTERM)
            await gateway.process.wait()
        gateway.process.kill()


async def _get(port: int, target: bytes, host: bytes) -> int:
    client = await RawClient.connect(port)
    try:
        await client.send(b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
        response = await client.response()
    finally:
        await client.aclose()
    assert response is not None
    return response.status


async def test_one_authority_for_routing_middlewares_and_the_backend(
    gateway_port: tuple[int, Origin],
) -> None:
    """One gateway process for all the cases (starting one costs seconds)."""
    port, origin = gateway_port
    # The backend sees the authority routed by, with and without middlewares on the router.
    for router_host in (b"app.example", b"plain.example"):
        origin.requests.clear()
        assert await _get(port, b"http://" + router_host + b"/admin", b"admin.example") == 200
        [request] = origin.requests
        assert request.values(b"host") == [router_host]
        assert request.header(b"x-forwarded-host") == router_host
        assert request.target == b"/admin"
    # Routed to admin.example by the target whatever Host says: basic-auth answers.
    origin.requests.clear()
    assert await _get(port, b"http://admin.example/secret", b"app.example") == 401
    assert await _get(port, b"http://ADMIN.example:80/secret", b"plain.example") == 401
    assert origin.requests == []
    # Origin-form requests still route by Host.
    assert await _get(port, b"/x", b"admin.example") == 401
    assert await _get(port, b"/x", b"app.example") == 200
    [request] = origin.requests
    assert request.header(b"host") == b"app.example"


#: One trailer of each class a client could smuggle past the header-side rules.
FORBIDDEN_TRAILERS = (
    (b"Host", b"admin.example"),
    (b"Content-Length", b"1000"),
    (b"Transfer-Encoding", b"chunked"),
    (b"X-Forwarded-For", b"10.9.8.7"),
    (b"Authorization", b"Bearer forged"),
    (b"X-User", b"root"),
    (b"Connection", b"close"),
    (b"X-Innocent", b"also-dropped"),
)


def _token(subject: str) -> bytes:
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    claims = json.dumps({"sub": subject, "exp": int(time.time()) + 600}).encode()
    payload = base64.urlsafe_b64encode(claims).rstrip(b"=")
    signature = hmac.new(SECRET.encode(), header + b"." + payload, hashlib.sha256).digest()
    return header + b"." + payload + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")


async def test_request_trailers_never_reach_the_backend(gateway_port: tuple[int, Origin]) -> None:
    port, origin = gateway_port
    trailers = b"".join(name + b": " + value + b"\r\n" for name, value in FORBIDDEN_TRAILERS)
    for host in (b"plain.example", b"jwt.example"):
        origin.requests.clear()
        request = (
            b"POST /upload HTTP/1.1\r\nHost: " + host + b"\r\n"
            b"Authorization: Bearer " + _token("alice") + b"\r\n"
            b"Transfer-Encoding: chunked\r\nTrailer: X-User\r\n\r\n"
            b"5\r\nhello\r\n0\r\n" + trailers + b"\r\n"
        )
        client = await RawClient.connect(port)
        try:
            await client.send(request)
            response = await client.response(b"POST")
        finally:
            await client.aclose()
        assert response is not None
        assert response.status == 200
        [seen] = origin.requests
        assert seen.complete
        assert seen.body_length == 5
        assert seen.trailers == ()
        assert seen.values(b"host") == [host]
        if host == b"jwt.example":
            assert seen.values(b"x-user") == [b"alice"]  # from the verified token only
