"""Observed concurrency for the autoscaler (SPEC §11.2): per-second buckets of a service's
in-flight plus waiting requests, their stable and panic averages, and the fleet-wide sum.

Ring 0: pure and synchronous. Time is the ``now`` argument, in seconds on trio's clock; the
caller feeds every change of the level (``add``: +1 when a request enters the service or its
buffer, -1 when it leaves) and asks for the averages once per tick.

Must not: import trio, socket, ssl, time, logging or os; decide a scale (``autoscaler`` does);
know about workers or messages (the supervisor's loop moves ``Averages`` between processes).

Theory of operation
-------------------
Buckets are whole seconds ``[s, s + 1)`` of trio's clock. A bucket's value is the integral of
the level over the bucket (divided by one second), so a request in flight for half a second
adds 0.5 and a level held at L for the whole second gives L. A bucket is *complete* once
``now`` has reached its end; seconds in which nothing happened are complete too, at the level
that was held through them. The bucket in which the recorder was created is incomplete for
good (the recorder did not see its beginning) and is dropped, so every bucket kept is a full
second of observation.

Only the newest ``max(stable_window, panic_window)`` complete buckets are kept (a ring), so a
long idle gap costs at most that many appends. The stable average is the mean of the newest
``stable_window`` buckets, the panic average the mean of the newest ``panic_window`` ones; a
recorder younger than a window averages over the buckets it has. No complete bucket, no
averages (SPEC §11.2: no bucket yet, no decision).

Several processes (``run --workers N``, SPEC §13.4): each keeps its own recorders and reports
their ``Averages``; ``FleetConcurrency`` adds the reports up. Averages over equal windows add
up to the average of the summed buckets, so nothing but two floats per service crosses the
control channel. A source that stops reporting (a crashed worker) drops out after
``stale_after`` seconds instead of freezing its last load into the sum.

Time never runs backwards: a ``now`` below the latest value seen, or not finite, is read as
that latest value. The level never goes below zero: a surplus decrement is ignored.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from itertools import islice, repeat
from typing import Final

#: Seconds after which a silent source no longer counts in ``FleetConcurrency.total``.
DEFAULT_STALE_AFTER: Final = 3.0


@dataclass(frozen=True, slots=True)
class Averages:
    """The mean concurrency over the stable and the panic window, and how many complete
    one-second buckets lie behind ``stable`` (fewer than the window while the recorder is
    young)."""

    stable: float
    panic: float
    buckets: int


def whole_seconds(window: float) -> int:
    """``window`` rounded to whole seconds (half up), at least 1 (SPEC §11.2).

    Raises ``ValueError`` when ``window`` is not finite.
    """
    if not math.isfinite(window):
        raise ValueError(f"a window must be finite, not {window!r}")
    return max(1, math.floor(window + 0.5))


class ConcurrencyRecorder:
    """One service's concurrency in one process, bucketed by second (see the module's theory
    of operation)."""

    __slots__ = (
        "_buckets",
        "_integral",
        "_last",
        "_level",
        "_panic",
        "_partial",
        "_second",
        "_stable",
    )

    def __init__(self, now: float, *, stable_window: float, panic_window: float) -> None:
        start = now if math.isfinite(now) else 0.0
        self._stable = whole_seconds(stable_window)
        self._panic = whole_seconds(panic_window)
        self._buckets: deque[float] = deque(maxlen=max(self._stable, self._panic))
        self._level = 0
        #: The open bucket: its second, the integral so far and the time it reaches.
        self._second = math.floor(start)
        self._integral = 0.0
        self._last = start
        #: The open bucket began before the recorder did: it is dropped when it closes.
        self._partial = start > self._second

    @property
    def level(self) -> int:
        """The current number of in-flight plus waiting requests."""
        return self._level

    @property
    def buckets(self) -> tuple[float, ...]:
        """The complete buckets kept, oldest first, as of the latest ``now`` seen."""
        return tuple(self._buckets)

    def add(self, now: float, delta: int) -> None:
        """Change the level by ``delta`` at ``now`` (never below zero)."""
        self._advance(now)
        self._level = max(0, self._level + delta)

    def averages(self, now: float) -> Averages | None:
        """The averages over the buckets complete at ``now``; ``None`` before the first."""
        self._advance(now)
        if not self._buckets:
            return None
        stable, count = self._mean(self._stable)
        panic, _ = self._mean(self._panic)
        return Averages(stable=stable, panic=panic, buckets=count)

    def retune(self, *, stable_window: float, panic_window: float) -> None:
        """Adopt new windows (a reload changed them); the newest buckets are kept."""
        self._stable = whole_seconds(stable_window)
        self._panic = whole_seconds(panic_window)
        self._buckets = deque(self._buckets, maxlen=max(self._stable, self._panic))

    def _mean(self, window: int) -> tuple[float, int]:
        count = min(window, len(self._buckets))
        return math.fsum(islice(reversed(self._buckets), count)) / count, count

    def _advance(self, now: float) -> None:
        """Integrate the level from the latest time seen up to ``now``, closing the buckets
        that end on the way."""
        if not math.isfinite(now) or now <= self._last:
            return
        second = math.floor(now)
        if second > self._second:
            self._close_until(second)
        self._integral += self._level * (now - self._last)
        self._last = now

    def _close_until(self, second: int) -> None:
        """Close the open bucket and the idle seconds after it; open the bucket ``second``."""
        end = self._second + 1
        if self._partial:
            self._partial = False
        else:
            self._buckets.append(self._integral + self._level * (end - self._last))
        capacity = max(self._stable, self._panic)
        self._buckets.extend(repeat(float(self._level), min(second - end, capacity)))
        self._second = second
        self._integral = 0.0
        self._last = float(second)


@dataclass(frozen=True, slots=True)
class _Report:
    at: float
    averages: Averages


class FleetConcurrency:
    """The sum of the averages its sources (workers, or the single process) report.

    A report older than ``stale_after`` seconds no longer counts and is dropped; a source
    reports again whenever it has new averages.
    """

    __slots__ = ("_reports", "_stale_after")

    def __init__(self, *, stale_after: float = DEFAULT_STALE_AFTER) -> None:
        self._stale_after = stale_after
        self._reports: dict[int, _Report] = {}

    def report(self, source: int, now: float, averages: Averages) -> None:
        """``source``'s averages as of ``now``; replaces its previous report unless that one
        is newer."""
        previous = self._reports.get(source)
        if previous is None or previous.at <= now:
            self._reports[source] = _Report(now, averages)

    def forget(self, source: int) -> None:
        """Drop ``source`` (a worker that exited); unknown sources are ignored."""
        self._reports.pop(source, None)

    def total(self, now: float) -> Averages | None:
        """The sum of the fresh reports' stable and panic averages, with the most buckets any
        of them has; ``None`` when no source has a fresh report (none reported yet, or all
        went silent), so no decision is taken on missing data."""
        stale = [key for key, kept in self._reports.items() if now - kept.at > self._stale_after]
        for key in stale:
            del self._reports[key]
        if not self._reports:
            return None
        fresh = [kept.averages for kept in self._reports.values()]
        return Averages(
            stable=math.fsum(each.stable for each in fresh),
            panic=math.fsum(each.panic for each in fresh),
            buckets=max(each.buckets for each in fresh),
        )
