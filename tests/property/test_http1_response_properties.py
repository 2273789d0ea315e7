"""``ResponseWriter`` against h11's own server writer (DESIGN.md §0: our serialisation of a
validated head must agree with h11). For any request line (method, version, ``Connection``),
any valid response head and body, both produce the same status line, the same header fields
(names compared case-insensitively: h11 title-cases the fields it adds, we write lower case)
and byte-identical body framing; and a header value carrying CR, LF or NUL is always refused.
"""

from __future__ import annotations

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from a3s_gateway.protocols.events import ProtocolViolation
from a3s_gateway.protocols.http1_response import PHRASES, ResponseWriter, client_keep_alive
from tests.property.strategies_http1 import TCHAR, VALUE_BYTES

_OWN = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length"}

names = st.text(TCHAR, min_size=1, max_size=12).map(str.encode).filter(lambda n: n not in _OWN)
values = st.one_of(
    st.just(b""),
    st.binary(min_size=1, max_size=20).map(
        lambda raw: bytes(VALUE_BYTES[b % len(VALUE_BYTES)] for b in raw)
    ),
    st.builds(lambda a, b: a + b" \t " + b, st.just(b"x"), st.just(b"y")),
)
headers = st.lists(st.tuples(names, values), max_size=6)
chunks = st.lists(st.binary(min_size=1, max_size=40), max_size=4)


def h11_server(method: bytes, version: bytes, close: bool) -> h11.Connection:
    conn = h11.Connection(h11.SERVER)
    extra = b"connection: close\r\n" if close else b""
    conn.receive_data(b"%b / HTTP/%b\r\nhost: a\r\n%b\r\n" % (method, version, extra))
    assert isinstance(conn.next_event(), h11.Request)
    assert isinstance(conn.next_event(), h11.EndOfMessage)
    return conn


def split_head(wire: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    """The status line, the fields and the rest. ``Host`` lines come first: h11 writes them
    before every other field of any head (RFC 9112's advice for requests), a response's
    included, while our writer keeps a response's fields in the order given (found by
    hypothesis in CI: a response carrying ``0:`` then ``Host:``)."""
    head, _, body = wire.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    fields = []
    for line in lines:
        name, _, value = line.partition(b": ")
        fields.append((name.lower(), value))
    hosts = [line for line in fields if line[0] == b"host"]
    return status_line, hosts + [line for line in fields if line[0] != b"host"], body


@given(
    method=st.sampled_from([b"GET", b"HEAD", b"POST"]),
    version=st.sampled_from([b"1.0", b"1.1"]),
    client_close=st.booleans(),
    status=st.sampled_from([200, 201, 204, 206, 304, 404, 500, 503]),
    reason=st.sampled_from([b"", b"OK", b"Not Found", b"x\ty z"]),
    fields=headers,
    body=chunks,
    with_length=st.booleans(),
    trailers=headers,
)
def test_writer_agrees_with_h11(
    method: bytes,
    version: bytes,
    client_close: bool,
    status: int,
    reason: bytes,
    fields: list[tuple[bytes, bytes]],
    body: list[bytes],
    with_length: bool,
    trailers: list[tuple[bytes, bytes]],
) -> None:
    conn = h11_server(method, version, client_close)
    request_headers = [(b"connection", b"close")] if client_close else []
    keep_alive = client_keep_alive(version, request_headers)
    writer = ResponseWriter(method, version, keep_alive)
    sized = list(fields)
    if with_length:
        sized.append((b"content-length", str(sum(map(len, body))).encode()))
    ours = writer.head(status, sized, reason, close=False)
    # Where the head has no reason phrase we write the usual one (h11 writes none).
    phrase = reason or PHRASES.get(status, b"")
    theirs = conn.send(h11.Response(status_code=status, headers=sized, reason=phrase))
    assert split_head(ours) == split_head(theirs)
    bodiless = status in (204, 304) or method == b"HEAD"
    for chunk in body:
        data = writer.data(chunk)
        assert data == (b"" if bodiless else conn.send(h11.Data(data=chunk)))
    chunked = b"transfer-encoding: chunked" in ours and not bodiless
    ending = writer.end(trailers)
    expected = conn.send(h11.EndOfMessage(headers=trailers if chunked else []))
    assert ending == expected
    assert writer.done
    assert writer.keep_alive == (conn.our_state is h11.DONE)


@given(
    name=names,
    value=st.binary(max_size=10),
    bad=st.sampled_from([b"\r", b"\n", b"\x00", b"\r\n"]),
    where=st.sampled_from(["value", "name", "reason", "trailer"]),
)
def test_control_bytes_never_reach_the_wire(
    name: bytes, value: bytes, bad: bytes, where: str
) -> None:
    poisoned = value[:5] + bad + value[5:]
    with pytest.raises(ProtocolViolation) as caught:
        write_poisoned(name, poisoned, bad, where)
    assert caught.value.status == 500


def write_poisoned(name: bytes, poisoned: bytes, bad: bytes, where: str) -> None:
    writer = ResponseWriter(b"GET", b"1.1", keep_alive=True)
    if where == "value":
        writer.head(200, [(name, b"a" + poisoned + b"b")], b"", close=False)
    elif where == "name":
        writer.head(200, [(name + bad, b"v")], b"", close=False)
    elif where == "reason":
        writer.head(200, [], b"OK" + bad, close=False)
    else:
        writer.head(200, [], b"", close=False)
        writer.end([(name, b"a" + poisoned + b"b")])
