"""The packaged demo.hcl: it loads with the backends' ports, passes ``validate``, and its routers
send each path where the demo's banner says."""

from __future__ import annotations

import datetime
import re
from importlib.resources import as_file, files
from typing import TYPE_CHECKING

import pytest

from a3s_gateway.config.load import load_config_text
from a3s_gateway.config.schema import Config
from a3s_gateway.demo import BackendPorts
from a3s_gateway.demo.certs import write_demo_certificates
from a3s_gateway.demo.run import demo_config_text, demo_env, load_demo_config
from a3s_gateway.errors import ConfigError
from a3s_gateway.routing import HttpRequestInfo, Route, RouteTable, compile_rule
from a3s_gateway.routing.request import TcpConnInfo
from a3s_gateway.routing.tcp import TcpRoute, TcpRouteTable
from tests.support.cli import cli_env, run_cli

if TYPE_CHECKING:
    from pathlib import Path

PORTS = BackendPorts(echo_a=9101, echo_b=9102, stream=9103, grpc=9104, tcp_echo=9105, tls_echo=9106)


def demo_config(port: int = 8080, admin_port: int = 9901) -> Config:
    return load_demo_config(demo_env(port, admin_port, PORTS))


def route_table(config: Config) -> RouteTable:
    return RouteTable(
        Route(
            name=name,
            rule=compile_rule(router.rule, syntax=router.rule_syntax),
            service=router.service,
            entrypoints=frozenset(router.entrypoints) or None,
            priority=router.priority,
        )
        for name, router in config.routers.items()
    )


def test_the_demo_config_loads_with_the_given_ports() -> None:
    config = demo_config(port=8123, admin_port=9911)
    assert config.entrypoints["web"].address.text == "127.0.0.1:8123"
    assert config.entrypoints["web"].protocol == "http"
    api = config.services["api"].load_balancer
    assert api is not None
    assert api.strategy == "round-robin"
    assert [s.url.text for s in api.servers] == ["http://127.0.0.1:9101", "http://127.0.0.1:9102"]
    stream = config.services["stream"].load_balancer
    assert stream is not None
    assert [s.url.text for s in stream.servers] == ["http://127.0.0.1:9103"]
    grpc = config.services["grpc"].load_balancer
    assert grpc is not None
    assert [s.url.text for s in grpc.servers] == ["h2c://127.0.0.1:9104"]
    assert config.routers["grpc"].rule == "PathPrefix(`/demo.Echo/`)"
    ws = config.services["ws"].load_balancer
    assert ws is not None
    assert [s.url.text for s in ws.servers] == ["ws://127.0.0.1:9103"]  # the stream backend
    assert "A3S_DEMO_GRPC" in config.public_env  # a port: shown as it is, not redacted
    assert config.management is not None
    assert config.management.address.text == "127.0.0.1:9911"


def test_port_zero_everywhere_is_accepted() -> None:
    config = demo_config(port=0, admin_port=0)
    assert config.entrypoints["web"].address.port == 0


@pytest.mark.parametrize(
    ("path", "router", "service"),
    [
        ("/api/hello", "api", "api"),
        ("/api", "api", "api"),
        ("/events", "events", "stream"),
        ("/events?count=3", "events", "stream"),
        ("/demo.Echo/Unary", "grpc", "grpc"),
        ("/demo.Echo/ServerStream", "grpc", "grpc"),
        ("/demo.Echo", "fallback", "api"),  # not a call: a gRPC path has a method after it
        ("/ws", "ws", "ws"),
        ("/mux", "mux", "mux"),
        ("/", "fallback", "api"),
        ("/hello", "fallback", "api"),
        ("/status/503", "fallback", "api"),
    ],
)
def test_routes_go_where_the_banner_says(path: str, router: str, service: str) -> None:
    bare, _, query = path.partition("?")
    found = route_table(demo_config()).select(
        HttpRequestInfo("GET", "127.0.0.1:8080", bare, query=query), "web"
    )
    assert found is not None
    assert (found.name, found.service) == (router, service)


def test_the_multiplexer_has_an_echo_channel_and_a_broadcast_chat() -> None:
    """SPEC §5.13: ``mux`` is answered by the gateway (no backends of its own); its ``echo``
    channel opens a WebSocket to the ``ws`` service at /ws, ``chat`` is a hub with echo."""
    mux = demo_config().services["mux"]
    assert mux.load_balancer is None
    assert mux.websocket_mux is not None
    channels = mux.websocket_mux.channels
    assert sorted(channels) == ["chat", "echo"]
    echo, chat = channels["echo"], channels["chat"]
    assert (echo.service, echo.path, echo.broadcast) == ("ws", "/ws", False)
    assert (chat.service, chat.broadcast, chat.echo) == (None, True, True)


def test_the_fallback_router_comes_last() -> None:
    config = demo_config()
    assert config.routers["fallback"].priority == 1
    assert min(compile_rule(r.rule).default_priority for r in config.routers.values()) > 1


def test_missing_backend_ports_are_reported_by_name() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(demo_config_text(), filename="demo.hcl", env={})
    messages = " ".join(p.message for p in caught.value.problems)
    for name in (
        "A3S_DEMO_ECHO_A",
        "A3S_DEMO_ECHO_B",
        "A3S_DEMO_STREAM",
        "A3S_DEMO_GRPC",
        "A3S_DEMO_TCP_ECHO",
        "A3S_DEMO_TLS_ECHO",
    ):
        assert name in messages


def test_a_gateway_port_equal_to_the_management_port_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="management"):
        demo_config(port=9901, admin_port=9901)


def test_validate_accepts_the_packaged_file_with_the_ports_set(tmp_path: Path) -> None:
    """Online: the certificate the demo makes passes every certificate check."""
    write_demo_certificates(tmp_path, datetime.datetime.now(datetime.UTC))
    env = cli_env(
        {
            "A3S_DEMO_ECHO_A": "9101",
            "A3S_DEMO_ECHO_B": "9102",
            "A3S_DEMO_STREAM": "9103",
            "A3S_DEMO_GRPC": "9104",
            "A3S_DEMO_TCP_ECHO": "9105",
            "A3S_DEMO_TLS_ECHO": "9106",
            "A3S_DEMO_CERT_DIR": str(tmp_path),
        }
    )
    with as_file(files("a3s_gateway.demo").joinpath("demo.hcl")) as path:
        done = run_cli("validate", str(path), env=env)
        assert done.code == 0, done.stderr
        assert "configuration is valid (0 warning(s))" in done.stdout
        assert "web  127.0.0.1:8080  http" in done.stdout
        assert "websecure  127.0.0.1:8443" in done.stdout
        assert "tcp  127.0.0.1:9000  tcp" in done.stdout
        # Without the files only --offline passes (as demo.hcl's header says).
        env["A3S_DEMO_CERT_DIR"] = str(tmp_path / "nowhere")
        assert run_cli("validate", str(path), env=env).code == 1
        assert run_cli("validate", "--offline", str(path), env=env).code == 0
    assert "api  2 backend(s)  round-robin" in done.stdout
    assert "grpc  1 backend(s)" in done.stdout
    assert "ws  1 backend(s)" in done.stdout
    assert "mux  0 backend(s)  websocket-mux" in done.stdout


def test_the_headers_command_names_every_variable_the_file_needs() -> None:
    """demo.hcl's header shows how to check it by hand; its variables are all it takes."""
    header = demo_config_text().split("\n\n", 1)[0]
    env = dict(re.findall(r"(A3S_DEMO_\w+)=(\S+)", header))
    assert {"A3S_DEMO_GRPC", "A3S_DEMO_CERT_DIR", "A3S_DEMO_TLS_ECHO"} <= set(env)
    with as_file(files("a3s_gateway.demo").joinpath("demo.hcl")) as path:
        done = run_cli("validate", "--offline", str(path), env=cli_env(env))
    assert done.code == 0, done.stderr


def tcp_route_table(config: Config) -> TcpRouteTable:
    return TcpRouteTable(
        TcpRoute(
            name=name,
            rule=compile_rule(router.rule, kind="tcp", syntax=router.rule_syntax),
            service=router.service,
            entrypoints=frozenset(router.entrypoints) or None,
            priority=router.priority,
            tls_passthrough=router.tls_passthrough,
        )
        for name, router in config.tcp_routers.items()
    )


def test_the_tcp_entrypoint_and_its_services() -> None:
    """Issue #20 item 6: entrypoint tcp (no tls: TLS is relayed unopened) and two echoes."""
    config = load_demo_config(demo_env(8080, 9901, PORTS, tcp_port=9123))
    tcp = config.entrypoints["tcp"]
    assert (tcp.protocol, tcp.address.text, tcp.tls) == ("tcp", "127.0.0.1:9123", None)
    for service, port in (("tcp-echo", 9105), ("tls-echo", 9106)):
        balancer = config.services[service].load_balancer
        assert balancer is not None
        # tcp:// for the TLS echo too: the gateway relays its TLS, it does not speak it.
        assert [s.url.text for s in balancer.servers] == [f"tcp://127.0.0.1:{port}"]
    assert {"A3S_DEMO_TCP_PORT", "A3S_DEMO_TCP_ECHO", "A3S_DEMO_TLS_ECHO"} <= set(config.public_env)
    assert demo_config().entrypoints["tcp"].address.port == 9000  # the default


@pytest.mark.parametrize(
    ("sni", "router"),
    [
        ("echo.localhost", "tls-echo"),
        ("ECHO.localhost.", "tls-echo"),  # SNI matching ignores case and one trailing dot
        ("localhost", "tcp-echo"),
        ("", "tcp-echo"),  # not TLS, or TLS without SNI
    ],
)
def test_tcp_connections_go_where_the_banner_says(sni: str, router: str) -> None:
    table = tcp_route_table(demo_config())
    found = table.select(TcpConnInfo(sni, (), "127.0.0.1"), "tcp")
    assert found is not None
    assert (found.name, found.service) == (router, router)
    assert table.routes_for("web") == ()
    assert table.routes_for("websecure") == ()  # HTTPS stays with the HTTP routers
    assert [r.name for r in table.routes_for("tcp")] == ["tls-echo", "tcp-echo"]  # catch-all last
