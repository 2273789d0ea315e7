"""Properties of the ``circuit-breaker`` state machine (SPEC §8.13).

Generated limits and sequences of arrivals, completions (success, failure, no outcome, in any
order of the requests in flight) and timer ticks, at times that mostly move forward in small and
large steps and sometimes arrive a little late. The ``Breaker`` must agree step by step with a
small reference model written from the SPEC table in another form (sets of requests whose outcome
counts, instead of generations); a half-open breaker never has more than its probe count in
flight; a breaker never admits anything before the cooldown since it last opened has passed. The
middleware, fed the same kind of traffic with HTTP statuses over several services, holds no
ticket once every admitted request has completed.
"""

from __future__ import annotations

import math
from collections.abc import Coroutine
from typing import Any, TypeVar

from hypothesis import given
from hypothesis import strategies as st

from a3s_gateway.middleware.breaker import (
    Admission,
    Breaker,
    BreakerState,
    CircuitBreakerMiddleware,
    Outcome,
)
from a3s_gateway.middleware.contract import RequestState
from a3s_gateway.protocols.responses import GeneratedResponse

T = TypeVar("T")

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class Model:
    """The SPEC table, directly: the requests whose outcome counts are a set, emptied at every
    transition; the probes in flight are a set too."""

    def __init__(self, failures: int, cooldown: float, successes: int, probes: int) -> None:
        self.failure_threshold = failures
        self.cooldown = cooldown
        self.success_threshold = successes
        self.max_probes = probes
        self.state = CLOSED
        self.clock = -math.inf
        self.opened_at = 0.0
        self.failures = 0
        self.successes = 0
        self.counting: set[int] = set()
        self.probes: set[int] = set()

    def enter(self, state: BreakerState) -> None:
        self.state = state
        self.counting.clear()
        self.probes.clear()
        self.failures = 0
        self.successes = 0
        if state is OPEN:
            self.opened_at = self.clock

    def tick(self, now: float) -> None:
        self.clock = max(self.clock, now)
        # The same float expression as the breaker's: ``clock - opened_at >= cooldown`` rounds
        # differently at the boundary.
        if self.state is OPEN and self.clock >= self.opened_at + self.cooldown:
            self.enter(HALF_OPEN)

    def admit(self, request: int, now: float) -> tuple[bool, int]:
        """Admitted?, and ``Retry-After`` when not."""
        self.tick(now)
        if self.state is CLOSED:
            self.counting.add(request)
            return True, 0
        if self.state is HALF_OPEN:
            if len(self.probes) < self.max_probes:
                self.probes.add(request)
                self.counting.add(request)
                return True, 0
            return False, 1
        return False, max(1, math.ceil(self.opened_at + self.cooldown - self.clock))

    def complete(self, request: int, outcome: Outcome, now: float) -> None:
        self.tick(now)
        if request not in self.counting:
            return
        self.counting.discard(request)
        self.probes.discard(request)
        if outcome is Outcome.NONE:
            return
        failed = outcome is Outcome.FAILURE
        if self.state is CLOSED:
            self.failures = self.failures + 1 if failed else 0
            if self.failures == self.failure_threshold:
                self.enter(OPEN)
        elif self.state is HALF_OPEN:
            if failed:
                self.enter(OPEN)
            else:
                self.successes += 1
                if self.successes == self.success_threshold:
                    self.enter(CLOSED)


#: Steps of the clock: none, small, about a cooldown, far beyond one; sometimes a late arrival.
steps = st.one_of(
    st.sampled_from([0.0, 0.0, 0.5, 1.0, 2.5, 5.0, 10.0]),
    st.floats(min_value=0.0, max_value=12.0),
    st.floats(min_value=-3.0, max_value=0.0),
)
outcomes = st.sampled_from(
    [Outcome.FAILURE, Outcome.FAILURE, Outcome.SUCCESS, Outcome.SUCCESS, Outcome.NONE]
)
#: ("call", outcome, step): a request that is admitted and completes at once (if admitted);
#: ("admit", step): one that stays in flight; ("complete", which in-flight request, outcome,
#: step); ("tick", step): the timer.
operations = st.lists(
    st.one_of(
        st.tuples(st.just("call"), outcomes, steps),
        st.tuples(st.just("admit"), steps),
        st.tuples(st.just("complete"), st.integers(0, 50), outcomes, steps),
        st.tuples(st.just("tick"), steps),
    ),
    min_size=20,
    max_size=60,
)
limits = st.tuples(
    st.integers(1, 4),  # failure_threshold
    st.sampled_from([1.0, 2.5, 5.0, 10.0]),  # cooldown
    st.integers(1, 3),  # success_threshold
    st.integers(1, 3),  # max_probes
)

Operation = tuple[Any, ...]


@given(limit=limits, ops=operations)
def test_the_breaker_follows_the_reference_model(
    limit: tuple[int, float, int, int], ops: list[Operation]
) -> None:
    failures, cooldown, successes, probes = limit
    breaker = Breaker(
        failure_threshold=failures,
        cooldown=cooldown,
        success_threshold=successes,
        max_probes=probes,
    )
    model = Model(failures, cooldown, successes, probes)
    in_flight: list[tuple[int, Admission]] = []
    now = 0.0
    for number, op in enumerate(ops):
        now = max(0.0, now + op[-1])
        if op[0] in ("admit", "call"):
            admission = breaker.admit(now)
            allowed, retry_after = model.admit(number, now)
            assert admission.allowed is allowed
            assert admission.retry_after == retry_after
            assert admission.probe is (allowed and model.state is HALF_OPEN)
            if allowed and op[0] == "call":
                breaker.record(admission, op[1], now)
                model.complete(number, op[1], now)
            elif allowed:
                in_flight.append((number, admission))
        elif op[0] == "complete" and in_flight:
            request, admission = in_flight.pop(op[1] % len(in_flight))
            breaker.record(admission, op[2], now)
            model.complete(request, op[2], now)
        else:
            model.tick(now)
            assert breaker.advance(now) is model.state
        assert breaker.state is model.state
        assert breaker.clock == model.clock
        assert breaker.failures == model.failures
        assert breaker.successes == model.successes
        assert breaker.probes == len(model.probes)
        expected_deadline = model.opened_at + cooldown if model.state is OPEN else None
        assert breaker.half_open_at == expected_deadline


@given(limit=limits, ops=operations)
def test_half_open_never_has_more_probes_in_flight_than_allowed(
    limit: tuple[int, float, int, int], ops: list[Operation]
) -> None:
    failures, cooldown, successes, probes = limit
    breaker = Breaker(
        failure_threshold=failures,
        cooldown=cooldown,
        success_threshold=successes,
        max_probes=probes,
    )
    in_flight: list[Admission] = []
    now = 0.0
    for op in ops:
        now = max(0.0, now + op[-1])
        if op[0] in ("admit", "call"):
            admission = breaker.admit(now)
            if admission.allowed and op[0] == "call":
                breaker.record(admission, op[1], now)
            elif admission.allowed:
                in_flight.append(admission)
        elif op[0] == "complete" and in_flight:
            breaker.record(in_flight.pop(op[1] % len(in_flight)), op[2], now)
        else:
            breaker.advance(now)
        # Probes admitted in this half-open period and not completed: the real concurrency.
        current = [a for a in in_flight if a.probe and a.generation == breaker.generation]
        if breaker.state is HALF_OPEN:
            assert len(current) == breaker.probes <= probes
        else:
            assert current == []
            assert breaker.probes == 0


@given(limit=limits, ops=operations)
def test_nothing_is_admitted_before_the_cooldown_since_the_last_opening(
    limit: tuple[int, float, int, int], ops: list[Operation]
) -> None:
    failures, cooldown, successes, probes = limit
    openings: list[float] = []

    def seen(old: BreakerState, new: BreakerState, clock: float) -> None:
        del old
        if new is OPEN:
            openings.append(clock)

    breaker = Breaker(
        failure_threshold=failures,
        cooldown=cooldown,
        success_threshold=successes,
        max_probes=probes,
        on_transition=seen,
    )
    in_flight: list[Admission] = []
    now = 0.0
    for op in ops:
        now = max(0.0, now + op[-1])
        if op[0] in ("admit", "call"):
            admission = breaker.admit(now)
            if openings:
                remaining = openings[-1] + cooldown - breaker.clock
                assert admission.allowed is False or remaining <= 0
                if not admission.allowed and remaining > 0:
                    assert admission.retry_after == math.ceil(remaining)
            if admission.allowed and op[0] == "call":
                breaker.record(admission, op[1], now)
            elif admission.allowed:
                in_flight.append(admission)
        elif op[0] == "complete" and in_flight:
            breaker.record(in_flight.pop(op[1] % len(in_flight)), op[2], now)
        else:
            breaker.advance(now)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (the breaker's ``request`` awaits nothing)."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result
    coroutine.close()
    raise AssertionError("the coroutine suspended")


def make_state(now: float, service: str) -> RequestState:
    return RequestState(
        method=b"GET",
        path=b"/",
        query=b"",
        headers=[],
        authority=b"example.com",
        client_ip="192.0.2.1",
        peer_ip="192.0.2.1",
        tls=False,
        now=now,
        service=service,
    )


statuses = st.sampled_from([0, 101, 200, 204, 404, 429, 500, 502, 503, 504])
traffic = st.lists(
    st.one_of(
        st.tuples(st.just("request"), st.sampled_from(["a", "b", "c"]), steps),
        st.tuples(st.just("complete"), st.integers(0, 50), statuses, st.booleans(), steps),
    ),
    max_size=120,
)


@given(limit=limits, ops=traffic)
def test_the_middleware_frees_every_ticket_and_probe(
    limit: tuple[int, float, int, int], ops: list[Operation]
) -> None:
    failures, cooldown, successes, probes = limit
    mw = CircuitBreakerMiddleware(
        "cb",
        failure_threshold=failures,
        cooldown_secs=cooldown,
        success_threshold=successes,
        half_open_max_requests=probes,
    )
    in_flight: list[RequestState] = []
    now = 0.0
    for op in ops:
        now = max(0.0, now + op[-1])
        if op[0] == "request":
            state = make_state(now, op[1])
            answer: GeneratedResponse | None = run(mw.request(state))
            if answer is None:
                in_flight.append(state)
            else:
                assert answer.head.status == 503
                assert mw.state_of(op[1]) in (OPEN, HALF_OPEN)
        elif in_flight:
            state = in_flight.pop(op[1] % len(in_flight))
            if op[3]:
                mw.response(state, op[2] or 200, [])
            mw.completed(state, op[2])
        for breaker in mw.breakers.values():
            assert breaker.probes <= probes
        assert mw.in_flight == len(in_flight)
    for state in in_flight:
        mw.completed(state, 0)
    assert mw.in_flight == 0
    assert all(breaker.probes == 0 for breaker in mw.breakers.values())
