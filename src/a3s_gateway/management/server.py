"""The management API listener (SPEC §9.6, §3.13): a small, bounded HTTP/1.1 server (trio + h11).

Ring 1. The endpoint logic is ``management/api.py`` (Ring 0); this module owns the
socket, TLS, the HTTP/1.1 exchange and the token variable, and adapts ``a3s_gateway.app.Gateway``
to the API's ``GatewayView`` (``GatewayAdapter``).

Use: ``listeners = await open_management_listener(settings)`` (bind errors are ``StartError``
naming the management address; ``enabled = false`` binds nothing), then
``await nursery.start(ManagementServer(settings, view).serve, listeners)``. ``serve`` owns the
listeners from then on and closes them when it ends.

Nurseries: ``serve`` owns one nursery holding an accept loop per listener and a task per
connection. At most ``ServerLimits.max_connections`` (64) connections are served at once; one
more is accepted and closed at once. Cancel ``serve``'s scope to stop; connections end with it.

Deadlines (``ServerLimits``): the TLS handshake within ``head_timeout`` (10 s) of the accept,
then the first request head within ``head_timeout``; on a kept-alive connection the next
request's first byte within ``idle_timeout`` (60 s), then its head within ``head_timeout``;
every body read and the response write within ``head_timeout``. A head over
``max_head_bytes`` (16 KiB) is answered 431, a body over ``max_body_bytes`` (1 MiB) 413
(bodies are read and discarded: no endpoint takes one), a malformed request 400; each then
closes the connection. A slow head is closed without an answer.

Errors in one connection (a broken peer, a TLS failure, even a bug in an endpoint, answered 500
and logged) end that connection only; nothing here raises into the gateway once ``serve`` has
started. The bearer token is read from the environment when the server is built and on
``update``; it is never logged or answered (the policy keeps its SHA-256 only).
"""

from __future__ import annotations

import errno
import inspect
import logging
import os
import ssl
import time
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, Final

import h11
import trio

from a3s_gateway.errors import ReloadError, StartError
from a3s_gateway.management.api import (
    AccessPolicy,
    ApiRequest,
    ApiResponse,
    Clock,
    ListenerInfo,
    handle,
    json_response,
    request_path,
)
from a3s_gateway.routing.request import parse_peer
from a3s_gateway.scaling.loop import (
    rollout_action_answer,
    rollout_documents,
    scaling_documents,
)
from a3s_gateway.version import __version__

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from a3s_gateway.app import Gateway
    from a3s_gateway.config.schema import Config, Management, ManagementTls
    from a3s_gateway.config.schema_entrypoints import Entrypoint
    from a3s_gateway.management.api import GatewayView, ReloadReport
    from a3s_gateway.routing.request import PeerAddress
    from a3s_gateway.runtime.compile import RuntimeConfig
    from a3s_gateway.state import GatewayState, HealthSnapshot

__all__ = [
    "GatewayAdapter",
    "ManagementServer",
    "ServerLimits",
    "management_tls_context",
    "open_management_listener",
]

log: Final = logging.getLogger("a3s_gateway.management")

_READ_SIZE: Final = 16384
#: accept() errors that mean "out of resources right now" (as in ``server/listeners.py``).
_RESOURCE_ERRORS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_RESOURCE_PAUSE: Final = 0.1
#: After an error answer: how long and how much of the client's remaining input is read and
#: dropped before closing, so that the answer is not lost to a reset.
_LINGER_SECS: Final = 1.0
_LINGER_BYTES: Final = 256 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerLimits:
    """The management server's bounds (see the module docstring)."""

    max_head_bytes: int = 16 * 1024
    head_timeout: float = 10.0
    idle_timeout: float = 60.0
    max_body_bytes: int = 1024 * 1024
    max_connections: int = 64


def _shown(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def open_management_listener(settings: Management) -> list[trio.SocketListener]:
    """Bind the management address (every address it resolves to); none when disabled.

    Raises ``StartError`` naming the address when it cannot be bound (nothing stays bound).
    """
    if not settings.enabled:
        return []
    address = settings.address
    where = _shown(address.host, address.port) if address.host else f":{address.port}"
    try:
        return await trio.open_tcp_listeners(address.port, host=address.host or None)
    except OSError as error:
        reason = error.strerror or str(error)
        raise StartError(f"management API: cannot listen on {where}: {reason}") from error


def management_tls_context(tls: ManagementTls) -> ssl.SSLContext:
    """The server context of ``management { tls {} }``: certificate and key, the minimum
    version, and with ``client_ca_file`` client certificates (required with
    ``require_client_cert``: mTLS). Raises ``StartError`` when a file is unusable."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.client_ca_file is not None:
            context.load_verify_locations(cafile=tls.client_ca_file)
            context.verify_mode = (
                ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
            )
        elif tls.require_client_cert:
            raise StartError("management API: require_client_cert needs client_ca_file")
    except (OSError, ssl.SSLError, ValueError) as error:
        raise StartError(f"management API: TLS: {error}") from error
    return context


class _HangupError(Exception):
    """The connection ends now (timeout, EOF, or after an error answer)."""


class ManagementServer:
    """Serves the management API of one gateway on the listeners given to ``serve``.

    Raises ``StartError`` if the TLS files are unusable. ``environ`` (default ``os.environ``)
    is where the token variable is read.
    """

    def __init__(
        self,
        settings: Management,
        view: GatewayView,
        *,
        limits: ServerLimits | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._view = view
        self._limits = limits if limits is not None else ServerLimits()
        self._environ = environ
        self._active = 0
        self._settings = settings
        self._tls: ssl.SSLContext | None = None
        self._access = AccessPolicy(())
        self._apply(settings)

    def _apply(self, settings: Management) -> None:
        tls = management_tls_context(settings.tls) if settings.tls is not None else None
        environ = os.environ if self._environ is None else self._environ
        token = environ.get(settings.auth_token_env) or None
        self._settings = settings
        self._tls = tls
        self._access = AccessPolicy.from_settings(settings, token)

    def update(self, settings: Management) -> None:
        """Apply a reloaded ``management`` block: prefix, allowed IPs, the token (the variable
        is read again) and TLS files, for the next request and connection. The address and
        ``enabled`` are the caller's (they need another listener). Raises ``ReloadError`` if the
        new TLS files are unusable (the old settings stay)."""
        try:
            self._apply(settings)
        except StartError as error:
            raise ReloadError(str(error)) from error

    @property
    def requires_token(self) -> bool:
        """Whether a bearer token is configured (the variable is set and non-empty)."""
        return self._access.requires_token

    @property
    def active_connections(self) -> int:
        return self._active

    async def serve(
        self,
        listeners: Sequence[trio.SocketListener],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept and serve connections until cancelled; closes ``listeners`` when it ends.
        Returns at once (after ``started()``) when there are no listeners."""
        try:
            async with trio.open_nursery() as nursery:
                for listener in listeners:
                    host, port = listener.socket.getsockname()[:2]
                    log.info(
                        "listening management address=%s tls=%s",
                        _shown(str(host), int(port)),
                        "yes" if self._tls is not None else "no",
                    )
                    nursery.start_soon(self._accept_loop, listener, nursery)
                task_status.started()
        finally:
            for listener in listeners:
                listener.socket.close()

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except trio.ClosedResourceError:
                return
            except OSError as error:
                if error.errno not in _RESOURCE_ERRORS:
                    # Never into the gateway: the management API stops, traffic goes on.
                    log.error("management API stopped accepting: %s", error)
                    return
                log.warning("management accept: %s; pausing", error.strerror)
                await trio.sleep(_RESOURCE_PAUSE)
                continue
            if self._active >= self._limits.max_connections:
                log.debug("management: %d connections already, closing one", self._active)
                await trio.aclose_forcefully(stream)
                continue
            self._active += 1
            nursery.start_soon(self._socket_connection, stream)

    async def _socket_connection(self, stream: trio.SocketStream) -> None:
        try:
            try:
                peer = stream.socket.getpeername()
            except OSError:
                client = None
            else:
                client = parse_peer(str(peer[0]))
            await self._serve(stream, client)
        finally:
            self._active -= 1
            await trio.aclose_forcefully(stream)

    async def _serve(self, stream: trio.abc.Stream, client: PeerAddress | None) -> None:
        """Serve one accepted connection (TLS first when configured) until it ends; the
        caller closes it. Never raises except for cancellation."""
        limits = self._limits
        try:
            if self._tls is not None:
                wrapped = trio.SSLStream(stream, self._tls, server_side=True, https_compatible=True)
                stream = wrapped
                with trio.move_on_after(limits.head_timeout) as handshake:
                    await wrapped.do_handshake()
                if handshake.cancelled_caught:
                    return
            await _Connection(self, stream, client, limits).run()
        except (_HangupError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            log.exception("management connection failed")

    async def answer(self, request: ApiRequest) -> ApiResponse:
        """The API's answer to one request (500, logged, if an endpoint fails)."""
        settings = self._settings
        clock = Clock(trio.current_time(), time.time())
        try:
            return await handle(
                request, self._view, prefix=settings.path_prefix, access=self._access, clock=clock
            )
        except Exception:
            log.exception(
                "management API: %s %s failed", request.method, request_path(request.target)
            )
            return json_response(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})


class _Connection:
    """One HTTP/1.1 connection of the management server."""

    __slots__ = ("_client", "_conn", "_limits", "_server", "_stream")

    def __init__(
        self,
        server: ManagementServer,
        stream: trio.abc.Stream,
        client: PeerAddress | None,
        limits: ServerLimits,
    ) -> None:
        self._server = server
        self._stream = stream
        self._client = client
        self._limits = limits
        self._conn = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self._limits.max_head_bytes
        )

    async def run(self) -> None:
        conn = self._conn
        first = True
        while True:
            request = await self._request(first=first)
            first = False
            await self._drain_body(request)
            authorization = tuple(
                value for name, value in request.headers if name == b"authorization"
            )
            api_request = ApiRequest(
                method=request.method.decode("ascii", "replace"),
                target=request.target.decode("ascii", "replace"),
                client=self._client,
                authorization=authorization,
            )
            response = await self._server.answer(api_request)
            log.debug(
                "management %s %s -> %d",
                api_request.method,
                request_path(api_request.target),
                response.status,
            )
            await self._send(response)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _receive(self, deadline: float) -> bytes:
        with trio.move_on_at(deadline):
            return bytes(await self._stream.receive_some(_READ_SIZE))
        raise _HangupError

    async def _request(self, *, first: bool) -> h11.Request:
        """The next request head; raises ``_HangupError`` on EOF, a timeout or after answering a
        bad or oversized head."""
        conn = self._conn
        limits = self._limits
        now = trio.current_time()
        fed = len(conn.trailing_data[0])
        head_deadline: float | None = now + limits.head_timeout if first or fed else None
        idle_deadline = now + limits.idle_timeout
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as error:
                await self._refuse(error.error_status_hint, "bad request")
                raise _HangupError from error
            if isinstance(event, h11.Request):
                if fed - len(conn.trailing_data[0]) > limits.max_head_bytes:
                    await self._refuse(431, "request header fields too large")
                    raise _HangupError
                return event
            if event is not h11.NEED_DATA:
                raise _HangupError  # ConnectionClosed
            if fed > limits.max_head_bytes:
                await self._refuse(431, "request header fields too large")
                raise _HangupError
            data = await self._receive(idle_deadline if head_deadline is None else head_deadline)
            if head_deadline is None:
                head_deadline = trio.current_time() + limits.head_timeout
            fed += len(data)
            conn.receive_data(data)

    async def _drain_body(self, request: h11.Request) -> None:
        """Read and drop the request body within the bounds (413 over them)."""
        conn = self._conn
        limits = self._limits
        declared = next(
            (int(value) for name, value in request.headers if name == b"content-length"), 0
        )
        if declared > limits.max_body_bytes:
            await self._refuse(413, "request body too large")
            raise _HangupError
        if conn.they_are_waiting_for_100_continue:
            await self._write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        total = 0
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as error:
                await self._refuse(error.error_status_hint, "bad request")
                raise _HangupError from error
            if isinstance(event, h11.Data):
                total += len(event.data)
                if total > limits.max_body_bytes:
                    await self._refuse(413, "request body too large")
                    raise _HangupError
            elif isinstance(event, h11.EndOfMessage):
                return
            elif event is h11.NEED_DATA:
                conn.receive_data(await self._receive(trio.current_time() + limits.head_timeout))
            else:
                raise _HangupError

    async def _write(self, data: bytes) -> None:
        with trio.move_on_after(self._limits.head_timeout):
            await self._stream.send_all(data)
            return
        raise _HangupError

    async def _send(self, response: ApiResponse, *, close: bool = False) -> None:
        headers = [(name.encode(), value.encode()) for name, value in response.headers]
        headers.append((b"date", formatdate(usegmt=True).encode()))
        if close:
            headers.append((b"connection", b"close"))
        try:
            reason = HTTPStatus(response.status).phrase.encode()
        except ValueError:
            reason = b""
        conn = self._conn
        data = conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
        assert data is not None
        if response.body:
            more = conn.send(h11.Data(data=response.body))
            assert more is not None
            data += more
        end = conn.send(h11.EndOfMessage())
        assert end is not None
        await self._write(data + end)

    async def _refuse(self, status: int, message: str) -> None:
        """Answer an error (when the exchange still allows an answer), then linger: read and
        drop what the client is still sending for a moment, so it sees the answer."""
        if self._conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            try:
                await self._send(json_response(status, {"error": message}), close=True)
            except h11.LocalProtocolError:
                return
        stream = self._stream
        if isinstance(stream, trio.abc.HalfCloseableStream):
            await stream.send_eof()
        drained = 0
        with trio.move_on_after(_LINGER_SECS):
            while drained < _LINGER_BYTES:
                data = await stream.receive_some(_READ_SIZE)
                if not data:
                    break
                drained += len(data)


class GatewayAdapter:
    """``GatewayView`` over a running ``a3s_gateway.app.Gateway``.

    ``reload`` performs a reload from the config file and reports it; absent, or answering
    None, the gateway runs without a file and ``POST /reload`` answers 409. Calls are
    serialised. ``metrics`` renders the Prometheus text, awaited when it is a coroutine
    function (``Gateway.metrics_exposition`` renders off the event loop); absent, or
    ``metrics_enabled = false``: ``/metrics`` answers 404. ``backend_requests`` gives
    ``/backends``' ``requests_total`` (absent: null).
    """

    def __init__(
        self,
        gateway: Gateway,
        *,
        reload: Callable[[], Awaitable[ReloadReport | None]] | None = None,
        metrics: Callable[[], Awaitable[bytes | None]] | Callable[[], bytes | None] | None = None,
        backend_requests: Callable[[], Mapping[tuple[str, str], int] | None] | None = None,
    ) -> None:
        self._gateway = gateway
        self._reload = reload
        self._metrics = metrics
        self._backend_requests = backend_requests
        self._reloading = trio.Lock()

    @property
    def version(self) -> str:
        return __version__

    @property
    def workers(self) -> int:
        return 1  # Gateway serves one worker in-process (SPEC §13.4 is the CLI's supervisor)

    def health(self) -> HealthSnapshot:
        return self._gateway.health()

    def state(self) -> GatewayState:
        return self._gateway.state()

    def config(self) -> Config:
        return self._gateway.config()

    def runtime(self) -> RuntimeConfig | None:
        return self._gateway.runtime

    def listeners(self) -> list[ListenerInfo]:
        gateway = self._gateway
        runtime = gateway.runtime
        if runtime is None:
            return []
        bound = gateway.addresses()
        connections = gateway.connections()
        return [
            _listener(name, entry, bound.get(name, ()), connections.get(name, 0), gateway)
            for name, entry in gateway.config().entrypoints.items()
            if name in runtime.entrypoints or name in runtime.udp_entrypoints
        ]

    async def metrics_text(self) -> bytes | None:
        if self._metrics is None or not self._gateway.config().observability.metrics_enabled:
            return None
        text = self._metrics()
        return await text if inspect.isawaitable(text) else text

    def backend_requests(self) -> Mapping[tuple[str, str], int] | None:
        return None if self._backend_requests is None else self._backend_requests()

    async def reload(self) -> ReloadReport | None:
        if self._reload is None:
            return None
        async with self._reloading:
            return await self._reload()

    def scaling(self, clock: Clock) -> list[dict[str, object]]:
        scaling = self._gateway.scaling
        control = scaling.control
        if control is None:
            return []
        return scaling_documents(control, scaling.counts.depths, clock.timestamp)

    def rollouts(self, clock: Clock) -> list[dict[str, object]]:
        control = self._gateway.scaling.control
        return [] if control is None else rollout_documents(control, clock.timestamp)

    def rollout_action(
        self, service: str, action: str, clock: Clock
    ) -> tuple[int, dict[str, object]]:
        control = self._gateway.scaling.control
        return rollout_action_answer(control, service, action, clock.timestamp)

    def acme_check(self, *, force: bool) -> bool:
        reloader = self._gateway.reloader
        return reloader is not None and reloader.hub.acme_check(force=force)

    def dynamic_providers(self) -> list[dict[str, object]]:
        reloader = self._gateway.reloader
        return [] if reloader is None else reloader.hub.documents()


def _listener(
    name: str,
    entry: Entrypoint,
    bound: Sequence[tuple[str, int]],
    connections: int,
    gateway: Gateway,
) -> ListenerInfo:
    return ListenerInfo(
        name=name,
        protocol=entry.protocol,
        address=entry.address.text,
        bound=tuple(_shown(host, port) for host, port in bound),
        tls=entry.tls is not None,
        connections=connections,
        certificates=gateway.tls_certificates(name),
    )
