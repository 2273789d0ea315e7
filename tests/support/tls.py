"""TLS test material made by ``trustme``, written to files, and real TLS clients.

- ``Authority`` is one test CA: ``ca_file`` (its PEM on disk), ``server_pair`` (a certificate
  for some DNS names and its key, as two files, to point a gateway or an origin at),
  ``client_pem`` (a client certificate and key in one file, for ``curl --cert`` or
  ``SSLContext.load_cert_chain``) and ``client_context`` (a Python client that trusts the CA,
  optionally presenting a client certificate and capped at a TLS version).
- ``tls_request`` opens a real TLS connection (SNI as given), sends one HTTP/1.1 request and
  parses the answer with h11; ``TlsConnection`` keeps one open for keep-alive tests, and
  ``served_names`` says which certificate the handshake got.

Every wait is bounded by ``CLIENT_WAIT`` (the caller's scope may be shorter).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import h11
import trio
import trustme

from tests.support.gateway import CLIENT_WAIT, LOCAL

__all__ = ["Authority", "TlsConnection", "TlsResponse", "served_names", "tls_request"]

_VERSIONS: Final = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


@dataclass
class Authority:
    """A test CA whose files live under ``directory``."""

    directory: Path
    name: str = "ca"
    ca: trustme.CA = field(default_factory=trustme.CA)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca_file = self.directory / f"{self.name}.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def server_pair(self, stem: str, *names: str) -> tuple[Path, Path]:
        """A server certificate for ``names`` (chain + key) written to ``<stem>.pem`` and
        ``<stem>.key``; returns (cert_file, key_file)."""
        issued = self.ca.issue_cert(*names)
        cert_file = self.directory / f"{stem}.pem"
        key_file = self.directory / f"{stem}.key"
        write_pair(issued, cert_file, key_file)
        return cert_file, key_file

    def client_pem(self, stem: str, name: str) -> Path:
        """A client certificate for ``name`` with its key, in one PEM file."""
        issued = self.ca.issue_cert(name)
        path = self.directory / f"{stem}-client.pem"
        with path.open("wb") as out:
            for blob in issued.cert_chain_pems:
                out.write(blob.bytes())
            out.write(issued.private_key_pem.bytes())
        return path

    def client_context(
        self, *, client_pem: Path | None = None, max_version: str | None = None
    ) -> ssl.SSLContext:
        """A client context trusting this CA (hostname checked)."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        if client_pem is not None:
            context.load_cert_chain(str(client_pem))
        if max_version is not None:
            context.maximum_version = _VERSIONS[max_version]
        return context


def write_pair(issued: trustme.LeafCert, cert_file: Path, key_file: Path) -> None:
    """Write ``issued``'s chain and key (replacing the files in place, as a renewal does)."""
    with cert_file.open("wb") as out:
        for blob in issued.cert_chain_pems:
            out.write(blob.bytes())
    issued.private_key_pem.write_to_path(str(key_file))


def served_names(stream: trio.SSLStream[trio.SocketStream]) -> list[str]:
    """The DNS names of the certificate the server presented on ``stream``."""
    peer = stream.getpeercert()
    assert peer is not None
    return [value for kind, value in peer.get("subjectAltName", ()) if kind == "DNS"]


@dataclass(frozen=True)
class TlsResponse:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    #: The names of the certificate the server presented.
    names: tuple[str, ...]
    version: str


class TlsConnection:
    """One TLS connection to ``127.0.0.1:port`` with ``server_name`` as SNI."""

    def __init__(self, stream: trio.SSLStream[trio.SocketStream]) -> None:
        self.stream = stream
        self._h11 = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(
        cls, port: int, server_name: str | None, context: ssl.SSLContext
    ) -> TlsConnection:
        tcp = await trio.open_tcp_stream(LOCAL, port)
        if server_name is None:
            context.check_hostname = False
        stream = trio.SSLStream(tcp, context, server_hostname=server_name)
        try:
            with trio.fail_after(CLIENT_WAIT):
                await stream.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return cls(stream)

    async def get(self, path: str = "/", host: str = "example.test") -> TlsResponse:
        """One GET on this connection (kept alive)."""
        conn = self._h11
        if conn.our_state is h11.DONE:
            conn.start_next_cycle()
        request = h11.Request(method="GET", target=path, headers=[("Host", host)])
        await self.stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
        status, headers, body = 0, {}, bytearray()
        with trio.fail_after(CLIENT_WAIT):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(bytes(await self.stream.receive_some(65536)))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    headers = {bytes(k): bytes(v) for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise trio.BrokenResourceError("closed before the response ended")
        version = self.stream.version() or ""
        return TlsResponse(status, headers, bytes(body), tuple(served_names(self.stream)), version)

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


async def tls_request(
    port: int,
    server_name: str | None,
    context: ssl.SSLContext,
    path: str = "/",
    host: str | None = None,
) -> TlsResponse:
    """Connect, GET ``path`` once, close."""
    connection = await TlsConnection.open(port, server_name, context)
    try:
        return await connection.get(path, host or server_name or "example.test")
    finally:
        await connection.aclose()
