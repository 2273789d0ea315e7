"""Regression tests for the autoscaling data plane (issue #21, fixed in commit 2ff6847).

Each test pins one bug a review found in ``server/exchange/dispatch.py``, ``runtime/compile.py``
or ``server/exchange/mirror.py``, and asserts the fixed behaviour:

1. a release of the whole buffer never lets requests past ``container_concurrency``;
2. a request buffered before a reload is served by the new generation's backends;
3. an attempt that ends abnormally (the upstream dies mid-body) still wakes a waiter;
4. a scaled service never panics onto an unhealthy backend: the request waits in the buffer;
5. a mirror copy reaches a service that has only revisions;
6. a sticky cookie naming a revision's backend does not advance the revision split.

Same style as ``test_scaling_dispatch.py`` (whose helpers are reused): an in-process
``Gateway`` in front of real test origins on loopback, the real clock, every wait a polled
condition under a deadline, and a ``trio.fail_after`` around each test.
"""

from __future__ import annotations

from typing import Final

import h11
import pytest
import trio

from tests.server.test_scaling_dispatch import (
    CHECK,
    LOCAL,
    Calls,
    backend,
    buffered,
    config,
    depth,
    get,
    heads,
    request_bytes,
    results,
    revisions,
    scaling,
    server,
    serving,
    until,
)
from tests.support.gateway import load, running_gateway
from tests.support.origin import Behaviour, DieMidBody, Fixed, Origin, Recorded, SlowHead

pytestmark = pytest.mark.integration

#: The bound on each whole test (each condition awaited has its own, shorter one).
TEST_LIMIT: Final = 20.0
#: How long the gauged origin works on each request before it answers.
HOLD: Final = 0.3


class Gauged(Origin):
    """A test origin that works ``HOLD`` seconds on each request for ``path`` and keeps the
    largest number of such requests it was working on at once (``peak``).

    A request stops counting just before its response is written, so a gateway that waits
    for the whole response before sending the next request never raises ``peak`` above one.
    """

    def __init__(self, name: str, path: bytes) -> None:
        super().__init__(name)
        self.gauged = path
        self.active = 0
        self.peak = 0

    async def _respond(
        self,
        stream: trio.SocketStream,
        conn: h11.Connection,
        record: Recorded,
        behaviour: Behaviour,
    ) -> bool:
        if record.path == self.gauged:
            self.active += 1
            self.peak = max(self.peak, self.active)
            try:
                await trio.sleep(HOLD)  # the origin's work, not a synchronisation
            finally:
                self.active -= 1
        return await super()._respond(stream, conn, record, behaviour)


async def read_to_end(port: int, path: str, into: list[bytes]) -> None:
    """One GET whose response may be cut short: every byte until the gateway closes (or
    resets) the connection is appended to ``into`` as one item."""
    received = b""
    stream = await trio.open_tcp_stream(LOCAL, port)
    try:
        _, data = request_bytes(path, ())
        await stream.send_all(data)
        while chunk := await stream.receive_some(65536):
            received += chunk
    except trio.BrokenResourceError:
        pass  # a reset ends the response as well as a close
    finally:
        await trio.aclose_forcefully(stream)
        into.append(received)


# -- 1. the limiter on a release of the whole buffer ------------------------------------------


async def test_a_release_of_the_whole_buffer_never_bypasses_the_limiter(
    nursery: trio.Nursery,
) -> None:
    """Five waiters released at once when the only backend turns healthy: with
    ``container_concurrency = 1`` the origin works on one of them at a time."""
    with trio.fail_after(TEST_LIMIT):
        origin = Gauged("a", b"/slow")
        await nursery.start(origin.serve)
        origin.on("/health", Fixed(503, b"starting"))
        text = config(
            'services "main" {\n'
            f"  load_balancer {{\n    servers = [{server(origin)}]\n{CHECK}  }}\n"
            + scaling(
                "container_concurrency = 1",
                "buffer_enabled = true",
                "buffer_size = 10",
                "buffer_timeout_secs = 10",
            )
            + "}\n"
        )
        async with running_gateway(load(text)) as gw, trio.open_nursery() as calls_nursery:
            calls = Calls(calls_nursery, gw.port)
            for _ in range(5):
                calls.start("/slow")
            await until(lambda: depth(gw) == 5)
            assert heads(origin, path=b"/slow") == 0

            origin.on("/health", Fixed(200, b"ok"))  # releases every waiter at once
            await until(lambda: len(calls.answers) == 5)
            assert [answer.origin for answer in calls.answers] == ["a"] * 5
            assert heads(origin, path=b"/slow") == 5
            assert origin.peak == 1, f"{origin.peak} requests at once with a limit of 1"
            assert results(gw) == {("main", "released"): 5}


# -- 2. a waiter across a reload ----------------------------------------------------------------


async def test_a_request_buffered_before_a_reload_is_served_by_the_new_generation(
    nursery: trio.Nursery,
) -> None:
    """A reload that leaves the scaling block as it was keeps the buffer; the waiter's release
    picks in the running generation, whose backend's health is the one that changes."""
    with trio.fail_after(TEST_LIMIT):
        a, other = await serving(nursery, "a", "other")
        a.on("/health", Fixed(503, b"starting"))
        timeout = 6
        before = buffered(a, timeout=timeout)
        unrelated = f'services "other" {{\n  load_balancer {{ servers = [{server(other)}] }}\n}}\n'
        async with running_gateway(load(before)) as gw, trio.open_nursery() as calls_nursery:
            calls = Calls(calls_nursery, gw.port)
            calls.start("/waits")
            await until(lambda: depth(gw) == 1)

            assert await gw.gateway.reload(load(before + unrelated)) == 2
            runtime = gw.gateway.runtime
            assert runtime is not None
            assert "other" in runtime.services  # the new generation runs
            assert depth(gw) == 1  # the request still waits

            started = trio.current_time()
            a.on("/health", Fixed(200, b"ok"))
            await until(lambda: len(calls.answers) == 1)
            elapsed = trio.current_time() - started
            answer = calls.answers[0]
            assert answer.status == 200, f"{answer.status} {answer.body!r} after {elapsed:.2f}s"
            assert answer.origin == "a"
            assert elapsed < timeout / 2  # released by the health change, not near the timeout
            assert heads(a, path=b"/waits") == 1
            assert results(gw) == {("main", "released"): 1}


# -- 3. the wake-up after an abnormal end -------------------------------------------------------


async def test_a_place_freed_by_an_aborted_attempt_wakes_a_waiter(nursery: trio.Nursery) -> None:
    """``container_concurrency = 1``: the request in flight ends with its upstream closing
    mid-body; the place it frees goes to the waiter at once."""
    with trio.fail_after(TEST_LIMIT):
        (a,) = await serving(nursery, "a")
        release = trio.Event()
        a.on("/slow", SlowHead(release, then=DieMidBody(1000, 10)))
        timeout = 6
        text = config(
            'services "main" {\n'
            f"  load_balancer {{\n    servers = [{server(a)}]\n{CHECK}  }}\n"
            + scaling(
                "container_concurrency = 1",
                "min_replicas = 1",
                "buffer_enabled = true",
                f"buffer_timeout_secs = {timeout}",
            )
            + "}\n"
        )
        async with running_gateway(load(text)) as gw, trio.open_nursery() as calls_nursery:
            await until(lambda: backend(gw, a).available)
            first: list[bytes] = []
            calls_nursery.start_soon(read_to_end, gw.port, "/slow", first)
            await until(lambda: heads(a, path=b"/slow") == 1)
            calls = Calls(calls_nursery, gw.port)
            calls.start("/next")
            await until(lambda: depth(gw) == 1)  # at capacity: it waits
            assert heads(a, path=b"/next") == 0

            started = trio.current_time()
            release.set()  # the first response starts, then its upstream closes mid-body
            await until(lambda: len(first) == 1 and len(calls.answers) == 1)
            elapsed = trio.current_time() - started
            assert first[0].startswith(b"HTTP/1.1 200 ")
            assert b"content-length: 1000" in first[0].lower()
            assert len(first[0].partition(b"\r\n\r\n")[2]) < 1000  # cut short
            answer = calls.answers[0]
            assert answer.status == 200, f"{answer.status} {answer.body!r} after {elapsed:.2f}s"
            assert answer.origin == "a"
            assert elapsed < timeout / 2  # woken by the freed place, not near the timeout
            assert results(gw) == {("main", "released"): 1}


# -- 4. no panic mode for a scaled service ------------------------------------------------------


async def test_a_scaled_service_with_a_panic_threshold_buffers_instead_of_panicking(
    nursery: trio.Nursery,
) -> None:
    """``panic_threshold = 50`` with the only backend unhealthy: a scaled service does not
    panic onto it; the request waits in the buffer and is served once the backend is up."""
    with trio.fail_after(TEST_LIMIT):
        (a,) = await serving(nursery, "a")
        a.on("/health", Fixed(503, b"starting"))
        text = config(
            'services "main" {\n'
            "  load_balancer {\n"
            "    panic_threshold = 50\n"
            f"    servers = [{server(a)}]\n{CHECK}  }}\n"
            + scaling(
                "container_concurrency = 10",
                "buffer_enabled = true",
                "buffer_timeout_secs = 10",
            )
            + "}\n"
        )
        async with running_gateway(load(text)) as gw, trio.open_nursery() as calls_nursery:
            await until(lambda: not backend(gw, a).available)
            calls = Calls(calls_nursery, gw.port)
            calls.start("/x")
            await until(lambda: depth(gw) == 1 or len(calls.answers) == 1)
            assert calls.answers == [], "answered at once: the selection panicked"
            assert heads(a, path=b"/x") == 0  # not sent to the unhealthy backend

            a.on("/health", Fixed(200, b"ok"))
            await until(lambda: len(calls.answers) == 1)
            assert calls.answers[0].origin == "a"
            assert heads(a, path=b"/x") == 1
            assert results(gw) == {("main", "released"): 1}


# -- 5. a mirror copy to a service of revisions -------------------------------------------------


async def test_a_mirror_copy_reaches_a_service_that_has_only_revisions(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TEST_LIMIT):
        a, shadow = await serving(nursery, "a", "shadow")
        text = config(
            'services "main" {\n'
            f"  load_balancer {{ servers = [{server(a)}] }}\n"
            '  mirror {\n    service    = "shadow"\n    percentage = 100\n  }\n'
            "}\n"
            'services "shadow" {\n'
            "  revisions = [\n"
            f'    {{ name = "v1", traffic_percent = 100, servers = [{server(shadow)}] }},\n'
            "  ]\n"
            "}\n"
        )
        async with running_gateway(load(text)) as gw:
            assert (await get(gw.port, "/m")).origin == "a"
            # The copy runs in the background; its outcome is counted once it has ended.
            await until(lambda: gw.metric("a3s_mirror_requests_total") == 1)
            assert gw.metric("a3s_mirror_requests_total", outcome="no_backend") == 0
            assert gw.metric("a3s_mirror_requests_total", service="main", outcome="sent") == 1
            assert heads(shadow, path=b"/m") == 1


# -- 6. a revision's sticky cookie and the split ------------------------------------------------


async def test_a_sticky_cookie_for_a_revision_does_not_advance_the_split(
    nursery: trio.Nursery,
) -> None:
    """A 50/50 split alternates between the revisions; requests pinned by a cookie to v2's
    backend, sent between the others, take no turn of that alternation."""
    with trio.fail_after(TEST_LIMIT):
        a, b = await serving(nursery, "a", "b")
        text = config(
            'services "main" {\n'
            '  load_balancer { sticky { cookie = "pin" } }\n'
            + revisions(a, b, percents=(50, 50), extra='  revision_header = "X-Revision"\n')
            + "}\n"
        )
        async with running_gateway(load(text)) as gw:
            pinned = await get(gw.port, "/", [("X-Revision", "v2")])  # the header: no turn
            assert pinned.origin == "b"
            set_cookie = pinned.header(b"set-cookie")
            assert set_cookie is not None
            cookie = set_cookie.split(b";")[0].decode()

            split: list[str] = []
            for _ in range(6):
                split.append((await get(gw.port, "/")).origin)
                sticky = await get(gw.port, "/", [("Cookie", cookie)])
                assert sticky.origin == "b"  # the cookie is honoured (v2 has a share)
                assert sticky.header(b"set-cookie") is None
            assert split in (["a", "b"] * 3, ["b", "a"] * 3), split
