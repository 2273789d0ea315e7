"""The ``forward-auth`` middleware with a fake ``HttpCaller`` (SPEC §8.5, every row).

Auth request: which client fields are sent (all, or the configured ones), which never are
(hop-by-hop, Connection-named, framing, Expect, Host, client copies of X-Forwarded-*), the
gateway's X-Forwarded-* fields, the URL, timeout and 64 KiB bound. 2xx: configured reply
fields replace the client's copies. Other statuses (3xx included): status, body and the listed
reply fields only. Failures: 504/502 texts. Building: from a config through ``compile_chains``, and
``StartError`` without an HTTP caller.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from a3s_gateway.config.load import load_config_text
from a3s_gateway.config.schema_middlewares import ForwardAuth
from a3s_gateway.config.urls import HttpUrl
from a3s_gateway.config.values import Duration
from a3s_gateway.errors import StartError
from a3s_gateway.middleware.contract import RequestState
from a3s_gateway.middleware.forward_auth import ForwardAuthMiddleware
from a3s_gateway.middleware.outbound import (
    HttpReply,
    MiddlewareDeps,
    OutboundFailed,
    OutboundTimeout,
    ReplyTooLarge,
)
from a3s_gateway.middleware.phases import compile_chains
from a3s_gateway.protocols.headers import Headers
from a3s_gateway.protocols.responses import GeneratedResponse

AUTH_URL = "https://auth.example/verify?app=1"


@dataclass
class Call:
    url: HttpUrl
    headers: Headers
    within: float
    max_body: int


@dataclass
class FakeCaller:
    """Answers every call with ``reply`` or raises ``error``; records the calls."""

    reply: HttpReply = field(default_factory=lambda: HttpReply(200, [], b""))
    error: Exception | None = None
    calls: list[Call] = field(default_factory=list)

    async def get(
        self, url: HttpUrl, headers: Headers, *, within: float, max_body: int
    ) -> HttpReply:
        self.calls.append(Call(url, list(headers), within, max_body))
        if self.error is not None:
            raise self.error
        return self.reply

    @property
    def call(self) -> Call:
        assert len(self.calls) == 1, self.calls
        return self.calls[0]


def block(
    *,
    timeout: str = "10s",
    request_headers: tuple[str, ...] = (),
    response_headers: tuple[str, ...] = (),
) -> ForwardAuth:
    return ForwardAuth(
        forward_auth_url=HttpUrl(AUTH_URL),
        forward_auth_timeout=Duration(timeout),
        forward_auth_request_headers=request_headers,
        forward_auth_response_headers=response_headers,
    )


def middleware(
    caller: FakeCaller,
    *,
    timeout: str = "10s",
    request_headers: tuple[str, ...] = (),
    response_headers: tuple[str, ...] = (),
) -> ForwardAuthMiddleware:
    config = block(
        timeout=timeout, request_headers=request_headers, response_headers=response_headers
    )
    return ForwardAuthMiddleware.from_config("auth", config, MiddlewareDeps(http=caller))


def make_state(
    headers: Headers,
    *,
    method: bytes = b"GET",
    path: bytes = b"/app/items",
    query: bytes = b"",
    client_ip: str = "198.51.100.7",
    peer_ip: str = "198.51.100.7",
    tls: bool = False,
    peer_trusted: bool = False,
) -> RequestState:
    return RequestState(
        peer_trusted=peer_trusted,
        method=method,
        path=path,
        query=query,
        headers=headers,
        authority=b"shop.example:8443",
        client_ip=client_ip,
        peer_ip=peer_ip,
        tls=tls,
    )


def values(headers: Headers, name: bytes) -> list[bytes]:
    return [value for field_name, value in headers if field_name == name]


def names(headers: Headers) -> list[bytes]:
    return [name for name, _ in headers]


# --------------------------------------------------------------------------- building


def test_the_config_block_is_used() -> None:
    caller = FakeCaller()
    built = middleware(caller, timeout="250ms")
    assert built.name == "auth"
    assert repr(built) == "<ForwardAuthMiddleware 'auth'>"


def test_without_an_http_caller_it_cannot_be_built() -> None:
    with pytest.raises(StartError, match=r'"auth".*forward-auth'):
        ForwardAuthMiddleware.from_config("auth", block(), MiddlewareDeps())


CONFIG = """
entrypoints "web" {
  address = "127.0.0.1:0"
}
routers "app" {
  rule        = "PathPrefix(`/`)"
  service     = "svc"
  middlewares = ["auth"]
}
middlewares "auth" {
  type                          = "forward-auth"
  forward_auth_url              = "http://127.0.0.1:9/verify"
  forward_auth_response_headers = ["X-User"]
  forward_auth_timeout          = "2s"
}
services "svc" {
  load_balancer {
    servers = [{ url = "http://127.0.0.1:9" }]
  }
}
"""


async def test_a_config_builds_it_with_the_http_caller_of_the_deps() -> None:
    caller = FakeCaller(HttpReply(200, [(b"x-user", b"alice")], b""))
    instances, chains = compile_chains(load_config_text(CONFIG), deps=MiddlewareDeps(http=caller))
    built = instances["auth"]
    assert isinstance(built, ForwardAuthMiddleware)
    assert chains["app"] == (built,)
    state = make_state([(b"x-user", b"mallory")])
    assert await built.request(state) is None
    assert state.headers == [(b"x-user", b"alice")]
    assert caller.call.url == HttpUrl("http://127.0.0.1:9/verify")
    assert caller.call.within == pytest.approx(2.0)
    with pytest.raises(StartError, match="forward-auth"):
        compile_chains(load_config_text(CONFIG))  # no deps: no HTTP caller


# --------------------------------------------------------------------------- the auth request


async def test_the_call_uses_the_url_timeout_and_the_64_kib_bound() -> None:
    caller = FakeCaller()
    await middleware(caller, timeout="250ms").request(make_state([]))
    call = caller.call
    assert call.url == HttpUrl(AUTH_URL)
    assert call.within == pytest.approx(0.25)
    assert call.max_body == 65536


async def test_every_client_field_is_sent_but_hop_by_hop_framing_expect_and_host() -> None:
    caller = FakeCaller()
    client: Headers = [
        (b"host", b"shop.example:8443"),
        (b"authorization", b"Bearer abc"),
        (b"cookie", b"session=1"),
        (b"cookie", b"theme=dark"),
        (b"content-length", b"5"),
        (b"transfer-encoding", b"chunked"),
        (b"expect", b"100-continue"),
        (b"connection", b"keep-alive, X-Private"),
        (b"x-private", b"named by Connection"),
        (b"keep-alive", b"timeout=5"),
        (b"te", b"trailers"),
        (b"upgrade", b"h2c"),
        (b"proxy-authorization", b"Basic eA=="),
        (b"trailer", b"x-t"),
        (b"accept", b"*/*"),
    ]
    await middleware(caller).request(make_state(client))
    sent = caller.call.headers
    assert names(sent)[:4] == [b"authorization", b"cookie", b"cookie", b"accept"]
    assert values(sent, b"cookie") == [b"session=1", b"theme=dark"]
    for absent in (
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"expect",
        b"connection",
        b"x-private",
        b"keep-alive",
        b"te",
        b"upgrade",
        b"proxy-authorization",
        b"trailer",
    ):
        assert values(sent, absent) == [], absent


async def test_the_forwarding_fields_describe_the_request() -> None:
    caller = FakeCaller()
    state = make_state([], method=b"POST", path=b"/app/a%20b", query=b"x=1&y", tls=True)
    await middleware(caller).request(state)
    sent = caller.call.headers
    assert sent == [
        (b"x-forwarded-method", b"POST"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"shop.example:8443"),
        (b"x-forwarded-uri", b"/app/a%20b?x=1&y"),
        (b"x-forwarded-for", b"198.51.100.7"),
    ]


async def test_without_a_query_the_uri_is_the_path_and_proto_http() -> None:
    caller = FakeCaller()
    await middleware(caller).request(make_state([]))
    sent = caller.call.headers
    assert values(sent, b"x-forwarded-uri") == [b"/app/items"]
    assert values(sent, b"x-forwarded-proto") == [b"http"]


async def test_client_copies_of_the_forwarding_fields_are_replaced() -> None:
    caller = FakeCaller()
    forged: Headers = [
        (b"x-forwarded-method", b"GET"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"admin.example"),
        (b"x-forwarded-uri", b"/public"),
        (b"x-forwarded-for", b"10.0.0.1"),
    ]
    await middleware(caller).request(make_state(forged, method=b"DELETE"))
    sent = caller.call.headers
    assert values(sent, b"x-forwarded-method") == [b"DELETE"]
    assert values(sent, b"x-forwarded-proto") == [b"http"]
    assert values(sent, b"x-forwarded-host") == [b"shop.example:8443"]
    assert values(sent, b"x-forwarded-uri") == [b"/app/items"]
    assert values(sent, b"x-forwarded-for") == [b"198.51.100.7"]  # untrusted peer: its IP only


async def test_behind_a_trusted_proxy_the_chain_is_kept_and_the_peer_appended() -> None:
    # The peer is a trusted proxy: its chain is kept and the peer appended.
    caller = FakeCaller()
    headers: Headers = [(b"x-forwarded-for", b"203.0.113.9, 10.0.0.2"), (b"x-forwarded-for", b"")]
    state = make_state(headers, client_ip="203.0.113.9", peer_ip="10.0.0.1", peer_trusted=True)
    await middleware(caller).request(state)
    assert values(caller.call.headers, b"x-forwarded-for") == [b"203.0.113.9, 10.0.0.2, 10.0.0.1"]


async def test_a_trusted_peer_whose_chain_names_itself_keeps_the_chain() -> None:
    caller = FakeCaller()
    headers: Headers = [(b"x-forwarded-for", b"10.0.0.1")]
    state = make_state(headers, client_ip="10.0.0.1", peer_ip="10.0.0.1", peer_trusted=True)
    await middleware(caller).request(state)
    assert values(caller.call.headers, b"x-forwarded-for") == [b"10.0.0.1, 10.0.0.1"]


async def test_an_untrusted_peer_chain_is_dropped() -> None:
    caller = FakeCaller()
    headers: Headers = [(b"x-forwarded-for", b"203.0.113.9")]
    state = make_state(headers, client_ip="203.0.113.9", peer_ip="10.0.0.1")
    await middleware(caller).request(state)
    assert values(caller.call.headers, b"x-forwarded-for") == [b"10.0.0.1"]


async def test_only_the_configured_request_fields_when_the_list_is_set() -> None:
    caller = FakeCaller()
    client: Headers = [
        (b"authorization", b"Bearer abc"),
        (b"cookie", b"session=1"),
        (b"x-other", b"no"),
        (b"host", b"shop.example"),
        (b"connection", b"close"),
        (b"x-forwarded-uri", b"/forged"),
    ]
    listed = ("Authorization", "Cookie", "Host", "Connection")
    await middleware(caller, request_headers=listed).request(make_state(client))
    sent = caller.call.headers
    assert names(sent) == [
        b"authorization",
        b"cookie",
        b"x-forwarded-method",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-uri",
        b"x-forwarded-for",
    ]
    assert values(sent, b"x-forwarded-uri") == [b"/app/items"]


async def test_the_fields_are_those_left_by_earlier_middlewares() -> None:
    caller = FakeCaller()
    state = make_state([(b"authorization", b"Bearer abc")])
    state.headers = [(b"x-set-earlier", b"1")]  # e.g. a headers middleware listed before
    await middleware(caller).request(state)
    assert names(caller.call.headers)[0] == b"x-set-earlier"
    assert values(caller.call.headers, b"authorization") == []


# --------------------------------------------------------------------------- 2xx


async def test_2xx_continues_with_the_configured_fields_from_the_reply() -> None:
    reply = HttpReply(
        200,
        [
            (b"x-user", b"alice"),
            (b"x-groups", b"admins"),
            (b"x-groups", b"ops"),
            (b"x-not-listed", b"no"),
            (b"content-type", b"text/plain"),
        ],
        b"ok",
    )
    caller = FakeCaller(reply)
    client: Headers = [
        (b"x-user", b"mallory"),  # smuggled: must not survive
        (b"accept", b"*/*"),
        (b"x-user", b"eve"),
        (b"x-groups", b"root"),
    ]
    state = make_state(client)
    listed = ("X-User", "X-Groups", "X-Missing")
    assert await middleware(caller, response_headers=listed).request(state) is None
    assert state.headers == [
        (b"accept", b"*/*"),
        (b"x-user", b"alice"),
        (b"x-groups", b"admins"),
        (b"x-groups", b"ops"),
    ]


async def test_a_listed_field_missing_from_the_reply_removes_the_clients_copy() -> None:
    caller = FakeCaller(HttpReply(204, [], b""))
    state = make_state([(b"x-user", b"mallory"), (b"accept", b"*/*")])
    assert await middleware(caller, response_headers=("X-User",)).request(state) is None
    assert state.headers == [(b"accept", b"*/*")]


@pytest.mark.parametrize("status", [200, 201, 204, 299])
async def test_every_2xx_lets_the_request_through_unchanged_without_a_list(status: int) -> None:
    caller = FakeCaller(HttpReply(status, [(b"x-user", b"alice")], b""))
    client: Headers = [(b"x-user", b"mallory")]
    state = make_state(list(client))
    assert await middleware(caller).request(state) is None
    assert state.headers == client


# --------------------------------------------------------------------------- denials


DENIAL_FIELDS: Headers = [
    (b"content-type", b"text/html"),
    (b"location", b"https://login.example/?rd=x"),
    (b"www-authenticate", b'Bearer realm="shop"'),
    (b"set-cookie", b"a=1"),
    (b"set-cookie", b"b=2"),
    (b"cache-control", b"no-store"),
    (b"retry-after", b"7"),
]
NOT_PASSED: Headers = [
    (b"x-internal", b"secret"),
    (b"server", b"auth/1.0"),
    (b"content-length", b"999"),
    (b"connection", b"keep-alive"),
    (b"date", b"Mon, 01 Jan 2024 00:00:00 GMT"),
]


def assert_passthrough(response: GeneratedResponse | None, status: int, body: bytes) -> None:
    assert response is not None
    assert response.head.status == status
    assert response.body == body
    assert response.head.headers == [
        *DENIAL_FIELDS,
        (b"content-length", str(len(body)).encode()),
    ]
    assert not response.close


@pytest.mark.parametrize("status", [401, 403, 404, 429, 500, 503])
async def test_a_denial_answers_with_status_body_and_listed_fields_only(status: int) -> None:
    headers = [NOT_PASSED[0], *DENIAL_FIELDS[:3], *NOT_PASSED[1:], *DENIAL_FIELDS[3:]]
    caller = FakeCaller(HttpReply(status, headers, b"<h1>no</h1>"))
    state = make_state([(b"x-user", b"mallory")])
    response = await middleware(caller, response_headers=("X-User",)).request(state)
    assert_passthrough(response, status, b"<h1>no</h1>")
    assert state.headers == [(b"x-user", b"mallory")]  # nothing copied on a denial


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_passed_through_not_followed(status: int) -> None:
    caller = FakeCaller(HttpReply(status, [*DENIAL_FIELDS, *NOT_PASSED], b""))
    response = await middleware(caller).request(make_state([]))
    assert_passthrough(response, status, b"")
    assert len(caller.calls) == 1


async def test_a_denial_keeps_its_content_type_rather_than_json() -> None:
    caller = FakeCaller(HttpReply(401, [(b"www-authenticate", b"Basic realm=x")], b"nope"))
    response = await middleware(caller).request(make_state([]))
    assert response is not None
    assert response.head.headers == [
        (b"www-authenticate", b"Basic realm=x"),
        (b"content-length", b"4"),
    ]


async def test_a_304_denial_has_no_body_and_no_length() -> None:
    caller = FakeCaller(HttpReply(304, [(b"cache-control", b"max-age=5")], b""))
    response = await middleware(caller).request(make_state([]))
    assert response is not None
    assert (response.head.status, response.body) == (304, b"")
    assert response.head.headers == [(b"cache-control", b"max-age=5")]


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("error", "status", "text"),
    [
        (OutboundTimeout("slow"), 504, "auth service timeout"),
        (OutboundFailed("refused"), 502, "auth service unavailable"),
        (ReplyTooLarge("big"), 502, "auth response too large"),
    ],
)
async def test_failures_map_to_gateway_errors(error: Exception, status: int, text: str) -> None:
    caller = FakeCaller(error=error)
    state = make_state([(b"x-user", b"mallory")])
    response = await middleware(caller, response_headers=("X-User",)).request(state)
    assert response is not None
    assert response.head.status == status
    assert json.loads(response.body) == {"error": text, "status": status}
    assert (b"content-type", b"application/json") in response.head.headers
    assert state.headers == [(b"x-user", b"mallory")]


async def test_an_informational_status_is_not_an_answer() -> None:
    caller = FakeCaller(HttpReply(100, [], b""))
    response = await middleware(caller).request(make_state([]))
    assert response is not None
    assert response.head.status == 502
    assert json.loads(response.body)["error"] == "auth service unavailable"


async def test_one_instance_serves_requests_independently() -> None:
    caller = FakeCaller(HttpReply(200, [(b"x-user", b"alice")], b""))
    built = middleware(caller, response_headers=("X-User",))
    first = make_state([(b"authorization", b"Bearer 1")], path=b"/one")
    second = make_state([(b"authorization", b"Bearer 2")], path=b"/two")
    await built.request(first)
    await built.request(second)
    uris = [values(call.headers, b"x-forwarded-uri") for call in caller.calls]
    assert uris == [[b"/one"], [b"/two"]]
    assert values(caller.calls[1].headers, b"authorization") == [b"Bearer 2"]


async def test_forwarded_uri_is_the_target_as_received_before_rewrites() -> None:
    """A strip-prefix listed earlier changes the path the backend gets, not the URI the auth
    service judges (SPEC §8.5: path and query as received)."""
    caller = FakeCaller()
    state = make_state([], path=b"/api/items", query=b"page=2")
    state.path = b"/items"  # what a strip-prefix of /api did
    await middleware(caller).request(state)
    assert values(caller.call.headers, b"x-forwarded-uri") == [b"/api/items?page=2"]
