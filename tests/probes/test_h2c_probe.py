"""HTTP probes of ``h2c://`` backends (SPEC §7.4: "using the server's transport"): HTTP/2 with
prior knowledge on a fresh connection, judged like the HTTP/1.1 probe.

The first tests inject a dialer whose streams are served by a scripted h2 server over
``trio.testing.memory_stream_pair()`` and run on ``autojump_clock`` (every wait on the test side
is on an event). The last ones probe real servers on 127.0.0.1 with the real clock: the test
HTTP/2 origin (``tests/support/h2_origin.py``), the HTTP/1.1 test origin, and a closed port.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from random import Random

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
import trio
import trio.testing
from h2.errors import ErrorCodes

from a3s_gateway.config.values import ServerUrl
from a3s_gateway.probes.checker import BODY_LIMIT, ProbeResult, probe, run_prober, user_agent
from a3s_gateway.services.backend import Backend
from a3s_gateway.services.health import ActiveHealth, CheckSettings, parse_expected_status
from a3s_gateway.upstream.peer import Peer
from tests.support.gateway import free_port
from tests.support.h2_origin import H2Origin
from tests.support.origin import Origin

URL = ServerUrl("h2c://10.0.0.1:8080/base/")
HTTP = CheckSettings(kind="http", path="/health?deep=1", interval=10.0, timeout=5.0)
Headers = list[tuple[bytes, bytes]]


# -- a scripted HTTP/2 backend ------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What the backend does once a request ended: a response of ``status`` with ``size``
    body bytes (``end``: then END_STREAM; ``close``: then close the connection), else reset
    the stream with ``reset``, or send GOAWAY with last stream ``goaway``, or nothing
    (``silent``). With ``raw`` it is no HTTP/2 server: it reads once, sends ``raw``, closes."""

    status: int = 200
    size: int = 0
    end: bool = True
    extra: Headers = field(default_factory=list)
    reset: ErrorCodes | None = None
    goaway: int | None = None
    raw: bytes | None = None
    close: bool = False
    silent: bool = False


@dataclass
class H2Backend:
    """A ``Dialer`` whose connections are served by h2 (server side) per ``answer``."""

    nursery: trio.Nursery
    answer: Answer
    peers: list[Peer] = field(default_factory=list)
    requests: list[Headers] = field(default_factory=list)
    goaways: int = 0  # GOAWAY frames received from the prober
    closed: int = 0  # connections the prober closed
    changed: trio.Event = field(default_factory=trio.Event)

    def _notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self.changed.wait()

    async def __call__(self, peer: Peer) -> trio.abc.Stream:
        self.peers.append(peer)
        await trio.lowlevel.checkpoint()
        ours, theirs = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self._serve, theirs)
        return ours

    async def _serve(self, stream: trio.abc.Stream) -> None:
        if self.answer.raw is not None:  # no HTTP/2 server: it answers what came, and closes
            await stream.receive_some()
            await stream.send_all(self.answer.raw)
            self.closed += 1
            self._notify()
            await stream.aclose()
            return
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        conn = h2.connection.H2Connection(config=config)
        conn.initiate_connection()
        try:
            await stream.send_all(conn.data_to_send())
            while data := await stream.receive_some():
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        self.requests.append(list(event.headers))
                        self._notify()
                    elif isinstance(event, h2.events.StreamEnded):
                        if await self._answer(stream, conn, event.stream_id):
                            return
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        self.goaways += 1
                await stream.send_all(conn.data_to_send())
        except (trio.BrokenResourceError, trio.ClosedResourceError, h2.exceptions.H2Error):
            pass
        finally:
            self.closed += 1
            self._notify()
            await trio.aclose_forcefully(stream)

    async def _answer(
        self, stream: trio.abc.Stream, conn: h2.connection.H2Connection, sid: int
    ) -> bool:
        """Answer stream ``sid``; True when the connection is to be closed now."""
        answer = self.answer
        if answer.silent:
            return False
        if answer.reset is not None:
            conn.reset_stream(sid, answer.reset)
        elif answer.goaway is not None:
            conn.close_connection(last_stream_id=answer.goaway)
        else:
            head = [(b":status", str(answer.status).encode()), *answer.extra]
            conn.send_headers(sid, head, end_stream=answer.end and not answer.size)
            left = answer.size
            while left:
                step = min(left, conn.max_outbound_frame_size, conn.local_flow_control_window(sid))
                left -= step
                conn.send_data(sid, b"x" * step, end_stream=answer.end and not left)
        await stream.send_all(conn.data_to_send())
        return answer.close


# -- one probe ----------------------------------------------------------------------------------


async def test_an_h2c_backend_gets_an_http2_request_and_a_goaway(nursery: trio.Nursery) -> None:
    backend = H2Backend(nursery, Answer(200, size=12))
    settings = CheckSettings(kind="http", path="/health?deep=1", headers=((b"x-probe", b"yes"),))
    assert await probe(URL, settings, dialer=backend) == ProbeResult(True, "status 200")
    assert backend.peers == [Peer("h2c", "10.0.0.1", 8080)]
    assert backend.requests == [
        [
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":authority", b"10.0.0.1:8080"),
            (b":path", b"/base/health?deep=1"),
            (b"user-agent", user_agent()),
            (b"x-probe", b"yes"),
        ]
    ]
    await backend.wait_for(lambda: backend.closed == 1)  # not kept: a fresh connection each time
    assert backend.goaways == 1


async def test_hostname_method_and_a_configured_user_agent(nursery: trio.Nursery) -> None:
    backend = H2Backend(nursery, Answer(204))
    settings = CheckSettings(
        kind="http",
        path="/h",
        method="HEAD",
        hostname="svc.internal",
        headers=((b"user-agent", b"kube-probe"),),
    )
    assert await probe(URL, settings, dialer=backend) == ProbeResult(True, "status 204")
    [request] = backend.requests
    assert request[:4] == [
        (b":method", b"HEAD"),
        (b":scheme", b"http"),
        (b":authority", b"svc.internal"),
        (b":path", b"/base/h"),
    ]
    assert [value for name, value in request if name == b"user-agent"] == [b"kube-probe"]


@pytest.mark.parametrize(("status", "success"), [(200, True), (204, True), (201, False)])
async def test_expected_statuses_decide(nursery: trio.Nursery, status: int, success: bool) -> None:
    backend = H2Backend(nursery, Answer(status))
    settings = CheckSettings(kind="http", path="/", expected=parse_expected_status("200,204"))
    assert await probe(URL, settings, dialer=backend) == ProbeResult(success, f"status {status}")


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (Answer(503, size=5), "status 503"),
        (Answer(302), "status 302"),  # redirects are not followed
        (Answer(reset=ErrorCodes.REFUSED_STREAM), "stream reset (REFUSED_STREAM)"),
        (Answer(goaway=0), "going away"),
        (Answer(extra=[(b"connection", b"close")]), "invalid response"),  # malformed head
        (Answer(101, end=False), "invalid response"),  # never a switch over HTTP/2
        (Answer(200, size=10, end=False, close=True), "invalid response"),  # cut
        (Answer(raw=b"HTTP/1.1 400 Bad Request\r\n\r\n"), "invalid response"),  # not HTTP/2
        (Answer(raw=b""), "no response"),
    ],
)
async def test_failed_probes(nursery: trio.Nursery, answer: Answer, reason: str) -> None:
    backend = H2Backend(nursery, answer)
    assert await probe(URL, HTTP, dialer=backend) == ProbeResult(False, reason)
    await backend.wait_for(lambda: backend.closed == 1)


async def test_a_silent_backend_times_out(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    backend = H2Backend(nursery, Answer(silent=True))
    began = trio.current_time()
    assert await probe(URL, HTTP, dialer=backend) == ProbeResult(False, "timeout")
    assert trio.current_time() - began == pytest.approx(HTTP.timeout)
    await backend.wait_for(lambda: backend.closed == 1)


async def test_the_body_is_read_only_up_to_the_bound(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A body over ``BODY_LIMIT`` that never ends does not hold the probe: the status decides."""
    backend = H2Backend(nursery, Answer(200, size=2 * BODY_LIMIT, end=False))
    began = trio.current_time()
    assert await probe(URL, HTTP, dialer=backend) == ProbeResult(True, "status 200")
    assert trio.current_time() == began


async def test_a_prober_marks_an_h2c_backend_down(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    backend = H2Backend(nursery, Answer(503))
    settings = CheckSettings(kind="http", path="/h", interval=5.0, timeout=2.0)
    target = Backend(URL)
    changes: list[tuple[bool, str]] = []
    flipped = trio.Event()

    def on_change(_: Backend, healthy: bool, reason: str) -> None:
        changes.append((healthy, reason))
        flipped.set()

    prober = functools.partial(
        run_prober,
        target,
        settings,
        ActiveHealth(target, 1, 2),
        on_change=on_change,
        dialer=backend,
        random=Random(7),
    )
    async with trio.open_nursery() as probers:
        await probers.start(prober)
        await flipped.wait()
        probers.cancel_scope.cancel()
    assert changes == [(False, "status 503")]
    assert not target.active_healthy
    assert len(backend.requests) == 2


# -- real servers -------------------------------------------------------------------------------


@pytest.mark.integration
async def test_a_real_http2_origin(nursery: trio.Nursery) -> None:
    origin = H2Origin()
    await nursery.start(origin.serve)
    url = ServerUrl(f"h2c://127.0.0.1:{origin.port}/base")
    settings = CheckSettings(kind="http", path="/health", timeout=10.0)
    assert await probe(url, settings) == ProbeResult(True, "status 200")
    # The origin answers 200 to every path: a check that expects something else fails.
    other = CheckSettings(
        kind="http", path="/health", timeout=10.0, expected=parse_expected_status("204")
    )
    assert await probe(url, other) == ProbeResult(False, "status 200")
    await origin.wait_for(lambda: all(conn.closed for conn in origin.connections))
    assert len(origin.connections) == 2  # a fresh connection per probe
    for conn in origin.connections:
        [request] = conn.requests.values()
        assert request.headers[:4] == [
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":authority", f"127.0.0.1:{origin.port}".encode()),
            (b":path", b"/base/health"),
        ]
        assert dict(request.headers)[b"user-agent"] == user_agent()
        assert conn.goaway_received


@pytest.mark.integration
async def test_an_http1_only_server_and_a_closed_port_are_unhealthy(nursery: trio.Nursery) -> None:
    origin = Origin()
    await nursery.start(origin.serve)
    settings = CheckSettings(kind="http", path="/health", timeout=10.0)
    # h11 reads the HTTP/2 preface as a request "PRI *" and answers it with a 200: an HTTP/1.1
    # response, no SETTINGS frame, so no HTTP/2 server (and no wait for the timeout).
    result = await probe(ServerUrl(f"h2c://127.0.0.1:{origin.port}"), settings)
    assert result == ProbeResult(False, "invalid response")
    assert [(r.method, r.target) for r in origin.requests] == [(b"PRI", b"*")]
    refused = await probe(ServerUrl(f"h2c://127.0.0.1:{free_port()}"), settings)
    assert refused == ProbeResult(False, "refused")
