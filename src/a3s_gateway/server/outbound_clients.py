"""The gateway's outbound clients for middlewares: HTTP (forward-auth, JWKS) and Redis.

Ring 1. ``Outbound`` is built by ``app.Gateway`` before the first config is compiled (the
middleware factories receive its ``deps()``); its ``run`` task lives in the root nursery for
the gateway's lifetime (the HTTP caller's pool reaper) and ``aclose`` ends its connections at
the end of a drain, bounded like the upstream pool's close.

Must not: be shared between gateways (each ``Gateway`` owns one), or start IO before ``run``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from a3s_gateway.middleware.outbound import MiddlewareDeps
from a3s_gateway.server.server_context import DateCache
from a3s_gateway.upstream.caller import PooledHttpCaller
from a3s_gateway.upstream.redis import RedisClients

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Outbound"]


class Outbound:
    """The outbound clients of one gateway."""

    __slots__ = ("_clock", "http", "redis")

    def __init__(self, *, clock: Callable[[], float] = DateCache.unix) -> None:
        self._clock = clock
        self.http = PooledHttpCaller()
        self.redis = RedisClients()

    def deps(self) -> MiddlewareDeps:
        """What the middleware factories get."""
        return MiddlewareDeps(clock=self._clock, http=self.http, redis=self.redis)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the clients' background work until cancelled; start with ``nursery.start``."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.http.run)
            task_status.started()

    async def aclose(self) -> None:
        """Close every outbound connection. A checkpoint."""
        await self.http.aclose()
        await self.redis.aclose()
