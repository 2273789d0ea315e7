"""A scriptable upstream WebSocket server for end-to-end tests, on real sockets.

It shares no code with the gateway: it is the independent peer the gateway's WebSocket proxy
(SPEC §5.11) connects to. Start it with ``await nursery.start(origin.serve)``; it listens on
127.0.0.1, port 0, and ``origin.port`` is the bound port once ``serve`` has started
(``origin.url("ws")`` is a ``servers`` URL for it). Given an ``ssl_context`` it speaks TLS
(a ``wss://`` upstream).

Every accepted TCP connection is counted (``connections``), so a test can show that the gateway
never dialled the upstream. The request head of each connection is read and recorded first
(``Session``: method, target, every header line as received, so the client's own
``Sec-WebSocket-Key`` and whatever middlewares added can be checked); then the behaviour chosen
for its path (``origin.on(path, behaviour)``, else ``origin.default``, an ``Echo``) answers:

- ``Echo``, ``Reject``, ``CloseAfterFirst`` and ``DropAfterFirst`` run on trio-websocket
  (``wrap_server_stream``, the head replayed to it), a real WebSocket server;
- ``WsprotoEcho`` runs on wsproto, ``PerMessageDeflate`` accepted (trio-websocket negotiates no
  extensions);
- ``RawAnswer`` writes fixed bytes whatever the request was (defective ``101`` answers).

What the origin's side of a session saw is recorded on its ``Session``: whether it accepted,
how many messages arrived, the code of the Close frame the gateway sent (``close_code``; 1006
when the TCP connection ended without one) and, for ``WsprotoEcho``, the first byte that arrived
after the handshake (a frame's first byte: RSV1 says whether it was compressed). Tests wait for
any of this with ``await origin.wait_for(predicate)``, which wakes on every change.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeAlias

import h11
import trio
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

LOCAL: Final = "127.0.0.1"
READ_SIZE: Final = 65536
#: The longest request head the origin reads.
HEAD_LIMIT: Final = 65536
#: RFC 6455 §7.4.1: the code a WebSocket library reports when no Close frame arrived.
ABNORMAL: Final = 1006


# -- behaviours -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Echo:
    """Accept (with the first subprotocol the client proposed that is in ``subprotocols``) and
    echo every message until the session closes. (A message that arrives in the same read as
    the client's Close is not echoed: trio-websocket closes first; see ``WsprotoEcho``.)"""

    subprotocols: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reject:
    """Refuse the handshake with ``status`` and ``body``."""

    status: int
    body: bytes = b""


@dataclass(frozen=True)
class CloseAfterFirst:
    """Accept, read one message, then close with ``code`` (waiting for the Close reply)."""

    code: int


@dataclass(frozen=True)
class DropAfterFirst:
    """Accept, read one message, then close the TCP connection without a Close frame."""


@dataclass(frozen=True)
class WsprotoEcho:
    """Echo every message frame by frame on wsproto, with permessage-deflate when the client
    offers it. Events are answered in the order they arrived, so a message that came with
    the client's Close is still echoed (trio-websocket closes first and drops it)."""


@dataclass(frozen=True)
class RawAnswer:
    """Write ``data`` once the request head arrived, then read until the peer closes."""

    data: bytes


Behaviour: TypeAlias = Echo | Reject | CloseAfterFirst | DropAfterFirst | WsprotoEcho | RawAnswer


# -- records --------------------------------------------------------------------------------


@dataclass
class Session:
    """One accepted connection and what its request head said."""

    number: int
    method: bytes
    target: bytes
    #: Every header line as received, names lower-cased, in order.
    headers: tuple[tuple[bytes, bytes], ...]
    accepted: bool = False
    #: Complete messages received from the gateway.
    received: int = 0
    #: The code of the Close frame received from the gateway (``ABNORMAL``: none arrived).
    close_code: int | None = None
    #: The first byte received after the handshake (``WsprotoEcho`` only).
    first_frame_byte: int | None = None
    #: The connection is over (the origin closed its socket).
    ended: bool = False

    @property
    def path(self) -> bytes:
        return self.target.partition(b"?")[0]

    def header(self, name: bytes) -> bytes | None:
        """The first value of field ``name`` (lower case), or None."""
        return next((value for key, value in self.headers if key == name), None)

    def values(self, name: bytes) -> list[bytes]:
        """Every value of field ``name`` (lower case), in order."""
        return [value for key, value in self.headers if key == name]


class _Replay(trio.abc.Stream):
    """A socket stream whose first reads return bytes already read from it."""

    def __init__(self, stream: trio.abc.Stream, buffered: bytes) -> None:
        self._stream = stream
        self._buffered = buffered

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._buffered:
            await trio.lowlevel.checkpoint()
            size = len(self._buffered) if max_bytes is None else max_bytes
            data, self._buffered = self._buffered[:size], self._buffered[size:]
            return data
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


class _Gone(Exception):  # noqa: N818 -- an event, not an error
    """The connection ended before a whole request head arrived."""


async def _read_head(stream: trio.abc.Stream) -> tuple[bytes, bytes]:
    """The request head (through its blank line) and whatever arrived after it."""
    buffer = bytearray()
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        if len(buffer) > HEAD_LIMIT:
            raise _Gone
        try:
            data = await stream.receive_some(READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            raise _Gone from error
        if not data:
            raise _Gone
        buffer += data
    return bytes(buffer[: end + 4]), bytes(buffer[end + 4 :])


def _parse_head(head: bytes) -> h11.Request:
    parser = h11.Connection(h11.SERVER)
    parser.receive_data(head)
    event = parser.next_event()
    assert isinstance(event, h11.Request), event
    return event


# -- the server -----------------------------------------------------------------------------


class WsOrigin:
    """The upstream WebSocket server; see the module docstring."""

    def __init__(
        self, *, max_message_size: int = 1 << 20, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.port = 0
        self.ssl_context = ssl_context
        self.max_message_size = max_message_size
        self.default: Behaviour = Echo()
        #: Accepted TCP connections (counted before anything is read).
        self.connections = 0
        #: One per connection whose request head arrived, in arrival order.
        self.sessions: list[Session] = []
        self._behaviours: dict[bytes, Behaviour] = {}
        self._changed = trio.Event()

    def url(self, scheme: str = "ws") -> str:
        """A ``servers`` URL for this origin (``ws`` or ``http`` for plain TCP, ``wss`` or
        ``https`` with TLS)."""
        return f"{scheme}://{LOCAL}:{self.port}"

    def on(self, path: str, behaviour: Behaviour) -> None:
        """Serve requests for ``path`` (query ignored) with ``behaviour``."""
        self._behaviours[path.encode()] = behaviour

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` is true; re-checked whenever the origin's state changes
        (the caller bounds the wait)."""
        while not predicate():
            await self._changed.wait()

    def notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on 127.0.0.1:0 and serve until cancelled."""
        listeners = await trio.open_tcp_listeners(0, host=LOCAL)
        listener = listeners[0]
        self.port = int(listener.socket.getsockname()[1])
        async with listener, trio.open_nursery() as nursery:
            task_status.started()
            while True:
                stream = await listener.accept()
                self.connections += 1
                self.notify()
                nursery.start_soon(self._connection, stream, self.connections)

    async def _connection(self, socket_stream: trio.SocketStream, number: int) -> None:
        session: Session | None = None
        stream: trio.abc.Stream = socket_stream
        try:
            if self.ssl_context is not None:
                stream = trio.SSLStream(socket_stream, self.ssl_context, server_side=True)
                await stream.do_handshake()
            head, rest = await _read_head(stream)
            request = _parse_head(head)
            session = Session(
                number,
                request.method,
                request.target,
                tuple((bytes(k), bytes(v)) for k, v in request.headers),
            )
            self.sessions.append(session)
            self.notify()
            behaviour = self._behaviours.get(session.path, self.default)
            await self._answer(stream, head + rest, session, behaviour)
        except (_Gone, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)
            if session is not None:
                session.ended = True
                self.notify()

    async def _answer(
        self, stream: trio.abc.Stream, data: bytes, session: Session, behaviour: Behaviour
    ) -> None:
        match behaviour:
            case RawAnswer(data=answer):
                await stream.send_all(answer)
                while await stream.receive_some(READ_SIZE):
                    pass
            case WsprotoEcho():
                await self._wsproto_echo(stream, data, session)
            case _:
                async with trio.open_nursery() as nursery:
                    request = await trio_websocket.wrap_server_stream(
                        nursery, _Replay(stream, data), max_message_size=self.max_message_size
                    )
                    try:
                        await self._websocket(stream, request, session, behaviour)
                    except trio_websocket.ConnectionClosed as closed:
                        reason = closed.reason
                        session.close_code = ABNORMAL if reason is None else reason.code
                    nursery.cancel_scope.cancel()

    async def _websocket(
        self,
        stream: trio.abc.Stream,
        request: trio_websocket.WebSocketRequest,
        session: Session,
        behaviour: Behaviour,
    ) -> None:
        """A trio-websocket behaviour; ``ConnectionClosed`` ends it (the caller records it)."""
        if isinstance(behaviour, Reject):
            await request.reject(behaviour.status, body=behaviour.body or None)
            return
        offered = request.proposed_subprotocols
        chosen = None
        if isinstance(behaviour, Echo):
            chosen = next((name for name in offered if name in behaviour.subprotocols), None)
        ws = await request.accept(subprotocol=chosen)
        session.accepted = True
        self.notify()
        while True:
            message = await ws.get_message()
            session.received += 1
            self.notify()
            if isinstance(behaviour, CloseAfterFirst):
                await ws.aclose(behaviour.code)
                closed = ws.closed  # after the close handshake: the code the peer answered
                session.close_code = ABNORMAL if closed is None else closed.code
                return
            if isinstance(behaviour, DropAfterFirst):
                await trio.aclose_forcefully(stream)
                return
            await ws.send_message(message)

    async def _wsproto_echo(self, stream: trio.abc.Stream, data: bytes, session: Session) -> None:
        """The ``WsprotoEcho`` behaviour."""
        ws = WSConnection(ConnectionType.SERVER)
        ws.receive_data(data)
        while True:
            out = bytearray()
            for event in ws.events():
                out += self._wsproto_event(ws, event, session)
            if out:
                await stream.send_all(out)
            if session.close_code is not None:
                return
            received = await stream.receive_some(READ_SIZE)
            if not received:
                session.close_code = ABNORMAL
                return
            if session.accepted and session.first_frame_byte is None:
                session.first_frame_byte = received[0]
            ws.receive_data(bytes(received))

    def _wsproto_event(self, ws: WSConnection, event: Event, session: Session) -> bytes:
        """The bytes answering one wsproto event of a ``WsprotoEcho`` session."""
        if isinstance(event, Request):
            session.accepted = True
            self.notify()
            return ws.send(AcceptConnection(extensions=[PerMessageDeflate()]))
        if isinstance(event, TextMessage | BytesMessage):
            if event.message_finished:
                session.received += 1
                self.notify()
            if isinstance(event, TextMessage):
                echo: Event = TextMessage(event.data, message_finished=event.message_finished)
            else:
                echo = BytesMessage(event.data, message_finished=event.message_finished)
            return ws.send(echo)
        if isinstance(event, Ping):
            return ws.send(event.response())
        if isinstance(event, CloseConnection):
            session.close_code = event.code
            self.notify()
            return ws.send(event.response())
        return b""
