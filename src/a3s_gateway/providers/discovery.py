"""The discovery provider (SPEC §10.5): services that describe themselves at
``<seed>/.well-known/a3s-service.json``, turned into a service and its routers.

Ring 1 (trio). ``ServiceDiscovery.run`` polls every seed of ``providers.discovery`` every
``poll_interval_secs``, counted from the start of the previous poll (a poll that takes longer is
followed at once by the next, never overlapped), and publishes its whole ``Snapshot`` after a
poll that changed it. One poll: every seed at once, each reading its document
(``GET <seed>/.well-known/a3s-service.json``, 2xx, at most ``max_document_bytes``) and then,
when the document is valid, its health (``GET <seed><health_path>``, 2xx = healthy). Requests
go through ``http_fetch.fetch`` (injectable) and never follow redirects.

What a seed becomes:

- *registered* once a document was read from it, until ``remove_after_failures`` consecutive
  polls have failed (document unreadable or invalid, or unhealthy); a seed that was removed
  registers again after a poll that succeeds. Its service is the ``name`` of its last valid
  document, so two seeds naming two services register both.
- *available* when it is registered and its last poll succeeded. Service ``<name>`` lists the
  available seeds of ``<name>`` as its servers (URL = the seed, weight from the document); with
  none available the service stays, without servers (requests get 503). A service without
  registered seeds is removed with its routers.
- Routers come from the healthy instance with the highest ``version`` (``newest``: semantic
  versions in SemVer 2.0.0 precedence, a leading ``v`` allowed, rank above free-form ones,
  which compare as strings; ties go to the seed listed first); when no instance is healthy,
  from the instance they last came from, else from the newest registered one. A single route
  is router ``discovered-<name>``, several are ``discovered-<name>-<i>`` (``router_name``).
  Registered instances whose routes differ: a warning, logged when it changes and listed in the
  details. A route ``build_router`` refuses (priority out of range, a wrong type), or whose
  router name is not a valid name or is already another discovered service's, is left out and
  listed in ``Snapshot.skipped``; rules and middleware names are checked by the hub's
  validation. A seed listed twice is polled once.

An invalid document (not JSON, a wrong type, too long, a bad ``name``) is a failed poll of its
seed, logged with the seed and the reason (warning when the reason changed, debug otherwise).
Unknown document fields are ignored and listed per seed in ``status.details``.
``status.synced()`` follows a poll in which every seed answered (a valid document and an HTTP
answer to the health check, healthy or not), ``status.failed`` any other poll.

Nurseries: one per poll (a task per seed, each ending with its two requests). Deadlines: each
request is bounded by ``timeout_secs`` inside ``fetch``. Must not: follow redirects, raise out
of ``run`` for a seed's failure, overlap polls, or keep connections between polls.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Annotated, Final, Protocol

import msgspec
import trio

from a3s_gateway.config.values import NAME_PATTERN
from a3s_gateway.providers.dynamic import (
    ProviderStatus,
    Snapshot,
    build_router,
    build_server,
    build_service,
)
from a3s_gateway.providers.http_fetch import Fetched, FetchError, fetch, one_line

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from a3s_gateway.config.schema import DiscoveryProvider
    from a3s_gateway.config.schema_routers import Router
    from a3s_gateway.config.schema_services import Server, Service
    from a3s_gateway.config.urls import HttpUrl
    from a3s_gateway.providers.dynamic import Publish

__all__ = [
    "WELL_KNOWN",
    "DiscoveredRoute",
    "Fetch",
    "ServiceDiscovery",
    "ServiceDocument",
    "VersionKey",
    "newest",
    "parse_document",
    "router_name",
    "version_key",
]

log: Final = logging.getLogger("a3s_gateway.providers")

#: Where a seed describes itself (RFC 8615), below the seed's own path.
WELL_KNOWN: Final = "/.well-known/a3s-service.json"
#: A health path: absolute, visible ASCII, no fragment (a query is allowed).
_HEALTH_PATH: Final = r"^/[\x21\x22\x24-\x7e]*\Z"
_NAME: Final = re.compile(NAME_PATTERN)
#: How many unknown fields a seed's details list, and how much of each name.
_UNKNOWN_SHOWN: Final = 32
_UNKNOWN_NAME: Final = 100
_NUMBER: Final = r"(?:0|[1-9][0-9]*)"
_PRE_PART: Final = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_SEMVER: Final = re.compile(
    rf"[vV]?({_NUMBER})\.({_NUMBER})\.({_NUMBER})"
    rf"(?:-({_PRE_PART}(?:\.{_PRE_PART})*))?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)


class Fetch(Protocol):
    """One bounded GET (``http_fetch.fetch``); raises ``FetchError``."""

    async def __call__(
        self,
        url: str,
        *,
        timeout: float,  # noqa: ASYNC109 -- the shape of http_fetch.fetch, which owns the bound
        max_body: int,
    ) -> Fetched: ...


# -- the document ---------------------------------------------------------------------------


class DiscoveredRoute(msgspec.Struct, frozen=True):
    """One entry of a document's ``routes``."""

    rule: str
    middlewares: tuple[str, ...] = ()
    priority: int = 0


class ServiceDocument(msgspec.Struct, frozen=True):
    """``/.well-known/a3s-service.json`` (SPEC §10.5); unknown fields are ignored."""

    name: Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
    version: str
    routes: tuple[DiscoveredRoute, ...] = ()
    health_path: Annotated[str, msgspec.Meta(pattern=_HEALTH_PATH)] = "/health"
    weight: Annotated[int, msgspec.Meta(ge=0)] = 1


_DOCUMENT_FIELDS: Final = frozenset(ServiceDocument.__struct_fields__)
_ROUTE_FIELDS: Final = frozenset(DiscoveredRoute.__struct_fields__)


def parse_document(body: bytes) -> tuple[ServiceDocument, tuple[str, ...]]:
    """The document in ``body`` and the names of its unknown fields (``routes[i].x`` inside a
    route; the first 32, each cut at 100 characters). Raises ``ValueError`` with a one-line
    reason."""
    try:
        tree = msgspec.json.decode(body)
    except msgspec.DecodeError as error:
        raise ValueError(f"not JSON: {error}") from None
    except RecursionError:
        raise ValueError("not JSON: nested too deeply") from None
    if not isinstance(tree, dict):
        raise ValueError(f"expected a JSON object, got {type(tree).__name__}")
    try:
        document = msgspec.convert(tree, type=ServiceDocument)
    except msgspec.ValidationError as error:
        raise ValueError(str(error)) from None
    unknown = [str(key) for key in tree if key not in _DOCUMENT_FIELDS]
    routes = tree.get("routes")
    for index, route in enumerate(routes if isinstance(routes, list) else ()):
        if isinstance(route, dict):
            unknown += [f"routes[{index}].{key}" for key in route if key not in _ROUTE_FIELDS]
    if len(unknown) > _UNKNOWN_SHOWN:
        unknown[_UNKNOWN_SHOWN:] = [f"… and {len(unknown) - _UNKNOWN_SHOWN} more"]
    return document, tuple(one_line(name, _UNKNOWN_NAME) for name in unknown)


# -- versions and names (pure) --------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class VersionKey:
    """The order of ``version`` strings: every semantic version above every free-form one;
    semantic versions by SemVer 2.0.0 precedence (build metadata ignored, a release above its
    pre-releases), free-form ones as strings."""

    semantic: bool
    numbers: tuple[int, int, int] = (0, 0, 0)
    release: bool = False
    pre: tuple[tuple[int, int, str], ...] = ()
    text: str = ""


def version_key(version: str) -> VersionKey:
    """The sort key of ``version`` (see ``VersionKey``)."""
    match = _SEMVER.fullmatch(version)
    if match is None:
        return VersionKey(semantic=False, text=version)
    major, minor, patch, pre = match.groups()
    parts = tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in (pre or "").split(".")
    )
    return VersionKey(
        semantic=True,
        numbers=(int(major), int(minor), int(patch)),
        release=pre is None,
        pre=() if pre is None else parts,
    )


def newest(versions: Sequence[str]) -> int:
    """The index of the highest version in ``versions`` (the first one on a tie). Raises
    ``ValueError`` when empty."""
    if not versions:
        raise ValueError("no versions")
    keys = [version_key(version) for version in versions]
    best = 0
    for index in range(1, len(keys)):
        if keys[index] > keys[best]:
            best = index
    return best


def router_name(service: str, index: int, count: int) -> str:
    """The router for route ``index`` of ``count`` of ``service``."""
    return f"discovered-{service}" if count == 1 else f"discovered-{service}-{index}"


# -- seeds ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Outcome:
    """One poll of one seed."""

    document: ServiceDocument | None = None
    unknown: tuple[str, ...] = ()
    server: Server | None = None
    healthy: bool = False
    error: str | None = None
    #: A valid document and an HTTP answer to the health check.
    answered: bool = False


@dataclass(slots=True)
class _Seed:
    """What the provider knows of one seed."""

    url: str
    order: int
    base: str
    document: ServiceDocument | None = None
    server: Server | None = None
    unknown: tuple[str, ...] = ()
    healthy: bool = False
    failures: int = 0
    last_error: str | None = None

    def registered(self, limit: int) -> bool:
        return self.document is not None and self.failures < limit

    def available(self, limit: int) -> bool:
        return self.registered(limit) and self.failures == 0

    def details(self, limit: int) -> dict[str, object]:
        document = self.document
        return {
            "service": None if document is None else document.name,
            "version": None if document is None else document.version,
            "registered": self.registered(limit),
            "healthy": self.healthy,
            "available": self.available(limit),
            "consecutive_failures": self.failures,
            "last_error": self.last_error,
            "unknown_fields": list(self.unknown),
        }


def _base(url: HttpUrl) -> str:
    """The seed without its query and trailing ``/``, with an explicit port."""
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{url.scheme}://{host}:{url.port}{url.target.partition('?')[0].rstrip('/')}"


@dataclass(frozen=True, slots=True)
class _Choice:
    """Where a service's routers come from."""

    seed: str
    document: ServiceDocument


@dataclass(slots=True)
class _Build:
    """A snapshot under construction."""

    routers: dict[str, Router] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    origins: dict[tuple[str, str], str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    warnings: dict[str, str] = field(default_factory=dict)

    def snapshot(self) -> Snapshot:
        return Snapshot(
            routers=self.routers,
            services=self.services,
            origins=self.origins,
            skipped=tuple(self.skipped),
        )


# -- the provider ---------------------------------------------------------------------------


class ServiceDiscovery:
    """``providers { discovery {} }``: see the module docstring."""

    def __init__(self, settings: DiscoveryProvider, *, fetch: Fetch = fetch) -> None:
        self.status = ProviderStatus("discovery")
        self._settings = settings
        self._fetch = fetch
        self._limit = settings.remove_after_failures
        seeds: dict[str, _Seed] = {}
        for seed in settings.seeds:
            seeds.setdefault(seed.url.text, _Seed(seed.url.text, len(seeds), _base(seed.url)))
        self._seeds: Final = tuple(seeds.values())
        self._chosen: dict[str, _Choice] = {}
        self._warnings: dict[str, str] = {}
        self.status.details = {"seeds": self._seed_details(), "warnings": []}

    async def run(
        self, publish: Publish, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Poll until cancelled, publishing the snapshot after every poll that changed it (the
        first poll always publishes)."""
        task_status.started()
        previous: Snapshot | None = None
        while True:
            started = trio.current_time()
            snapshot = await self.poll()
            if snapshot != previous:
                publish(snapshot)
                previous = snapshot
            await trio.sleep_until(started + self._settings.poll_interval_secs)

    async def poll(self) -> Snapshot:
        """Poll every seed once; update the status and return the current snapshot."""
        outcomes: dict[str, _Outcome] = {}

        async def one(seed: _Seed) -> None:
            outcomes[seed.url] = await self._poll_seed(seed)

        async with trio.open_nursery() as nursery:
            for seed in self._seeds:
                nursery.start_soon(one, seed)
        for seed in self._seeds:
            self._record(seed, outcomes[seed.url])
        build = self._build()
        self._note_warnings(build.warnings)
        self.status.details = {
            "seeds": self._seed_details(),
            "warnings": [build.warnings[name] for name in sorted(build.warnings)],
        }
        silent = [seed for seed in self._seeds if not outcomes[seed.url].answered]
        if silent:
            more = f" (and {len(silent) - 1} more)" if len(silent) > 1 else ""
            self.status.failed(f"seed {silent[0].url}: {silent[0].last_error}{more}")
        else:
            self.status.synced()
        return build.snapshot()

    # -- one seed

    async def _poll_seed(self, seed: _Seed) -> _Outcome:
        timeout = float(self._settings.timeout_secs)
        cap = self._settings.max_document_bytes
        url = seed.base + WELL_KNOWN
        try:
            answer = await self._fetch(url, timeout=timeout, max_body=cap)
        except FetchError as error:
            return _Outcome(error=str(error))
        if not 200 <= answer.status < 300:
            redirect = " (redirects are not followed)" if 300 <= answer.status < 400 else ""
            return _Outcome(error=f"GET {url}: HTTP {answer.status}{redirect}")
        try:
            document, unknown = parse_document(answer.body)
            server = build_server(seed.url, document.weight)
        except ValueError as error:
            return _Outcome(error=one_line(f"invalid document at {url}: {error}"))
        found = _Outcome(document, unknown, server)
        health = seed.base + document.health_path
        try:
            answer = await self._fetch(health, timeout=timeout, max_body=cap)
        except FetchError as error:
            return replace(found, error=f"health check: {error}")
        if 200 <= answer.status < 300:
            return replace(found, healthy=True, answered=True)
        reason = f"health check GET {health}: HTTP {answer.status}"
        return replace(found, answered=True, error=reason)

    def _record(self, seed: _Seed, outcome: _Outcome) -> None:
        """Apply one poll's outcome to ``seed``, logging what changed."""
        was = seed.registered(self._limit)
        was_name = None if seed.document is None else seed.document.name
        if outcome.document is not None:
            seed.document, seed.server, seed.unknown = (
                outcome.document,
                outcome.server,
                outcome.unknown,
            )
        seed.healthy = outcome.healthy
        if outcome.error is None:
            seed.failures, seed.last_error = 0, None
        else:
            seed.failures += 1
            level = logging.WARNING if outcome.error != seed.last_error else logging.DEBUG
            log.log(level, "discovery: seed %s: %s", seed.url, outcome.error)
            seed.last_error = outcome.error
        now = seed.registered(self._limit)
        name = None if seed.document is None else seed.document.name
        if now and (not was or name != was_name):
            assert seed.document is not None
            log.info(
                "discovery: seed %s registered for service %s (version %s)",
                seed.url,
                name,
                seed.document.version,
            )
        elif was and not now:
            log.warning(
                "discovery: seed %s removed from service %s after %d failed polls",
                seed.url,
                was_name,
                seed.failures,
            )

    def _seed_details(self) -> dict[str, object]:
        return {seed.url: seed.details(self._limit) for seed in self._seeds}

    # -- the snapshot

    def _build(self) -> _Build:
        """The snapshot of the seeds as they are now; forgets the route choice of services
        that are gone."""
        groups: dict[str, list[_Seed]] = {}
        for seed in self._seeds:
            if seed.registered(self._limit):
                assert seed.document is not None
                groups.setdefault(seed.document.name, []).append(seed)
        for gone in set(self._chosen) - set(groups):
            del self._chosen[gone]
        build = _Build()
        for name, seeds in groups.items():
            self._add_service(build, name, seeds)
            choice = self._choose(name, seeds)
            self._add_routers(build, name, choice)
            warning = _routes_warning(name, seeds, choice)
            if warning is not None:
                build.warnings[name] = warning
        return build

    def _add_service(self, build: _Build, name: str, seeds: list[_Seed]) -> None:
        servers: dict[str, dict[str, object]] = {}
        for seed in seeds:
            server = seed.server
            if server is not None and seed.available(self._limit):
                servers.setdefault(
                    server.url.text, {"url": server.url.text, "weight": server.weight}
                )
        build.services[name] = build_service({"load_balancer": {"servers": list(servers.values())}})
        build.origins["services", name] = "discovery " + ", ".join(seed.url for seed in seeds)

    def _choose(self, name: str, seeds: list[_Seed]) -> _Choice:
        """The healthy newest instance (remembered), else the remembered one, else the newest
        registered one."""
        healthy = [seed for seed in seeds if seed.available(self._limit)]
        if healthy:
            best = healthy[newest([_version(seed) for seed in healthy])]
            assert best.document is not None
            self._chosen[name] = _Choice(best.url, best.document)
        remembered = self._chosen.get(name)
        if remembered is not None:
            return remembered
        best = seeds[newest([_version(seed) for seed in seeds])]
        assert best.document is not None
        return _Choice(best.url, best.document)

    def _add_routers(self, build: _Build, name: str, choice: _Choice) -> None:
        routes = choice.document.routes
        for index, route in enumerate(routes):
            router = router_name(name, index, len(routes))
            where = f"discovery {choice.seed} route {index}"
            problem = None
            if _NAME.match(router) is None:
                problem = f"the router name {router} is not a valid name (too long)"
            elif router in build.routers:
                problem = f"the router name {router} is taken by {build.origins['routers', router]}"
            else:
                try:
                    build.routers[router] = build_router(
                        {
                            "rule": route.rule,
                            "service": name,
                            "entrypoints": list(self._settings.entrypoints),
                            "middlewares": list(route.middlewares),
                            "priority": route.priority,
                        }
                    )
                except ValueError as error:
                    problem = one_line(str(error))
            if problem is None:
                build.origins["routers", router] = where
            else:
                build.skipped.append(f"{where} (service {name}): left out: {problem}")

    def _note_warnings(self, warnings: dict[str, str]) -> None:
        """Log each service's routes warning once per change."""
        for name, warning in warnings.items():
            if self._warnings.get(name) != warning:
                log.warning("discovery: %s", warning)
        self._warnings = dict(warnings)


def _version(seed: _Seed) -> str:
    return "" if seed.document is None else seed.document.version


def _routes_warning(name: str, seeds: Iterable[_Seed], choice: _Choice) -> str | None:
    """A warning when the registered instances of ``name`` publish different routes."""
    shapes = {seed.url: seed.document.routes for seed in seeds if seed.document is not None}
    if len(set(shapes.values())) <= 1:
        return None
    return (
        f"service {name}: the routes differ between its instances ({', '.join(shapes)}); "
        f"serving those of {choice.seed} (version {choice.document.version})"
    )
