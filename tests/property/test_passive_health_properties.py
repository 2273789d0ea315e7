"""Properties of passive health (SPEC §7.5; DESIGN.md §3.7 "one file per subject").

Random sequences of attempt results, ticks, active-check successes and time advances, over
random pools and settings: the detector never ejects more than ``max_ejection_percent`` of the
pool (one backend always may be); ``passive_ejected`` always mirrors the EJECTED state; every
ejection lasts ``min(recovery × m, max)`` and a tick at or after ``ejected_until`` readmits the
backend, traffic or not; consecutive ejections never get shorter and healthy windows shorten
them again; errors spaced more than ``window`` apart never eject; reload keeps state per URL.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from a3s_gateway.config.values import ServerUrl
from a3s_gateway.services import Backend
from a3s_gateway.services.passive import (
    OutlierDetector,
    PassiveSettings,
    PassiveState,
    Transition,
)
from tests.property.strategies_passive import (
    Step,
    passive_settings,
    pool_weights,
    step_lists,
)
from tests.property.strategies_services import make_pool

EJECTED, PROBATION = PassiveState.EJECTED, PassiveState.PROBATION


def cap(settings: PassiveSettings, backends: list[Backend]) -> int:
    """The most weight-positive backends that may be ejected at once."""
    pool = sum(1 for b in backends if b.weight > 0)
    return max(1, settings.max_ejection_percent * pool // 100)


@dataclass
class History:
    """What the driver saw of one backend: its last ejection and when probation began."""

    multiplier: int = 0
    duration: float = 0.0
    probation_since: float | None = None


@dataclass
class Run:
    """Drives a detector through steps and checks the per-step invariants."""

    settings: PassiveSettings
    backends: list[Backend]
    outliers: OutlierDetector = field(init=False)
    now: float = 0.0
    history: dict[Backend, History] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.outliers = OutlierDetector(self.backends, self.settings)
        self.history = {b: History() for b in self.backends}

    def apply(self, step: Step) -> None:
        self.now += step.advance
        backend = self.backends[step.backend % len(self.backends)]
        match step.kind:
            case "error" | "success":
                for _ in range(step.repeat):
                    change = self.outliers.record(backend, error=step.kind == "error", now=self.now)
                    self.observe([] if change is None else [change])
                    self.check_invariants()
            case "readmit":
                change = self.outliers.readmit(backend, self.now)
                self.observe([] if change is None else [change])
            case "tick":
                self.observe(self.outliers.tick(self.now))
                self.check_nothing_overdue()
        self.check_invariants()

    def observe(self, changes: list[Transition]) -> None:
        for change in changes:
            assert change.old is not change.new
            history = self.history[change.backend]
            if change.new is PROBATION:
                history.probation_since = self.now
            if change.new is EJECTED:
                self.check_ejection(change, history)

    def check_ejection(self, change: Transition, history: History) -> None:
        duration = self.settings.ejection_time(change.multiplier)
        assert change.multiplier >= 1
        assert change.ejected_until == self.now + duration
        assert change.multiplier <= history.multiplier + 1  # grows by one at most
        since = history.probation_since
        if (
            change.old is PROBATION
            and since is not None
            and self.now < since + self.settings.window
        ):
            # consecutive ejections: still in probation, so no healthy window decayed m
            assert change.multiplier == history.multiplier + 1
            assert duration >= history.duration
        history.multiplier, history.duration = change.multiplier, duration

    def check_invariants(self) -> None:
        outliers = self.outliers
        ejected = [b for b in self.backends if outliers.state(b) is EJECTED]
        for backend in self.backends:
            assert backend.passive_ejected is (outliers.state(backend) is EJECTED)
        assert sum(1 for b in ejected if b.weight > 0) <= cap(self.settings, self.backends)
        ends = []
        for backend in ejected:
            until = outliers.ejected_until(backend)
            assert until is not None
            assert until <= self.now + self.settings.max_recovery_time
            ends.append(until)
        assert outliers.next_readmission == min(ends, default=None)

    def check_nothing_overdue(self) -> None:
        for backend in self.backends:
            until = self.outliers.ejected_until(backend)
            assert until is None or until > self.now


def run(settings: PassiveSettings, weights: list[int], steps: list[Step]) -> Run:
    driver = Run(settings, make_pool(weights))
    for step in steps:
        driver.apply(step)
    return driver


@given(passive_settings(), pool_weights(), step_lists())
def test_invariants_hold_after_every_step(
    settings: PassiveSettings, weights: list[int], steps: list[Step]
) -> None:
    # cap, flag mirrors state, ejection length, consecutive growth, next_readmission
    run(settings, weights, steps)


@given(passive_settings(), pool_weights(), step_lists(), st.booleans())
def test_a_tick_at_ejected_until_readmits_without_traffic(
    settings: PassiveSettings, weights: list[int], steps: list[Step], late: bool
) -> None:
    driver = run(settings, weights, steps)
    outliers, clock = driver.outliers, driver.now
    due = [(outliers.ejected_until(b), b.index, b) for b in driver.backends]
    for until, _, backend in sorted((u, i, b) for u, i, b in due if u is not None):
        if outliers.state(backend) is not EJECTED:
            continue  # a late tick for an earlier backend readmitted this one too
        if until - 0.25 >= clock:
            outliers.tick(until - 0.25)
            assert outliers.state(backend) is EJECTED
        clock = until + (1000.0 if late else 0.0)
        changes = outliers.tick(clock)
        assert outliers.state(backend) is PROBATION
        assert not backend.passive_ejected
        assert backend.available is (backend.weight > 0)  # weight 0 stays drained
        assert any(c.backend is backend and c.new is PROBATION for c in changes)
    assert outliers.next_readmission is None
    assert not any(b.passive_ejected for b in driver.backends)


@given(
    passive_settings(min_threshold=2),
    pool_weights(),
    step_lists(),
)
def test_errors_spaced_more_than_a_window_apart_never_eject(
    settings: PassiveSettings, weights: list[int], steps: list[Step]
) -> None:
    backends = make_pool(weights)
    outliers = OutlierDetector(backends, settings)
    last_error: dict[Backend, float] = {}
    now = 0.0
    for step in steps:
        now += step.advance
        backend = backends[step.backend % len(backends)]
        previous = last_error.get(backend)
        spaced = previous is None or now - previous > settings.window
        if step.kind == "error" and spaced:
            last_error[backend] = now
            assert outliers.record(backend, error=True, now=now) is None
        elif step.kind == "tick":
            assert outliers.tick(now) == []
        else:
            assert outliers.record(backend, error=False, now=now) is None
    assert all(outliers.state(b) is PassiveState.HEALTHY for b in backends)
    assert outliers.skipped_ejections == 0


@given(
    passive_settings(),
    st.integers(1, 6),
    st.integers(0, 8),
    st.integers(0, 3),
    st.booleans(),
)
def test_ejection_time_grows_while_flapping_and_decays_when_healthy(
    settings: PassiveSettings, ejections: int, healthy_windows: int, quarter: int, ticked: bool
) -> None:
    (backend,) = make_pool([1])
    outliers = OutlierDetector([backend], settings)
    threshold, window = settings.error_threshold, settings.window
    now, duration = 0.0, 0.0
    for m in range(1, ejections + 1):
        count = threshold if m == 1 else 1  # later ones are probation errors
        *_, change = [outliers.record(backend, error=True, now=now) for _ in range(count)]
        assert change is not None
        assert change.multiplier == m
        assert change.ejected_until is not None
        assert change.ejected_until - now == settings.ejection_time(m) >= duration
        duration = change.ejected_until - now
        now = change.ejected_until
        outliers.tick(now)  # → probation
    healthy_at = now + window
    if ticked:
        outliers.tick(healthy_at)
        outliers.tick(healthy_at + healthy_windows * window)
    now = healthy_at + healthy_windows * window + quarter * window / 4
    changes = [outliers.record(backend, error=True, now=now) for _ in range(threshold)]
    final = changes[-1]
    assert final is not None
    assert final.new is EJECTED
    expected = max(0, ejections - healthy_windows) + 1
    assert final.multiplier == expected
    assert final.ejected_until == now + settings.ejection_time(expected)


@given(passive_settings(), pool_weights(), step_lists(), st.booleans())
def test_adopt_keeps_every_state_per_url_only_when_settings_are_equal(
    settings: PassiveSettings, weights: list[int], steps: list[Step], same: bool
) -> None:
    old = run(settings, weights, steps)
    fresh = [Backend(ServerUrl(b.url.text), b.weight, b.index) for b in reversed(old.backends)]
    new_settings = (
        settings
        if same
        else PassiveSettings(
            error_threshold=settings.error_threshold + 1,
            window=settings.window,
            recovery_time=settings.recovery_time,
            max_recovery_time=settings.max_recovery_time,
            max_ejection_percent=settings.max_ejection_percent,
            error_statuses=settings.error_statuses,
            error_grpc_statuses=settings.error_grpc_statuses,
        )
    )
    new = OutlierDetector(fresh, new_settings)
    new.adopt(old.outliers)
    for backend in fresh:
        (before,) = [b for b in old.backends if b.url == backend.url]
        state = old.outliers.state(before) if same else PassiveState.HEALTHY
        assert new.state(backend) is state
        assert backend.passive_ejected is (state is EJECTED)
        expected_until = old.outliers.ejected_until(before) if same else None
        assert new.ejected_until(backend) == expected_until
