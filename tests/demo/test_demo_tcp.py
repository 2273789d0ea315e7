"""The demo's TCP entrypoint (issue #20 item 6): the TCP echo and the TLS echo backends on their
own, then both through the gateway at the address the banner prints: a plain client that
half-closes gets every byte back and then the end, and a TLS client naming ``echo.localhost``
reaches the TLS echo unopened (passthrough: the certificate it sees is the backend's).

Real sockets, real clients (trio's sockets and ``ssl``; the banner's ``python`` command as a
subprocess, and its ``nc`` command where ``nc`` is installed). Every wait is bounded by
``fail_after`` and none stands in for synchronisation.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import re
import shlex
import shutil
import ssl
import stat
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from a3s_gateway.demo import BackendPorts, RunningDemo, run_demo
from a3s_gateway.demo.certs import ECHO_CERT_FILE, ECHO_SERVER_NAME, write_demo_certificates
from a3s_gateway.demo.run import DEFAULT_TCP_PORT, Demo, banner
from a3s_gateway.demo.tcp_echo import serve_tcp_echo, serve_tls_echo, tls_echo_context
from a3s_gateway.preflight import certificate_findings
from tests.support.gateway import need_tool

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.integration

#: Bound on one step of a test (a connect, a handshake, an echo).
WAIT: Final = 10.0
#: The banner's commands (after their two-space indent).
NC_LINE: Final = re.compile(r"^  (printf 'hello\\n' \| nc -N 127\.0\.0\.1 (\d+))$", re.MULTILINE)
PYTHON_LINE: Final = re.compile(r"^  (\S+ -c \"import socket; .*)$", re.MULTILINE)
OPENSSL_LINE: Final = re.compile(
    r"^  openssl s_client -connect 127\.0\.0\.1:(\d+) -servername echo\.localhost "
    r"-CAfile (\S+/ca\.pem) -brief$",
    re.MULTILINE,
)
#: Several reads and writes each way, more than any socket buffer holds.
LARGE: Final = bytes(range(256)) * 4096  # 1 MiB


def printed(pattern: re.Pattern[str], text: str) -> re.Match[str]:
    """The one match of ``pattern`` in the banner ``text``."""
    (found,) = list(pattern.finditer(text))
    return found


async def send_then_eof(stream: trio.abc.HalfCloseableStream, payload: bytes) -> None:
    """Send ``payload`` in several writes, then shut down writing."""
    for start in range(0, len(payload), 100_000):
        await stream.send_all(payload[start : start + 100_000])
    await stream.send_eof()


async def read_to_eof(stream: trio.abc.ReceiveStream) -> bytes:
    received = bytearray()
    while chunk := await stream.receive_some(65536):
        received += chunk
    return bytes(received)


async def half_closed_echo(port: int, payload: bytes) -> bytes:
    """Everything that comes back on a connection to ``port`` that sends ``payload`` and then
    its EOF, read (at the same time as the sending) up to the other side's EOF."""
    with trio.fail_after(WAIT):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream, trio.open_nursery() as nursery:
            nursery.start_soon(send_then_eof, stream, payload)
            return await read_to_eof(stream)


async def read_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    received = bytearray()
    while len(received) < size:
        chunk = await stream.receive_some(size - len(received))
        assert chunk, bytes(received)
        received += chunk
    return bytes(received)


async def tls_echo_session(port: int, ca_file: Path, server_name: str) -> bytes:
    """A TLS session to ``port`` trusting only ``ca_file``: echoes two messages, closes with
    ``close_notify`` and waits for the other side's (``unwrap``); the server's certificate
    (DER)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    with trio.fail_after(WAIT):
        tls = trio.SSLStream(
            await trio.open_tcp_stream("127.0.0.1", port), context, server_hostname=server_name
        )
        try:
            await tls.do_handshake()
            certificate: bytes = tls.getpeercert(binary_form=True)
            for message in (b"hello\n", b"through the gateway, unopened\n"):
                await tls.send_all(message)
                assert await read_exactly(tls, len(message)) == message
            transport, _ = await tls.unwrap()  # our close_notify, then the backend's
            await transport.aclose()
        finally:
            await trio.aclose_forcefully(tls)
    return certificate


def echo_certificate(ca_file: Path) -> bytes:
    """The TLS echo backend's certificate (DER), beside the demo's CA file."""
    pem = (ca_file.parent / ECHO_CERT_FILE).read_bytes()
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


# -- the certificate and the backends on their own ---------------------------------------------


def test_the_echo_certificate_names_echo_localhost_alone(tmp_path: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    made = write_demo_certificates(tmp_path, now)
    leaf = x509.load_pem_x509_certificate(made.echo_cert_file.read_bytes())
    assert certificate_findings(str(made.echo_cert_file), leaf, purpose="server", now=now) == []
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [ECHO_SERVER_NAME]
    assert names.get_values_for_type(x509.IPAddress) == []
    ca = x509.load_pem_x509_certificate(made.ca_file.read_bytes())
    leaf.verify_directly_issued_by(ca)
    assert stat.S_IMODE(made.echo_key_file.stat().st_mode) == 0o600
    assert made.echo_cert_file.parent == made.ca_file.parent


@dataclass(frozen=True)
class EchoBackends:
    tcp: int
    tls: int
    ca_file: Path


@pytest.fixture
async def echoes(nursery: trio.Nursery, tmp_path: Path) -> EchoBackends:
    made = write_demo_certificates(tmp_path, datetime.datetime.now(datetime.UTC))
    context = tls_echo_context(made.echo_cert_file, made.echo_key_file)
    tcp: int = await nursery.start(serve_tcp_echo)
    tls: int = await nursery.start(serve_tls_echo, context)
    return EchoBackends(tcp, tls, made.ca_file)


async def test_the_tcp_echo_sends_everything_back_then_its_eof(echoes: EchoBackends) -> None:
    assert await half_closed_echo(echoes.tcp, LARGE) == LARGE
    assert await half_closed_echo(echoes.tcp, b"") == b""  # EOF at once: EOF back


async def test_the_tcp_echo_answers_each_read_before_the_eof(echoes: EchoBackends) -> None:
    with trio.fail_after(WAIT):
        async with await trio.open_tcp_stream("127.0.0.1", echoes.tcp) as stream:
            for message in (b"one\n", b"two\n"):
                await stream.send_all(message)
                assert await read_exactly(stream, len(message)) == message
            await stream.send_eof()
            assert await stream.receive_some(1) == b""


async def test_the_tls_echo_shows_its_certificate_and_echoes(echoes: EchoBackends) -> None:
    certificate = await tls_echo_session(echoes.tls, echoes.ca_file, ECHO_SERVER_NAME)
    assert certificate == echo_certificate(echoes.ca_file)


async def test_a_bad_tls_client_does_not_stop_the_tls_echo(echoes: EchoBackends) -> None:
    with trio.fail_after(WAIT):
        # Not TLS at all: the handshake fails and the backend closes the connection.
        async with await trio.open_tcp_stream("127.0.0.1", echoes.tls) as stream:
            await stream.send_all(b"hello, not tls\r\n\r\n")
            with contextlib.suppress(trio.BrokenResourceError):  # (a reset is an end too)
                await read_to_eof(stream)
        # A handshake, then the connection dropped without close_notify.
        context = ssl.create_default_context(cafile=str(echoes.ca_file))
        tls = trio.SSLStream(
            await trio.open_tcp_stream("127.0.0.1", echoes.tls),
            context,
            server_hostname=ECHO_SERVER_NAME,
        )
        await tls.do_handshake()
        await tls.transport_stream.aclose()
    await tls_echo_session(echoes.tls, echoes.ca_file, ECHO_SERVER_NAME)  # still serving


# -- through the gateway ------------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    running: RunningDemo
    #: What the demo printed (its banner).
    printed: str

    @property
    def tcp_port(self) -> int:
        assert self.running.tcp_port is not None
        return self.running.tcp_port


@pytest.fixture
async def demo(nursery: trio.Nursery) -> AsyncIterator[Started]:
    """The demo on free ports, without its gRPC child (not needed here)."""
    out = io.StringIO()
    running: RunningDemo = await nursery.start(partial(run_demo, 0, out=out, grpc=False))
    yield Started(running, out.getvalue())
    await running.gateway.shutdown()


async def test_the_tcp_entrypoint_echoes_a_half_closing_client(demo: Started) -> None:
    port = int(printed(NC_LINE, demo.printed).group(2))
    assert port == demo.tcp_port
    assert port not in {demo.running.backends.tcp_echo, demo.running.backends.tls_echo}
    assert await half_closed_echo(port, b"hello\n") == b"hello\n"
    assert await half_closed_echo(port, LARGE) == LARGE


async def test_the_printed_python_command_echoes_hello(demo: Started) -> None:
    command = shlex.split(printed(PYTHON_LINE, demo.printed).group(1))
    assert f"('127.0.0.1', {demo.tcp_port})" in command[-1]
    with trio.fail_after(WAIT):
        done = await trio.run_process(command, capture_stdout=True, capture_stderr=True)
    assert done.stdout == b"hello\n", done.stderr


async def test_the_printed_nc_command_echoes_hello(demo: Started) -> None:
    need_tool("nc", "(netcat-openbsd) to run the banner's TCP command")
    nc = shutil.which("nc")
    assert nc is not None
    help_text = await trio.run_process([nc, "-h"], capture_stderr=True, check=False)
    assert b"-N" in help_text.stderr, "this nc has no -N: it is not netcat-openbsd"
    line = printed(NC_LINE, demo.printed).group(1)
    with trio.fail_after(WAIT):
        done = await trio.run_process(["bash", "-c", line], capture_stdout=True)
    assert done.stdout == b"hello\n"


async def test_sni_echo_localhost_is_passed_through_to_the_tls_echo(demo: Started) -> None:
    found = printed(OPENSSL_LINE, demo.printed)
    port, ca_file = int(found.group(1)), Path(found.group(2))
    assert (port, ca_file) == (demo.tcp_port, demo.running.ca_file)
    certificate = await tls_echo_session(port, ca_file, ECHO_SERVER_NAME)
    # The backend's own certificate, which the gateway does not hold: the TLS was not opened.
    assert certificate == echo_certificate(ca_file)


async def test_other_tls_goes_to_the_plain_echo(demo: Started) -> None:
    """SNI ``localhost`` is not ``echo.localhost``: the catch-all relays the ClientHello to the
    plain echo, which sends it back, and the client's handshake fails."""
    assert demo.running.ca_file is not None
    context = ssl.create_default_context(cafile=str(demo.running.ca_file))
    with trio.fail_after(WAIT):
        stream = await trio.open_tcp_stream("127.0.0.1", demo.tcp_port)
        tls = trio.SSLStream(stream, context, server_hostname="localhost")
        try:
            with pytest.raises(trio.BrokenResourceError):
                await tls.do_handshake()
        finally:
            await trio.aclose_forcefully(tls)


# -- ports and the banner ----------------------------------------------------------------------


def test_the_tcp_port_follows_the_gateway_port() -> None:
    assert Demo(8080).tcp_port == DEFAULT_TCP_PORT == 9000
    assert Demo(0).tcp_port == 0  # --port 0: a free one, read back from the gateway
    assert Demo(8080, tcp_port=9100).tcp_port == 9100
    assert DEFAULT_TCP_PORT not in {8080, 8443, 9901}  # the demo's other default ports


def test_the_banner_shows_the_tcp_commands() -> None:
    ports = BackendPorts(9101, 9102, 9103, 9104, 9105, 9106)
    ca_file = Path("/tmp/a3s-gateway-demo-x/ca.pem")
    text = banner(
        "http://127.0.0.1:8080", ports, listening=True, tcp_port=9000, tcp_ca_file=ca_file
    )
    for line in (
        "  gateway   tcp://127.0.0.1:9000   (entrypoint tcp, TCP)\n",
        "  tcp-echo  tcp://127.0.0.1:9105   (TCP echo)\n",
        "  tls-echo  tls://127.0.0.1:9106   (TLS echo for echo.localhost)\n",
        "  printf 'hello\\n' | nc -N 127.0.0.1 9000\n",
        "  openssl s_client -connect 127.0.0.1:9000 -servername echo.localhost"
        " -CAfile /tmp/a3s-gateway-demo-x/ca.pem -brief\n",
    ):
        assert line in text
    python = printed(PYTHON_LINE, text).group(1)
    assert python.startswith('python -c "import socket; ')
    assert "('127.0.0.1', 9000)" in python
    without = banner("http://127.0.0.1:8080", ports, listening=True)
    assert "nc -N" not in without
    assert "openssl" not in without
    no_ca = banner("http://127.0.0.1:8080", ports, listening=True, tcp_port=9000)
    assert "nc -N" in no_ca
    assert "openssl" not in no_ca
