"""The management API's endpoint logic (SPEC §9.6, §3.13, §14.4): a request in, a response out.

Ring 0: pure functions over a read-only view of the running gateway (``GatewayView``); no trio,
sockets, TLS or clocks (the caller passes ``Clock``: trio's clock and the Unix time read at the
same moment, to turn the gateway's trio-clock instants into timestamps). The Ring 1 shell
(``management/server.py``) owns the listener, speaks HTTP/1.1, reads the token variable and
hands each request head here as an ``ApiRequest``; ``handle`` returns an ``ApiResponse`` whose
headers and body are final (a HEAD answer carries the GET answer's ``Content-Length`` and no
body).

Order of decisions in ``handle``: the path is split under ``path_prefix`` (a trailing ``/`` is
accepted); ``/health``, ``/live`` and ``/ready`` are open, every other path — unknown ones
included, so the surface is not revealed to outsiders — first passes ``AccessPolicy`` (client IP
in ``allowed_ips`` else 403, then the bearer token when one is configured else 401); then an
unknown path is 404 and a known path with the wrong method 405 with ``Allow``.

Must not: log, read the environment, put the token anywhere in a response (the policy keeps
only its SHA-256, compared in constant time), or show an interpolated config value outside the
open probes (``redactor_of``: ``/config``, ``POST /reload`` and the other documents).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import TYPE_CHECKING, Final, Protocol, TypeAlias
from urllib.parse import unquote

import msgspec

from a3s_gateway.config.problems import Problem
from a3s_gateway.config.schema import LABELLED_SECTIONS, redactor_of
from a3s_gateway.config.schema_services import LoadBalancer
from a3s_gateway.middleware.breaker import BreakerState, CircuitBreakerMiddleware
from a3s_gateway.middleware.phases import block_type
from a3s_gateway.middleware.ratelimit import RateLimitMiddleware
from a3s_gateway.middleware.redis_ratelimit import RedisRateLimitMiddleware
from a3s_gateway.middleware.retry import RetryMiddleware

if TYPE_CHECKING:
    import ipaddress
    from collections.abc import Mapping, Sequence

    from a3s_gateway.config.redaction import Redactor
    from a3s_gateway.config.schema import Config, Management
    from a3s_gateway.middleware.contract import Middleware
    from a3s_gateway.routing.request import PeerAddress
    from a3s_gateway.routing.table import Route
    from a3s_gateway.routing.tcp import TcpRoute
    from a3s_gateway.runtime.compile import RuntimeConfig, ServiceRuntime
    from a3s_gateway.services.backend import Backend
    from a3s_gateway.state import GatewayState, HealthSnapshot

__all__ = [
    "METRICS_CONTENT_TYPE",
    "OPEN_ENDPOINTS",
    "REALM",
    "AccessPolicy",
    "ApiRequest",
    "ApiResponse",
    "Clock",
    "GatewayView",
    "ListenerInfo",
    "ReloadOutcome",
    "ReloadReport",
    "handle",
    "json_response",
]

JsonObject: TypeAlias = dict[str, object]

METRICS_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
JSON_CONTENT_TYPE: Final = "application/json"
REALM: Final = "a3s-gateway-management"
#: Paths served without the IP and token checks (probes).
OPEN_ENDPOINTS: Final = frozenset({"health", "live", "ready"})

_READ: Final = ("GET", "HEAD")
_ACTION: Final = ("POST",)
#: ``GET <prefix>/<name>`` endpoints without parameters.
_READ_ENDPOINTS: Final = frozenset(
    {
        "health",
        "live",
        "ready",
        "metrics",
        "config",
        "routes",
        "services",
        "backends",
        "middlewares",
        "entrypoints",
        "providers",
        "scaling",
        "rollouts",
        "version",
    }
)
#: Endpoints that read the compiled runtime (the others answer without it).
_RUNTIME_ENDPOINTS: Final = frozenset(
    {"routes", "route", "services", "service", "backends", "middlewares"}
)
_ROLLOUT_ACTIONS: Final = frozenset({"pause", "resume", "rollback"})
#: ``Route.source_rank`` → the provider that supplied the router (SPEC §4.7 order).
_SOURCES: Final = ("file", "discovery", "kubernetes", "kubernetes-crd", "dns")
#: Lifecycle states in which the gateway serves traffic (SPEC §2.2, §9.6 ``/health``).
_SERVING: Final = frozenset({"running", "reloading"})

_encoder: Final = msgspec.json.Encoder()


# ------------------------------------------------------------------------------ the view


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerInfo:
    """One entrypoint as the management API shows it (``/entrypoints``, ``/ready``).

    ``bound`` lists the addresses actually listening (``ip:port``, port 0 resolved); empty
    means the entrypoint is not up. ``connections`` is None when the gateway does not count
    them per entrypoint.
    """

    name: str
    protocol: str
    address: str
    bound: tuple[str, ...]
    tls: bool = False
    connections: int | None = None
    #: On a TLS entrypoint: each certificate it serves, in configuration order, as its DNS
    #: names and its notAfter (Unix time).
    certificates: tuple[tuple[tuple[str, ...], float], ...] = ()


class ReloadReport(Protocol):
    """What ``POST /reload`` reports: ``ok`` with the generation serving afterwards and the
    config's warnings, or every problem that rejected the candidate (the running config
    stays). ``ReloadOutcome`` below is one; the reload path's own outcome type fits as well."""

    @property
    def ok(self) -> bool: ...

    @property
    def generation(self) -> int | None: ...

    @property
    def warnings(self) -> Sequence[Problem]: ...

    @property
    def problems(self) -> Sequence[Problem]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ReloadOutcome:
    """A plain ``ReloadReport``."""

    ok: bool
    generation: int | None = None
    warnings: tuple[Problem, ...] = ()
    problems: tuple[Problem, ...] = ()

    @classmethod
    def failed(cls, message: str) -> ReloadOutcome:
        """A rejection that is not a config problem (a ``ReloadError``, say)."""
        problem = Problem(
            severity="error", file="", line=None, column=None, path="", message=message
        )
        return cls(ok=False, problems=(problem,))


class GatewayView(Protocol):
    """What the management API reads from a running gateway (``GatewayAdapter`` in
    ``management/server.py`` implements it over ``a3s_gateway.app.Gateway``)."""

    @property
    def version(self) -> str:
        """The gateway's version string."""
        ...

    @property
    def workers(self) -> int:
        """How many worker processes serve traffic."""
        ...

    def health(self) -> HealthSnapshot:
        """``Gateway.health()``."""
        ...

    def state(self) -> GatewayState:
        """``Gateway.state()``."""
        ...

    def config(self) -> Config:
        """The active config (secrets included: the API redacts)."""
        ...

    def runtime(self) -> RuntimeConfig | None:
        """The compiled running generation; None before the gateway serves."""
        ...

    def listeners(self) -> Sequence[ListenerInfo]:
        """The entrypoints the gateway serves, with their bound addresses."""
        ...

    async def metrics_text(self) -> bytes | None:
        """The Prometheus exposition; None when metrics are disabled. Async: the gateway
        renders it off the event loop."""
        ...

    def backend_requests(self) -> Mapping[tuple[str, str], int] | None:
        """Requests sent to each backend since the start, by (service, backend URL): the
        ``requests_total`` of ``/backends`` and ``/services`` (0 for a backend not in it);
        None when not counted (metrics disabled, or the documents come from elsewhere)."""
        ...

    async def reload(self) -> ReloadReport | None:
        """Reload from the config file; None when the gateway runs without one."""
        ...

    def scaling(self, clock: Clock) -> list[JsonObject]:
        """``/scaling``: one document per autoscaled service (empty without any)."""
        ...

    def rollouts(self, clock: Clock) -> list[JsonObject]:
        """``/rollouts``: one document per rollout (empty without any)."""
        ...

    def rollout_action(self, service: str, action: str, clock: Clock) -> tuple[int, JsonObject]:
        """``pause``, ``resume`` or ``rollback`` the rollout of ``service``: 200 and its new
        document, 404 when it has none, 409 when it has finished (SPEC §9.6)."""
        ...

    def acme_check(self, *, force: bool) -> bool:
        """Ask the ACME manager to check its certificates now, renewing those due (``force``:
        every one); False when no entrypoint uses ACME (SPEC §12.5)."""
        ...

    def dynamic_providers(self) -> list[JsonObject]:
        """The DNS, discovery and Kubernetes providers' entries of ``/providers`` (times as
        Unix seconds; ``provider_documents`` renders them), empty when none runs."""
        ...


# ------------------------------------------------------------------------------ requests


@dataclass(frozen=True, slots=True)
class Clock:
    """Trio's clock (``now``) and the Unix time (``wall``) read together."""

    now: float
    wall: float

    def timestamp(self, instant: float) -> str:
        """RFC 3339 UTC with milliseconds for a trio-clock ``instant``."""
        unix = self.wall + (instant - self.now)
        moment = datetime.fromtimestamp(unix, UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One request head as the API needs it.

    ``method`` is upper-case text, ``target`` the request target as received, ``client`` the
    peer's IP (None when unknown: then only the open paths answer), ``authorization`` every
    ``Authorization`` field value in order.
    """

    method: str
    target: str
    client: PeerAddress | None
    authorization: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """A complete answer: status, header fields (``Content-Length`` included) and body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        lowered = name.lower()
        return next((value for key, value in self.headers if key.lower() == lowered), None)


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """Who may call the non-probe endpoints: ``allowed_ips`` and the optional bearer token.

    Only the token's SHA-256 is kept; comparing digests in constant time hides both the
    token's content and its length.
    """

    allowed: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    token_digest: bytes | None = None

    @classmethod
    def from_settings(cls, settings: Management, token: str | None) -> AccessPolicy:
        """The policy of a ``management`` block; ``token`` is the value of its
        ``auth_token_env`` variable (unset or empty: no token required, SPEC §3.13)."""
        digest = hashlib.sha256(token.encode()).digest() if token else None
        return cls(tuple(entry.network for entry in settings.allowed_ips), digest)

    @property
    def requires_token(self) -> bool:
        return self.token_digest is not None

    def ip_allowed(self, client: PeerAddress | None) -> bool:
        return client is not None and any(client in network for network in self.allowed)

    def token_accepted(self, authorization: Sequence[bytes]) -> bool:
        """True without a configured token; else exactly one ``Bearer`` credential that
        equals it."""
        expected = self.token_digest
        if expected is None:
            return True
        if len(authorization) != 1:
            return False
        scheme, _, credentials = authorization[0].strip(b" \t").partition(b" ")
        token = credentials.strip(b" \t")
        if scheme.lower() != b"bearer" or not token:
            return False
        return hmac.compare_digest(hashlib.sha256(token).digest(), expected)

    def check(self, request: ApiRequest) -> ApiResponse | None:
        """None when the request may go on; else the 403 or 401 answer."""
        if not self.ip_allowed(request.client):
            return json_response(HTTPStatus.FORBIDDEN, {"error": "forbidden"})
        if not self.token_accepted(request.authorization):
            challenge = ("WWW-Authenticate", f'Bearer realm="{REALM}"')
            return json_response(HTTPStatus.UNAUTHORIZED, {"error": "unauthorized"}, challenge)
        return None


# ------------------------------------------------------------------------------ dispatch


@dataclass(frozen=True, slots=True)
class _Endpoint:
    name: str
    params: tuple[str, ...]
    methods: tuple[str, ...]


def request_path(target: str) -> str:
    """The path of a request target (origin or absolute form), without the query."""
    path = target.partition("?")[0].partition("#")[0]
    if not path.startswith("/"):
        scheme, separator, rest = path.partition("://")
        if separator and scheme:
            slash = rest.find("/")
            path = rest[slash:] if slash >= 0 else "/"
    return path


def endpoint_segments(path: str, prefix: str) -> tuple[str, ...] | None:
    """The decoded segments of ``path`` under ``prefix`` (one trailing ``/`` accepted), or
    None when the path is not under the prefix or has an empty segment."""
    if path != prefix and not path.startswith(prefix + "/"):
        return None
    rest = path[len(prefix) :]
    rest = rest.removesuffix("/")
    if not rest:
        return ()
    parts = rest[1:].split("/")
    if any(not part for part in parts):
        return None
    return tuple(unquote(part, errors="strict") for part in parts)


def _match(segments: tuple[str, ...]) -> _Endpoint | None:
    match segments:
        case ("reload",):
            return _Endpoint("reload", (), _ACTION)
        case (name,) if name in _READ_ENDPOINTS:
            return _Endpoint(name, (), _READ)
        case ("routes", name):
            return _Endpoint("route", (name,), _READ)
        case ("services", name):
            return _Endpoint("service", (name,), _READ)
        case ("acme", "renew"):
            return _Endpoint("acme-renew", (), _ACTION)
        case ("acme", "renew-all"):
            return _Endpoint("acme-renew-all", (), _ACTION)
        case ("rollouts", service, action) if action in _ROLLOUT_ACTIONS:
            return _Endpoint("rollout-action", (service, action), _ACTION)
        case _:
            return None


async def handle(
    request: ApiRequest,
    view: GatewayView,
    *,
    prefix: str,
    access: AccessPolicy,
    clock: Clock,
) -> ApiResponse:
    """Answer one management request (see the module docstring for the order of checks).

    Exceptions from the view propagate (the shell logs them and answers 500).
    """
    try:
        segments = endpoint_segments(request_path(request.target), prefix)
    except UnicodeDecodeError:
        segments = None
    endpoint = _match(segments) if segments is not None else None
    if endpoint is None or endpoint.name not in OPEN_ENDPOINTS:
        denied = access.check(request)
        if denied is not None:
            return _for_method(request.method, denied)
    if endpoint is None:
        answer = json_response(HTTPStatus.NOT_FOUND, {"error": "not found"})
    elif request.method not in endpoint.methods:
        answer = json_response(
            HTTPStatus.METHOD_NOT_ALLOWED,
            {"error": "method not allowed"},
            ("Allow", ", ".join(endpoint.methods)),
        )
    else:
        answer = await _answer(endpoint, view, clock)
    return _for_method(request.method, answer)


async def _answer(endpoint: _Endpoint, view: GatewayView, clock: Clock) -> ApiResponse:
    name = endpoint.name
    if name == "metrics":
        text = await view.metrics_text()
        if text is None:
            return json_response(HTTPStatus.NOT_FOUND, {"error": "metrics are disabled"})
        return _response(HTTPStatus.OK, METRICS_CONTENT_TYPE, text)
    if name == "reload":
        outcome = await view.reload()
        return _reload_response(outcome, redactor_of(view.config()))
    if name in ("acme-renew", "acme-renew-all"):
        force = name == "acme-renew-all"
        if not view.acme_check(force=force):
            return json_response(HTTPStatus.NOT_FOUND, {"error": "no entrypoint uses ACME"})
        return json_response(HTTPStatus.ACCEPTED, {"acme": "checking", "force": force})
    status, document = _document(endpoint, view, clock)
    if name not in OPEN_ENDPOINTS:
        # Rules, backend URLs and addresses are config values too: interpolated ones are
        # hidden here as in /config (SPEC §14.4; a second pass over /config changes nothing).
        document = redactor_of(view.config()).tree(document)
    return json_response(status, document)


def _document(endpoint: _Endpoint, view: GatewayView, clock: Clock) -> tuple[int, object]:
    runtime = view.runtime() if endpoint.name in _RUNTIME_ENDPOINTS else None
    match endpoint.name, endpoint.params:
        case "route", (name,):
            found = [route for route in route_documents(runtime) if route["name"] == name]
            if not found:
                return HTTPStatus.NOT_FOUND, {"error": "route not found"}
            return HTTPStatus.OK, found[0]
        case "service", (name,):
            service = runtime.services.get(name) if runtime is not None else None
            if runtime is None or service is None:
                return HTTPStatus.NOT_FOUND, {"error": "service not found"}
            return HTTPStatus.OK, service_document(runtime, service, clock, view.backend_requests())
        case "rollout-action", (service, action):
            return view.rollout_action(service, action, clock)
    return _listing(endpoint.name, view, runtime, clock)


def _listing(
    name: str, view: GatewayView, runtime: RuntimeConfig | None, clock: Clock
) -> tuple[int, object]:
    """The documents of the endpoints without a path parameter."""
    match name:
        case "health":
            return health_document(view, clock)
        case "live":
            return HTTPStatus.OK, {"alive": True}
        case "ready":
            return ready_document(view)
        case "config":
            return HTTPStatus.OK, config_document(view.config())
        case "routes":
            return HTTPStatus.OK, route_documents(runtime)
        case "services":
            return HTTPStatus.OK, service_documents(runtime, clock, view.backend_requests())
        case "backends":
            return HTTPStatus.OK, backend_documents(runtime, clock, view.backend_requests())
        case "middlewares":
            return HTTPStatus.OK, middleware_documents(runtime)
        case "entrypoints":
            return HTTPStatus.OK, [listener_document(info) for info in view.listeners()]
        case "providers":
            return HTTPStatus.OK, provider_documents(view, clock)
        case "scaling":
            return HTTPStatus.OK, view.scaling(clock)
        case "rollouts":
            return HTTPStatus.OK, view.rollouts(clock)
        case "version":
            return HTTPStatus.OK, {"name": "a3s-gateway", "version": view.version}
        case _:  # pragma: no cover - _match returns only the names above
            raise AssertionError(name)


def _reload_response(outcome: ReloadReport | None, redactor: Redactor) -> ApiResponse:
    """The reply to ``POST /reload``. The problems come redacted from the loader; ``redactor``
    (the running config's values) is a second guard for what the swap itself said."""
    if outcome is None:
        return json_response(
            HTTPStatus.CONFLICT,
            {"ok": False, "error": "the gateway was started without a config file"},
        )
    if outcome.ok:
        document: JsonObject = {
            "ok": True,
            "generation": outcome.generation,
            "warnings": [_problem(redactor.problem(problem)) for problem in outcome.warnings],
        }
        return json_response(HTTPStatus.OK, document)
    problems = [_problem(redactor.problem(problem)) for problem in outcome.problems]
    return json_response(HTTPStatus.UNPROCESSABLE_ENTITY, {"ok": False, "problems": problems})


def _problem(problem: Problem) -> JsonObject:
    return {
        "severity": problem.severity,
        "file": problem.file,
        "line": problem.line,
        "column": problem.column,
        "path": problem.path,
        "message": problem.message,
        "text": problem.format(),
    }


# ------------------------------------------------------------------------------ documents


def health_document(view: GatewayView, clock: Clock) -> tuple[int, JsonObject]:
    """``/health``: 200 while running or reloading, else 503."""
    snapshot = view.health()
    state = snapshot.state.value
    last = snapshot.last_reload
    document: JsonObject = {
        "state": state,
        "uptime_secs": round(snapshot.uptime_secs, 3),
        "active_connections": snapshot.active_connections,
        "total_requests": snapshot.total_requests,
        "version": view.version,
        "config_generation": snapshot.config_generation,
        "last_reload": (
            None
            if last is None
            else {"at": clock.timestamp(last.time), "ok": last.ok, "problems": last.problem_count}
        ),
        "workers": view.workers,
    }
    return (HTTPStatus.OK if state in _SERVING else HTTPStatus.SERVICE_UNAVAILABLE), document


def ready_document(view: GatewayView) -> tuple[int, JsonObject]:
    """``/ready``: serving, and every entrypoint listening."""
    state = view.state().value
    reason: str | None = None
    if state not in _SERVING:
        reason = f"gateway is {state}"
    else:
        down = [info.name for info in view.listeners() if not info.bound]
        if down:
            reason = "not listening: " + ", ".join(down)
    if reason is None:
        return HTTPStatus.OK, {"ready": True}
    return HTTPStatus.SERVICE_UNAVAILABLE, {"ready": False, "reason": reason}


def config_document(config: Config) -> JsonObject:
    """``/config``: the config with secrets redacted (SPEC §14.4); every labelled object says
    where it came from."""
    tree = config.to_builtins(redact=True)
    tree.pop("provider_sources", None)
    provenance = config.provider_sources
    for section in LABELLED_SECTIONS:
        objects = tree.get(section)
        if isinstance(objects, dict):
            for name, body in objects.items():
                if isinstance(body, dict):
                    body["source"] = provenance.get(f"{section}/{name}", "file")
    return tree


def route_documents(runtime: RuntimeConfig | None) -> list[JsonObject]:
    """``/routes``: the HTTP routers in match order (SPEC §4.7), then the TCP routers in
    theirs, then the UDP routers by name."""
    if runtime is None:
        return []
    every = [name for name, entry in runtime.entrypoints.items() if entry.protocol == "http"]
    documents = [_route(route, every) for route in runtime.routes.routes]
    documents += [_tcp_route(route) for route in runtime.tcp_routes.routes]
    documents += [
        {
            "name": name,
            "kind": "udp",
            "service": router.service,
            "entrypoints": list(router.entrypoints),
            "source": "file",
            "status": "active",
        }
        for name, router in sorted(runtime.config.udp_routers.items())
    ]
    return documents


def _tcp_route(route: TcpRoute) -> JsonObject:
    return {
        "name": route.name,
        "kind": "tcp",
        "rule": route.rule.text,
        "service": route.service,
        "entrypoints": sorted(route.entrypoints or ()),
        "middlewares": list(route.middlewares),
        "priority": route.priority,
        "effective_priority": route.effective_priority,
        "tls_passthrough": route.tls_passthrough,
        "source": "file",
        "status": "active",
    }


def _route(route: Route, every_entrypoint: list[str]) -> JsonObject:
    attached = route.entrypoints
    return {
        "name": route.name,
        "kind": "http",
        "rule": route.rule.text,
        "service": route.service,
        "entrypoints": every_entrypoint if attached is None else sorted(attached),
        "middlewares": list(route.middlewares),
        "priority": route.priority,
        "effective_priority": route.effective_priority,
        "source": _SOURCES[route.source_rank] if route.source_rank < len(_SOURCES) else "other",
        "status": "active",
    }


#: Requests sent per (service, backend URL) (``GatewayView.backend_requests``).
Requests: TypeAlias = "Mapping[tuple[str, str], int] | None"


def service_documents(
    runtime: RuntimeConfig | None, clock: Clock, requests: Requests = None
) -> list[JsonObject]:
    """``/services``: every service with its backends (``requests``: their
    ``requests_total``; None leaves it null)."""
    if runtime is None:
        return []
    return [
        service_document(runtime, service, clock, requests) for service in runtime.services.values()
    ]


def service_document(
    runtime: RuntimeConfig, service: ServiceRuntime, clock: Clock, requests: Requests = None
) -> JsonObject:
    block = runtime.config.services.get(service.name)
    balancer = block.load_balancer if block is not None else None
    strategy = (balancer if balancer is not None else LoadBalancer()).strategy
    backends = _backends(runtime, service, clock, requests)
    return {
        "name": service.name,
        "strategy": strategy,
        "source": runtime.config.provider_sources.get(f"services/{service.name}", "file"),
        "backends_total": len(service.backends),
        "backends_available": sum(backend.available for backend in service.backends),
        "backends": backends,
    }


def backend_documents(
    runtime: RuntimeConfig | None, clock: Clock, requests: Requests = None
) -> list[JsonObject]:
    """``/backends``: every backend of every service (``requests``: their
    ``requests_total``; None leaves it null)."""
    if runtime is None:
        return []
    return [
        backend
        for service in runtime.services.values()
        for backend in _backends(runtime, service, clock, requests)
    ]


def _backends(
    runtime: RuntimeConfig, service: ServiceRuntime, clock: Clock, requests: Requests
) -> list[JsonObject]:
    revisions = _revision_names(runtime, service)
    return [
        _backend(
            service,
            backend,
            revisions[backend.index] if backend.index < len(revisions) else None,
            clock,
            None if requests is None else requests.get((service.name, backend.url.text), 0),
        )
        for backend in service.backends
    ]


def _revision_names(runtime: RuntimeConfig, service: ServiceRuntime) -> list[str | None]:
    """The revision of each backend index, as ``compile_runtime`` flattens the pool: the
    ``load_balancer`` servers, or (without any) every revision's servers in order."""
    block = runtime.config.services.get(service.name)
    if block is None:
        return []
    balancer = block.load_balancer
    if balancer is not None and balancer.servers:
        return [None] * len(balancer.servers)
    return [revision.name for revision in block.revisions for _ in revision.servers]


def _backend(
    service: ServiceRuntime,
    backend: Backend,
    revision: str | None,
    clock: Clock,
    requests: int | None,
) -> JsonObject:
    outliers = service.outliers
    until = outliers.ejected_until(backend) if outliers is not None else None
    return {
        "service": service.name,
        "url": backend.url.text,
        "weight": backend.weight,
        "revision": revision,
        "healthy": backend.active_healthy,
        "ejected": backend.passive_ejected,
        "ejected_until": (
            clock.timestamp(until) if until is not None and backend.passive_ejected else None
        ),
        "passive_state": outliers.state(backend).value if outliers is not None else None,
        "available": backend.available,
        "in_flight": backend.in_flight,
        # a3s_backend_requests_total summed over its codes (None: metrics are disabled)
        "requests_total": requests,
        "errors_total": None,
    }


def middleware_documents(runtime: RuntimeConfig | None) -> list[JsonObject]:
    """``/middlewares``: every definition, the routers listing it and its live state."""
    if runtime is None:
        return []
    config = runtime.config
    documents: list[JsonObject] = []
    for name, block in config.middlewares.items():
        routers = [
            router_name
            for router_name, router in config.routers.items()
            if name in router.middlewares
        ]
        instance = runtime.middlewares.get(name)
        documents.append(
            {
                "name": name,
                "type": block_type(block),
                "routers": routers,
                "state": middleware_state(instance) if instance is not None else {},
            }
        )
    return documents


def _breaker_state(state: BreakerState) -> str:
    return state.name.lower().replace("_", "-")


def middleware_state(instance: Middleware) -> JsonObject:
    """The observable state of one middleware instance (empty for stateless types)."""
    if isinstance(instance, CircuitBreakerMiddleware):
        return {
            "state": _breaker_state(instance.state),
            "in_flight": instance.in_flight,
            "transitions": {
                _breaker_state(state): count for state, count in instance.transitions.items()
            },
            "services": {
                service: {
                    "state": _breaker_state(breaker.state),
                    "failures": breaker.failures,
                    "successes": breaker.successes,
                    "probes": breaker.probes,
                }
                for service, breaker in sorted(instance.breakers.items())
            },
        }
    if isinstance(instance, RateLimitMiddleware):
        return {"keys": instance.key_count, "max_keys": instance.table.max_keys}
    if isinstance(instance, RedisRateLimitMiddleware):
        return {"redis_errors": instance.errors}
    if isinstance(instance, RetryMiddleware):
        budget = max(instance.budget_min, instance.budget_percent * instance.active_requests / 100)
        return {
            "active_requests": instance.active_requests,
            "active_retries": instance.active_retries,
            "budget": budget,
            "retries": [
                {"service": service, "reason": reason, "count": count}
                for (service, reason), count in sorted(instance.retries.items())
            ],
            "skipped": dict(sorted(instance.skipped.items())),
        }
    return {}


def listener_document(info: ListenerInfo) -> JsonObject:
    """One ``/entrypoints`` element."""
    return {
        "name": info.name,
        "protocol": info.protocol,
        "address": info.address,
        "bound": list(info.bound),
        "tls": _tls_document(info) if info.tls else None,
        "connections": info.connections,
    }


def _unix_text(unix: float) -> str:
    """RFC 3339 UTC (seconds) for a Unix time."""
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _tls_document(info: ListenerInfo) -> JsonObject:
    """A TLS entrypoint's certificates (SPEC §5.9): every name it answers for, the earliest
    expiry, and each certificate with its names and expiry."""
    certificates = info.certificates
    names = list(dict.fromkeys(name for listed, _ in certificates for name in listed))
    earliest = min((not_after for _, not_after in certificates), default=None)
    return {
        "names": names,
        "not_after": None if earliest is None else _unix_text(earliest),
        "certificates": [
            {"names": list(listed), "not_after": _unix_text(not_after)}
            for listed, not_after in certificates
        ],
    }


def provider_documents(view: GatewayView, clock: Clock) -> list[JsonObject]:
    """``/providers``: the file provider when configured, then every dynamic provider (state,
    last sync, last change, last error, object counts, what it skipped; SPEC §9.6)."""
    out: list[JsonObject] = []
    config = view.config()
    providers = config.providers
    if providers is not None and providers.file is not None:
        block = providers.file
        last = view.health().last_reload
        # The files' objects only: the providers' are counted in their own entries.
        supplied = config.provider_sources
        counts: JsonObject = {
            section: sum(f"{section}/{name}" not in supplied for name in getattr(config, section))
            for section in LABELLED_SECTIONS
        }
        out.append(
            {
                "name": "file",
                "watch": block.watch,
                "directory": block.directory,
                "debounce_secs": block.debounce.seconds,
                "last_sync": clock.timestamp(last.time) if last is not None and last.ok else None,
                "objects": counts,
                "errors": last.problem_count if last is not None and not last.ok else 0,
            }
        )
    for document in view.dynamic_providers():
        shown = dict(document)
        for key in ("last_sync", "last_change", "last_error_at"):
            value = shown.get(key)
            if isinstance(value, int | float):
                moment = datetime.fromtimestamp(value, UTC)
                shown[key] = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        out.append(shown)
    return out


# ------------------------------------------------------------------------------ responses


def render(document: object) -> bytes:
    """JSON pretty-printed with two spaces, newline-terminated."""
    return msgspec.json.format(_encoder.encode(document), indent=2) + b"\n"


def json_response(status: int, document: object, *extra: tuple[str, str]) -> ApiResponse:
    """A JSON answer (pretty-printed) with the API's standard fields plus ``extra``."""
    return _response(status, JSON_CONTENT_TYPE, render(document), *extra)


def _response(status: int, content_type: str, body: bytes, *extra: tuple[str, str]) -> ApiResponse:
    headers = (
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
        *extra,
    )
    return ApiResponse(int(status), headers, body)


def _for_method(method: str, response: ApiResponse) -> ApiResponse:
    """A HEAD answer keeps every field (``Content-Length`` of the GET body) and drops the body."""
    if method == "HEAD":
        return ApiResponse(response.status, response.headers, b"")
    return response
