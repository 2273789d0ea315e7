"""Properties of the retry policy (SPEC §8.12) and the body replay buffer.

* Backoff: before retry n the wait is within [0.5, 1] × min(max, interval × 2^(n−1)), and 0
  when the interval is 0, for every n and every random draw.
* Budget: however begin/end calls interleave with requests entering and leaving, the retries
  in progress never exceed max(budget_min, percent % of the active requests) at the moment
  each one was admitted, and every refusal is counted.
* Replay: every attempt of a replayable body reads exactly the events the client sent, in
  order, whatever the chunking and however far the earlier attempts read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio
from hypothesis import given
from hypothesis import strategies as st

from a3s_gateway.middleware.retry import RetryMiddleware
from a3s_gateway.protocols.events import BodyChunk, EndOfBody
from a3s_gateway.server.replay import ReplayBuffer
from a3s_gateway.upstream.seam import Handover, UpgradeUnavailable

if TYPE_CHECKING:
    from collections.abc import Sequence

    from a3s_gateway.protocols.events import Informational, ResponseHead


@given(
    interval=st.integers(0, 10_000),
    extra=st.integers(0, 100_000),
    retry=st.integers(1, 200),
    uniform=st.floats(0.0, 1.0, exclude_max=True),
)
def test_backoff_stays_within_its_jittered_cap(
    interval: int, extra: int, retry: int, uniform: float
) -> None:
    policy = RetryMiddleware("r", interval_ms=interval, max_interval_ms=interval + extra)
    wait = policy.backoff(retry, uniform)
    if interval == 0:
        assert wait == 0
        return
    cap = min((interval + extra) / 1000, interval / 1000 * 2.0 ** min(retry - 1, 60))
    assert 0.5 * cap - 1e-12 <= wait <= cap + 1e-12


steps = st.lists(st.sampled_from(["enter", "leave", "begin", "end"]), max_size=200)


@given(percent=st.integers(0, 100), minimum=st.integers(0, 5), script=steps)
def test_budget_never_admits_beyond_its_bound(
    percent: int, minimum: int, script: list[str]
) -> None:
    policy = RetryMiddleware("r", budget_percent=percent, budget_min=minimum)
    refused = 0
    for step in script:
        if step == "enter":
            policy.active_requests += 1
        elif step == "leave" and policy.active_requests > 0:
            policy.active_requests -= 1
        elif step == "begin":
            bound = max(minimum, percent * policy.active_requests / 100)
            before = policy.active_retries
            if policy.begin_retry("svc", "reset"):
                assert before < bound
                assert policy.active_retries == before + 1
            else:
                refused += 1
                assert before >= bound
        elif step == "end" and policy.active_retries > 0:
            policy.end_retry()
    assert policy.skipped.get("budget", 0) == refused
    assert sum(policy.retries.values()) + refused == script.count("begin")


class _Client:
    """A downstream that hands out a fixed body, one event per read."""

    def __init__(self, events: list[BodyChunk | EndOfBody]) -> None:
        self._events = list(events)
        self.request_complete = False
        self.response_started = False
        self.http_version = b"1.1"

    async def receive_body(self) -> BodyChunk | EndOfBody:
        await trio.lowlevel.checkpoint()
        event = self._events.pop(0)
        if isinstance(event, EndOfBody):
            self.request_complete = True
        return event

    def take_buffered_body(self) -> list[BodyChunk | EndOfBody] | None:
        return None

    async def send(self, event: Informational | ResponseHead | BodyChunk | EndOfBody) -> None:
        raise AssertionError("not used")

    async def send_batch(self, events: Sequence[ResponseHead | BodyChunk | EndOfBody]) -> None:
        raise AssertionError("not used")

    def close_after_response(self) -> None:
        raise AssertionError("not used")

    def acknowledge(self, nbytes: int) -> None:
        raise AssertionError("not used")

    def abort(self) -> None:
        raise AssertionError("not used")

    def take_over(self) -> Handover:
        raise UpgradeUnavailable


@given(
    chunks=st.lists(st.binary(min_size=1, max_size=64), max_size=12),
    limit=st.integers(0, 600),
    reads=st.lists(st.integers(0, 14), min_size=1, max_size=4),
)
def test_replayed_attempts_read_the_body_as_sent(
    chunks: list[bytes], limit: int, reads: list[int]
) -> None:
    sent: list[BodyChunk | EndOfBody] = [BodyChunk(chunk) for chunk in chunks]
    sent.append(EndOfBody())
    client = _Client(sent)
    buffer = ReplayBuffer(client, limit)

    async def main() -> None:
        for count in reads:  # earlier attempts read only part of the body
            if not buffer.replayable:
                return
            attempt = buffer.attempt()
            got = [await attempt.receive_body() for _ in range(min(count, len(sent)))]
            assert got == sent[: len(got)]
        if not buffer.replayable:
            assert sum(len(chunk) for chunk in chunks) > limit
            return
        attempt = buffer.attempt()
        got = [await attempt.receive_body() for _ in range(len(sent))]
        assert got == sent
        assert attempt.request_complete

    trio.run(main)
