"""One pooled upstream HTTP/1.1 connection: a trio stream plus its client adapter (SPEC §5.7).

Ring 1. Owns no nursery and sets no deadline; ``aclose`` is bounded by itself
(``trio.aclose_forcefully``), ``close_nowait`` never blocks. ``Http1Upstream``
(``upstream/http1_upstream.py``, the exchange's ``Upstream`` seam) drives ``adapter`` over
``stream`` under the exchange's deadlines and tells the pool whether the connection may be
reused (SPEC §5.7 "Reuse safety").

The adapter is created on first use through an injectable factory, so the pool and its tests
never depend on ``Http1Client``'s behaviour, and importing this package does not import the
HTTP/1.1 adapter module (``runtime/compile.py`` imports ``upstream`` for ``Peer``).

After a protocol switch ``Http1Upstream.take_over`` gives the stream to a new owner with
``detach``: the connection object stays behind for the pool's bookkeeping, but closing it
closes nothing, and it is never reused (``looks_dead``).

Must not: read or write the stream on behalf of the pool (the pool only checks readability),
decide reusability, or shield an unbounded close.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, TypeAlias

import trio

from a3s_gateway.streams import RawSocketStream

if TYPE_CHECKING:
    from collections.abc import Callable

    from a3s_gateway.protocols.http1_engines import UpstreamAdapter
    from a3s_gateway.upstream.peer import Peer

AdapterFactory: TypeAlias = "Callable[[], UpstreamAdapter]"


def new_http1_client() -> UpstreamAdapter:
    """The default ``AdapterFactory``: a fresh client adapter of the default engine (llhttp;
    ``http1_parser`` chooses per gateway) with SPEC §5.7's head limits."""
    # Imported on first use: see the module docstring.
    from a3s_gateway.protocols.http1_engines import upstream_adapter_factory

    return upstream_adapter_factory()()


class UpstreamConnection:
    """A connection to ``peer`` over ``stream``; created by the pool after a successful dial.

    ``reused`` is True once the pool has handed it out a second time (the stale-reuse rule of
    SPEC §5.7 applies only then). ``created_at`` and ``idle_since`` are trio clock times.
    """

    __slots__ = (
        "_adapter",
        "_adapter_factory",
        "checked_out",
        "created_at",
        "detached",
        "idle_since",
        "peer",
        "reused",
        "stream",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        peer: Peer,
        *,
        created_at: float,
        adapter_factory: AdapterFactory = new_http1_client,
    ) -> None:
        self.stream = stream
        self.peer = peer
        self.created_at = created_at
        self.idle_since = created_at
        self.reused = False
        self.checked_out = False  # set and cleared by the pool only
        #: The stream was handed to a new owner (``detach``): not this object's to close.
        self.detached = False
        self._adapter_factory = adapter_factory
        self._adapter: UpstreamAdapter | None = None

    @property
    def adapter(self) -> UpstreamAdapter:
        """The HTTP/1.1 client adapter of this connection, created on first access."""
        adapter = self._adapter
        if adapter is None:
            adapter = self._adapter = self._adapter_factory()
        return adapter

    def detach(self) -> trio.abc.Stream:
        """Give up the stream to a new owner after a protocol switch: from now on this
        connection never closes it (``close_nowait`` and ``aclose`` do nothing) and never
        serves again (``looks_dead``). Never blocks."""
        self.detached = True
        return self.stream

    def looks_dead(self) -> bool:
        """True if this idle connection must not be reused: readable (EOF, a reset or stray
        bytes — an idle HTTP/1.1 server has nothing to say) or already closed. Never blocks.

        Only a ``RawSocketStream`` or a plain ``trio.SocketStream`` can be checked, also under
        a ``trio.SSLStream`` (a TLS backend's close_notify or reset makes its socket readable);
        any other stream is assumed alive (the stale-reuse rule of SPEC §5.7 covers what slips
        through). ``is_readable`` is trio's public zero-timeout poll on the socket, equivalent
        to a ``recv(MSG_PEEK|MSG_DONTWAIT)`` that does not block, without wrapping the file
        descriptor in a second socket object.
        """
        if self.detached:
            return True
        stream: trio.abc.Stream = self.stream
        while isinstance(stream, trio.SSLStream):
            stream = stream.transport_stream
        if isinstance(stream, RawSocketStream):
            return stream.is_readable()
        if not isinstance(stream, trio.SocketStream):
            return False
        sock = stream.socket
        return sock.fileno() == -1 or sock.is_readable()

    def close_nowait(self) -> bool:
        """Close at once if the stream allows it synchronously; False when the caller must
        ``await aclose()`` instead.

        A ``RawSocketStream`` or a ``trio.SocketStream`` closes its socket (what ``aclose``
        does); a ``trio.SSLStream`` over one is closed the way ``aclose_forcefully`` would, without
        close_notify, by closing the socket underneath. Those are all production streams.
        A detached connection has nothing to close: True at once.
        """
        if self.detached:
            return True
        stream: trio.abc.Stream = self.stream
        while isinstance(stream, trio.SSLStream):
            stream = stream.transport_stream
        if isinstance(stream, RawSocketStream):
            stream.close_nowait()
            return True
        if isinstance(stream, trio.SocketStream):
            stream.socket.close()
            return True
        return False

    async def aclose(self) -> None:
        """Close the stream without a graceful exchange; bounded, and done even if cancelled.

        Never raises for a broken stream: trio streams are closed even when ``aclose`` fails,
        and the pool runs this in its own nursery, which must not die of one bad connection.
        A detached connection's stream is left alone (a checkpoint only).
        """
        if self.detached:
            await trio.lowlevel.checkpoint()
            return
        with contextlib.suppress(trio.BrokenResourceError, OSError):
            await trio.aclose_forcefully(self.stream)

    def __repr__(self) -> str:
        return f"<UpstreamConnection {self.peer} reused={self.reused}>"
