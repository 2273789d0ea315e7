"""Properties of what a TCP connection's first bytes go through (SPEC §3.7, §4.11, §6.3; issue
#20): the ClientHello peek and the PROXY header read never block beyond their bound and never
raise (but ``ProxyHeaderError``) whatever the first bytes, however they are cut into reads and
timed, and whether EOF or silence follows; every byte they read is handed back in order; and
the relay forwards the peeked bytes and everything after them unchanged, both ways, with
half-close.

Each example runs in its own ``trio.run`` on a ``MockClock`` that jumps as soon as every task
waits, so a delay or a bound costs no real time and elapsed times are exact.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import trio
import trio.testing
from hypothesis import example, given
from hypothesis import strategies as st

from a3s_gateway.observability.stream_stats import StreamStats
from a3s_gateway.protocols.proxy_protocol import MALFORMED_REASONS as PROXY_REASONS
from a3s_gateway.protocols.proxy_protocol import (
    Malformed,
    NeedMore,
    NotProxy,
    ProxyHeader,
    parse_proxy_header,
)
from a3s_gateway.routing.clienthello import MALFORMED_REASONS as HELLO_REASONS
from a3s_gateway.routing.clienthello import Complete, NotTls, parse_client_hello
from a3s_gateway.routing.clienthello import Malformed as BadHello
from a3s_gateway.routing.clienthello import NeedMore as HelloNeedsMore
from a3s_gateway.server.preamble import (
    Hello,
    ProxyHeaderError,
    peek_client_hello,
    read_proxy_header,
)
from a3s_gateway.server.tcp_relay import RelayStats, relay_tcp
from tests.property.strategies import (
    client_hellos,
    handshake_records,
    mutated_hellos,
    tls_like_bytes,
)
from tests.property.test_proxy_protocol_properties import (
    Generated,
    mutated_headers,
    proxy_headers,
    v1_like_bytes,
    v2_like_bytes,
)

MemoryStream = trio.StapledStream[trio.testing.MemorySendStream, trio.testing.MemoryReceiveStream]

#: The peek's and the PROXY read's bound in these tests (the defaults are 5 s and 5 s).
SECONDS = 5.0
#: Float noise allowed when comparing virtual times.
EPSILON = 1e-9
#: A hang fails at once in virtual time instead of stalling the suite.
HANG = 10_000.0

ENDINGS = st.sampled_from(["eof", "silence", "close"])


#: Real seconds one example may take: a task that never blocks (a busy loop) keeps the mock
#: clock from jumping, so ``HANG`` alone cannot end it.
REAL_LIMIT = 60.0


class BusyLoopError(Exception):
    """An example ran ``REAL_LIMIT`` seconds of real time."""


def _alarm(signum: int, frame: object) -> None:
    raise BusyLoopError(f"an example ran {REAL_LIMIT:g} s of real time: a task never blocks")


@contextmanager
def real_time_limit(seconds: float) -> Iterator[None]:
    """Raise ``BusyLoopError`` in the main thread after ``seconds`` of real time (elsewhere: no
    bound)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run(main: Callable[[], Awaitable[None]]) -> None:
    """``main`` in a fresh trio run on an autojumping mock clock, bounded in virtual time and,
    against a busy loop, in real time."""

    async def bounded() -> None:
        with trio.fail_after(HANG):
            await main()

    with real_time_limit(REAL_LIMIT):
        trio.run(bounded, clock=trio.testing.MockClock(autojump_threshold=0))


# --- strategies (only these tests deliver bytes over time) ---


@dataclass(frozen=True)
class Delivery:
    """How a peer sends ``data``: in ``pieces`` (which concatenate to it), each after its
    delay, then ``ending``: ``eof`` (write side shut), ``close`` (the peer closed) or
    ``silence`` (nothing more, ever)."""

    data: bytes
    pieces: tuple[tuple[float, bytes], ...]
    ending: str


@st.composite
def deliveries(
    draw: st.DrawFn, data: bytes, *, max_delay: float = 3.0, ending: str | None = None
) -> Delivery:
    """``data`` cut at random points into reads, each sent after a random delay."""
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(data) - 1)), max_size=12)))
    bounds = [0, *(cut for cut in cuts if cut < len(data)), len(data)]
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds) if data[a:b]]
    delay = st.sampled_from([0.0, max_delay / 2]) | st.floats(0, max_delay)
    timed = tuple((draw(delay), piece) for piece in pieces)
    return Delivery(data, timed, ending if ending is not None else draw(ENDINGS))


def first_bytes() -> st.SearchStrategy[bytes]:
    """What a client may send first: anything, TLS-looking bytes, broken hellos."""
    return st.one_of(st.binary(max_size=300), tls_like_bytes(), mutated_hellos())


def proxy_like_bytes() -> st.SearchStrategy[bytes]:
    """What a trusted peer may send first: anything, near-headers, broken headers."""
    return st.one_of(st.binary(max_size=200), v1_like_bytes(), v2_like_bytes(), mutated_headers())


# --- the harness: a peer that delivers, a reader that records ---


class Recorder(trio.abc.ReceiveStream):
    """A receive-only view of a memory stream (the code under test cannot write) that
    records every byte read through it."""

    def __init__(self, inner: MemoryStream) -> None:
        self.inner = inner
        self.got = bytearray()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        assert max_bytes is None or 1 <= max_bytes <= 65536
        data = await self.inner.receive_some(max_bytes)
        self.got += data
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


class Peer:
    """Sends a ``Delivery`` into a memory stream and counts what it has sent so far."""

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        self.reader_side, self.stream = trio.testing.memory_stream_pair()
        self.sent = 0

    async def send(self) -> None:
        for delay, piece in self.delivery.pieces:
            await trio.sleep(delay)
            await self.stream.send_all(piece)
            self.sent += len(piece)
        if self.delivery.ending == "eof":
            await self.stream.send_eof()
        elif self.delivery.ending == "close":
            await self.stream.aclose()

    async def rest(self) -> bytes:
        """Once the sender stopped: the bytes nobody read (EOF is sent if it was not)."""
        with contextlib.suppress(trio.ClosedResourceError):
            await self.stream.send_eof()
        out = bytearray()
        while data := await self.reader_side.receive_some():
            out += data
        return bytes(out)


@dataclass
class Outcome:
    """What a call under test did: its result (or error), how long it took, what it read,
    what the peer had sent when it returned, and the bytes left unread afterwards."""

    result: object
    elapsed: float
    got: bytes
    sent_then: int
    sent: int
    rest: bytes


async def drive(
    delivery: Delivery,
    call: Callable[[trio.abc.ReceiveStream], Awaitable[object]],
    *,
    finish: bool = False,
) -> Outcome:
    """Run ``call`` on the reading end while the peer delivers; when it returns, stop the peer
    (or, with ``finish``, let it send the rest)."""
    peer = Peer(delivery)
    reader = Recorder(peer.reader_side)
    result: object
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.send)
        start = trio.current_time()
        try:
            result = await call(reader)
        except ProxyHeaderError as error:
            result = error
        elapsed = trio.current_time() - start
        sent_then = peer.sent
        if not finish:
            nursery.cancel_scope.cancel()
    rest = await peer.rest()
    return Outcome(result, elapsed, bytes(reader.got), sent_then, peer.sent, rest)


def check_stream_accounting(outcome: Outcome, delivery: Delivery) -> None:
    """The call read a prefix of what had arrived, in order, and left the rest in the stream."""
    assert outcome.elapsed <= SECONDS + EPSILON  # never beyond the bound
    assert len(outcome.got) <= outcome.sent_then
    assert outcome.got + outcome.rest == delivery.data[: outcome.sent]


# --- the ClientHello peek ---


async def peek(delivery: Delivery, buffered: bytes) -> tuple[Outcome, StreamStats]:
    stats = StreamStats()

    async def call(stream: trio.abc.ReceiveStream) -> Hello | None:
        return await peek_client_hello(stream, buffered, SECONDS, stats=stats, entrypoint="ep")

    outcome = await drive(delivery, call)
    check_stream_accounting(outcome, delivery)
    return outcome, stats


def check_peek(outcome: Outcome, stats: StreamStats, buffered: bytes, delivery: Delivery) -> None:
    """The peek's answer is the parser's on exactly the bytes it read; a timeout is the only
    way to stop undecided, and it happens at the bound."""
    read = buffered + outcome.got
    result = outcome.result
    if result is None:  # EOF before the hello was whole: only after every byte was read
        assert delivery.ending != "silence"
        assert outcome.got == delivery.data
        assert isinstance(parse_client_hello(read), HelloNeedsMore)
        assert stats.client_hello_errors == {}
        return
    assert isinstance(result, Hello)
    assert result.data == read  # every byte read is handed back, in order, nothing else
    parsed = parse_client_hello(read)
    errors: dict[tuple[str, str], int] = {}
    match parsed:
        case Complete(sni=sni, alpn=alpn, consumed=consumed):
            assert consumed == len(read)  # never a byte past the hello's records
            assert (result.sni, result.alpn) == (sni, alpn)
        case BadHello(reason=reason):
            assert reason in HELLO_REASONS
            assert (result.sni, result.alpn) == ("", ())
            errors = {("ep", reason): 1}
        case NotTls():
            assert (result.sni, result.alpn) == ("", ())
        case HelloNeedsMore():
            assert (result.sni, result.alpn) == ("", ())
            assert math.isclose(outcome.elapsed, SECONDS)  # undecided only at the bound
    assert stats.client_hello_errors == errors


@given(
    st.binary(max_size=12),
    first_bytes().flatmap(lambda data: deliveries(data)),
)
@example(b"", Delivery(b"", (), "silence"))
@example(b"", Delivery(b"", (), "eof"))
@example(b"\x16", Delivery(b"\x03\x01\x00", ((5.0, b"\x03\x01\x00"),), "silence"))
@example(b"", Delivery(b"\x16\x03\x01\x00\x05\x01", ((0.0, b"\x16\x03\x01\x00\x05\x01"),), "eof"))
def test_the_peek_is_bounded_total_and_replays_what_it_read(
    buffered: bytes, delivery: Delivery
) -> None:
    async def main() -> None:
        outcome, stats = await peek(delivery, buffered)
        check_peek(outcome, stats, buffered, delivery)

    run(main)


@st.composite
def hellos_in_reads(draw: st.DrawFn) -> tuple[str, tuple[str, ...], bytes, int, Delivery]:
    """A generated hello in random records, some of it already buffered, the rest (and a
    trailer) delivered in random reads, all within a fraction of the bound."""
    message, sni, alpn = draw(client_hellos())
    records = draw(handshake_records(message))
    buffered = draw(st.integers(0, min(len(records), 20)))
    trailer = draw(st.binary(max_size=30))
    delivery = draw(deliveries(records[buffered:] + trailer, max_delay=SECONDS / 20))
    return sni, alpn, records, buffered, delivery


@given(hellos_in_reads())
def test_a_hello_split_across_records_and_reads_gives_its_sni_and_alpn(
    case: tuple[str, tuple[str, ...], bytes, int, Delivery],
) -> None:
    sni, alpn, records, buffered, delivery = case

    async def main() -> None:
        outcome, stats = await peek(delivery, records[:buffered])
        assert outcome.result == Hello(sni, alpn, records)  # not a byte of the trailer
        assert stats.client_hello_errors == {}
        assert records[:buffered] + outcome.got == records

    run(main)


@given(
    client_hellos().flatmap(lambda h: handshake_records(h[0])),
    st.floats(0.3, 2.0),
)
def test_a_hello_trickled_too_slowly_is_cut_off_at_the_bound(records: bytes, every: float) -> None:
    """A byte every ``every`` seconds: what came before the bound is read and returned."""
    pieces = tuple((every, records[i : i + 1]) for i in range(len(records)))

    async def main() -> None:
        delivery = Delivery(records, pieces, "silence")
        outcome, stats = await peek(delivery, b"")
        if every * len(records) < SECONDS:
            assert isinstance(outcome.result, Hello)
            assert outcome.result.data == records
            return
        assert math.isclose(outcome.elapsed, SECONDS)
        assert outcome.result == Hello("", (), outcome.got)
        assert records.startswith(outcome.got)
        assert stats.client_hello_errors == {}

    run(main)


# --- the PROXY header ---


async def read_header(delivery: Delivery, *, finish: bool = False) -> Outcome:
    async def call(stream: trio.abc.ReceiveStream) -> tuple[ProxyHeader | None, bytes]:
        return await read_proxy_header(stream, SECONDS)

    outcome = await drive(delivery, call, finish=finish)
    check_stream_accounting(outcome, delivery)
    return outcome


def check_header(outcome: Outcome, delivery: Delivery) -> None:
    """The answer agrees with the parser on exactly the bytes read, and reading stopped as soon
    as the answer was known (a header's end, or the first byte that rules one out)."""
    got, result = outcome.got, outcome.result
    if isinstance(result, ProxyHeaderError):
        reason = str(result)
        if reason == "timeout":
            assert math.isclose(outcome.elapsed, SECONDS)
            assert got
            assert isinstance(parse_proxy_header(got), NeedMore)
        elif reason == "eof":
            assert delivery.ending != "silence"
            assert got == delivery.data
            assert got
            assert isinstance(parse_proxy_header(got), NeedMore)
        else:
            assert reason in PROXY_REASONS
            assert parse_proxy_header(got) == Malformed(reason)
        return
    assert isinstance(result, tuple)
    header, leftover = result
    if header is None:
        assert leftover == got
        if got:
            assert parse_proxy_header(got) == NotProxy()
        else:  # nothing came before EOF or the bound
            assert delivery.ending != "silence" or math.isclose(outcome.elapsed, SECONDS)
        return
    assert isinstance(header, ProxyHeader)
    assert parse_proxy_header(got) == header
    assert got[header.consumed :] == leftover


@given(
    proxy_like_bytes().flatmap(lambda data: deliveries(data)),
)
@example(Delivery(b"", (), "silence"))
@example(Delivery(b"PROXY", ((0.0, b"PROXY"),), "eof"))
@example(Delivery(b"PROXY", ((0.0, b"PROXY"),), "silence"))
@example(Delivery(b"GET /", ((6.0, b"GET /"),), "eof"))
def test_the_proxy_read_is_bounded_and_raises_only_its_error(delivery: Delivery) -> None:
    async def main() -> None:
        check_header(await read_header(delivery), delivery)

    run(main)


@st.composite
def headers_in_reads(draw: st.DrawFn) -> tuple[Generated, bytes, Delivery]:
    """A valid header and a payload, cut into random reads well within the bound."""
    generated = draw(proxy_headers())
    payload = draw(st.binary(max_size=60))
    delivery = draw(deliveries(generated[0] + payload, max_delay=SECONDS / 20))
    return generated, payload, delivery


@given(headers_in_reads())
def test_a_header_split_across_reads_is_parsed_and_the_payload_kept(
    case: tuple[Generated, bytes, Delivery],
) -> None:
    (header_bytes, pair), payload, delivery = case

    async def main() -> None:
        outcome = await read_header(delivery, finish=True)
        assert isinstance(outcome.result, tuple)
        header, leftover = outcome.result
        assert isinstance(header, ProxyHeader)
        assert header.consumed == len(header_bytes)
        source, destination = pair if pair is not None else (None, None)
        if header.source is not None:  # (v2 AF_UNIX and LOCAL report none)
            assert (header.source, header.destination) == (source, destination)
        assert outcome.got == header_bytes + leftover
        assert leftover + outcome.rest == payload  # the payload, unchanged and in order

    run(main)


# --- passthrough: the relay forwards the peeked bytes and the rest unchanged ---


@dataclass(frozen=True)
class Conversation:
    """Both directions of a relayed connection: the peeked prefix, what the client sends
    after it and what the upstream answers, with delays; ``order`` says who waits for whom:
    ``together`` (neither), ``answer_after_eof`` (the upstream answers once the client's EOF
    reached it), ``client_waits`` (the client ends once the answer and its EOF reached it)."""

    prefix: bytes
    client: tuple[tuple[float, bytes], ...]
    upstream: tuple[tuple[float, bytes], ...]
    order: str


def timed_chunks() -> st.SearchStrategy[tuple[tuple[float, bytes], ...]]:
    chunk = st.tuples(st.sampled_from([0.0, 0.5]) | st.floats(0, 2), st.binary(max_size=200))
    return st.lists(chunk, max_size=8).map(tuple)


CONVERSATIONS = st.builds(
    Conversation,
    first_bytes(),
    timed_chunks(),
    timed_chunks(),
    st.sampled_from(["together", "answer_after_eof", "client_waits"]),
)


async def converse(conversation: Conversation) -> tuple[bytes, bytes, RelayStats]:
    """Relay the conversation; what reached the upstream and the client, and the stats."""
    client, client_peer = trio.testing.memory_stream_pair()
    upstream, upstream_peer = trio.testing.memory_stream_pair()
    at_upstream, at_client = bytearray(), bytearray()
    client_eof_seen, upstream_eof_seen = trio.Event(), trio.Event()
    stats = RelayStats()

    async def send(
        stream: MemoryStream, chunks: tuple[tuple[float, bytes], ...], after: trio.Event | None
    ) -> None:
        if after is not None:
            await after.wait()
        for delay, chunk in chunks:
            await trio.sleep(delay)
            await stream.send_all(chunk)
        await stream.send_eof()

    async def receive(stream: MemoryStream, into: bytearray, seen: trio.Event) -> None:
        while data := await stream.receive_some():
            into += data
        seen.set()

    order = conversation.order
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: relay_tcp(client, upstream, leftover=conversation.prefix, idle=100, stats=stats)
        )
        nursery.start_soon(receive, upstream_peer, at_upstream, client_eof_seen)
        nursery.start_soon(receive, client_peer, at_client, upstream_eof_seen)
        wait_for_answer = upstream_eof_seen if order == "client_waits" else None
        wait_for_request = client_eof_seen if order == "answer_after_eof" else None
        nursery.start_soon(send, client_peer, conversation.client, wait_for_answer)
        nursery.start_soon(send, upstream_peer, conversation.upstream, wait_for_request)
    return bytes(at_upstream), bytes(at_client), stats


@given(CONVERSATIONS)
@example(Conversation(b"", (), (), "together"))
@example(Conversation(b"\x16\x03\x01", (), ((0.0, b"late answer"),), "answer_after_eof"))
def test_the_relay_forwards_prefix_and_chunks_unchanged_with_half_close(
    conversation: Conversation,
) -> None:
    request = conversation.prefix + b"".join(chunk for _, chunk in conversation.client)
    response = b"".join(chunk for _, chunk in conversation.upstream)

    async def main() -> None:
        at_upstream, at_client, stats = await converse(conversation)
        assert at_upstream == request
        assert at_client == response
        assert stats == RelayStats(bytes_in=len(request), bytes_out=len(response), ended="closed")

    run(main)


@given(hellos_in_reads(), timed_chunks())
def test_peeked_then_relayed_the_upstream_sees_exactly_what_the_client_sent(
    case: tuple[str, tuple[str, ...], bytes, int, Delivery],
    answer: tuple[tuple[float, bytes], ...],
) -> None:
    """Peek (with a PROXY leftover already buffered), then relay with the peeked bytes as the
    leftover: the upstream's byte stream is the client's, unchanged (passthrough)."""
    sni, alpn, records, buffered, delivery = case
    delivery = Delivery(delivery.data, delivery.pieces, "eof")
    sent_by_client = records + delivery.data[len(records) - buffered :]

    async def main() -> None:
        peer = Peer(delivery)
        upstream, upstream_peer = trio.testing.memory_stream_pair()
        at_upstream = bytearray()

        async def upstream_side() -> None:
            while data := await upstream_peer.receive_some():
                at_upstream.extend(data)
            for delay, chunk in answer:
                await trio.sleep(delay)
                await upstream_peer.send_all(chunk)
            await upstream_peer.send_eof()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.send)
            hello = await peek_client_hello(
                peer.reader_side, records[:buffered], SECONDS, stats=StreamStats(), entrypoint="e"
            )
            assert hello == Hello(sni, alpn, records)
            nursery.start_soon(upstream_side)
            stats = await relay_tcp(peer.reader_side, upstream, leftover=hello.data, idle=0)
        assert at_upstream == sent_by_client
        assert stats.bytes_in == len(sent_by_client)
        assert stats.ended == "closed"

    run(main)
