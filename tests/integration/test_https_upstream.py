"""HTTPS backends end to end (issue #17 item 3; SPEC §3.10 ``upstream_tls``, §5.7, §7.4, §7.7).

An in-process ``Gateway`` (and once the real CLI) in front of a real TLS origin
(``tests/support/tls_origin.py``: trio + ``ssl`` + h11 with ``trustme`` certificates), driven by
the real ``curl``. The origin records per connection the SNI it received, the client
certificate's common name and the ALPN protocol, which is how these tests see what the gateway
sent. Real sockets mean trio's real clock; every wait is bounded and waits for a condition.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

import pytest
import trio
import trustme

from a3s_gateway.services.backend import Backend
from tests.support.cli import start_gateway
from tests.support.gateway import (
    CLIENT_WAIT,
    GatewayHandle,
    config_text,
    curl,
    free_port,
    router_block,
    running_gateway,
    server_entry,
    service_block,
)
from tests.support.origin import Origin
from tests.support.tls_origin import TlsOrigin, write_ca, write_leaf

pytestmark = pytest.mark.integration

#: Bound on the CLI subprocess's start (interpreter, imports, bind).
STARTUP_WAIT: Final = 40.0
#: A probe every 300 ms that flips health on one result (TLS handshakes included in the timeout).
TLS_CHECK: Final = """
    health_check {
      path                = "/health"
      interval            = "300ms"
      timeout             = "250ms"
      unhealthy_threshold = 1
      healthy_threshold   = 1
    }
"""


class Pki:
    """The test's CAs and certificate files: ``ca`` signs the origin, ``other`` is a CA the
    gateway does not trust, ``clients`` signs the gateway's client certificate."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca = trustme.CA()
        self.other = trustme.CA()
        self.clients = trustme.CA()
        self.ca_file = write_ca(self.ca, directory / "ca.pem")
        self.clients_file = write_ca(self.clients, directory / "clients-ca.pem")
        names = ("127.0.0.1", "localhost", "a.test", "b.test")
        self.server = write_leaf(self.ca.issue_cert(*names), directory, "server")
        self.untrusted = write_leaf(self.other.issue_cert(*names), directory, "untrusted")
        client = self.clients.issue_cert("gateway.test", common_name="gateway-client")
        self.client = write_leaf(client, directory, "client")

    def tls_block(self, **fields: str | bool) -> str:
        lines = []
        for name, value in fields.items():
            text = ("true" if value else "false") if isinstance(value, bool) else f'"{value}"'
            lines.append(f"      {name} = {text}\n")
        return "    upstream_tls {\n" + "".join(lines) + "    }\n"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


async def started(nursery: trio.Nursery, origin: TlsOrigin) -> TlsOrigin:
    await nursery.start(origin.serve)
    return origin


def https_config(origin: TlsOrigin, balancer: str, *, more: str = "", port: int = 0) -> str:
    server = f'{{ url = "{origin.url()}" }}'
    return config_text([server], balancer=balancer, more=more, port=port)


def backend_of(gateway: GatewayHandle, service: str = "main") -> Backend:
    runtime = gateway.gateway.runtime
    assert runtime is not None
    return runtime.services[service].backends[0]


def healthy(backend: Backend) -> bool:
    """The backend's active-health flag now (a call, so each read is a fresh one)."""
    return backend.active_healthy


# -- verification ---------------------------------------------------------------------------------


async def test_a_request_reaches_an_https_backend_verified_against_ca_file(
    nursery: trio.Nursery, pki: Pki
) -> None:
    origin = await started(nursery, TlsOrigin(pki.server))
    text = https_config(origin, pki.tls_block(ca_file=str(pki.ca_file)))
    async with running_gateway(text) as gateway:
        first = await curl(gateway.url("/hello?x=1"))
        second = await curl(gateway.url("/again"))
    assert first.response.status == 200, first.stderr
    assert first.response.json()["target"] == "/hello?x=1"
    assert second.response.status == 200, second.stderr
    [conn] = origin.connections  # the second request reused the pooled TLS connection
    assert conn.targets == ["/hello?x=1", "/again"]
    assert conn.alpn == "http/1.1"
    assert conn.sni is None  # the URL host is an IP address: no SNI, the IP is verified
    assert conn.client is None


async def test_server_name_is_sent_as_sni_and_verified(nursery: trio.Nursery, pki: Pki) -> None:
    origin = await started(nursery, TlsOrigin(pki.server))
    text = https_config(origin, pki.tls_block(ca_file=str(pki.ca_file), server_name="a.test"))
    async with running_gateway(text) as gateway:
        result = await curl(gateway.url("/named"))
    assert result.response.status == 200, result.stderr
    assert result.response.json()["sni"] == "a.test"


async def test_an_untrusted_certificate_is_a_502_with_a_clear_log_line(
    nursery: trio.Nursery, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    origin = await started(nursery, TlsOrigin(pki.untrusted))
    balancer = pki.tls_block(ca_file=str(pki.ca_file)) + (
        "    passive_health {\n      error_threshold = 1\n    }\n"
    )
    caplog.set_level(logging.INFO, logger="a3s_gateway.exchange")
    async with running_gateway(https_config(origin, balancer)) as gateway:
        result = await curl(gateway.url("/x"))
        ejected = backend_of(gateway).passive_ejected
        scrape = gateway.gateway.metrics_text()
    assert result.response.status == 502
    assert result.response.json()["error"] == "bad gateway"
    assert scrape is not None
    counted = [
        line
        for line in scrape.decode().splitlines()
        if line.startswith("a3s_upstream_connect_errors_total{") and 'reason="tls"' in line
    ]
    assert len(counted) == 1
    assert counted[0].endswith(" 1.0")  # counted as a TLS failure, not a refused connect
    line = (
        f"connect to {origin.url()} failed: TLS handshake failed: certificate verify failed: "
        "unable to get local issuer certificate"
    )
    assert line in caplog.text
    assert ejected  # a failed handshake counts against passive health like a refused connect
    assert origin.connections == []  # no request ever reached it
    assert origin.handshake_failures >= 1


async def test_a_wrong_server_name_is_a_502(
    nursery: trio.Nursery, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    origin = await started(nursery, TlsOrigin(pki.server))
    text = https_config(origin, pki.tls_block(ca_file=str(pki.ca_file), server_name="c.test"))
    caplog.set_level(logging.INFO, logger="a3s_gateway.exchange")
    async with running_gateway(text) as gateway:
        result = await curl(gateway.url("/x"))
    assert result.response.status == 502
    assert "certificate verify failed: Hostname mismatch" in caplog.text
    assert "'c.test'" in caplog.text
    assert origin.connections == []


async def test_insecure_skip_verify_works_only_when_set(
    nursery: trio.Nursery, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    origin = await started(nursery, TlsOrigin(pki.untrusted))
    servers = [f'{{ url = "{origin.url()}" }}']
    more = (
        service_block("system", servers)
        + service_block("verified", servers, balancer=pki.tls_block(insecure_skip_verify=False))
        + service_block("insecure", servers, balancer=pki.tls_block(insecure_skip_verify=True))
        + router_block("system", "PathPrefix(`/system`)", "system")
        + router_block("verified", "PathPrefix(`/verified`)", "verified")
        + router_block("insecure", "PathPrefix(`/insecure`)", "insecure")
    )
    text = config_text([server_entry(1)], rule="Path(`/unused`)", more=more)
    caplog.set_level(logging.WARNING, logger="a3s_gateway.upstream")
    async with running_gateway(text) as gateway:
        system = await curl(gateway.url("/system"))
        verified = await curl(gateway.url("/verified"))
        insecure = await curl(gateway.url("/insecure"))
    assert system.response.status == 502  # the system store does not know trustme's CA
    assert verified.response.status == 502
    assert insecure.response.status == 200, insecure.stderr
    assert [conn.targets for conn in origin.connections] == [["/insecure"]]
    warnings = [r.getMessage() for r in caplog.records if r.name == "a3s_gateway.upstream"]
    assert len(warnings) == 1, warnings
    assert 'service "insecure"' in warnings[0]
    assert "insecure_skip_verify" in warnings[0]


async def test_a_stalled_handshake_is_a_connect_timeout(pki: Pki) -> None:
    """A backend that accepts TCP and never answers the ClientHello: 504 within
    ``connect_timeout``, like a connect that does not complete."""
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    held: list[trio.SocketStream] = []

    async def hold() -> None:
        while True:
            held.append(await listener.accept())

    balancer = pki.tls_block(ca_file=str(pki.ca_file)) + '    connect_timeout = "300ms"\n'
    text = config_text([f'{{ url = "https://127.0.0.1:{port}" }}'], balancer=balancer)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold)
        async with running_gateway(text) as gateway:
            started_at = trio.current_time()
            result = await curl(gateway.url("/slow"))
            took = trio.current_time() - started_at
        nursery.cancel_scope.cancel()
    for stream in held:
        await trio.aclose_forcefully(stream)
    await listener.aclose()
    assert result.response.status == 504
    assert held  # the TCP connection was made: it is the handshake that timed out
    assert took < CLIENT_WAIT


# -- client certificates --------------------------------------------------------------------------


async def test_the_client_certificate_is_presented(nursery: trio.Nursery, pki: Pki) -> None:
    origin = await started(
        nursery, TlsOrigin(pki.server, client_ca=pki.clients_file, require_client=True)
    )
    tls = pki.tls_block(
        ca_file=str(pki.ca_file), cert_file=str(pki.client.cert), key_file=str(pki.client.key)
    )
    async with running_gateway(https_config(origin, tls)) as gateway:
        result = await curl(gateway.url("/whoami"))
    assert result.response.status == 200, result.stderr
    assert result.response.json()["client"] == "gateway-client"
    [conn] = origin.connections
    assert conn.client == "gateway-client"


async def test_without_a_client_certificate_the_origin_refuses(
    nursery: trio.Nursery, pki: Pki
) -> None:
    origin = await started(
        nursery, TlsOrigin(pki.server, client_ca=pki.clients_file, require_client=True)
    )
    async with running_gateway(https_config(origin, pki.tls_block(ca_file=str(pki.ca_file)))) as gw:
        result = await curl(gw.url("/whoami"))
    assert result.response.status == 502
    assert origin.connections == []
    assert origin.handshake_failures >= 1


# -- the pool is keyed by TLS identity ------------------------------------------------------------


async def test_backends_with_different_tls_identities_never_share_a_connection(
    nursery: trio.Nursery, pki: Pki
) -> None:
    """Three services on the same host:port: two server names, and one of the names again with
    a client certificate. Each gets its own pooled connection, reused for its own requests."""
    origin = await started(nursery, TlsOrigin(pki.server, client_ca=pki.clients_file))
    servers = [f'{{ url = "{origin.url()}" }}']
    ca = str(pki.ca_file)
    cert = {"cert_file": str(pki.client.cert), "key_file": str(pki.client.key)}
    more = (
        service_block("a", servers, balancer=pki.tls_block(ca_file=ca, server_name="a.test"))
        + service_block("b", servers, balancer=pki.tls_block(ca_file=ca, server_name="b.test"))
        + service_block(
            "c", servers, balancer=pki.tls_block(ca_file=ca, server_name="a.test", **cert)
        )
        + router_block("a", "PathPrefix(`/a`)", "a")
        + router_block("b", "PathPrefix(`/b`)", "b")
        + router_block("c", "PathPrefix(`/c`)", "c")
    )
    text = config_text([server_entry(1)], rule="Path(`/unused`)", more=more)
    async with running_gateway(text) as gateway:
        for path in ("/a", "/b", "/c", "/a", "/b", "/c", "/a"):
            result = await curl(gateway.url(path))
            assert result.response.status == 200, result.stderr
            seen = result.response.json()
            expected_sni = "b.test" if path == "/b" else "a.test"
            assert (seen["sni"], seen["target"]) == (expected_sni, path)
    by_targets = sorted(
        (conn.targets[0], conn.sni, conn.client, len(conn.targets)) for conn in origin.connections
    )
    assert by_targets == [
        ("/a", "a.test", None, 3),
        ("/b", "b.test", None, 2),
        ("/c", "a.test", "gateway-client", 2),
    ]
    for conn in origin.connections:
        assert len(set(conn.targets)) == 1  # a connection only ever served one service


# -- probes and mirror copies over TLS ------------------------------------------------------------


def health_probes(origin: TlsOrigin) -> int:
    return sum(target == "/health" for conn in origin.connections for target in conn.targets)


async def test_a_probe_over_tls_marks_the_backend_healthy_and_unhealthy(
    nursery: trio.Nursery, pki: Pki
) -> None:
    origin = await started(nursery, TlsOrigin(pki.server))
    origin.status = 503
    balancer = pki.tls_block(ca_file=str(pki.ca_file), server_name="a.test") + TLS_CHECK
    async with running_gateway(https_config(origin, balancer)) as gateway:
        backend = backend_of(gateway)
        with trio.fail_after(CLIENT_WAIT):
            # Two probes answered: the first one's verdict has been recorded.
            await origin.wait_for(lambda: health_probes(origin) >= 2)
            assert not healthy(backend)
            down = await curl(gateway.url("/work"))
            origin.status = 200
            seen = health_probes(origin)
            await origin.wait_for(lambda: health_probes(origin) >= seen + 2)
            assert healthy(backend)
        up = await curl(gateway.url("/work"))
    assert down.response.status == 503  # no available backend
    assert up.response.status == 200, up.stderr
    assert {conn.sni for conn in origin.connections} == {"a.test"}  # probes sent the name too


async def test_a_probe_that_cannot_verify_the_backend_marks_it_unhealthy(
    nursery: trio.Nursery, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    origin = await started(nursery, TlsOrigin(pki.untrusted))
    balancer = pki.tls_block(ca_file=str(pki.ca_file)) + TLS_CHECK
    caplog.set_level(logging.INFO)
    async with running_gateway(https_config(origin, balancer)) as gateway:
        backend = backend_of(gateway)
        with trio.fail_after(CLIENT_WAIT):
            await origin.wait_for(lambda: origin.handshake_failures >= 2)
        assert not healthy(backend)
    assert origin.connections == []
    assert "is now unhealthy (TLS handshake failed: certificate verify failed" in caplog.text


async def test_mirror_copies_reach_an_https_service(nursery: trio.Nursery, pki: Pki) -> None:
    primary = Origin("primary")
    await nursery.start(primary.serve)
    shadow = await started(nursery, TlsOrigin(pki.server, name="shadow"))
    shadow_servers = [f'{{ url = "{shadow.url()}" }}']
    more = service_block("shadow", shadow_servers, balancer=pki.tls_block(ca_file=str(pki.ca_file)))
    text = config_text(
        [server_entry(primary)],
        service_extra='  mirror {\n    service = "shadow"\n  }\n',
        more=more,
    )
    async with running_gateway(text) as gateway:
        result = await curl(gateway.url("/copied"))
        with trio.fail_after(CLIENT_WAIT):
            await shadow.wait_for(lambda: shadow.requests >= 1)
    assert result.response.status == 200, result.stderr
    assert result.response.json()["origin"] == "primary"
    assert [conn.targets for conn in shadow.connections] == [["/copied"]]


# -- through the real CLI -------------------------------------------------------------------------


async def test_an_https_backend_through_the_cli(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    origin = await started(
        nursery, TlsOrigin(pki.server, client_ca=pki.clients_file, require_client=True)
    )
    port = free_port()
    tls = pki.tls_block(
        ca_file=str(pki.ca_file),
        server_name="b.test",
        cert_file=str(pki.client.cert),
        key_file=str(pki.client.key),
    )
    config = tmp_path / "gateway.hcl"
    config.write_text(https_config(origin, tls, port=port), encoding="utf-8")
    gateway = await start_gateway(str(config))
    try:
        with trio.fail_after(STARTUP_WAIT):
            await gateway.wait_for_line("listening entrypoint=web")
        result = await curl(f"http://127.0.0.1:{port}/via-cli")
    finally:
        if gateway.process.returncode is None:
            gateway.process.kill()
        with trio.CancelScope(shield=True):
            await gateway.process.wait()
    assert result.response.status == 200, result.stderr
    seen = result.response.json()
    assert (seen["sni"], seen["client"], seen["target"]) == ("b.test", "gateway-client", "/via-cli")
