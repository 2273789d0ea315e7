"""Traffic mirroring in the running gateway (issue #6, SPEC §7.7): an in-process ``Gateway``
with a primary and a shadow test origin. Real sockets and the real clock: every wait is for a
condition on the origins, bounded by the test's time limit.
"""

from __future__ import annotations

import pytest
import trio

from tests.support.gateway import (
    GatewayHandle,
    config_text,
    curl,
    running_gateway,
    server_entry,
    service_block,
)
from tests.support.origin import Origin, SlowHead

pytestmark = pytest.mark.integration


@pytest.fixture
async def primary(nursery: trio.Nursery) -> Origin:
    server = Origin("primary")
    await nursery.start(server.serve)
    return server


@pytest.fixture
async def shadow(nursery: trio.Nursery) -> Origin:
    server = Origin("shadow")
    await nursery.start(server.serve)
    return server


def mirrored(primary: Origin, shadow: Origin, settings: str) -> str:
    mirror = f'  mirror {{\n    service = "shadow"\n{settings}\n  }}\n'
    return config_text(
        [server_entry(primary)],
        service_extra=mirror,
        more=service_block("shadow", [server_entry(shadow)]),
    )


def mirror_state(gw: GatewayHandle) -> dict[str, int]:
    runtime = gw.gateway.runtime
    assert runtime is not None
    state = runtime.services["main"].mirror
    assert state is not None
    return state.outcomes


async def test_half_of_the_requests_are_mirrored_evenly(primary: Origin, shadow: Origin) -> None:
    async with running_gateway(mirrored(primary, shadow, "    percentage = 50")) as gw:
        for n in range(10):
            result = await curl(gw.url(f"/work?n={n}"))
            assert result.response.json()["origin"] == "primary"
        await shadow.wait_for(lambda: len(shadow.completed) == 5)
    # Error diffusion: every second request, not the first five.
    assert [r.target for r in shadow.requests] == [f"/work?n={n}".encode() for n in (1, 3, 5, 7, 9)]
    copy = shadow.requests[0]
    assert copy.values(b"x-forwarded-for") == [b"127.0.0.1"]  # as forwarded to the primary
    assert copy.values(b"via") == [b"1.1 a3s-gateway"]


async def test_a_shadow_that_never_answers_does_not_slow_the_primary(
    primary: Origin, shadow: Origin
) -> None:
    release = trio.Event()
    shadow.on("/work", SlowHead(release))
    config = mirrored(primary, shadow, '    percentage = 100\n    timeout = "30s"')
    async with running_gateway(config) as gw:
        results = [await curl(gw.url("/work")) for _ in range(5)]
        # Every primary answer came back while all five copies are still unanswered.
        await shadow.wait_for(lambda: len(shadow.completed) == 5)
        assert [r.response.status for r in results] == [200] * 5
        assert mirror_state(gw)["sent"] == 0
        assert mirror_state(gw)["saturated"] == 0
        release.set()


async def test_the_request_body_is_mirrored_up_to_its_bound(
    primary: Origin, shadow: Origin
) -> None:
    config = mirrored(primary, shadow, "    percentage = 100\n    max_body_bytes = 4096")
    async with running_gateway(config) as gw:
        small = await curl(gw.url("/small"), "--data-binary", "x" * 1000)
        big = await curl(gw.url("/big"), "--data-binary", "y" * 10000)
        await shadow.wait_for(lambda: len(shadow.completed) == 1)
        assert mirror_state(gw)["body_too_large"] == 1
    assert (small.response.status, big.response.status) == (200, 200)
    [copy] = shadow.requests
    assert (copy.method, copy.target, copy.body_length) == (b"POST", b"/small", 1000)
    assert [r.body_length for r in primary.requests] == [1000, 10000]
