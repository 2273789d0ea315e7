"""A small raw HTTP/2 client for tests, on real trio sockets, built on ``hyperframe`` (framing)
and ``hpack`` (header blocks), with no ``h2`` state machine in the way.

Why not h2's own client: once it receives a GOAWAY it refuses every further frame, while a
drain's GOAWAY is followed by the rest of the streams it lets finish; and the flood tests must
send what a well-behaved client never would (streams opened and reset at once, CONTINUATION
without end, floods of PING, SETTINGS and empty DATA, a window that never opens). Here the test
says which frames go out (``send_frames``, or the helpers ``request``, ``send_body``, ``reset``),
and everything received is kept: the frames in order (``frames``), per stream a ``Reply``
(status, headers, body, trailers, the reset code), the GOAWAYs, and the bytes counted.

Flow control, as far as a test needs it: ``send_body`` sends within the server's windows (its
SETTINGS and WINDOW_UPDATEs) and waits for credit; received DATA is acknowledged at once with
WINDOW_UPDATEs unless ``window_updates`` is false (a zero-window stall). Every wait is bounded
by ``CLIENT_WAIT`` or the caller's scope.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import hpack
import trio
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from tests.support.gateway import CLIENT_WAIT, LOCAL

__all__ = ["PREFACE", "FrameReader", "H2Client", "Reply", "frames_of"]

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
READ_SIZE: Final = 65536
#: RFC 9113 §6.5.2 defaults until the server's SETTINGS say otherwise.
DEFAULT_WINDOW: Final = 65535
DEFAULT_FRAME: Final = 16384
INITIAL_WINDOW_SIZE: Final = 0x4


class FrameReader:
    """Cuts received bytes into frames (any size: the test inspects, it does not enforce)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(bytes(self._buffer[:9])))
            if len(self._buffer) < 9 + length:
                break
            frame.parse_body(memoryview(bytes(self._buffer[9 : 9 + length])))
            del self._buffer[: 9 + length]
            frames.append(frame)
        return frames


def frames_of(data: bytes) -> list[Frame]:
    """Every whole frame in ``data``."""
    return FrameReader().feed(data)


@dataclass
class Reply:
    """What the server sent on one stream."""

    stream_id: int
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    informational: list[int] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    ended: bool = False
    #: The RST_STREAM code, if the server reset the stream.
    reset: int | None = None

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None


class H2Client:
    """One raw HTTP/2 connection to the gateway (see the module docstring)."""

    def __init__(self, stream: trio.SocketStream, *, window_updates: bool = True) -> None:
        self.stream = stream
        self.window_updates = window_updates
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self._reader = FrameReader()
        self._block: list[Frame] = []
        self.replies: dict[int, Reply] = {}
        self.frames: list[Frame] = []
        self.goaways: list[GoAwayFrame] = []
        self.received_bytes = 0
        self.eof = False
        self.next_stream = 1
        #: The server's SETTINGS as received (the last value of each).
        self.server_settings: dict[int, int] = {}
        self.send_window = DEFAULT_WINDOW
        self.stream_windows: dict[int, int] = {}
        self._changed = trio.Event()
        self._sending = trio.Lock()

    @classmethod
    async def connect(
        cls, port: int, settings: dict[int, int] | None = None, *, window_updates: bool = True
    ) -> H2Client:
        """Connect and send the preface with ``settings`` (nothing is read yet)."""
        client = cls(await trio.open_tcp_stream(LOCAL, port), window_updates=window_updates)
        await client.send_raw(PREFACE + SettingsFrame(0, settings or {}).serialize())
        return client

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)

    # -- sending ---------------------------------------------------------------------------

    async def send_raw(self, data: bytes) -> bool:
        """Write ``data`` (one writer at a time: the reader answers PINGs and SETTINGS);
        False when the gateway already closed the connection."""
        async with self._sending:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
        return True

    async def send_frames(self, *frames: Frame) -> bool:
        return await self.send_raw(b"".join(frame.serialize() for frame in frames))

    def open_stream(self) -> int:
        stream_id = self.next_stream
        self.next_stream += 2
        self.replies[stream_id] = Reply(stream_id)
        self.stream_windows[stream_id] = self.server_settings.get(
            INITIAL_WINDOW_SIZE, DEFAULT_WINDOW
        )
        return stream_id

    def headers_frames(
        self, stream_id: int, fields: Sequence[tuple[bytes, bytes]], *, end: bool
    ) -> list[Frame]:
        """A header block as HEADERS (+ CONTINUATION) frames of at most 16 KiB each."""
        block = self.encoder.encode(list(fields))
        pieces = [block[i : i + DEFAULT_FRAME] for i in range(0, len(block), DEFAULT_FRAME)]
        first = HeadersFrame(stream_id, pieces[0] if pieces else b"")
        frames: list[Frame] = [first]
        frames.extend(ContinuationFrame(stream_id, piece) for piece in pieces[1:])
        frames[-1].flags.add("END_HEADERS")
        if end:
            first.flags.add("END_STREAM")
        return frames

    def request_fields(
        self,
        path: str,
        *,
        method: str = "GET",
        headers: Iterable[tuple[bytes, bytes]] = (),
        authority: str = "gateway.test",
    ) -> list[tuple[bytes, bytes]]:
        return [
            (b":method", method.encode()),
            (b":scheme", b"http"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            *headers,
        ]

    async def request(
        self,
        path: str,
        *,
        method: str = "GET",
        headers: Iterable[tuple[bytes, bytes]] = (),
        body: bytes | None = None,
    ) -> int:
        """Open a stream with a request (and its whole ``body``, within the windows)."""
        stream_id = self.open_stream()
        fields = self.request_fields(path, method=method, headers=headers)
        await self.send_frames(*self.headers_frames(stream_id, fields, end=body is None))
        if body is not None:
            await self.send_body(stream_id, body)
        return stream_id

    async def send_body(self, stream_id: int, body: bytes, *, end: bool = True) -> None:
        """``body`` as DATA within the server's windows, waiting (bounded) for credit."""
        view = memoryview(body)
        while view:
            window = min(self.send_window, self.stream_windows[stream_id])
            if window <= 0:
                with trio.fail_after(CLIENT_WAIT):
                    await self.wait(
                        lambda: min(self.send_window, self.stream_windows[stream_id]) > 0
                    )
                continue
            size = min(window, DEFAULT_FRAME, len(view))
            frame = DataFrame(stream_id, bytes(view[:size]))
            view = view[size:]
            if end and not view:
                frame.flags.add("END_STREAM")
            self.send_window -= size
            self.stream_windows[stream_id] -= size
            if not await self.send_frames(frame):
                return
        if end and not body:
            await self.send_frames(DataFrame(stream_id, b"", flags=["END_STREAM"]))

    async def reset(self, stream_id: int, code: int = 0x8) -> None:
        """RST_STREAM ``stream_id`` (default ``CANCEL``)."""
        await self.send_frames(RstStreamFrame(stream_id, code))

    # -- receiving -------------------------------------------------------------------------

    async def read_once(self) -> bool:
        """One read, its frames handled; False at EOF (or a reset connection)."""
        if self.eof:
            return False
        try:
            data = await self.stream.receive_some(READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            self.eof = True
            self._notify()
            return False
        self.received_bytes += len(data)
        answers: list[Frame] = []
        for frame in self._reader.feed(data):
            self.frames.append(frame)
            answers.extend(self._handle(frame))
        if answers:
            await self.send_frames(*answers)
        self._notify()
        return True

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait(self, predicate: Callable[[], bool]) -> None:
        """Read until ``predicate()`` holds (or EOF: then it must hold too). The caller
        bounds the wait."""
        while not predicate():
            if not await self.read_once():
                assert predicate(), "the gateway closed the connection first"
                return

    async def reply(self, stream_id: int, wait: float = CLIENT_WAIT) -> Reply:
        """The stream's reply once it ended or was reset."""
        reply = self.replies[stream_id]
        with trio.fail_after(wait):
            await self.wait(lambda: reply.done)
        return reply

    async def closed(self, wait: float = CLIENT_WAIT) -> bool:
        """True if the gateway closes the connection within ``wait`` seconds."""
        with trio.move_on_after(wait):
            while await self.read_once():
                pass
            return True
        return False

    def goaway_codes(self) -> list[int]:
        return [frame.error_code for frame in self.goaways]

    def _handle(self, frame: Frame) -> list[Frame]:
        """Bookkeeping for one received frame; the frames to answer with."""
        if self._block or isinstance(frame, HeadersFrame):
            return self._header_block(frame)
        if isinstance(frame, DataFrame):
            return self._data(frame)
        if isinstance(frame, SettingsFrame):
            if "ACK" in frame.flags:
                return []
            self._settings(frame.settings)
            return [SettingsFrame(0, flags=["ACK"])]
        if isinstance(frame, PingFrame):
            return [] if "ACK" in frame.flags else [PingFrame(0, frame.opaque_data, flags=["ACK"])]
        if isinstance(frame, WindowUpdateFrame):
            if frame.stream_id == 0:
                self.send_window += frame.window_increment
            elif frame.stream_id in self.stream_windows:
                self.stream_windows[frame.stream_id] += frame.window_increment
            return []
        if isinstance(frame, RstStreamFrame):
            if frame.stream_id in self.replies:
                self.replies[frame.stream_id].reset = frame.error_code
            return []
        if isinstance(frame, GoAwayFrame):
            self.goaways.append(frame)
        return []

    def _settings(self, settings: dict[int, int]) -> None:
        if INITIAL_WINDOW_SIZE in settings:
            old = self.server_settings.get(INITIAL_WINDOW_SIZE, DEFAULT_WINDOW)
            delta = settings[INITIAL_WINDOW_SIZE] - old
            for stream_id in self.stream_windows:
                self.stream_windows[stream_id] += delta
        self.server_settings.update(settings)

    def _header_block(self, frame: Frame) -> list[Frame]:
        self._block.append(frame)
        if "END_HEADERS" not in frame.flags:
            return []
        block, self._block = self._block, []
        first = block[0]
        assert isinstance(first, HeadersFrame)
        data = b"".join(getattr(piece, "data", b"") for piece in block)
        fields = [(bytes(k), bytes(v)) for k, v in self.decoder.decode(data, raw=True)]
        reply = self.replies.setdefault(first.stream_id, Reply(first.stream_id))
        status = next((int(v) for k, v in fields if k == b":status"), None)
        if status is None:
            reply.trailers = fields
        elif status < 200:
            reply.informational.append(status)
        else:
            reply.status = status
            reply.headers = [(k, v) for k, v in fields if not k.startswith(b":")]
        if "END_STREAM" in first.flags:
            reply.ended = True
        return []

    def _data(self, frame: DataFrame) -> list[Frame]:
        reply = self.replies.setdefault(frame.stream_id, Reply(frame.stream_id))
        reply.body += frame.data
        if "END_STREAM" in frame.flags:
            reply.ended = True
        size = frame.flow_controlled_length
        if not self.window_updates or size == 0:
            return []
        answers: list[Frame] = [WindowUpdateFrame(0, size)]
        if not reply.ended:
            answers.append(WindowUpdateFrame(frame.stream_id, size))
        return answers
