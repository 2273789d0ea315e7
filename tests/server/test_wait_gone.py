"""``Http1Downstream.wait_gone``: a waiting client that hangs up is seen (SPEC §11.5 "client
disconnects while waiting"), through TLS and with unread bytes, and one that stays is not."""

from __future__ import annotations

import socket
import ssl
from typing import TYPE_CHECKING, cast

import trio
import trio.testing

from a3s_gateway.server.http1_downstream import Http1Downstream, _socket_under
from a3s_gateway.streams import PrefixedStream

if TYPE_CHECKING:
    from a3s_gateway.protocols.http1 import Http1Server


def downstream(stream: trio.abc.Stream) -> Http1Downstream:
    # The adapter is never used by wait_gone.
    return Http1Downstream(stream, cast("Http1Server", None), body_idle=1.0)


def pair() -> tuple[trio.SocketStream, socket.socket]:
    ours, theirs = socket.socketpair()
    return trio.SocketStream(trio.socket.from_stdlib_socket(ours)), theirs


async def test_a_client_that_closes_is_seen_even_with_unread_bytes() -> None:
    stream, client = pair()
    client.sendall(b"part of a body the gateway has not read")
    client.close()
    with trio.fail_after(5):
        await downstream(stream).wait_gone()
    await stream.aclose()


async def test_a_client_that_stays_is_never_gone() -> None:
    stream, client = pair()
    client.sendall(b"GET /next HTTP/1.1\r\n")  # a pipelined request: still there
    with trio.move_on_after(1) as waited:
        await downstream(stream).wait_gone()
    assert waited.cancelled_caught
    client.close()
    await stream.aclose()


async def test_the_socket_is_found_under_tls_and_a_replayed_prefix() -> None:
    stream, client = pair()
    context = ssl.create_default_context()
    wrapped = trio.SSLStream(PrefixedStream(stream, b"x"), context, server_hostname="a.test")
    assert _socket_under(wrapped) == stream.socket.fileno()
    memory = trio.testing.MemorySendStream()
    assert _socket_under(cast("trio.abc.Stream", memory)) == -1
    client.close()
    await stream.aclose()
