"""``jwt`` with ``jwks_url`` in the running gateway (SPEC §8.4 "JWKS"): an in-process ``Gateway``
in front of the test origin, a real JWKS HTTP server (``ScriptedServer``) serving RSA and EC
public keys, tokens signed here with ``cryptography`` private keys, and real curl.

Covers: RS256 and ES256 tokens pass with the served keys (and the subject reaches the origin);
an HS256 token naming a JWKS ``kid`` and a token signed by a foreign key are refused; a rotated
key (new ``kid``) is picked up by the refresh its first token asks for, and the removed key is
refused from then on; a JWKS server that is down at start leaves the gateway serving (401
``unknown key`` for tokens, other routes untouched, a warning logged) until it is back.

Time: the unknown-``kid`` refresh is allowed once a minute, so each test runs its own
``trio.run`` on a ``MockClock`` that follows the real clock (``rate=1``: sockets, curl and
timeouts behave as usual) and is moved a minute ahead with ``jump`` where the test needs it; the
test's time limit is moved along with it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from a3s_gateway.middleware.jwt import JwtMiddleware
from tests.conftest import TEST_TIME_LIMIT
from tests.middleware.test_jwks import document, ec_jwk, rsa_jwk
from tests.support.gateway import (
    GatewayHandle,
    HttpResponse,
    config_text,
    curl,
    free_port,
    router_block,
    running_gateway,
    server_entry,
)
from tests.support.origin import Origin
from tests.support.scripted import Reply, ScriptedServer, Seen

pytestmark = pytest.mark.integration

JwkKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
#: Seconds the clock is moved so that a new unknown-kid refresh is allowed (SPEC: 1/min).
A_MINUTE_LATER: Final = 61.0


class VirtualTime:
    """The test's clock and time limit; ``advance`` jumps both."""

    def __init__(self) -> None:
        self.clock = trio.testing.MockClock(rate=1.0)
        self.limit = trio.CancelScope()

    def advance(self, seconds: float) -> None:
        self.limit.deadline += seconds
        self.clock.jump(seconds)


def run_trio(main: Callable[[VirtualTime], Awaitable[None]]) -> None:
    virtual = VirtualTime()

    async def limited() -> None:
        virtual.limit.deadline = trio.current_time() + TEST_TIME_LIMIT
        with virtual.limit:
            await main(virtual)
        if virtual.limit.cancelled_caught:
            raise AssertionError(f"the test did not finish within {TEST_TIME_LIMIT} s")

    trio.run(limited, clock=virtual.clock)


class Jwks:
    """What the JWKS server serves: the public keys of ``keys`` by kid, on ``/jwks``."""

    def __init__(self, keys: dict[str, JwkKey]) -> None:
        self.keys = keys

    def __call__(self, seen: Seen) -> Reply:
        if seen.target != b"/jwks":
            return Reply(404)
        members = [
            rsa_jwk(key, kid=kid, use="sig")
            if isinstance(key, rsa.RSAPrivateKey)
            else ec_jwk(key, kid=kid)
            for kid, key in self.keys.items()
        ]
        return Reply(200, ((b"content-type", b"application/jwk-set+json"),), document(*members))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(key: JwkKey, kid: str, subject: str = "ada") -> str:
    """An RS256 (RSA key) or ES256 (P-256 key) token for ``subject``, valid for an hour."""
    algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
    head = b64(json.dumps({"alg": algorithm, "kid": kid, "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": subject, "exp": int(time.time()) + 3600}).encode())
    message = f"{head}.{body}".encode()
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    else:
        r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{head}.{body}.{b64(signature)}"


def hs256(secret: bytes, kid: str) -> str:
    head = b64(json.dumps({"alg": "HS256", "kid": kid}).encode())
    body = b64(json.dumps({"sub": "mallory", "exp": int(time.time()) + 3600}).encode())
    signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


def gateway_config(origin: Origin, jwks_url: str) -> str:
    """Router ``main`` (everything) behind ``jwt`` with the JWKS; ``/open`` without it."""
    definitions = (
        'middlewares "auth" {\n'
        '  type       = "jwt"\n'
        '  algorithms = ["RS256", "ES256"]\n'
        f'  jwks_url   = "{jwks_url}"\n'
        "}\n"
    )
    more = definitions + router_block("open", "PathPrefix(`/open`)", "main")
    text = config_text([server_entry(origin)], more=more)
    return text.replace('service = "main"\n}', 'service = "main"\n  middlewares = ["auth"]\n}', 1)


async def get(gw: GatewayHandle, bearer: str | None = None, path: str = "/x") -> HttpResponse:
    extra = ["-H", f"Authorization: Bearer {bearer}"] if bearer is not None else []
    return (await curl(gw.url(path), *extra)).response


async def eventually_passes(gw: GatewayHandle, bearer: str) -> None:
    """Repeat the request until it passes; bounded by the test's limit. A poll, because the
    refresh runs inside the gateway and a request's answer is the only outside view of it
    (the JWKS server having answered does not mean the gateway has the keys yet)."""
    while True:
        if (await get(gw, bearer)).status == 200:
            return
        await trio.sleep(0.02)


def assert_unknown_key(response: HttpResponse) -> None:
    assert response.status == 401
    assert response.json() == {"error": "invalid token", "detail": "unknown key", "status": 401}
    assert response.header(b"www-authenticate") == (
        b'Bearer realm="a3s-gateway", error="invalid_token", error_description="unknown key"'
    )


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]:
    return (
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


def test_keys_from_a_jwks_server_verify_tokens_and_a_rotation_is_picked_up(
    rsa_keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey],
) -> None:
    rsa_1, rsa_2 = rsa_keys
    ec_1 = ec.generate_private_key(ec.SECP256R1())
    jwks = Jwks({"rsa-1": rsa_1, "ec-1": ec_1})

    async def main(virtual: VirtualTime) -> None:
        async with trio.open_nursery() as nursery:
            origin = Origin("app")
            await nursery.start(origin.serve)
            server = ScriptedServer(jwks)
            await nursery.start(server.serve)
            async with running_gateway(gateway_config(origin, server.url("/jwks"))) as gw:
                await eventually_passes(gw, token(rsa_1, "rsa-1"))
                assert origin.requests[-1].values(b"x-jwt-subject") == [b"ada"]
                assert (await get(gw, token(ec_1, "ec-1", subject="bea"))).status == 200
                assert origin.requests[-1].values(b"x-jwt-subject") == [b"bea"]
                # No algorithm confusion: the published key as an HMAC secret, with its kid.
                published = json.dumps(rsa_jwk(rsa_1, kid="rsa-1")).encode()
                confused = await get(gw, hs256(published, "rsa-1"))
                assert confused.status == 401
                assert confused.json()["detail"] == "algorithm not allowed"
                foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                forged = await get(gw, token(foreign, "rsa-1"))
                assert forged.json()["detail"] == "bad signature"
                # The issuer rotates: rsa-2 replaces rsa-1.
                jwks.keys = {"rsa-2": rsa_2, "ec-1": ec_1}
                virtual.advance(A_MINUTE_LATER)
                fetched = len(server.requests)
                assert_unknown_key(await get(gw, token(rsa_2, "rsa-2")))  # answered at once
                await eventually_passes(gw, token(rsa_2, "rsa-2"))
                assert len(server.requests) == fetched + 1  # one refresh, not one per request
                assert_unknown_key(await get(gw, token(rsa_1, "rsa-1")))  # revoked
                assert (await get(gw, token(ec_1, "ec-1"))).status == 200
            assert {(seen.method, seen.target) for seen in server.requests} == {(b"GET", b"/jwks")}
            nursery.cancel_scope.cancel()

    run_trio(main)


def test_a_jwks_server_down_at_start(
    rsa_keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey], caplog: pytest.LogCaptureFixture
) -> None:
    rsa_1 = rsa_keys[0]
    port = free_port()
    url = f"http://127.0.0.1:{port}/jwks"

    async def main(virtual: VirtualTime) -> None:
        async with trio.open_nursery() as nursery:
            origin = Origin("app")
            await nursery.start(origin.serve)
            async with running_gateway(gateway_config(origin, url)) as gw:
                runtime = gw.gateway.runtime
                assert runtime is not None
                auth = runtime.middlewares["auth"]
                assert isinstance(auth, JwtMiddleware)
                assert_unknown_key(await get(gw, token(rsa_1, "rsa-1")))
                assert (await get(gw, path="/open")).status == 200  # other routes unaffected
                assert (await get(gw)).json()["error"] == "missing token"
                assert auth.jwks_errors >= 1  # the fetch at start was refused
                server = ScriptedServer(Jwks({"rsa-1": rsa_1}), port=port)
                await nursery.start(server.serve)
                virtual.advance(A_MINUTE_LATER)
                await eventually_passes(gw, token(rsa_1, "rsa-1"))
                assert origin.requests[-1].values(b"x-jwt-subject") == [b"ada"]
                assert [seen.target for seen in server.requests] == [b"/jwks"]
            nursery.cancel_scope.cancel()

    with caplog.at_level(logging.WARNING, logger="a3s_gateway.middleware"):
        run_trio(main)
    warnings = [record.getMessage() for record in caplog.records]
    assert warnings
    assert warnings[0].startswith(f'middleware "auth": JWKS {url}: fetch failed: ')
    assert warnings[0].endswith('no keys yet: tokens that need one are refused as "unknown key"')
