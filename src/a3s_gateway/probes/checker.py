"""Active health probes: one prober task per backend (SPEC §7.4).

Ring 1. ``probe`` runs one check: for ``http``, a request over a fresh connection (never the
pool) judged by ``expected_status``; for ``tcp``, a connect. A backend's transport is the
proxy's: ``https``/``wss``/``tls`` backends are probed over TLS with the service's
``upstream_tls`` (``CheckSettings.tls``: CA, server name, client certificate, verification),
through the same dialer and shared TLS contexts as proxied requests, so a certificate the proxy
would refuse fails the probe (reason ``TLS handshake failed: <why>``). The request is HTTP/1.1
(``Http1Client``, with ``Connection: close``), except to ``h2c://`` backends, which may speak
nothing but HTTP/2 (gRPC servers): they get HTTP/2 with prior knowledge (``Http2Client``, RFC
9113 §3.3), the same request on stream 1 (``:authority`` for ``Host``), and a GOAWAY before the
socket is closed. A server that does not answer in HTTP/2 fails the probe (``invalid
response``), as does a reset stream (``stream reset (<code>)``) or a GOAWAY that leaves the
stream unprocessed (``going away``).
``run_prober`` probes one backend forever on its schedule and feeds the results to the backend's
``ActiveHealth`` (``services/health.py``, Ring 0), which flips ``Backend.active_healthy``.

Nurseries: none. The caller runs ``run_prober`` tasks in a nursery of its own, one per config
generation or per prober, and cancels it to stop them; a cancelled prober closes its connection
(``trio.aclose_forcefully``) and returns at once. Deadlines: exactly one, ``health_check.timeout``,
as a ``move_on_after`` around the whole probe (dial and TLS handshake, write, response and the
bounded body read).
Time is read only through trio (``current_time``, ``sleep_until``), so tests run the schedule on
``autojump_clock``.

Must not: use the upstream pool, follow redirects, retry within a probe, raise for a failed
probe, log (the caller logs ``on_change`` transitions), or set any other deadline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from dataclasses import dataclass
from random import Random
from typing import TYPE_CHECKING, Final, NoReturn

import trio

from a3s_gateway.protocols.events import (
    BodyChunk,
    EndOfBody,
    ProtocolViolation,
    RequestHead,
    ResponseHead,
)
from a3s_gateway.protocols.http1_client import Http1Client
from a3s_gateway.protocols.http2_client import (
    GoAway,
    Http2Client,
    StreamFailed,
    StreamReset,
    error_name,
)
from a3s_gateway.upstream.connect_errors import ConnectFailed
from a3s_gateway.upstream.dialer import dial
from a3s_gateway.upstream.peer import Peer
from a3s_gateway.version import __version__

if TYPE_CHECKING:
    from collections.abc import Callable

    from a3s_gateway.config.values import ServerUrl
    from a3s_gateway.protocols.http2_client import ClientEvent
    from a3s_gateway.services.backend import Backend
    from a3s_gateway.services.health import ActiveHealth, CheckSettings
    from a3s_gateway.upstream.dialer import Dialer

__all__ = ["BODY_LIMIT", "ProbeResult", "probe", "probe_target", "run_prober", "user_agent"]

#: Response body bytes read (and discarded) before the probe stops reading and closes.
BODY_LIMIT: Final = 65536
_READ_SIZE: Final = 65536
_SETTINGS_TYPE: Final = 0x4


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe's outcome; ``reason`` is a short text for logs ("status 503", "timeout",
    "refused", "invalid response", "connected", "TLS handshake failed: certificate verify
    failed: …")."""

    success: bool
    reason: str


@functools.cache
def user_agent() -> bytes:
    """``a3s-gateway-health/<version>`` (SPEC §7.4)."""
    return f"a3s-gateway-health/{__version__}".encode()


def probe_target(url: ServerUrl, settings: CheckSettings) -> tuple[Peer, bytes, bytes]:
    """``(peer to dial, request target, Host value)`` of a probe of the backend at ``url``.

    The target is the URL's path prefix (without a trailing ``/``) followed by the check's
    ``path``, as the proxy joins them. ``Host`` is ``hostname`` if set, else the probed
    host:port (the ``port`` override included). TLS backends get the service's ``upstream_tls``
    (``settings.tls``). Raises ``ValueError`` for a ``udp`` URL.
    """
    peer = Peer.from_url(url, settings.tls)
    if settings.port is not None:
        peer = dataclasses.replace(peer, port=settings.port)
    target = (url.path.rstrip("/") + settings.path).encode()
    if settings.hostname is not None:
        host = settings.hostname.encode()
    else:
        name = f"[{peer.host}]" if ":" in peer.host else peer.host
        host = f"{name}:{peer.port}".encode()
    return peer, target, host


async def probe(
    backend_url: ServerUrl, settings: CheckSettings, *, dialer: Dialer = dial
) -> ProbeResult:
    """Check the backend at ``backend_url`` once; the whole probe is bounded by
    ``settings.timeout``. Never raises for a failed probe (only ``Cancelled`` and bugs)."""
    try:
        peer, target, host = probe_target(backend_url, settings)
    except ValueError:
        await trio.lowlevel.checkpoint()
        return ProbeResult(False, "unsupported transport")
    result = ProbeResult(False, "timeout")
    with trio.move_on_after(settings.timeout):
        result = await _attempt(peer, target, host, settings, dialer)
    return result


async def _attempt(
    peer: Peer, target: bytes, host: bytes, settings: CheckSettings, dialer: Dialer
) -> ProbeResult:
    try:
        stream = await dialer(peer)
    except ConnectFailed as error:
        return ProbeResult(False, error.detail or error.reason)
    except OSError:
        return ProbeResult(False, "error")
    try:
        if settings.kind == "tcp":
            return ProbeResult(True, "connected")
        head = _probe_head(target, host, settings, http2=peer.scheme == "h2c")
        if peer.scheme == "h2c":
            return await _exchange_h2c(stream, head, settings)
        return await _exchange(stream, head, settings)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return ProbeResult(False, "reset")
    finally:
        await trio.aclose_forcefully(stream)


def _probe_head(target: bytes, host: bytes, settings: CheckSettings, *, http2: bool) -> RequestHead:
    """The probe request: ``Host`` (``:authority`` over HTTP/2), our ``User-Agent`` unless one
    is configured, ``Connection: close`` over HTTP/1.1, then the configured headers."""
    headers = [(b"host", host), (b"user-agent", user_agent())]
    if not http2:
        headers.append((b"connection", b"close"))
    configured = settings.headers
    if any(name == b"user-agent" for name, _ in configured):
        del headers[1]  # a configured User-Agent replaces ours
    return RequestHead(
        method=settings.method.encode("ascii"),
        target=target,
        authority=host,
        headers=[*headers, *configured],
    )


async def _exchange(
    stream: trio.abc.Stream, head: RequestHead, settings: CheckSettings
) -> ProbeResult:
    """Send the probe request over ``stream`` as HTTP/1.1 and judge its response."""
    client = Http1Client()
    try:
        wire = client.send(head)
    except ProtocolViolation:
        return ProbeResult(False, "invalid probe request")
    await stream.send_all(wire)
    status: int | None = None
    discarded = 0
    while discarded <= BODY_LIMIT:
        data = bytes(await stream.receive_some(_READ_SIZE))
        try:
            events = client.receive(data)
        except ProtocolViolation as violation:
            closed = violation.reason == "connection closed before response"
            return ProbeResult(False, "no response" if closed else "invalid response")
        for event in events:
            if isinstance(event, ResponseHead):
                if event.status == 101:  # a probe never switches protocols
                    return ProbeResult(False, "invalid response")
                status = event.status
            elif isinstance(event, BodyChunk):
                discarded += len(event.data)
            elif isinstance(event, EndOfBody):
                return _judge(status, settings)
        if not data:  # EOF that h11 did not call a violation: nothing usable arrived
            return ProbeResult(False, "no response")
    return _judge(status, settings)  # the body is over the bound: the status decides


async def _exchange_h2c(
    stream: trio.abc.Stream, head: RequestHead, settings: CheckSettings
) -> ProbeResult:
    """Send the probe request over ``stream`` as HTTP/2 with prior knowledge, judge its
    response, then say GOAWAY (best effort: the socket is closed next anyway)."""
    client = Http2Client(secure=False)
    client.start()
    try:
        stream_id = client.open_stream(head, end_stream=True)
    except ProtocolViolation:
        return ProbeResult(False, "invalid probe request")
    await stream.send_all(client.data_to_send())
    reading = _H2Response(stream_id, settings)
    result: ProbeResult | None = None
    while result is None:
        data = bytes(await stream.receive_some(_READ_SIZE))
        if not data:
            cut = reading.status is not None  # a cut response, as over HTTP/1.1
            return ProbeResult(False, "invalid response" if cut else "no response")
        result = reading.feed(client, data)
        if result is None and client.wants_write:  # SETTINGS and PING acknowledgements
            await stream.send_all(client.data_to_send())
    client.close()
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(client.data_to_send())
    return result


class _H2Response:
    """The probe's view of the response on its one HTTP/2 stream."""

    __slots__ = ("_preface", "_settings", "_stream_id", "discarded", "status")

    def __init__(self, stream_id: int, settings: CheckSettings) -> None:
        self._stream_id = stream_id
        self._settings = settings
        self._preface = b""  # the first frame header's first four bytes, once received
        self.status: int | None = None
        self.discarded = 0

    def feed(self, client: Http2Client, data: bytes) -> ProbeResult | None:
        """Hand ``data`` to ``client``; the verdict once it is settled, else None."""
        if len(self._preface) < 4:
            # RFC 9113 §3.4: the server's preface is a SETTINGS frame (type 4). An HTTP/1.1
            # server's answer ("HTTP/1.1 400") would otherwise read as a frame of megabytes.
            self._preface += data[: 4 - len(self._preface)]
            if len(self._preface) == 4 and self._preface[3] != _SETTINGS_TYPE:
                return ProbeResult(False, "invalid response")
        try:
            return self._take(client.receive(data))
        except ProtocolViolation:  # an HTTP/2 connection error
            return ProbeResult(False, "invalid response")

    def _take(self, events: list[ClientEvent]) -> ProbeResult | None:
        """The verdict once ``events`` settle it, else None (read on)."""
        for event in events:
            match event:
                case ResponseHead(status=status):
                    self.status = status
                case BodyChunk(data=data):
                    self.discarded += len(data)
                    if self.discarded > BODY_LIMIT:  # over the bound: the status decides
                        return _judge(self.status, self._settings)
                case EndOfBody():
                    return _judge(self.status, self._settings)
                case StreamReset(error_code=code):
                    return ProbeResult(False, f"stream reset ({error_name(code)})")
                case StreamFailed():
                    return ProbeResult(False, "invalid response")
                case GoAway(last_stream_id=last) if last < self._stream_id:
                    return ProbeResult(False, "going away")
                case _:  # informational heads, SETTINGS, window updates
                    pass
        return None


def _judge(status: int | None, settings: CheckSettings) -> ProbeResult:
    if status is None:  # an end of body always follows a head; kept for the type checker
        return ProbeResult(False, "invalid response")
    return ProbeResult(status in settings.expected, f"status {status}")


async def run_prober(
    backend: Backend,
    settings: CheckSettings,
    state: ActiveHealth,
    *,
    on_change: Callable[[Backend, bool, str], None],
    on_result: Callable[[Backend, ProbeResult], None] | None = None,
    dialer: Dialer = dial,
    random: Random | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Probe ``backend`` until cancelled (SPEC §7.4).

    Signals ``task_status.started()`` at once, then probes immediately. Probe *k* ≥ 1 starts at
    ``t0 + offset + k × interval``, where ``t0`` is the first probe's start and ``offset`` a
    random fraction of the interval drawn once from ``random``, so probers started together do
    not stay aligned; starts are measured from the schedule, not from when a probe ended. A slot
    missed because a probe overran is skipped. Each result goes to ``state.record``;
    ``on_change(backend, healthy, reason)`` is called when the health flips, and
    ``on_result(backend, result)`` (if given) after every probe, e.g. for metrics or to let an
    active success re-admit a passively ejected backend. Exceptions from the callbacks propagate.
    """
    rng = random if random is not None else Random()
    interval = settings.interval
    offset = rng.random() * interval
    task_status.started()
    start = trio.current_time()
    due = start + offset
    while True:
        result = await probe(backend.url, settings, dialer=dialer)
        if on_result is not None:
            on_result(backend, result)
        flipped = state.record(result.success)
        if flipped is not None:
            on_change(backend, flipped, result.reason)
        due += interval
        now = trio.current_time()
        if due < now:  # overran (timeout > interval): keep the phase, skip the missed slots
            due += (int((now - due) / interval) + 1) * interval
        await trio.sleep_until(due)
