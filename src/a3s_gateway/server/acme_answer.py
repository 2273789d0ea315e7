"""Answering ACME validation requests on the listeners (SPEC §12.2).

Ring 1. Two answers, both read from the process's ``ChallengeBoard`` (``acme/board.py``):

- HTTP-01 (``http_challenge``): on a plaintext http entrypoint, ``GET`` or ``HEAD
  /.well-known/acme-challenge/<token>`` for a pending token is answered ``200 text/plain``
  with the key authorization, before redirects, routing and middlewares (``handle.py`` asks
  before ``prepare``). A token this process has not presented is looked up in the
  ``challenges/`` directory of every HTTP-01 ``acme_storage_path`` (``RuntimeConfig.
  acme_storage``): another gateway sharing the storage presented it. A token found nowhere
  goes on to routing like any path.
- TLS-ALPN-01 (``tls_alpn_challenge``): while a TLS-ALPN-01 challenge is pending, a TLS
  entrypoint peeks each ClientHello first (within ``timeouts.peek``); one that offers
  ``acme-tls/1`` for a pending name completes a handshake with that name's challenge
  certificate and ALPN ``acme-tls/1`` (within ``timeouts.handshake``), then the connection
  closes (RFC 8737). Any other hello is handed on with its bytes replayed.

Both are counted in ``a3s_acme_challenges_served_total{type}``. Nurseries: none. Deadlines:
the peek and the handshake above; a challenge file is read in a worker thread (bounded).

Must not: log a key authorization or a key, or answer a token that is not pending.
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.acme.storage import read_challenge
from a3s_gateway.protocols.events import ResponseHead
from a3s_gateway.protocols.responses import GeneratedResponse
from a3s_gateway.protocols.target import ACME_CHALLENGE_PREFIX, is_acme_challenge
from a3s_gateway.server.preamble import peek_client_hello
from a3s_gateway.streams import PrefixedStream

if TYPE_CHECKING:
    from a3s_gateway.protocols.events import RequestHead
    from a3s_gateway.runtime.compile import EntrypointRuntime
    from a3s_gateway.server.downstream import ConnInfo
    from a3s_gateway.server.server_context import ServerContext

__all__ = ["ACME_ALPN", "http_challenge", "tls_alpn_challenge", "wants_http_challenge"]

log: Final = logging.getLogger("a3s_gateway.acme")

#: The ALPN protocol of the TLS-ALPN-01 challenge (RFC 8737).
ACME_ALPN: Final = "acme-tls/1"


def wants_http_challenge(head: RequestHead, info: ConnInfo, ctx: ServerContext) -> bool:
    """Whether ``head`` may be an HTTP-01 validation this process answers (cheap: the hot
    path asks it of every request)."""
    return (
        not info.tls
        and head.target.startswith(ACME_CHALLENGE_PREFIX)
        and (ctx.challenges.has_http or bool(ctx.runtime.acme_storage))
        and head.method in (b"GET", b"HEAD")
    )


async def http_challenge(head: RequestHead, ctx: ServerContext) -> GeneratedResponse | None:
    """The HTTP-01 answer to ``head`` (``wants_http_challenge`` said yes), or None: not a
    pending token, to be routed normally."""
    path = head.target.split(b"?", 1)[0]
    if not is_acme_challenge(path):
        return None
    token = path[len(ACME_CHALLENGE_PREFIX) :].decode("ascii")
    answer = ctx.challenges.http_answer(token)
    if answer is None:
        for storage in ctx.runtime.acme_storage:
            answer = await trio.to_thread.run_sync(read_challenge, storage, token)
            if answer is not None:
                break
    if answer is None:
        return None
    ctx.metrics.acme_challenge_served("http-01")
    log.info("acme: answered the HTTP-01 validation of token %s", token)
    body = answer.encode("ascii")
    headers = [
        (b"content-type", b"text/plain"),
        (b"cache-control", b"no-store"),
        (b"server", b"a3s-gateway"),
        (b"content-length", str(len(body)).encode()),
    ]
    return GeneratedResponse(ResponseHead(status=200, headers=headers), body, close=False)


async def tls_alpn_challenge(
    stream: trio.abc.HalfCloseableStream,
    info: ConnInfo,
    entry: EntrypointRuntime,
    ctx: ServerContext,
) -> trio.abc.HalfCloseableStream | None:
    """Peek the ClientHello (a TLS-ALPN-01 challenge is pending): a validation is answered
    here and None returned; any other connection's stream is returned with the bytes read
    replayed (None too when the client left before its hello was whole)."""
    hello = await peek_client_hello(
        stream, b"", entry.peek_timeout, stats=ctx.streams, entrypoint=entry.name
    )
    if hello is None:
        await trio.aclose_forcefully(stream)
        return None
    rest: trio.abc.HalfCloseableStream = (
        PrefixedStream(stream, hello.data) if hello.data else stream
    )
    if ACME_ALPN not in hello.alpn:
        return rest
    pair = ctx.challenges.alpn_certificate(hello.sni)
    if pair is None:
        return rest
    context = await _context(ctx, pair)
    wrapped = trio.SSLStream(rest, context, server_side=True)
    with trio.move_on_after(entry.handshake_timeout):
        try:
            await wrapped.do_handshake()
        except (trio.BrokenResourceError, ssl.SSLError) as error:
            log.debug("acme: TLS-ALPN-01 handshake from %s failed: %s", info.peer_ip, error)
        else:
            ctx.metrics.acme_challenge_served("tls-alpn-01")
            log.info("acme: answered the TLS-ALPN-01 validation of %s", hello.sni)
    await trio.aclose_forcefully(wrapped)
    return None


async def _context(ctx: ServerContext, pair: tuple[bytes, bytes]) -> ssl.SSLContext:
    """The server context of one challenge certificate (built once, in a worker thread); the
    contexts of challenges no longer on the board are dropped then, so the cache holds no
    more than the pending challenges."""
    cache = ctx.alpn_contexts
    found = cache.get(pair[0])
    if found is None:
        found = await trio.to_thread.run_sync(_build_context, pair)
        pending = {certificate for certificate, _ in ctx.challenges.state().alpn.values()}
        for stale in [pem for pem in cache if pem not in pending]:
            del cache[stale]
        cache[pair[0]] = found
    return found


def _build_context(pair: tuple[bytes, bytes]) -> ssl.SSLContext:
    """Blocking: a TLS 1.2+ server context serving ``pair`` with ALPN ``acme-tls/1`` only
    (``load_cert_chain`` reads files: a private temporary directory, removed at once)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols([ACME_ALPN])
    with tempfile.TemporaryDirectory(prefix="a3s-acme-alpn-") as directory:
        cert_file = os.path.join(directory, "cert.pem")
        key_file = os.path.join(directory, "key.pem")
        for path, data in ((cert_file, pair[0]), (key_file, pair[1])):
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
        context.load_cert_chain(cert_file, key_file)
    return context
