"""The request side of HTTP/2 as the server adapter needs it (SPEC §5.1, §5.3, §5.8), pure.

Ring 0: no trio, sockets, TLS, clocks or logging. ``valid_request`` runs h2's own header-block
validation on one request (RFC 9113 §8.1-8.3, RFC 8441 §4 for ``:protocol``), so that
``Http2Server`` can fail that stream alone where h2 would end the connection; ``request_head``
turns a validated block into the protocol-neutral ``RequestHead`` (``:authority`` as the routing
authority and a ``host`` line, cookies joined); ``h2c_settings`` recognises an HTTP/1.1
``Upgrade: h2c`` request and checks its ``HTTP2-Settings``.

CONNECT (RFC 9113 §8.5, RFC 8441): an extended ``CONNECT`` (with ``:protocol``, ``:scheme`` and
``:path``) becomes a head with ``upgrade`` set and ``protocol`` the lower-cased ``:protocol``,
its target the ``:path`` and no body (after a 2xx its DATA belong to the tunnel, not to a
request body); the exchange treats ``protocol == b"websocket"`` as a WebSocket handshake and
refuses any other protocol (``target.precheck``: 501). A plain ``CONNECT`` (``:authority``
only) becomes a head whose target is that authority (authority-form), for the exchange to
refuse (405, as over HTTP/1.1).

Must not: keep state, or accept a header block h2 would refuse.
"""

from __future__ import annotations

import base64
import re
import struct
from typing import TYPE_CHECKING, Final

import h2.exceptions
import h2.settings
import h2.utilities

from a3s_gateway.protocols.events import RequestHead

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["h2c_settings", "request_head", "valid_request"]


#: How h2 validates a request's header block (we are the server: ``is_client`` is false).
_REQUEST_FLAGS: Final = h2.utilities.HeaderValidationFlags(
    is_client=False, is_trailer=False, is_response_header=False, is_push_promise=False
)


def valid_request(fields: Sequence[tuple[bytes, bytes]]) -> bool:
    """Whether a request's header block is well-formed (RFC 9113 §8.1.1-8.3: pseudo-header
    fields, connection-specific fields, ``te``, names, ``:authority`` against ``host``), by
    h2's own validation."""
    try:
        for _ in h2.utilities.validate_headers(fields, _REQUEST_FLAGS):
            pass
    except h2.exceptions.ProtocolError:
        return False
    return True


_SETTINGS_VALUE: Final = re.compile(rb"[A-Za-z0-9_-]*")
_KNOWN_SETTINGS: Final = frozenset(int(code) for code in h2.settings.SettingCodes)


def h2c_settings(head: RequestHead) -> bytes | None:
    """The ``HTTP2-Settings`` value (padded base64url) of an HTTP/1.1 request that asks to
    upgrade to h2c (RFC 7540 §3.2, SPEC §5.1 item 3), else None: a bodiless ``GET`` whose
    ``Upgrade`` lists ``h2c``, with one valid ``HTTP2-Settings`` field and ``Connection``
    naming both. Requests with a body are not upgraded (SPEC allows up to 64 KiB; not done).

    Cheap for every other request: one pass over the fields of a bodiless ``GET`` looking for
    ``upgrade``; the rest is looked at only when there is one.
    """
    if head.has_body or head.method != b"GET" or head.http_version != b"1.1":
        return None
    for name, _ in head.headers:
        if name == b"upgrade":
            return _upgrade_settings(head.headers)
    return None


def _upgrade_settings(fields: Sequence[tuple[bytes, bytes]]) -> bytes | None:
    protocols: list[bytes] = []
    options: list[bytes] = []
    settings = [value for name, value in fields if name == b"http2-settings"]
    for name, value in fields:
        if name == b"upgrade":
            protocols += (item.strip().lower() for item in value.split(b","))
        elif name == b"connection":
            options += (item.strip().lower() for item in value.split(b","))
    if (
        b"h2c" not in protocols
        or b"upgrade" not in options
        or b"http2-settings" not in options
        or len(settings) != 1
    ):
        return None
    value = settings[0].strip()
    if _SETTINGS_VALUE.fullmatch(value) is None or len(value) % 4 == 1:
        return None
    value += b"=" * (-len(value) % 4)
    payload = base64.urlsafe_b64decode(value)
    if len(payload) % 6:
        return None
    pairs: dict[h2.settings.SettingCodes, int] = {}
    for offset in range(0, len(payload), 6):
        code, setting = struct.unpack_from("!HL", payload, offset)
        if code in _KNOWN_SETTINGS:  # RFC 9113 §6.5.2: unknown settings are ignored
            pairs[h2.settings.SettingCodes(code)] = setting
    try:  # the values h2 will apply: each checked as a SETTINGS frame's would be
        h2.settings.Settings(client=True, initial_values=pairs)
    except h2.exceptions.InvalidSettingsValueError:
        return None
    return value


def request_head(
    fields: Sequence[tuple[bytes, bytes]], stream_id: int, *, ended: bool
) -> RequestHead:
    """The ``RequestHead`` of a validated HTTP/2 header block (see the module docstring for
    ``CONNECT``)."""
    method = path = authority = protocol = b""
    headers: list[tuple[bytes, bytes]] = []
    cookies: list[bytes] = []
    host = b""
    for name, value in fields:
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            elif name == b":protocol":
                protocol = value.lower()
        elif name == b"cookie":
            cookies.append(value)
        else:
            if name == b"host":
                host = value
                continue
            headers.append((name, value))
    authority = authority or host
    if cookies:  # RFC 9113 §8.2.3: joined for an HTTP/1.1 hop
        headers.append((b"cookie", b"; ".join(cookies)))
    headers.insert(0, (b"host", authority))
    if protocol:  # an extended CONNECT (validated: only CONNECT may carry :protocol)
        return RequestHead(
            method=method,
            target=path,
            authority=authority,
            headers=headers,
            http_version=b"2",
            stream_id=stream_id,
            upgrade=True,
            protocol=protocol,
        )
    return RequestHead(
        method=method,
        target=path or authority,  # a plain CONNECT has no :path: its target is authority-form
        authority=authority,
        headers=headers,
        http_version=b"2",
        has_body=not ended,
        stream_id=stream_id,
    )
