"""The WebSocket pieces of the relay (``protocols/websocket.py``, RFC 6455), no trio at all.

- ``websocket_key``: which requests ask for a WebSocket, and each defect of one that does;
- ``accept_value`` against RFC 6455 §1.3's example, ``accepts`` on ``101`` fields;
- ``close_frame``: the bytes, read back by wsproto's frame parser in both directions;
- ``FrameTracker`` on hand-made frames: boundaries in headers and payloads, the three length
  forms, Close codes, every malformed header, RSV bits passed through, bounded memory.
"""

from __future__ import annotations

import gc

import pytest
from wsproto.frame_protocol import Frame, FrameProtocol, Opcode

from a3s_gateway.protocols.events import RequestHead
from a3s_gateway.protocols.headers import Headers
from a3s_gateway.protocols.websocket import (
    WEBSOCKET_VERSION,
    FrameError,
    FrameTracker,
    HandshakeError,
    accept_value,
    accepts,
    close_frame,
    websocket_key,
)

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
MASK_KEY = b"\x37\xfa\x21\x3d"


def encode_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    mask_key: bytes | None = None,
    rsv: int = 0,
) -> bytes:
    """A frame laid out as RFC 6455 §5.2 says, with the shortest length form; ``rsv`` holds the
    three RSV bits (0-7). Written here, independently of the module under test."""
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    mask_bit = 0 if mask_key is None else 0x80
    size = len(payload)
    if size < 126:
        head = bytes((first, mask_bit | size))
    elif size < 1 << 16:
        head = bytes((first, mask_bit | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((first, mask_bit | 127)) + size.to_bytes(8, "big")
    if mask_key is None:
        return head + payload
    stream = (mask_key * (size // 4 + 1))[:size]
    masked = bytes(a ^ b for a, b in zip(payload, stream, strict=True))
    return head + mask_key + masked


def request(
    headers: Headers,
    *,
    method: bytes = b"GET",
    version: bytes = b"1.1",
    has_body: bool = False,
) -> RequestHead:
    return RequestHead(method, b"/chat", b"example.com", headers, version, has_body)


UPGRADE: Headers = [
    (b"host", b"example.com"),
    (b"upgrade", b"websocket"),
    (b"connection", b"Upgrade"),
]
HANDSHAKE: Headers = [
    *UPGRADE,
    (b"sec-websocket-key", KEY),
    (b"sec-websocket-version", b"13"),
]


def without(headers: Headers, name: bytes) -> Headers:
    return [line for line in headers if line[0] != name]


# --- websocket_key ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(HANDSHAKE, id="plain"),
        pytest.param(
            [
                (b"upgrade", b"h2c, WebSocket"),
                (b"connection", b"keep-alive, UPGRADE"),
                (b"sec-websocket-version", b" 13 "),
                (b"sec-websocket-key", b"  " + KEY + b"\t"),
                (b"sec-websocket-version", b"13"),
            ],
            id="lists-cases-whitespace-repeated-13",
        ),
        pytest.param(
            [
                (b"upgrade", b"foo/2"),
                (b"upgrade", b" websocket "),
                (b"connection", b"x"),
                (b"connection", b"upgrade"),
                *HANDSHAKE[3:],
            ],
            id="split-over-lines",
        ),
    ],
)
def test_a_valid_handshake_gives_the_key_as_sent(headers: Headers) -> None:
    assert websocket_key(request(headers)) == KEY


@pytest.mark.parametrize(
    ("headers", "method", "version"),
    [
        pytest.param(HANDSHAKE, b"GET", b"1.0", id="http-1.0"),
        pytest.param(HANDSHAKE, b"GET", b"2", id="http-2"),
        pytest.param(HANDSHAKE, b"POST", b"1.1", id="post"),
        pytest.param(HANDSHAKE, b"get", b"1.1", id="lower-case-method"),
        pytest.param(without(HANDSHAKE, b"connection"), b"GET", b"1.1", id="no-connection"),
        pytest.param(
            [*without(HANDSHAKE, b"connection"), (b"connection", b"keep-alive")],
            b"GET",
            b"1.1",
            id="connection-without-upgrade",
        ),
        pytest.param(without(HANDSHAKE, b"upgrade"), b"GET", b"1.1", id="no-upgrade"),
        pytest.param(
            [*without(HANDSHAKE, b"upgrade"), (b"upgrade", b"websocket/13")],
            b"GET",
            b"1.1",
            id="versioned-token",
        ),
        pytest.param(
            [*without(HANDSHAKE, b"upgrade"), (b"upgrade", b"h2c")], b"GET", b"1.1", id="h2c"
        ),
        pytest.param(
            [*without(HANDSHAKE, b"upgrade"), (b"upgrade", b"web socket")],
            b"GET",
            b"1.1",
            id="not-the-token",
        ),
    ],
)
def test_requests_that_do_not_ask_for_a_websocket_give_none(
    headers: Headers, method: bytes, version: bytes
) -> None:
    assert websocket_key(request(headers, method=method, version=version)) is None


def test_a_request_that_does_not_ask_is_not_checked() -> None:
    broken = [(b"upgrade", b"h2c"), (b"connection", b"upgrade"), (b"sec-websocket-key", b"x")]
    assert websocket_key(request(broken, has_body=True)) is None


def replaced(name: bytes, *values: bytes) -> Headers:
    return [*without(HANDSHAKE, name), *((name, value) for value in values)]


@pytest.mark.parametrize(
    ("head", "status", "reason"),
    [
        (request(HANDSHAKE, has_body=True), 400, "request body on websocket upgrade"),
        (request(UPGRADE, has_body=True), 400, "request body on websocket upgrade"),
        (request(replaced(b"sec-websocket-key")), 400, "missing sec-websocket-key"),
        (request(replaced(b"sec-websocket-key", KEY, KEY)), 400, "repeated sec-websocket-key"),
        (request(replaced(b"sec-websocket-key", b"")), 400, "invalid sec-websocket-key"),
        (request(replaced(b"sec-websocket-key", b"abc")), 400, "invalid sec-websocket-key"),
        # 24 characters of url-safe base64, not the standard alphabet
        (
            request(replaced(b"sec-websocket-key", b"-_-_-_-_-_-_-_-_-_-_-_==")),
            400,
            "invalid sec-websocket-key",
        ),
        # 24 characters without padding: 18 bytes
        (
            request(replaced(b"sec-websocket-key", b"AAAAAAAAAAAAAAAAAAAAAAAA")),
            400,
            "invalid sec-websocket-key",
        ),
        # 24 characters with one "=": 17 bytes
        (
            request(replaced(b"sec-websocket-key", b"AAAAAAAAAAAAAAAAAAAAAAA=")),
            400,
            "invalid sec-websocket-key",
        ),
        # padding inside
        (
            request(replaced(b"sec-websocket-key", b"dGhlIHNhbXBs=SBub25jZQ==")),
            400,
            "invalid sec-websocket-key",
        ),
        # the right length once whitespace inside is counted
        (
            request(replaced(b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ =")),
            400,
            "invalid sec-websocket-key",
        ),
        (request(replaced(b"sec-websocket-version", b"8")), 426, "unsupported websocket version"),
        (
            request(replaced(b"sec-websocket-version", b"13, 8")),
            426,
            "unsupported websocket version",
        ),
        (
            request(replaced(b"sec-websocket-version", b"13", b"8")),
            426,
            "unsupported websocket version",
        ),
        (request(replaced(b"sec-websocket-version", b"")), 426, "unsupported websocket version"),
        (request(replaced(b"sec-websocket-version")), 400, "missing sec-websocket-version"),
    ],
)
def test_each_defect_of_a_websocket_request_has_its_status(
    head: RequestHead, status: int, reason: str
) -> None:
    with pytest.raises(HandshakeError) as caught:
        websocket_key(head)
    assert (caught.value.status, caught.value.reason) == (status, reason)
    assert str(caught.value) == f"{status} {reason}"


def test_the_version_constant_is_13() -> None:
    assert WEBSOCKET_VERSION == b"13"


# --- accept_value and accepts ----------------------------------------------------------------


def test_accept_value_matches_the_rfc_example() -> None:
    assert accept_value(KEY) == ACCEPT


def test_accept_value_depends_on_the_key() -> None:
    assert accept_value(b"AAAAAAAAAAAAAAAAAAAAAA==") != ACCEPT


@pytest.mark.parametrize(
    "headers",
    [
        [
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-accept", ACCEPT),
        ],
        [(b"sec-websocket-accept", b" " + ACCEPT + b" "), (b"upgrade", b"WebSocket")],
        [(b"upgrade", b"foo, websocket"), (b"sec-websocket-accept", ACCEPT)],
    ],
)
def test_accepts_a_101_that_answers_the_key(headers: Headers) -> None:
    assert accepts(KEY, headers)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([(b"upgrade", b"websocket")], id="no-accept"),
        pytest.param([(b"sec-websocket-accept", ACCEPT)], id="no-upgrade"),
        pytest.param(
            [(b"upgrade", b"h2c"), (b"sec-websocket-accept", ACCEPT)], id="other-protocol"
        ),
        pytest.param(
            [(b"upgrade", b"websocket"), (b"sec-websocket-accept", ACCEPT.lower())],
            id="wrong-case",
        ),
        pytest.param(
            [(b"upgrade", b"websocket"), (b"sec-websocket-accept", accept_value(b"x"))],
            id="other-key",
        ),
        pytest.param(
            [
                (b"upgrade", b"websocket"),
                (b"sec-websocket-accept", ACCEPT),
                (b"sec-websocket-accept", ACCEPT),
            ],
            id="repeated",
        ),
    ],
)
def test_rejects_a_101_that_does_not_answer_the_key(headers: Headers) -> None:
    assert not accepts(KEY, headers)


# --- close_frame -----------------------------------------------------------------------------


def parsed(wire: bytes, *, masked: bool) -> list[Frame]:
    """What wsproto's frame parser reads from ``wire``: a server reads masked frames, a client
    unmasked ones."""
    parser = FrameProtocol(client=not masked, extensions=[])
    parser.receive_bytes(wire)
    return list(parser.received_frames())


def test_close_frame_bytes() -> None:
    assert close_frame(1000) == b"\x88\x02\x03\xe8"
    assert close_frame(1001, b"bye") == b"\x88\x05\x03\xe9bye"
    masked = close_frame(1000, mask_key=b"\x01\x02\x03\x04")
    assert masked == b"\x88\x82\x01\x02\x03\x04" + bytes((0x03 ^ 0x01, 0xE8 ^ 0x02))


@pytest.mark.parametrize("mask_key", [None, MASK_KEY, b"\x00\x00\x00\x00"])
@pytest.mark.parametrize(
    ("code", "reason"),
    [(1000, b""), (1001, b"going away"), (1011, "dépassé".encode()), (4999, b"x" * 123)],
)
def test_wsproto_reads_our_close_frame(code: int, reason: bytes, mask_key: bytes | None) -> None:
    wire = close_frame(code, reason, mask_key=mask_key)
    [frame] = parsed(wire, masked=mask_key is not None)
    assert frame.opcode is Opcode.CLOSE
    assert frame.payload == (code, reason.decode())
    assert frame.frame_finished
    assert frame.message_finished


@pytest.mark.parametrize("mask_key", [None, MASK_KEY])
def test_a_long_reason_is_cut_at_125_bytes_of_payload(mask_key: bytes | None) -> None:
    wire = close_frame(1000, b"a" * 300, mask_key=mask_key)
    assert wire[1] & 0x7F == 125
    [frame] = parsed(wire, masked=mask_key is not None)
    assert frame.payload == (1000, "a" * 123)


def test_a_long_reason_is_cut_between_characters() -> None:
    reason = "é" * 70  # 140 bytes: byte 123 would split the 62nd character
    [frame] = parsed(close_frame(1000, reason.encode()), masked=False)
    assert frame.payload == (1000, "é" * 61)
    three = "€" * 50  # 150 bytes: 123 is a multiple of 3, the cut falls between characters
    [frame] = parsed(close_frame(1000, three.encode()), masked=False)
    assert frame.payload == (1000, "€" * 41)


@pytest.mark.parametrize(
    ("code", "mask_key", "message"),
    [
        (-1, None, "close code out of range"),
        (1 << 16, None, "close code out of range"),
        (1000, b"abc", "a masking key is 4 bytes"),
        (1000, b"abcde", "a masking key is 4 bytes"),
    ],
)
def test_close_frame_refuses_a_bad_code_or_mask_key(
    code: int, mask_key: bytes | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        close_frame(code, mask_key=mask_key)


# --- FrameTracker ----------------------------------------------------------------------------


def feed_each(tracker: FrameTracker, wire: bytes, cuts: list[int]) -> list[bool]:
    """Feed ``wire`` in pieces ending at ``cuts`` (then the rest): ``at_boundary`` after each."""
    seen = []
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        tracker.feed(wire[start:end])
        seen.append(tracker.at_boundary)
    return seen


def test_a_new_tracker_is_at_a_boundary() -> None:
    tracker = FrameTracker(masked=False)
    assert tracker.at_boundary
    assert (tracker.frames, tracker.close_code, tracker.closed, tracker.broken) == (
        0,
        None,
        False,
        False,
    )
    tracker.feed(b"")
    assert tracker.at_boundary


@pytest.mark.parametrize("masked", [False, True])
def test_a_small_frame_byte_by_byte(masked: bool) -> None:
    wire = encode_frame(0x1, b"hello", mask_key=MASK_KEY if masked else None)
    tracker = FrameTracker(masked=masked)
    seen = feed_each(tracker, wire, list(range(1, len(wire))))
    assert seen == [False] * (len(wire) - 1) + [True]
    assert tracker.frames == 1
    assert not tracker.closed


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize(
    ("size", "header"),
    [(0, 2), (125, 2), (126, 4), (300, 4), (65535, 4), (65536, 10), (70000, 10)],
)
def test_boundaries_in_each_length_form(masked: bool, size: int, header: int) -> None:
    mask_key = MASK_KEY if masked else None
    wire = encode_frame(0x2, bytes(size), mask_key=mask_key) + encode_frame(
        0x9, b"p", mask_key=mask_key
    )
    header += 4 if masked else 0
    first_end = header + size
    cuts = [1, header - 1, header, header + size // 2, first_end, first_end + 1]
    cuts = sorted({cut for cut in cuts if 0 < cut < len(wire)})
    tracker = FrameTracker(masked=masked)
    seen = feed_each(tracker, wire, cuts)
    assert seen == [cut == first_end for cut in cuts] + [True]
    assert tracker.frames == 2


def test_many_small_frames_in_one_read() -> None:
    one = encode_frame(0x2, bytes(30))
    wire = one * 2048 + one[:7]
    tracker = FrameTracker(masked=False)
    tracker.feed(wire)
    assert tracker.frames == 2048
    assert not tracker.at_boundary
    tracker.feed(one[7:])
    assert tracker.frames == 2049
    assert tracker.at_boundary


def test_a_huge_payload_is_passed_by_count() -> None:
    size = (1 << 40) + 3
    tracker = FrameTracker(masked=False)
    tracker.feed(b"\x82\x7f" + size.to_bytes(8, "big") + bytes(1 << 16))
    chunk = bytes(1 << 16)
    for _ in range(64):
        tracker.feed(chunk)
    assert not tracker.at_boundary
    assert tracker.frames == 0


def test_a_fragmented_message_counts_each_frame() -> None:
    wire = (
        encode_frame(0x1, b"hel", fin=False)
        + encode_frame(0x9, b"")
        + encode_frame(0x0, b"lo", fin=False)
        + encode_frame(0x0, b"!")
    )
    tracker = FrameTracker(masked=False)
    tracker.feed(wire)
    assert tracker.frames == 4
    assert tracker.at_boundary


@pytest.mark.parametrize("mask_key", [None, MASK_KEY])
@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\x03\xe8", 1000),
        (b"\x0f\xa0bye", 4000),
        (b"", 1005),
        (b"\x03", 1002),
        (b"\x03\xe9" + b"r" * 123, 1001),
    ],
)
def test_close_codes_in_any_chunking(payload: bytes, code: int, mask_key: bytes | None) -> None:
    wire = encode_frame(0x2, b"data") + encode_frame(0x8, payload, mask_key=mask_key)
    if mask_key is not None:
        wire = encode_frame(0x2, b"data", mask_key=mask_key) + wire[6:]
    for cut_size in (1, 2, 3, 5, 7, len(wire)):
        tracker = FrameTracker(masked=mask_key is not None)
        for start in range(0, len(wire), cut_size):
            assert tracker.close_code is None
            assert not tracker.closed
            tracker.feed(wire[start : start + cut_size])
        assert tracker.close_code == code
        assert tracker.closed
        assert tracker.frames == 2
        assert tracker.at_boundary


def test_the_first_close_code_stays_and_later_frames_are_followed() -> None:
    wire = close_frame(1000) + encode_frame(0x2, b"late") + close_frame(1001)
    tracker = FrameTracker(masked=False)
    tracker.feed(wire[:3])
    assert not tracker.closed
    tracker.feed(wire[3:])
    assert tracker.close_code == 1000
    assert tracker.frames == 3
    assert tracker.at_boundary


@pytest.mark.parametrize("mask_key", [None, MASK_KEY])
def test_our_close_frame_is_tracked(mask_key: bytes | None) -> None:
    tracker = FrameTracker(masked=mask_key is not None)
    tracker.feed(close_frame(4321, b"why", mask_key=mask_key))
    assert tracker.close_code == 4321
    assert tracker.at_boundary


@pytest.mark.parametrize("size", [3, 300, 70_000])
@pytest.mark.parametrize("rsv", range(1, 8))
def test_rsv_bits_pass(rsv: int, size: int) -> None:
    wire = encode_frame(0x1, bytes(size), rsv=rsv, mask_key=MASK_KEY) + encode_frame(
        0x8, b"\x03\xe8", rsv=rsv, mask_key=MASK_KEY
    )
    for cut in (1, len(wire)):  # the first header whole, and across two reads
        tracker = FrameTracker(masked=True)
        tracker.feed(wire[:cut])
        tracker.feed(wire[cut:])
        assert tracker.frames == 2
        assert tracker.close_code == 1000
        assert not tracker.broken


def test_a_control_frame_of_125_bytes_passes() -> None:
    tracker = FrameTracker(masked=False)
    tracker.feed(encode_frame(0xA, bytes(125)))
    assert tracker.frames == 1


LONG_64 = b"\x82\x7f\x80" + bytes(7)  # 64-bit length with the top bit set


@pytest.mark.parametrize(
    ("masked", "wire"),
    [
        *(pytest.param(False, bytes((0x80 | op, 0)), id=f"opcode-{op}") for op in range(3, 8)),
        *(pytest.param(False, bytes((0x80 | op, 0)), id=f"opcode-{op}") for op in range(11, 16)),
        pytest.param(False, b"\x09\x00", id="ping-without-fin"),
        pytest.param(False, b"\x08\x02\x03\xe8", id="close-without-fin"),
        pytest.param(False, b"\x88\x7e\x00\x7e", id="close-126"),
        pytest.param(False, b"\x8a\x7f" + bytes(7) + b"\x01", id="pong-127"),
        pytest.param(False, LONG_64, id="64-bit-top-bit"),
        pytest.param(True, b"\x82\xff\x80" + bytes(7) + MASK_KEY, id="64-bit-top-bit-masked"),
        pytest.param(True, b"\x82\x05hello", id="unmasked-from-client"),
        pytest.param(False, b"\x82\x85" + MASK_KEY + b"hello", id="masked-to-client"),
        pytest.param(False, encode_frame(0x2, b"ok") + b"\x83\x00", id="after-a-good-frame"),
    ],
)
def test_each_malformed_header_breaks_the_tracker(masked: bool, wire: bytes) -> None:
    tracker = FrameTracker(masked=masked)
    with pytest.raises(FrameError):
        tracker.feed(wire)
    assert tracker.broken
    assert not tracker.at_boundary
    frames = tracker.frames
    good = encode_frame(0x2, b"x", mask_key=MASK_KEY if masked else None)
    tracker.feed(good)  # a no-op from now on, and quiet
    tracker.feed(b"\x83\x00")
    assert tracker.broken
    assert not tracker.at_boundary
    assert tracker.frames == frames
    assert tracker.close_code is None


@pytest.mark.parametrize("cut", range(1, len(LONG_64)))
def test_a_malformed_header_is_found_across_reads(cut: int) -> None:
    tracker = FrameTracker(masked=False)
    tracker.feed(encode_frame(0x1, b"a") + LONG_64[:cut])
    assert tracker.frames == 1
    assert not tracker.at_boundary
    with pytest.raises(FrameError, match="top bit"):
        tracker.feed(LONG_64[cut:])
    assert tracker.broken


def test_the_error_is_found_on_the_first_two_bytes() -> None:
    tracker = FrameTracker(masked=True)
    tracker.feed(b"\x82")
    with pytest.raises(FrameError, match="unmasked"):
        tracker.feed(b"\x7f")  # the rest of a 64-bit length has not come yet


#: What a tracker may hold between reads (the contract): a partial header and a Close payload.
HELD_LIMIT = 14 + 125


def held_bytes(tracker: FrameTracker) -> int:
    """How many bytes ``tracker`` holds, read from what it references (its class aside): only
    byte strings, numbers and None, so a kept read or a view of one would show."""
    total = 0
    for value in gc.get_referents(tracker):
        if value is type(tracker):
            continue
        assert value is None or isinstance(value, bytes | int), type(value)
        if isinstance(value, bytes):
            total += len(value)
    return total


BIG = encode_frame(0x2, bytes(100_000), mask_key=MASK_KEY)  # 14 header bytes
CLOSE = encode_frame(0x8, b"\x03\xe8" + b"r" * 123, mask_key=MASK_KEY)  # 6 header bytes


@pytest.mark.parametrize(
    "stop",
    [
        pytest.param(9, id="in-a-header"),
        pytest.param(60_000, id="in-a-big-payload"),
        pytest.param(len(BIG) + 3, id="in-a-close-header"),
        pytest.param(len(BIG) + 7, id="in-a-close-code"),
        pytest.param(len(BIG) + 90, id="in-a-close-reason"),
    ],
)
def test_the_tracker_keeps_no_payload(stop: int) -> None:
    """Whatever it is fed, the tracker holds at most a partial header and two Close bytes."""
    wire = (BIG + CLOSE)[:stop]
    for read_size in (7, 4096):
        tracker = FrameTracker(masked=True)
        for start in range(0, len(wire), read_size):
            tracker.feed(wire[start : start + read_size])
            assert held_bytes(tracker) <= HELD_LIMIT
        assert not tracker.at_boundary
        assert tracker.frames == (stop > len(BIG))
