"""The multi-worker supervisor's management API (SPEC §13.4, §9.6): one listener for N workers.

Ring 1 (trio). ``run --workers N`` binds the ``management`` listener in the supervisor
(``supervisor/workers.py``; each worker runs ``Gateway(management=False)``) and serves it with
``FleetManagementServer``: the HTTP/1.1 shell, limits, TLS and endpoint logic are those of the
single-process gateway (``management/server.py``, ``management/api.py``); what
differs is where the answers come from. For every request the server builds a fresh
``FleetView`` (the ``GatewayView`` of the fleet), asking the workers over the control channel
only for what the endpoint shows (``Supervisor.query``, each worker bounded by
``QUERY_TIMEOUT``; a worker that does not answer is left out, logged and counted):

- ``/health``: the fleet's state (``fleet_state``): ``starting`` (503) until every worker has
  been ready once, then ``running`` while all N workers are ready, ``degraded`` (still 200)
  while only some are, ``down`` (503) while none is — every worker crashed and its restart is
  pending or failing, so every connection is refused — and ``stopping`` (503) while draining;
  ``workers`` = the workers ready now, ``workers_expected`` = N; the supervisor's uptime, the
  config generation and last reload of the supervisor's reload path; active connections and
  total requests summed over the workers' state reports. (A restarted worker counts its
  requests from zero, so the sum can go down.)
- ``/live``: the supervisor's event loop answers. ``/ready``: 503 with a reason while the
  workers start, a worker is missing (down or restarting: "1 of 2 workers ready (worker 0
  starting)"; "0 of 2 …" when none serves) or the supervisor drains; no worker is asked.
- ``/metrics``: ``metrics.merge`` of every ready worker's ``Gateway.metrics_snapshot()`` (the
  compact msgpack snapshot of its cells) with the supervisor's own registry, rendered by
  ``prometheus_client`` (``metrics.render``) in a worker thread, so the event loop only
  freezes the supervisor's cells; the decoding, merge and rendering run off it. The
  supervisor's registry is a ``GatewayMetrics`` in which only the supervisor's values are
  set: the config gauges (generation, apply time, warnings — ``semantic_warnings`` of the
  running config for ``--workers N``: ``OWN`` gauges, so the supervisor's values are the ones
  shown), ``a3s_config_reloads_total`` from the supervisor's
  ``Reloader`` (workers leave it empty: every candidate is validated once, here), build info,
  its own ``process_*`` sample (CPU and memory add up over the processes; the descriptor limit
  and start time are the supervisor's), ``a3s_health_checks_total`` (the active probes run in
  the supervisor, once for all workers: ``probes/broadcast.py``), and three families of the
  fleet: ``a3s_workers_ready``, ``a3s_worker_restarts_total`` and
  ``a3s_worker_query_failures_total{query}``. The workers' ``a3s_backend_healthy`` is the
  health the supervisor pushed to them, so every worker reports the same.
- ``/config``: the supervisor's validated config, redacted: the current generation, which is
  what the supervisor hands every worker (``supervisor/workers.py``).
- ``/routes`` (and ``/routes/{name}``): the supervisor's own compiled ``RuntimeConfig``
  (``Fleet.runtime``): routes are a function of the config alone, identical in every worker of
  the generation, so no worker is asked. The same runtime decides 404 for an unknown route or
  service name.
- ``/services``, ``/services/{name}``, ``/backends``, ``/middlewares``: the workers' reports,
  merged. These documents show live per-worker state (health flags, passive ejections,
  requests in flight, breaker states, rate-limit keys, retry budgets, ``requests_total``
  per backend) that the supervisor's
  runtime, which never serves, does not have; each worker builds them with the API's own
  document functions and ``merge_documents`` combines them: counts are added up (in flight,
  keys, breaker failures, retries...), a flag is true when it is true in any worker (the
  ``MAX`` rule of the metrics merge), a state that differs takes the worst (``open`` over
  ``half-open`` over ``closed``; ``ejected`` over ``probation`` over ``healthy``),
  ``ejected_until`` the latest; settings (``weight``, ``backends_total``) are taken as they
  are; ``backends_available`` is recounted from the merged backends. Rate-limit ``keys`` and
  ``max_keys`` are both added up: the fleet holds up to N × ``max_keys`` buckets (SPEC §13.4:
  the effective limit is N × configured). 503 when no worker answered.
- ``/entrypoints``: the supervisor's config for names, protocols, addresses and TLS; bound
  addresses (the union: every worker binds the same ones with ``SO_REUSEPORT``) and
  connections (summed) from the workers' state reports.
- ``/version``, ``/providers``: the supervisor's. ``POST /reload``: the supervisor's reload
  path (``Reloader.reload_now``: validate once, compile once, SIGHUP to the ready workers);
  the answer reports the supervisor's generation once the workers have been signalled (each
  then reloads on its own and logs the result).

Access checks come first: a request the IP allow list or the token would refuse never causes a
worker query (``/health`` is open, so anyone who may reach the port may cause one state query
per request, bounded by the server's 64 connections).

Nurseries: none of its own (``Supervisor.query`` opens one per query; the server's are the
base class's). Deadlines: ``QUERY_TIMEOUT`` per worker per request. Must not: serve traffic,
bind sockets (``supervisor/workers.py`` binds the listener), or block on a worker.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Final, Protocol

import trio

from a3s_gateway.errors import ReloadError
from a3s_gateway.management.api import (
    OPEN_ENDPOINTS,
    AccessPolicy,
    ApiRequest,
    ApiResponse,
    Clock,
    ListenerInfo,
    endpoint_segments,
    handle,
    health_document,
    json_response,
    request_path,
)
from a3s_gateway.management.server import ManagementServer, ServerLimits
from a3s_gateway.observability.gateway_metrics import GatewayMetrics, semantic_warnings
from a3s_gateway.observability.metrics import (
    GaugeKind,
    Snapshot,
    decode,
    merge,
    monotonic_part,
    render,
)
from a3s_gateway.scaling.loop import (
    ScalingControl,
    control_stats,
    rollout_action_answer,
    rollout_documents,
    scaling_documents,
)
from a3s_gateway.server.process_metrics import read_process
from a3s_gateway.state import GatewayState, HealthSnapshot
from a3s_gateway.supervisor.worker_main import DocumentsReply, MetricsReply, StateReply
from a3s_gateway.version import __version__

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from a3s_gateway.config.schema import Config, Management
    from a3s_gateway.management.api import ReloadReport
    from a3s_gateway.observability.process import ProcessSample
    from a3s_gateway.providers import Reloader
    from a3s_gateway.runtime.compile import RuntimeConfig
    from a3s_gateway.supervisor.worker_main import QueryKind
    from a3s_gateway.supervisor.workers import Fleet, Supervisor

__all__ = [
    "QUERY_TIMEOUT",
    "FleetApi",
    "FleetManagementServer",
    "FleetView",
    "fleet_exposition",
    "fleet_listeners",
    "fleet_state",
    "merge_documents",
    "merge_services",
    "merge_snapshots",
    "readiness",
]

log: Final = logging.getLogger("a3s_gateway.management")

JsonObject = dict[str, object]

#: How long a request waits for each worker's reply before leaving that worker out.
QUERY_TIMEOUT: Final = 2.0
#: Gone workers whose counters are kept in the fleet's totals (a bound on restarts remembered).
RETIRED_LIMIT: Final = 256

#: Endpoint → what the workers are asked for it (the others need no worker).
_FETCH: Final[Mapping[str, QueryKind]] = {
    "metrics": "metrics",
    "health": "state",
    "entrypoints": "state",
    "services": "services",
    "backends": "services",
    "middlewares": "middlewares",
}
_READ: Final = frozenset({"GET", "HEAD"})
#: The statuses of ``handle``'s ``/health`` documents (others: a refused method).
_HEALTH_STATUSES: Final = frozenset({HTTPStatus.OK, HTTPStatus.SERVICE_UNAVAILABLE})
#: Lifecycle states in which a gateway serves traffic (as ``management_api``'s ``/health``).
_SERVING: Final = frozenset({"running", "reloading"})

#: Numbers that are settings, equal in every worker: kept as they are, not added up.
_SETTINGS: Final = frozenset({"weight", "backends_total", "priority", "effective_priority"})
#: The fields that name an element of a list of objects (a service, a backend, a retry reason).
_IDENTITY: Final = ("name", "service", "url", "revision", "reason")
#: States that can differ between workers, from best to worst.
_SEVERITY: Final[Mapping[str, int]] = {
    "closed": 0,
    "healthy": 0,
    "half-open": 1,
    "probation": 1,
    "open": 2,
    "ejected": 2,
}
#: Timestamps (RFC 3339, UTC: they sort as text) of which the latest is shown.
_LATEST: Final = frozenset({"ejected_until"})


# ------------------------------------------------------------------------- merging (pure)


def merge_documents(reports: Sequence[Sequence[JsonObject]]) -> list[JsonObject]:
    """Combine the workers' lists of documents (one list per worker) into one list, element by
    element (see the module docstring for the rules); elements appear in first-seen order."""
    merged = _merge_list([list(report) for report in reports])
    return [element for element in merged if isinstance(element, dict)]


def merge_services(reports: Sequence[Sequence[JsonObject]]) -> list[JsonObject]:
    """``merge_documents`` for ``/services``, with ``backends_available`` recounted from the
    merged backends."""
    services = merge_documents(reports)
    for service in services:
        backends = service.get("backends")
        if isinstance(backends, list):
            service["backends_available"] = sum(
                1 for backend in backends if isinstance(backend, dict) and backend.get("available")
            )
    return services


def _backends(services: Sequence[JsonObject]) -> list[JsonObject]:
    """``/backends``: every backend of every (merged) service."""
    found: list[JsonObject] = []
    for service in services:
        backends = service.get("backends")
        if isinstance(backends, list):
            found.extend(backend for backend in backends if isinstance(backend, dict))
    return found


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _objects(values: Sequence[object]) -> list[JsonObject] | None:
    """``values`` when every one is an object, else None."""
    objects = [value for value in values if isinstance(value, dict)]
    return objects if len(objects) == len(values) else None


def _combine(key: str, values: Sequence[object]) -> object:
    """One field's value in the fleet from its values in the workers (None: absent there)."""
    present = [value for value in values if value is not None]
    if not present:
        return None
    first = present[0]
    if key in _SETTINGS or len(present) == 1:
        return first
    if all(isinstance(value, bool) for value in present):
        return any(present)
    if all(_is_number(value) for value in present):
        return sum(value for value in present if isinstance(value, int | float))
    objects = _objects(present)
    if objects is not None:
        return _merge_object(objects)
    lists = [value for value in present if isinstance(value, list)]
    if len(lists) == len(present):
        return _merge_list(lists)
    texts = [value for value in present if isinstance(value, str)]
    if len(texts) == len(present):
        if key in _LATEST:
            return max(texts)
        if any(text in _SEVERITY for text in texts):
            return max(texts, key=lambda text: _SEVERITY.get(text, -1))
    return first


def _merge_object(objects: Sequence[JsonObject]) -> JsonObject:
    keys = dict.fromkeys(key for document in objects for key in document)
    return {key: _combine(key, [document.get(key) for document in objects]) for key in keys}


def _merge_list(lists: Sequence[list[object]]) -> list[object]:
    """Lists of objects: elements with the same identity fields are one element. Other lists
    (names of routers, entrypoints) are settings: the first worker's."""
    elements = [element for values in lists for element in values]
    objects = _objects(elements)
    if objects is None:
        return list(lists[0])
    groups: dict[tuple[object, ...], list[JsonObject]] = {}
    for element in objects:
        identity = tuple(element.get(key) for key in _IDENTITY)
        groups.setdefault(identity, []).append(element)
    return [_merge_object(group) for group in groups.values()]


def merge_snapshots(snapshots: Sequence[bytes], own: Snapshot) -> Snapshot:
    """``metrics.merge`` of ``snapshots`` with ``own``; a snapshot that does not decode is left
    out (and logged) instead of failing the scrape."""
    try:
        return merge(snapshots, own=own)
    except ValueError:
        good = [snapshot for snapshot in snapshots if _decodes(snapshot)]
        log.warning("metrics: %d malformed worker snapshot(s) left out", len(snapshots) - len(good))
        return merge(good, own=own)


def fleet_exposition(snapshots: Sequence[bytes], own: Snapshot) -> bytes:
    """The fleet's ``/metrics`` text: ``merge_snapshots`` rendered by ``prometheus_client``.
    Pure and thread-safe (``FleetApi`` runs it with ``trio.to_thread.run_sync``)."""
    return render(merge_snapshots(snapshots, own))


def _decodes(snapshot: bytes) -> bool:
    try:
        decode(snapshot)
    except ValueError:
        return False
    return True


def fleet_listeners(
    config: Config, runtime: RuntimeConfig, states: Sequence[StateReply]
) -> list[ListenerInfo]:
    """``/entrypoints``: the running config's entrypoints with the addresses bound in any
    worker (the union), their connections summed (None when no worker reported) and the
    certificates a TLS entrypoint serves (as the first worker that reports it serves them)."""
    infos = []
    for name, entry in config.entrypoints.items():
        if name not in runtime.entrypoints and name not in runtime.udp_entrypoints:
            continue
        bound = dict.fromkeys(
            _shown(host, port) for state in states for host, port in state.addresses.get(name, ())
        )
        connections = sum(state.connections.get(name, 0) for state in states) if states else None
        # The workers load the same files; the first that reports the entrypoint speaks for all
        # (a rotation in progress shows the certificate that worker serves).
        served = next(
            (state.certificates[name] for state in states if name in state.certificates), []
        )
        infos.append(
            ListenerInfo(
                name=name,
                protocol=entry.protocol,
                address=entry.address.text,
                bound=tuple(bound),
                tls=entry.tls is not None,
                connections=connections,
                certificates=tuple((tuple(names), expiry) for names, expiry in served),
            )
        )
    return infos


def _shown(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def fleet_state(lifecycle: GatewayState, ready: int, expected: int) -> tuple[str, bool]:
    """``/health``'s ``state`` for a supervisor in ``lifecycle`` with ``ready`` of ``expected``
    workers ready, and whether it is healthy (200): a running supervisor is ``running`` with
    every worker, ``degraded`` (healthy: traffic is served) with some, ``down`` with none."""
    if lifecycle is not GatewayState.RUNNING:
        return lifecycle.value, lifecycle.value in _SERVING
    if ready >= expected:
        return "running", True
    return ("degraded", True) if ready > 0 else ("down", False)


def readiness(supervisor: Supervisor) -> str | None:
    """Why the fleet is not ready (a worker is missing), or None when every worker is."""
    ready = supervisor.ready()
    count = supervisor.count
    if len(ready) == count:
        return None
    spawned = set(supervisor.spawned())
    missing = [
        f"worker {index} {'starting' if index in spawned else 'down'}"
        for index in range(count)
        if index not in ready
    ]
    return f"{len(ready)} of {count} workers ready ({', '.join(missing)})"


# ------------------------------------------------------------------------------- the view


class AcmeCheck(Protocol):
    """``ProviderHub.acme_check``'s shape: ask the ACME manager to check now."""

    def __call__(self, *, force: bool) -> bool: ...


def no_acme(*, force: bool) -> bool:
    """The ``AcmeCheck`` of a fleet without an ACME manager."""
    return False


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetView:
    """The fleet as one request sees it: a ``GatewayView`` over the supervisor's state and the
    replies fetched for this request (``FleetApi.view``)."""

    version: str
    #: Workers ready now (``/health``'s ``workers``).
    workers: int
    #: Worker slots (``--workers``; ``/health``'s ``workers_expected``).
    expected: int
    snapshot: HealthSnapshot
    lifecycle: GatewayState
    current: Config
    compiled: RuntimeConfig
    #: The entrypoints with the workers' addresses; empty unless a state query was made.
    entrypoints: tuple[ListenerInfo, ...] = ()
    #: The merged exposition; None unless fetched (or metrics are disabled).
    metrics: bytes | None = None
    #: The workers' merged documents for the endpoint; None unless fetched and answered.
    documents: list[JsonObject] | None = None
    #: Why ``/ready`` is 503 although the supervisor is running (a worker is missing).
    not_ready: str | None = None
    reload_path: Callable[[], Awaitable[ReloadReport]]
    #: The supervisor's autoscalers and rollouts, and the workers' buffer depths at the last
    #: answers (SPEC §13.4: scaling runs in the supervisor).
    scaling_control: ScalingControl | None = None
    depths: Mapping[str, int] = field(default_factory=dict)
    #: The supervisor's dynamic providers (``/providers``; SPEC §13.4: they run there).
    providers: list[JsonObject] = field(default_factory=list)
    #: The supervisor's ACME manager's ``check_now`` (``ProviderHub.acme_check``).
    acme_path: AcmeCheck = field(default=no_acme)

    def health(self) -> HealthSnapshot:
        return self.snapshot

    def state(self) -> GatewayState:
        return self.lifecycle

    def config(self) -> Config:
        return self.current

    def runtime(self) -> RuntimeConfig:
        return self.compiled

    def listeners(self) -> Sequence[ListenerInfo]:
        return self.entrypoints

    async def metrics_text(self) -> bytes | None:
        return self.metrics

    def backend_requests(self) -> Mapping[tuple[str, str], int] | None:
        return None  # the workers' documents carry their counts; ``merge_documents`` adds them

    async def reload(self) -> ReloadReport:
        return await self.reload_path()

    def scaling(self, clock: Clock) -> list[JsonObject]:
        control = self.scaling_control
        return [] if control is None else scaling_documents(control, self.depths, clock.timestamp)

    def rollouts(self, clock: Clock) -> list[JsonObject]:
        control = self.scaling_control
        return [] if control is None else rollout_documents(control, clock.timestamp)

    def rollout_action(self, service: str, action: str, clock: Clock) -> tuple[int, JsonObject]:
        return rollout_action_answer(self.scaling_control, service, action, clock.timestamp)

    def acme_check(self, *, force: bool) -> bool:
        return self.acme_path(force=force)

    def dynamic_providers(self) -> list[JsonObject]:
        return self.providers

    def finish(
        self, segments: tuple[str, ...] | None, method: str, response: ApiResponse, clock: Clock
    ) -> ApiResponse:
        """``handle``'s answer, with what only the fleet knows put in: ``/health`` tells the
        fleet's state (``fleet_state``), a 200 ``/ready`` while a worker is missing becomes
        503, and a 200 ``/services``, ``/services/{name}``, ``/backends`` or ``/middlewares``
        carries the workers' merged documents (503 when no worker answered). ``handle`` has
        already made every other decision (access, method, unknown names), so only its health
        documents (200 or 503) and its other 200 answers are changed."""
        if segments == ("health",) and response.status in _HEALTH_STATUSES:
            answer = self._health(clock)
        elif response.status != HTTPStatus.OK or segments is None:
            return response
        elif segments == ("ready",):
            if self.not_ready is None:
                return response
            answer = json_response(
                HTTPStatus.SERVICE_UNAVAILABLE, {"ready": False, "reason": self.not_ready}
            )
        elif segments[0] in ("services", "backends", "middlewares"):
            answer = self._documents(segments)
        else:
            return response
        if method == "HEAD":
            return ApiResponse(answer.status, answer.headers, b"")
        return answer

    def _health(self, clock: Clock) -> ApiResponse:
        """``/health``: the single-process document with the fleet's state and
        ``workers_expected``."""
        _, document = health_document(self, clock)
        state, healthy = fleet_state(self.lifecycle, self.workers, self.expected)
        document["state"] = state
        document["workers_expected"] = self.expected
        status = HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE
        return json_response(status, document)

    def _documents(self, segments: tuple[str, ...]) -> ApiResponse:
        documents = self.documents
        if documents is None:
            return json_response(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "no worker answered"})
        match segments:
            case ("services", name):
                found = [document for document in documents if document.get("name") == name]
                if not found:
                    error = {"error": "no worker serves this service yet"}
                    return json_response(HTTPStatus.SERVICE_UNAVAILABLE, error)
                return json_response(HTTPStatus.OK, found[0])
            case ("backends",):
                return json_response(HTTPStatus.OK, _backends(documents))
            case _:
                return json_response(HTTPStatus.OK, documents)


def _version() -> str:
    return __version__


class FleetApi:
    """Builds a ``FleetView`` per request from the supervisor, its ``Fleet`` (config, compiled
    runtime, reload status) and its ``Reloader``; owns the supervisor's metrics registry."""

    def __init__(
        self,
        supervisor: Supervisor,
        fleet: Fleet,
        reloader: Reloader,
        *,
        timeout: float = QUERY_TIMEOUT,
        version: str | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self._supervisor = supervisor
        self._fleet = fleet
        self._reloader = reloader
        self._timeout = timeout
        self._version = version if version is not None else _version()
        #: The supervisor's own families (module docstring): only its values are ever set
        #: (``metrics``: shared with the supervisor's health probers, which count their probes).
        self.metrics = GatewayMetrics(True, version=self._version) if metrics is None else metrics
        #: Each slot's worker (pid) and its last metrics snapshot.
        self._last: dict[int, tuple[int, bytes]] = {}
        #: The counters and histograms of workers that have gone (``_retire_gone``).
        self._retired: list[bytes] = []
        #: ``a3s_config_warnings`` of a generation: (generation, count).
        self._warning_count: tuple[int, int] | None = None
        registry = self.metrics.registry
        self._workers_ready = registry.gauge(
            "a3s_workers_ready", "Worker processes ready now.", kind=GaugeKind.OWN
        )
        self._restarts = registry.counter(
            "a3s_worker_restarts_total", "Worker processes restarted after an exit."
        )
        self._query_failures = registry.counter(
            "a3s_worker_query_failures_total",
            "Queries a ready worker did not answer in time (its part was left out), by query.",
            ("query",),
        )

    async def view(self, fetch: QueryKind | None = None) -> FleetView:
        """The view for one request, with ``fetch`` asked of the ready workers first."""
        supervisor = self._supervisor
        states: Sequence[StateReply] = ()
        metrics: bytes | None = None
        documents: list[JsonObject] | None = None
        match fetch:
            case "metrics":
                metrics = await self.metrics_text()
            case "state":
                answers = await supervisor.query("state", StateReply, within=self._timeout)
                states = list(answers.replies.values())
            case "services" | "middlewares":
                found = await supervisor.query(fetch, DocumentsReply, within=self._timeout)
                reports = [reply.documents for reply in found.replies.values()]
                if reports:
                    documents = (
                        merge_services(reports) if fetch == "services" else merge_documents(reports)
                    )
            case None:
                pass
        return self._build(states=states, metrics=metrics, documents=documents)

    def current(self) -> FleetView:
        """The view without asking any worker (for the base server's constructor)."""
        return self._build()

    def _build(
        self,
        *,
        states: Sequence[StateReply] = (),
        metrics: bytes | None = None,
        documents: list[JsonObject] | None = None,
    ) -> FleetView:
        supervisor, fleet = self._supervisor, self._fleet
        started = supervisor.started_at
        config = fleet.config()
        snapshot = HealthSnapshot(
            state=supervisor.state(),
            uptime_secs=0.0 if started is None else trio.current_time() - started,
            active_connections=sum(sum(state.connections.values()) for state in states),
            total_requests=sum(state.total_requests for state in states),
            config_generation=fleet.config_generation,
            last_reload=fleet.last_reload,
        )
        listeners = fleet_listeners(config, fleet.runtime, states) if states else []
        return FleetView(
            version=self._version,
            workers=len(supervisor.ready()),
            expected=supervisor.count,
            snapshot=snapshot,
            lifecycle=snapshot.state,
            current=config,
            compiled=fleet.runtime,
            entrypoints=tuple(listeners),
            metrics=metrics,
            documents=documents,
            not_ready=readiness(supervisor),
            reload_path=self.reload,
            scaling_control=fleet.scaling.control,
            depths=dict(fleet.scaling.depths),
            providers=self._reloader.hub.documents(),
            acme_path=self._reloader.hub.acme_check,
        )

    async def metrics_text(self) -> bytes | None:
        """The fleet's exposition (module docstring); None with ``metrics_enabled = false``."""
        if not self._fleet.config().observability.metrics_enabled:
            return None
        answers = await self._supervisor.query("metrics", MetricsReply, within=self._timeout)
        pids = self._supervisor.pids()
        snapshots: list[bytes] = []
        for index, reply in answers.replies.items():
            if reply.snapshot is None:
                continue
            snapshots.append(reply.snapshot)
            pid = pids.get(index)
            if pid is not None:
                self._last[index] = (pid, reply.snapshot)
        self._retire_gone(pids)
        self._collect()
        own = self.metrics.freeze()
        return await trio.to_thread.run_sync(fleet_exposition, [*snapshots, *self._retired], own)

    def _retire_gone(self, pids: Mapping[int, int]) -> None:
        """Keep what a worker that has gone (exited or replaced) counted up to its last
        scrape: its counters and histograms join every later merge, so the fleet's totals do
        not drop when a worker is restarted (what it counted after its last scrape is lost).
        Bounded: past ``RETIRED_LIMIT`` gone workers the oldest is dropped, with a warning."""
        for index, (pid, snapshot) in list(self._last.items()):
            if pids.get(index) == pid:
                continue
            del self._last[index]
            try:
                self._retired.append(monotonic_part(snapshot))
            except ValueError:
                continue
            if len(self._retired) > RETIRED_LIMIT:
                self._retired.pop(0)
                log.warning(
                    "metrics: more than %d workers gone; the oldest one's counts dropped",
                    RETIRED_LIMIT,
                )

    def _collect(self) -> None:
        """Set the supervisor's own values (module docstring) before a merge."""
        metrics, fleet, supervisor = self.metrics, self._fleet, self._supervisor
        metrics.config_generation.labels().set(fleet.config_generation)
        metrics.config_applied(wall=fleet.applied_at, warnings=self._warnings())
        for result, total in self._reloader.counts.items():
            metrics.config_reloads.labels(result).advance_to(total)
        hub = self._reloader.hub
        metrics.providers(hub.counters(), len(hub.pending()))
        metrics.acme(*hub.acme_totals())
        self._workers_ready.labels().set(len(supervisor.ready()))
        self._restarts.labels().advance_to(supervisor.restarts)
        for kind, total in supervisor.query_failures.items():
            self._query_failures.labels(kind).advance_to(total)
        metrics.scaling.collect_control(control_stats(self._fleet.scaling.control))
        process = read_process()
        if process is not None:
            _set_process(metrics, process)

    def _warnings(self) -> int:
        """``semantic_warnings`` of the running config with N workers, once per generation."""
        generation = self._fleet.config_generation
        cached = self._warning_count
        if cached is None or cached[0] != generation:
            count = semantic_warnings(
                self._fleet.config(), workers=self._supervisor.count, environ=os.environ
            )
            cached = self._warning_count = (generation, count)
        return cached[1]

    async def reload(self) -> ReloadReport:
        """``POST /reload``: the supervisor's reload path (validated once, then SIGHUP)."""
        return await self._reloader.reload_now(force=True)


def _set_process(metrics: GatewayMetrics, process: ProcessSample) -> None:
    metrics.process_cpu.labels().advance_to(process.cpu_seconds)
    metrics.process_resident.labels().set(process.resident_bytes)
    metrics.process_virtual.labels().set(process.virtual_bytes)
    if process.open_fds is not None:
        metrics.process_open_fds.labels().set(process.open_fds)
    if process.max_fds is not None:
        metrics.process_max_fds.labels().set(process.max_fds)
    if process.start_time is not None:
        metrics.process_start.labels().set(process.start_time)


# ----------------------------------------------------------------------------- the server


class FleetManagementServer(ManagementServer):
    """``ManagementServer`` answering from a fresh ``FleetView`` per request (module
    docstring). The connection handling, limits and TLS are the base class's; ``answer``
    checks access with the same ``AccessPolicy`` (built from the same settings and token
    variable) before any worker is asked, then lets ``handle`` answer over the view."""

    def __init__(
        self,
        settings: Management,
        api: FleetApi,
        *,
        limits: ServerLimits | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(settings, api.current(), limits=limits, environ=environ)
        self._api = api
        self._token_source = environ
        self._current = settings
        self._gate = self._policy(settings)

    @property
    def settings(self) -> Management:
        """The ``management`` block in force (its address is where ``serve`` should listen)."""
        return self._current

    def update(self, settings: Management) -> None:
        super().update(settings)
        self._current = settings
        self._gate = self._policy(settings)

    def apply(self, config: Config) -> None:
        """A reload applied ``config`` (``Fleet.listeners``): its ``management`` settings take
        effect for the next request, except the address and ``enabled`` (a restart)."""
        settings = config.management
        if settings is None or not settings.enabled:
            return
        try:
            self.update(settings)
        except ReloadError as error:
            log.error("management settings not applied: %s", error)

    def _policy(self, settings: Management) -> AccessPolicy:
        environ = os.environ if self._token_source is None else self._token_source
        return AccessPolicy.from_settings(settings, environ.get(settings.auth_token_env) or None)

    def _fetch(self, segments: tuple[str, ...] | None, request: ApiRequest) -> QueryKind | None:
        """What the workers are asked before ``request`` is answered: nothing unless it reads
        an endpoint that needs them and passes the access checks."""
        if not segments or len(segments) > 2 or request.method not in _READ:
            return None
        name = segments[0]
        if len(segments) == 2 and name != "services":
            return None
        fetch = _FETCH.get(name)
        if fetch is None or (name not in OPEN_ENDPOINTS and self._gate.check(request) is not None):
            return None
        return fetch

    async def answer(self, request: ApiRequest) -> ApiResponse:
        settings = self._current
        try:
            try:
                segments = endpoint_segments(request_path(request.target), settings.path_prefix)
            except UnicodeDecodeError:
                segments = None
            view = await self._api.view(self._fetch(segments, request))
            clock = Clock(trio.current_time(), time.time())
            response = await handle(
                request, view, prefix=settings.path_prefix, access=self._gate, clock=clock
            )
            return view.finish(segments, request.method, response, clock)
        except Exception:
            log.exception(
                "management API: %s %s failed", request.method, request_path(request.target)
            )
            return json_response(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})
