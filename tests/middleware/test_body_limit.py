"""``body-limit`` (SPEC §8.11): the Content-Length check, the limit recorded for streaming,
and the streaming count of ``server/body_limit.LimitedDownstream``."""

from __future__ import annotations

import json
from collections import deque

import pytest

from a3s_gateway.middleware import RequestState
from a3s_gateway.middleware.body_limit import BodyLimitMiddleware, too_large
from a3s_gateway.protocols.events import BodyChunk, EndOfBody
from a3s_gateway.server.limited_downstream import BodyTooLarge, LimitedDownstream
from a3s_gateway.upstream.seam import Handover, UpgradeUnavailable


def state(*headers: tuple[bytes, bytes]) -> RequestState:
    return RequestState(
        method=b"POST", path=b"/", query=b"", headers=list(headers), authority=b"a",
        client_ip="192.0.2.1", peer_ip="192.0.2.1", tls=False,
    )  # fmt: skip


async def test_a_declared_length_over_the_limit_is_answered_at_once() -> None:
    limit = BodyLimitMiddleware("small", limit=10)
    answer = await limit.request(state((b"content-length", b"11")))
    assert answer is not None
    assert answer.head.status == 413
    assert answer.close
    assert json.loads(answer.body) == {"error": "request body too large", "max_bytes": 10}


async def test_within_the_limit_the_smallest_limit_is_recorded_for_streaming() -> None:
    request = state((b"content-length", b"10"))
    assert await BodyLimitMiddleware("a", limit=10).request(request) is None
    assert await BodyLimitMiddleware("b", limit=50).request(request) is None
    assert request.body_limit == 10
    chunked = state((b"transfer-encoding", b"chunked"))
    assert await BodyLimitMiddleware("c", limit=5).request(chunked) is None
    assert chunked.body_limit == 5


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BodyLimitMiddleware("zero", limit=0)


class Scripted:
    """A Downstream with a scripted request body."""

    http_version = b"1.1"
    request_complete = False
    response_started = False

    def __init__(self, events: list[BodyChunk | EndOfBody]) -> None:
        self.events = deque(events)

    async def receive_body(self) -> BodyChunk | EndOfBody:
        return self.events.popleft()

    def take_buffered_body(self) -> list[BodyChunk | EndOfBody] | None:
        taken = list(self.events)
        self.events.clear()
        return taken

    async def send(self, event: object) -> None: ...

    async def send_batch(self, events: object) -> None: ...

    def close_after_response(self) -> None: ...

    def acknowledge(self, nbytes: int) -> None: ...

    def abort(self) -> None: ...

    def take_over(self) -> Handover:
        raise UpgradeUnavailable


async def test_the_chunk_that_crosses_the_limit_raises() -> None:
    down = LimitedDownstream(Scripted([BodyChunk(b"12345"), BodyChunk(b"678"), EndOfBody()]), 7)
    assert await down.receive_body() == BodyChunk(b"12345")
    with pytest.raises(BodyTooLarge) as caught:
        await down.receive_body()
    assert (caught.value.status, caught.value.limit) == (413, 7)


async def test_exactly_the_limit_passes_and_a_buffered_body_is_counted_too() -> None:
    exact = LimitedDownstream(Scripted([BodyChunk(b"1234567"), EndOfBody()]), 7)
    assert await exact.receive_body() == BodyChunk(b"1234567")
    assert await exact.receive_body() == EndOfBody()
    buffered = LimitedDownstream(Scripted([BodyChunk(b"12345678"), EndOfBody()]), 7)
    with pytest.raises(BodyTooLarge):
        buffered.take_buffered_body()


def test_the_413_body_names_the_limit() -> None:
    response = too_large(4096)
    assert response.body == b'{"error":"request body too large","max_bytes":4096}'
    assert (b"content-length", str(len(response.body)).encode()) in response.head.headers
