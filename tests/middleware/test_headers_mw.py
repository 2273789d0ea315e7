"""The ``headers`` middleware (SPEC §8.9): entries replace every line of their name, ``""``
removes, changes apply in name order on both sides, and ``Host`` overrides ``pass_host_header``."""

from __future__ import annotations

import pytest

from a3s_gateway.config.schema_middlewares import Headers as HeadersBlock
from a3s_gateway.middleware.contract import RequestState
from a3s_gateway.middleware.header_edits import FieldChanges, HeadersMiddleware
from a3s_gateway.protocols.headers import Headers
from a3s_gateway.protocols.responses import error_response


def make(
    request: dict[str, str] | None = None, response: dict[str, str] | None = None
) -> HeadersMiddleware:
    block = HeadersBlock(request_headers=request or {}, response_headers=response or {})
    return HeadersMiddleware.from_config("hdrs", block)


def request_state(headers: Headers) -> RequestState:
    return RequestState(
        method=b"GET",
        path=b"/",
        query=b"a=1",
        headers=headers,
        authority=b"example.com",
        client_ip="192.0.2.1",
        peer_ip="192.0.2.1",
        tls=False,
    )


CLIENT: Headers = [
    (b"host", b"example.com"),
    (b"x-env", b"dev"),
    (b"accept", b"*/*"),
    (b"x-env", b"test"),
    (b"x-drop", b"1"),
]


async def test_request_entry_replaces_every_line_at_the_first_position() -> None:
    state = request_state(list(CLIENT))
    assert await make({"X-Env": "prod"}).request(state) is None
    assert state.headers == [
        (b"host", b"example.com"),
        (b"x-env", b"prod"),
        (b"accept", b"*/*"),
        (b"x-drop", b"1"),
    ]


async def test_empty_value_removes_every_line() -> None:
    state = request_state(list(CLIENT))
    await make({"X-Env": "", "X-Drop": ""}).request(state)
    assert state.headers == [(b"host", b"example.com"), (b"accept", b"*/*")]


async def test_removing_an_absent_field_changes_nothing() -> None:
    state = request_state(list(CLIENT))
    await make({"X-Absent": ""}).request(state)
    assert state.headers == CLIENT


async def test_new_fields_are_appended_in_name_order() -> None:
    state = request_state([(b"host", b"example.com")])
    await make({"X-Zeta": "z", "x-alpha": "a", "X-Mid": "m"}).request(state)
    assert state.headers == [
        (b"host", b"example.com"),
        (b"x-alpha", b"a"),
        (b"x-mid", b"m"),
        (b"x-zeta", b"z"),
    ]


async def test_order_does_not_depend_on_the_config_map_order() -> None:
    entries = [("X-B", "2"), ("X-A", "1"), ("X-C", "")]
    one = request_state(list(CLIENT))
    two = request_state(list(CLIENT))
    await make(dict(entries)).request(one)
    await make(dict(reversed(entries))).request(two)
    assert one.headers == two.headers


def test_names_differing_only_in_case_resolve_deterministically() -> None:
    # Lower-case name order, then the original spelling: "x-a" sorts after "X-A" and wins.
    for entries in ({"X-A": "upper", "x-a": "lower"}, {"x-a": "lower", "X-A": "upper"}):
        changes = FieldChanges(entries)
        assert changes.changes == {b"x-a": b"lower"}


async def test_the_list_is_changed_in_place() -> None:
    lines = list(CLIENT)
    state = request_state(lines)
    await make({"X-Env": "prod"}).request(state)
    assert state.headers is lines


async def test_values_are_sent_as_utf8() -> None:
    state = request_state([])
    await make({"X-Greeting": "grüß"}).request(state)
    assert state.headers == [(b"x-greeting", "grüß".encode())]


async def test_an_empty_definition_changes_nothing() -> None:
    cors = make()
    state = request_state(list(CLIENT))
    await cors.request(state)
    lines: Headers = [(b"server", b"up")]
    cors.response(state, 200, lines)
    assert state.headers == CLIENT
    assert lines == [(b"server", b"up")]
    assert cors.host_override is None


async def test_request_entries_leave_the_path_query_and_method_alone() -> None:
    state = request_state(list(CLIENT))
    await make({"X-Env": "prod"}, {"X-Env": "resp"}).request(state)
    assert (state.method, state.path, state.query) == (b"GET", b"/", b"a=1")


# --- Host ----------------------------------------------------------------------------------


async def test_setting_host_replaces_the_host_line_and_is_exposed() -> None:
    middleware = make({"Host": "internal.svc:8080"})
    assert middleware.host_override == b"internal.svc:8080"
    state = request_state(list(CLIENT))
    await middleware.request(state)
    assert state.values(b"host") == [b"internal.svc:8080"]
    assert state.authority == b"example.com"  # the authority as received stays for X-Forwarded-Host


async def test_removing_host_leaves_pass_host_header_in_charge() -> None:
    middleware = make({"Host": ""})
    assert middleware.host_override is None
    state = request_state(list(CLIENT))
    await middleware.request(state)
    assert state.values(b"host") == []


# --- response side -------------------------------------------------------------------------


@pytest.mark.parametrize("status", [101, 200, 304, 401, 502])
def test_response_entries_apply_to_every_status(status: int) -> None:
    middleware = make(response={"X-Frame-Options": "DENY", "Server": "", "X-Powered-By": ""})
    lines: Headers = [
        (b"server", b"nginx"),
        (b"x-powered-by", b"php"),
        (b"content-type", b"text/html"),
        (b"x-frame-options", b"SAMEORIGIN"),
        (b"x-frame-options", b"ALLOW-FROM x"),
    ]
    same = lines
    middleware.response(request_state([]), status, lines)
    assert lines is same
    assert lines == [(b"content-type", b"text/html"), (b"x-frame-options", b"DENY")]


def test_response_entries_apply_to_gateway_answers() -> None:
    answer = error_response(503)
    make(response={"Cache-Control": "no-cache", "X-Served": "gw"}).response(
        request_state([]), 503, answer.head.headers
    )
    assert answer.head.headers[1] == (b"cache-control", b"no-cache")
    assert answer.head.headers[-1] == (b"x-served", b"gw")


async def test_request_and_response_maps_are_independent() -> None:
    middleware = make({"X-Req": "1"}, {"X-Resp": "2"})
    state = request_state([])
    await middleware.request(state)
    lines: Headers = []
    middleware.response(state, 200, lines)
    assert state.headers == [(b"x-req", b"1")]
    assert lines == [(b"x-resp", b"2")]
