"""The management API server (SPEC §9.6, §3.13) on real sockets: curl and raw clients.

Covers binding (a taken address is a ``StartError`` naming it; ``enabled = false`` binds
nothing), keep-alive (curl reuses one connection), the bounds (oversized head → 431 whether it
arrives in pieces or at once, a slow head and an idle keep-alive connection are closed, bodies
over 1 MiB → 413, garbage → 400, the connection cap), the token read from the environment at
start and on ``update``, a failing endpoint (500, the server goes on), and TLS and mTLS with
trustme certificates checked by curl. Timeouts run on trio's virtual clock where the client is
in-process; curl runs on the real clock.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing
import trustme

from a3s_gateway.config.load import load_config_text
from a3s_gateway.config.schema import Config, Management, ManagementTls
from a3s_gateway.config.values import Address
from a3s_gateway.errors import ReloadError, StartError
from a3s_gateway.management.api import Clock, ListenerInfo, ReloadOutcome
from a3s_gateway.management.server import (
    ManagementServer,
    ServerLimits,
    open_management_listener,
)
from a3s_gateway.runtime.compile import RuntimeConfig, compile_runtime
from a3s_gateway.state import GatewayState, HealthSnapshot
from tests.support.gateway import LOCAL, RawClient, curl, curl_lines, need_tool

pytestmark = pytest.mark.integration

TOKEN = "tok-5e9c1a77d0b24f3e"
PREFIX = "/api/gateway"
CONFIG = """
entrypoints "web" {
  address = "127.0.0.1:0"
}
routers "main" {
  rule    = "PathPrefix(`/`)"
  service = "main"
}
services "main" {
  load_balancer {
    servers = [{ url = "http://127.0.0.1:1" }]
  }
}
"""


@pytest.fixture(autouse=True)
def need_curl() -> None:
    need_tool("curl", "to drive the management server")


@dataclass
class View:
    """A small ``GatewayView``; ``broken`` makes ``/routes`` fail."""

    current: Config
    compiled: RuntimeConfig
    broken: bool = False
    version: str = "1.2.3"
    workers: int = 1

    def health(self) -> HealthSnapshot:
        return HealthSnapshot(GatewayState.RUNNING, 1.0, 0, 0, 1, None)

    def state(self) -> GatewayState:
        return GatewayState.RUNNING

    def config(self) -> Config:
        return self.current

    def runtime(self) -> RuntimeConfig:
        if self.broken:
            raise RuntimeError("boom")
        return self.compiled

    def listeners(self) -> list[ListenerInfo]:
        return [ListenerInfo(name="web", protocol="http", address=":0", bound=("1:1",))]

    async def metrics_text(self) -> bytes | None:
        return b"a3s_up 1\n"

    def backend_requests(self) -> None:
        return None

    async def reload(self) -> ReloadOutcome | None:
        return None

    def scaling(self, clock: Clock) -> list[dict[str, object]]:
        return []

    def rollouts(self, clock: Clock) -> list[dict[str, object]]:
        return []

    def rollout_action(
        self, service: str, action: str, clock: Clock
    ) -> tuple[int, dict[str, object]]:
        return 404, {"error": "rollout not found"}

    def acme_check(self, *, force: bool) -> bool:
        return False

    def dynamic_providers(self) -> list[dict[str, object]]:
        return []


def make_view() -> View:
    config = load_config_text(CONFIG, filename="m.hcl")
    return View(config, compile_runtime(config, 1))


def local_settings(**fields: object) -> Management:
    settings = Management(address=Address("127.0.0.1:0"))
    for name, value in fields.items():
        settings = _replace(settings, name, value)
    return settings


def _replace(settings: Management, name: str, value: object) -> Management:
    return msgspec.structs.replace(settings, **{name: value})


@dataclass
class Running:
    server: ManagementServer
    port: int
    scheme: str = "http"

    def url(self, path: str) -> str:
        return f"{self.scheme}://{LOCAL}:{self.port}{PREFIX}{path}"


async def start(
    nursery: trio.Nursery,
    settings: Management | None = None,
    *,
    view: View | None = None,
    limits: ServerLimits | None = None,
    environ: dict[str, str] | None = None,
) -> Running:
    settings = settings if settings is not None else local_settings()
    listeners = await open_management_listener(settings)
    server = ManagementServer(settings, view or make_view(), limits=limits, environ=environ or {})
    await nursery.start(server.serve, listeners)
    port = int(listeners[0].socket.getsockname()[1])
    return Running(server, port, "https" if settings.tls is not None else "http")


# ------------------------------------------------------------------------------ binding


async def test_a_taken_address_is_a_start_error_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind((LOCAL, 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Management(address=Address(f"127.0.0.1:{port}"))
        with pytest.raises(StartError, match=f"management API: cannot listen on 127.0.0.1:{port}"):
            await open_management_listener(settings)


async def test_disabled_binds_nothing_and_serves_nothing() -> None:
    settings = local_settings(enabled=False)
    assert await open_management_listener(settings) == []
    server = ManagementServer(settings, make_view(), environ={})
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, [])
    # serve returned on its own: the nursery closed without being cancelled


async def test_cancelling_serve_closes_the_listeners(nursery: trio.Nursery) -> None:
    settings = local_settings()
    listeners = await open_management_listener(settings)
    port = listeners[0].socket.getsockname()[1]
    server = ManagementServer(settings, make_view(), environ={})
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as inner:
            await inner.start(server.serve, listeners)
            scope.cancel()
    with pytest.raises(OSError, match="all attempts to connect"):
        await trio.open_tcp_stream(LOCAL, port)


# ------------------------------------------------------------------------------ HTTP/1.1


async def test_curl_get_and_head(nursery: trio.Nursery) -> None:
    running = await start(nursery)
    result = await curl(running.url("/version"))
    assert result.response.status == 200
    assert result.response.json() == {"name": "a3s-gateway", "version": "1.2.3"}
    assert result.response.header(b"date") is not None
    head = await curl("-I", running.url("/version"), head=True)
    assert head.response.status == 200
    assert head.response.header(b"content-length") == str(len(result.response.body)).encode()
    metrics = await curl(running.url("/metrics"))
    assert metrics.response.header(b"content-type") == b"text/plain; version=0.0.4; charset=utf-8"
    assert metrics.response.body == b"a3s_up 1\n"


async def test_keep_alive_serves_several_requests_on_one_connection(
    nursery: trio.Nursery,
) -> None:
    running = await start(nursery)
    code, lines, stderr = await curl_lines(
        "-w",
        "%{http_code} %{num_connects}\\n",
        "-o",
        "/dev/null",
        running.url("/health"),
        "-o",
        "/dev/null",
        running.url("/routes/"),
        "-o",
        "/dev/null",
        running.url("/nope"),
    )
    assert code == 0, stderr
    assert lines == ["200 1", "200 0", "404 0"]


async def test_pipelined_requests_are_answered_in_order(nursery: trio.Nursery) -> None:
    running = await start(nursery)
    client = await RawClient.connect(running.port)
    try:
        request = f"GET {PREFIX}/live HTTP/1.1\r\nhost: m\r\n\r\n"
        await client.send((request + request.replace("/live", "/version")).encode())
        first = await client.response()
        second = await client.response()
        assert first is not None
        assert second is not None
        assert (first.status, first.body) == (200, b'{\n  "alive": true\n}\n')
        assert b'"version": "1.2.3"' in second.body
    finally:
        await client.aclose()


async def test_an_oversized_head_from_curl_is_431(nursery: trio.Nursery) -> None:
    running = await start(nursery)
    result = await curl("-H", "X-Big: " + "b" * 20000, running.url("/health"))
    assert result.response.status == 431
    assert result.response.header(b"connection") == b"close"


async def test_an_oversized_head_sent_at_once_is_431(nursery: trio.Nursery) -> None:
    running = await start(nursery)
    client = await RawClient.connect(running.port)
    try:
        filler = "".join(f"x-f{i}: {'v' * 60}\r\n" for i in range(300))  # about 20 KiB
        await client.send(f"GET {PREFIX}/live HTTP/1.1\r\nhost: m\r\n{filler}\r\n".encode())
        response = await client.response()
        assert response is not None
        assert response.status == 431
        assert await client.closed()
    finally:
        await client.aclose()


async def test_a_head_just_under_the_limit_is_served(nursery: trio.Nursery) -> None:
    running = await start(nursery)
    result = await curl("-H", "X-Big: " + "b" * 15000, running.url("/live"))
    assert result.response.status == 200


async def test_a_slow_head_is_closed_without_an_answer(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    running = await start(nursery)
    client = await RawClient.connect(running.port)
    try:
        started = trio.current_time()
        await client.send(f"GET {PREFIX}/live HTTP/1.1\r\nhost: m\r\n".encode())
        assert await client.closed(wait=30)
        assert trio.current_time() - started == pytest.approx(10, abs=0.1)
        assert client._buffer == b""  # closed without a byte of answer
    finally:
        await client.aclose()


async def test_an_idle_keep_alive_connection_is_closed(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    running = await start(nursery, limits=ServerLimits(idle_timeout=25.0))
    client = await RawClient.connect(running.port)
    try:
        await client.send(f"GET {PREFIX}/live HTTP/1.1\r\nhost: m\r\n\r\n".encode())
        assert (await client.response()) is not None
        answered = trio.current_time()
        assert await client.closed(wait=40)
        assert trio.current_time() - answered == pytest.approx(25, abs=0.1)
    finally:
        await client.aclose()


async def test_a_declared_body_over_1_mib_is_413(nursery: trio.Nursery) -> None:
    running = await start(nursery)
    client = await RawClient.connect(running.port)
    try:
        head = f"POST {PREFIX}/reload HTTP/1.1\r\nhost: m\r\ncontent-length: 1048577\r\n\r\n"
        await client.send(head.encode())
        response = await client.response(b"POST")
        assert response is not None
        assert response.status == 413
    finally:
        await client.aclose()


async def test_a_chunked_body_over_1_mib_is_413_and_a_small_one_is_ignored(
    nursery: trio.Nursery,
) -> None:
    running = await start(nursery)
    small = await curl("-X", "POST", "--data-binary", "hello", running.url("/reload"))
    assert small.response.status == 409  # the body was read and dropped; the view answered
    big = await curl(
        "-X",
        "POST",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        "@-",
        running.url("/reload"),
        stdin=b"z" * (1024 * 1024 + 10),
    )
    assert big.responses[0].status == 413


async def test_garbage_is_400(nursery: trio.Nursery) -> None:
    running = await start(nursery)
    client = await RawClient.connect(running.port)
    try:
        await client.send(b"NOT HTTP AT ALL\r\n\r\n")
        response = await client.response()
        assert response is not None
        assert response.status == 400
        assert await client.closed()
    finally:
        await client.aclose()


async def test_connections_over_the_cap_are_closed_at_once(nursery: trio.Nursery) -> None:
    running = await start(nursery, limits=ServerLimits(max_connections=2))
    held = [await RawClient.connect(running.port) for _ in range(2)]
    try:
        for client in held:  # both are being served
            await client.send(f"GET {PREFIX}/live HTTP/1.1\r\nhost: m\r\n\r\n".encode())
            assert (await client.response()) is not None
        assert running.server.active_connections == 2
        extra = await RawClient.connect(running.port)
        assert await extra.closed()
        await extra.aclose()
        # One held connection ends; by the time its client sees the close, its slot is free.
        leaving = held.pop()
        await leaving.send(f"GET {PREFIX}/live HTTP/1.1\r\nconnection: close\r\n\r\n".encode())
        assert (await leaving.response()) is not None
        assert await leaving.closed()
        await leaving.aclose()
        assert running.server.active_connections == 1
        result = await curl(running.url("/live"))
        assert result.response.status == 200
    finally:
        for client in held:
            await client.aclose()


async def test_a_failing_endpoint_is_500_and_the_server_goes_on(nursery: trio.Nursery) -> None:
    view = make_view()
    view.broken = True
    running = await start(nursery, view=view)
    code, lines, stderr = await curl_lines(
        "-w",
        "%{http_code} %{num_connects}\\n",
        "-o",
        "/dev/null",
        running.url("/routes"),
        "-o",
        "/dev/null",
        running.url("/live"),
    )
    assert code == 0, stderr
    assert lines == ["500 1", "200 0"]


# ------------------------------------------------------------------------------ the token


def requires_token(server: ManagementServer) -> bool:
    return server.requires_token


async def test_the_token_comes_from_the_environment_and_is_reread_on_update(
    nursery: trio.Nursery,
) -> None:
    environ = {"ADMIN_TOKEN": TOKEN}
    settings = local_settings(auth_token_env="ADMIN_TOKEN")
    running = await start(nursery, settings, environ=environ)
    assert requires_token(running.server)
    denied = await curl(running.url("/routes"))
    assert denied.response.status == 401
    assert denied.response.header(b"www-authenticate") == b'Bearer realm="a3s-gateway-management"'
    assert TOKEN.encode() not in denied.response.body
    allowed = await curl("-H", f"Authorization: Bearer {TOKEN}", running.url("/routes"))
    assert allowed.response.status == 200
    probe = await curl(running.url("/health"))
    assert probe.response.status == 200
    # The variable changes; the running server notices on update (a reload of settings).
    environ["ADMIN_TOKEN"] = "rotated-token-000"
    still = await curl("-H", f"Authorization: Bearer {TOKEN}", running.url("/routes"))
    assert still.response.status == 200
    running.server.update(settings)
    old = await curl("-H", f"Authorization: Bearer {TOKEN}", running.url("/routes"))
    assert old.response.status == 401
    new = await curl("-H", "Authorization: Bearer rotated-token-000", running.url("/routes"))
    assert new.response.status == 200
    del environ["ADMIN_TOKEN"]
    running.server.update(settings)
    assert not requires_token(running.server)
    assert (await curl(running.url("/routes"))).response.status == 200


async def test_a_client_outside_allowed_ips_is_403(nursery: trio.Nursery) -> None:
    settings = local_settings(allowed_ips=())
    running = await start(nursery, settings, environ={"A3S_GATEWAY_ADMIN_TOKEN": TOKEN})
    result = await curl("-H", f"Authorization: Bearer {TOKEN}", running.url("/config"))
    assert result.response.status == 403
    assert (await curl(running.url("/ready"))).response.status == 200


# ------------------------------------------------------------------------------ TLS


@dataclass
class Pki:
    ca: Path
    cert: Path
    key: Path
    client: Path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    authority = trustme.CA()
    server = authority.issue_cert(LOCAL)
    client = authority.issue_cert("ops@example.com")
    paths = Pki(
        tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "client.pem"
    )
    authority.cert_pem.write_to_path(str(paths.ca))
    server.cert_chain_pems[0].write_to_path(str(paths.cert))
    server.private_key_pem.write_to_path(str(paths.key))
    client.private_key_and_cert_chain_pem.write_to_path(str(paths.client))
    return paths


async def test_tls_with_curl(nursery: trio.Nursery, pki: Pki) -> None:
    tls = ManagementTls(cert_file=str(pki.cert), key_file=str(pki.key))
    running = await start(nursery, local_settings(tls=tls))
    result = await curl("--cacert", str(pki.ca), running.url("/version"))
    assert result.response.status == 200
    unverified = await curl(running.url("/version"))  # the system store lacks the test CA
    assert unverified.code != 0
    assert unverified.responses == ()
    plain = await curl(running.url("/version").replace("https://", "http://"))
    assert plain.responses == ()  # plain HTTP on the TLS port gets no answer


async def test_mtls_requires_a_client_certificate(nursery: trio.Nursery, pki: Pki) -> None:
    tls = ManagementTls(
        cert_file=str(pki.cert),
        key_file=str(pki.key),
        client_ca_file=str(pki.ca),
        require_client_cert=True,
    )
    running = await start(nursery, local_settings(tls=tls))
    anonymous = await curl("--cacert", str(pki.ca), running.url("/version"))
    assert anonymous.code != 0
    assert anonymous.responses == ()
    result = await curl("--cacert", str(pki.ca), "--cert", str(pki.client), running.url("/version"))
    assert result.response.status == 200


async def test_tls_min_version_1_3_refuses_1_2(nursery: trio.Nursery, pki: Pki) -> None:
    tls = ManagementTls(cert_file=str(pki.cert), key_file=str(pki.key), min_version="1.3")
    running = await start(nursery, local_settings(tls=tls))
    old = await curl("--cacert", str(pki.ca), "--tls-max", "1.2", running.url("/version"))
    assert old.code != 0
    assert old.responses == ()
    new = await curl("--cacert", str(pki.ca), running.url("/version"))
    assert new.response.status == 200


async def test_unusable_tls_files_are_start_errors_and_reload_errors(pki: Pki) -> None:
    missing = ManagementTls(cert_file=str(pki.cert) + ".nope", key_file=str(pki.key))
    with pytest.raises(StartError, match="management API: TLS"):
        ManagementServer(local_settings(tls=missing), make_view(), environ={})
    server = ManagementServer(local_settings(), make_view(), environ={})
    swapped = ManagementTls(cert_file=str(pki.key), key_file=str(pki.cert))
    with pytest.raises(ReloadError, match="management API: TLS"):
        server.update(local_settings(tls=swapped))
