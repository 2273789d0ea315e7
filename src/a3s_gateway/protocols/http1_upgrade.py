"""Protocol switches over HTTP/1.1: which requests ask for one, and what a ``101`` carries.

Ring 0: pure functions over a request's method, version, framing and fields, and over a
``101``'s fields; no trio, sockets, TLS, clocks or logging. Must not: parse bytes, decide whether
a switch is wanted (the exchange does), or know any protocol switched to (WebSocket, h2c).

One rule serves both directions, so that the server adapter (``http1.py``) writes a ``101`` only
in answer to a request that asked for it and the client adapters (``http1_client.py`` over h11,
``http1_llhttp.py`` over llhttp) take a ``101`` only after sending such a request; a ``101``
anywhere else is a bug (ours: 500) or the upstream's fault (502).

A request asks for a switch (RFC 9110 §7.8) when it is an HTTP/1.1 ``GET`` without a body whose
``Connection`` names the ``upgrade`` option and whose ``Upgrade`` lists at least one protocol.
RFC 9110 says a server must ignore ``Upgrade`` from HTTP/1.0 and that ``Upgrade`` comes with
``Connection: upgrade``; h11 proposes a switch on any request with an ``Upgrade`` value and
switches once that request is complete. Asking for ``GET`` without a body keeps the switch where
nothing of the request is still to be read when the ``101`` goes out (a WebSocket handshake is
such a request), so every byte after the request head belongs to the new protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from a3s_gateway.protocols.headers import connection_tokens

if TYPE_CHECKING:
    from collections.abc import Sequence

    from a3s_gateway.protocols.headers import HeaderLine, Headers

__all__ = ["SWITCHING", "asks_for_upgrade", "switch_fields"]

#: The status that ends HTTP on a connection (RFC 9110 §15.2.2).
SWITCHING: Final = 101
#: Fields a ``101`` must not carry: RFC 9110 §8.6 forbids ``Content-Length`` and RFC 9112 §6.1
#: ``Transfer-Encoding`` in any 1xx response; no message body follows a ``101``.
_NO_FRAMING: Final = frozenset({b"content-length", b"transfer-encoding"})


def asks_for_upgrade(
    method: bytes, http_version: bytes, headers: Sequence[HeaderLine], has_body: bool
) -> bool:
    """Whether a request asks to switch protocols (see the module docstring).

    ``headers`` are lower-case names (the adapters' normal form). Cheap for every other
    request: the fields are looked at only for an HTTP/1.1 ``GET`` without a body.
    """
    if has_body or method != b"GET" or http_version != b"1.1":
        return False
    for name, value in headers:
        # h11's reading of a comma list: a protocol is any non-empty element once stripped.
        if name == b"upgrade" and any(item.strip() for item in value.split(b",")):
            return b"upgrade" in connection_tokens(headers)
    return False


def switch_fields(headers: Sequence[HeaderLine]) -> Headers | None:
    """The fields of a ``101`` as written: ``headers`` in order without framing fields, or None
    when they name no protocol in ``Upgrade`` (RFC 9110 §7.8: a server that sends a ``101``
    must say what it switches to)."""
    lines = [line for line in headers if line[0] not in _NO_FRAMING]
    for name, value in lines:
        if name == b"upgrade" and value.strip():
            return lines
    return None
