"""Helpers of the health and panic integration tests: a fast active check, counting and
awaiting probes at an origin, and which origin served a run of requests."""

from __future__ import annotations

from typing import Final

from tests.support.gateway import GatewayHandle, curl
from tests.support.origin import Origin

#: An active check that probes every 200 ms and flips on a single result.
CHECK: Final = """
    health_check {
      path                = "/health"
      interval            = "200ms"
      timeout             = "150ms"
      unhealthy_threshold = 1
      healthy_threshold   = 1
    }
"""


def probes(origin: Origin) -> int:
    return sum(1 for request in origin.requests if request.path == b"/health")


async def probed(origin: Origin, more: int) -> None:
    """Wait until ``origin`` has received ``more`` further probes: the gateway has then
    processed at least ``more - 1`` of them."""
    target = probes(origin) + more
    await origin.wait_for(lambda: probes(origin) >= target)


async def served_by(gateway: GatewayHandle, count: int) -> list[str]:
    """The ``origin`` names that answered ``count`` GET /work requests, in order."""
    origins = []
    for _ in range(count):
        result = await curl(gateway.url("/work"))
        assert result.response.status == 200, result.stderr
        origins.append(str(result.response.json()["origin"]))
    return origins
