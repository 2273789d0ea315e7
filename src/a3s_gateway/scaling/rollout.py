"""The rollout controller: a gradual canary from one revision to another (SPEC §11.8).

Ring 0: pure and synchronous. The shell feeds the ``to`` revision's traffic of the current
interval (``IntervalStats``, one per worker, merged with ``add``), calls ``step`` on its tick
and forwards the management actions (``pause``, ``resume``, ``rollback``); after each change it
copies ``percents`` into the service's ``RevisionSplit``, logs ``StepOutcome.message`` (warning
when rolled back, info otherwise) and updates ``a3s_rollout_state`` and
``a3s_rollout_steps_total``. Time is the ``now`` argument, in seconds on trio's clock.

Must not: import trio, socket, ssl, time, logging or os; draw randomness from anywhere but the
``random.Random`` it is given (only the latency reservoirs use it); know service or revision
names (revisions are indices; the caller adds names to what it shows).

Theory of operation
-------------------
::

    IN_PROGRESS ◀──(advance)── WAITING          (held: fewer than min_requests requests)
    IN_PROGRESS / WAITING ──(pause)──▶ PAUSED ──(resume)──▶ IN_PROGRESS
    IN_PROGRESS / WAITING ──(advance until from = 0)──▶ COMPLETED
    IN_PROGRESS / WAITING / PAUSED ──(unhealthy step, or rollback)──▶ ROLLED_BACK

A step is due every ``step_interval`` seconds (a late tick does not bring the next one
forward). It judges the interval's traffic to ``to``: fewer than ``min_requests`` requests hold
the split (``WAITING``); an error rate or latency percentile strictly above its threshold rolls
back (``to`` → 0 %, ``from`` → ``from + to``); anything else moves ``min(step_percent, from)``
percent from ``from`` to ``to``, completing when ``from`` reaches 0. Every step, held ones
included, starts a fresh interval. Only the ``from`` and ``to`` percents ever change, so the
split always sums to 100. ``COMPLETED`` and ``ROLLED_BACK`` are final: every action on them
raises ``InvalidAction`` (the management API answers 409).
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Final, Literal

from a3s_gateway.scaling.revisions import validate_percents

if TYPE_CHECKING:
    from collections.abc import Sequence

    from a3s_gateway.config.schema_services import Rollout

#: Latency samples kept per interval (SPEC §11.8); below this the percentile is exact.
RESERVOIR_SIZE: Final = 2048

StepResult = Literal["advanced", "held", "rolled_back"]
_MS_PER_SECOND: Final = 1000


class RolloutState(enum.Enum):
    """The rollout's state; the value is ``a3s_rollout_state``'s gauge value (SPEC §9.1)."""

    IN_PROGRESS = 0
    WAITING = 1
    PAUSED = 2
    COMPLETED = 3
    ROLLED_BACK = 4

    @property
    def label(self) -> str:
        """The name shown by ``/rollouts`` and the logs: ``in_progress``, ``rolled_back``…"""
        return self.name.lower()

    @property
    def finished(self) -> bool:
        """``COMPLETED`` or ``ROLLED_BACK``: no step or action changes it any more."""
        return self in (RolloutState.COMPLETED, RolloutState.ROLLED_BACK)


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutSettings:
    """One ``rollout {}`` block with its revision names resolved to indices.

    ``latency_threshold`` is in seconds. ``ValueError`` when ``from_index == to_index`` or a
    bound is out of range (the config schema already rejects such values).
    """

    from_index: int
    to_index: int
    step_percent: int
    step_interval: float
    error_rate_threshold: float
    latency_threshold: float
    min_requests: int
    latency_percentile: float

    def __post_init__(self) -> None:
        if self.from_index == self.to_index or min(self.from_index, self.to_index) < 0:
            raise ValueError("rollout from and to must be two different revision indices")
        if not 1 <= self.step_percent <= 100 or self.step_interval <= 0 or self.min_requests < 0:
            raise ValueError("rollout step_percent, step_interval or min_requests out of range")
        if not 0 < self.latency_percentile <= 100:
            raise ValueError("rollout latency_percentile must be in (0, 100]")

    @classmethod
    def from_config(cls, rollout: Rollout, names: Sequence[str]) -> RolloutSettings:
        """The settings of ``rollout`` for revisions ``names`` (in configuration order).
        ``ValueError`` when ``from`` or ``to`` names no revision."""
        listed = list(names)
        return cls(
            from_index=listed.index(rollout.from_),
            to_index=listed.index(rollout.to),
            step_percent=rollout.step_percent,
            step_interval=float(rollout.step_interval_secs),
            error_rate_threshold=rollout.error_rate_threshold,
            latency_threshold=rollout.latency_threshold_ms / _MS_PER_SECOND,
            min_requests=rollout.min_requests,
            latency_percentile=rollout.latency_percentile,
        )


@dataclass(slots=True)
class IntervalStats:
    """The ``to`` revision's traffic in one interval, mergeable across workers.

    ``seen`` counts the latencies offered; ``samples`` is a uniform reservoir of them (Vitter's
    algorithm R), holding ``min(seen, RESERVOIR_SIZE)`` values: all of them while fewer.
    """

    requests: int = 0
    errors: int = 0
    seen: int = 0
    samples: list[float] = field(default_factory=list)

    def record(self, *, error: bool, latency: float | None, rng: random.Random) -> None:
        """Count one request (``error``: status ≥ 500 or a transport failure) and offer its
        upstream response-head latency in seconds (``None`` when there was none)."""
        self.requests += 1
        self.errors += error
        if latency is None:
            return
        self.seen += 1
        if len(self.samples) < RESERVOIR_SIZE:
            self.samples.append(latency)
            return
        slot = rng.randrange(self.seen)
        if slot < RESERVOIR_SIZE:
            self.samples[slot] = latency

    def merge(self, other: IntervalStats, rng: random.Random) -> None:
        """Add ``other``'s counts; the reservoir becomes a uniform sample of the union (how
        many come from each side follows the hypergeometric law of the ``seen`` counts)."""
        self.samples = _merge_reservoirs(self.samples, self.seen, other.samples, other.seen, rng)
        self.requests += other.requests
        self.errors += other.errors
        self.seen += other.seen

    def percentile(self, p: float) -> float | None:
        """The nearest-rank ``p``-th percentile (0 < p ≤ 100) of the samples, ``None`` when
        there are none. ``p`` is read as the decimal it prints as, so 99.9 means 999/10."""
        if not self.samples:
            return None
        ordered = sorted(self.samples)
        rank = math.ceil(Fraction(repr(p)) * len(ordered) / 100)
        return ordered[min(max(rank, 1), len(ordered)) - 1]

    def to_wire(self) -> tuple[int, int, int, list[float]]:
        """``(requests, errors, seen, samples)``, plain values for the worker → supervisor
        channel."""
        return (self.requests, self.errors, self.seen, list(self.samples))

    @classmethod
    def from_wire(cls, wire: tuple[int, int, int, Sequence[float]]) -> IntervalStats:
        """The stats ``to_wire`` produced. ``ValueError`` unless the counts are non-negative
        integers, ``errors ≤ requests`` and there are ``min(seen, RESERVOIR_SIZE)`` samples."""
        requests, errors, seen, samples = wire
        counts = (requests, errors, seen)
        if any(type(n) is not int or n < 0 for n in counts):
            raise ValueError("interval stats counts must be non-negative integers")
        if errors > requests or len(samples) != min(seen, RESERVOIR_SIZE):
            raise ValueError("interval stats are inconsistent")
        return cls(requests, errors, seen, [float(value) for value in samples])


def _merge_reservoirs(
    ours: list[float], our_seen: int, theirs: list[float], their_seen: int, rng: random.Random
) -> list[float]:
    if len(ours) + len(theirs) <= RESERVOIR_SIZE:
        return [*ours, *theirs]
    # Draw RESERVOIR_SIZE of the our_seen + their_seen values without replacement, counting
    # how many are ours; then take that many of each uniform reservoir, uniformly.
    taken, left_ours, left_theirs = 0, our_seen, their_seen
    for _ in range(RESERVOIR_SIZE):
        if rng.randrange(left_ours + left_theirs) < left_ours:
            taken += 1
            left_ours -= 1
        else:
            left_theirs -= 1
    return rng.sample(ours, taken) + rng.sample(theirs, RESERVOIR_SIZE - taken)


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What one step measured and did; ``message`` is its one log line."""

    result: StepResult
    state: RolloutState
    percents: tuple[int, ...]
    requests: int
    errors: int
    error_rate: float
    latency: float | None
    message: str


class InvalidAction(Exception):  # noqa: N818 -- name fixed by the management API contract
    """An action on a finished (completed or rolled back) rollout; the API answers 409."""


class RolloutController:
    """One service's rollout (SPEC §11.8); see the module docstring for the state machine.

    ``percents`` is the configured split (``ValueError`` unless valid, with both indices in
    range); ``to`` keeps its configured share, the first step is due at ``now +
    step_interval``. ``rng`` draws the reservoir merges (default: a fresh ``random.Random``).
    """

    __slots__ = ("_rng", "_stats", "last", "next_step", "percents", "settings", "state", "steps")

    settings: RolloutSettings
    state: RolloutState
    percents: tuple[int, ...]
    next_step: float
    last: StepOutcome | None
    steps: dict[str, int]

    def __init__(
        self,
        settings: RolloutSettings,
        percents: Sequence[int],
        *,
        now: float,
        rng: random.Random | None = None,
    ) -> None:
        self.percents = validate_percents(percents, len(percents))
        if max(settings.from_index, settings.to_index) >= len(self.percents):
            raise ValueError("rollout from/to index beyond the revisions")
        self.settings = settings
        self.state = RolloutState.IN_PROGRESS
        self.next_step = now + settings.step_interval
        self.last = None
        self.steps = {"advanced": 0, "held": 0, "rolled_back": 0}
        self._rng = rng if rng is not None else random.Random()
        self._stats = IntervalStats()

    def add(self, stats: IntervalStats) -> None:
        """Merge traffic of the current interval (from one worker or several). Ignored while
        paused or finished: that traffic belongs to no interval that will be judged."""
        if self.state is not RolloutState.PAUSED and not self.state.finished:
            self._stats.merge(stats, self._rng)

    def step(self, now: float, *, to_available: bool = True) -> StepOutcome | None:
        """Judge the interval and change the split, when a step is due (``now ≥ next_step``)
        and the rollout neither paused nor finished; else ``None``. Starts a fresh interval
        and schedules the next step one ``step_interval`` later (after ``now`` if late).

        ``to_available`` False: the ``to`` revision has no available backend now. After an
        interval with errors that means its errors took it out of service (passive health
        ejected its backends, or its health checks fail): it would get no more traffic, so
        its interval could never reach ``min_requests``, and it is rolled back rather than
        held for ever. Without errors (a revision scaled to zero while idle, a probe that
        failed once) the step is held as usual."""
        if self.state is RolloutState.PAUSED or self.state.finished or now < self.next_step:
            return None
        stats, self._stats = self._stats, IntervalStats()
        interval = self.settings.step_interval
        self.next_step += interval
        if self.next_step <= now:
            self.next_step = now + interval
        outcome = self._judge(stats, to_available=to_available)
        self.last = outcome
        self.steps[outcome.result] += 1
        return outcome

    def pause(self) -> None:
        """Stop stepping (idempotent). ``InvalidAction`` when finished."""
        self._check_active("pause")
        self.state = RolloutState.PAUSED

    def resume(self, now: float) -> None:
        """Continue a paused rollout: ``IN_PROGRESS``, a fresh interval, the next step at
        ``now + step_interval``. A running rollout is left as it is. ``InvalidAction`` when
        finished."""
        self._check_active("resume")
        if self.state is RolloutState.PAUSED:
            self.state = RolloutState.IN_PROGRESS
            self.next_step = now + self.settings.step_interval
            self._stats = IntervalStats()

    def rollback(self) -> None:
        """Roll back now (the management action; not counted as a step). ``InvalidAction``
        when finished."""
        self._check_active("roll back")
        self.percents = self._moved(-self.percents[self.settings.to_index])
        self.state = RolloutState.ROLLED_BACK

    def snapshot(self) -> dict[str, object]:
        """The ``/rollouts`` entry without names (the caller adds them): ``from``/``to`` are
        indices; ``next_step`` is ``None`` while paused or finished."""
        stepping = self.state is not RolloutState.PAUSED and not self.state.finished
        last = self.last
        return {
            "state": self.state.label,
            "from": self.settings.from_index,
            "to": self.settings.to_index,
            "percents": list(self.percents),
            "next_step": self.next_step if stepping else None,
            "last": None if last is None else _outcome_fields(last),
            "steps": dict(self.steps),
        }

    def _check_active(self, action: str) -> None:
        if self.state.finished:
            raise InvalidAction(f"cannot {action} a rollout that is {self.state.label}")

    def _moved(self, amount: int) -> tuple[int, ...]:
        """The split with ``amount`` percent moved from ``from`` to ``to`` (negative: back)."""
        settings = self.settings
        split = list(self.percents)
        split[settings.from_index] -= amount
        split[settings.to_index] += amount
        return tuple(split)

    def _judge(self, stats: IntervalStats, *, to_available: bool) -> StepOutcome:
        settings = self.settings
        before = self.percents
        rate = stats.errors / stats.requests if stats.requests else 0.0
        latency = stats.percentile(settings.latency_percentile)
        reasons: list[str] = []
        if not to_available and stats.errors and before[settings.to_index] > 0:
            result: StepResult = "rolled_back"
            self.percents = self._moved(-before[settings.to_index])
            self.state = RolloutState.ROLLED_BACK
            reasons.append("no available backend")
        elif stats.requests < settings.min_requests:
            result = "held"
            self.state = RolloutState.WAITING
            reasons.append(f"fewer than min_requests {settings.min_requests}")
        else:
            if rate > settings.error_rate_threshold:
                reasons.append("error rate above threshold")
            if latency is not None and latency > settings.latency_threshold:
                reasons.append("latency above threshold")
            if reasons:
                result = "rolled_back"
                self.percents = self._moved(-before[settings.to_index])
                self.state = RolloutState.ROLLED_BACK
            else:
                result = "advanced"
                moved = min(settings.step_percent, before[settings.from_index])
                self.percents = self._moved(moved)
                done = self.percents[settings.from_index] == 0
                self.state = RolloutState.COMPLETED if done else RolloutState.IN_PROGRESS
                reasons.append(f"moved {moved}%" + (", rollout completed" if done else ""))
        split = (before, self.percents)
        message = _message(result, settings, stats, (rate, latency), "; ".join(reasons), split)
        return StepOutcome(
            result, self.state, self.percents, stats.requests, stats.errors, rate, latency, message
        )


def _message(
    result: StepResult,
    settings: RolloutSettings,
    stats: IntervalStats,
    measured: tuple[float, float | None],
    reason: str,
    split: tuple[tuple[int, ...], tuple[int, ...]],
) -> str:
    rate, latency = measured
    before, after = split
    source, target = settings.from_index, settings.to_index
    shown = "n/a" if latency is None else f"{latency:.6g}s"
    return (
        f"rollout {result}: revisions[{target}] served {stats.requests} requests, "
        f"{stats.errors} errors (error rate {rate:.6g}, threshold "
        f"{settings.error_rate_threshold:.6g}), p{settings.latency_percentile:g} latency "
        f"{shown} (threshold {settings.latency_threshold:.6g}s); {reason}; "
        f"revisions[{source}] {before[source]}% -> {after[source]}%, "
        f"revisions[{target}] {before[target]}% -> {after[target]}%"
    )


def _outcome_fields(outcome: StepOutcome) -> dict[str, object]:
    return {
        "result": outcome.result,
        "state": outcome.state.label,
        "percents": list(outcome.percents),
        "requests": outcome.requests,
        "errors": outcome.errors,
        "error_rate": outcome.error_rate,
        "latency": outcome.latency,
        "message": outcome.message,
    }
