"""WebSocket over HTTP/2 in the pure core (RFC 8441, SPEC §5.8, §5.11): what the server adapter
announces and makes of an extended CONNECT, how ``target.precheck`` tells it from a tunnel
request, and the handshake pieces of ``protocols/websocket.py`` for an HTTP/2 client.

The peer is h2's own client-side ``H2Connection`` (``Pair`` of ``test_http2.py``), which sends
``:protocol`` as a browser would and parses what our server writes back.
"""

from __future__ import annotations

import base64

import h2.events
import h2.settings
import pytest

from a3s_gateway.protocols.events import BodyChunk, EndOfBody, RequestHead, ResponseHead
from a3s_gateway.protocols.http2 import ErrorCode
from a3s_gateway.protocols.target import precheck
from a3s_gateway.protocols.websocket import (
    HandshakeError,
    accept_value,
    accepts,
    connect_fields,
    new_key,
    upgrade_fields,
    websocket_connect,
    websocket_key,
)
from tests.protocols.test_http2 import GET, Pair, malformed_pair, of_type, only_head

CONNECT_WS = [
    (b":method", b"CONNECT"),
    (b":protocol", b"websocket"),
    (b":scheme", b"https"),
    (b":authority", b"chat.example"),
    (b":path", b"/chat?room=1"),
    (b"sec-websocket-version", b"13"),
    (b"sec-websocket-protocol", b"chat, superchat"),
    (b"sec-websocket-extensions", b"permessage-deflate"),
    (b"origin", b"https://chat.example"),
]


def ws_head(
    *fields: tuple[bytes, bytes], protocol: bytes = b"websocket", method: bytes = b"CONNECT"
) -> RequestHead:
    """An extended CONNECT as the adapter hands it on."""
    return RequestHead(
        method=method,
        target=b"/chat",
        authority=b"chat.example",
        headers=[(b"host", b"chat.example"), *fields],
        http_version=b"2",
        stream_id=1,
        upgrade=True,
        protocol=protocol,
    )


# -- the adapter ----------------------------------------------------------------------------


def test_the_server_announces_the_extended_connect_protocol() -> None:
    pair = Pair()
    pair.to_server()
    [changed] = of_type(pair.to_client(), h2.events.RemoteSettingsChanged)
    setting = changed.changed_settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL]
    assert setting.new_value == 1
    assert pair.client.remote_settings.enable_connect_protocol == 1


def test_an_extended_connect_becomes_a_websocket_handshake_head() -> None:
    pair = Pair()
    pair.settle()
    stream_id = pair.request(CONNECT_WS, end=False)
    head = only_head(pair.to_server())
    assert head.method == b"CONNECT"
    assert head.protocol == b"websocket"
    assert head.upgrade
    assert head.target == b"/chat?room=1"
    assert head.authority == b"chat.example"
    assert head.stream_id == stream_id
    assert head.http_version == b"2"
    # No request body: after the 2xx the stream's DATA belong to the tunnel.
    assert not head.has_body
    assert head.headers[0] == (b"host", b"chat.example")
    assert (b"sec-websocket-protocol", b"chat, superchat") in head.headers
    assert not [name for name, _ in head.headers if name.startswith(b":")]
    assert websocket_connect(head)
    assert precheck(head) is None


def test_the_protocol_is_lower_cased() -> None:
    pair = Pair()
    pair.settle()
    fields = [(b":protocol", b"WebSocket") if n == b":protocol" else (n, v) for n, v in CONNECT_WS]
    pair.request(fields, end=False)
    assert only_head(pair.to_server()).protocol == b"websocket"


def test_the_tunnels_data_arrive_as_body_chunks_and_its_end_as_end_of_body() -> None:
    pair = Pair()
    pair.settle()
    stream_id = pair.request(CONNECT_WS, end=False)
    pair.to_server()
    pair.server.send_head(ResponseHead(200, []), stream_id, end=False)
    [response] = of_type(pair.to_client(), h2.events.ResponseReceived)
    assert response.headers == [(b":status", b"200")]
    assert response.stream_ended is None
    pair.client.send_data(stream_id, b"\x81\x85frame")
    pair.client.end_stream(stream_id)
    events = pair.to_server()
    assert events == [BodyChunk(b"\x81\x85frame", stream_id), EndOfBody(stream_id=stream_id)]
    pair.server.send_data(stream_id, b"\x81\x02hi", end=True)
    received = pair.to_client()
    [data] = of_type(received, h2.events.DataReceived)
    assert data.data == b"\x81\x02hi"
    assert of_type(received, h2.events.StreamEnded)


def test_a_plain_connect_is_handed_on_for_the_exchange_to_refuse_with_405() -> None:
    pair = malformed_pair()
    stream_id = pair.request([(b":method", b"CONNECT"), (b":authority", b"h:1")], end=False)
    head = only_head(pair.to_server())
    assert (head.method, head.target, head.authority) == (b"CONNECT", b"h:1", b"h:1")
    assert (head.protocol, head.upgrade, head.has_body) == (b"", False, True)
    assert head.stream_id == stream_id
    assert not websocket_connect(head)
    refusal = precheck(head)
    assert refusal is not None
    assert refusal.head.status == 405
    assert (b"allow", b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS") in refusal.head.headers


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param([f for f in CONNECT_WS if f[0] != b":path"], id="no-path"),
        pytest.param([f for f in CONNECT_WS if f[0] != b":scheme"], id="no-scheme"),
        pytest.param([*GET, (b":protocol", b"websocket")], id="protocol-on-get"),
    ],
)
def test_a_malformed_extended_connect_gets_a_400_and_a_stream_error(
    fields: list[tuple[bytes, bytes]],
) -> None:
    pair = malformed_pair()
    stream_id = pair.request(fields, end=False)
    assert not [event for event in pair.to_server() if isinstance(event, RequestHead)]
    events = pair.to_client()
    [response] = of_type(events, h2.events.ResponseReceived)
    assert (response.stream_id, response.headers[0]) == (stream_id, (b":status", b"400"))
    [reset] = of_type(events, h2.events.StreamReset)
    assert reset.error_code == ErrorCode.PROTOCOL_ERROR


# -- precheck -------------------------------------------------------------------------------


def test_precheck_lets_a_websocket_connect_through_and_refuses_other_protocols() -> None:
    assert precheck(ws_head((b"sec-websocket-version", b"13"))) is None
    other = precheck(ws_head(protocol=b"connect-udp"))
    assert other is not None
    assert other.head.status == 501
    assert b"unsupported protocol" in other.body
    trace = precheck(RequestHead(method=b"TRACE", target=b"/", authority=b"h", headers=[]))
    assert trace is not None
    assert trace.head.status == 405


# -- the handshake pieces -------------------------------------------------------------------


def test_websocket_connect_checks_the_version() -> None:
    assert websocket_connect(ws_head((b"sec-websocket-version", b"13")))
    with pytest.raises(HandshakeError) as wrong:
        websocket_connect(ws_head((b"sec-websocket-version", b"12")))
    assert (wrong.value.status, wrong.value.reason) == (426, "unsupported websocket version")
    with pytest.raises(HandshakeError) as mixed:
        websocket_connect(
            ws_head((b"sec-websocket-version", b"13"), (b"sec-websocket-version", b"8"))
        )
    assert mixed.value.status == 426
    with pytest.raises(HandshakeError) as missing:
        websocket_connect(ws_head())
    assert (missing.value.status, missing.value.reason) == (400, "missing sec-websocket-version")


def test_websocket_connect_needs_no_key_and_ignores_one() -> None:
    head = ws_head((b"sec-websocket-version", b"13"), (b"sec-websocket-key", b"not base64 at all"))
    assert websocket_connect(head)


def test_websocket_connect_is_only_for_an_http2_websocket_connect() -> None:
    version = (b"sec-websocket-version", b"13")
    assert not websocket_connect(ws_head(version, protocol=b"connect-udp"))
    assert not websocket_connect(ws_head(version, method=b"GET"))
    http1 = RequestHead(
        method=b"GET",
        target=b"/chat",
        authority=b"h",
        headers=[
            (b"upgrade", b"websocket"),
            (b"connection", b"upgrade"),
            (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
            version,
        ],
        upgrade=True,
    )
    assert not websocket_connect(http1)
    # ...and websocket_key is not for HTTP/2.
    assert websocket_key(ws_head(version)) is None


def test_new_key_is_the_base64_of_16_random_bytes() -> None:
    nonce = bytes(range(16))
    key = new_key(nonce)
    assert len(key) == 24
    assert base64.b64decode(key, validate=True) == nonce
    # A key the gateway makes is one an HTTP/1.1 handshake check accepts.
    http1 = RequestHead(
        method=b"GET",
        target=b"/",
        authority=b"h",
        headers=[
            (b"upgrade", b"websocket"),
            (b"connection", b"upgrade"),
            (b"sec-websocket-key", key),
            (b"sec-websocket-version", b"13"),
        ],
    )
    assert websocket_key(http1) == key
    with pytest.raises(ValueError, match="16 random bytes"):
        new_key(b"short")


def test_upgrade_fields_make_the_http1_handshake_with_the_gateways_key() -> None:
    forwarded = [
        (b"sec-websocket-version", b"13"),
        (b"sec-websocket-protocol", b"chat"),
        (b"sec-websocket-key", b"the clients own"),
        (b"cookie", b"a=1; b=2"),
    ]
    fields = upgrade_fields(forwarded, b"S0VZS0VZS0VZS0VZS0VZSw==")
    assert fields == [
        (b"sec-websocket-version", b"13"),
        (b"sec-websocket-protocol", b"chat"),
        (b"cookie", b"a=1; b=2"),
        (b"upgrade", b"websocket"),
        (b"connection", b"upgrade"),
        (b"sec-websocket-key", b"S0VZS0VZS0VZS0VZS0VZSw=="),
    ]


def test_connect_fields_keep_what_means_something_in_http2() -> None:
    key = new_key(b"0123456789abcdef")
    upstream_101 = [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade, X-Hop"),
        (b"x-hop", b"1"),
        (b"sec-websocket-accept", accept_value(key)),
        (b"sec-websocket-protocol", b"chat"),
        (b"sec-websocket-extensions", b"permessage-deflate"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
    ]
    assert accepts(key, upstream_101)
    assert connect_fields(upstream_101) == [
        (b"sec-websocket-protocol", b"chat"),
        (b"sec-websocket-extensions", b"permessage-deflate"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
    ]
