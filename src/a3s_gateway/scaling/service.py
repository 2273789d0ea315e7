"""One service's scaling and revision settings as the data plane reads them (SPEC §7.9, §11.5–
§11.7): the revision pools, the live split, the per-backend concurrency limit, and the choices
over them — which pool a request uses and which backend of it the limiter allows.

Ring 0: pure and synchronous. ``runtime/compile.py`` builds a ``ServiceScale`` per service that
has ``scaling`` or ``revisions``; it is the one mutable part of an otherwise frozen
``ServiceRuntime``: the shell attaches its per-process state (``live``: the buffer, the
concurrency recorder, the rollout's traffic sample; ``scaling/live.py``) and replaces ``split``
with the previous generation's when a reload leaves the revisions and the rollout unchanged, so
the live weights survive it (SPEC §11.8 "Reload").

Must not: import trio, wait, or count anything (the shell does, through ``live``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Sequence

    from a3s_gateway.config.schema_services import Rollout, Scaling, Service
    from a3s_gateway.middleware import RequestState
    from a3s_gateway.protocols.headers import HeaderLine
    from a3s_gateway.scaling.live import LiveService
    from a3s_gateway.scaling.revisions import RevisionSplit
    from a3s_gateway.services import Backend, Balancer

__all__ = ["Choice", "RevisionPool", "ServiceScale", "pick_limited"]


@dataclass(frozen=True, slots=True, eq=False)
class RevisionPool:
    """One revision: its backends (a slice of the service's) and its own balancer."""

    name: str
    tag: str | None
    backends: tuple[Backend, ...]
    balancer: Balancer

    def available(self) -> bool:
        """Whether some backend of this revision may be chosen now (SPEC §7.1)."""
        return any(backend.available for backend in self.backends)


@dataclass(frozen=True, slots=True)
class Choice:
    """The pool one request's selection uses: its balancer and backends, and the revision's
    index (None: the load-balancer pool, with or without revisions)."""

    balancer: Balancer
    backends: tuple[Backend, ...]
    revision: int | None


class ServiceScale:
    """What ``scaling`` and ``revisions`` add to one service's selection (module docstring)."""

    __slots__ = (
        "affinity",
        "concurrency",
        "header",
        "live",
        "pools",
        "revision_of",
        "rollout",
        "rollout_to",
        "scaling",
        "signature",
        "split",
    )

    def __init__(
        self,
        *,
        scaling: Scaling | None,
        pools: tuple[RevisionPool, ...],
        split: RevisionSplit | None,
        header: bytes | None,
        affinity: Callable[[RequestState], bytes] | None,
        rollout: Rollout | None,
        revision_of: tuple[int, ...],
        signature: tuple[object, ...],
    ) -> None:
        self.scaling = scaling
        #: ``container_concurrency``: the per-backend limit (SPEC §11.6); 0 = none.
        self.concurrency = scaling.container_concurrency if scaling is not None else 0
        self.pools = pools
        self.split = split
        #: ``revision_header`` in lower case (None: not set).
        self.header = header
        #: ``revision_affinity``'s key function (None: not set).
        self.affinity = affinity
        self.rollout = rollout
        #: The rollout's ``to`` revision's index (its traffic is sampled), None without one.
        self.rollout_to = (
            next(i for i, pool in enumerate(pools) if pool.name == rollout.to)
            if rollout is not None
            else None
        )
        #: Per backend of the service (by ``Backend.index``): its revision's index, -1 for the
        #: load-balancer pool.
        self.revision_of = revision_of
        #: The ``revisions``, ``revision_*`` and ``rollout`` settings: an equal signature after
        #: a reload keeps the live split and the rollout.
        self.signature = signature
        #: The shell's per-process state; None until it attaches one (``scaling/live.py``).
        self.live: LiveService | None = None

    def choose(
        self,
        fallback: Balancer,
        headers: Sequence[HeaderLine],
        affinity: Callable[[], bytes] | None,
    ) -> Choice:
        """The pool of one request (SPEC §11.7, §7.9 step 2): the revision its
        ``revision_header`` names if that one has an available backend, else the split's
        choice among the revisions with one (by affinity when set), else the load-balancer
        pool. ``affinity`` derives the request's affinity key (only called when set)."""
        split, pools = self.split, self.pools
        if split is None:
            return Choice(fallback, fallback.backends, None)
        header = self.header
        if header is not None:
            for name, value in headers:
                if name == header:
                    index = split.by_header(value)
                    if index is not None and pools[index].available():
                        return Choice(pools[index].balancer, pools[index].backends, index)
                    break
        available = [pool.available() for pool in pools]
        key = affinity() if affinity is not None and self.affinity is not None else None
        index = split.choose(available, affinity=key)
        if index is None:
            return Choice(fallback, fallback.backends, None)
        pool = pools[index]
        return Choice(pool.balancer, pool.backends, index)

    def live_share(self, backend: Backend) -> bool:
        """Whether ``backend`` belongs to the load-balancer pool or to a revision whose live
        share is above 0 (a sticky cookie may keep naming it, SPEC §7.6)."""
        if self.split is None:
            return True
        revision = self.revision_of[backend.index]
        return revision < 0 or self.split.percents[revision] > 0


def pick_limited(
    balancer: Balancer,
    backends: Sequence[Backend],
    limit: int,
    *,
    exclude: Collection[Backend],
    key: str | None,
    panic: bool,
) -> tuple[Backend | None, bool]:
    """The container concurrency limiter's choice (SPEC §11.6): among the backends below
    ``limit`` in-flight requests, the least loaded, the strategy breaking ties; and whether
    nothing was chosen only because every eligible backend is at the limit."""
    excluded = set(exclude)
    eligible = [
        backend
        for backend in backends
        if (backend.available or (panic and backend.weight > 0)) and backend not in excluded
    ]
    below = [backend for backend in eligible if backend.in_flight < limit]
    if not below:
        return None, bool(eligible)
    least = min(backend.in_flight for backend in below)
    chosen = {backend for backend in below if backend.in_flight == least}
    others = [backend for backend in backends if backend not in chosen]
    return balancer.pick(exclude=others, key=key, panic=panic), False


def signature_of(service: Service) -> tuple[object, ...]:
    """What must be equal across a reload for the live split and rollout to be kept."""
    return (service.revisions, service.revision_affinity, service.revision_header, service.rollout)
