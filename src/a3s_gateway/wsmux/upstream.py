"""Upstream channels of the WebSocket multiplexer (SPEC §5.13 "service channel").

Ring 1. The seam: ``ChannelOpener.open`` makes one upstream WebSocket for one subscription and
returns it as an ``UpstreamChannel`` (receive, send, close). ``ServiceOpener`` is the gateway's
opener: a real WebSocket to a backend of the channel's service, made with trio-websocket over a
fresh connection from the upstream pool (plain or TLS, as the backend's URL says), carrying the
client's handshake fields after the middlewares (so upstream auth sees the user).

Nurseries: ``ServiceOpener.open`` starts one task in the nursery it is given (the session's),
with ``nursery.start``: the *channel task*, which owns the upstream stream, trio-websocket's
reader task (in a nursery of its own, so none of trio-websocket's exceptions reaches the
session's nursery) and the backend's in-flight lease. Until the handshake is done the task runs
in the caller's scopes (a failure is raised from ``open``); from then on its scope is shielded,
so a cancellation of the session (the gateway's shutdown) does not kill the reader that the
closing handshake needs. The shield is bounded: ``aclose`` sets its deadline to now +
``CLOSE_BOUND``, and the task also ends when the connection ends by itself.

Deadlines: ``open`` bounds pool acquisition, connect, TLS and the handshake by the service's
``connect_timeout`` (``ChannelUnavailable("connect timeout")``); ``aclose`` bounds the closing
handshake by ``CLOSE_BOUND`` (then the stream is closed without it).

Must not: let an exception other than the documented ones (and cancellation) out of a channel
or the opener; keep a backend lease past the channel's end; decide anything about the client
(the session does).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol, cast

import trio
import trio_websocket
from wsproto.utilities import LocalProtocolError

from a3s_gateway.upstream.connect_errors import ConnectFailed, PoolClosed

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from a3s_gateway.runtime.compile import ServiceRuntime
    from a3s_gateway.services.backend import Backend, Lease
    from a3s_gateway.upstream.pool import UpstreamPool

__all__ = [
    "CLOSE_BOUND",
    "UPSTREAM_QUEUE",
    "ChannelClosed",
    "ChannelOpener",
    "ChannelRejected",
    "ChannelUnavailable",
    "MessageTooLarge",
    "ServiceOpener",
    "UpstreamChannel",
    "sole_exception",
]

#: Bound on an upstream closing handshake (and on closing the stream after it).
CLOSE_BOUND: Final = 1.0
#: At most this many whole messages wait in trio-websocket's own queue per channel. The
#: session's outbox is the real queue (``queue_messages``, with its byte budget); a deep
#: library queue would hold up to ``queue_messages`` × ``max_message_bytes`` more per channel.
UPSTREAM_QUEUE: Final = 2
#: RFC 6455 §7.4.1 codes used here.
_ABNORMAL: Final = 1006
_TOO_BIG: Final = 1009
#: trio-websocket 0.12 closes with 1009 and this reason (``_handle_message_event``) when a
#: message exceeds ``max_message_size``: the way to tell its own verdict from an upstream's 1009.
_TOO_BIG_REASON: Final = "Exceeded maximum message size: "

log: Final = logging.getLogger("a3s_gateway.wsmux")


class ChannelClosed(Exception):  # noqa: N818 -- an event, like trio_websocket.ConnectionClosed
    """The upstream channel is closed: ``code`` and ``reason`` from its Close frame (1006 and ""
    when it ended without one)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class MessageTooLarge(ChannelClosed):
    """The upstream sent a message over ``max_message_bytes``; the channel closed with 1009."""


class ChannelRejected(Exception):  # noqa: N818 -- an outcome of the handshake
    """The upstream answered the WebSocket handshake with ``status``, not 101."""

    def __init__(self, status: int) -> None:
        super().__init__(f"upstream answered {status}")
        self.status = status


class ChannelUnavailable(Exception):  # noqa: N818 -- an outcome of the attempt
    """No upstream WebSocket could be made: no backend, a connect failure or a timeout;
    ``detail`` says which (safe to show the client: no address in it)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class UpstreamChannel(Protocol):
    """One open upstream WebSocket of one subscription."""

    async def get_message(self) -> str | bytes:
        """The next message; raises ``ChannelClosed`` (``MessageTooLarge``) once it ended."""
        ...

    async def send_message(self, message: str | bytes) -> None:
        """Send a text (str) or binary (bytes) message; raises ``ChannelClosed``. Blocks while
        the upstream does not read (backpressure)."""
        ...

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close with ``code`` (the closing handshake, bounded), release everything; idempotent.
        Never raises for a broken channel."""
        ...


class ChannelOpener(Protocol):
    """Makes upstream channels for a multiplexer session."""

    async def open(self, nursery: trio.Nursery, service: str, path: str) -> UpstreamChannel:
        """A channel to ``service`` at ``path``; background work goes into ``nursery`` and ends
        after the channel's ``aclose``. Raises ``ChannelRejected`` (the upstream refused the
        handshake) or ``ChannelUnavailable`` (anything else that prevented it)."""
        ...


def sole_exception(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception to raise for ``group``: the first that is not a cancellation (a
    ``KeyboardInterrupt``, a bug), else its first ``Cancelled``, so that callers never see an
    exception group."""
    leaves = list(_leaves(group))
    for leaf in leaves:
        if not isinstance(leaf, trio.Cancelled):
            return leaf
    return leaves[0]


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


@dataclass(frozen=True, slots=True)
class _Dial:
    """Where one channel goes: the chosen backend of ``runtime`` and the handshake's target."""

    runtime: ServiceRuntime
    backend: Backend
    lease: Lease
    host: str
    resource: str


class ServiceOpener:
    """The gateway's ``ChannelOpener``: real upstream WebSockets with trio-websocket.

    ``headers`` go with every handshake (the client's fields after the middlewares, without
    hop-by-hop fields, ``Host`` and ``Sec-WebSocket-*``); ``max_message_bytes`` bounds each
    upstream message (a longer one ends the channel with ``MessageTooLarge``);
    ``queue_messages`` bounds trio-websocket's own queue, further capped at ``UPSTREAM_QUEUE``.
    """

    __slots__ = ("_headers", "_max_message_bytes", "_pool", "_queue_size", "_services")

    def __init__(
        self,
        services: Mapping[str, ServiceRuntime],
        pool: UpstreamPool,
        headers: Sequence[tuple[bytes, bytes]],
        *,
        max_message_bytes: int,
        queue_messages: int,
    ) -> None:
        self._services = services
        self._pool = pool
        # trio-websocket sends these after its own handshake fields; the caller stripped
        # hop-by-hop fields, Host and Sec-WebSocket-*.
        self._headers = list(headers)
        self._max_message_bytes = max_message_bytes
        self._queue_size = min(queue_messages, UPSTREAM_QUEUE)

    async def open(self, nursery: trio.Nursery, service: str, path: str) -> UpstreamChannel:
        """See ``ChannelOpener.open``: one backend of ``service`` by its balancer, within its
        ``connect_timeout``; the backend counts one in flight until the channel closes."""
        runtime = self._services.get(service)
        if runtime is None:
            raise ChannelUnavailable("unknown service")
        backend = runtime.pick_backend()
        if backend is None:
            raise ChannelUnavailable("no backend")
        lease = backend.lease()
        try:
            dial = _Dial(runtime, backend, lease, _host(backend), _resource(runtime, backend, path))
            with trio.move_on_after(runtime.connect_timeout):
                channel: _WebSocketChannel = await nursery.start(self._serve, dial)
                return channel
            raise ChannelUnavailable("connect timeout")
        except BaseException:
            lease.release()
            raise

    async def _serve(
        self,
        dial: _Dial,
        *,
        task_status: trio.TaskStatus[_WebSocketChannel] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """The channel task (see the module docstring): connect, hand the channel over, keep
        the reader running until the connection ends; close the stream and give the lease back
        on every path."""
        stream: trio.abc.Stream | None = None
        started = False
        try:
            stream = await self._connect(dial)
            with trio.CancelScope() as shelter:
                async with trio.open_nursery() as reader:
                    websocket = await trio_websocket.wrap_client_stream(
                        reader,
                        # typed for trio's own socket streams; it only reads and writes
                        cast("trio.SocketStream", stream),
                        dial.host,
                        dial.resource,
                        extra_headers=self._headers,
                        message_queue_size=self._queue_size,
                        max_message_size=self._max_message_bytes,
                    )
                    channel = _WebSocketChannel(websocket, dial.lease, shelter)
                    shelter.shield = True
                    task_status.started(channel)
                    started = True
        except BaseExceptionGroup as group:
            outcome = _outcome(group, started=started)
            if outcome is not None:
                raise outcome from None
        finally:
            dial.lease.release()
            if stream is not None:
                await _abandon(stream)

    async def _connect(self, dial: _Dial) -> trio.abc.Stream:
        """A fresh connection to the backend, detached from the pool (ours to close)."""
        runtime = dial.runtime
        peer = runtime.peers[dial.backend.index]
        try:
            conn = await self._pool.acquire(peer, runtime.pool, fresh=True)
        except ConnectFailed as failed:
            raise ChannelUnavailable(f"connect failed: {failed.reason}") from failed
        except PoolClosed as closed:
            raise ChannelUnavailable("shutting down") from closed
        stream = conn.detach()
        self._pool.release(conn, reusable=False)  # closes nothing: the stream is detached
        return stream


def _outcome(group: BaseExceptionGroup[BaseException], *, started: bool) -> BaseException | None:
    """What the channel task raises for what its reader nursery raised: before the channel was
    handed over, ``ChannelRejected`` for a refused handshake, else ``ChannelUnavailable``; after
    that, nothing (the reader died: the channel reads as closed) unless cancelled."""
    error = sole_exception(group)
    if isinstance(error, trio.Cancelled | KeyboardInterrupt):
        return error
    if started:
        log.debug("upstream channel reader failed", exc_info=error)
        return None
    if isinstance(error, trio_websocket.ConnectionRejected):
        return ChannelRejected(error.status_code)
    return ChannelUnavailable(f"handshake failed: {type(error).__name__}")


async def _abandon(stream: trio.abc.Stream) -> None:
    """Close ``stream`` without ceremony, bounded and even when cancelled."""
    with (
        trio.CancelScope(shield=True, deadline=trio.current_time() + CLOSE_BOUND),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError),
    ):
        await trio.aclose_forcefully(stream)


def _host(backend: Backend) -> str:
    """The ``Host`` of the upstream handshake: the backend's host and port."""
    url = backend.url
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{host}:{url.port}"


def _resource(runtime: ServiceRuntime, backend: Backend, path: str) -> str:
    """The handshake's target: the backend URL's path prefix joined with the channel's path."""
    prefix = runtime.prefixes[backend.index].decode()
    if not path.startswith("/"):
        path = "/" + path
    return prefix.rstrip("/") + path


class _WebSocketChannel:
    """An ``UpstreamChannel`` over a trio-websocket client connection."""

    __slots__ = ("_lease", "_shelter", "_websocket")

    def __init__(
        self,
        websocket: trio_websocket.WebSocketConnection,
        lease: Lease,
        shelter: trio.CancelScope,
    ) -> None:
        self._websocket = websocket
        self._lease = lease
        self._shelter = shelter

    async def get_message(self) -> str | bytes:
        try:
            return await self._websocket.get_message()
        except trio_websocket.ConnectionClosed as closed:
            raise _closed(closed.reason) from None

    async def send_message(self, message: str | bytes) -> None:
        try:
            await self._websocket.send_message(message)
        except trio_websocket.ConnectionClosed as closed:
            raise _closed(closed.reason) from None
        except LocalProtocolError:  # wsproto's state is past OPEN (a close under way)
            raise ChannelClosed(_ABNORMAL) from None

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        # From now on the channel task's shield lasts CLOSE_BOUND at most.
        self._shelter.deadline = min(self._shelter.deadline, trio.current_time() + CLOSE_BOUND)
        try:
            with trio.move_on_after(CLOSE_BOUND):
                await self._websocket.aclose(code, reason or None)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # trio-websocket closed the stream regardless
        finally:
            self._lease.release()

    def __repr__(self) -> str:
        state = "open" if self._websocket.closed is None else "closed"
        return f"<upstream channel {state} at {self._lease.backend.url.text}>"


def _closed(reason: trio_websocket.CloseReason | None) -> ChannelClosed:
    if reason is None:
        return ChannelClosed(_ABNORMAL)
    text = reason.reason or ""
    if reason.code == _TOO_BIG and text.startswith(_TOO_BIG_REASON):
        return MessageTooLarge(_TOO_BIG, "message too large")
    return ChannelClosed(reason.code, text)
