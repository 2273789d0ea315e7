"""A minimal HTTPS client for the fake Kubernetes API server's own tests.

Test support, trio (h11 over ``trio.SSLStream``); it shares no code with the server or with the
Kubernetes provider, so tests of the fake see its wire behaviour as any client would.
``KubeClient.request`` sends one request on a fresh connection and returns the status and the
decoded JSON (or text); ``KubeClient.watch`` opens a watch stream and hands back a
``WatchStream`` whose ``next_event`` returns each event, ``None`` when the server ended the
response cleanly, and raises ``WatchCutError`` when the connection was cut mid-body.

Every wait is bounded by ``CLIENT_WAIT`` (the caller's scope may be shorter).

Must not: share code with the server it tests; leave a connection open (each request closes
its own, a watch closes at the end of its ``async with``).
"""

from __future__ import annotations

import contextlib
import json
import ssl
import urllib.parse
from collections.abc import AsyncIterator
from typing import Final, Literal

import h11
import trio

from tests.support.fake_kube import FakeKube, JsonObject

CLIENT_WAIT: Final = 10.0
READ_SIZE: Final = 65536

Credential = Literal["token", "cert", "none"]


class WatchCutError(Exception):
    """The server closed the watch connection without ending the chunked body."""


async def _read_head(
    conn: h11.Connection, stream: trio.SSLStream[trio.SocketStream]
) -> h11.Response:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(READ_SIZE)))
        elif isinstance(event, h11.Response):
            return event
        else:
            raise AssertionError(f"unexpected event before the response: {event!r}")


class WatchStream:
    """An open watch response; read it with ``next_event``."""

    def __init__(
        self, conn: h11.Connection, stream: trio.SSLStream[trio.SocketStream], status: int
    ) -> None:
        self._conn = conn
        self._stream = stream
        self.status = status
        self._buffer = b""
        self._ended = False

    async def next_event(self) -> JsonObject | None:
        """The next ``{"type", "object"}`` event; None after the end of the response."""
        with trio.fail_after(CLIENT_WAIT):
            while b"\n" not in self._buffer:
                if self._ended:
                    assert not self._buffer, f"a partial line at the end: {self._buffer!r}"
                    return None
                await self._read()
        line, _, self._buffer = self._buffer.partition(b"\n")
        decoded = json.loads(line)
        assert isinstance(decoded, dict)
        return decoded

    async def _read(self) -> None:
        event = self._conn.next_event()
        if event is h11.NEED_DATA:
            try:
                data = bytes(await self._stream.receive_some(READ_SIZE))
            except trio.BrokenResourceError as exc:
                raise WatchCutError("the connection broke") from exc
            try:
                self._conn.receive_data(data)
            except h11.RemoteProtocolError as exc:
                raise WatchCutError(str(exc)) from exc
        elif isinstance(event, h11.Data):
            self._buffer += event.data
        elif isinstance(event, h11.EndOfMessage):
            self._ended = True
        elif isinstance(event, h11.ConnectionClosed):
            raise WatchCutError("closed")

    async def events(self, count: int) -> list[JsonObject]:
        """The next ``count`` events (fails if the stream ends first)."""
        out: list[JsonObject] = []
        for _ in range(count):
            event = await self.next_event()
            assert event is not None, f"the watch ended after {out}"
            out.append(event)
        return out


class KubeClient:
    """Requests to ``kube`` with the token, the client certificate, or no credential."""

    def __init__(self, kube: FakeKube, credential: Credential = "token", token: str = "") -> None:
        self.kube = kube
        self._context = ssl.create_default_context(cafile=str(kube.ca_file))
        self._context.set_alpn_protocols(["http/1.1"])
        if credential == "cert":
            self._context.load_cert_chain(str(kube.client_cert_file), str(kube.client_key_file))
        self._token = token or (kube.token if credential == "token" else "")

    async def _open(self) -> trio.SSLStream[trio.SocketStream]:
        tcp = await trio.open_tcp_stream(self.kube.host, self.kube.port)
        stream = trio.SSLStream(tcp, self._context, server_hostname="localhost")
        try:
            with trio.fail_after(CLIENT_WAIT):
                await stream.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return stream

    def _head(
        self, method: str, path: str, query: dict[str, str], content_type: str, length: int
    ) -> h11.Request:
        target = path + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = [("host", f"localhost:{self.kube.port}"), ("accept", "application/json")]
        if self._token:
            headers.append(("authorization", f"Bearer {self._token}"))
        if method in ("POST", "PUT", "PATCH"):
            headers += [("content-type", content_type), ("content-length", str(length))]
        return h11.Request(method=method, target=target, headers=headers)

    async def request(
        self,
        method: str,
        path: str,
        body: JsonObject | None = None,
        *,
        content_type: str = "application/json",
        **query: str,
    ) -> tuple[int, JsonObject]:
        """Send one request; returns (status, JSON body — ``{"text": ...}`` if not JSON)."""
        data = json.dumps(body).encode() if body is not None else b""
        stream = await self._open()
        try:
            conn = h11.Connection(h11.CLIENT)
            head = self._head(method, path, query, content_type, len(data))
            await stream.send_all(conn.send(head) + conn.send(h11.Data(data=data)))
            await stream.send_all(conn.send(h11.EndOfMessage()))
            with trio.fail_after(CLIENT_WAIT):
                response = await _read_head(conn, stream)
                raw = b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(bytes(await stream.receive_some(READ_SIZE)))
                    elif isinstance(event, h11.Data):
                        raw += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
        finally:
            await trio.aclose_forcefully(stream)
        try:
            decoded = json.loads(raw)
        except ValueError:
            return response.status_code, {"text": raw.decode()}
        assert isinstance(decoded, dict)
        return response.status_code, decoded

    @contextlib.asynccontextmanager
    async def watch(self, path: str, **query: str) -> AsyncIterator[WatchStream]:
        """Open ``GET path?watch=1&...``; the stream is closed at exit."""
        stream = await self._open()
        try:
            conn = h11.Connection(h11.CLIENT)
            head = self._head("GET", path, {"watch": "1", **query}, "", 0)
            await stream.send_all(conn.send(head) + conn.send(h11.EndOfMessage()))
            with trio.fail_after(CLIENT_WAIT):
                response = await _read_head(conn, stream)
            yield WatchStream(conn, stream, response.status_code)
        finally:
            await trio.aclose_forcefully(stream)
