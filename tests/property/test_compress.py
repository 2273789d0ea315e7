"""Properties of the ``compress`` middleware (SPEC §8.15).

* For random bodies, chunkings, minimum sizes, known or unknown lengths and client choices, the
  bytes the filter emits (every ``feed`` output, then ``finish``) decode back to the body with
  the coding named in ``Content-Encoding`` (br, gzip, deflate), and are the body itself when
  the response is not compressed; every output so far decodes to exactly the input so far; a
  body of unknown length is held exactly until ``compress_min_bytes`` were seen.
* The ``Accept-Encoding`` parser never raises on arbitrary bytes; for generated lists of
  codings with weights (valid, malformed, repeated, upper-case, ``*``) the choice equals an
  independent model of RFC 9110 §12.5.3 built from the generated elements, and a coding given
  ``q=0`` is never chosen whatever surrounds it.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from itertools import pairwise
from typing import Literal, TypeAlias

import brotli
from hypothesis import example, given
from hypothesis import strategies as st

from a3s_gateway.config.schema_middlewares import Compress
from a3s_gateway.middleware.compress import CompressMiddleware, negotiate
from a3s_gateway.middleware.contract import RequestState
from a3s_gateway.protocols.headers import Headers

Coding: TypeAlias = Literal["br", "gzip", "deflate"]
CODINGS: tuple[Coding, ...] = ("br", "gzip", "deflate")


def state(accept: bytes | None) -> RequestState:
    headers: Headers = [] if accept is None else [(b"accept-encoding", accept)]
    return RequestState(
        method=b"GET",
        path=b"/",
        query=b"",
        headers=headers,
        authority=b"a.example",
        client_ip="192.0.2.1",
        peer_ip="192.0.2.1",
        tls=False,
    )


def streaming_decoder(coding: bytes) -> Callable[[bytes], bytes]:
    if coding == b"br":
        return brotli.Decompressor().process
    return zlib.decompressobj(31 if coding == b"gzip" else 15).decompress


def values(headers: Headers, name: bytes) -> list[bytes]:
    return [value for field, value in headers if field == name]


#: Bodies: compressible text, random bytes, or both.
bodies = st.one_of(
    st.binary(max_size=6000),
    st.text(alphabet='abc \n{}":,0123', max_size=6000).map(str.encode),
    st.tuples(st.binary(max_size=500), st.text(max_size=2000)).map(
        lambda parts: parts[0] + parts[1].encode()
    ),
)


@st.composite
def chunkings(draw: st.DrawFn, body: bytes) -> list[bytes]:
    """``body`` cut at random points, empty chunks included."""
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=12)))
    edges = [0, *cuts, len(body)]
    return [body[start:end] for start, end in pairwise(edges)]


@given(
    data=st.data(),
    body=bodies,
    accept=st.sampled_from([b"br", b"gzip", b"deflate", b"identity", b"*;q=0", None]),
    min_bytes=st.integers(0, 3000),
    known_length=st.booleans(),
    level=st.integers(1, 9),
)
@example(data=None, body=b"", accept=b"gzip", min_bytes=0, known_length=False, level=6)
def test_output_decodes_to_the_body(
    data: st.DataObject | None,
    body: bytes,
    accept: bytes | None,
    min_bytes: int,
    known_length: bool,
    level: int,
) -> None:
    chunks = [body] if data is None else data.draw(chunkings(body))
    middleware = CompressMiddleware.from_config(
        "zip", Compress(compress_min_bytes=min_bytes, compress_level=level)
    )
    headers: Headers = [(b"content-type", b"application/json")]
    if known_length:
        headers.append((b"content-length", str(len(body)).encode()))
    body_filter = middleware.body_filter(state(accept), 200, headers)
    chosen = accept in (b"br", b"gzip", b"deflate")
    size_ok = not known_length or len(body) >= min_bytes
    if body_filter is None:
        assert not (chosen and size_ok)
        assert values(headers, b"content-encoding") == []
        assert values(headers, b"vary") == ([b"Accept-Encoding"] if size_ok else [])
        return  # the relay sends the body as it is
    assert chosen
    assert accept is not None
    assert size_ok
    sent = b""
    fed = 0
    decoder: Callable[[bytes], bytes] | None = None
    decoded = b""
    for chunk in chunks:
        out = body_filter.feed(chunk)
        fed += len(chunk)
        # Unknown length: held (nothing out, head not final) exactly until min_bytes were seen.
        assert body_filter.ready == (known_length or fed >= min_bytes)
        if not body_filter.ready:
            assert out == b""
            continue
        assert values(headers, b"content-encoding") == [accept]
        decoder = decoder or streaming_decoder(accept)
        sent += out
        decoded += decoder(out)
        assert decoded == body[:fed]
    tail = body_filter.finish()
    assert body_filter.ready
    encoding = values(headers, b"content-encoding")
    if encoding:
        assert encoding == [accept]
        assert values(headers, b"content-length") == []
        assert values(headers, b"vary") == [b"Accept-Encoding"]
        decoder = decoder or streaming_decoder(accept)
        assert decoded + decoder(tail) == body
    else:  # unknown length, ended before min_bytes: as it is, with a length
        assert not known_length
        assert len(body) < min_bytes
        assert sent == b""
        assert tail == body
        assert values(headers, b"content-length") == [str(len(body)).encode()]
        assert values(headers, b"vary") == []


# -- Accept-Encoding ------------------------------------------------------------------------


@given(st.lists(st.binary(max_size=200), max_size=4), st.permutations(CODINGS))
def test_parser_never_raises_and_chooses_a_configured_coding(
    lines: list[bytes], encodings: list[str]
) -> None:
    chosen = negotiate(lines, encodings)
    assert chosen is None or chosen in encodings


@given(st.lists(st.text(max_size=100), max_size=4), st.sampled_from(CODINGS))
def test_a_coding_given_q_zero_is_never_chosen(lines: list[str], excluded: str) -> None:
    raw = [line.encode("utf-8", "surrogatepass") for line in lines]
    raw.append(b"%s;q=0" % excluded.upper().encode())
    assert negotiate(raw, CODINGS) != excluded


#: A weight: valid qvalues as (thousandths, spelling), or a malformed one, which counts as 0.
weights = st.one_of(
    st.none(),  # no q parameter: 1000
    st.integers(0, 1000).map(lambda q: (q, f"{q // 1000}.{q % 1000:03d}".rstrip("0"))),
    st.sampled_from(["2", "-1", "0.1234", "1.5", "x", "", ".5", "0,5"]).map(lambda t: (0, t)),
)
names = st.sampled_from(["br", "gzip", "deflate", "x-gzip", "identity", "*", "zstd", "compress"])


@st.composite
def accept_elements(draw: st.DrawFn) -> tuple[str, int, str]:
    """One list element: the coding it names (aliases resolved), its weight, its text."""
    name = draw(names)
    weight = draw(weights)
    spelled = "".join(c.upper() if draw(st.booleans()) else c for c in name)
    if weight is None:
        return (name, 1000, spelled)
    q, text = weight
    return (name, q, f"{spelled}{draw(st.sampled_from([';', ' ; ']))}q={text}")


def model_choice(elements: list[tuple[str, int, str]], encodings: list[str]) -> str | None:
    """RFC 9110 §12.5.3 over the generated elements: a coding listed more than once keeps its
    lowest weight; unlisted ones take ``*``'s or 0; the highest weight > 0 wins, ties by
    ``encodings`` order."""
    listed: dict[str, int] = {}
    for name, q, _ in elements:
        key = "gzip" if name == "x-gzip" else name
        listed[key] = min(listed.get(key, q), q)
    ranked = [(listed.get(coding, listed.get("*", 0)), coding) for coding in encodings]
    best = max((q for q, _ in ranked), default=0)
    if best == 0:
        return None
    return next(coding for q, coding in ranked if q == best)


@given(
    st.lists(st.lists(accept_elements(), max_size=5), min_size=1, max_size=3),
    st.permutations(CODINGS),
)
def test_choice_follows_the_weights(
    lines: list[list[tuple[str, int, str]]], encodings: list[str]
) -> None:
    raw = [", ".join(text for _, _, text in line).encode() for line in lines]
    everything = [element for line in lines for element in line]
    assert negotiate(raw, encodings) == model_choice(everything, encodings)
