"""A bounded one-shot HTTP/1.1 GET for the providers: ``fetch(url, ...)`` → ``Fetched`` (status,
headers, body), used by the discovery provider (SPEC §10.5) and by any provider that reads one
document over HTTP.

Ring 1 (trio, h11, ssl). Nurseries: none (one connection per call, opened and closed inside the
call). Deadlines: one ``fail_after(timeout)`` around the whole call (name resolution, connect,
TLS handshake, request, the whole answer). An https URL is verified against ``ssl_context``
when given, else the system's trust store (one default context, built off the event loop on
first use and shared). Answer heads are capped at h11's 16 KiB and bodies at ``max_body``: a
``Content-Length`` above the cap fails before any body is read, and a body without one fails
as soon as it passes the cap. Interim (1xx) answers are skipped.

Every failure is a ``FetchError`` whose message is one line: ``GET <url without query>: <reason>``
(the query is left out because it may carry a token; URLs with userinfo are refused, header
values are never quoted).

Must not: follow redirects (a 3xx is returned as it came), keep or reuse connections, retry,
or block the event loop.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import h11
import trio

from a3s_gateway.config.urls import HttpUrl
from a3s_gateway.errors import GatewayError, one_line
from a3s_gateway.version import __version__

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["FetchError", "Fetched", "fetch", "one_line"]

_READ_SIZE: Final = 65536
_USER_AGENT: Final = f"a3s-gateway/{__version__}"


class FetchError(GatewayError):
    """A fetch failed: invalid URL, timeout, connect or TLS failure, invalid HTTP, a body over
    the cap. ``str()`` is one line without secrets."""

    def __init__(self, reason: str) -> None:
        super().__init__(one_line(reason))


@dataclass(frozen=True, slots=True)
class Fetched:
    """A complete answer: status, header fields (lower-case names, latin-1 text, in order) and
    body (at most the call's ``max_body`` bytes)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of field ``name`` (any case), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key == wanted), None)


class _AnswerError(Exception):
    """A reason to fail, raised inside the exchange and turned into ``FetchError``."""


class _SystemTrust:
    """The default client context (system trust store), built once in a worker thread."""

    def __init__(self) -> None:
        self._context: ssl.SSLContext | None = None

    async def context(self) -> ssl.SSLContext:
        if self._context is None:
            self._context = await trio.to_thread.run_sync(ssl.create_default_context)
        return self._context


_system_trust: Final = _SystemTrust()


async def fetch(
    url: str,
    *,
    timeout: float,  # noqa: ASYNC109 -- one bound for the whole call, named in its error
    max_body: int,
    headers: Sequence[tuple[str, str]] = (),
    ssl_context: ssl.SSLContext | None = None,
) -> Fetched:
    """``GET url`` on a new connection, closed afterwards; the whole call within ``timeout``
    seconds. ``headers`` are sent after ``Host``, ``User-Agent`` and ``Connection: close``
    (a ``Host`` or ``User-Agent`` among them replaces the default; a ``Connection`` is
    dropped). Raises ``FetchError``."""
    try:
        parsed = HttpUrl(url)
    except ValueError as error:
        raise FetchError(f"GET: {error}") from None
    where = f"GET {_shown(parsed)}"
    try:
        with trio.fail_after(timeout):
            context = None
            if parsed.scheme == "https":
                context = ssl_context or await _system_trust.context()
            return await _exchange(parsed, _head(parsed, headers), context, max_body)
    except trio.TooSlowError:
        raise FetchError(f"{where}: no complete answer within {timeout:g} s") from None
    except _AnswerError as error:
        raise FetchError(f"{where}: {error}") from None
    except (h11.LocalProtocolError, UnicodeError):
        # (h11's message may quote a header value, which may be a credential)
        raise FetchError(f"{where}: the request could not be encoded") from None
    except h11.RemoteProtocolError as error:
        raise FetchError(f"{where}: invalid HTTP answer: {error}") from None
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as error:
        raise FetchError(f"{where}: {_transport_reason(error)}") from None


def _shown(url: HttpUrl) -> str:
    """``url`` for messages: scheme, authority and path, without the query."""
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{url.scheme}://{host}:{url.port}{url.target.partition('?')[0]}"


def _authority(url: HttpUrl) -> str:
    """The ``Host`` header: the port only when it is not the scheme's default."""
    host = f"[{url.host}]" if ":" in url.host else url.host
    default = 443 if url.scheme == "https" else 80
    return host if url.port == default else f"{host}:{url.port}"


def _head(url: HttpUrl, extra: Sequence[tuple[str, str]]) -> h11.Request:
    names = {name.lower() for name, _ in extra}
    fields: list[tuple[str, str]] = []
    if "host" not in names:
        fields.append(("Host", _authority(url)))
    if "user-agent" not in names:
        fields.append(("User-Agent", _USER_AGENT))
    fields.append(("Connection", "close"))
    fields += [(name, value) for name, value in extra if name.lower() != "connection"]
    return h11.Request(method="GET", target=url.target, headers=fields)


async def _exchange(
    url: HttpUrl, head: h11.Request, context: ssl.SSLContext | None, max_body: int
) -> Fetched:
    stream: trio.abc.Stream = await trio.open_tcp_stream(url.host, url.port)
    try:
        if context is not None:
            tls = trio.SSLStream(stream, context, server_hostname=url.host, https_compatible=True)
            stream = tls
            await tls.do_handshake()
        connection = h11.Connection(h11.CLIENT)
        await stream.send_all(
            (connection.send(head) or b"") + (connection.send(h11.EndOfMessage()) or b"")
        )
        return await _receive(connection, stream, max_body)
    finally:
        await trio.aclose_forcefully(stream)


async def _receive(connection: h11.Connection, stream: trio.abc.Stream, max_body: int) -> Fetched:
    """The final answer; interim (1xx) answers are skipped."""
    status = 0
    fields: tuple[tuple[str, str], ...] = ()
    body = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(bytes(await stream.receive_some(_READ_SIZE)))
        elif isinstance(event, h11.Response):
            status = event.status_code
            fields = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers)
            _check_declared_length(fields, max_body)
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > max_body:
                raise _AnswerError(f"the body is longer than {max_body} bytes")
        elif isinstance(event, h11.EndOfMessage):
            return Fetched(status, fields, bytes(body))
        elif isinstance(event, h11.ConnectionClosed):
            raise _AnswerError("the connection closed before an answer")
        elif not isinstance(event, h11.InformationalResponse):
            raise _AnswerError(f"unexpected HTTP event {type(event).__name__}")


def _check_declared_length(fields: tuple[tuple[str, str], ...], max_body: int) -> None:
    """Fail before reading a body whose ``Content-Length`` is over the cap (h11 has already
    checked that the field is a valid number)."""
    for name, value in fields:
        if name == "content-length" and int(value) > max_body:
            raise _AnswerError(f"the body ({value} bytes) is longer than {max_body} bytes")


def _transport_reason(error: BaseException) -> str:
    """A one-line reason for a connect, TLS or stream failure (trio wraps TLS errors)."""
    cause = error.__cause__
    if isinstance(error, trio.BrokenResourceError) and isinstance(cause, ssl.SSLError):
        return f"TLS: {cause}"
    if isinstance(error, ssl.SSLError):
        return f"TLS: {error}"
    return str(error) or type(error).__name__
