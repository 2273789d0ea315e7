"""A real HTTPS/1.1 origin for upstream TLS tests (trio + stdlib ``ssl`` + h11), and the
certificate files it and the gateway read (made by ``trustme``).

It shares no code with the gateway. Each accepted connection gets its own server
``SSLContext`` (the certificate is loaded from files written once), so the SNI callback can
record the name the client sent on *that* connection; after the handshake the connection's
record also holds the client certificate's common name (when the client presented one and
``client_ca`` trusts it) and the ALPN protocol chosen. Every response is 200 (or ``status``)
with a JSON body naming the origin, the connection number, the SNI, the client's common name
and the request target, so a test can tell through the gateway which connection served it.

Handshake failures (an untrusted client, a client that refused our certificate) are counted in
``handshake_failures``; the server keeps serving. ``wait_for`` wakes on every change instead
of sleeping; the caller bounds every wait.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h11
import trio
import trustme

READ_SIZE = 65536


@dataclass(frozen=True)
class LeafFiles:
    """A certificate chain and its key, written as PEM files."""

    cert: Path
    key: Path


def write_ca(ca: trustme.CA, path: Path) -> Path:
    """``ca``'s certificate as a PEM file (what ``upstream_tls.ca_file`` names)."""
    ca.cert_pem.write_to_path(str(path))
    return path


def write_leaf(leaf: trustme.LeafCert, directory: Path, stem: str) -> LeafFiles:
    """``<stem>.pem`` (the chain) and ``<stem>-key.pem`` in ``directory``."""
    files = LeafFiles(directory / f"{stem}.pem", directory / f"{stem}-key.pem")
    files.cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(files.key))
    return files


@dataclass
class TlsConnection:
    """What the origin saw of one accepted TLS connection."""

    number: int
    sni: str | None = None
    client: str | None = None
    alpn: str | None = None
    targets: list[str] = field(default_factory=list)


def _common_name(peer: object) -> str | None:
    """The commonName in the subject of ``getpeercert()``'s dict, or None."""
    if not isinstance(peer, dict):
        return None
    for rdn in peer.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class TlsOrigin:
    """An HTTPS origin on 127.0.0.1 serving ``server`` (a certificate written by ``write_leaf``).

    ``client_ca``: a CA file whose client certificates are accepted (then a certificate is
    asked for); ``require_client``: a client without one fails the handshake.
    """

    def __init__(
        self,
        server: LeafFiles,
        *,
        name: str = "tls-origin",
        client_ca: Path | None = None,
        require_client: bool = False,
    ) -> None:
        self.name = name
        self.port = 0
        self.status = 200
        self.connections: list[TlsConnection] = []
        self.handshake_failures = 0
        self._server = server
        self._client_ca = client_ca
        self._require_client = require_client
        self._changed = trio.Event()

    def url(self, path: str = "/") -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    @property
    def requests(self) -> int:
        return sum(len(conn.targets) for conn in self.connections)

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait (bounded by the caller) until ``predicate()`` holds."""
        while not predicate():
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _context(self, record: TlsConnection) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self._server.cert), str(self._server.key))
        context.set_alpn_protocols(["http/1.1"])
        if self._client_ca is not None:
            context.load_verify_locations(str(self._client_ca))
            context.verify_mode = ssl.CERT_REQUIRED if self._require_client else ssl.CERT_OPTIONAL

        def sni(_: object, server_name: str | None, __: ssl.SSLContext) -> None:
            record.sni = server_name

        context.sni_callback = sni
        return context

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started()
            async with listeners[0] as listener:
                while True:
                    tcp = await listener.accept()
                    record = TlsConnection(len(self.connections) + 1)
                    nursery.start_soon(self._connection, tcp, record)

    async def _connection(self, tcp: trio.SocketStream, record: TlsConnection) -> None:
        stream = trio.SSLStream(tcp, self._context(record), server_side=True)
        try:
            try:
                await stream.do_handshake()
            except trio.BrokenResourceError:
                self.handshake_failures += 1
                self._notify()
                return
            record.client = _common_name(stream.getpeercert())
            record.alpn = stream.selected_alpn_protocol()
            self.connections.append(record)
            self._notify()
            await self._serve_requests(stream, record)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async def _serve_requests(
        self, stream: trio.SSLStream[trio.SocketStream], record: TlsConnection
    ) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            event = await self._next(stream, conn)
            if not isinstance(event, h11.Request):
                return
            while not isinstance(await self._next(stream, conn), h11.EndOfMessage):
                pass
            target = event.target.decode()
            record.targets.append(target)
            self._notify()
            body = json.dumps(
                {
                    "origin": self.name,
                    "connection": record.number,
                    "sni": record.sni,
                    "client": record.client,
                    "target": target,
                }
            ).encode()
            headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
            wire = conn.send(h11.Response(status_code=self.status, headers=headers))
            wire += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
            await stream.send_all(wire)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    @staticmethod
    async def _next(stream: trio.SSLStream[trio.SocketStream], conn: h11.Connection) -> object:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await stream.receive_some(READ_SIZE)
            except trio.BrokenResourceError:
                data = b""
            conn.receive_data(bytes(data))
