"""``forward-auth`` through the running gateway (SPEC §8.5, §5.4 "Redirects", §5.5): an
in-process ``Gateway`` (and once the real CLI) in front of the test origin, a real auth service
(``tests.support.scripted``, trio + h11) and real curl as the client.

The auth service allows ``Bearer good`` (answering with identity fields), redirects
``Bearer login`` to its own ``/login`` (which must never be requested: redirects are not
followed), and denies everything else with a 401 challenge and a plain-text body.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Final

import pytest
import trio

from tests.support.cli import start_gateway
from tests.support.gateway import (
    CLIENT_WAIT,
    LOCAL,
    config_text,
    curl,
    free_port,
    need_tool,
    router_block,
    running_gateway,
    server_entry,
    service_block,
)
from tests.support.origin import Origin
from tests.support.scripted import Action, Hang, Reply, ScriptedServer, Seen

pytestmark = pytest.mark.integration

#: The forward-auth timeout of the ``slow`` route, and a generous bound on its 504.
SLOW_TIMEOUT: Final = 0.3
SLOW_BOUND: Final = 5.0
STARTUP_WAIT: Final = 40.0
CHALLENGE: Final = b'Bearer realm="shop"'
DENIED_BODY: Final = b"denied by the auth service\n"


@pytest.fixture(autouse=True)
def need_curl() -> None:
    need_tool("curl", "to drive the gateway")


class AuthService:
    """The auth service's policy over a ``ScriptedServer``."""

    def __init__(self) -> None:
        self.hang = Hang()
        self.server = ScriptedServer(self.verdict)

    def url(self, path: str) -> str:
        return self.server.url(path)

    @property
    def requests(self) -> list[Seen]:
        return self.server.requests

    def verdict(self, seen: Seen) -> Action:
        if seen.target.startswith(b"/slow"):
            return self.hang
        token = seen.header(b"authorization")
        if token == b"Bearer good":
            identity = (
                (b"x-user", b"alice"),
                (b"x-groups", b"admins"),
                (b"x-groups", b"ops"),
                (b"x-auth-internal", b"not copied"),
            )
            return Reply(200, identity, b"ok")
        if token == b"Bearer login":
            location = self.url("/login?rd=shop").encode()
            fields = (
                (b"location", location),
                (b"set-cookie", b"state=abc; HttpOnly"),
                (b"x-auth-internal", b"secret"),
            )
            return Reply(302, fields)
        fields = (
            (b"www-authenticate", CHALLENGE),
            (b"content-type", b"text/plain"),
            (b"x-auth-internal", b"secret"),
        )
        return Reply(401, fields, DENIED_BODY)


@pytest.fixture
async def origin(nursery: trio.Nursery) -> Origin:
    server = Origin("app")
    await nursery.start(server.serve)
    return server


@pytest.fixture
async def auth(nursery: trio.Nursery) -> AuthService:
    service = AuthService()
    await nursery.start(service.server.serve)
    return service


def gateway_config(origin: Origin, auth: AuthService, *, port: int = 0) -> str:
    """``/`` behind ``auth``; ``/slow`` behind an auth service that never answers; ``/down``
    behind one that refuses connections."""
    definitions = f"""
middlewares "auth" {{
  type                          = "forward-auth"
  forward_auth_url              = "{auth.url("/verify?app=shop")}"
  forward_auth_response_headers = ["X-User", "X-Groups"]
}}
middlewares "slow-auth" {{
  type                 = "forward-auth"
  forward_auth_url     = "{auth.url("/slow")}"
  forward_auth_timeout = "{int(SLOW_TIMEOUT * 1000)}ms"
}}
middlewares "down-auth" {{
  type             = "forward-auth"
  forward_auth_url = "http://{LOCAL}:{free_port()}/verify"
}}
"""
    more = (
        router_block("slow", "PathPrefix(`/slow`)", "main")
        + router_block("down", "PathPrefix(`/down`)", "down")
        + service_block("down", [server_entry(origin)])
        + definitions
    )
    text = config_text([server_entry(origin)], more=more, port=port)
    for router, chain in (("main", "auth"), ("slow", "slow-auth"), ("down", "down-auth")):
        text = text.replace(
            f'routers "{router}" {{\n', f'routers "{router}" {{\n  middlewares = ["{chain}"]\n', 1
        )
    return text


async def test_an_allowed_request_reaches_the_origin_with_the_identity_fields(
    origin: Origin, auth: AuthService
) -> None:
    async with running_gateway(gateway_config(origin, auth)) as gw:
        first = await curl(
            gw.url("/app/items?page=2"),
            "-H",
            "Authorization: Bearer good",
            "--data-binary",
            "hello",
        )
        second = await curl(gw.url("/again"), "-H", "Authorization: Bearer good")
    assert first.response.status == 200, first.stderr
    assert first.response.json()["origin"] == "app"
    assert second.response.status == 200
    seen = origin.requests[0]
    assert (seen.method, seen.target, seen.body_length) == (b"POST", b"/app/items?page=2", 5)
    assert seen.values(b"x-user") == [b"alice"]
    assert seen.values(b"x-groups") == [b"admins", b"ops"]  # every line copied
    assert seen.values(b"x-auth-internal") == []  # not listed: not copied
    assert seen.values(b"authorization") == [b"Bearer good"]
    # The auth request: GET to the auth URL with its own Host, no body, the client's fields
    # and the description of the client's request.
    call = auth.requests[0]
    assert (call.method, call.target) == (b"GET", b"/verify?app=shop")
    assert call.header(b"host") == f"{LOCAL}:{auth.server.port}".encode()
    assert call.header(b"authorization") == b"Bearer good"
    assert call.header(b"content-length") is None
    assert call.header(b"transfer-encoding") is None
    assert call.header(b"x-forwarded-method") == b"POST"
    assert call.header(b"x-forwarded-proto") == b"http"
    assert call.header(b"x-forwarded-host") == f"{LOCAL}:{gw.port}".encode()
    assert call.header(b"x-forwarded-uri") == b"/app/items?page=2"
    assert call.header(b"x-forwarded-for") == LOCAL.encode()
    # SPEC §9.4 "Inject": the auth call carries the gateway's span and request id, the same
    # ones the origin gets.
    assert call.header(b"traceparent") == seen.header(b"traceparent")
    assert call.header(b"traceparent") is not None
    assert call.header(b"x-request-id") == seen.header(b"x-request-id")
    assert call.header(b"x-request-id") == first.response.header(b"x-request-id")
    # Both auth requests went over one pooled connection.
    assert [(r.connection, r.index) for r in auth.requests] == [(1, 0), (1, 1)]


async def test_a_client_sent_identity_field_is_replaced(origin: Origin, auth: AuthService) -> None:
    async with running_gateway(gateway_config(origin, auth)) as gw:
        result = await curl(
            gw.url("/me"),
            "-H",
            "Authorization: Bearer good",
            "-H",
            "X-User: mallory",
            "-H",
            "X-Groups: root",
        )
    assert result.response.status == 200
    [seen] = origin.requests
    assert seen.values(b"x-user") == [b"alice"]
    assert seen.values(b"x-groups") == [b"admins", b"ops"]


async def test_a_denial_is_passed_to_the_client(origin: Origin, auth: AuthService) -> None:
    async with running_gateway(gateway_config(origin, auth)) as gw:
        missing = await curl(gw.url("/private"))
        wrong = await curl(gw.url("/private"), "-H", "Authorization: Bearer bad")
    for result in (missing, wrong):
        response = result.response
        assert response.status == 401
        assert response.header(b"www-authenticate") == CHALLENGE
        assert response.header(b"content-type") == b"text/plain"
        assert response.body == DENIED_BODY
        assert response.header(b"x-auth-internal") is None
    assert origin.requests == []


async def test_a_redirect_is_passed_through_and_not_followed(
    origin: Origin, auth: AuthService
) -> None:
    async with running_gateway(gateway_config(origin, auth)) as gw:
        result = await curl(gw.url("/dashboard"), "-H", "Authorization: Bearer login")
    response = result.response
    assert response.status == 302
    assert response.header(b"location") == auth.url("/login?rd=shop").encode()
    assert response.header(b"set-cookie") == b"state=abc; HttpOnly"
    assert response.header(b"x-auth-internal") is None
    assert [seen.target for seen in auth.requests] == [b"/verify?app=shop"]
    assert origin.requests == []


async def test_an_auth_service_that_is_down_gives_502(origin: Origin, auth: AuthService) -> None:
    async with running_gateway(gateway_config(origin, auth)) as gw:
        result = await curl(gw.url("/down/x"), "-H", "Authorization: Bearer good")
    assert result.response.status == 502
    assert result.response.json() == {"error": "auth service unavailable", "status": 502}
    assert origin.requests == []


async def test_a_slow_auth_service_gives_504_after_the_timeout(
    origin: Origin, auth: AuthService
) -> None:
    async with running_gateway(gateway_config(origin, auth)) as gw:
        started = trio.current_time()
        result = await curl(gw.url("/slow/x"), "-H", "Authorization: Bearer good")
        elapsed = trio.current_time() - started
        auth.hang.release.set()
    assert result.response.status == 504
    assert result.response.json() == {"error": "auth service timeout", "status": 504}
    assert SLOW_TIMEOUT <= elapsed < SLOW_BOUND
    assert [seen.target for seen in auth.requests] == [b"/slow"]
    assert origin.requests == []


async def test_forward_auth_through_the_real_cli(
    origin: Origin, auth: AuthService, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "gateway.hcl"
    config.write_text(gateway_config(origin, auth, port=port), encoding="utf-8")
    gateway = await start_gateway(str(config))
    try:
        with trio.fail_after(STARTUP_WAIT):
            await gateway.wait_for_line("listening entrypoint=web")
        url = f"http://{LOCAL}:{port}/cli"
        allowed = await curl(url, "-H", "Authorization: Bearer good", "-H", "X-User: mallory")
        denied = await curl(url)
        gateway.process.send_signal(signal.SIGTERM)
        with trio.fail_after(CLIENT_WAIT):
            code = await gateway.process.wait()
    finally:
        if gateway.process.returncode is None:
            gateway.process.kill()
        with trio.CancelScope(shield=True):
            await gateway.process.wait()
    assert code == 0
    assert allowed.response.status == 200, allowed.stderr
    assert denied.response.status == 401
    assert denied.response.header(b"www-authenticate") == CHALLENGE
    assert denied.response.body == DENIED_BODY
    [seen] = origin.requests
    assert seen.values(b"x-user") == [b"alice"]
