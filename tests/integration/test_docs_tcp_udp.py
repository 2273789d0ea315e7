"""The TCP and UDP guide (docs/tcp-udp.md) and the README's TCP example stay true to the code.

* Every ```hcl block of the guide, and the README's TCP example, is a whole config that loads
  with ``load_config_text`` without a warning.
* The guide names every ``a3s_tcp_*`` and ``a3s_udp_*`` family (read from the registry the
  data plane feeds), every reason a connection is refused with (read from the calls that count
  them), every reason a UDP datagram is dropped for, every malformed-ClientHello reason, and
  every access-log ``error`` word of a TCP relay and a UDP session.
* Two examples run: the guide's SNI passthrough config routes a client that does not speak TLS
  to its catch-all, and its DNS config relays a UDP datagram to a backend and back, both through
  an in-process gateway in front of real sockets.
"""

from __future__ import annotations

import ast
import re
import socket
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from a3s_gateway import Gateway
from a3s_gateway.config.load import load_config_text, load_text
from a3s_gateway.observability.metrics import Registry
from a3s_gateway.observability.stream_metrics import StreamFamilies
from a3s_gateway.routing.clienthello import MALFORMED_REASONS
from a3s_gateway.runtime.compile import compile_runtime
from a3s_gateway.server import tcp_proxy, udp_session
from tests.support.gateway import GatewayHandle

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.integration

ROOT: Final = Path(__file__).resolve().parents[2]
GUIDE: Final = ROOT / "docs" / "tcp-udp.md"
README: Final = ROOT / "README.md"
SERVER: Final = ROOT / "src" / "a3s_gateway" / "server"

#: A fenced block: its info string and its text (fences at the start of a line).
FENCE: Final = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
#: An entrypoint's listen address as the examples write it.
LISTEN: Final = re.compile(r'address(\s*)= "0\.0\.0\.0:\d+"')
#: Bound on each network step of the running examples.
WAIT: Final = 10.0


def document(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def hcl_blocks(text: str) -> list[str]:
    return [match[2] for match in FENCE.finditer(text) if match[1].strip() == "hcl"]


def guide_blocks() -> list[str]:
    return hcl_blocks(document(GUIDE))


def readme_tcp_blocks() -> list[str]:
    return [block for block in hcl_blocks(document(README)) if "tcp_routers" in block]


def block_with(marker: str) -> str:
    """The one ```hcl block of the guide that contains ``marker``."""
    found = [block for block in guide_blocks() if marker in block]
    assert len(found) == 1, (marker, len(found))
    return found[0]


def in_backticks(word: str, text: str) -> bool:
    return f"`{word}`" in text


# -- every example loads ---------------------------------------------------------------------


def test_the_guide_and_the_readme_have_examples() -> None:
    blocks = guide_blocks()
    assert len(blocks) >= 6
    assert any('protocol = "udp"' in re.sub(r"\s+", " ", block) for block in blocks)
    assert any("tls_passthrough = true" in re.sub(r"\s+", " ", block) for block in blocks)
    assert readme_tcp_blocks(), "the README shows an SNI passthrough example"
    assert "docs/tcp-udp.md" in document(README)


@pytest.mark.parametrize(
    "block",
    [*guide_blocks(), *readme_tcp_blocks()],
    ids=[
        *[f"guide{index}" for index in range(len(guide_blocks()))],
        *[f"readme{index}" for index in range(len(readme_tcp_blocks()))],
    ],
)
def test_every_example_loads_without_warnings(block: str) -> None:
    config = load_config_text(block, filename="docs/tcp-udp.md")
    assert config.entrypoints
    warnings = [p.format() for p in load_text(block).problems if p.severity == "warning"]
    assert warnings == []


def test_the_readme_example_is_sni_passthrough_with_a_catch_all() -> None:
    (block,) = readme_tcp_blocks()
    config = load_config_text(block, filename="README.md")
    rules = [router.rule for router in config.tcp_routers.values()]
    assert sum(rule.startswith("HostSNI(`") and rule != "HostSNI(`*`)" for rule in rules) == 2
    assert "HostSNI(`*`)" in rules
    assert all(
        entry.tls is None and entry.protocol == "tcp" for entry in config.entrypoints.values()
    )
    assert len(config.entrypoints) == 1


# -- the guide names what the code counts ----------------------------------------------------


def stream_families() -> set[str]:
    """The family names ``StreamFamilies`` declares, counters with their ``_total``."""
    registry = Registry()
    StreamFamilies(registry)
    text = registry.render().decode("utf-8")
    return {
        family.name + "_total" if family.type == "counter" else family.name
        for family in text_string_to_metric_families(text)
    }


def literal_arguments(path: Path, function: str, index: int) -> set[str]:
    """The string literals passed as argument ``index`` to calls of ``function`` in ``path``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call) or len(node.args) <= index:
            continue
        called = node.func
        name = called.attr if isinstance(called, ast.Attribute) else getattr(called, "id", "")
        argument = node.args[index]
        if (
            name == function
            and isinstance(argument, ast.Constant)
            and isinstance(argument.value, str)
        ):
            found.add(argument.value)
    return found


def returned_literals(path: Path, function: str) -> set[str]:
    """The string literals ``function`` in ``path`` returns."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == function:
            found.update(
                inner.value.value
                for inner in ast.walk(node)
                if isinstance(inner, ast.Return)
                and isinstance(inner.value, ast.Constant)
                and isinstance(inner.value.value, str)
            )
    return found


def rejection_reasons() -> set[str]:
    """Every ``reason`` of ``a3s_connections_rejected_total`` the listeners and the TCP proxy
    count."""
    return (
        literal_arguments(SERVER / "listeners.py", "_reject", 3)
        | literal_arguments(SERVER / "listeners.py", "note_rejection", 2)
        | literal_arguments(SERVER / "tcp_proxy.py", "note_rejection", 2)
    )


def udp_drop_reasons() -> set[str]:
    """Every ``reason`` of ``a3s_udp_dropped_total``."""
    udp, session = SERVER / "udp.py", SERVER / "udp_session.py"
    counted = literal_arguments(udp, "udp_dropped_one", 1)
    counted |= literal_arguments(session, "udp_dropped_one", 1)
    return counted | (returned_literals(udp, "_route") - {""})


def test_the_code_readers_find_what_they_look_for() -> None:
    assert {"max_connections", "ip_not_allowed", "no_route", "tcp_filter"} <= rejection_reasons()
    assert {"draining", "no_router", "max_sessions", "send_buffer_full"} <= udp_drop_reasons()
    assert {"a3s_tcp_connections_active", "a3s_udp_dropped_total"} <= stream_families()


def test_the_guide_names_every_tcp_and_udp_family() -> None:
    text = document(GUIDE)
    families = stream_families()
    assert len(families) >= 9
    assert sorted(name for name in families if not in_backticks(name, text)) == []
    assert 'a3s_open_connections{protocol="tcp"}' in text
    assert in_backticks("a3s_connections_rejected_total{entrypoint,reason}", text)


def test_the_guide_names_every_rejection_reason_in_its_table() -> None:
    text = document(GUIDE)
    table = text[text.index("| `reason` | Why |") :]
    table = table[: table.index("\n\n")]
    reasons = rejection_reasons()
    assert len(reasons) >= 6
    assert sorted(reason for reason in reasons if f"| `{reason}` |" not in table) == []


def test_the_guide_names_every_udp_drop_reason_in_its_table() -> None:
    text = document(GUIDE)
    table = text[text.index("| `reason` | The datagram was dropped because |") :]
    table = table[: table.index("\n\n")]
    reasons = udp_drop_reasons()
    assert sorted(reason for reason in reasons if f"| `{reason}` |" not in table) == []


def test_the_guide_names_every_malformed_client_hello_reason() -> None:
    text = " ".join(document(GUIDE).split())  # the list wraps across lines
    assert sorted(reason for reason in MALFORMED_REASONS if f"`{reason}`" not in text) == []


def tcp_error_words() -> set[str]:
    words = {word for word in tcp_proxy._ENDINGS.values() if word}
    reasons = {"refused", "timeout", "tls"}  # ``_connect``'s ``connect_<reason>``
    return words | {f"connect_{reason}" for reason in reasons} | {"no_backend"}


def udp_error_words() -> set[str]:
    path = SERVER / "udp_session.py"
    words = set(udp_session._UNREACHABLE.values())
    words |= returned_literals(path, "_relay") | returned_literals(path, "_connect")
    words |= returned_literals(path, "_open_upstream") | returned_literals(path, "upstream_failed")
    udp = SERVER / "udp.py"
    words |= literal_arguments(udp, "end", 0) | returned_literals(udp, "_ending")
    return (words | {"shutdown"}) - {""}


def test_the_guide_names_every_access_log_error_word() -> None:
    text = document(GUIDE)
    tcp = text[text.index("- TCP `error`:") : text.index("- UDP `error`:")]
    udp = text[text.index("- UDP `error`:") :]
    udp = udp[: udp.index("\n- ")]
    assert sorted(word for word in tcp_error_words() if not in_backticks(word, tcp)) == []
    words = udp_error_words()
    assert {"idle_timeout", "backend_removed", "resolve_failed"} <= words
    assert sorted(word for word in words if not in_backticks(word, udp)) == []


def test_the_guide_states_the_defaults_of_the_code() -> None:
    runtime = compile_runtime(load_config_text(block_with('"legacy"')), 1)
    entry = runtime.entrypoints["tls"]
    assert (entry.peek_timeout, entry.handshake_timeout, entry.tcp_idle_timeout) == (5, 10, 600)
    text = " ".join(document(GUIDE).split())
    assert "| `timeouts.peek` | `5s` |" in text
    assert "| `timeouts.handshake` | `10s` |" in text
    assert "| `timeouts.idle` | `10m` |" in text
    dns = compile_runtime(load_config_text(block_with('"resolvers"')), 1).udp_entrypoints["dns"]
    assert (dns.session_timeout, dns.max_sessions) == (10, 50000)  # as the example sets them
    assert "(default `30`)" in text
    assert "(default `10000`)" in text


# -- two examples run -----------------------------------------------------------------------


def localized(text: str, backends: dict[str, int]) -> str:
    """``text`` listening on ephemeral loopback ports, each ``host:port`` of ``backends``
    replaced by that loopback port."""
    text = LISTEN.sub(r'address\1= "127.0.0.1:0"', text)
    for documented, port in backends.items():
        assert documented in text, documented
        text = text.replace(documented, f"127.0.0.1:{port}")
    return text


async def tcp_echo(stream: trio.SocketStream) -> None:
    """Echo until the client ends its side, then end ours."""
    async with stream:
        while data := await stream.receive_some(65536):
            await stream.send_all(data)
        await stream.send_eof()


@asynccontextmanager
async def served(gateway: Gateway, nursery: trio.Nursery) -> AsyncIterator[GatewayHandle]:
    """``gateway`` serving in ``nursery`` until the block ends, then drained."""
    await nursery.start(gateway.serve)
    try:
        yield GatewayHandle(gateway, 0)
    finally:
        await gateway.shutdown(1.0)


def bound_port(gateway: Gateway, entrypoint: str) -> int:
    return gateway.addresses()[entrypoint][0][1]


async def read_to_end(stream: trio.abc.ReceiveStream) -> bytes:
    received = b""
    while data := await stream.receive_some(65536):
        received += data
    return received


@pytest.mark.time_limit(30)
async def test_a_client_without_tls_reaches_the_catch_all(nursery: trio.Nursery) -> None:
    listeners = await nursery.start(partial(trio.serve_tcp, tcp_echo, 0, host="127.0.0.1"))
    echo_port = int(listeners[0].socket.getsockname()[1])
    text = localized(block_with('"legacy"'), {"10.0.9.9:443": echo_port})
    gateway = Gateway(load_config_text(text))
    async with served(gateway, nursery) as handle:
        with trio.fail_after(WAIT):
            stream = await trio.open_tcp_stream("127.0.0.1", bound_port(gateway, "tls"))
            async with stream:
                await stream.send_all(b"hello, no TLS here\n")
                await stream.send_eof()
                assert await read_to_end(stream) == b"hello, no TLS here\n"
        with trio.fail_after(WAIT):
            # The counts are taken when the relay has closed both sides, just after the client
            # read the end.
            while handle.metric("a3s_tcp_bytes_total", router="other", direction="out") < 19:  # noqa: ASYNC110 -- the gateway's counters have no event
                await trio.sleep(0.01)
        assert handle.metric("a3s_tcp_connections_total", router="other") == 1
        assert handle.metric("a3s_tcp_bytes_total", router="other", direction="in") == 19


@pytest.mark.time_limit(30)
async def test_a_dns_query_goes_to_a_resolver_and_back(nursery: trio.Nursery) -> None:
    resolvers = [trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    client = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with client, resolvers[0], resolvers[1]:
        for resolver in resolvers:
            await resolver.bind(("127.0.0.1", 0))
            nursery.start_soon(udp_echo, resolver)
        ports = [int(resolver.getsockname()[1]) for resolver in resolvers]
        text = localized(
            block_with('"resolvers"'), {"10.0.0.53:53": ports[0], "10.0.0.54:53": ports[1]}
        )
        gateway = Gateway(load_config_text(text))
        async with served(gateway, nursery) as handle:
            target = ("127.0.0.1", bound_port(gateway, "dns"))
            with trio.fail_after(WAIT):
                answer = await ask(client, target, b"\x12\x34 example.com A?")
            assert answer.endswith(b"\x12\x34 example.com A?")
            assert answer.split(b":", 1)[0] in {str(port).encode() for port in ports}
            assert handle.metric("a3s_udp_sessions_total", entrypoint="dns") == 1
            assert handle.metric("a3s_udp_datagrams_total", direction="out") >= 1


async def udp_echo(sock: trio.socket.SocketType) -> None:
    """Answer each datagram with ``<own port>:`` and the datagram."""
    own = str(sock.getsockname()[1]).encode()
    while True:
        data, peer = await sock.recvfrom(65536)
        await sock.sendto(own + b":" + data, peer)


async def ask(client: trio.socket.SocketType, target: tuple[str, int], query: bytes) -> bytes:
    """Send ``query`` until an answer comes (a datagram may be lost); the answer."""
    while True:
        await client.sendto(query, target)
        with trio.move_on_after(1.0):
            data: bytes = await client.recv(65536)
            return data
