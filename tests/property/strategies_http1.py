"""Hypothesis strategies for the HTTP/1.1 adapter properties (``test_http1_properties.py``).

Kept apart from ``strategies.py`` (owned by others); same conventions: each strategy says what it
generates. Requests are plain values (``GeneratedRequest``) that the tests serialise through a
real h11 client or through ``Http1Client``, so the oracle is never our own writer alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import h11
from hypothesis import strategies as st

from a3s_gateway.protocols.headers import Headers

TCHAR: Final = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
#: Visible ASCII and obs-text: what a field value may contain between its first and last byte.
VALUE_BYTES: Final = bytes(range(0x21, 0x7F)) + bytes(range(0x80, 0x100))
PATH_CHARS: Final = "abcxyz019-._~!$&'()*+,;=:@/"


@dataclass(frozen=True)
class GeneratedRequest:
    """A valid HTTP/1.1 request; ``chunked`` picks the body framing when there is a body."""

    method: bytes
    target: bytes
    headers: Headers
    body: list[bytes] = field(default_factory=list)
    chunked: bool = False
    trailers: Headers = field(default_factory=list)

    def wire_headers(self) -> Headers:
        """The header lines including framing, as a client sends them."""
        headers = [(b"host", b"backend.test"), *self.headers]
        if self.chunked:
            headers.append((b"transfer-encoding", b"chunked"))
        elif self.body:
            headers.append((b"content-length", b"%d" % sum(map(len, self.body))))
        return headers

    def h11_bytes(self) -> bytes:
        """The request as a real h11 client writes it."""
        client = h11.Connection(h11.CLIENT)
        wire = client.send(
            h11.Request(method=self.method, target=self.target, headers=self.wire_headers())
        )
        for chunk in self.body:
            wire += client.send(h11.Data(data=chunk))
        return wire + client.send(h11.EndOfMessage(headers=self.trailers or None))


def field_names() -> st.SearchStrategy[bytes]:
    """Lower-case extension field names (``x-`` + token), never one with framing meaning."""
    return st.text(alphabet=TCHAR, min_size=1, max_size=12).map(lambda s: ("x-" + s).encode())


def field_values() -> st.SearchStrategy[bytes]:
    """Field values: visible bytes and obs-text with inner spaces/tabs, no outer whitespace."""
    word = st.binary(min_size=1, max_size=8).map(
        lambda raw: bytes(VALUE_BYTES[b % len(VALUE_BYTES)] for b in raw)
    )
    return st.lists(word, max_size=4).flatmap(
        lambda words: st.sampled_from([b" ", b"\t", b"  "]).map(lambda sep: sep.join(words))
    )


def header_lists(max_size: int = 6) -> st.SearchStrategy[Headers]:
    """Extension header lists, repeated names allowed, in order."""
    return st.lists(st.tuples(field_names(), field_values()), max_size=max_size)


def targets() -> st.SearchStrategy[bytes]:
    """Origin-form targets with an optional query."""
    path = st.text(alphabet=PATH_CHARS, max_size=20).map(lambda s: ("/" + s).encode())
    query = st.text(alphabet=PATH_CHARS + "?%", max_size=10).map(lambda s: s.encode())
    return st.tuples(path, st.none() | query).map(
        lambda pq: pq[0] if pq[1] is None else pq[0] + b"?" + pq[1]
    )


@st.composite
def requests(draw: st.DrawFn) -> GeneratedRequest:
    """Valid requests: GET/HEAD/DELETE without a body, POST/PUT with zero or more body chunks."""
    method = draw(st.sampled_from([b"GET", b"HEAD", b"DELETE", b"POST", b"PUT", b"PATCH"]))
    body: list[bytes] = []
    chunked = False
    trailers: Headers = []
    if method in (b"POST", b"PUT", b"PATCH"):
        body = draw(st.lists(st.binary(min_size=1, max_size=40), max_size=4))
        chunked = draw(st.booleans())
        if chunked:
            trailers = draw(header_lists(max_size=2))
    return GeneratedRequest(method, draw(targets()), draw(header_lists()), body, chunked, trailers)


def splits(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """Every way of cutting ``data`` into consecutive non-empty reads."""
    cuts = st.lists(st.integers(min_value=1, max_value=max(1, len(data) - 1)), max_size=12)
    return cuts.map(
        lambda points: [
            data[a:b]
            for a, b in zip(
                [0, *sorted(set(points))], [*sorted(set(points)), len(data)], strict=True
            )
            if data[a:b]
        ]
    )


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few bytes replaced, inserted or deleted (biased to HTTP metacharacters)."""
    out = bytearray(data)
    special = st.sampled_from(list(b"\r\n \t:;,0-xX\x00\x7f\x80" + b"chunked"))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        pos = draw(st.integers(min_value=0, max_value=len(out)))
        op = draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = draw(special | st.integers(min_value=0, max_value=255))
        if op == "insert" or pos == len(out):
            out.insert(pos, byte)
        elif op == "replace":
            out[pos] = byte
        else:
            del out[pos]
    return bytes(out)
