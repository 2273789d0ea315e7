"""TCP routers on a TLS http entrypoint (Traefik-style SNI split), in-process.

A terminating TCP router there completes the handshake with the entrypoint's certificates but
offers no ALPN (its backend speaks the protocol, not the gateway): a client offering ``h2``
agrees on nothing, and its bytes reach the TCP backend. HTTPS clients of the same port still
agree on ``h2``.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Final

import trio
import trustme

from a3s_gateway.app import Gateway
from tests.support.gateway import load

if TYPE_CHECKING:
    from pathlib import Path

BOUND: Final = 15.0


async def echo(stream: trio.SocketStream) -> None:
    async with stream:
        while data := await stream.receive_some(65536):
            await stream.send_all(b"tcp:" + data)


def config_text(tmp_path: Path, ca: trustme.CA, backend: int) -> str:
    leaf = ca.issue_cert("db.example", "www.example")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return f"""
entrypoints "websecure" {{
  address = "127.0.0.1:0"
  tls {{
    cert_file = "{cert}"
    key_file  = "{key}"
  }}
}}
services "db" {{
  load_balancer {{
    servers = [{{ url = "tcp://127.0.0.1:{backend}" }}]
  }}
}}
services "web" {{
  load_balancer {{
    servers = [{{ url = "http://127.0.0.1:{backend}" }}]
  }}
}}
tcp_routers "db" {{
  rule        = "HostSNI(`db.example`)"
  service     = "db"
  entrypoints = ["websecure"]
}}
routers "web" {{
  rule    = "Host(`www.example`)"
  service = "web"
}}
"""


async def handshake(port: int, ca: trustme.CA, name: str) -> trio.SSLStream[trio.SocketStream]:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.set_alpn_protocols(["h2", "http/1.1"])
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    tls = trio.SSLStream(stream, context, server_hostname=name)
    await tls.do_handshake()
    return tls


async def test_a_terminating_tcp_router_offers_no_alpn_and_https_still_does(
    tmp_path: Path,
) -> None:
    ca = trustme.CA()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    backend = listeners[0].socket.getsockname()[1]
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, echo, listeners)
            gateway = Gateway(load(config_text(tmp_path, ca, backend)))
            await nursery.start(gateway.serve)
            port = gateway.addresses()["websecure"][0][1]
            tcp = await handshake(port, ca, "db.example")
            assert tcp.selected_alpn_protocol() is None
            await tcp.send_all(b"ping")
            assert await tcp.receive_some(100) == b"tcp:ping"
            await tcp.aclose()
            https = await handshake(port, ca, "www.example")
            assert https.selected_alpn_protocol() == "h2"
            await https.aclose()
            await gateway.shutdown(1)
            nursery.cancel_scope.cancel()
