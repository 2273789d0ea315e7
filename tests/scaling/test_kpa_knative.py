"""Knative's own KPA decision sequences, replayed against ``KpaDecider`` (SPEC §11.3).

The data and expectations come from knative/serving ``pkg/autoscaler/scaling/autoscaler_test.go``
(each sequence names its Go test). Knative's test fixtures, as data:

- ``newTestAutoscaler(target, tbc, …)``: ``TotalValue = target / 0.75``, ``PanicThreshold = 2``,
  both rates 10, ``StableWindow = 60s``, ``Reachable = true``, no delay window, created with
  one ready pod (so not in panic, ``maxPanicPods = 1``); the test then sets the ready count.
- A ``DeciderSpec`` literal leaves the other fields at Go's zero values: ``Reachable = false``,
  ``StableWindow = 0``, ``TotalValue = 0``, ``TargetBurstCapacity = 0`` (so EBC = 0).
- ``expectedEBC(t, tbc, panic, pods)`` = ``⌊t / 0.75 × pods − tbc − panic⌋``: written out here
  as the number it evaluates to (Knative compares with ±1 tolerance; these match exactly).
- A ``prepFunc`` that sets ``panicTime = now − 5s`` and ``maxPanicPods = 5`` is a decider
  created 5 s earlier with 5 ready pods (which starts it in panic with ``max_panic = 5``).
- ``time.Now()`` calls are times in seconds; consecutive calls are the same instant.

Not ported: metric-export assertions, no-data and pod-count errors (the trio loop's concern:
no bucket → no decision), RPS vs concurrency selection (the numbers are ported; the metric's
name does not matter to the decider).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from a3s_gateway.scaling.autoscaler import KpaDecider, KpaSpec, Observation

UTILIZATION = 0.75  # Knative's test targetUtilization


def knative_spec(target: float, tbc: float, **changes: float | bool) -> KpaSpec:
    """The spec ``newTestAutoscaler(target, tbc, …)`` builds, with ``changes`` applied."""
    spec = KpaSpec(
        target=target,
        total=target / UTILIZATION,
        target_burst_capacity=tbc,
        panic_threshold=2.0,
        max_scale_up_rate=10.0,
        max_scale_down_rate=10.0,
        stable_window=60.0,
        reachable=True,
    )
    return replace(spec, **changes)  # type: ignore[arg-type]  # changes are KpaSpec fields


#: The ``DeciderSpec`` literal of the three TestAutoscalerScaleDownDelay* tests.
DELAY_SPEC = KpaSpec(
    target=10.0,
    total=0.0,
    target_burst_capacity=0.0,
    panic_threshold=100.0,
    max_scale_up_rate=10.0,
    max_scale_down_rate=10.0,
    stable_window=0.0,
    reachable=True,
    scale_down_delay=300.0,
)


@dataclass(frozen=True, kw_only=True)
class Tick:
    """One ``expectScale`` call: inputs, then the expected result."""

    now: float
    ready: int
    stable: float
    panic: float
    desired: int
    ebc: int
    panic_mode: bool | None = None  # checked when the Go test checks panicTime
    update: KpaSpec | None = None  # ``as.Update(spec)`` just before this tick


@dataclass(frozen=True, kw_only=True)
class Sequence:
    go_test: str
    spec: KpaSpec
    ticks: tuple[Tick, ...]
    created_ready: int = 1
    created_at: float = 0.0


SEQUENCES: tuple[Sequence, ...] = (
    # TestAutoscalerScaleDownDelay, subtests "simple" then "gradual" (one shared autoscaler).
    Sequence(
        go_test="TestAutoscalerScaleDownDelay",
        spec=DELAY_SPEC,
        created_ready=0,
        ticks=(
            Tick(now=2, ready=0, stable=40, panic=40, desired=4, ebc=0),
            # five minutes at zero: 4 is still in the window
            Tick(now=300, ready=0, stable=0, panic=0, desired=4, ebc=0),
            # the sample at t=2 is exactly now − delay: out
            Tick(now=302, ready=0, stable=0, panic=0, desired=0, ebc=0),
            # "gradual"
            Tick(now=540, ready=0, stable=40, panic=40, desired=4, ebc=0),
            Tick(now=600, ready=0, stable=30, panic=30, desired=4, ebc=0),
            Tick(now=660, ready=0, stable=0, panic=0, desired=4, ebc=0),
            Tick(now=840, ready=0, stable=0, panic=0, desired=3, ebc=0),  # 4 scrolled out
            Tick(now=900, ready=0, stable=0, panic=0, desired=0, ebc=0),  # all scrolled out
        ),
    ),
    # TestAutoscalerScaleDownDelayNotReachable: unreachable skips the delay window. (The Go test
    # steps back to t=2 after t=60; our time never runs backwards, which changes nothing here.)
    Sequence(
        go_test="TestAutoscalerScaleDownDelayNotReachable",
        spec=DELAY_SPEC,
        created_ready=0,
        ticks=(
            Tick(now=2, ready=0, stable=40, panic=40, desired=4, ebc=0),
            Tick(now=60, ready=0, stable=0, panic=0, desired=4, ebc=0),
            Tick(
                now=2,
                ready=0,
                stable=0,
                panic=0,
                desired=0,
                ebc=0,
                update=replace(DELAY_SPEC, reachable=False),
            ),
        ),
    ),
    # TestAutoscalerScaleDownDelayZero: no window, so the drop is immediate.
    Sequence(
        go_test="TestAutoscalerScaleDownDelayZero",
        spec=replace(DELAY_SPEC, scale_down_delay=0.0, reachable=False),
        created_ready=0,
        ticks=(
            Tick(now=0, ready=0, stable=40, panic=40, desired=4, ebc=0),
            Tick(now=0.5, ready=0, stable=20, panic=20, desired=2, ebc=0),
        ),
    ),
    # TestAutoscalerMetrics: newTestAutoscaler(10, 100), 50/50 → 5 and panic on.
    Sequence(
        go_test="TestAutoscalerMetrics",
        spec=knative_spec(10, 100),
        ticks=(Tick(now=0, ready=1, stable=50, panic=50, desired=5, ebc=-137, panic_mode=True),),
    ),
    # TestAutoscalerMetricsWithRPS: stable 100, panic 99 at now + 61 s.
    Sequence(
        go_test="TestAutoscalerMetricsWithRPS",
        spec=knative_spec(10, 100),
        ticks=(Tick(now=61, ready=1, stable=100, panic=99, desired=10, ebc=-186, panic_mode=True),),
    ),
    Sequence(
        go_test="TestAutoscalerStableModeIncreaseWithConcurrencyDefault",
        spec=knative_spec(10, 101),
        ticks=(
            Tick(now=0, ready=1, stable=50, panic=10, desired=5, ebc=-98, panic_mode=False),
            Tick(now=0, ready=1, stable=100, panic=10, desired=10, ebc=-98, panic_mode=False),
        ),
    ),
    Sequence(
        go_test="TestAutoscalerStableModeIncreaseWithRPS",
        spec=knative_spec(10, 101),
        ticks=(
            Tick(now=0, ready=1, stable=50, panic=50, desired=5, ebc=-138),
            Tick(now=0, ready=1, stable=100, panic=99, desired=10, ebc=-187),
        ),
    ),
    # TestAutoscalerUnpanicAfterSlowIncrease: panic entered at 0, not extended at 30 (41/40 <
    # 2), left at 62 (0 + 60 < 62): back to the stable count, 50.
    Sequence(
        go_test="TestAutoscalerUnpanicAfterSlowIncrease",
        spec=knative_spec(1, 98),
        ticks=(
            Tick(now=0, ready=10, stable=11, panic=25, desired=25, ebc=-110, panic_mode=True),
            Tick(now=30, ready=40, stable=30, panic=41, desired=41, ebc=-86, panic_mode=True),
            Tick(now=62, ready=55, stable=50, panic=56, desired=50, ebc=-81, panic_mode=False),
        ),
    ),
    # TestAutoscalerExtendPanicWindow: 80/40 = 2 at t=30 extends the panic to 30 + 60. The last
    # two ticks are ours: they observe the extension the Go test reads from panicTime.
    Sequence(
        go_test="TestAutoscalerExtendPanicWindow",
        spec=knative_spec(1, 98),
        ticks=(
            Tick(now=0, ready=10, stable=11, panic=25, desired=25, ebc=-110, panic_mode=True),
            Tick(now=30, ready=40, stable=30, panic=80, desired=80, ebc=-125, panic_mode=True),
            Tick(now=90, ready=80, stable=30, panic=30, desired=80, ebc=-22, panic_mode=True),
            Tick(now=91, ready=80, stable=30, panic=30, desired=30, ebc=-22, panic_mode=False),
        ),
    ),
    Sequence(
        go_test="TestAutoscalerStableModeDecrease",
        spec=knative_spec(10, 98),
        ticks=(
            Tick(now=0, ready=8, stable=100, panic=100, desired=10, ebc=-92, panic_mode=False),
            Tick(now=0, ready=8, stable=50, panic=50, desired=5, ebc=-42, panic_mode=False),
        ),
    ),
    Sequence(
        go_test="TestAutoscalerStableModeNoTrafficScaleToZero",
        spec=knative_spec(10, 75),
        ticks=(
            Tick(now=0, ready=1, stable=1, panic=0, desired=1, ebc=-62),
            Tick(now=0, ready=1, stable=0, panic=0, desired=0, ebc=-62),
        ),
    ),
    # TestAutoscalerActivationScale: demand 1 with activation scale 2 → 2; no demand → 0.
    Sequence(
        go_test="TestAutoscalerActivationScale",
        spec=knative_spec(10, 75, activation_scale=2),
        ticks=(
            Tick(now=0, ready=1, stable=0, panic=0, desired=0, ebc=-62),
            Tick(now=0, ready=1, stable=1, panic=0, desired=2, ebc=-62),
        ),
    ),
    # TestAutoscalerPanicModeExponentialTrackAndStabilize: each step ×6, within maxUp = 10 × ready.
    Sequence(
        go_test="TestAutoscalerPanicModeExponentialTrackAndStabilize",
        spec=knative_spec(1, 101),
        ticks=(
            Tick(now=0, ready=1, stable=6, panic=6, desired=6, ebc=-106, panic_mode=True),
            Tick(now=0, ready=6, stable=36, panic=36, desired=36, ebc=-129, panic_mode=True),
            Tick(now=1, ready=36, stable=216, panic=216, desired=216, ebc=-269, panic_mode=True),
            Tick(now=1, ready=216, stable=1296, panic=1296, desired=1296, ebc=-1109),
            Tick(now=2, ready=1296, stable=1296, panic=1296, desired=1296, ebc=331),
        ),
    ),
    # TestAutoscalerPanicThenUnPanicScaleDown: panic holds 100 at t=30, leaves after 60 s.
    Sequence(
        go_test="TestAutoscalerPanicThenUnPanicScaleDown",
        spec=knative_spec(10, 93),
        ticks=(
            Tick(now=0, ready=1, stable=100, panic=100, desired=10, ebc=-180, panic_mode=True),
            Tick(now=0, ready=10, stable=100, panic=1000, desired=100, ebc=-960, panic_mode=True),
            Tick(now=30, ready=10, stable=1, panic=1, desired=100, ebc=39, panic_mode=True),
            Tick(now=61, ready=10, stable=1, panic=1, desired=1, ebc=39, panic_mode=False),
        ),
    ),
    # TestAutoscalerRateLimitScaleUp: needs 100, gets ×10 per step.
    Sequence(
        go_test="TestAutoscalerRateLimitScaleUp",
        spec=knative_spec(10, 61),
        ticks=(
            Tick(now=0, ready=1, stable=1000, panic=1001, desired=10, ebc=-1049),
            Tick(now=0, ready=10, stable=1000, panic=1001, desired=100, ebc=-929),
        ),
    ),
    # TestAutoscalerRateLimitScaleDown: needs 1, gets ÷10 per step.
    Sequence(
        go_test="TestAutoscalerRateLimitScaleDown",
        spec=knative_spec(10, 61),
        ticks=(
            Tick(now=0, ready=100, stable=1, panic=1, desired=10, ebc=1271),
            Tick(now=0, ready=10, stable=1, panic=1, desired=1, ebc=71),
        ),
    ),
    # TestAutoscalerUseOnePodAsMinimumIfEndpointsNotFound: ready 0 is readyF 1 for the rates,
    # but 0 for the burst capacity.
    Sequence(
        go_test="TestAutoscalerUseOnePodAsMinimumIfEndpointsNotFound",
        spec=knative_spec(10, 81),
        ticks=(Tick(now=0, ready=0, stable=1000, panic=888, desired=10, ebc=-969),),
    ),
    # TestAutoscalerUpdateTarget: the new spec is a DeciderSpec literal (Reachable false).
    Sequence(
        go_test="TestAutoscalerUpdateTarget",
        spec=knative_spec(10, 77),
        ticks=(
            Tick(now=0, ready=1, stable=100, panic=101, desired=10, ebc=-165),
            Tick(
                now=0,
                ready=10,
                stable=100,
                panic=101,
                desired=100,
                ebc=-159,
                update=knative_spec(1, 71, reachable=False),
            ),
        ),
    ),
    # TestStartInPanicMode checks the state after creation at 0, 1 and 2 ready pods (its spec:
    # target 100, total 120, tbc 11, threshold 220, rates 10, window 60, unreachable); here one
    # step at the static metric client's 10/10 observes it.
    *(
        Sequence(
            go_test="TestStartInPanicMode",
            spec=KpaSpec(
                target=100.0,
                total=120.0,
                target_burst_capacity=11.0,
                panic_threshold=220.0,
                max_scale_up_rate=10.0,
                max_scale_down_rate=10.0,
                stable_window=60.0,
                reachable=False,
            ),
            created_ready=ready,
            ticks=(
                Tick(
                    now=0,
                    ready=ready,
                    stable=10,
                    panic=10,
                    desired=desired,
                    ebc=ebc,
                    panic_mode=ready > 1,
                ),
            ),
        )
        for ready, desired, ebc in ((0, 1, -21), (1, 1, 99), (2, 2, 219))
    ),
)

#: TestAutoscalerScale's table: one tick each, created with one ready pod, at t=0.
#: (label, spec, ready, stable, panic, desired, ebc, in panic since t=-5 with max_panic 5)
SCALE_TABLE: tuple[tuple[str, KpaSpec, int, float, float, int, int, bool], ...] = (
    # …NoDataAtZeroNoAutoscaleWithExplicitEPs has the same data.
    ("AutoscalerNoDataAtZeroNoAutoscale", knative_spec(10, 100), 1, 0, 0, 0, -87, False),
    ("AutoscalerStableModeUnlimitedTBC", knative_spec(181, -1), 1, 21, 26, 1, -1, False),
    ("Autoscaler0TBC", knative_spec(10, 0), 1, 50, 49, 5, 0, False),
    ("AutoscalerStableModeNoChange", knative_spec(10, 100), 1, 50, 50, 5, -137, False),
    # the stable count is larger than the panic one, and panic takes the larger
    ("AutoscalerPanicStableLargerThanPanic", knative_spec(1, 100), 5, 50, 30, 50, -124, True),
    ("AutoscalerPanicStableLessThanPanic", knative_spec(1, 100), 5, 20, 30, 30, -124, True),
    ("AutoscalerStableModeNoChangeAlreadyScaled", knative_spec(10, 100), 5, 50, 50, 5, -84, False),
    # ⌈1.1 × 2⌉ = 3: the ceiling guarantees at least one step up
    (
        "AutoscalerStableModeIncreaseWithSmallScaleUpRate",
        knative_spec(1, 1982, max_scale_up_rate=1.1),
        2,
        3,
        3.1,
        3,
        -1983,
        False,
    ),
    # ⌊100 ÷ 1.1⌋ = 90
    (
        "AutoscalerStableModeDecreaseWithSmallScaleDownRate",
        knative_spec(10, 1982, max_scale_down_rate=1.1),
        100,
        1,
        1,
        90,
        -650,
        False,
    ),
    # unreachable: no scale-down limit
    (
        "AutoscalerStableModeDecreaseNonReachable",
        knative_spec(10, 1982, max_scale_down_rate=1.1, reachable=False),
        100,
        1,
        1,
        1,
        -650,
        False,
    ),
    ("AutoscalerPanicModeDoublePodCount", knative_spec(10, 84), 1, 50, 100, 10, -171, False),
)


def replay(sequence: Sequence) -> None:
    decider = KpaDecider(sequence.spec, now=sequence.created_at, ready=sequence.created_ready)
    for number, tick in enumerate(sequence.ticks):
        if tick.update is not None:
            decider.update(tick.update)
        decision = decider.step(tick.now, Observation(tick.ready, tick.stable, tick.panic))
        where = f"{sequence.go_test} tick {number}"
        assert (decision.desired, decision.excess_burst_capacity) == (tick.desired, tick.ebc), where
        if tick.panic_mode is not None:
            assert decision.panic is tick.panic_mode, where


@pytest.mark.parametrize(
    "sequence",
    SEQUENCES,
    ids=[f"{s.go_test}-{i}" for i, s in enumerate(SEQUENCES)],
)
def test_knative_sequence(sequence: Sequence) -> None:
    replay(sequence)


@pytest.mark.parametrize(
    ("label", "spec", "ready", "stable", "panic", "desired", "ebc", "panicking"),
    SCALE_TABLE,
    ids=[row[0] for row in SCALE_TABLE],
)
def test_knative_autoscaler_scale_table(
    label: str,
    spec: KpaSpec,
    ready: int,
    stable: float,
    panic: float,
    desired: int,
    ebc: int,
    panicking: bool,
) -> None:
    # TestAutoscalerScale
    tick = Tick(now=0, ready=ready, stable=stable, panic=panic, desired=desired, ebc=ebc)
    if panicking:
        # prepFunc: panicTime = now − 5 s, maxPanicPods = 5
        replay(Sequence(go_test=label, spec=spec, created_ready=5, created_at=-5, ticks=(tick,)))
    else:
        replay(Sequence(go_test=label, spec=spec, ticks=(tick,)))


def test_start_in_panic_mode_keeps_max_panic_at_the_ready_count() -> None:
    # TestStartInPanicMode: maxPanicPods = ready at creation, panic only above one pod.
    spec = knative_spec(100, 11)
    for ready in range(3):
        decider = KpaDecider(spec, now=0.0, ready=ready)
        assert decider.max_panic == ready
        assert decider.panicking is (ready > 1)
