"""What a connection sends before its protocol's first byte: a PROXY header, a ClientHello.

Ring 1. Nurseries: none. Deadlines: the PROXY header is read within ``timeouts.handshake`` and
the ClientHello peek within ``timeouts.peek`` (SPEC §3.7, §4.11), each one ``move_on_after``
around its reads. The parsing is Ring 0's (``protocols/proxy_protocol.py``,
``routing/clienthello.py``): pure functions called again with the whole buffer after every read. The
ClientHello peek reads only as far as the parser's ``NeedMore`` says (a TLS backend must get
every byte it would have got, and nothing is lost by stopping at the hello); the PROXY reader
asks for up to the header cap at once (a v1 line would otherwise come a byte per read), handing
back what follows the header. Both buffers stay within their parsers' caps.

``read_proxy_header`` is called only for a peer in ``proxy_protocol.trusted_ips`` (other peers'
bytes are never interpreted). It returns the header (or None when the peer sent none: its bytes
did not start with either signature, or it sent nothing before the deadline) and the bytes read
past it; a malformed or truncated header, or an EOF inside one, is ``ProxyHeaderError`` (the caller
closes). ``peek_client_hello`` returns the SNI and ALPN list and every byte it read; a client
that is not TLS, sends nothing or is too slow gets SNI ``""`` (a catch-all may still take it),
a malformed or oversized hello too, counted; an EOF before the hello is complete is ``None``
(close).

Must not: write to the stream, or keep bytes it read from the caller (they are all returned).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.protocols.proxy_protocol import (
    MAX_PROXY_HEADER_BYTES,
    Malformed,
    NeedMore,
    NotProxy,
    ProxyHeader,
    parse_proxy_header,
)
from a3s_gateway.routing.clienthello import (
    MAX_CLIENT_HELLO_BYTES,
    Complete,
    parse_client_hello,
)
from a3s_gateway.routing.clienthello import Malformed as BadHello
from a3s_gateway.routing.clienthello import NeedMore as HelloNeedsMore

if TYPE_CHECKING:
    from a3s_gateway.observability.stream_stats import StreamStats

__all__ = ["Hello", "ProxyHeaderError", "peek_client_hello", "read_proxy_header"]

_READ: Final = 65536


class ProxyHeaderError(Exception):
    """A trusted peer's PROXY header was malformed, truncated or did not arrive in time."""


@dataclass(frozen=True, slots=True)
class Hello:
    """What the peek learned: the SNI (``""``: none), the offered ALPN protocols, and every
    byte read (to be replayed first)."""

    sni: str
    alpn: tuple[str, ...]
    data: bytes


async def _receive(stream: trio.abc.ReceiveStream, limit: int) -> bytes | bytearray:
    """One read of at most ``limit`` bytes; ``b""`` at EOF or on a broken stream."""
    try:
        return await stream.receive_some(max(1, min(limit, _READ)))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return b""


async def read_proxy_header(
    stream: trio.abc.ReceiveStream, seconds: float
) -> tuple[ProxyHeader | None, bytes]:
    """The PROXY header a trusted peer sent, if any, and the bytes after it (module docstring).

    Raises ``ProxyHeaderError``."""
    buf = bytearray()
    with trio.move_on_after(seconds):
        while True:
            result = parse_proxy_header(buf)
            if isinstance(result, ProxyHeader):
                return result, bytes(buf[result.consumed :])
            if isinstance(result, NotProxy):
                return None, bytes(buf)
            if isinstance(result, Malformed):
                raise ProxyHeaderError(result.reason)
            assert isinstance(result, NeedMore)
            # Read as much as a header may take, not the one byte a v1 line asks for at a
            # time: bytes past the header are handed back as the prefix anyway.
            data = await _receive(stream, MAX_PROXY_HEADER_BYTES - len(buf))
            if not data:
                if not buf:
                    return None, b""
                raise ProxyHeaderError("eof")
            buf += data
    if buf:
        raise ProxyHeaderError("timeout")
    return None, b""


async def peek_client_hello(
    stream: trio.abc.ReceiveStream,
    buffered: bytes,
    seconds: float,
    *,
    stats: StreamStats,
    entrypoint: str,
) -> Hello | None:
    """Read until a whole ClientHello is in (module docstring); ``buffered``: bytes already
    read (a PROXY header's leftovers). None: the client closed before its hello was whole."""
    buf = bytearray(buffered)
    with trio.move_on_after(seconds):
        while True:
            result = parse_client_hello(buf)
            if isinstance(result, Complete):
                return Hello(result.sni, result.alpn, bytes(buf))
            if isinstance(result, BadHello):
                stats.client_hello_error(entrypoint, result.reason)
                return Hello("", (), bytes(buf))
            if not isinstance(result, HelloNeedsMore):  # NotTls
                return Hello("", (), bytes(buf))
            data = await _receive(stream, min(result.at_least, MAX_CLIENT_HELLO_BYTES) - len(buf))
            if not data:
                return None
            buf += data
    return Hello("", (), bytes(buf))
