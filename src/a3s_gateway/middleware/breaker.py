"""The ``circuit-breaker`` middleware (SPEC §8.13): stop sending requests to a failing service.

Ring 0: pure; no trio, sockets, TLS, clocks or logging. Time is ``RequestState.now`` (and the
``now`` a timer passes to ``tick``).

Two parts:

* ``Breaker``: the state machine of one service behind one definition. **closed** admits
  everything and counts consecutive failures (a success resets the count);
  ``failure_threshold`` of them → **open**, which rejects everything until ``cooldown`` seconds
  have passed since it opened → **half-open**, which admits at most ``max_probes`` probes at a
  time and rejects the rest; ``success_threshold`` probe successes → closed (counters reset), one
  probe failure → open again with a fresh cooldown. A probe that ends without an outcome only
  frees its slot.

  Every transition starts a new *generation*. An admission remembers its generation, and an
  outcome from an older one is ignored (it only frees nothing): a slow request admitted while
  closed must not close a half-open breaker or re-open it, and a probe of an earlier half-open
  period must not free a slot of the current one. So a half-open breaker never has more than
  ``max_probes`` probes in flight.

  Time only moves forward: the breaker keeps ``clock``, the latest ``now`` it has seen, and
  decides with it (requests reach the middleware slightly out of start order when an earlier
  middleware awaits). Open → half-open happens when the clock reaches the deadline, on any call;
  the shell's timer calls ``advance``/``tick`` so that it shows without traffic.

* ``CircuitBreakerMiddleware``: one ``Breaker`` per service (``RequestState.service``) of the
  definition, created on first use. ``request`` admits or answers 503
  ``service unavailable (circuit breaker open)`` with ``Retry-After``. The breaker judges the
  outcome of everything after it in the chain (SPEC §8.1 "Wrappers"), seen in two places: the
  response side notes whether the response head is a failure (status ≥ 500, or a
  ``grpc-status`` of 4, 13 or 14 in the head of a trailers-only gRPC response), and
  ``completed`` gives the verdict with the final status. Its own 503 never reaches either (a
  short-circuit passes neither its own response side nor its own completion).

  Verdict in ``completed(state, status)``: failure when ``status`` ≥ 500 or the head seen was a
  failure; else success when ``status`` is not 0 (4xx and 101 included); with status 0 (the
  exchange ended without a complete response) failure when the head seen was a failure, else no
  outcome — a client that went away before the outcome counts as neither (SPEC §8.13), and after
  a good head a cut-short response cannot tell a client abort from an upstream reset.

  Which admission a completion belongs to cannot be derived from the request (and the probe's
  slot must be freed exactly once), so the middleware keeps one small ticket per admitted
  request that is in flight, keyed by the ``RequestState`` object, removed by ``completed``
  (which the pipeline calls exactly once per request that entered the middleware). This is the
  one piece of per-request state on the instance; it is bounded by the requests in flight.

Must not: read a clock, count its own 503 as an outcome, admit while open before the cooldown
has passed, admit more than ``half_open_max_requests`` concurrent probes, or let an outcome of
an earlier generation change the state.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Self

from a3s_gateway.middleware.contract import Middleware
from a3s_gateway.protocols.responses import error_response

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from a3s_gateway.config.schema_middlewares import CircuitBreaker
    from a3s_gateway.middleware.contract import RequestState
    from a3s_gateway.protocols.headers import Headers
    from a3s_gateway.protocols.responses import GeneratedResponse

__all__ = [
    "BREAKER_OPEN",
    "FAILED_GRPC_STATUSES",
    "Admission",
    "Breaker",
    "BreakerState",
    "CircuitBreakerMiddleware",
    "Outcome",
]

#: The 503 ``error`` text (SPEC §8.13).
BREAKER_OPEN: Final = "service unavailable (circuit breaker open)"
#: ``grpc-status`` values that are failures (DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE).
FAILED_GRPC_STATUSES: Final = frozenset({b"4", b"13", b"14"})
#: The largest ``Retry-After`` written (a huge ``cooldown`` would otherwise be absurd).
MAX_RETRY_AFTER: Final = 1_000_000_000

_RETRY_AFTER: Final = b"retry-after"
_GRPC_STATUS: Final = b"grpc-status"
_OWS: Final = b" \t"


class BreakerState(enum.IntEnum):
    """The breaker's state; the values are those of ``a3s_circuit_breaker_state``."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class Outcome(enum.Enum):
    """What one admitted request's exchange amounted to."""

    SUCCESS = "success"
    FAILURE = "failure"
    #: Ended without an outcome (the client went away first): counts as neither.
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Admission:
    """The decision on one request. ``probe``: admitted as a half-open probe (it holds a slot
    until ``Breaker.record``). ``generation``: the breaker's generation when it was decided.
    ``retry_after``: whole seconds for ``Retry-After`` when rejected (≥ 1), else 0."""

    allowed: bool
    probe: bool
    generation: int
    retry_after: int


def _retry_after(seconds: float) -> int:
    """``⌈seconds⌉``, at least 1 and at most ``MAX_RETRY_AFTER``."""
    return max(1, math.ceil(min(seconds, MAX_RETRY_AFTER)))


def _check_limits(
    failure_threshold: int, cooldown: float, success_threshold: int, max_probes: int
) -> None:
    """Raise ``ValueError`` unless the counts are >= 1 and ``cooldown`` > 0 (NaN is not)."""
    for label, value in (
        ("failure_threshold", failure_threshold),
        ("success_threshold", success_threshold),
        ("max_probes", max_probes),
    ):
        if value < 1:
            raise ValueError(f"{label} must be >= 1, not {value!r}")
    if not cooldown > 0:
        raise ValueError(f"cooldown must be > 0, not {cooldown!r}")


class Breaker:
    """One service's circuit breaker. Raises ``ValueError`` for a threshold or probe count
    below 1 or a ``cooldown`` that is not > 0 (NaN included).

    ``on_transition(old, new, clock)`` is called after every change of state.
    """

    __slots__ = (
        "_clock",
        "_cooldown",
        "_failure_threshold",
        "_failures",
        "_generation",
        "_max_probes",
        "_on_transition",
        "_opened_at",
        "_probes",
        "_state",
        "_success_threshold",
        "_successes",
    )

    def __init__(
        self,
        *,
        failure_threshold: int,
        cooldown: float,
        success_threshold: int = 1,
        max_probes: int = 1,
        on_transition: Callable[[BreakerState, BreakerState, float], None] | None = None,
    ) -> None:
        _check_limits(failure_threshold, cooldown, success_threshold, max_probes)
        self._failure_threshold = failure_threshold
        self._cooldown = float(cooldown)
        self._success_threshold = success_threshold
        self._max_probes = max_probes
        self._on_transition = on_transition
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._failures = 0
        self._successes = 0
        self._probes = 0
        self._opened_at = 0.0
        self._clock = -math.inf

    # ----------------------------------------------------------------- observation

    @property
    def state(self) -> BreakerState:
        """The state as of the latest ``now`` seen (call ``advance`` first to move the clock)."""
        return self._state

    @property
    def generation(self) -> int:
        """How many transitions there have been."""
        return self._generation

    @property
    def failures(self) -> int:
        """Consecutive failures counted while closed."""
        return self._failures

    @property
    def successes(self) -> int:
        """Probe successes counted in the current half-open period."""
        return self._successes

    @property
    def probes(self) -> int:
        """Probes in flight in the current half-open period."""
        return self._probes

    @property
    def clock(self) -> float:
        """The latest ``now`` seen (``-inf`` before the first)."""
        return self._clock

    @property
    def half_open_at(self) -> float | None:
        """When an open breaker turns half-open (for the shell's timer); None unless open."""
        if self._state is BreakerState.OPEN:
            return self._opened_at + self._cooldown
        return None

    # ----------------------------------------------------------------- transitions

    def advance(self, now: float) -> BreakerState:
        """Move the clock to ``now`` (never back) and turn open into half-open once the
        cooldown has passed; the state after that."""
        if now > self._clock:
            self._clock = now
        if self._state is BreakerState.OPEN and self._clock >= self._opened_at + self._cooldown:
            self._enter(BreakerState.HALF_OPEN)
        return self._state

    def admit(self, now: float) -> Admission:
        """Decide on a request arriving at ``now``. An admitted probe holds its slot until it is
        passed to ``record``."""
        state = self.advance(now)
        if state is BreakerState.CLOSED:
            return Admission(allowed=True, probe=False, generation=self._generation, retry_after=0)
        if state is BreakerState.HALF_OPEN and self._probes < self._max_probes:
            self._probes += 1
            return Admission(allowed=True, probe=True, generation=self._generation, retry_after=0)
        if state is BreakerState.OPEN:
            remaining = self._opened_at + self._cooldown - self._clock
        else:  # half-open with every probe slot taken: rejected as in open
            remaining = 0.0
        return Admission(
            allowed=False,
            probe=False,
            generation=self._generation,
            retry_after=_retry_after(remaining),
        )

    def record(self, admission: Admission, outcome: Outcome, now: float) -> None:
        """The end of an admitted request: free its probe slot, then count ``outcome`` if the
        request was admitted in the current generation. ``now`` moves the clock (a failure that
        opens the breaker starts the cooldown at the clock)."""
        if not admission.allowed:
            return
        self.advance(now)
        if admission.generation != self._generation:
            return  # admitted before the latest transition: its outcome is stale
        if admission.probe:
            self._probes -= 1
        if outcome is Outcome.NONE:
            return
        if self._state is BreakerState.CLOSED:
            if outcome is Outcome.SUCCESS:
                self._failures = 0
            else:
                self._failures += 1
                if self._failures >= self._failure_threshold:
                    self._enter(BreakerState.OPEN)
        elif self._state is BreakerState.HALF_OPEN:
            if outcome is Outcome.FAILURE:
                self._enter(BreakerState.OPEN)
            else:
                self._successes += 1
                if self._successes >= self._success_threshold:
                    self._enter(BreakerState.CLOSED)
        # Open admits nothing and every transition starts a generation: nothing to count.

    def _enter(self, state: BreakerState) -> None:
        old = self._state
        self._state = state
        self._generation += 1
        self._failures = 0
        self._successes = 0
        self._probes = 0
        if state is BreakerState.OPEN:
            self._opened_at = self._clock
        if self._on_transition is not None:
            self._on_transition(old, state, self._clock)

    def __repr__(self) -> str:
        return (
            f"Breaker(state={self._state.name}, generation={self._generation}, "
            f"failures={self._failures}, successes={self._successes}, probes={self._probes})"
        )


class _Ticket:
    """One admitted request in flight: its breaker, its admission and the verdict of the
    response head that passed the response side (None before one did)."""

    __slots__ = ("admission", "breaker", "head_failed")

    def __init__(self, breaker: Breaker, admission: Admission) -> None:
        self.breaker = breaker
        self.admission = admission
        self.head_failed: bool | None = None


def _head_failed(status: int, headers: Headers) -> bool:
    """A response head that is a failure: status ≥ 500 or a failing ``grpc-status``."""
    if status >= 500:
        return True
    return any(
        field == _GRPC_STATUS and value.strip(_OWS) in FAILED_GRPC_STATUSES
        for field, value in headers
    )


class CircuitBreakerMiddleware(Middleware):
    """``circuit-breaker``: a ``Breaker`` per service, shared by every router using the
    definition. Raises ``ValueError`` for limits the ``Breaker`` refuses.

    ``listener`` (settable; None by default) is told of every transition as
    ``(service, old, new, clock)``; ``transitions`` counts them by target state (the
    ``a3s_circuit_breaker_transitions_total{to}`` counter).
    """

    __slots__ = (
        "_breakers",
        "_cooldown",
        "_failure_threshold",
        "_max_probes",
        "_success_threshold",
        "_tickets",
        "listener",
        "transitions",
    )

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        cooldown_secs: float = 30,
        success_threshold: int = 1,
        half_open_max_requests: int = 1,
    ) -> None:
        super().__init__(name)
        _check_limits(failure_threshold, cooldown_secs, success_threshold, half_open_max_requests)
        self._failure_threshold = failure_threshold
        self._cooldown = cooldown_secs
        self._success_threshold = success_threshold
        self._max_probes = half_open_max_requests
        self._breakers: dict[str, Breaker] = {}
        self._tickets: dict[RequestState, _Ticket] = {}
        self.listener: Callable[[str, BreakerState, BreakerState, float], None] | None = None
        self.transitions: dict[BreakerState, int] = dict.fromkeys(BreakerState, 0)

    @classmethod
    def from_config(cls, name: str, block: CircuitBreaker) -> Self:
        """The middleware of the validated ``circuit-breaker`` definition ``name``."""
        return cls(
            name,
            failure_threshold=block.failure_threshold,
            cooldown_secs=block.cooldown_secs,
            success_threshold=block.success_threshold,
            half_open_max_requests=block.half_open_max_requests,
        )

    # ----------------------------------------------------------------- observation

    @property
    def breakers(self) -> Mapping[str, Breaker]:
        """The breaker of every service that has seen a request, by service name."""
        return self._breakers

    def state_of(self, service: str) -> BreakerState:
        """The state of ``service``'s breaker (closed when it has none yet)."""
        breaker = self._breakers.get(service)
        return BreakerState.CLOSED if breaker is None else breaker.state

    @property
    def state(self) -> BreakerState:
        """One state for the definition (the ``a3s_circuit_breaker_state{middleware}`` gauge):
        open if any service's breaker is open, else half-open if any is, else closed."""
        states = {breaker.state for breaker in self._breakers.values()}
        for worst in (BreakerState.OPEN, BreakerState.HALF_OPEN):
            if worst in states:
                return worst
        return BreakerState.CLOSED

    @property
    def in_flight(self) -> int:
        """Admitted requests whose completion has not been seen yet."""
        return len(self._tickets)

    def next_deadline(self) -> float | None:
        """The earliest time an open breaker turns half-open (for the shell's timer)."""
        deadlines = [
            deadline
            for breaker in self._breakers.values()
            if (deadline := breaker.half_open_at) is not None
        ]
        return min(deadlines, default=None)

    def tick(self, now: float) -> None:
        """The timer: move every breaker's clock to ``now`` (open → half-open when due)."""
        for breaker in self._breakers.values():
            breaker.advance(now)

    # ----------------------------------------------------------------- the pipeline

    def _breaker(self, service: str) -> Breaker:
        breaker = self._breakers.get(service)
        if breaker is None:
            breaker = self._breakers[service] = Breaker(
                failure_threshold=self._failure_threshold,
                cooldown=self._cooldown,
                success_threshold=self._success_threshold,
                max_probes=self._max_probes,
                on_transition=self._transition_hook(service),
            )
        return breaker

    def _transition_hook(self, service: str) -> Callable[[BreakerState, BreakerState, float], None]:
        def hook(old: BreakerState, new: BreakerState, clock: float) -> None:
            self.transitions[new] += 1
            if self.listener is not None:
                self.listener(service, old, new, clock)

        return hook

    async def request(self, state: RequestState) -> GeneratedResponse | None:
        """Admit the request or answer 503 with ``Retry-After`` (SPEC §8.13)."""
        stale = self._tickets.pop(state, None)
        if stale is not None:  # re-entered without completing: free what it held
            stale.breaker.record(stale.admission, Outcome.NONE, state.now)
        breaker = self._breaker(state.service)
        admission = breaker.admit(state.now)
        if not admission.allowed:
            return error_response(
                503, BREAKER_OPEN, extra=[(_RETRY_AFTER, str(admission.retry_after).encode())]
            )
        self._tickets[state] = _Ticket(breaker, admission)
        return None

    def response(self, state: RequestState, status: int, headers: Headers) -> None:
        """Note whether the response head of an admitted request is a failure."""
        ticket = self._tickets.get(state)
        if ticket is not None:
            ticket.head_failed = _head_failed(status, headers)

    def completed(self, state: RequestState, status: int) -> None:
        """Record the request's outcome and free its probe slot, if it was a probe."""
        ticket = self._tickets.pop(state, None)
        if ticket is None:
            return
        if status >= 500 or ticket.head_failed:
            outcome = Outcome.FAILURE
        elif status != 0:
            outcome = Outcome.SUCCESS
        else:
            outcome = Outcome.NONE
        ticket.breaker.record(ticket.admission, outcome, state.now)
