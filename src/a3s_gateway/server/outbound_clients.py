"""The gateway's outbound clients for middlewares: HTTP (forward-auth, JWKS) and Redis, and
the shell's side of the middlewares' file reading and warnings.

Ring 1. ``Outbound`` is built by ``app.Gateway`` before the first config is compiled (the
middleware factories receive its ``deps()``); its ``run`` task lives in the root nursery for
the gateway's lifetime (the HTTP caller's pool reaper) and ``aclose`` ends its connections at
the end of a drain, bounded like the upstream pool's close. ``read_file`` (a ``jwt`` key file,
read when the definition is built: at start, or in the reload's compile thread) and
``log_warning`` (a middleware's warning, to the ``a3s_gateway.<topic>`` logger) are what keeps
files and logging out of the Ring 0 middlewares.

Must not: be shared between gateways (each ``Gateway`` owns one), or start IO before ``run``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from a3s_gateway.middleware.outbound import MiddlewareDeps
from a3s_gateway.server.server_context import DateCache
from a3s_gateway.upstream.caller import PooledHttpCaller
from a3s_gateway.upstream.redis import RedisClients

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Outbound", "log_warning", "read_file"]


def read_file(path: str, limit: int) -> bytes:
    """At most the first ``limit`` bytes of the file ``path`` (``MiddlewareDeps.read_file``);
    ``OSError`` when it cannot be read."""
    with open(path, "rb") as handle:
        return handle.read(limit)


def log_warning(topic: str, message: str) -> None:
    """A middleware's warning, on the ``a3s_gateway.<topic>`` logger (``MiddlewareDeps.warn``);
    the message is passed as an argument, so a ``%`` in it is printed as it is."""
    logging.getLogger(f"a3s_gateway.{topic}").warning("%s", message)


class Outbound:
    """The outbound clients of one gateway."""

    __slots__ = ("_clock", "http", "redis")

    def __init__(self, *, clock: Callable[[], float] = DateCache.unix) -> None:
        self._clock = clock
        self.http = PooledHttpCaller()
        self.redis = RedisClients()

    def deps(self) -> MiddlewareDeps:
        """What the middleware factories get."""
        return MiddlewareDeps(
            clock=self._clock,
            http=self.http,
            redis=self.redis,
            read_file=read_file,
            warn=log_warning,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the clients' background work until cancelled; start with ``nursery.start``."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.http.run)
            task_status.started()

    async def aclose(self) -> None:
        """Close every outbound connection. A checkpoint."""
        await self.http.aclose()
        await self.redis.aclose()
