"""The trial loop: start the upstream, then per profile start its products and measure them.

Per profile every product is started once (all on free loopback ports, in front of the one
upstream), checked with one real request, then measured ``trials`` times; in each trial every
product gets a warm-up run (discarded) and a measured run, in the profile's product order on
even trials and reversed on odd ones. The load tool is wrk, or h2load for the HTTP/2 profiles
(``plan.Profile.http2``), whose check request is an HTTP/2 one (``h2check``); the upstream
NGINX also serves the gRPC backend when a gRPC profile is selected. The streaming profiles
(``plan.Profile.streaming``) are driven by ``streamload``, built with gcc at the start of a run
that has one; its echo and event servers are their backends, started beside the upstream, and
their check requests are ``streamcheck``'s (one WebSocket echo, one SSE event). The TCP and
UDP echo profiles (``plan.Profile.layer4``) work the same way with streamload's TCP and UDP
clients and echo servers, NGINX's ``stream`` module (``nginx.write_stream_proxy``) and the
gateway's layer-4 config (``gateway.layer4_config_text``); a UDP product is ready when a
datagram sent to it comes back (no TCP connect can tell), and its trials also record the
datagrams lost and late. Around each measured run
the CPU time of the product's process tree is read from ``/proc`` (``cputime``), giving its CPU
µs per request. A product that fails to start, fails its check or dies is recorded with the
reason and skipped; the run goes on. Every process is stopped by PID when its profile (or the
run) ends, also on errors and Ctrl-C.
"""

from __future__ import annotations

import http.client
import shutil
import ssl
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, TypeAlias

from bench.harness import (
    cputime,
    gateway,
    h2check,
    h2load,
    nginx,
    plan,
    streamcheck,
    streamload,
    wrk,
)
from bench.harness.environment import load_average
from bench.procs import HOST, Child, ChildError, Children, free_port

if TYPE_CHECKING:
    from collections.abc import Callable

    from bench.harness.peerlink import Peers

START_TIMEOUT: Final = 60.0
PREFLIGHT_TIMEOUT: Final = 10.0
#: The gRPC call's fields (h2load's and the check request's).
GRPC_HEADERS: Final = (("content-type", "application/grpc"), ("te", "trailers"))
#: One load run: ``(url, seconds)`` → its result (wrk's or h2load's).
Drive: TypeAlias = "Callable[[str, float], wrk.WrkResult]"


@dataclass(frozen=True, slots=True)
class Settings:
    """Load shape of one run."""

    trials: int
    duration: float
    warmup: float
    connections: int = 64
    threads: int = 2


@dataclass(slots=True)
class Trial:
    """One measured load run (wrk or h2load) of one product. Latencies in milliseconds.

    ``cpu_s``: CPU seconds (user + system) of the product's process tree during the measured
    run; ``cpu_us_per_request``: that ÷ ``requests`` in µs; ``cpu_cores``: that ÷ the run's
    duration (1.0 = one core busy throughout); ``cpu_processes``: how many processes the tree
    had. All None for ``direct`` (no process of its own) or when the tree could not be read.
    In the streaming and echo profiles also ``load_tool_cores`` (streamload's own CPU ÷ the
    duration) and ``backend_cores`` (the streamload backend's, the same way): near 1.0 means
    that one was the limit rather than the product. In the UDP profile ``lost`` (datagrams
    given up after streamload's retry time, then replaced by the next) and ``late`` (their
    echoes that came after that); None elsewhere.
    """

    trial: int
    position: int
    rps: float
    requests: int
    duration_s: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]
    error_total: int
    warmup_requests: int
    warmup_errors: int
    load_average: list[float]
    cpu_s: float | None = None
    cpu_us_per_request: float | None = None
    cpu_cores: float | None = None
    cpu_processes: int | None = None
    load_tool_cores: float | None = None
    backend_cores: float | None = None
    lost: int | None = None
    late: int | None = None


@dataclass(slots=True)
class ProductRun:
    """A product in one profile: how it was started and its trials (or why it has none)."""

    name: str
    kind: str
    command: list[str]
    workers: int | None
    status: str = "ok"
    reason: str | None = None
    config: str | None = None  # the generated config (long router tables abridged)
    trials: list[Trial] = field(default_factory=list)


@dataclass(slots=True)
class ProfileRun:
    """A profile's request and the products measured with it."""

    profile: plan.Profile
    host_header: str | None
    path: str
    gateway_workers_n: int
    products: list[ProductRun] = field(default_factory=list)


@dataclass(slots=True)
class _Live:
    run: ProductRun
    port: int
    child: Child | None


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def tls_pair(directory: Path) -> tuple[Path, Path]:
    """A certificate chain and key for ``HOST`` from a CA made for this run (trustme, a test
    dependency the bench level installs), written into ``directory``."""
    import trustme  # only the HTTPS profile needs it

    authority = trustme.CA()
    issued = authority.issue_cert(HOST, "localhost")
    chain, key = directory / "tls-chain.pem", directory / "tls-key.pem"
    issued.private_key_pem.write_to_path(str(key))
    chain.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    return chain, key


def _connection(port: int, profile: plan.Profile) -> http.client.HTTPConnection:
    if not profile.tls:
        return http.client.HTTPConnection(HOST, port, timeout=PREFLIGHT_TIMEOUT)
    context = ssl.create_default_context()
    context.check_hostname = False  # the run's own certificate; only the proxy is measured
    context.verify_mode = ssl.CERT_NONE
    return http.client.HTTPSConnection(HOST, port, timeout=PREFLIGHT_TIMEOUT, context=context)


def preflight(port: int, profile: plan.Profile, host: str | None, path: str) -> str | None:
    """One real request; None when it answers 200 with the expected body size, else why not."""
    connection = _connection(port, profile)
    headers = {"Host": host} if host else {}
    headers.update(_request_headers(profile))
    body = b"p" * profile.body_bytes if profile.body_bytes else None
    try:
        connection.request(profile.method, path, body=body, headers=headers)
        response = connection.getresponse()
        content = response.read()
    except (OSError, http.client.HTTPException) as error:
        return f"check request failed: {type(error).__name__}: {error}"
    finally:
        connection.close()
    if response.status != 200 or len(content) != profile.response_bytes:
        return (
            f"check request {profile.method} {path} answered {response.status} with "
            f"{len(content)} bytes (expected 200 with {profile.response_bytes}): {content[:80]!r}"
        )
    return None


class Runner:
    """Runs the selected profiles; ``run`` returns what was measured."""

    def __init__(
        self,
        settings: Settings,
        profiles: list[plan.Profile],
        selected_products: list[str],
        peers: Peers,
    ) -> None:
        self.settings = settings
        self.profiles = profiles
        self.selected = selected_products
        self.peers = peers
        self.upstream_port = 0
        self.upstream_config = ""
        #: The gRPC backend's h2c port on the upstream NGINX (0 when no gRPC profile runs).
        self.grpc_port = 0
        #: The streaming and echo profiles' tool (built when one runs) and its backends' ports
        #: (0: none).
        self.streamload: Path | None = None
        self.ws_port = 0
        self.sse_port = 0
        self.tcp_port = 0
        self.udp_port = 0
        #: The SSE backend's flow-control socket (streamload ``--credits``).
        self.sse_credits: Path | None = None
        #: The streamload backends' command lines, by mode (for the run's record).
        self.stream_backends: dict[str, list[str]] = {}
        self._stream_children: dict[str, Child] = {}
        #: The streaming backend of the profile being measured (its CPU is recorded too).
        self._backend: Child | None = None
        self._unit = "req"  # what the profile being measured counts (`plan.Profile.unit`)
        self._udp = False  # the profile being measured is UDP's (its trials count losses)

    def run(self) -> list[ProfileRun]:
        work = Path(tempfile.mkdtemp(prefix="a3s-bench-"))
        # NGINX workers run as an unprivileged user when the harness is root: they must be able
        # to reach the 1 MiB file and the temp directories below this 0700 directory.
        work.chmod(0o755)
        try:
            self._prepare_peers()
            if any(profile.uses_streamload for profile in self.profiles):
                self.streamload = streamload.build(work / "streamload")
                say(f"built {self.streamload} from {streamload.SOURCE.name}")
            with Children() as scope:
                self._start_upstream(work / "upstream", scope)
                return [self._profile(profile, work / profile.name) for profile in self.profiles]
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _prepare_peers(self) -> None:
        """Make the peers' venvs before any load starts (the first time may take minutes)."""
        wanted = {
            name
            for profile in self.profiles
            for name in plan.products_for(profile, self.peers.names, self.selected)
            if name in self.peers.names
        }
        for name in sorted(wanted):
            say(f"preparing peer {name}")
            if self.peers.ensure(name):
                say(f"   {name} {self.peers.versions.get(name, '')}")
            else:
                say(f"   {name}: unavailable: {self.peers.unavailable.get(name)}")

    def _start_upstream(self, prefix: Path, scope: Children) -> None:
        prefix.mkdir(parents=True)
        self.upstream_port = free_port()
        if any(profile.protocol == "grpc" for profile in self.profiles):
            self.grpc_port = free_port()
        conf = nginx.write_upstream(prefix, self.upstream_port, self.grpc_port or None)
        self.upstream_config = conf.read_text()
        nginx.check_config(conf, prefix)
        child = scope.start(
            Child("upstream", nginx.command(conf, prefix), log_path=prefix / "out.log")
        )
        child.wait_for_port(self.upstream_port, timeout=START_TIMEOUT)
        if self.grpc_port:
            child.wait_for_port(self.grpc_port, timeout=START_TIMEOUT)
            say(f"gRPC backend (nginx, h2c) on {HOST}:{self.grpc_port}")
        say(f"upstream nginx on {HOST}:{self.upstream_port} (pid {child.pid})")
        protocols = {profile.protocol for profile in self.profiles}
        if "websocket" in protocols:
            self.ws_port = self._start_backend("ws-echo-server", prefix, scope)
        if "sse" in protocols:
            self.sse_credits = prefix / "sse-credits.sock"
            self.sse_port = self._start_backend("sse-server", prefix, scope)
        if "tcp" in protocols:
            self.tcp_port = self._start_backend("tcp-echo-server", prefix, scope)
        if "udp" in protocols:
            self.udp_port = self._start_backend("udp-echo-server", prefix, scope)

    def _start_backend(self, mode: streamload.Mode, prefix: Path, scope: Children) -> int:
        """A ``streamload`` server (a streaming or echo profile's backend); its port."""
        assert self.streamload is not None  # built by `run` when such a profile runs
        port = free_port(udp=mode == "udp-echo-server")
        credits = self.sse_credits if mode == "sse-server" else None
        argv = streamload.server_command(self.streamload, mode, port, credits=credits)
        self.stream_backends[mode] = argv
        child = scope.start(Child(mode, argv, log_path=prefix / f"{mode}.log"))
        self._stream_children[BACKEND_PROTOCOLS[mode]] = child
        wait_ready(child, port, udp=mode == "udp-echo-server")
        say(f"{mode} (streamload) on {HOST}:{port} (pid {child.pid})")
        return port

    def backend_port(self, profile: plan.Profile) -> int:
        """Where a profile's products send their requests: the upstream, the gRPC backend or a
        streamload backend."""
        ports = {
            "grpc": self.grpc_port,
            "websocket": self.ws_port,
            "sse": self.sse_port,
            "tcp": self.tcp_port,
            "udp": self.udp_port,
        }
        return ports.get(profile.protocol, self.upstream_port)

    def _driver(self, profile: plan.Profile, table: gateway.Routing, work: Path) -> Drive:
        """The load runs of ``profile``: streamload's client of its protocol, wrk with the
        profile's script, or h2load (whose profiles have one router: no ``Host`` to set)."""
        settings = self.settings
        if profile.uses_streamload:
            binary = self.streamload
            assert binary is not None  # built by `run` when such a profile runs
            mode = CLIENT_MODES[profile.protocol]
            credits = self.sse_credits if profile.protocol == "sse" else None
            return lambda url, seconds: streamload.run(
                binary,
                mode,
                url,
                seconds=seconds,
                connections=settings.connections,
                size=profile.body_bytes or streamload.MESSAGE_BYTES,
                credits=credits,
            )
        if profile.http2:
            request = _h2load_request(profile, work / f"{profile.name}.grpc")
            log = work / f"{profile.name}.h2load.tsv"
            return lambda url, seconds: h2load.run(
                url, request, seconds=seconds, threads=settings.threads, log=log
            )
        script = wrk.write_script(
            work / f"{profile.name}.lua",
            method=profile.method,
            body_bytes=profile.body_bytes,
            host=table.host,
            headers=_request_headers(profile),
        )
        return lambda url, seconds: wrk.run(
            url,
            script=script,
            seconds=seconds,
            connections=settings.connections,
            threads=settings.threads,
        )

    def _profile(self, profile: plan.Profile, work: Path) -> ProfileRun:
        table = gateway.routing(profile.routers, profile.path)
        result = ProfileRun(profile, table.host, table.path, gateway.worker_count(0))
        self._unit = profile.unit
        self._udp = profile.protocol == "udp"
        self._backend = self._stream_children.get(profile.protocol)
        products = plan.products_for(profile, self.peers.names, self.selected)
        say(f"== {profile.name}: {profile.description}; products: {', '.join(products)}")
        drive = self._driver(profile, table, work.parent)
        work.mkdir(parents=True, exist_ok=True)
        pair = tls_pair(work) if profile.tls else None
        with Children() as scope:
            live: list[_Live] = []
            for name in products:
                entry = self._start(name, profile, table, work / name, scope, pair)
                result.products.append(entry.run)
                if entry.run.status == "ok":
                    reason = _check(entry, profile, table)
                    if reason is not None:
                        self._fail(entry, f"preflight: {reason}")
                    else:
                        live.append(entry)
            for trial in range(self.settings.trials):
                order = live if trial % 2 == 0 else list(reversed(live))
                for position, entry in enumerate(order):
                    if entry.run.status == "ok":
                        url = f"{_scheme(profile, entry)}://{HOST}:{entry.port}{table.path}"
                        self._measure(entry, drive, url, trial, position)
        return result

    def _start(
        self,
        name: str,
        profile: plan.Profile,
        table: gateway.Routing,
        work: Path,
        scope: Children,
        tls: tuple[Path, Path] | None = None,
    ) -> _Live:
        work.mkdir(parents=True)
        if name == plan.DIRECT:
            run = ProductRun(name, "direct", [], None)
            return _Live(run, self.backend_port(profile), None)
        port = free_port(udp=profile.protocol == "udp")
        if name == plan.NGINX:
            return self._start_nginx(profile, port, work, scope, tls)
        if name in plan.GATEWAY_WORKERS:
            return self._start_gateway(name, profile, table, port, work, scope, tls)
        run = ProductRun(name, "peer", [], None)
        if not self.peers.ensure(name):
            run.status = "unavailable"
            run.reason = self.peers.unavailable.get(name, "unavailable")
            return _Live(run, port, None)
        try:
            run.command = self.peers.command(
                name, listen_port=port, upstream_port=self.upstream_port
            )
        except Exception as error:  # the peer module's failure is the peer's, not the run's
            return self._fail(_Live(run, port, None), f"peer_command: {error}")
        return self._spawn(run, port, work, scope, marker=None, env=None)

    def _start_nginx(
        self,
        profile: plan.Profile,
        port: int,
        work: Path,
        scope: Children,
        tls: tuple[Path, Path] | None,
    ) -> _Live:
        if profile.layer4:
            return self._start_stream_nginx(profile, port, work, scope)
        conf = nginx.write_proxy(
            work,
            port,
            self.backend_port(profile),
            profile.nginx_workers,
            tls,
            http2=profile.http2,
            grpc=profile.protocol == "grpc",
            stream=profile.protocol if profile.streaming else None,
        )
        argv = nginx.command(conf, work)
        run = ProductRun(plan.NGINX, "nginx", argv, _nginx_workers(profile.nginx_workers))
        run.config = conf.read_text()
        try:
            nginx.check_config(conf, work)
        except RuntimeError as error:
            return self._fail(_Live(run, port, None), str(error))
        return self._spawn(run, port, work, scope, marker=None, env=None)

    def _start_stream_nginx(
        self, profile: plan.Profile, port: int, work: Path, scope: Children
    ) -> _Live:
        """NGINX's ``stream`` proxy of a TCP or UDP echo profile."""
        transport: Literal["tcp", "udp"] = "udp" if profile.protocol == "udp" else "tcp"
        run = ProductRun(plan.NGINX, "nginx", [], _nginx_workers(profile.nginx_workers))
        try:
            conf = nginx.write_stream_proxy(
                work, port, self.backend_port(profile), profile.nginx_workers, transport
            )
            run.command = nginx.command(conf, work)
            run.config = conf.read_text()
            nginx.check_config(conf, work)
        except RuntimeError as error:
            return self._fail(_Live(run, port, None), str(error))
        return self._spawn(run, port, work, scope, marker=None, env=None, udp=transport == "udp")

    def _start_gateway(
        self,
        name: str,
        profile: plan.Profile,
        table: gateway.Routing,
        port: int,
        work: Path,
        scope: Children,
        tls: tuple[Path, Path] | None,
    ) -> _Live:
        workers = plan.GATEWAY_WORKERS[name]
        config = work / "gateway.hcl"
        if profile.layer4:
            text = gateway.layer4_config_text(profile.protocol, port, self.backend_port(profile))
        else:
            text = gateway.config_text(
                port,
                self.backend_port(profile),
                table,
                profile.middlewares,
                observability=profile.observability,
                log=str(work / "access.log"),
                tls=tls,
                scheme=upstream_scheme(profile),
            )
        config.write_text(text)
        argv = gateway.command(config, workers)
        run = ProductRun(name, "a3s_gateway", argv, gateway.worker_count(workers))
        run.config = _abridged(text)
        # The HTTP entrypoint's readiness line names it "web"; a layer-4 product is ready when
        # its port answers (a TCP connect, a UDP echo).
        return self._spawn(
            run,
            port,
            work,
            scope,
            marker=None if profile.layer4 else gateway.ready_marker(workers),
            env=gateway.environment(),
            udp=profile.protocol == "udp",
        )

    def _spawn(
        self,
        run: ProductRun,
        port: int,
        work: Path,
        scope: Children,
        *,
        marker: str | None,
        env: dict[str, str] | None,
        udp: bool = False,
    ) -> _Live:
        try:
            child = scope.start(Child(run.name, run.command, log_path=work / "out.log", env=env))
        except OSError as error:
            return self._fail(_Live(run, port, None), f"could not start: {error}")
        entry = _Live(run, port, child)
        try:
            if marker is not None:
                child.wait_until(
                    lambda: child.log_contains(marker),
                    timeout=START_TIMEOUT,
                    what=f"log line {marker!r}",
                )
            wait_ready(child, port, udp=udp)
        except ChildError as error:
            return self._fail(entry, str(error))
        say(f"   {run.name} on {HOST}:{port} (pid {child.pid})")
        return entry

    def _fail(self, entry: _Live, reason: str) -> _Live:
        entry.run.status = "failed"
        entry.run.reason = reason
        if entry.child is not None:
            entry.child.stop()  # no idle process of a failed product beside the measured ones
        say(f"   {entry.run.name}: FAILED: {reason}")
        return entry

    def _measure(
        self,
        entry: _Live,
        drive: Drive,
        url: str,
        trial: int,
        position: int,
    ) -> None:
        settings = self.settings
        backend = self._backend
        try:
            warm = drive(url, settings.warmup)
            cpu_before = cputime.sample(entry.child.pid) if entry.child is not None else None
            backend_before = cputime.sample(backend.pid) if backend is not None else None
            result = drive(url, settings.duration)
        except wrk.WrkError as error:  # h2load's and streamload's errors are WrkErrors too
            self._fail(entry, f"trial {trial + 1}: {error}")
            return
        cpu_after = cputime.sample(entry.child.pid) if entry.child is not None else None
        backend_after = cputime.sample(backend.pid) if backend is not None else None
        record = Trial(
            trial=trial + 1,
            position=position + 1,
            rps=round(result.rps, 1),
            requests=result.requests,
            duration_s=round(result.duration_us / 1e6, 3),
            mean_ms=round(result.mean_us / 1000, 3),
            p50_ms=result.p50_us / 1000,
            p90_ms=result.p90_us / 1000,
            p99_ms=result.p99_us / 1000,
            max_ms=result.max_us / 1000,
            errors=result.errors,
            error_total=result.error_count,
            warmup_requests=warm.requests,
            warmup_errors=warm.error_count,
            load_average=load_average(),
        )
        if cpu_before is not None and cpu_after is not None:
            cpu = cputime.seconds(cpu_before, cpu_after)
            record.cpu_s = round(cpu, 3)
            record.cpu_processes = len(cpu_after.pids)
            if result.requests:
                record.cpu_us_per_request = round(cpu * 1e6 / result.requests, 1)
            if result.duration_us:
                record.cpu_cores = round(cpu * 1e6 / result.duration_us, 3)
        if result.duration_us:
            if isinstance(result, streamload.StreamResult):
                record.load_tool_cores = round(result.load_cpu_us / result.duration_us, 3)
                if self._udp:
                    record.lost, record.late = result.lost, result.late
            if backend_before is not None and backend_after is not None:
                backend_s = cputime.seconds(backend_before, backend_after)
                record.backend_cores = round(backend_s * 1e6 / result.duration_us, 3)
        entry.run.trials.append(record)
        errors = f", {record.error_total} errors {record.errors}" if record.error_total else ""
        if record.lost or record.late:
            errors += f", {record.lost} lost, {record.late} late"
        unit = self._unit
        cpu_text = (
            f"  CPU {record.cpu_us_per_request:.0f} µs/{unit} ({record.cpu_cores:.2f} cores)"
            if record.cpu_us_per_request is not None and record.cpu_cores is not None
            else ""
        )
        say(
            f"   trial {trial + 1} {entry.run.name:<16} {record.rps:>10.0f} {unit}/s"
            f"  p50 {record.p50_ms:.2f} ms  p99 {record.p99_ms:.2f} ms{cpu_text}"
            f"{_side_cores(record)}{errors}"
        )
        if entry.child is not None and not entry.child.alive():
            self._fail(
                entry,
                f"exited with {entry.child.returncode} during trial {trial + 1}:\n"
                + entry.child.log_tail(),
            )


def _side_cores(record: Trial) -> str:
    """``  (load tool … cores, backend … cores)`` of a streaming trial (else nothing)."""
    parts = [
        f"{name} {cores:.2f} cores"
        for name, cores in (
            ("load tool", record.load_tool_cores),
            ("backend", record.backend_cores),
        )
        if cores is not None
    ]
    return f"  ({', '.join(parts)})" if parts else ""


#: The client mode of each streamload profile protocol, and the protocol of each backend mode.
CLIENT_MODES: Final[dict[str, streamload.Mode]] = {
    "websocket": "ws-client",
    "sse": "sse-client",
    "tcp": "tcp-client",
    "udp": "udp-client",
}
BACKEND_PROTOCOLS: Final[dict[streamload.Mode, str]] = {
    "ws-echo-server": "websocket",
    "sse-server": "sse",
    "tcp-echo-server": "tcp",
    "udp-echo-server": "udp",
}


def wait_ready(child: Child, port: int, *, udp: bool = False) -> None:
    """Return once ``child`` serves on ``port``: a TCP connect succeeds or, with ``udp``, a
    datagram comes back (``streamcheck.udp_answers``). ``ChildError`` if it exits first or
    ``START_TIMEOUT`` passes."""
    if not udp:
        child.wait_for_port(port, timeout=START_TIMEOUT)
        return
    child.wait_until(
        lambda: streamcheck.udp_answers(port), timeout=START_TIMEOUT, what=f"UDP port {port} echoes"
    )


def _scheme(profile: plan.Profile, entry: _Live) -> str:
    """The scheme of the load tool's URL: ``tcp``/``udp`` for the echo profiles, ``https``
    for a TLS product, else ``http``."""
    if profile.layer4:
        return profile.protocol
    return "https" if profile.tls and entry.child is not None else "http"


def _nginx_workers(value: str) -> int:
    return gateway.worker_count(0) if value == "auto" else int(value)


def _abridged(text: str, keep: int = 60) -> str:
    lines = text.splitlines()
    if len(lines) <= 2 * keep:
        return text
    skipped = len(lines) - 2 * keep
    return "\n".join([*lines[:keep], f"# ... {skipped} lines left out ...", *lines[-keep:]])


def upstream_scheme(profile: plan.Profile) -> str:
    """The scheme of the gateway's server URL for ``profile``: ``h2c`` for the gRPC backend,
    ``ws`` for the WebSocket echo backend, else ``http`` (the SSE backend included)."""
    return {"grpc": "h2c", "websocket": "ws"}.get(profile.protocol, "http")


def _check(entry: _Live, profile: plan.Profile, table: gateway.Routing) -> str | None:
    """The product's check request: HTTP/1.1 (``preflight``), HTTP/2 (``h2check``), or a
    WebSocket echo, SSE event, TCP echo or UDP echo (``streamcheck``)."""
    if profile.protocol == "tcp":
        return streamcheck.tcp(entry.port, size=profile.body_bytes)
    if profile.protocol == "udp":
        return streamcheck.udp(entry.port, size=profile.body_bytes)
    if profile.protocol == "websocket":
        return streamcheck.websocket(entry.port, table.path, size=profile.body_bytes)
    if profile.protocol == "sse":
        return streamcheck.sse(entry.port, table.path)
    if not profile.http2:
        return preflight(entry.port, profile, table.host, table.path)
    grpc = profile.protocol == "grpc"
    fields = tuple(_request_headers(profile).items()) + (GRPC_HEADERS if grpc else ())
    request = h2check.Request(profile.method, table.path, fields, nginx.GRPC_FRAME if grpc else b"")
    reason = h2check.check(
        entry.port,
        request,
        tls=profile.tls and entry.child is not None,  # `direct` is the plain backend
        size=profile.response_bytes,
        grpc_body=nginx.GRPC_FRAME if grpc else None,
    )
    if reason and grpc and entry.run.kind == "a3s_gateway" and "grpc-status '14'" in reason:
        reason += " (UNAVAILABLE: the gateway could not call its h2c:// server, the gRPC backend)"
    return reason


def _h2load_request(profile: plan.Profile, data: Path) -> h2load.Request:
    """h2load's request for ``profile``; a gRPC call's message is written to ``data``."""
    fields = tuple(_request_headers(profile).items())
    if profile.protocol != "grpc":
        return h2load.Request(fields, None, profile.response_bytes)
    data.write_bytes(nginx.GRPC_FRAME)
    return h2load.Request(fields + GRPC_HEADERS, data, profile.response_bytes)


def _request_headers(profile: plan.Profile) -> dict[str, str]:
    """Extra request fields of a profile: a valid bearer token when its chain has ``jwt``."""
    if "auth-jwt" in profile.middlewares:
        return {"Authorization": f"Bearer {gateway.bearer_token()}"}
    return {}
