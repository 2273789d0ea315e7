"""``streamload`` (``bench/tools/streamload.c``): the load tool and backends of the streaming
profiles and of the TCP and UDP echo profiles, built with gcc when a run needs it, and the
summary it prints.

No Debian package has a WebSocket, SSE or TCP/UDP echo load generator fast enough to keep NGINX
busy (and Python clients or backends would be the bottleneck), so the harness compiles its own:
one C file, one thread, epoll, eight modes. ``ws-client`` opens N connections, does the HTTP/1.1
upgrade handshake on each (a fixed key; 101 with the matching ``Sec-WebSocket-Accept``), then
runs a closed loop for the duration: one masked binary message of ``MESSAGE_BYTES``, wait for
its echo, check it, send the next. ``ws-echo-server`` is its backend: 101 with the accept value
computed from the key it got (SHA-1 and base64 in the C file), then every frame echoed
unmasked. ``sse-client`` GETs N ``text/event-stream`` responses and counts the events;
``sse-server`` answers every request with an endless chunked stream of ``EVENT_BYTES``-byte
events (``data: <CLOCK_MONOTONIC ns, 16 hex digits> <sequence, 15 digits>`` and the blank
line: a 32-byte data field), each its own chunk and its own ``send()``, written as fast as the
socket takes them, but never more than ``SSE_WINDOW`` events of a stream in flight: the client
tells the server what each stream received over a Unix datagram socket (``--credits``). Without
that window the backend would fill every socket buffer between itself and a slower proxy
(megabytes on loopback), and an event's latency would be the seconds it waited there, growing
with the trial's length; with it, SSE is a closed loop of 64 × ``SSE_WINDOW`` events in flight,
as the WebSocket profile is of 64 messages and wrk's of 64 requests. An event's latency is the
client's clock at arrival minus the time in it (both ends on this host, the same monotonic
clock). The client sends no credit before the measured window, so while the connections open
each stream stops after its first window of events.

``tcp-client`` is the WebSocket client without the protocol: N connections, each sending
``MESSAGE_BYTES`` bytes and waiting until as many come back (checked) before the next; its
"handshake" is the first echo, so every connection has gone through the proxy to the backend
before the measured window. ``tcp-echo-server`` writes back every byte it reads. ``udp-client``
has N connected UDP sockets with one datagram each outstanding (a sequence number and the
socket's index in its first 12 bytes): a matching echo is counted and the next one sent; a
datagram with no echo after ``RETRY_SECONDS`` is counted as *lost* and the next one (a new
sequence number) sent, so a drop never stalls a socket; an echo that comes after that is
counted as *late* and otherwise ignored. Each socket first gets one echo (retried the same way,
within ``TIMEOUT_SECONDS``), so the proxy's UDP sessions exist before the measured window.
``udp-echo-server`` sends every datagram back to its sender (``recvmmsg``/``sendmmsg`` on one
socket). Losses are not errors (UDP may drop); the summary reports them beside the errors.

The clients handshake every connection first (within ``TIMEOUT_SECONDS``), then measure for
the duration and print one line ``STREAMLOAD {json}``: the connections still open, the count
(messages echoed or events received in the window), its duration, the client's own CPU time
in it, the bytes received, the UDP datagrams lost and late (0 in the other modes), the errors
(``connect``, ``handshake``, ``read``, ``write``, ``timeout``: no echo or no byte for
``TIMEOUT_SECONDS``, ``protocol``: a wrong echo or a malformed event) and latency percentiles
in µs (nearest rank over a log-linear histogram, within 0.2 %), with the first error's text.
``result`` turns it into a ``StreamResult``: the harness's ``WrkResult`` (``requests`` =
messages or events) with the client's CPU time, which the runner records beside the product's
and the backend's so that a run shows whether the load tool or the backend was the limit.

The binary is built into a directory of the run (``build``: about a second), with
``-O2 -Wall -Wextra -Werror``; gcc comes from the Debian packages of the benchmark.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, TypeAlias
from urllib.parse import urlsplit

from bench.harness.wrk import WrkError, WrkResult
from bench.procs import HOST

SOURCE: Final = Path(__file__).resolve().parents[1] / "tools" / "streamload.c"
CC: Final = "gcc"
CFLAGS: Final = ("-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror")
BINARY: Final = "streamload"
MARKER: Final = "STREAMLOAD "
#: The WebSocket profile's message (SPEC §15: a 32-byte echo).
MESSAGE_BYTES: Final = 32
#: One SSE event on the wire (without chunk framing): ``data: `` + 32 bytes + ``\n\n``.
EVENT_DATA_BYTES: Final = 32
EVENT_BYTES: Final = len("data: ") + EVENT_DATA_BYTES + 2
#: Handshake bound, and how long a connection may wait for an echo or the next bytes.
TIMEOUT_SECONDS: Final = 5.0
#: UDP: how long a datagram may wait for its echo before it counts as lost and the next one
#: goes out.
RETRY_SECONDS: Final = 0.2
#: SSE flow control: events of one stream the backend may have in flight (sent, not yet
#: received by the client, which says what it received over a Unix datagram socket).
SSE_WINDOW: Final = 64
BUILD_TIMEOUT: Final = 120.0
ERROR_KINDS: Final = ("connect", "handshake", "read", "write", "timeout", "protocol")

Mode: TypeAlias = Literal[
    "ws-client",
    "ws-echo-server",
    "sse-client",
    "sse-server",
    "tcp-client",
    "tcp-echo-server",
    "udp-client",
    "udp-echo-server",
]
#: The URL scheme each client mode is pointed at (``http://`` for the streaming ones).
CLIENT_SCHEMES: Final = {
    "ws-client": "http",
    "sse-client": "http",
    "tcp-client": "tcp",
    "udp-client": "udp",
}


class BuildError(RuntimeError):
    """gcc is missing or could not build the tool (its message ends with gcc's output)."""


class StreamloadError(WrkError):
    """A client run exited badly, printed no summary, or counted nothing."""


@dataclass(frozen=True, slots=True)
class Summary:
    """The numbers of one ``STREAMLOAD`` line (latencies in µs)."""

    mode: str
    connections: int
    open: int
    count: int
    duration_us: int
    cpu_us: int
    bytes: int
    errors: dict[str, int]
    min_us: int
    mean_us: float
    p50_us: int
    p90_us: int
    p99_us: int
    max_us: int
    first_error: str
    #: UDP datagrams given up after ``RETRY_SECONDS`` in the window, and their echoes that
    #: came later all the same (always 0 in the other modes and in older outputs).
    lost: int = 0
    late: int = 0


def build(directory: Path, *, source: Path = SOURCE, cc: str = CC) -> Path:
    """Compile ``source`` into ``directory``; the binary's path. Raises ``BuildError``."""
    compiler = shutil.which(cc)
    if compiler is None:
        raise BuildError(
            f"{cc} is needed to build {source.name} (Debian packages gcc and libc6-dev: "
            "bash bench/harness/install-debian-packages.sh)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    binary = directory / BINARY
    argv = [compiler, *CFLAGS, "-o", str(binary), str(source)]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise BuildError(f"{cc} did not finish within {BUILD_TIMEOUT:.0f} s") from error
    if done.returncode != 0:
        raise BuildError(f"{' '.join(argv)} failed:\n{(done.stderr or done.stdout)[-3000:]}")
    return binary


def parse(stdout: str) -> Summary:
    """The summary line in a client's output; raises ``StreamloadError`` without one."""
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            data = json.loads(line[len(MARKER) :])
            latency = data["latency_us"]
            return Summary(
                mode=str(data["mode"]),
                connections=int(data["connections"]),
                open=int(data["open"]),
                count=int(data["count"]),
                duration_us=int(data["duration_us"]),
                cpu_us=int(data["cpu_us"]),
                bytes=int(data["bytes"]),
                errors={str(key): int(value) for key, value in data["errors"].items()},
                min_us=int(latency["min"]),
                mean_us=float(latency["mean"]),
                p50_us=int(latency["p50"]),
                p90_us=int(latency["p90"]),
                p99_us=int(latency["p99"]),
                max_us=int(latency["max"]),
                first_error=str(data["first_error"]),
                lost=int(data.get("lost", 0)),
                late=int(data.get("late", 0)),
            )
    raise StreamloadError(f"no {MARKER.strip()} line in streamload's output:\n{stdout[-2000:]}")


@dataclass(frozen=True, slots=True)
class StreamResult(WrkResult):
    """A client run: ``WrkResult``'s numbers, the client's CPU µs in the measured window and
    (UDP) the datagrams lost and late."""

    load_cpu_us: int = 0
    lost: int = 0
    late: int = 0


def result(summary: Summary) -> StreamResult:
    """The harness's record of the run; ``StreamloadError`` when nothing was counted (the
    message says how many connections opened and the first error)."""
    if summary.count == 0 or summary.duration_us == 0:
        what = "event arrived" if summary.mode.startswith("sse") else "message was echoed"
        raise StreamloadError(
            f"no {what}: {summary.open} of {summary.connections} connections open at the end; "
            f"errors {summary.errors}; first error: {summary.first_error or '(none)'}"
        )
    return StreamResult(
        requests=summary.count,
        duration_us=summary.duration_us,
        bytes=summary.bytes,
        errors=dict(summary.errors),
        p50_us=summary.p50_us,
        p90_us=summary.p90_us,
        p99_us=summary.p99_us,
        max_us=summary.max_us,
        mean_us=summary.mean_us,
        load_cpu_us=summary.cpu_us,
        lost=summary.lost,
        late=summary.late,
    )


def client_command(
    binary: Path,
    mode: Mode,
    url: str,
    *,
    seconds: float,
    connections: int,
    size: int = MESSAGE_BYTES,
    timeout: float = TIMEOUT_SECONDS,
    credits: Path | None = None,
    retry: float = RETRY_SECONDS,
) -> list[str]:
    """The argv of one client run against ``url``: ``http://host:port/path`` for the streaming
    modes, ``tcp://host:port`` or ``udp://host:port`` for the echo modes (a path is ignored);
    ``credits``: the SSE backend's flow-control socket; ``retry``: the UDP client's."""
    scheme = CLIENT_SCHEMES.get(mode)
    if scheme is None:
        raise ValueError(f"{mode!r} is a server mode, not a client")
    parts = urlsplit(url)
    if parts.scheme != scheme or parts.hostname is None or parts.port is None:
        raise ValueError(f"streamload {mode} needs a {scheme}://IPv4:port/ URL, not {url!r}")
    options = {
        "--mode": mode,
        "--host": parts.hostname,
        "--port": str(parts.port),
    }
    if scheme == "http":
        options["--path"] = parts.path or "/"
    options |= {
        "--connections": str(connections),
        "--duration": f"{seconds:g}",
        "--size": str(size),
        "--timeout": f"{timeout:g}",
    }
    if mode == "udp-client":
        options["--retry"] = f"{retry:g}"
    if credits is not None:
        options["--credits"] = str(credits)
    return [str(binary), *(item for pair in options.items() for item in pair)]


def server_command(
    binary: Path, mode: Mode, port: int, *, credits: Path | None = None, window: int = SSE_WINDOW
) -> list[str]:
    """The argv of a backend (``ws-echo-server``, ``sse-server``, ``tcp-echo-server`` or
    ``udp-echo-server``) on ``HOST:port``;
    ``credits``: the SSE server's flow-control socket (``window`` events per stream)."""
    argv = [str(binary), "--mode", mode, "--host", HOST, "--port", str(port)]
    if credits is not None:
        argv += ["--credits", str(credits), "--window", str(window)]
    return argv


def run(
    binary: Path,
    mode: Mode,
    url: str,
    *,
    seconds: float,
    connections: int,
    size: int = MESSAGE_BYTES,
    credits: Path | None = None,
) -> StreamResult:
    """One client run for ``seconds`` (bounded by a subprocess timeout)."""
    argv = client_command(
        binary, mode, url, seconds=seconds, connections=connections, size=size, credits=credits
    )
    limit = seconds + 2 * TIMEOUT_SECONDS + 20
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired as error:
        raise StreamloadError(f"streamload did not finish within {limit:.0f} s") from error
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip())[-1000:]
        raise StreamloadError(f"streamload exited {done.returncode}: {tail}")
    return result(parse(done.stdout))
