"""Request-target splitting and the prechecks the gateway answers itself (SPEC §5.4, §5.14)."""

from __future__ import annotations

import json

import pytest

from a3s_gateway.protocols.events import RequestHead
from a3s_gateway.protocols.responses import error_response, options_response
from a3s_gateway.protocols.target import decrement_max_forwards, precheck, split_target


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"/", (b"/", b"")),
        (b"/a/b?x=1&y", (b"/a/b", b"x=1&y")),
        (b"/a?", (b"/a", b"")),
        (b"http://example.com/a?q", (b"/a", b"q")),
        (b"http://example.com", (b"/", b"")),
        (b"http://example.com?q=1", (b"/", b"q=1")),
        (b"https://h:8443/p/q", (b"/p/q", b"")),
        (b"*", (b"*", b"")),
    ],
    ids=[
        "root",
        "query",
        "empty-query",
        "absolute",
        "absolute-empty",
        "absolute-query",
        "absolute-port",
        "asterisk",
    ],
)
def test_split_target(target: bytes, expected: tuple[bytes, bytes]) -> None:
    assert split_target(target) == expected


def _head(
    method: bytes, target: bytes = b"/", headers: list[tuple[bytes, bytes]] | None = None
) -> RequestHead:
    return RequestHead(method=method, target=target, authority=b"h", headers=headers or [])


@pytest.mark.parametrize("method", [b"TRACE", b"CONNECT"])
def test_trace_and_connect_get_405_with_allow(method: bytes) -> None:
    response = precheck(_head(method))
    assert response is not None
    assert response.head.status == 405
    assert (b"allow", b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS") in response.head.headers


def test_options_asterisk_and_max_forwards_zero_are_answered_locally() -> None:
    for head in (_head(b"OPTIONS", b"*"), _head(b"OPTIONS", b"/x", [(b"max-forwards", b"0")])):
        response = precheck(head)
        assert response == options_response()
        assert response.head.status == 200


def test_options_with_positive_max_forwards_is_forwarded_decremented() -> None:
    head = _head(b"OPTIONS", b"/x", [(b"max-forwards", b"3")])
    assert precheck(head) is None
    assert decrement_max_forwards(head.headers) == [(b"max-forwards", b"2")]
    # An invalid value is ignored, not "fixed" (SPEC §14.3).
    assert decrement_max_forwards([(b"max-forwards", b"x")]) == [(b"max-forwards", b"x")]


def test_unknown_expectation_is_417_and_100_continue_passes() -> None:
    rejected = precheck(_head(b"POST", headers=[(b"expect", b"something-else")]))
    assert rejected is not None
    assert rejected.head.status == 417
    assert precheck(_head(b"POST", headers=[(b"expect", b"100-Continue")])) is None


def test_forwarding_loop_is_508_at_ten_hops() -> None:
    nine = [(b"via", b", ".join([b"1.1 a3s-gateway"] * 9))]
    ten = [(b"via", b", ".join([b"1.1 a3s-gateway"] * 10))]
    assert precheck(_head(b"GET", headers=nine)) is None
    looped = precheck(_head(b"GET", headers=ten))
    assert looped is not None
    assert looped.head.status == 508


def test_error_bodies_are_json_and_escaped() -> None:
    response = error_response(400, 'bad request: "quoted" \\ and \n newline')
    assert json.loads(response.body) == {
        "error": 'bad request: "quoted" \\ and \n newline',
        "status": 400,
    }
    assert response.close
    headers = dict(response.head.headers)
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"cache-control"] == b"no-store"
    assert headers[b"content-length"] == str(len(response.body)).encode()


def test_error_response_defaults_and_closing_statuses() -> None:
    assert json.loads(error_response(404).body) == {"error": "no route matched", "status": 404}
    assert not error_response(404).close
    for status in (400, 408, 414, 431, 501, 505):
        assert error_response(status).close
    extra = error_response(503, "overloaded", extra=[(b"retry-after", b"1")])
    assert (b"retry-after", b"1") in extra.head.headers
