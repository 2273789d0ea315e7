"""Request trailers never reach the exchange, whatever they hold and however the bytes arrive.

The HTTP/1.1 adapter reports a chunked body's trailers faithfully (``EndOfBody(trailers)``);
the downstream seam ends every request body with a trailer-less ``EndOfBody`` (as NGINX drops
them), both when the body came whole with its head (``take_buffered_body``) and when it is
pumped read by read (``receive_body``). A trailer could otherwise carry ``Host``,
``Content-Length``, ``Authorization`` or an identity field past the header-side rules.
"""

from __future__ import annotations

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from a3s_gateway.protocols.events import BodyChunk, EndOfBody, RequestHead
from a3s_gateway.protocols.http1 import Http1Server
from a3s_gateway.server.http1_downstream import Http1Downstream
from tests.property.strategies_http1 import GeneratedRequest, header_lists, requests, splits

FORBIDDEN = st.sampled_from(
    [
        (b"host", b"admin.example"),
        (b"content-length", b"1000"),
        (b"x-forwarded-for", b"10.9.8.7"),
        (b"authorization", b"Bearer forged"),
        (b"x-user", b"root"),
    ]
)


@st.composite
def chunked_with_trailers(draw: st.DrawFn) -> GeneratedRequest:
    request = draw(requests().filter(lambda r: r.chunked))
    trailers = draw(st.lists(FORBIDDEN, min_size=1, max_size=3)) + draw(header_lists(2))
    return GeneratedRequest(
        request.method, request.target, request.headers, request.body, True, trailers
    )


def chunked_bytes(request: GeneratedRequest) -> bytes:
    """The request on the wire, written here (h11 refuses to send framing fields as trailers)."""
    head = request.method + b" " + request.target + b" HTTP/1.1\r\nhost: backend.test\r\n"
    head += b"".join(name + b": " + value + b"\r\n" for name, value in request.headers)
    head += b"transfer-encoding: chunked\r\n\r\n"
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in request.body if chunk)
    trailers = b"".join(name + b": " + value + b"\r\n" for name, value in request.trailers)
    return head + body + b"0\r\n" + trailers + b"\r\n"


@settings(max_examples=60, deadline=None)
@given(st.data(), chunked_with_trailers())
async def test_request_trailers_never_reach_the_exchange(
    data: st.DataObject, request: GeneratedRequest
) -> None:
    wire = chunked_bytes(request)
    reads = data.draw(splits(wire))
    ours, theirs = trio.testing.memory_stream_pair()
    down = Http1Downstream(ours, Http1Server(), body_idle=5.0)

    async def client() -> None:
        for piece in reads:  # one read per piece: the downstream sees the split
            await theirs.send_all(piece)
            await trio.testing.wait_all_tasks_blocked()

    chunks: list[BodyChunk] = []
    end: EndOfBody | None = None
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client)
            while not down.pending:
                await down.fill()
            head = down.pending.popleft()
            assert isinstance(head, RequestHead)
            for event in down.take_buffered_body() or []:
                if isinstance(event, EndOfBody):
                    end = event
                else:
                    chunks.append(event)
            while end is None:
                event = await down.receive_body()
                if isinstance(event, EndOfBody):
                    end = event
                else:
                    chunks.append(event)
    assert end == EndOfBody()
    assert not end.trailers
    assert b"".join(chunk.data for chunk in chunks) == b"".join(request.body)
