"""Active health probes: one prober task per backend (SPEC §7.4).

Ring 1. ``probe`` runs one check: for ``http``, a request over a fresh connection (never the
pool), read through ``Http1Client`` and judged by ``expected_status``; for ``tcp``, a connect.
A backend's transport is the proxy's: ``https``/``wss``/``tls`` backends are probed over TLS with
the service's ``upstream_tls`` (``CheckSettings.tls``: CA, server name, client certificate,
verification), through the same dialer and shared TLS contexts as proxied requests, so a
certificate the proxy would refuse fails the probe (reason ``TLS handshake failed: <why>``).
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
from a3s_gateway.upstream.connect_errors import ConnectFailed
from a3s_gateway.upstream.dialer import dial
from a3s_gateway.upstream.peer import Peer
from a3s_gateway.version import __version__

if TYPE_CHECKING:
    from collections.abc import Callable

    from a3s_gateway.config.values import ServerUrl
    from a3s_gateway.services.backend import Backend
    from a3s_gateway.services.health import ActiveHealth, CheckSettings
    from a3s_gateway.upstream.dialer import Dialer

__all__ = ["BODY_LIMIT", "ProbeResult", "probe", "probe_target", "run_prober", "user_agent"]

#: Response body bytes read (and discarded) before the probe stops reading and closes.
BODY_LIMIT: Final = 65536
_READ_SIZE: Final = 65536


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
        return await _exchange(stream, target, host, settings)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return ProbeResult(False, "reset")
    finally:
        await trio.aclose_forcefully(stream)


async def _exchange(
    stream: trio.abc.Stream, target: bytes, host: bytes, settings: CheckSettings
) -> ProbeResult:
    """Send the probe request over ``stream`` and judge its response."""
    client = Http1Client()
    headers = [(b"host", host), (b"user-agent", user_agent()), (b"connection", b"close")]
    configured = settings.headers
    if any(name == b"user-agent" for name, _ in configured):
        del headers[1]  # a configured User-Agent replaces ours
    head = RequestHead(
        method=settings.method.encode("ascii"),
        target=target,
        authority=host,
        headers=[*headers, *configured],
    )
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
