"""Memory of the real gateway: idle RSS, RSS per idle keep-alive connection, streaming growth.

Runs ``python -m a3s_gateway run CONF --workers 1`` (one process: the RSS read is the whole
gateway) in front of two local upstreams: NGINX (``/`` answers 42 bytes, ``/big`` serves a
1 GiB sparse file) and, for ``/upload``, a sink in this process that reads a request body to
its end, discards it and only then answers ``200`` (NGINX's ``return 200`` answers before the
body is read, and the gateway ends the client connection when a response completes first, so
an upload through it would stop early). The entrypoint allows 20,000 connections and a
10-minute keep-alive idle timeout; access logs are off. Measures, from ``VmRSS`` in
``/proc/PID/status``:

* **idle**: after startup and one proxied request;
* **per idle keep-alive connection**: 5,000 connections (1,000 with ``--quick``) opened with
  plain sockets from a few threads, each having made one request and read its response, kept
  open; ``(RSS with them − idle RSS) / count`` in KiB, and the marginal cost of the second
  half (the first connections may fill heap freed after startup). Then they are closed and
  the RSS is read again once the gateway holds none of them, and once more with as many
  connections opened again: what the gateway kept is allocator slack if the second batch fits
  into it, a leak if the RSS grows again. The harness raises its own ``RLIMIT_NOFILE`` soft
  limit to the hard one; the gateway raises its own;
* **streaming growth**: a 1 GiB response (NGINX → gateway → curl) and a 1 GiB request body
  (curl ``-T`` → gateway → sink), 256 MiB each with ``--quick``; RSS sampled every 100 ms,
  reported as peak − the reading just before, in MiB, with the transfer rate.

Targets (the issue's): idle ≤ 60 MiB, ≤ 16 KiB per idle connection, growth ≤ 20 MiB each
way; SPEC §15's 10,000-connection bound (≤ 200 MiB) is projected from idle RSS plus 10,000
times the larger of the two per-connection costs.
"""

from __future__ import annotations

import contextlib
import json
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Final

from bench.procs import HOST, Child, ChildError, accepted_connections, free_port, rss_kib

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

KIB: Final = 1024
MIB: Final = 1024 * 1024
GIB: Final = 1024 * MIB
SAMPLE_SECONDS: Final = 0.1
START_TIMEOUT_SECONDS: Final = 30.0
IO_TIMEOUT_SECONDS: Final = 30.0
TRANSFER_TIMEOUT_SECONDS: Final = 300.0
OPENER_THREADS: Final = 8
READY_MARKER: Final = "listening entrypoint=web"
BODY_42: Final = b"a3s bench upstream: a 42-byte body, hello\n"
TARGETS: Final = {
    "idle_mib": 60.0,
    "kib_per_idle_connection": 16.0,
    "stream_growth_mib": 20.0,
    "rss_10k_connections_mib": 200.0,
}
_CONTENT_LENGTH: Final = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_EXPECT_CONTINUE: Final = re.compile(rb"\r\nexpect:[ \t]*100-continue", re.IGNORECASE)


# --- upstreams -------------------------------------------------------------------------------


def write_nginx(prefix: Path, port: int, big_file: Path) -> Path:
    """NGINX config: ``/big`` is ``big_file``, everything else a 42-byte ``return 200``."""
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    temp_paths = "\n".join(
        f"    {kind}_temp_path {prefix}/tmp/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    body = BODY_42.decode().replace("\n", "\\n")
    conf = prefix / "nginx.conf"
    conf.write_text(f"""\
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
{temp_paths}
    keepalive_requests 10000000;
    server {{
        listen {HOST}:{port} backlog=4096;
        location = /big {{
            alias {big_file};
            default_type application/octet-stream;
        }}
        location / {{
            default_type text/plain;
            return 200 "{body}";
        }}
    }}
}}
""")
    return conf


class UploadSink:
    """An HTTP/1.1 upstream that reads each request body to its end, then answers ``200 ok``.

    Content-Length bodies only (curl ``-T`` and the gateway's relay of it send one); any
    other request is answered 411 and closed. Keep-alive; one thread per connection; ``close``
    stops accepting and closes every connection. Counts the body bytes it discarded.
    """

    def __init__(self) -> None:
        self.listener = socket.create_server((HOST, 0), backlog=64)
        self.listener.settimeout(IO_TIMEOUT_SECONDS)
        self.port: int = self.listener.getsockname()[1]
        self.received = 0
        self._closed = threading.Event()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._acceptor = threading.Thread(target=self._accept, name="sink-accept", daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(IO_TIMEOUT_SECONDS)
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = bytearray()
        chunk = bytearray(MIB)
        with contextlib.suppress(OSError):
            while True:
                end = buf.find(b"\r\n\r\n")
                while end < 0:
                    count = conn.recv_into(chunk)
                    if not count:
                        return
                    buf += chunk[:count]
                    end = buf.find(b"\r\n\r\n")
                head = bytes(buf[: end + 2])
                del buf[: end + 4]
                length = _CONTENT_LENGTH.search(head)
                if length is None:
                    conn.sendall(b"HTTP/1.1 411 Length Required\r\nConnection: close\r\n\r\n")
                    return
                if _EXPECT_CONTINUE.search(head):
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                remaining = int(length.group(1)) - len(buf)
                self.received += min(len(buf), int(length.group(1)))
                del buf[: int(length.group(1))]
                while remaining > 0:
                    count = conn.recv_into(chunk, min(len(chunk), remaining))
                    if not count:
                        return
                    remaining -= count
                    self.received += count
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):  # wakes the acceptor blocked in accept() (Linux)
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.close()
        self._acceptor.join(timeout=IO_TIMEOUT_SECONDS + 1)


def gateway_config(port: int, nginx_port: int, sink_port: int) -> str:
    """One entrypoint with room for many idle connections, ``/upload`` to the sink."""
    return f"""\
# Generated by bench/micro/memory.py.
entrypoints "web" {{
  address         = "{HOST}:{port}"
  max_connections = 20000
  timeouts {{
    idle = "10m"
  }}
}}

routers "upload" {{
  rule    = "PathPrefix(`/upload`)"
  service = "sink"
}}

routers "all" {{
  rule    = "PathPrefix(`/`)"
  service = "nginx"
}}

services "nginx" {{
  load_balancer {{
    servers = [{{ url = "http://{HOST}:{nginx_port}" }}]
  }}
}}

services "sink" {{
  load_balancer {{
    servers = [{{ url = "http://{HOST}:{sink_port}" }}]
  }}
}}

observability {{
  access_log_enabled = false
}}

shutdown_timeout_secs = 2
"""


# --- clients ---------------------------------------------------------------------------------


def get_once(sock: socket.socket, path: str = "/") -> bytes:
    """Send one keep-alive GET on ``sock`` and read its Content-Length response; the body."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    buf = b""
    while (end := buf.find(b"\r\n\r\n")) < 0:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed before the response head")
        buf += data
    length = _CONTENT_LENGTH.search(buf[: end + 2])
    if not buf.startswith(b"HTTP/1.1 200 ") or length is None:
        raise ConnectionError(f"unexpected response {buf[:80]!r}")
    total = end + 4 + int(length.group(1))
    while len(buf) < total:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed in the response body")
        buf += data
    return buf[end + 4 :]


def open_idle(port: int, count: int) -> tuple[list[socket.socket], int]:
    """``count`` keep-alive connections that each made one request; (sockets, failures)."""

    def open_some(n: int) -> tuple[list[socket.socket], int]:
        opened: list[socket.socket] = []
        failed = 0
        for _ in range(n):
            try:
                sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT_SECONDS)
            except OSError:
                failed += 1
                continue
            try:
                if get_once(sock) != BODY_42:
                    raise ConnectionError("wrong body")
            except (OSError, ConnectionError):
                sock.close()
                failed += 1
                continue
            opened.append(sock)
        return opened, failed

    shares = [count // OPENER_THREADS + (i < count % OPENER_THREADS) for i in range(OPENER_THREADS)]
    with ThreadPoolExecutor(OPENER_THREADS) as pool:
        results = list(pool.map(open_some, shares))
    return [sock for opened, _ in results for sock in opened], sum(f for _, f in results)


class RssSampler:
    """Reads a process's RSS every ``SAMPLE_SECONDS`` in a thread while in a ``with`` block."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            with contextlib.suppress(OSError, ChildError):
                self.samples.append(rss_kib(self.pid))
            if self._stop.wait(SAMPLE_SECONDS):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def settled_rss(pid: int, readings: int = 5) -> int:
    """The median of a few RSS readings ``SAMPLE_SECONDS`` apart, in KiB."""
    samples = []
    for index in range(readings):
        if index:
            time.sleep(SAMPLE_SECONDS)
        samples.append(rss_kib(pid))
    return int(statistics.median(samples))


def wait_connections_closed(pid: int, port: int, timeout: float) -> int:
    """Poll until the gateway holds no connection on ``port``; how many it still holds."""
    deadline = time.monotonic() + timeout
    while (count := accepted_connections(pid, port)) and time.monotonic() < deadline:
        time.sleep(SAMPLE_SECONDS)
    return count


def curl_transfer(argv: list[str], size: int) -> tuple[str, float]:
    """Run curl with ``-w "STATUS SIZE SECONDS"``; (that text, seconds), or raise unless the
    status is 200 and ``size`` bytes went through."""
    result = subprocess.run(
        ["curl", "-sS", "--max-time", str(int(TRANSFER_TIMEOUT_SECONDS)), *argv],
        capture_output=True,
        text=True,
        timeout=TRANSFER_TIMEOUT_SECONDS + 30,
        check=False,
    )
    if result.returncode != 0:
        raise ChildError(f"curl {' '.join(argv)}: exit {result.returncode}: {result.stderr}")
    fields = result.stdout.split()
    if len(fields) != 3 or fields[0] != "200" or int(fields[1]) != size:
        raise ChildError(f"curl {' '.join(argv)}: {result.stdout!r}, expected 200 and {size} B")
    return " ".join(fields), float(fields[2])


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connections:
    """RSS with many idle keep-alive connections open, and after they closed."""

    connections: int
    failed: int
    gateway_connections_with: int
    rss_half_mib: float
    rss_with_mib: float
    kib_per_connection: float
    kib_per_connection_second_half: float
    rss_after_close_mib: float
    rss_reopened_mib: float
    gateway_connections_after_close: int
    rss_10k_connections_projected_mib: float


@dataclass(frozen=True, slots=True)
class Stream:
    """RSS while one large body went through the gateway."""

    bytes: int
    baseline_mib: float
    peak_mib: float
    growth_mib: float
    samples: int
    seconds: float
    mib_per_second: float
    curl: str
    upstream_received: int | None = None


@dataclass(frozen=True, slots=True)
class Memory:
    """Everything ``run`` measured, with the targets and whether each was met."""

    idle_rss_mib: float
    idle_connections: Connections
    stream_download: Stream
    stream_upload: Stream
    final_rss_mib: float
    gateway_log_errors: list[str]
    targets: dict[str, float] = field(default_factory=lambda: dict(TARGETS))

    @property
    def meets(self) -> dict[str, bool]:
        conns = self.idle_connections
        growth = max(self.stream_download.growth_mib, self.stream_upload.growth_mib)
        return {
            "idle_mib": self.idle_rss_mib <= TARGETS["idle_mib"],
            "kib_per_idle_connection": max(
                conns.kib_per_connection, conns.kib_per_connection_second_half
            )
            <= TARGETS["kib_per_idle_connection"],
            "stream_growth_mib": growth <= TARGETS["stream_growth_mib"],
            "rss_10k_connections_mib": conns.rss_10k_connections_projected_mib
            <= TARGETS["rss_10k_connections_mib"],
        }

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "meets": self.meets}


def _mib(kib: float) -> float:
    return round(kib / KIB, 1)


# --- the run ---------------------------------------------------------------------------------


def stream_growth(pid: int, transfer: Callable[[], tuple[str, float]], size: int) -> Stream:
    """RSS peak − baseline while ``transfer`` runs, with its result and rate."""
    baseline = settled_rss(pid, readings=3)
    with RssSampler(pid) as sampler:
        outcome, seconds = transfer()
    peak = max([baseline, *sampler.samples])
    return Stream(
        bytes=size,
        baseline_mib=_mib(baseline),
        peak_mib=_mib(peak),
        growth_mib=round((peak - baseline) / KIB, 2),
        samples=len(sampler.samples),
        seconds=round(seconds, 2),
        mib_per_second=round(size / MIB / seconds, 1) if seconds else 0.0,
        curl=outcome,
    )


def raise_nofile(wanted: int) -> int:
    """Raise our RLIMIT_NOFILE soft limit to the hard limit if below ``wanted``; the result."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


@contextlib.contextmanager
def running(
    name: str, argv: list[str], log: Path, port: int, marker: str | None
) -> Iterator[Child]:
    """Start a child, wait until it is ready, and stop it (by PID) on the way out."""
    child = Child(name, argv, log_path=log)
    try:
        child.wait_ready(port, marker=marker, timeout=START_TIMEOUT_SECONDS)
        yield child
    finally:
        child.stop()


def measure_connections(pid: int, port: int, count: int, idle_kib: int) -> Connections:
    """RSS with ``count`` idle keep-alive connections open, then after closing them.

    The connections are opened in two halves with a reading after each: the first ones may
    fit into heap the gateway freed after startup (config parsing), so the second half's
    *marginal* cost is reported too.
    """
    first, failed_first = open_idle(port, count // 2)
    try:
        half_kib = settled_rss(pid)
        second, failed_second = open_idle(port, count - count // 2)
        try:
            with_kib = settled_rss(pid)
            held = accepted_connections(pid, port)
        finally:
            for sock in second:
                sock.close()
    finally:
        for sock in first:
            sock.close()
    left_open = wait_connections_closed(pid, port, timeout=30)
    after_kib = settled_rss(pid)
    again, _ = open_idle(port, count)  # a leak would grow the RSS again; slack is reused
    try:
        again_kib = settled_rss(pid)
    finally:
        for sock in again:
            sock.close()
    left_open = max(left_open, wait_connections_closed(pid, port, timeout=30))
    opened = len(first) + len(second)
    if not second:
        raise ChildError(f"no idle connection could be opened ({failed_first} failed)")
    per_kib = (with_kib - idle_kib) / opened
    marginal = (with_kib - half_kib) / len(second)
    return Connections(
        connections=opened,
        failed=failed_first + failed_second,
        gateway_connections_with=held,
        rss_half_mib=_mib(half_kib),
        rss_with_mib=_mib(with_kib),
        kib_per_connection=round(per_kib, 2),
        kib_per_connection_second_half=round(marginal, 2),
        rss_after_close_mib=_mib(after_kib),
        rss_reopened_mib=_mib(again_kib),
        gateway_connections_after_close=left_open,
        rss_10k_connections_projected_mib=_mib(idle_kib + 10_000 * max(per_kib, marginal)),
    )


def measure_streams(pid: int, port: int, sink: UploadSink, big: Path) -> tuple[Stream, Stream]:
    """RSS growth while ``big`` streams down (NGINX → curl) and up (curl → sink)."""
    size = big.stat().st_size
    url = f"http://{HOST}:{port}"
    download = ["-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}"]
    down = stream_growth(pid, lambda: curl_transfer([*download, f"{url}/big"], size), size)
    upload = ["-T", str(big), "-o", "/dev/null", "-w", "%{http_code} %{size_upload} %{time_total}"]
    before = sink.received
    up = stream_growth(pid, lambda: curl_transfer([*upload, f"{url}/upload"], size), size)
    return down, replace(up, upstream_received=sink.received - before)


def measure(work: Path, *, connections: int, size: int) -> Memory:
    """Start NGINX, the sink and the gateway in ``work``; take every reading; stop them."""
    work.chmod(0o755)  # NGINX's workers run as an unprivileged user and read ``big``
    big = work / "big"
    with big.open("wb") as sparse:
        sparse.truncate(size)
    big.chmod(0o644)
    nginx_port, port = free_port(), free_port()
    prefix = work / "nginx"
    conf = write_nginx(prefix, nginx_port, big)
    nginx = ["nginx", "-c", str(conf), "-p", str(prefix), "-e", str(prefix / "error.log")]
    sink = UploadSink()
    try:
        gateway_conf = work / "gateway.hcl"
        gateway_conf.write_text(gateway_config(port, nginx_port, sink.port))
        gateway_argv = [sys.executable, "-m", "a3s_gateway", "run", str(gateway_conf)]
        gateway_argv += ["--workers", "1", "--log-level", "info"]
        with (
            running("nginx", nginx, work / "nginx.out", nginx_port, None),
            running("gateway", gateway_argv, work / "gateway.log", port, READY_MARKER) as gateway,
        ):
            pid = gateway.pid
            with socket.create_connection((HOST, port), timeout=IO_TIMEOUT_SECONDS) as sock:
                if get_once(sock) != BODY_42:
                    raise ChildError("the first request through the gateway failed")
            idle_kib = settled_rss(pid)
            conns = measure_connections(pid, port, connections, idle_kib)
            gateway.check_running()
            down, up = measure_streams(pid, port, sink, big)
            gateway.check_running()
            final_kib = rss_kib(pid)
            errors = [
                line
                for line in gateway.log_text().splitlines()
                if " ERROR " in line or "Traceback" in line
            ]
    finally:
        sink.close()
    return Memory(
        idle_rss_mib=_mib(idle_kib),
        idle_connections=conns,
        stream_download=down,
        stream_upload=up,
        final_rss_mib=_mib(final_kib),
        gateway_log_errors=errors[:20],
    )


def run(*, quick: bool = False) -> Memory:
    """All three measurements (smaller with ``quick``)."""
    connections = 1000 if quick else 5000
    soft = raise_nofile(connections + 1000)
    connections = min(connections, soft - 200)
    with tempfile.TemporaryDirectory(prefix="a3s-bench-memory-") as temp:
        return measure(Path(temp), connections=connections, size=256 * MIB if quick else GIB)


def print_report(result: Memory) -> None:
    """The readings as a table with the targets."""
    conns, meets = result.idle_connections, result.meets

    def line(label: str, value: float, unit: str, target: str, key: str, note: str = "") -> None:
        verdict = "ok" if meets[key] else "MISSED"
        print(f"{label:<34}{value:>9} {unit:<4}{target:>11}  {verdict:<7}{note}")

    line("idle RSS", result.idle_rss_mib, "MiB", "≤ 60 MiB", "idle_mib")
    line(
        "RSS per idle keep-alive connection",
        conns.kib_per_connection,
        "KiB",
        "≤ 16 KiB",
        "kib_per_idle_connection",
        f"{conns.connections} open ({conns.failed} failed): {conns.rss_with_mib} MiB; second "
        f"half {conns.kib_per_connection_second_half} KiB each; {conns.rss_after_close_mib} MiB "
        f"after closing, {conns.rss_reopened_mib} MiB with as many again",
    )
    line(
        "RSS at 10k connections (projected)",
        conns.rss_10k_connections_projected_mib,
        "MiB",
        "≤ 200 MiB",
        "rss_10k_connections_mib",
    )
    for label, row in (
        ("response", result.stream_download),
        ("request body", result.stream_upload),
    ):
        line(
            f"RSS growth, streaming {label}",
            row.growth_mib,
            "MiB",
            "≤ 20 MiB",
            "stream_growth_mib",
            f"{row.bytes // MIB} MiB at {row.mib_per_second} MiB/s",
        )
    for error in result.gateway_log_errors:
        print(f"  gateway log: {error}")


def main() -> None:
    result = run(quick="--quick" in sys.argv[1:])
    print_report(result)
    if "--json" in sys.argv[1:]:
        print(json.dumps(result.to_json(), indent=2))


if __name__ == "__main__":
    main()
