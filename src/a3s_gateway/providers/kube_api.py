"""The HTTPS client of the Kubernetes provider (SPEC §10.6): the two calls the provider makes, a
paginated LIST (``KubeClient.list_objects``) and a streaming WATCH (``KubeClient.watch``),
against the server an ``ApiAccess`` describes (``kube_access.py``: where the API server is and
how to authenticate). Plain HTTP/1.1 over h11, TLS through ``ssl``, one connection per call
(``Connection: close``); why no client library: see ``providers/kubernetes.py``.

Requests are ``GET`` with ``Accept: application/json`` and the bearer token ``ApiAccess.bearer``
gives for that request (none over plain http unless a kubeconfig paired them). Redirects are
never followed (a 3xx is an error).

Ring 1. Nurseries: none. Deadlines: connect, TLS handshake, request and response head within
``HEAD_WAIT``; a LIST page's body may pause at most ``LIST_IDLE`` between reads and is capped
at ``MAX_LIST_BODY``; a WATCH has no overall deadline (the server ends it after
``WATCH_SERVER_TIMEOUT``), but ``WATCH_IDLE`` without a byte ends it as an error, and an event
line over ``MAX_EVENT_LINE`` is an error for that stream. Errors are ``KubeApiError`` (which
``kube_access`` raises too, for an unusable configuration): one line, the call named by method
and URL without its query. Whatever the peer does (any status, a stalled or cut body, bytes that
are not HTTP or JSON, JSON nested too deeply), ``list_objects`` and ``watch`` raise nothing but
``KubeApiError`` (and trio's cancellation); ``watch`` also lets through what its ``on_event``
raises.

Must not: follow redirects, retry (the watch loops own retries and backoff), block the event
loop, or put a token or key in any message, repr or log line.
"""

from __future__ import annotations

import contextlib
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, cast
from urllib.parse import quote, urlencode

import h11
import msgspec
import trio

from a3s_gateway.errors import GatewayError, one_line
from a3s_gateway.version import __version__

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping

    from a3s_gateway.providers.kube_access import ApiAccess, ApiServer

__all__ = [
    "HEAD_WAIT",
    "LIST_IDLE",
    "LIST_PAGE_SIZE",
    "MAX_EVENT_LINE",
    "MAX_LIST_BODY",
    "SECRET_PAGE_SIZE",
    "WATCH_IDLE",
    "WATCH_SERVER_TIMEOUT",
    "KubeApiError",
    "KubeClient",
    "KubeList",
    "WatchEvent",
    "one_line",
]

#: Connect, TLS handshake, request and response head of one call.
HEAD_WAIT: Final = 10.0
#: The longest pause while a LIST page's body arrives.
LIST_IDLE: Final = 30.0
#: The cap on one LIST page's body.
MAX_LIST_BODY: Final = 64 << 20
#: Objects per LIST page (``limit``; the server may ignore it), unless the caller asks for
#: fewer (the provider LISTs Secrets, up to 1 MiB each, 50 at a time: ``SECRET_PAGE_SIZE``).
LIST_PAGE_SIZE: Final = 500
#: Objects per LIST page of Secrets: 50 Secrets of the largest size (1 MiB) fit in
#: ``MAX_LIST_BODY``.
SECRET_PAGE_SIZE: Final = 50
#: ``timeoutSeconds`` of a WATCH: the server ends the stream cleanly after it.
WATCH_SERVER_TIMEOUT: Final = 300
#: The longest silence on a WATCH stream before it counts as dead (the server's own timeout
#: plus a margin: a quiet resource may send nothing, bookmarks aside, until then).
WATCH_IDLE: Final = WATCH_SERVER_TIMEOUT + 30.0
#: The cap on one WATCH event line (SPEC §10.6).
MAX_EVENT_LINE: Final = 16 << 20
#: The cap on the body of an error answer (for its ``Status.message``).
_MAX_ERROR_BODY: Final = 64 << 10
_READ_SIZE: Final = 65536
_USER_AGENT: Final = f"a3s-gateway/{__version__}"


class KubeApiError(GatewayError):
    """A call to the API server failed, or its configuration is unusable. ``str()`` is one line
    without secrets; ``status`` is the HTTP status or a watch ``ERROR`` event's code, when the
    server gave one (410: the resource version is too old; LIST again)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(one_line(message))
        self.status = status


# -- the client ------------------------------------------------------------------------------


class _ListMeta(msgspec.Struct, frozen=True, rename="camel"):
    resource_version: str = ""
    continue_: str = msgspec.field(default="", name="continue")


class _ListBody(msgspec.Struct, frozen=True):
    metadata: _ListMeta = _ListMeta()
    items: list[dict[str, object]] | None = None


class _Status(msgspec.Struct, frozen=True):
    """A ``meta/v1`` Status: the body of an error answer and of a watch ``ERROR`` event."""

    message: str = ""
    reason: str = ""
    code: int = 0


class WatchEvent(msgspec.Struct, frozen=True):
    """One line of a WATCH stream: ``type`` (``ADDED``, ``MODIFIED``, ``DELETED``,
    ``BOOKMARK``; ``ERROR`` never reaches the caller) and the object (``obj``, JSON ``object``)."""

    type: str
    obj: dict[str, object] = msgspec.field(name="object")


@dataclass(frozen=True, slots=True)
class KubeList:
    """A complete LIST: every object and the list's resource version (where a WATCH starts)."""

    items: tuple[dict[str, object], ...]
    resource_version: str


_list_decoder: Final = msgspec.json.Decoder(_ListBody)
_event_decoder: Final = msgspec.json.Decoder(WatchEvent)
_status_decoder: Final = msgspec.json.Decoder(_Status)


class _CallError(Exception):
    """A reason a call failed, prefixed with the call's method and URL by ``_calling``."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class KubeClient:
    """LIST and WATCH against ``access.server``; one new connection per call."""

    def __init__(self, access: ApiAccess) -> None:
        self.access = access

    async def list_objects(
        self,
        path: str,
        query: Mapping[str, str],
        *,
        page_size: int = LIST_PAGE_SIZE,
        shape: Callable[[dict[str, object]], dict[str, object]] | None = None,
    ) -> KubeList:
        """Every object at ``path`` (``/api/v1/services``), page by page (``limit``
        ``page_size`` and ``continue``); ``shape`` (when given) is applied to each object as
        its page arrives, so a caller that trims objects never holds more than one page of
        whole ones. Raises ``KubeApiError`` (``status`` 410: a continue token expired)."""
        items: list[dict[str, object]] = []
        token = ""
        while True:
            page_query = {**query, "limit": str(page_size)}
            if token:
                page_query["continue"] = token
            body = await self._get_body(path, page_query)
            try:
                page = _list_decoder.decode(body)
            except (msgspec.DecodeError, RecursionError) as error:
                raise KubeApiError(
                    f"LIST {self._url(path)}: invalid answer: {_decode_reason(error)}"
                ) from None
            del body
            found = page.items or ()
            items.extend(found if shape is None else map(shape, found))
            token = page.metadata.continue_
            if not token:
                return KubeList(tuple(items), page.metadata.resource_version)

    async def watch(
        self,
        path: str,
        query: Mapping[str, str],
        on_event: Callable[[WatchEvent], None],
        *,
        on_open: Callable[[], None] | None = None,
    ) -> None:
        """Stream WATCH events of ``path`` to ``on_event`` (synchronous; what it raises ends
        the stream and propagates) until the server ends the stream; ``on_open`` is called
        once the server accepted the WATCH (a 2xx head). Raises ``KubeApiError``
        for a failed or broken stream, a silence of ``WATCH_IDLE``, a line over
        ``MAX_EVENT_LINE``, an undecodable line, or an ``ERROR`` event (its code as
        ``status``: 410 means LIST again)."""
        where = f"WATCH {self._url(path)}"

        def on_line(line: bytes) -> None:
            try:
                event = _event_decoder.decode(line)
            except (msgspec.DecodeError, RecursionError) as error:
                raise _CallError(f"invalid event: {_decode_reason(error)}") from None
            if event.type == "ERROR":
                try:
                    status = msgspec.convert(event.obj, _Status)
                except (msgspec.ValidationError, RecursionError):
                    status = _Status()
                said = status.message or status.reason or "no message"
                raise _CallError(f"ERROR event {status.code}: {said}", status.code or None)
            on_event(event)

        async with self._calling(where, path, query) as exchange:
            if on_open is not None:
                on_open()
            await exchange.stream_lines(on_line)

    async def _get_body(self, path: str, query: Mapping[str, str]) -> bytes:
        async with self._calling(f"LIST {self._url(path)}", path, query) as exchange:
            return await exchange.read_body(MAX_LIST_BODY, LIST_IDLE)

    def _url(self, path: str) -> str:
        return f"{self.access.server}{path}"

    @contextlib.asynccontextmanager
    async def _calling(
        self, where: str, path: str, query: Mapping[str, str]
    ) -> AsyncIterator[_Exchange]:
        """An open exchange whose answer is 2xx; every failure becomes ``KubeApiError``."""
        server = self.access.server
        target = server.prefix + path
        if query:
            target += "?" + urlencode(query, quote_via=quote, safe="")
        try:
            token = await self.access.bearer()
        except KubeApiError as error:
            raise KubeApiError(f"{where}: {error}") from None
        try:
            with trio.fail_after(HEAD_WAIT):
                exchange = await _open_exchange(self.access, _request_head(server, target, token))
            async with exchange:
                await exchange.expect_2xx()
                yield exchange
        except trio.TooSlowError:
            raise KubeApiError(f"{where}: no answer within {HEAD_WAIT:g} s") from None
        except _CallError as error:
            raise KubeApiError(f"{where}: {error}", status=error.status) from None
        except (h11.LocalProtocolError, UnicodeError):
            # (h11's message may quote a header value, and one of them carries the token)
            raise KubeApiError(f"{where}: the request could not be encoded") from None
        except h11.RemoteProtocolError as error:
            raise KubeApiError(f"{where}: invalid HTTP answer: {error}") from None
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as error:
            raise KubeApiError(f"{where}: {_transport_reason(error)}") from None


def _request_head(server: ApiServer, target: str, token: str | None) -> h11.Request:
    headers = [
        ("Host", server.authority),
        ("User-Agent", _USER_AGENT),
        ("Accept", "application/json"),
        ("Connection", "close"),
    ]
    if token is not None:
        if not all("\x21" <= c <= "\x7e" for c in token):
            raise _CallError("the bearer token is not a valid header value")
        headers.append(("Authorization", f"Bearer {token}"))
    return h11.Request(method="GET", target=target, headers=headers)


async def _open_exchange(access: ApiAccess, head: h11.Request) -> _Exchange:
    """Connect, shake hands, send ``head`` and read the answer's head (the caller bounds it)."""
    server = access.server
    stream: trio.abc.Stream = await trio.open_tcp_stream(server.host, server.port)
    try:
        if server.scheme == "https":
            try:
                tls = trio.SSLStream(
                    stream,
                    access.context or ssl.create_default_context(),
                    server_hostname=access.server_hostname or server.host,
                    https_compatible=True,
                )
            except ValueError as error:  # (a server name ssl refuses: "", ".x")
                raise _CallError(f"TLS: {error}") from None
            stream = tls
            await tls.do_handshake()
        connection = h11.Connection(h11.CLIENT)
        await stream.send_all(
            (connection.send(head) or b"") + (connection.send(h11.EndOfMessage()) or b"")
        )
        exchange = _Exchange(stream, connection)
        await exchange.read_head()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return exchange


class _Exchange:
    """One request's answer being read; closes its stream on exit."""

    def __init__(self, stream: trio.abc.Stream, connection: h11.Connection) -> None:
        self._stream = stream
        self._connection = connection
        self.status = 0

    async def __aenter__(self) -> _Exchange:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await trio.aclose_forcefully(self._stream)

    async def _next_event(self) -> h11.Event | type[h11.PAUSED]:
        connection = self._connection
        while True:
            event = connection.next_event()
            if event is not h11.NEED_DATA:
                # (mypy does not narrow a union of sentinel classes with ``is not``)
                return cast("h11.Event | type[h11.PAUSED]", event)
            connection.receive_data(bytes(await self._stream.receive_some(_READ_SIZE)))

    async def read_head(self) -> None:
        """Read up to the final answer's head (interim 1xx answers are skipped)."""
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Response):
                self.status = event.status_code
                return
            if isinstance(event, h11.ConnectionClosed):
                raise _CallError("the connection closed before an answer")
            if not isinstance(event, h11.InformationalResponse):
                raise _CallError(f"unexpected HTTP event {type(event).__name__}")

    async def expect_2xx(self) -> None:
        """Raise ``_CallError`` (with the status and the server's message) unless 2xx."""
        status = self.status
        if 200 <= status < 300:
            return
        if 300 <= status < 400:
            raise _CallError(f"HTTP {status}: redirects are not followed", status)
        said = ""  # (also when the body stalls past HEAD_WAIT: the status alone)
        with contextlib.suppress(
            _CallError,
            msgspec.DecodeError,
            RecursionError,
            h11.RemoteProtocolError,
            OSError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
        ):
            with trio.move_on_after(HEAD_WAIT):
                body = await self.read_body(_MAX_ERROR_BODY, HEAD_WAIT)
                said = _status_decoder.decode(body).message
        raise _CallError(f"HTTP {status}: {said}" if said else f"HTTP {status}", status)

    async def read_body(self, limit: int, idle: float) -> bytes:
        """The whole body (at most ``limit`` bytes), with at most ``idle`` s between reads."""
        body = bytearray()
        with trio.CancelScope() as scope:
            while True:
                scope.deadline = trio.current_time() + idle
                event = await self._next_event()
                if isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > limit:
                        raise _CallError(f"the answer is longer than {limit} bytes")
                elif isinstance(event, h11.EndOfMessage):
                    return bytes(body)
                else:
                    raise _CallError(f"unexpected HTTP event {type(event).__name__}")
        raise _CallError(f"the answer paused for more than {idle:g} s")

    async def stream_lines(self, on_line: Callable[[bytes], None]) -> None:
        """Hand every non-empty line of the body to ``on_line`` until the body ends."""
        buffer = bytearray()
        scanned = 0
        with trio.CancelScope() as scope:
            while True:
                scope.deadline = trio.current_time() + WATCH_IDLE
                event = await self._next_event()
                if isinstance(event, h11.EndOfMessage):
                    if buffer.strip():
                        on_line(bytes(buffer))
                    return
                if not isinstance(event, h11.Data):
                    raise _CallError(f"unexpected HTTP event {type(event).__name__}")
                buffer += event.data
                scanned = _split_lines(buffer, scanned, on_line)
        raise _CallError(f"no data for {WATCH_IDLE:g} s")


def _split_lines(buffer: bytearray, scanned: int, on_line: Callable[[bytes], None]) -> int:
    """Hand the complete lines at the front of ``buffer`` to ``on_line`` and remove them;
    return how far the rest was searched for a newline. Raises ``_CallError`` for a line
    longer than ``MAX_EVENT_LINE``."""
    start = 0
    while True:
        end = buffer.find(b"\n", max(start, scanned))
        if end < 0:
            break
        if end - start > MAX_EVENT_LINE:
            raise _CallError(f"an event line is longer than {MAX_EVENT_LINE} bytes")
        line = bytes(buffer[start:end]).strip()
        start = end + 1
        if line:
            on_line(line)
    del buffer[:start]
    if len(buffer) > MAX_EVENT_LINE:
        raise _CallError(f"an event line is longer than {MAX_EVENT_LINE} bytes")
    return len(buffer)


def _decode_reason(error: Exception) -> str:
    """Why an answer did not decode (msgspec's message; a nesting too deep for it)."""
    if isinstance(error, RecursionError):
        return "JSON nested too deeply"
    return str(error)


def _transport_reason(error: BaseException) -> str:
    """A one-line reason for a connect, TLS or stream failure (trio wraps TLS errors)."""
    cause = error.__cause__
    if isinstance(error, trio.BrokenResourceError) and isinstance(cause, ssl.SSLError):
        return f"TLS: {cause}"
    if isinstance(error, ssl.SSLError):
        return f"TLS: {error}"
    return getattr(error, "strerror", None) or str(error) or type(error).__name__
