"""The ``circuit-breaker`` middleware (SPEC §8.13): each transition and verdict, explicit times."""

from __future__ import annotations

import math

import msgspec
import pytest

from a3s_gateway.config.schema_middlewares import CircuitBreaker
from a3s_gateway.middleware.breaker import (
    BREAKER_OPEN,
    Admission,
    Breaker,
    BreakerState,
    CircuitBreakerMiddleware,
    Outcome,
)
from a3s_gateway.middleware.contract import RequestState
from a3s_gateway.protocols.headers import Headers

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
SUCCESS, FAILURE, NONE = Outcome.SUCCESS, Outcome.FAILURE, Outcome.NONE


def make_state(now: float = 0.0, service: str = "api") -> RequestState:
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


def breaker(
    failures: int = 3, cooldown: float = 10.0, successes: int = 1, probes: int = 1
) -> Breaker:
    return Breaker(
        failure_threshold=failures,
        cooldown=cooldown,
        success_threshold=successes,
        max_probes=probes,
    )


def middleware(**fields: object) -> CircuitBreakerMiddleware:
    block = msgspec.convert({"type": "circuit-breaker", **fields}, CircuitBreaker)
    return CircuitBreakerMiddleware.from_config("cb", block)


def fail(target: Breaker, count: int, now: float) -> None:
    for _ in range(count):
        admission = target.admit(now)
        assert admission.allowed
        target.record(admission, FAILURE, now)


def opened(now: float = 0.0, *, successes: int = 1, probes: int = 1) -> Breaker:
    """A breaker (threshold 3, cooldown 10 s) that opened at ``now``."""
    target = breaker(successes=successes, probes=probes)
    fail(target, 3, now)
    assert target.state is OPEN
    return target


# --------------------------------------------------------------------------- limits


@pytest.mark.parametrize(
    "limits",
    [
        {"failure_threshold": 0},
        {"success_threshold": 0},
        {"max_probes": 0},
        {"cooldown": 0.0},
        {"cooldown": -1.0},
        {"cooldown": math.nan},
    ],
)
def test_bad_limits_are_refused(limits: dict[str, float]) -> None:
    arguments: dict[str, float] = {
        "failure_threshold": 1,
        "cooldown": 1.0,
        "success_threshold": 1,
        "max_probes": 1,
        **limits,
    }
    with pytest.raises(ValueError, match="must be"):
        Breaker(
            failure_threshold=int(arguments["failure_threshold"]),
            cooldown=arguments["cooldown"],
            success_threshold=int(arguments["success_threshold"]),
            max_probes=int(arguments["max_probes"]),
        )


def test_the_middleware_refuses_bad_limits_at_construction() -> None:
    with pytest.raises(ValueError, match="max_probes must be >= 1"):
        CircuitBreakerMiddleware("cb", half_open_max_requests=0)


# --------------------------------------------------------------------------- closed


def test_a_new_breaker_is_closed_and_admits() -> None:
    target = breaker()
    admission = target.admit(0.0)
    assert admission == Admission(allowed=True, probe=False, generation=0, retry_after=0)
    assert target.state is CLOSED


def test_consecutive_failures_open_at_the_threshold() -> None:
    target = breaker(failures=3)
    fail(target, 2, 1.0)
    assert target.state is CLOSED
    assert target.failures == 2
    fail(target, 1, 2.0)
    assert target.state is OPEN
    assert target.failures == 0
    assert target.half_open_at == 12.0


def test_a_success_resets_the_failure_count() -> None:
    target = breaker(failures=3)
    fail(target, 2, 0.0)
    admission = target.admit(0.0)
    target.record(admission, SUCCESS, 0.0)
    assert target.failures == 0
    fail(target, 2, 0.0)
    assert target.state is CLOSED


def test_no_outcome_changes_no_count() -> None:
    target = breaker(failures=2)
    fail(target, 1, 0.0)
    target.record(target.admit(0.0), NONE, 0.0)
    assert target.failures == 1
    fail(target, 1, 0.0)
    assert target.state is OPEN


def test_a_threshold_of_one_opens_on_the_first_failure() -> None:
    target = breaker(failures=1)
    fail(target, 1, 5.0)
    assert target.state is OPEN


def test_outcomes_of_requests_admitted_before_opening_are_ignored() -> None:
    target = breaker(failures=2)
    slow = [target.admit(0.0) for _ in range(3)]
    fail(target, 2, 1.0)
    assert target.state is OPEN
    generation = target.generation
    for admission in slow:
        target.record(admission, FAILURE, 2.0)
    assert target.state is OPEN
    assert target.generation == generation
    assert target.half_open_at == 11.0  # the cooldown did not restart


# --------------------------------------------------------------------------- open


def test_open_rejects_with_the_remaining_cooldown_rounded_up() -> None:
    target = opened(100.0)
    admission = target.admit(100.0)
    assert admission.allowed is False
    assert admission.retry_after == 10
    assert target.admit(100.2).retry_after == 10  # 9.8 → 10
    assert target.admit(109.0).retry_after == 1
    assert target.admit(109.9).retry_after == 1  # 0.1 → 1
    assert target.state is OPEN


def test_open_turns_half_open_exactly_when_the_cooldown_has_passed() -> None:
    target = opened(100.0)
    assert target.advance(109.999) is OPEN
    assert target.advance(110.0) is HALF_OPEN
    assert target.half_open_at is None


def test_a_time_earlier_than_the_clock_does_not_move_it_back() -> None:
    target = opened(100.0)
    target.advance(105.0)
    admission = target.admit(101.0)  # arrived late through an awaiting middleware
    assert admission.retry_after == 5
    assert target.clock == 105.0


def test_the_cooldown_starts_at_the_latest_time_seen() -> None:
    target = breaker(failures=1)
    first = target.admit(0.0)
    target.advance(7.0)  # other traffic moved the clock
    target.record(first, FAILURE, 0.0)
    assert target.half_open_at == 17.0


def test_a_rejection_is_not_recorded() -> None:
    target = opened(0.0)
    rejection = target.admit(1.0)
    generation = target.generation
    target.record(rejection, FAILURE, 1.0)
    assert target.generation == generation
    assert target.half_open_at == 10.0


# --------------------------------------------------------------------------- half-open


def test_half_open_admits_at_most_the_probe_count() -> None:
    target = opened(0.0, probes=2)
    first, second, third = (target.admit(10.0) for _ in range(3))
    assert (first.allowed, first.probe) == (True, True)
    assert (second.allowed, second.probe) == (True, True)
    assert third.allowed is False
    assert third.retry_after == 1  # rejected as in open; the cooldown is over
    assert target.probes == 2
    assert target.state is HALF_OPEN


def test_a_probe_success_closes_with_counters_reset() -> None:
    target = opened(0.0)
    probe = target.admit(10.0)
    target.record(probe, SUCCESS, 10.5)
    assert target.state is CLOSED
    assert (target.failures, target.successes, target.probes) == (0, 0, 0)
    fail(target, 2, 11.0)
    assert target.state is CLOSED  # the full threshold is needed again


def test_success_threshold_probe_successes_close() -> None:
    target = opened(0.0, successes=3, probes=1)
    for expected in (1, 2):
        probe = target.admit(10.0)
        assert probe.allowed
        target.record(probe, SUCCESS, 10.0)
        assert target.state is HALF_OPEN
        assert target.successes == expected
    target.record(target.admit(10.0), SUCCESS, 10.0)
    assert target.state is CLOSED


def test_a_probe_failure_reopens_and_restarts_the_cooldown() -> None:
    target = opened(0.0, successes=2, probes=2)
    good, bad = target.admit(10.0), target.admit(10.0)
    target.record(good, SUCCESS, 10.0)
    target.record(bad, FAILURE, 13.0)
    assert target.state is OPEN
    assert target.half_open_at == 23.0
    assert target.admit(22.0).allowed is False
    assert target.admit(23.0).probe is True


def test_a_probe_without_outcome_only_frees_its_slot() -> None:
    target = opened(0.0)
    probe = target.admit(10.0)
    assert target.admit(10.0).allowed is False
    target.record(probe, NONE, 11.0)
    assert target.state is HALF_OPEN
    assert target.probes == 0
    assert target.successes == 0
    assert target.admit(11.0).probe is True


def test_a_request_from_closed_neither_closes_nor_reopens_half_open() -> None:
    target = breaker(failures=1)
    slow_good, slow_bad = target.admit(0.0), target.admit(0.0)
    fail(target, 1, 0.0)
    assert target.advance(10.0) is HALF_OPEN
    target.record(slow_good, SUCCESS, 10.0)
    assert target.state is HALF_OPEN
    target.record(slow_bad, FAILURE, 10.0)
    assert target.state is HALF_OPEN
    assert target.probes == 0


def test_a_probe_of_an_earlier_half_open_period_frees_no_current_slot() -> None:
    target = opened(0.0, probes=2)
    old, failing = target.admit(10.0), target.admit(10.0)
    target.record(failing, FAILURE, 10.0)  # reopen: cooldown until 20
    fresh = target.admit(20.0)
    assert fresh.probe
    target.record(old, NONE, 20.0)
    assert target.probes == 1
    target.admit(20.0)
    assert target.admit(20.0).allowed is False  # still only two in flight


def test_transitions_are_reported_with_the_clock() -> None:
    seen: list[tuple[BreakerState, BreakerState, float]] = []
    target = Breaker(
        failure_threshold=1,
        cooldown=5.0,
        on_transition=lambda old, new, clock: seen.append((old, new, clock)),
    )
    fail(target, 1, 1.0)
    probe = target.admit(6.0)
    target.record(probe, FAILURE, 6.5)
    target.record(target.admit(11.5), SUCCESS, 12.0)
    assert seen == [
        (CLOSED, OPEN, 1.0),
        (OPEN, HALF_OPEN, 6.0),
        (HALF_OPEN, OPEN, 6.5),
        (OPEN, HALF_OPEN, 11.5),
        (HALF_OPEN, CLOSED, 12.0),
    ]
    assert target.generation == 5


# --------------------------------------------------------------------------- middleware


async def test_from_config_uses_the_spec_defaults() -> None:
    mw = middleware()
    state = make_state(0.0)
    for _ in range(4):
        assert await mw.request(state) is None
        mw.completed(state, 502)
    assert mw.state_of("api") is CLOSED
    assert await mw.request(state) is None
    mw.completed(state, 502)
    assert mw.state_of("api") is OPEN
    assert mw.next_deadline() == 30.0


async def test_open_answers_503_with_retry_after() -> None:
    mw = middleware(failure_threshold=1, cooldown_secs=30)
    state = make_state(10.0)
    assert await mw.request(state) is None
    mw.completed(state, 500)
    response = await mw.request(make_state(12.5))
    assert response is not None
    assert response.head.status == 503
    assert msgspec.json.decode(response.body) == {"error": BREAKER_OPEN, "status": 503}
    headers = dict(response.head.headers)
    assert headers[b"retry-after"] == b"28"
    assert headers[b"content-type"] == b"application/json"
    assert response.close is False


async def test_each_service_has_its_own_breaker() -> None:
    mw = middleware(failure_threshold=1)
    bad = make_state(0.0, service="bad")
    assert await mw.request(bad) is None
    mw.completed(bad, 503)
    assert mw.state_of("bad") is OPEN
    assert await mw.request(make_state(1.0, service="bad")) is not None
    assert await mw.request(make_state(1.0, service="good")) is None
    assert mw.state_of("good") is CLOSED
    assert set(mw.breakers) == {"bad", "good"}


@pytest.mark.parametrize(
    ("status", "headers", "outcome"),
    [
        (500, [], FAILURE),
        (502, [], FAILURE),
        (503, [], FAILURE),  # another breaker's 503, or the pool's
        (504, [], FAILURE),
        (200, [], SUCCESS),
        (101, [], SUCCESS),  # WebSocket upgrade
        (404, [], SUCCESS),
        (429, [], SUCCESS),
        (200, [(b"grpc-status", b"14")], FAILURE),
        (200, [(b"grpc-status", b" 4 ")], FAILURE),
        (200, [(b"grpc-status", b"13")], FAILURE),
        (200, [(b"grpc-status", b"0")], SUCCESS),
        (200, [(b"grpc-status", b"5")], SUCCESS),
    ],
)
async def test_the_verdict_of_a_completed_response(
    status: int, headers: Headers, outcome: Outcome
) -> None:
    mw = middleware(failure_threshold=2)
    first = make_state(0.0)
    assert await mw.request(first) is None
    mw.completed(first, 500)
    state = make_state(1.0)
    assert await mw.request(state) is None
    mw.response(state, status, list(headers))
    mw.completed(state, status)
    breaker_ = mw.breakers["api"]
    if outcome is FAILURE:
        assert breaker_.state is OPEN
    else:
        assert breaker_.state is CLOSED
        assert breaker_.failures == 0


async def test_a_gateway_error_without_a_response_side_call_is_a_failure() -> None:
    mw = middleware(failure_threshold=1)
    state = make_state(0.0)
    assert await mw.request(state) is None
    mw.completed(state, 504)
    assert mw.state_of("api") is OPEN


async def test_a_grpc_error_form_counts_by_the_head_seen() -> None:
    # The gateway's 5xx passes the response sides, then goes to a gRPC client as 200.
    mw = middleware(failure_threshold=1)
    state = make_state(0.0)
    assert await mw.request(state) is None
    mw.response(state, 503, [])
    mw.completed(state, 200)
    assert mw.state_of("api") is OPEN


@pytest.mark.parametrize(
    ("head", "state_after", "failures"),
    [
        (None, CLOSED, 1),  # the client went away before any outcome: neither
        (200, CLOSED, 1),  # a good head, then cut short: cannot tell who: neither
        (502, OPEN, 0),  # the outcome was known before the end: failure
    ],
)
async def test_status_zero(head: int | None, state_after: BreakerState, failures: int) -> None:
    mw = middleware(failure_threshold=2)
    first = make_state(0.0)
    assert await mw.request(first) is None
    mw.completed(first, 500)
    state = make_state(1.0)
    assert await mw.request(state) is None
    if head is not None:
        mw.response(state, head, [])
    mw.completed(state, 0)
    assert mw.state_of("api") is state_after
    assert mw.breakers["api"].failures == failures


async def test_a_probe_frees_its_slot_whatever_the_outcome() -> None:
    mw = middleware(failure_threshold=1, cooldown_secs=5, success_threshold=2)
    state = make_state(0.0)
    assert await mw.request(state) is None
    mw.completed(state, 500)
    probe = make_state(5.0)
    assert await mw.request(probe) is None
    assert await mw.request(make_state(5.0)) is not None  # the one slot is taken
    mw.completed(probe, 0)
    assert mw.breakers["api"].probes == 0
    second = make_state(6.0)
    assert await mw.request(second) is None
    mw.completed(second, 200)
    assert mw.state_of("api") is HALF_OPEN
    third = make_state(6.0)
    assert await mw.request(third) is None
    mw.completed(third, 204)
    assert mw.state_of("api") is CLOSED
    assert mw.in_flight == 0


async def test_a_completion_without_admission_changes_nothing() -> None:
    mw = middleware(failure_threshold=1)
    mw.completed(make_state(0.0), 500)
    mw.response(make_state(0.0), 500, [])
    assert mw.state_of("api") is CLOSED
    assert mw.breakers == {}


async def test_a_rejected_request_holds_no_ticket() -> None:
    mw = middleware(failure_threshold=1)
    state = make_state(0.0)
    assert await mw.request(state) is None
    mw.completed(state, 500)
    rejected = make_state(1.0)
    assert await mw.request(rejected) is not None
    assert mw.in_flight == 0


async def test_re_entering_without_completion_frees_the_earlier_probe() -> None:
    mw = middleware(failure_threshold=1, cooldown_secs=1)
    state = make_state(0.0)
    assert await mw.request(state) is None
    mw.completed(state, 500)
    again = make_state(1.0)
    assert await mw.request(again) is None
    assert await mw.request(again) is None  # the first admission's slot was freed
    assert mw.breakers["api"].probes == 1
    assert mw.in_flight == 1


async def test_tick_makes_half_open_visible_without_traffic() -> None:
    mw = middleware(failure_threshold=1, cooldown_secs=10)
    assert mw.next_deadline() is None
    state = make_state(3.0)
    assert await mw.request(state) is None
    mw.completed(state, 500)
    assert mw.next_deadline() == 13.0
    mw.tick(12.0)
    assert mw.state is OPEN
    mw.tick(13.0)
    assert mw.state is HALF_OPEN
    assert mw.next_deadline() is None


async def test_the_definition_state_is_the_worst_of_its_services() -> None:
    mw = middleware(failure_threshold=1, cooldown_secs=10)
    assert mw.state is CLOSED
    for service, now in (("a", 0.0), ("b", 5.0)):
        state = make_state(now, service)
        assert await mw.request(state) is None
        mw.completed(state, 500)
    mw.tick(10.0)  # "a" half-open, "b" still open
    assert (mw.state_of("a"), mw.state_of("b")) == (HALF_OPEN, OPEN)
    assert mw.state is OPEN
    mw.tick(15.0)
    assert mw.state is HALF_OPEN


async def test_transitions_are_counted_and_reported_per_service() -> None:
    mw = middleware(failure_threshold=1, cooldown_secs=10)
    seen: list[tuple[str, BreakerState, BreakerState, float]] = []
    mw.listener = lambda service, old, new, clock: seen.append((service, old, new, clock))
    state = make_state(2.0, "svc")
    assert await mw.request(state) is None
    mw.completed(state, 500)
    mw.tick(12.0)
    assert seen == [("svc", CLOSED, OPEN, 2.0), ("svc", OPEN, HALF_OPEN, 12.0)]
    assert mw.transitions == {CLOSED: 0, OPEN: 1, HALF_OPEN: 1}
