"""Passive health: outlier ejection for one service pool (SPEC §7.5).

Ring 0: pure and synchronous. The caller feeds one result per finished attempt
(``record``), runs ``tick`` every ``PassiveSettings.tick_interval`` seconds and when selecting
(``next_readmission`` tells whether a tick would readmit anything), and forwards active-check
successes (``readmit``). Time is the ``now`` argument, in seconds on trio's clock.

Must not: import trio, socket, ssl or time; log or count metrics (every call returns the
``Transition`` records the caller logs and counts); touch ``Backend.active_healthy`` or choose
backends. It is the only writer of ``Backend.passive_ejected``. A disabled ``passive_health``
block is the caller's business: it builds no detector, so nothing is ever ejected.

Theory of operation
-------------------
Each backend is in one of three states; ``m`` is its ejection multiplier (starts at 0)::

    HEALTHY ──(≥ error_threshold errors within window, cap permitting)──▶ EJECTED
    EJECTED ──(now ≥ ejected_until, or an active-check success)────────▶ PROBATION
    PROBATION ──(an error, cap permitting)─────────────────────────────▶ EJECTED
    PROBATION ──(a full window since probation began, without error)───▶ HEALTHY

An ejection sets ``m += 1``, ``ejected_until = now + min(recovery_time × m, max_recovery_time)``
and clears the error records; every full ``window`` spent healthy decays ``m`` by one (not below
0). Successes change nothing: errors are counted in a sliding window, not consecutively.

Time-driven changes are computed from timestamps, never from how often the caller ticks: every
entry point (``tick``, ``record``, ``readmit``) first brings a backend up to date with ``now``,
so a late tick is as correct as a punctual one and an ejected backend leaves ejection at the
first call with ``now ≥ ejected_until``. Two choices follow from that:

- Probation starts when the backend actually becomes available again (the call that clears the
  flag), not at ``ejected_until``, so it always gets a whole window of real traffic.
- Results that finish on an *ejected* backend are ignored: the backend was not selectable, so
  the attempt started before the ejection and says nothing new.

The max-ejection cap (Envoy's rule): an ejection is refused when backends are already ejected
and one more would make the ejected share exceed ``max_ejection_percent`` of the pool. The pool
is the weight-positive backends given to the constructor. Weight-0 backends are drained — they
get no new selections, so ejecting them removes no serving capacity — and they count neither in
the pool nor as ejected; their own ejection is never refused. A refused ejection leaves a
healthy backend healthy with its records (the next error tries again) and restarts a probation
backend's window; each refusal adds one to ``skipped_ejections``.

Time never runs backwards: a ``now`` below the latest value seen, or not finite, is read as that
latest value.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from a3s_gateway.config.schema_services import PassiveHealth
    from a3s_gateway.config.values import ServerUrl
    from a3s_gateway.services.backend import Backend

__all__ = ["OutlierDetector", "PassiveSettings", "PassiveState", "Transition"]

_MIN_TICK = 1.0
_MAX_TICK = 5.0


class PassiveState(enum.Enum):
    """Where a backend is in the SPEC §7.5 state machine."""

    HEALTHY = "healthy"
    EJECTED = "ejected"
    PROBATION = "probation"


@dataclass(frozen=True, slots=True)
class PassiveSettings:
    """The ``passive_health`` numbers the detector runs on, durations in seconds.

    Equal settings mean equal behaviour, which is what ``OutlierDetector.adopt`` compares.
    Raises ``ValueError`` for values the config schema would have rejected.
    """

    error_threshold: int
    window: float
    recovery_time: float
    max_recovery_time: float
    max_ejection_percent: int
    error_statuses: frozenset[int]
    error_grpc_statuses: frozenset[int]

    def __post_init__(self) -> None:
        if self.error_threshold < 1:
            raise ValueError(f"error_threshold must be >= 1, got {self.error_threshold}")
        if not 1 <= self.max_ejection_percent <= 100:
            raise ValueError(f"max_ejection_percent must be 1-100, got {self.max_ejection_percent}")
        for name in ("window", "recovery_time", "max_recovery_time"):
            value: float = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value}")
        if self.max_recovery_time < self.recovery_time:
            raise ValueError("max_recovery_time must be at least recovery_time")

    @classmethod
    def from_config(cls, block: PassiveHealth) -> PassiveSettings:
        """The settings of a ``passive_health`` block (its ``enabled`` flag is the caller's)."""
        return cls(
            error_threshold=block.error_threshold,
            window=block.window.seconds,
            recovery_time=block.recovery_time.seconds,
            max_recovery_time=block.max_recovery_time.seconds,
            max_ejection_percent=block.max_ejection_percent,
            error_statuses=frozenset(block.error_status_codes),
            error_grpc_statuses=frozenset(block.error_grpc_status_codes),
        )

    @property
    def tick_interval(self) -> float:
        """How often the caller runs ``tick``: ``clamp(recovery_time, 1 s, 5 s)`` (A3S v1.0.6)."""
        return min(max(self.recovery_time, _MIN_TICK), _MAX_TICK)

    def ejection_time(self, multiplier: int) -> float:
        """How long an ejection with multiplier ``m`` lasts: ``min(recovery × m, max)``."""
        return min(self.recovery_time * multiplier, self.max_recovery_time)


@dataclass(frozen=True, slots=True)
class Transition:
    """One backend's net state change in one detector call, for the caller to log and count.

    ``new is EJECTED`` means the call ejected the backend (``a3s_passive_ejections_total``);
    ``ejected_until`` is then the readmission time, otherwise None. ``multiplier`` is ``m``
    after the change.
    """

    backend: Backend
    old: PassiveState
    new: PassiveState
    ejected_until: float | None
    multiplier: int


@dataclass(slots=True, eq=False)
class _Track:
    """One backend's passive state (mutable; owned by one detector)."""

    backend: Backend
    errors: deque[float]
    state: PassiveState = PassiveState.HEALTHY
    multiplier: int = 0
    ejected_until: float = 0.0
    # Start of the current window: probation's start in PROBATION, the start of the next decay
    # step in HEALTHY (meaningful only while multiplier > 0), the ejection time in EJECTED.
    since: float = 0.0

    def copy_from(self, other: _Track) -> None:
        self.errors.extend(other.errors)
        self.state = other.state
        self.multiplier = other.multiplier
        self.ejected_until = other.ejected_until
        self.since = other.since
        self.backend.passive_ejected = other.state is PassiveState.EJECTED


class OutlierDetector:
    """One service pool's passive health (SPEC §7.5); see the module docstring.

    ``record`` and ``readmit`` raise ``ValueError`` for a backend that is not in the pool given
    to the constructor (so do ``state`` and ``ejected_until``); ``tick`` never raises.
    """

    __slots__ = ("_next_readmission", "_now", "_tracks", "settings", "skipped_ejections")

    settings: PassiveSettings
    #: Ejections refused by ``max_ejection_percent`` (``a3s_passive_ejections_skipped_total``).
    skipped_ejections: int

    def __init__(self, backends: Sequence[Backend], settings: PassiveSettings) -> None:
        self.settings = settings
        self.skipped_ejections = 0
        self._now: float | None = None
        self._next_readmission: float | None = None
        self._tracks: dict[Backend, _Track] = {}  # pool order; identity keys
        for backend in backends:
            backend.passive_ejected = False
            errors: deque[float] = deque(maxlen=settings.error_threshold)
            self._tracks[backend] = _Track(backend, errors)

    # --- queries ---

    def is_error(self, status: int, grpc_status: int | None = None) -> bool:
        """Whether an attempt's result is a passive-health error (SPEC §7.5 "Inputs").

        Transport failures are passed as their status: connection refused, reset or an invalid
        response as 502, timeouts as 504 (each an error only if that code is configured).
        """
        if status in self.settings.error_statuses:
            return True
        return grpc_status is not None and grpc_status in self.settings.error_grpc_statuses

    def state(self, backend: Backend) -> PassiveState:
        """The backend's state as of the last call that brought it up to date."""
        return self._track(backend).state

    def ejected_until(self, backend: Backend) -> float | None:
        """When an ejected backend becomes eligible again; None unless it is ejected."""
        track = self._track(backend)
        return track.ejected_until if track.state is PassiveState.EJECTED else None

    def multiplier(self, backend: Backend) -> int:
        """The backend's ejection multiplier ``m``, as of the last call that updated it."""
        return self._track(backend).multiplier

    @property
    def next_readmission(self) -> float | None:
        """The earliest ``ejected_until`` of the ejected backends, None if none is ejected.

        The selection path can call ``tick`` only when ``now`` has reached it (O(1) check).
        """
        return self._next_readmission

    # --- events ---

    def record(self, backend: Backend, *, error: bool, now: float) -> Transition | None:
        """Count one finished attempt on ``backend``; returns the net state change, if any.

        An error on a healthy backend may eject it, an error in probation ejects it again (both
        subject to the max-ejection cap); a success changes nothing beyond bringing the backend
        up to date, as every call does. The result of an attempt that finishes on an ejected
        backend is ignored (it started before the ejection).
        """
        track = self._track(backend)
        now = self._clock(now)
        old = track.state
        self._advance(track, now)
        if error and old is not PassiveState.EJECTED:
            if track.state is PassiveState.HEALTHY:
                self._healthy_error(track, now)
            else:
                self._probation_error(track, now)
        return self._transition(track, old)

    def tick(self, now: float) -> list[Transition]:
        """Bring every backend up to date with ``now``; O(backends), never raises.

        Readmits ejected backends whose ``ejected_until`` has come (into probation), promotes
        probation backends that went a window without error, and decays multipliers.
        """
        now = self._clock(now)
        changes: list[Transition] = []
        for track in self._tracks.values():
            old = track.state
            self._advance(track, now)
            if track.state is not old:
                changes.append(self._make_transition(track, old))
        if changes:
            self._refresh_readmission()
        return changes

    def readmit(self, backend: Backend, now: float) -> Transition | None:
        """An active-check success: an ejected backend goes to probation (SPEC §7.4).

        Returns the net state change, if any (the backend is brought up to date first).
        """
        track = self._track(backend)
        now = self._clock(now)
        old = track.state
        self._advance(track, now)
        if track.state is PassiveState.EJECTED:
            self._to_probation(track, now)
        return self._transition(track, old)

    def adopt(self, previous: OutlierDetector) -> None:
        """Reload: take over the state of backends whose URL was in ``previous``'s pool.

        Only when the settings are equal (SPEC §7.5: state is kept when ``passive_health`` is
        unchanged); otherwise every backend starts healthy. Call it on a fresh detector, before
        traffic. The max-ejection cap applies to new ejections only, so adopted ejections stand
        even if the pool shrank. ``skipped_ejections`` is not carried over.
        """
        if previous.settings != self.settings:
            return
        if previous._now is not None:
            self._clock(previous._now)
        by_url: dict[ServerUrl, deque[_Track]] = {}
        for old_track in previous._tracks.values():
            by_url.setdefault(old_track.backend.url, deque()).append(old_track)
        for track in self._tracks.values():
            matches = by_url.get(track.backend.url)
            if matches:
                track.copy_from(matches.popleft())
        self._refresh_readmission()

    # --- the state machine ---

    def _track(self, backend: Backend) -> _Track:
        track = self._tracks.get(backend)
        if track is None:
            raise ValueError(f"{backend!r} is not in this detector's pool")
        return track

    def _clock(self, now: float) -> float:
        """``now``, never below the latest time seen; a non-finite value reads as that time."""
        latest = self._now
        if latest is None:
            latest = now if math.isfinite(now) else 0.0
        elif math.isfinite(now) and now > latest:
            latest = now
        self._now = latest
        return latest

    def _advance(self, track: _Track, now: float) -> None:
        """Apply the time-driven transitions due by ``now``."""
        window = self.settings.window
        if track.state is PassiveState.EJECTED:
            if now >= track.ejected_until:
                self._to_probation(track, now)
            return  # probation begins at ``now``: it cannot also have ended
        if track.state is PassiveState.PROBATION:
            if now < track.since + window:
                return
            track.state = PassiveState.HEALTHY
            track.since += window  # the moment it became healthy starts the decay clock
        if track.multiplier > 0 and now >= track.since + window:
            steps = (now - track.since) // window  # full windows spent healthy
            if steps >= track.multiplier:
                track.multiplier = 0
            else:
                track.multiplier -= int(steps)
                track.since += steps * window

    def _healthy_error(self, track: _Track, now: float) -> None:
        errors = track.errors
        errors.append(now)
        horizon = now - self.settings.window
        while errors[0] < horizon:
            errors.popleft()
        if len(errors) >= self.settings.error_threshold:
            self._eject(track, now)

    def _probation_error(self, track: _Track, now: float) -> None:
        if not self._eject(track, now):
            track.since = now  # probation needs a whole window without error

    def _eject(self, track: _Track, now: float) -> bool:
        """Eject unless the cap refuses; returns whether it ejected."""
        if not self._may_eject(track.backend):
            self.skipped_ejections += 1
            return False
        track.multiplier += 1
        track.ejected_until = now + self.settings.ejection_time(track.multiplier)
        track.since = now
        track.errors.clear()
        track.state = PassiveState.EJECTED
        track.backend.passive_ejected = True
        if self._next_readmission is None or track.ejected_until < self._next_readmission:
            self._next_readmission = track.ejected_until
        return True

    def _may_eject(self, backend: Backend) -> bool:
        if backend.weight <= 0:
            return True  # drained: ejecting it costs no capacity (module docstring)
        pool = ejected = 0
        for track in self._tracks.values():
            if track.backend.weight > 0:
                pool += 1
                ejected += track.state is PassiveState.EJECTED
        # At least one backend may always be ejected; beyond that, stay within the percentage.
        return ejected == 0 or (ejected + 1) * 100 <= self.settings.max_ejection_percent * pool

    def _to_probation(self, track: _Track, now: float) -> None:
        track.state = PassiveState.PROBATION
        track.since = now
        track.backend.passive_ejected = False

    def _refresh_readmission(self) -> None:
        due = [t.ejected_until for t in self._tracks.values() if t.state is PassiveState.EJECTED]
        self._next_readmission = min(due, default=None)

    def _transition(self, track: _Track, old: PassiveState) -> Transition | None:
        if track.state is old:
            return None
        if old is PassiveState.EJECTED:
            self._refresh_readmission()
        return self._make_transition(track, old)

    def _make_transition(self, track: _Track, old: PassiveState) -> Transition:
        ejected = track.state is PassiveState.EJECTED
        return Transition(
            backend=track.backend,
            old=old,
            new=track.state,
            ejected_until=track.ejected_until if ejected else None,
            multiplier=track.multiplier,
        )
