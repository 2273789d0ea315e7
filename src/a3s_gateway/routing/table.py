"""The compiled HTTP route table (SPEC §4.7, §4.8; ``RouteTable`` of SPEC §2.8).

Ring 0: pure. Routes are ordered once: higher effective priority first, then source rank
(HCL files, discovery, Kubernetes Ingress, IngressRoute), then name in code-point order, and
each route gets its position in that order. Per entrypoint the table keeps two indexes:

- by exact host: a route whose rule requires one of a set of exact hosts
  (``Host(`a`) && …``) is filed under each of them;
- by path prefix, for the remaining routes whose rule requires a path prefix
  (``PathPrefix(`/api`) && …`` or ``Path(…)``): grouped by prefix length, so a lookup costs one
  dict probe per distinct length.

Everything else is *unindexed*. ``select`` evaluates, in position order, only the routes filed
under the request's host, those whose prefix the path starts with, and the unindexed ones, so a
thousand host- or prefix-routed routers cost about what ten do.
Must not: mutate after construction (a new config builds a new table), or read time or I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from a3s_gateway.routing.request import HttpRequestInfo, RequestView

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from a3s_gateway.routing.compiler import CompiledRule

#: Above this many (host, unindexed route) pairs the per-host lists are merged at lookup time
#: instead of precomputed, bounding the table's memory.
MAX_PRECOMPUTED_PAIRS: Final = 200_000


@dataclass(frozen=True, slots=True)
class Route:
    """One HTTP router as the table sees it."""

    name: str
    rule: CompiledRule
    service: str
    #: Entrypoints the router is attached to; ``None`` = every http entrypoint.
    entrypoints: frozenset[str] | None = None
    priority: int = 0  # as configured; 0 means the rule's default priority
    source_rank: int = 0
    middlewares: tuple[str, ...] = ()

    @property
    def effective_priority(self) -> int:
        """SPEC §4.7: ``priority`` if not 0, else the rule's default priority."""
        return self.priority if self.priority != 0 else self.rule.default_priority


def route_order(route: Route) -> tuple[int, int, str]:
    """The sort key of SPEC §4.7."""
    return (-route.effective_priority, route.source_rank, route.name)


class _EntrypointTable:
    """The routes of one entrypoint, in order, with the host and prefix indexes."""

    __slots__ = ("by_host", "by_prefix", "host_routes", "lazy", "ordered", "plain", "unindexed")

    def __init__(self, ordered: Sequence[Route]) -> None:
        self.ordered = tuple(ordered)
        hosts: dict[str, list[int]] = {}
        prefixes: dict[int, dict[bytes, list[int]]] = {}
        unindexed: list[int] = []
        for position, route in enumerate(self.ordered):
            if route.rule.hosts is not None:
                for host in route.rule.hosts:
                    hosts.setdefault(host, []).append(position)
            elif route.rule.path_prefix is not None:
                prefix = route.rule.path_prefix
                prefixes.setdefault(len(prefix), {}).setdefault(prefix, []).append(position)
            else:
                unindexed.append(position)
        self.unindexed = tuple(unindexed)
        self.by_prefix = tuple(
            (length, {prefix: tuple(found) for prefix, found in bucket.items()})
            for length, bucket in sorted(prefixes.items())
        )
        self.lazy = len(hosts) * len(unindexed) > MAX_PRECOMPUTED_PAIRS
        self.by_host = {
            host: tuple(filed if self.lazy else sorted([*filed, *unindexed]))
            for host, filed in hosts.items()
        }
        # The common answers, as routes: host-filed + unindexed, and unindexed alone.
        self.host_routes = {
            host: tuple(self.ordered[p] for p in found) for host, found in self.by_host.items()
        }
        self.plain = tuple(self.ordered[p] for p in unindexed)

    def candidates(self, host: str, path: bytes | None) -> Sequence[Route]:
        """Routes that can match a request for ``host`` and ``path``, in match order
        (``path=None``: every prefix-indexed route is a candidate)."""
        hits: list[int] = []
        for length, bucket in self.by_prefix:
            if path is None:
                hits += (p for found in bucket.values() for p in found)
            else:
                hits += bucket.get(path[:length], ())
        filed = self.by_host.get(host)
        if not hits and not (self.lazy and filed is not None):
            return self.plain if filed is None else self.host_routes[host]
        positions = [*hits, *(self.unindexed if filed is None else filed)]
        if self.lazy and filed is not None:
            positions += self.unindexed
        positions.sort()
        ordered = self.ordered
        return [ordered[position] for position in positions]


class RouteTable:
    """All HTTP routes of one config generation; ``select`` finds the winner (SPEC §2.8)."""

    __slots__ = ("_default", "_tables", "routes")

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes: tuple[Route, ...] = tuple(sorted(routes, key=route_order))
        for route in self.routes:
            if route.rule.http is None:
                raise ValueError(f"route {route.name!r} has a {route.rule.kind} rule")
        names = {ep for route in self.routes if route.entrypoints for ep in route.entrypoints}
        self._tables = {
            name: _EntrypointTable(
                [r for r in self.routes if r.entrypoints is None or name in r.entrypoints]
            )
            for name in names
        }
        self._default = _EntrypointTable([r for r in self.routes if r.entrypoints is None])

    def select(self, request: HttpRequestInfo | RequestView, entrypoint: str) -> Route | None:
        """The first route attached to ``entrypoint`` whose rule matches, or ``None`` (404).

        Raises ``InvalidPathEscape`` for raw info whose path has a bad ``%`` escape.
        """
        view = RequestView.from_info(request) if isinstance(request, HttpRequestInfo) else request
        table = self._tables.get(entrypoint, self._default)
        for route in table.candidates(view.host, view.path):
            matcher = route.rule.http
            if matcher is not None and matcher.matches(view):
                return route
        return None

    def candidates(self, host: str, entrypoint: str, path: bytes | None = None) -> Sequence[Route]:
        """The routes ``select`` would evaluate for a canonical ``host`` (and routing
        ``path``), in order."""
        return self._tables.get(entrypoint, self._default).candidates(host, path)
