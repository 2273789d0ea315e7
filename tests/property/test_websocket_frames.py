"""Properties of ``FrameTracker`` (``protocols/websocket.py``), wsproto's frame parser as the
reference engine.

Differential: a well-formed stream of one direction (data messages in one to three fragments,
pings and pongs, some between fragments, payloads of every length form, masked from a client,
and maybe a final Close written by ``close_frame``) is cut at arbitrary points, many of them
near frame boundaries. After each read the tracker's frame count, ``at_boundary`` and
``close_code`` agree with what wsproto's ``FrameProtocol`` has read from the same bytes and with
where the frames end; in the end wsproto reads back exactly the frames written (our encoder and
``close_frame`` checked on the way).

Robustness: arbitrary bytes, and well-formed streams with a few bytes changed, cut anyhow:
``feed`` raises nothing but FrameError, and that once; the outcome does not depend on the cuts;
and between reads the tracker holds no more than a partial header and a Close payload.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from hypothesis import given
from hypothesis import strategies as st
from wsproto.frame_protocol import Frame, FrameProtocol, Opcode

from a3s_gateway.protocols.websocket import FrameError, FrameTracker, close_frame
from tests.protocols.test_websocket import HELD_LIMIT, encode_frame, held_bytes

CONTINUATION: Final = 0x0
TEXT: Final = 0x1
BINARY: Final = 0x2
CLOSE: Final = 0x8
PING: Final = 0x9
PONG: Final = 0xA

#: Data payload lengths: mostly short, some around the 16-bit form, a few in the 64-bit form.
DATA_SIZES: Final = (
    st.integers(min_value=0, max_value=40)
    | st.integers(min_value=120, max_value=300)
    | st.sampled_from([65535, 65536, 70_000])
)
CONTROL_SIZES: Final = st.integers(min_value=0, max_value=20) | st.sampled_from([124, 125])
MASK_KEYS: Final = st.binary(min_size=4, max_size=4)
#: Codes wsproto takes from a peer (RFC 6455 §7.4: registered ones and the 3000-4999 range).
CLOSE_CODES: Final = st.sampled_from([1000, 1001, 1002, 1003, *range(1007, 1014)]) | (
    st.integers(min_value=3000, max_value=4999)
)

#: A frame as read back: the message's opcode and the payload (Close: code and reason).
ReadFrame = tuple[int, object]


@dataclass(frozen=True, slots=True)
class Stream:
    """One direction of a relay: ``wire``, where each frame ends, and what wsproto must read."""

    masked: bool
    wire: bytes
    ends: tuple[int, ...]
    expected: tuple[ReadFrame, ...]


@st.composite
def payloads(draw: st.DrawFn, opcode: int, sizes: st.SearchStrategy[int]) -> bytes:
    """A payload of a drawn length, a short drawn pattern repeated (ASCII for text, which
    wsproto checks as UTF-8 in every fragment)."""
    size = draw(sizes)
    seed = draw(st.binary(min_size=1, max_size=8))
    if opcode == TEXT:
        seed = bytes(byte & 0x7F for byte in seed)
    return (seed * (size // len(seed) + 1))[:size]


@st.composite
def frame_specs(draw: st.DrawFn) -> list[tuple[int, int, bytes, bool]]:
    """``(opcode on the wire, message opcode, payload, fin)`` of well-formed frames in order."""
    specs: list[tuple[int, int, bytes, bool]] = []
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        kind = draw(st.sampled_from([TEXT, BINARY, PING, PONG]))
        if kind >= CLOSE:
            specs.append((kind, kind, draw(payloads(kind, CONTROL_SIZES)), True))
            continue
        parts = draw(st.integers(min_value=1, max_value=3))
        for index in range(parts):
            last = index == parts - 1
            opcode = kind if index == 0 else CONTINUATION
            specs.append((opcode, kind, draw(payloads(kind, DATA_SIZES)), last))
            if not last and draw(st.booleans()):  # a control frame between fragments
                specs.append((PING, PING, draw(payloads(PING, CONTROL_SIZES)), True))
    return specs


@st.composite
def closes(draw: st.DrawFn, mask_key: bytes | None) -> tuple[bytes, ReadFrame] | None:
    """Maybe a final Close: by ``close_frame`` (a reason cut at 123 bytes if longer) or empty."""
    kind = draw(st.sampled_from(["none", "code", "empty"]))
    if kind == "none":
        return None
    if kind == "empty":
        return encode_frame(CLOSE, b"", mask_key=mask_key), (CLOSE, (1005, ""))
    code = draw(CLOSE_CODES)
    reason = draw(st.text(max_size=50)).encode()
    wire = close_frame(code, reason, mask_key=mask_key)
    kept = wire[(8 if mask_key else 4) :]  # the reason's bytes as written (masked or not)
    return wire, (CLOSE, (code, reason[: len(kept)].decode()))


@st.composite
def streams(draw: st.DrawFn) -> Stream:
    masked = draw(st.booleans())
    wire = b""
    ends: list[int] = []
    expected: list[ReadFrame] = []
    for opcode, kind, payload, fin in draw(frame_specs()):
        mask_key = draw(MASK_KEYS) if masked else None
        wire += encode_frame(opcode, payload, fin=fin, mask_key=mask_key)
        ends.append(len(wire))
        expected.append((kind, payload))
    close = draw(closes(draw(MASK_KEYS) if masked else None))
    if close is not None:
        wire += close[0]
        ends.append(len(wire))
        expected.append(close[1])
    return Stream(masked, wire, tuple(ends), tuple(expected))


@st.composite
def cut_points(draw: st.DrawFn, stream: Stream) -> list[int]:
    """Sorted inner cut points of ``stream.wire``: anywhere, and within 15 bytes of a frame end
    (in the next header, the end of a payload, the boundary itself)."""
    size = len(stream.wire)
    if size < 2:
        return []
    anywhere = draw(st.lists(st.integers(min_value=1, max_value=size - 1), max_size=8))
    near = []
    if stream.ends:
        for index, shift in draw(
            st.lists(
                st.tuples(
                    st.integers(min_value=0, max_value=len(stream.ends) - 1),
                    st.integers(min_value=-15, max_value=15),
                ),
                max_size=10,
            )
        ):
            near.append(stream.ends[index] + shift)
    return sorted({point for point in [*anywhere, *near] if 0 < point < size})


class Reader:
    """wsproto's reading of a stream, the pieces of partly read frames joined."""

    def __init__(self, *, masked: bool) -> None:
        self.parser = FrameProtocol(client=not masked, extensions=[])
        self.frames: list[ReadFrame] = []
        self._parts: list[bytes] = []

    def receive(self, data: bytes) -> None:
        self.parser.receive_bytes(data)
        self._add(self.parser.received_frames())

    def _add(self, frames: Iterable[Frame]) -> None:
        for frame in frames:
            payload = frame.payload
            if isinstance(payload, tuple):  # a Close: (code, reason), always whole
                self.frames.append((frame.opcode, (int(payload[0]), payload[1])))
                continue
            self._parts.append(payload.encode() if isinstance(payload, str) else payload)
            if frame.frame_finished:
                self.frames.append((frame.opcode, b"".join(self._parts)))
                self._parts = []

    @property
    def close_code(self) -> int | None:
        for opcode, payload in self.frames:
            if opcode == Opcode.CLOSE:
                assert isinstance(payload, tuple)
                code = payload[0]
                assert isinstance(code, int)
                return code
        return None


def reads_of(wire: bytes, cuts: list[int]) -> list[tuple[int, bytes]]:
    """``wire`` cut at ``cuts``: each read with the offset where it ends."""
    return [
        (end, wire[start:end]) for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True)
    ]


@given(st.data())
def test_the_tracker_agrees_with_wsproto_at_every_cut(data: st.DataObject) -> None:
    stream = data.draw(streams())
    cuts = data.draw(cut_points(stream))
    tracker = FrameTracker(masked=stream.masked)
    reader = Reader(masked=stream.masked)
    ends = set(stream.ends)
    for offset, read in reads_of(stream.wire, cuts):
        tracker.feed(read)
        reader.receive(read)
        assert tracker.frames == len(reader.frames) == bisect.bisect_right(stream.ends, offset)
        assert tracker.at_boundary == (offset == 0 or offset in ends)
        assert tracker.close_code == reader.close_code
        assert tracker.closed == (reader.close_code is not None)
        assert not tracker.broken
    assert tuple(reader.frames) == stream.expected


@st.composite
def mutated(draw: st.DrawFn, stream: Stream) -> bytes:
    """``stream.wire`` with one to four bytes replaced, inserted or deleted, mostly in headers
    (a frame's first two bytes) where the tracker looks."""
    out = bytearray(stream.wire)
    starts = [0, *stream.ends[:-1]]
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        if draw(st.booleans()):  # at or just after a frame start
            pos = min(draw(st.sampled_from(starts)) + draw(st.integers(0, 1)), len(out))
        else:
            pos = draw(st.integers(min_value=0, max_value=len(out)))
        op = draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = draw(st.integers(min_value=0, max_value=255))
        if op == "insert" or pos == len(out):
            out.insert(pos, byte)
        elif op == "replace":
            out[pos] = byte
        else:
            del out[pos]
    return bytes(out)


def any_bytes() -> st.SearchStrategy[tuple[bool, bytes]]:
    """A direction and bytes for it: arbitrary, or a well-formed stream slightly changed."""
    arbitrary = st.tuples(st.booleans(), st.binary(max_size=300))
    changed = streams().flatmap(lambda stream: st.tuples(st.just(stream.masked), mutated(stream)))
    return arbitrary | changed


Outcome = tuple[bool, int, int | None, bool]


def outcome(tracker: FrameTracker) -> Outcome:
    return tracker.broken, tracker.frames, tracker.close_code, tracker.at_boundary


def feed_checked(tracker: FrameTracker, wire: bytes, cuts: list[int]) -> None:
    """Feed ``wire`` in reads ending at ``cuts``: only FrameError, once; nothing changes after
    it; and between reads the tracker holds no more than the contract allows."""
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        before = outcome(tracker)
        try:
            tracker.feed(wire[start:end])
        except FrameError:
            assert not before[0]
            assert tracker.broken
        if before[0]:
            assert outcome(tracker) == before
        if tracker.broken:
            assert not tracker.at_boundary
        assert held_bytes(tracker) <= HELD_LIMIT


@given(st.data())
def test_any_bytes_raise_only_frame_error_and_keep_nothing(data: st.DataObject) -> None:
    masked, wire = data.draw(any_bytes())
    cuts = sorted(
        set(data.draw(st.lists(st.integers(min_value=1, max_value=max(1, len(wire) - 1)))))
        - {len(wire)}
    )
    tracker = FrameTracker(masked=masked)
    feed_checked(tracker, wire, cuts)
    whole = FrameTracker(masked=masked)
    try:
        whole.feed(wire)
    except FrameError:
        assert whole.broken
    assert outcome(tracker) == outcome(whole)
