"""Properties of ``strip-prefix`` (SPEC §8.10) against an independent regex oracle."""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from a3s_gateway.middleware.contract import RequestState
from a3s_gateway.middleware.rewrite import StripPrefixMiddleware
from tests.property.strategies import raw_paths

SEGMENTS = st.sampled_from(["a", "b", "api", "v1", "%2F", "%20", ".", "..", "", "é"])


@st.composite
def prefix_texts(draw: st.DrawFn) -> str:
    """Configured prefixes: ``/`` + segments, sometimes with a trailing ``/`` or ``/*``."""
    text = "/" + "/".join(draw(st.lists(SEGMENTS, max_size=3)))
    ending = draw(st.sampled_from(["", "", "/", "/*"]))
    return text.rstrip("/") + ending if ending else text


PREFIX_LISTS = st.lists(prefix_texts(), min_size=1, max_size=4)


@st.composite
def paths_near(draw: st.DrawFn, prefixes: list[str]) -> bytes:
    """Mostly a configured prefix (``*`` replaced by a segment) plus a tail, else any path."""
    tail = draw(st.lists(SEGMENTS, max_size=3))
    if draw(st.booleans()):
        return draw(raw_paths())
    prefix = draw(st.sampled_from(prefixes)).replace("*", draw(SEGMENTS))
    joiner = draw(st.sampled_from(["", "/"]))
    return (prefix + joiner + "/".join(tail)).encode()


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[str], bytes]:
    prefixes = draw(PREFIX_LISTS)
    return prefixes, draw(paths_near(prefixes))


def oracle(prefixes: list[str], path: bytes) -> bytes | None:
    """The part the first matching prefix removes, read straight off SPEC §8.10."""
    for prefix in prefixes:
        if prefix.endswith("/*"):
            found = re.match(re.escape(prefix[:-1].encode()) + rb"[^/]+(?=/|\Z)", path)
            if found is not None:
                return found.group()
        elif path.startswith(prefix.encode()):
            return prefix.encode()
    return None


@given(cases())
@example((["/api"], b"/api"))
@example((["/apps/*"], b"/apps/"))
@example((["/"], b"/"))
@example((["/*"], b"/x"))
def test_strip_agrees_with_the_oracle(case: tuple[list[str], bytes]) -> None:
    prefixes, path = case
    stripped = StripPrefixMiddleware("p", prefixes=prefixes).strip(path)
    removed = oracle(prefixes, path)
    if removed is None:
        assert stripped is None
        return
    assert stripped is not None
    result, got = stripped
    assert got == removed
    assert result.startswith(b"/")
    rest = path[len(removed) :]
    if rest.startswith(b"/"):
        assert removed + result == path  # nothing added: the path is split in two
    else:
        assert result == b"/" + rest  # one "/" added, also for an empty rest


@given(cases(), st.binary(max_size=20))
async def test_request_side_keeps_the_query_and_sets_the_prefix(
    case: tuple[list[str], bytes], query: bytes
) -> None:
    prefixes, path = case
    state = RequestState(
        method=b"GET",
        path=path,
        query=query,
        headers=[],
        authority=b"example.com",
        client_ip="192.0.2.1",
        peer_ip="192.0.2.1",
        tls=False,
    )
    assert await StripPrefixMiddleware("p", prefixes=prefixes).request(state) is None
    assert state.query == query
    removed = oracle(prefixes, path)
    if removed is None:
        assert (state.path, state.forwarded_prefix) == (path, None)
    else:
        assert state.forwarded_prefix == removed
        assert state.path.startswith(b"/")
        assert len(state.path) <= len(path) - len(removed) + 1


@given(PREFIX_LISTS, raw_paths())
def test_a_path_without_any_prefix_is_unchanged(prefixes: list[str], path: bytes) -> None:
    bases = [p[:-1] if p.endswith("/*") else p for p in prefixes]
    if any(path.startswith(base.encode()) for base in bases):
        return
    assert StripPrefixMiddleware("p", prefixes=prefixes).strip(path) is None
