"""The discovery provider's timing (SPEC §10.5): the poll cadence (from the start of the
previous poll, never overlapping), concurrent seeds, per-request timeouts, ``started()`` at
once, and publishing only what changed.

Virtual time (``autojump_clock``): the seeds are a fake ``fetch`` that answers from a table
after a delay and honours ``timeout`` the way ``http_fetch.fetch`` does (one bound, then a
``FetchError``), so no socket is involved.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import msgspec
import pytest
import trio
import trio.testing

from a3s_gateway.config.schema import DiscoveryProvider
from a3s_gateway.config.values import dec_hook
from a3s_gateway.providers.discovery import WELL_KNOWN, ServiceDiscovery
from a3s_gateway.providers.dynamic import Snapshot
from a3s_gateway.providers.http_fetch import Fetched, FetchError

A = "http://a.test:8080"
B = "http://b.test:8080"


def settings(*seeds: str, **fields: object) -> DiscoveryProvider:
    tree = {"seeds": [{"url": seed} for seed in seeds], **fields}
    return msgspec.convert(tree, type=DiscoveryProvider, dec_hook=dec_hook)


def document(rule: str = "Path(`/a`)", version: str = "1.0.0") -> bytes:
    return json.dumps({"name": "api", "version": version, "routes": [{"rule": rule}]}).encode()


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    delay: float = 0.0


@dataclass(frozen=True)
class Call:
    at: float
    url: str
    timeout: float
    max_body: int


class FakeSeeds:
    """A ``fetch`` answering from ``answers`` (URL → ``Answer``; 404 when absent)."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
        self.calls: list[Call] = []
        self.in_flight = 0
        self.most_in_flight = 0

    def instance(self, seed: str, body: bytes, *, health: int = 200, delay: float = 0.0) -> None:
        self.answers[seed + WELL_KNOWN] = Answer(200, body, delay)
        self.answers[seed + "/health"] = Answer(health, b"", delay)

    def documents(self, seed: str) -> list[float]:
        """When the document of ``seed`` was asked for."""
        return [call.at for call in self.calls if call.url == seed + WELL_KNOWN]

    async def __call__(
        self,
        url: str,
        *,
        timeout: float,  # noqa: ASYNC109 -- the shape of http_fetch.fetch
        max_body: int,
    ) -> Fetched:
        self.calls.append(Call(trio.current_time(), url, timeout, max_body))
        answer = self.answers.get(url, Answer(404))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            with trio.fail_after(timeout):
                await trio.sleep(answer.delay)
        except trio.TooSlowError:
            raise FetchError(f"GET {url}: no complete answer within {timeout:g} s") from None
        finally:
            self.in_flight -= 1
        return Fetched(answer.status, (), answer.body)


def state(provider: ServiceDiscovery) -> str:
    return provider.status.state


class Published:
    """A ``publish`` that records what and when."""

    def __init__(self) -> None:
        self.snapshots: list[tuple[float, Snapshot]] = []

    def __call__(self, snapshot: Snapshot) -> None:
        self.snapshots.append((trio.current_time(), snapshot))

    @property
    def times(self) -> list[float]:
        return [at for at, _ in self.snapshots]


async def running(
    nursery: trio.Nursery, provider: ServiceDiscovery, published: Published
) -> trio.CancelScope:
    """Start ``provider.run`` in its own cancel scope, returned for the test to stop it."""
    scope = trio.CancelScope()

    async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await provider.run(published, task_status=task_status)

    await nursery.start(run)
    return scope


async def test_run_reports_started_at_once_and_publishes_after_the_first_poll(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    fake, published = FakeSeeds(), Published()
    fake.instance(A, document(), delay=3)
    provider = ServiceDiscovery(settings(A), fetch=fake)
    await running(nursery, provider, published)
    assert trio.current_time() == 0
    assert published.snapshots == []
    assert state(provider) == "starting"
    await trio.sleep(10)
    assert published.times == [6]  # document 3 s, health 3 s
    assert list(published.snapshots[0][1].services) == ["api"]
    assert state(provider) == "ok"


async def test_polls_start_every_interval_from_the_previous_start(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    fake, published = FakeSeeds(), Published()
    fake.instance(A, document(), delay=2)
    provider = ServiceDiscovery(settings(A, poll_interval_secs=10), fetch=fake)
    await running(nursery, provider, published)
    await trio.sleep(45)
    assert fake.documents(A) == [0, 10, 20, 30, 40]


async def test_a_poll_longer_than_the_interval_is_followed_at_once_never_overlapped(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    fake, published = FakeSeeds(), Published()
    fake.instance(A, document(), delay=8)  # 16 s per poll
    provider = ServiceDiscovery(settings(A, poll_interval_secs=10, timeout_secs=30), fetch=fake)
    await running(nursery, provider, published)
    await trio.sleep(50)
    assert fake.documents(A) == [0, 16, 32, 48]
    assert fake.most_in_flight == 1


async def test_seeds_are_polled_concurrently(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    fake, published = FakeSeeds(), Published()
    fake.instance(A, document(), delay=4)
    fake.instance(B, document(), delay=4)
    provider = ServiceDiscovery(settings(A, B, poll_interval_secs=60), fetch=fake)
    await running(nursery, provider, published)
    await trio.sleep(30)
    assert fake.documents(A) == fake.documents(B) == [0]
    assert published.times == [8]
    assert fake.most_in_flight == 2


async def test_each_request_is_bounded_by_timeout_secs(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    fake, published = FakeSeeds(), Published()
    fake.instance(A, document(), delay=math.inf)  # never answers
    fake.instance(B, document())
    provider = ServiceDiscovery(settings(A, B, timeout_secs=5, max_document_bytes=4096), fetch=fake)
    await running(nursery, provider, published)
    await trio.sleep(20)
    [(at, snapshot)] = published.snapshots
    assert at == 5  # the poll ends when the silent seed's request times out
    balancer = snapshot.services["api"].load_balancer
    assert balancer is not None
    assert [server.url.text for server in balancer.servers] == [B]
    assert {(call.timeout, call.max_body) for call in fake.calls} == {(5.0, 4096)}
    assert state(provider) == "error"
    assert provider.status.last_error == (
        f"seed {A}: GET {A}{WELL_KNOWN}: no complete answer within 5 s"
    )


async def test_a_health_check_that_times_out_is_unhealthy_and_a_failure(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    fake = FakeSeeds()
    fake.instance(A, document())
    fake.answers[A + "/health"] = Answer(200, b"", math.inf)
    provider = ServiceDiscovery(settings(A, timeout_secs=2), fetch=fake)
    snapshot = await provider.poll()
    assert trio.current_time() == 2
    balancer = snapshot.services["api"].load_balancer
    assert balancer is not None
    assert balancer.servers == ()
    assert state(provider) == "error"
    assert provider.status.last_error == (
        f"seed {A}: health check: GET {A}/health: no complete answer within 2 s"
    )


async def test_a_snapshot_is_published_only_when_it_changes(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    fake, published = FakeSeeds(), Published()
    fake.instance(A, document())
    provider = ServiceDiscovery(settings(A, poll_interval_secs=10), fetch=fake)
    await running(nursery, provider, published)
    await trio.sleep(25)  # polls at 0, 10, 20
    assert published.times == [0]

    fake.instance(A, document(version="1.0.1"))  # same routes, same server: nothing to publish
    await trio.sleep(10)
    assert published.times == [0]

    fake.instance(A, document(rule="Path(`/b`)"))
    await trio.sleep(10)
    assert published.times == [0, 40]
    assert published.snapshots[-1][1].routers["discovered-api"].rule == "Path(`/b`)"

    fake.instance(A, document(rule="Path(`/b`)"), health=503)
    await trio.sleep(10)
    assert published.times == [0, 40, 50]


async def test_an_empty_first_poll_is_published_too(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    fake, published = FakeSeeds(), Published()
    provider = ServiceDiscovery(settings(A), fetch=fake)
    await running(nursery, provider, published)
    await trio.sleep(1)
    assert published.snapshots == [(0, Snapshot())]


async def test_cancelling_run_ends_a_poll_in_flight(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    fake, published = FakeSeeds(), Published()
    fake.instance(A, document(), delay=math.inf)
    provider = ServiceDiscovery(settings(A, timeout_secs=60), fetch=fake)
    scope = await running(nursery, provider, published)
    await trio.sleep(1)
    assert fake.in_flight == 1
    scope.cancel()
    await trio.testing.wait_all_tasks_blocked()
    assert fake.in_flight == 0
    assert published.snapshots == []


@pytest.mark.parametrize("remove_after", [1, 2, 4])
async def test_a_silent_seed_is_removed_after_remove_after_failures_polls(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, remove_after: int
) -> None:
    fake, published = FakeSeeds(), Published()
    fake.instance(A, document())
    provider = ServiceDiscovery(
        settings(A, poll_interval_secs=10, timeout_secs=1, remove_after_failures=remove_after),
        fetch=fake,
    )
    await running(nursery, provider, published)
    await trio.sleep(5)
    fake.instance(A, document(), delay=math.inf)
    await trio.sleep(10 * remove_after)
    # Unavailable at the first failed poll (t = 11), removed at the last (t = 10 n + 1).
    times = published.times
    assert times[0] == 0
    assert times[-1] == 10 * remove_after + 1
    assert published.snapshots[-1][1] == Snapshot()
    if remove_after > 1:
        assert times == [0, 11, 10 * remove_after + 1]
