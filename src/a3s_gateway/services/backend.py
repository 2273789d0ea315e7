"""Backends and their in-flight accounting (SPEC §7.1, §7.3).

Ring 0: pure, synchronous runtime state. A ``Backend`` is one server of one pool: its URL and
weight from the config, its position in the pool, its in-flight count and the two health flags
that the active and passive health machines set. A ``Lease`` stands for one attempt on a backend
(an HTTP attempt, a WebSocket session, a stream, a TCP connection, a UDP session) and gives the
in-flight count back exactly once, whatever way the attempt ends.

Identity is the object: two backends with the same URL in different pools (or generations) are
different backends, so ``Backend`` keeps the default identity ``==`` and ``hash``.

Must not: import trio, socket, ssl or time; decide anything about selection (``balancer.py``
does); change a health flag on its own (the health machines own them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import TracebackType

    from a3s_gateway.config.values import ServerUrl

__all__ = ["Backend", "Lease"]


class Backend:
    """One server of a pool, with mutable runtime state.

    ``available`` is the SPEC §7.1 predicate the balancers consult on every pick:
    weight > 0 ∧ active-healthy ∧ not passively ejected. Weight 0 drains the backend.
    """

    __slots__ = (
        "active_healthy",
        "in_flight",
        "index",
        "passive_ejected",
        "successor",
        "url",
        "weight",
    )

    url: ServerUrl
    weight: int
    index: int
    in_flight: int
    active_healthy: bool
    passive_ejected: bool

    def __init__(
        self,
        url: ServerUrl,
        weight: int = 1,
        index: int = 0,
        *,
        active_healthy: bool = True,
    ) -> None:
        if weight < 0:
            raise ValueError(f"backend weight must be >= 0, got {weight}")
        self.url = url
        self.weight = weight
        self.index = index
        self.in_flight = 0
        # Services with a ``scaling`` block start their backends unhealthy (SPEC §7.1).
        self.active_healthy = active_healthy
        self.passive_ejected = False
        #: The same server in the next config generation (a reload, SPEC §10.2: in-flight is
        #: kept per service and URL): every lease counted here is counted there too, so the
        #: new generation's limits and least-loaded choices see the old generation's requests.
        self.successor: Backend | None = None

    @property
    def available(self) -> bool:
        """True when new selections may choose this backend (SPEC §7.1)."""
        return self.weight > 0 and self.active_healthy and not self.passive_ejected

    def lease(self) -> Lease:
        """Count one attempt in flight; the returned lease gives it back exactly once.

        Use it as a context manager so every exit path (return, exception, cancellation)
        releases it: ``with backend.lease(): ...``.
        """
        backend: Backend | None = self
        while backend is not None:
            backend.in_flight += 1
            backend = backend.successor
        return Lease(self)

    def __repr__(self) -> str:
        state = "available" if self.available else "unavailable"
        return (
            f"<Backend #{self.index} {self.url.text} weight={self.weight} "
            f"in_flight={self.in_flight} {state}>"
        )


class Lease:
    """One in-flight attempt on ``backend`` (SPEC §7.3); create it with ``Backend.lease()``.

    ``release()`` decrements the backend's in-flight count the first time it is called and does
    nothing afterwards, so overlapping cleanup paths (an error handler and a ``finally``, say)
    cannot double-count. ``released`` tells whether that has happened.
    """

    __slots__ = ("backend", "released")

    backend: Backend
    released: bool

    def __init__(self, backend: Backend) -> None:
        # Constructed by ``Backend.lease()``, which has already counted the attempt.
        self.backend = backend
        self.released = False

    def release(self) -> None:
        """Give the in-flight slot back; idempotent."""
        if not self.released:
            self.released = True
            backend: Backend | None = self.backend
            while backend is not None:
                backend.in_flight -= 1
                backend = backend.successor

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "released" if self.released else "held"
        return f"<Lease {state} on {self.backend.url.text}>"
