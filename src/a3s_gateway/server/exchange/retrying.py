"""The retry middleware's attempts (SPEC §8.12), part of the dispatch stage: each attempt runs
the request sides after ``retry`` on a fresh copy of the request as it reached ``retry``, then
the dispatch, until an outcome is final.

Ring 1. Deadlines: none; the backoff between attempts is a ``trio.sleep``. A response head the
policy wants to retry is held and discarded (``Exchange.hold``, asked by ``relay.py``), so
nothing reaches the client before the decision; the body is replayed from a bounded buffer
(``server/replay.py``); every attempt avoids the backends tried before it while others are
available (``Exchange.tried``). The policy itself is ``middleware/retry.py`` (Ring 0).

Must not: answer what the dispatch answered, or retry past the policy's budget.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.middleware.retry import RetryMiddleware
from a3s_gateway.server.exchange.answer import answer
from a3s_gateway.server.exchange.dispatch import dispatch
from a3s_gateway.server.exchange.middlewares import complete, is_stream, request_sides
from a3s_gateway.server.exchange.plan import plan_chained
from a3s_gateway.server.replay import ReplayBuffer

if TYPE_CHECKING:
    from a3s_gateway.middleware import RequestState
    from a3s_gateway.server.exchange.context import Exchange

__all__ = ["retrying"]

log: Final = logging.getLogger("a3s_gateway.exchange")


async def retrying(ex: Exchange, base: RequestState, split: int) -> int:
    """Attempts of ``chain[split + 1:]`` and the dispatch, ``chain[split]`` being the retry
    middleware; the status sent to the client."""
    retry, service = ex.chain[split], ex.service
    assert isinstance(retry, RetryMiddleware)
    assert service is not None  # prepare routed the request
    attempts = _Attempts(ex, retry, base, split)
    try:
        while True:
            status = await attempts.attempt()
            if status is not None:
                return status
            attempts.number += 1
            log.info(
                "retrying request to service %s (retry %d of %d: %s)",
                service.name,
                attempts.number,
                retry.max_retries,
                attempts.reason,
            )
            await trio.sleep(retry.backoff(attempts.number, random.random()))
    finally:
        for _ in range(attempts.slots):  # taken for a retry that never ran (the client left)
            retry.end_retry()


class _Attempts:
    """The state of the attempts: the current one's number (0: the first) and request state,
    the budget slots taken and not yet given back, and the reason of the last retry."""

    __slots__ = (
        "_base",
        "_ex",
        "_replay",
        "_retry",
        "_split",
        "_stream",
        "number",
        "reason",
        "slots",
        "state",
    )

    def __init__(
        self, ex: Exchange, retry: RetryMiddleware, base: RequestState, split: int
    ) -> None:
        self._ex = ex
        self._retry = retry
        self._base = base
        self._split = split
        self._replay = ReplayBuffer(ex.down, retry.max_body_bytes)
        self._stream = is_stream(base)
        self.number = 0
        self.slots = 0
        self.reason = ""
        self.state = base

    def decide(self, kind: str, status: int) -> bool:
        """Whether the current attempt's outcome is retried (takes a budget slot if so)."""
        retry = self._retry
        if self.number >= retry.max_retries:
            return False
        why = retry.reason(kind, status)
        if why is None or not retry.may_repeat(why, method=self.state.method, stream=self._stream):
            return False
        if not self._replay.replayable:
            retry.skip("body_too_large")
            return False
        service = self._ex.service
        assert service is not None  # prepare routed the request
        if not retry.begin_retry(service.name, why):
            return False
        self.slots += 1
        self.reason = why
        return True

    def hold(self, status: int) -> bool:
        """The retry policy's look at a response head before it is sent."""
        return self.decide("status", status)

    async def attempt(self) -> int | None:
        """One attempt; the status sent to the client when final, None when it is retried."""
        ex, split = self._ex, self._split
        after = ex.chain[split + 1 :]
        state = self.state = self._base.copy()
        try:
            sent = await request_sides(ex, state, split + 1, len(ex.chain))
            if sent is not None:
                return sent
            plan_chained(ex, state)
            ex.first = self.number == 0
            ex.hold = self.hold
            failure = await dispatch(ex, self._replay.attempt())
            if failure is not None and failure.response is None:
                held = True  # the head was held and discarded: decided already
            else:
                held = failure is not None and self.decide(failure.kind, failure.status)
            if not held:
                if failure is not None and failure.response is not None:
                    await answer(ex.down, ex.request, ex.answer(failure.response))
                    ex.status = failure.status
                complete(after, state, ex.status)
                return ex.status
            assert failure is not None
            # Retried: the later middlewares saw this attempt end with its status.
            complete(after, state, failure.status)
            return None
        finally:
            if self.number > 0:  # this attempt was a retry: its budget slot is free again
                self.slots -= 1
                self._retry.end_retry()
