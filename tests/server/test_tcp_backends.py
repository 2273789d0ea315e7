"""A TCP router's backend choice, in-process: failover to another service when no backend of
the router's own connects, a failed TLS handshake to a ``tls://`` server as a connect failure
that counts against passive health, and a client closed at once when nothing connects."""

from __future__ import annotations

import json
import socket
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.app import Gateway
from tests.support.gateway import load

if TYPE_CHECKING:
    from pathlib import Path

BOUND: Final = 15.0


async def echo(stream: trio.SocketStream) -> None:
    async with stream:
        try:
            while data := await stream.receive_some(65536):
                await stream.send_all(b"echo:" + data)
        except trio.BrokenResourceError:
            return


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def config_text(primary: str, *, failover: str | None, log: Path) -> str:
    text = f"""
entrypoints "db" {{
  address  = "127.0.0.1:0"
  protocol = "tcp"
}}
services "primary" {{
  load_balancer {{
    servers         = [{{ url = "{primary}" }}]
    connect_timeout = "2s"
    passive_health {{
      error_threshold = 1
    }}
  }}
  {"failover { service = " + json.dumps("spare") + " }" if failover else ""}
}}
tcp_routers "db" {{
  rule    = "HostSNI(`*`)"
  service = "primary"
}}
observability {{
  access_log_path = "{log}"
}}
"""
    if failover:
        text += f"""
services "spare" {{
  load_balancer {{
    servers = [{{ url = "{failover}" }}]
  }}
}}
"""
    return text


async def one_connection(text: str) -> tuple[bytes, Gateway]:
    """Serve ``text``, open one connection, send ``hi`` and read until EOF; what came back."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    got = b""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, echo, listeners)
        backend = listeners[0].socket.getsockname()[1]
        gateway = Gateway(load(text.replace("BACKEND", str(backend))))
        await nursery.start(gateway.serve)
        port = gateway.addresses()["db"][0][1]
        client = await trio.open_tcp_stream("127.0.0.1", port)
        try:
            await client.send_all(b"hi")
            await client.send_eof()
            while data := await client.receive_some(100):
                got += data
        except trio.BrokenResourceError:
            pass
        await client.aclose()
        await gateway.shutdown(1)
        nursery.cancel_scope.cancel()
    return got, gateway


def lines(log: Path) -> list[dict[str, object]]:
    return [json.loads(text) for text in log.read_text().splitlines()]


async def test_failover_serves_when_no_backend_of_the_router_s_service_connects(
    tmp_path: Path,
) -> None:
    log = tmp_path / "access.log"
    text = config_text(
        f"tcp://127.0.0.1:{closed_port()}", failover="tcp://127.0.0.1:BACKEND", log=log
    )
    with trio.fail_after(BOUND):
        got, gateway = await one_connection(text)
    assert got == b"echo:hi"
    [line] = lines(log)
    assert (line["service"], line["attempts"], line["error"]) == ("spare", 2, "")
    metrics = gateway.metrics_text()
    assert metrics is not None
    assert b'a3s_failover_requests_total{reason="connect_failed",service="primary"} 1' in metrics


async def test_a_failed_tls_handshake_is_a_connect_failure_and_ejects(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    # A tls:// server that speaks plaintext: the handshake fails.
    text = config_text("tls://127.0.0.1:BACKEND", failover=None, log=log)
    with trio.fail_after(BOUND):
        got, gateway = await one_connection(text)
    assert got == b""
    [line] = lines(log)
    assert (line["error"], line["attempts"]) == ("connect_tls", 1)
    metrics = gateway.metrics_text()
    assert metrics is not None
    assert b'reason="tls",service="primary"} 1' in metrics
    assert b"a3s_backend_ejected{" in metrics


async def test_nothing_to_connect_closes_the_client_as_no_backend(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    text = config_text("tcp://127.0.0.1:BACKEND", failover=None, log=log).replace(
        '"tcp://127.0.0.1:BACKEND" }', '"tcp://127.0.0.1:BACKEND", weight = 0 }'
    )  # weight 0: the backend is drained, none is available
    with trio.fail_after(BOUND):
        got, _ = await one_connection(text)
    assert got == b""
    [line] = lines(log)
    assert (line["error"], line["attempts"]) == ("no_backend", 0)
