"""The ``strip-prefix`` middleware (SPEC §8.10): plain and ``/*`` prefixes on the raw path,
first match in list order, a leading ``/`` always, query kept, ``X-Forwarded-Prefix`` set."""

from __future__ import annotations

import pytest

from a3s_gateway.config.schema_middlewares import StripPrefix
from a3s_gateway.middleware.contract import RequestState
from a3s_gateway.middleware.rewrite import StripPrefixMiddleware


def make(*prefixes: str) -> StripPrefixMiddleware:
    return StripPrefixMiddleware.from_config("strip", StripPrefix(prefixes=prefixes))


def request_state(path: bytes, query: bytes = b"") -> RequestState:
    return RequestState(
        method=b"GET",
        path=path,
        query=query,
        headers=[(b"host", b"example.com")],
        authority=b"example.com",
        client_ip="192.0.2.1",
        peer_ip="192.0.2.1",
        tls=False,
    )


async def run(middleware: StripPrefixMiddleware, path: bytes) -> tuple[bytes, bytes | None]:
    state = request_state(path)
    assert await middleware.request(state) is None
    return state.path, state.forwarded_prefix


@pytest.mark.parametrize(
    ("prefixes", "path", "result", "removed"),
    [
        (("/api",), b"/api/users", b"/users", b"/api"),
        (("/api",), b"/apiv2", b"/v2", b"/api"),  # a string prefix, as in A3S and Traefik
        (("/api",), b"/api", b"/", b"/api"),
        (("/api/",), b"/api/v1", b"/v1", b"/api/"),
        (("/api/",), b"/api/", b"/", b"/api/"),
        (("/",), b"/x", b"/x", b"/"),
        (("/api",), b"/api//x", b"//x", b"/api"),
        (("/a%20b",), b"/a%20b/c", b"/c", b"/a%20b"),  # raw bytes, escapes as written
        (("/apps/*",), b"/apps/x/y", b"/y", b"/apps/x"),
        (("/apps/*",), b"/apps/x", b"/", b"/apps/x"),
        (("/apps/*",), b"/apps/x/", b"/", b"/apps/x"),
        (("/apps/*",), b"/apps/%2Fx/y", b"/y", b"/apps/%2Fx"),
        (("/*",), b"/tenant/a/b", b"/a/b", b"/tenant"),
        (("/v1/*/",), b"/v1/*/x", b"/x", b"/v1/*/"),  # only a trailing "/*" is special
    ],
)
async def test_stripping(
    prefixes: tuple[str, ...], path: bytes, result: bytes, removed: bytes
) -> None:
    assert await run(make(*prefixes), path) == (result, removed)


@pytest.mark.parametrize(
    ("prefixes", "path"),
    [
        (("/api",), b"/ap"),
        (("/api",), b"/API/x"),  # case-sensitive, like paths
        (("/api",), b"/%61pi/x"),  # never decoded
        (("/apps/*",), b"/apps"),
        (("/apps/*",), b"/apps/"),
        (("/apps/*",), b"/apps//y"),  # the one segment must be non-empty
        (("/apps/*",), b"/appsx/y"),
    ],
)
async def test_no_match_leaves_the_request_alone(prefixes: tuple[str, ...], path: bytes) -> None:
    assert await run(make(*prefixes), path) == (path, None)


async def test_first_matching_prefix_in_list_order_wins() -> None:
    assert await run(make("/a", "/a/b"), b"/a/b/c") == (b"/b/c", b"/a")
    assert await run(make("/a/b", "/a"), b"/a/b/c") == (b"/c", b"/a/b")


async def test_a_segment_prefix_that_does_not_match_falls_through() -> None:
    assert await run(make("/apps/*", "/apps"), b"/apps/") == (b"/", b"/apps")


async def test_query_and_headers_are_kept() -> None:
    state = request_state(b"/api/items", b"page=2&q=/api")
    headers = list(state.headers)
    await make("/api").request(state)
    assert (state.path, state.query, state.headers) == (b"/items", b"page=2&q=/api", headers)


async def test_no_match_keeps_a_forwarded_prefix_set_earlier() -> None:
    state = request_state(b"/other")
    state.forwarded_prefix = b"/outer"
    await make("/api").request(state)
    assert (state.path, state.forwarded_prefix) == (b"/other", b"/outer")


def test_strip_reports_the_new_path_and_the_removed_part() -> None:
    middleware = make("/api")
    assert middleware.strip(b"/api/x") == (b"/x", b"/api")
    assert middleware.strip(b"/x") is None
