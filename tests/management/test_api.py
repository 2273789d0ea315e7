"""The management API's endpoint logic (SPEC §9.6, §3.13, §14.4) over a fake gateway view.

The view holds a real ``Config`` and the ``RuntimeConfig`` compiled from it (Ring 0, no
sockets), so the documents are checked against real routes, backends and middleware
instances. Covers every endpoint, 404/405 with ``Allow``, pretty JSON, HEAD, the trailing
slash, secrets redacted in ``/config``, the access matrix (IP allowlist and bearer token) and,
as a property, that no request target makes ``handle`` fail.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from a3s_gateway.config.load import LoadOptions, load_text
from a3s_gateway.config.problems import Problem
from a3s_gateway.config.schema import Config, Management
from a3s_gateway.config.values import IpNetwork
from a3s_gateway.management.api import (
    METRICS_CONTENT_TYPE,
    AccessPolicy,
    ApiRequest,
    ApiResponse,
    Clock,
    ListenerInfo,
    ReloadOutcome,
    ReloadReport,
    handle,
)
from a3s_gateway.middleware.breaker import CircuitBreakerMiddleware
from a3s_gateway.middleware.contract import RequestState
from a3s_gateway.middleware.ratelimit import RateLimitMiddleware
from a3s_gateway.middleware.retry import RetryMiddleware
from a3s_gateway.runtime.compile import RuntimeConfig, compile_runtime
from a3s_gateway.state import GatewayState, HealthSnapshot, ReloadStatus

PREFIX = "/api/gateway"
LOCAL = ipaddress.ip_address("127.0.0.1")
OUTSIDER = ipaddress.ip_address("192.0.2.7")
TOKEN = "s3cret-admin-token-value"
CLOCK = Clock(now=100.0, wall=1_700_000_000.0)

SECRETS = {
    "basic": "basic-pass-9f8e7d",
    "key1": "api-key-one-1234567890",
    "key2": "api-key-two-0987654321",
    "jwt": "jwt-secret-abcdefghijklmnopqrstuvwxyz012345",
    "redis": "redis-pass-q1w2e3",
}

CONFIG = f"""
entrypoints "web" {{
  address = "127.0.0.1:8080"
}}
entrypoints "admin" {{
  address = "127.0.0.1:8081"
}}
routers "catchall" {{
  rule    = "PathPrefix(`/`)"
  service = "app"
}}
routers "api" {{
  rule        = "Host(`api.example`) && PathPrefix(`/v1`)"
  service     = "app"
  entrypoints = ["web"]
  middlewares = ["limit", "breaker", "again"]
}}
routers "pinned" {{
  rule     = "Path(`/p`)"
  service  = "canary"
  priority = 5000
}}
services "app" {{
  load_balancer {{
    strategy = "least-connections"
    servers  = [{{ url = "http://10.0.0.1:80" }}, {{ url = "http://10.0.0.2:80", weight = 3 }}]
    passive_health {{
      error_threshold = 2
      recovery_time   = "30s"
    }}
  }}
}}
services "canary" {{
  revisions = [
    {{ name = "v1", traffic_percent = 90, servers = [{{ url = "http://10.0.1.1:80" }}] }},
    {{ name = "v2", traffic_percent = 10, servers = [{{ url = "http://10.0.1.2:80" }}] }},
  ]
}}
middlewares "limit" {{
  type = "rate-limit"
  rate = 10
}}
middlewares "breaker" {{
  type = "circuit-breaker"
}}
middlewares "again" {{
  type = "retry"
}}
middlewares "basic" {{
  type     = "basic-auth"
  username = "ops"
  password = "{SECRETS["basic"]}"
}}
middlewares "keys" {{
  type = "api-key"
  keys = ["{SECRETS["key1"]}", "{SECRETS["key2"]}"]
}}
middlewares "token" {{
  type  = "jwt"
  value = "{SECRETS["jwt"]}"
}}
middlewares "shared" {{
  type      = "rate-limit-redis"
  rate      = 5
  redis_url = "redis://:{SECRETS["redis"]}@127.0.0.1:6379/0"
}}
"""


def load(text: str = CONFIG) -> Config:
    # "canary" has revisions, which are not available yet: the documents that show a backend's
    # revision are still checked, on a config loaded without that refusal.
    result = load_text(
        text, filename="management.hcl", options=LoadOptions(refuse_unavailable=False)
    )
    assert result.config is not None, [p.format() for p in result.errors]
    return result.config


@dataclass
class FakeView:
    """A ``GatewayView`` with settable answers."""

    current: Config
    compiled: RuntimeConfig | None
    lifecycle: GatewayState = GatewayState.RUNNING
    bound: list[ListenerInfo] = field(default_factory=list)
    metrics: bytes | None = b"# HELP a3s_up Up.\n# TYPE a3s_up gauge\na3s_up 1\n"
    outcome: ReloadReport | None = None
    last_reload: ReloadStatus | None = None
    reloads: int = 0
    #: ``backend_requests``: None, as with metrics disabled, unless a test sets counts.
    requests: Mapping[tuple[str, str], int] | None = None
    version: str = "9.8.7"
    workers: int = 1
    #: ``/scaling``'s documents and each service's rollout document (``/rollouts``).
    scaled: list[dict[str, object]] = field(default_factory=list)
    rollout_states: dict[str, dict[str, object]] = field(default_factory=dict)
    #: ``dynamic_providers``' documents (times as Unix seconds).
    dynamic: list[dict[str, object]] = field(default_factory=list)

    def health(self) -> HealthSnapshot:
        return HealthSnapshot(
            state=self.lifecycle,
            uptime_secs=12.34567,
            active_connections=3,
            total_requests=42,
            config_generation=self.compiled.generation if self.compiled else 1,
            last_reload=self.last_reload,
        )

    def state(self) -> GatewayState:
        return self.lifecycle

    def config(self) -> Config:
        return self.current

    def runtime(self) -> RuntimeConfig | None:
        return self.compiled

    def listeners(self) -> list[ListenerInfo]:
        return self.bound

    async def metrics_text(self) -> bytes | None:
        return self.metrics

    def backend_requests(self) -> Mapping[tuple[str, str], int] | None:
        return self.requests

    async def reload(self) -> ReloadReport | None:
        self.reloads += 1
        return self.outcome

    def scaling(self, clock: Clock) -> list[dict[str, object]]:
        return list(self.scaled)

    def rollouts(self, clock: Clock) -> list[dict[str, object]]:
        return [dict(state) for state in self.rollout_states.values()]

    def rollout_action(
        self, service: str, action: str, clock: Clock
    ) -> tuple[int, dict[str, object]]:
        state = self.rollout_states.get(service)
        if state is None:
            return 404, {"error": "rollout not found"}
        if state["state"] in ("completed", "rolled_back"):
            return 409, {"error": f"the rollout has {state['state']}"}
        state["state"] = {"pause": "paused", "resume": "in_progress", "rollback": "rolled_back"}[
            action
        ]
        return 200, dict(state)

    def acme_check(self, *, force: bool) -> bool:
        return False

    def dynamic_providers(self) -> list[dict[str, object]]:
        return [dict(entry) for entry in self.dynamic]


def make_view(text: str = CONFIG) -> FakeView:
    config = load(text)
    listeners = [
        ListenerInfo(name="web", protocol="http", address="127.0.0.1:8080", bound=("1:1",)),
        ListenerInfo(
            name="admin",
            protocol="http",
            address="127.0.0.1:8081",
            bound=("127.0.0.1:8081",),
            tls=True,
            connections=2,
            certificates=(
                (("admin.test", "*.admin.test"), 1_700_000_000.0),
                (("other.test", "admin.test"), 1_600_000_000.0),
            ),
        ),
    ]
    return FakeView(config, compile_runtime(config, 1), bound=listeners)


SHARED_VIEW = make_view()
OPEN = AccessPolicy.from_settings(Management(), None)
GUARDED = AccessPolicy.from_settings(Management(), TOKEN)


async def call(
    view: FakeView,
    path: str,
    method: str = "GET",
    *,
    client: ipaddress.IPv4Address | ipaddress.IPv6Address | None = LOCAL,
    authorization: tuple[bytes, ...] = (),
    access: AccessPolicy = OPEN,
) -> ApiResponse:
    request = ApiRequest(method, path, client, authorization)
    return await handle(request, view, prefix=PREFIX, access=access, clock=CLOCK)


def document(response: ApiResponse) -> object:
    assert response.header("content-type") == "application/json"
    assert response.header("content-length") == str(len(response.body))
    return json.loads(response.body)


def as_dict(value: object) -> dict[str, object]:
    assert isinstance(value, dict)
    return value


def as_list(value: object) -> list[dict[str, object]]:
    assert isinstance(value, list)
    assert all(isinstance(item, dict) for item in value)
    return value


# ------------------------------------------------------------------------------ probes


async def test_health_reports_the_snapshot_version_and_workers() -> None:
    view = make_view()
    view.last_reload = ReloadStatus(time=90.0, ok=False, problem_count=2)
    response = await call(view, f"{PREFIX}/health")
    assert response.status == 200
    assert as_dict(document(response)) == {
        "state": "running",
        "uptime_secs": 12.346,
        "active_connections": 3,
        "total_requests": 42,
        "version": "9.8.7",
        "config_generation": 1,
        # 10 s before CLOCK.now on trio's clock, as wall time.
        "last_reload": {"at": "2023-11-14T22:13:10.000Z", "ok": False, "problems": 2},
        "workers": 1,
    }


@pytest.mark.parametrize(
    ("state", "status"),
    [
        (GatewayState.RUNNING, 200),
        (GatewayState.RELOADING, 200),
        (GatewayState.STARTING, 503),
        (GatewayState.STOPPING, 503),
    ],
)
async def test_health_is_503_unless_serving(state: GatewayState, status: int) -> None:
    view = make_view()
    view.lifecycle = state
    response = await call(view, f"{PREFIX}/health")
    assert response.status == status
    assert as_dict(document(response))["state"] == state.value


async def test_live() -> None:
    response = await call(make_view(), f"{PREFIX}/live")
    assert (response.status, document(response)) == (200, {"alive": True})


async def test_ready_when_running_with_every_listener_bound() -> None:
    response = await call(make_view(), f"{PREFIX}/ready")
    assert (response.status, document(response)) == (200, {"ready": True})


async def test_not_ready_while_stopping() -> None:
    view = make_view()
    view.lifecycle = GatewayState.STOPPING
    response = await call(view, f"{PREFIX}/ready")
    assert response.status == 503
    assert document(response) == {"ready": False, "reason": "gateway is stopping"}


async def test_not_ready_with_a_listener_down() -> None:
    view = make_view()
    view.bound[0] = ListenerInfo(name="web", protocol="http", address=":80", bound=())
    response = await call(view, f"{PREFIX}/ready")
    assert response.status == 503
    assert document(response) == {"ready": False, "reason": "not listening: web"}


# ------------------------------------------------------------------------------ metrics, config


async def test_metrics_is_prometheus_text() -> None:
    view = make_view()
    response = await call(view, f"{PREFIX}/metrics")
    assert response.status == 200
    assert response.header("content-type") == METRICS_CONTENT_TYPE
    assert response.body == view.metrics


async def test_metrics_disabled_is_404() -> None:
    view = make_view()
    view.metrics = None
    response = await call(view, f"{PREFIX}/metrics")
    assert response.status == 404
    assert document(response) == {"error": "metrics are disabled"}


async def test_config_redacts_every_secret() -> None:
    response = await call(make_view(), f"{PREFIX}/config")
    assert response.status == 200
    for secret in SECRETS.values():
        assert secret.encode() not in response.body
    tree = as_dict(document(response))
    middlewares = as_dict(tree["middlewares"])
    assert as_dict(middlewares["basic"])["password"] == "<redacted>"
    assert as_dict(middlewares["basic"])["username"] == "ops"
    assert "<redacted>" in json.dumps(as_dict(middlewares["keys"])["keys"])
    assert as_dict(middlewares["token"])["value"] == "<redacted>"
    assert "<redacted>" in str(as_dict(middlewares["shared"])["redis_url"])
    assert as_dict(as_dict(tree["routers"])["api"])["source"] == "file"
    assert as_dict(as_dict(tree["services"])["app"])["source"] == "file"


# ------------------------------------------------------------------------------ live state


async def test_routes_in_match_order() -> None:
    response = await call(make_view(), f"{PREFIX}/routes")
    routes = as_list(document(response))
    assert [route["name"] for route in routes] == ["pinned", "api", "catchall"]
    api = routes[1]
    assert api == {
        "name": "api",
        "kind": "http",
        "rule": "Host(`api.example`) && PathPrefix(`/v1`)",
        "service": "app",
        "entrypoints": ["web"],
        "middlewares": ["limit", "breaker", "again"],
        "priority": 0,
        "effective_priority": api["effective_priority"],
        "source": "file",
        "status": "active",
    }
    assert routes[0]["priority"] == routes[0]["effective_priority"] == 5000
    assert routes[2]["entrypoints"] == ["web", "admin"]  # none listed: every http entrypoint


async def test_one_route_and_an_unknown_one() -> None:
    view = make_view()
    response = await call(view, f"{PREFIX}/routes/pinned")
    assert as_dict(document(response))["service"] == "canary"
    missing = await call(view, f"{PREFIX}/routes/nope")
    assert (missing.status, document(missing)) == (404, {"error": "route not found"})


async def test_services_and_backends() -> None:
    view = make_view()
    services = as_list(document(await call(view, f"{PREFIX}/services")))
    assert [service["name"] for service in services] == ["app", "canary"]
    app = services[0]
    assert (app["strategy"], app["backends_total"], app["backends_available"]) == (
        "least-connections",
        2,
        2,
    )
    canary = as_dict(document(await call(view, f"{PREFIX}/services/canary")))
    assert [backend["revision"] for backend in as_list(canary["backends"])] == ["v1", "v2"]
    missing = await call(view, f"{PREFIX}/services/nope")
    assert (missing.status, document(missing)) == (404, {"error": "service not found"})


async def test_requests_total_is_the_views_count_per_backend() -> None:
    view = make_view()
    view.requests = {("app", "http://10.0.0.2:80"): 7, ("gone", "http://10.0.0.1:80"): 3}
    backends = as_list(document(await call(view, f"{PREFIX}/backends")))
    counts = {(b["service"], b["url"]): b["requests_total"] for b in backends}
    assert counts == {
        ("app", "http://10.0.0.1:80"): 0,
        ("app", "http://10.0.0.2:80"): 7,
        ("canary", "http://10.0.1.1:80"): 0,
        ("canary", "http://10.0.1.2:80"): 0,
    }
    services = as_list(document(await call(view, f"{PREFIX}/services")))
    app = services[0]
    assert isinstance(app["backends"], list)
    assert [b["requests_total"] for b in as_list(app["backends"])] == [0, 7]
    service = as_dict(document(await call(view, f"{PREFIX}/services/app")))
    assert [b["requests_total"] for b in as_list(service["backends"])] == [0, 7]


async def test_a_passively_ejected_backend_is_shown_ejected() -> None:
    view = make_view()
    assert view.compiled is not None
    service = view.compiled.services["app"]
    assert service.outliers is not None
    second = service.backends[1]
    for _ in range(2):
        service.outliers.record(second, error=True, now=95.0)
    second.in_flight = 4
    backends = as_list(document(await call(view, f"{PREFIX}/backends")))
    assert [backend["url"] for backend in backends] == [
        "http://10.0.0.1:80",
        "http://10.0.0.2:80",
        "http://10.0.1.1:80",
        "http://10.0.1.2:80",
    ]
    assert backends[1] == {
        "service": "app",
        "url": "http://10.0.0.2:80",
        "weight": 3,
        "revision": None,
        "healthy": True,
        "ejected": True,
        # ejected at 95 for 30 s: 25 s after CLOCK.now.
        "ejected_until": "2023-11-14T22:13:45.000Z",
        "passive_state": "ejected",
        "available": False,
        "in_flight": 4,
        "requests_total": None,
        "errors_total": None,
    }
    assert backends[0]["ejected"] is False
    assert backends[0]["ejected_until"] is None
    app = as_dict(document(await call(view, f"{PREFIX}/services/app")))
    assert app["backends_available"] == 1


async def test_middlewares_with_their_state() -> None:
    view = make_view()
    assert view.compiled is not None
    instances = view.compiled.middlewares
    limit = instances["limit"]
    assert isinstance(limit, RateLimitMiddleware)
    for key in (b"a", b"b", b"c"):
        limit.table.take(key, 1.0)
    breaker = instances["breaker"]
    assert isinstance(breaker, CircuitBreakerMiddleware)
    state = RequestState(
        method=b"GET",
        path=b"/",
        query=b"",
        headers=[],
        authority=b"api.example",
        client_ip="127.0.0.1",
        peer_ip="127.0.0.1",
        tls=False,
        now=1.0,
        service="app",
    )
    assert await breaker.request(state) is None
    breaker.completed(state, 502)
    retry = instances["again"]
    assert isinstance(retry, RetryMiddleware)
    assert retry.begin_retry("app", "reset")

    listed = as_list(document(await call(view, f"{PREFIX}/middlewares")))
    by_name = {entry["name"]: entry for entry in listed}
    assert list(by_name) == ["limit", "breaker", "again", "basic", "keys", "token", "shared"]
    assert by_name["limit"] == {
        "name": "limit",
        "type": "rate-limit",
        "routers": ["api"],
        "state": {"keys": 3, "max_keys": 100000},
    }
    breaker_state = as_dict(by_name["breaker"]["state"])
    assert breaker_state["state"] == "closed"
    assert as_dict(breaker_state["services"])["app"] == {
        "state": "closed",
        "failures": 1,
        "successes": 0,
        "probes": 0,
    }
    retry_state = as_dict(by_name["again"]["state"])
    assert retry_state["active_retries"] == 1
    assert retry_state["retries"] == [{"service": "app", "reason": "reset", "count": 1}]
    # Defined but listed by no router: no instance, no state.
    assert by_name["basic"] == {"name": "basic", "type": "basic-auth", "routers": [], "state": {}}


async def test_entrypoints() -> None:
    listed = as_list(document(await call(make_view(), f"{PREFIX}/entrypoints")))
    assert listed[1] == {
        "name": "admin",
        "protocol": "http",
        "address": "127.0.0.1:8081",
        "bound": ["127.0.0.1:8081"],
        "tls": {
            "names": ["admin.test", "*.admin.test", "other.test"],
            "not_after": "2020-09-13T12:26:40Z",
            "certificates": [
                {"names": ["admin.test", "*.admin.test"], "not_after": "2023-11-14T22:13:20Z"},
                {"names": ["other.test", "admin.test"], "not_after": "2020-09-13T12:26:40Z"},
            ],
        },
        "connections": 2,
    }
    assert listed[0]["tls"] is None


async def test_providers_lists_the_file_provider_only_when_configured() -> None:
    assert document(await call(make_view(), f"{PREFIX}/providers")) == []
    view = make_view(CONFIG + 'providers {\n  file {\n    debounce = "250ms"\n  }\n}\n')
    view.last_reload = ReloadStatus(time=99.5, ok=True, problem_count=0)
    (provider,) = as_list(document(await call(view, f"{PREFIX}/providers")))
    assert provider == {
        "name": "file",
        "watch": True,
        "directory": None,
        "debounce_secs": 0.25,
        "last_sync": "2023-11-14T22:13:19.500Z",
        "objects": {
            "entrypoints": 2,
            "routers": 3,
            "tcp_routers": 0,
            "udp_routers": 0,
            "services": 2,
            "middlewares": 7,
        },
        "errors": 0,
    }


async def test_providers_lists_the_dynamic_providers_with_times_rendered() -> None:
    view = make_view()
    view.dynamic = [
        {
            "name": "dns",
            "state": "error",
            "last_sync": 1700000000.0,
            "last_change": None,
            "last_error": "users.internal: timed out",
            "last_error_at": 1700000001.25,
            "objects": {"services": 1},
        }
    ]
    (provider,) = as_list(document(await call(view, f"{PREFIX}/providers")))
    assert provider == {
        "name": "dns",
        "state": "error",
        "last_sync": "2023-11-14T22:13:20.000Z",
        "last_change": None,
        "last_error": "users.internal: timed out",
        "last_error_at": "2023-11-14T22:13:21.250Z",
        "objects": {"services": 1},
    }


async def test_scaling_and_rollouts_are_the_views_and_actions_reach_it() -> None:
    view = make_view()
    assert document(await call(view, f"{PREFIX}/scaling")) == []
    assert document(await call(view, f"{PREFIX}/rollouts")) == []
    view.scaled = [{"service": "api", "desired": 2}]
    view.rollout_states = {
        "web": {"service": "web", "state": "in_progress"},
        "old": {"service": "old", "state": "completed"},
    }
    assert document(await call(view, f"{PREFIX}/scaling")) == [{"service": "api", "desired": 2}]
    listed = document(await call(view, f"{PREFIX}/rollouts"))
    assert isinstance(listed, list)
    assert len(listed) == 2
    paused = await call(view, f"{PREFIX}/rollouts/web/pause", "POST")
    state = document(paused)
    assert isinstance(state, dict)
    assert (paused.status, state["state"]) == (200, "paused")
    finished = await call(view, f"{PREFIX}/rollouts/old/resume", "POST")
    assert finished.status == 409
    for action in ("pause", "resume", "rollback"):
        response = await call(view, f"{PREFIX}/rollouts/canary/{action}", "POST")
        assert (response.status, document(response)) == (404, {"error": "rollout not found"})
    wrong = await call(view, f"{PREFIX}/rollouts/canary/pause")
    assert (wrong.status, wrong.header("allow")) == (405, "POST")
    unknown = await call(view, f"{PREFIX}/rollouts/canary/explode", "POST")
    assert (unknown.status, document(unknown)) == (404, {"error": "not found"})


async def test_version() -> None:
    response = await call(make_view(), f"{PREFIX}/version")
    assert document(response) == {"name": "a3s-gateway", "version": "9.8.7"}


# ------------------------------------------------------------------------------ reload


async def test_reload_without_a_config_file_is_409() -> None:
    view = make_view()
    response = await call(view, f"{PREFIX}/reload", "POST")
    assert response.status == 409
    assert as_dict(document(response))["ok"] is False
    assert view.reloads == 1


async def test_reload_success_reports_generation_and_warnings() -> None:
    view = make_view()
    warning = Problem(
        severity="warning", file="g.hcl", line=3, column=None, path="x", message="careful"
    )
    view.outcome = ReloadOutcome(ok=True, generation=7, warnings=(warning,))
    response = await call(view, f"{PREFIX}/reload", "POST")
    assert response.status == 200
    body = as_dict(document(response))
    assert (body["ok"], body["generation"]) == (True, 7)
    (shown,) = as_list(body["warnings"])
    assert shown["message"] == "careful"
    assert shown["text"] == "g.hcl:3: warning: x: careful"


async def test_reload_failure_is_422_with_every_problem() -> None:
    view = make_view()
    view.outcome = ReloadOutcome.failed("entrypoint addresses changed")
    response = await call(view, f"{PREFIX}/reload", "POST")
    assert response.status == 422
    body = as_dict(document(response))
    assert body["ok"] is False
    (problem,) = as_list(body["problems"])
    assert (problem["severity"], problem["message"]) == ("error", "entrypoint addresses changed")


@dataclass(frozen=True)
class Report:
    """Another ``ReloadReport`` shape: a result word and an ``ok`` property."""

    result: str
    generation: int
    warnings: tuple[Problem, ...] = ()
    problems: tuple[Problem, ...] = ()

    @property
    def ok(self) -> bool:
        return self.result != "error"


async def test_any_reload_report_shape_is_accepted() -> None:
    view = make_view()
    view.outcome = Report("unchanged", 4)
    response = await call(view, f"{PREFIX}/reload", "POST")
    assert (response.status, document(response)) == (
        200,
        {"ok": True, "generation": 4, "warnings": []},
    )


# ------------------------------------------------------------------------------ HTTP surface


@pytest.mark.parametrize(
    "path",
    [
        f"{PREFIX}",
        f"{PREFIX}/",
        f"{PREFIX}/nothing",
        f"{PREFIX}//health",
        f"{PREFIX}/health//",
        f"{PREFIX}/routes/a/b",
        "/health",
        "/api/gatewayx/health",
    ],
)
async def test_unknown_paths_are_404(path: str) -> None:
    response = await call(make_view(), path)
    assert (response.status, document(response)) == (404, {"error": "not found"})


@pytest.mark.parametrize(
    ("path", "method", "allow"),
    [
        ("/health", "POST", "GET, HEAD"),
        ("/routes", "DELETE", "GET, HEAD"),
        ("/routes/api", "PUT", "GET, HEAD"),
        ("/config", "OPTIONS", "GET, HEAD"),
        ("/reload", "GET", "POST"),
        ("/reload", "HEAD", "POST"),
    ],
)
async def test_wrong_methods_are_405_with_allow(path: str, method: str, allow: str) -> None:
    view = make_view()
    response = await call(view, PREFIX + path, method)
    assert response.status == 405
    assert response.header("allow") == allow
    assert view.reloads == 0


async def test_json_is_pretty_printed_with_two_spaces() -> None:
    response = await call(make_view(), f"{PREFIX}/version")
    assert response.body == b'{\n  "name": "a3s-gateway",\n  "version": "9.8.7"\n}\n'
    routes = await call(make_view(), f"{PREFIX}/routes")
    parsed = json.loads(routes.body)
    assert routes.body.decode() == json.dumps(parsed, indent=2, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("path", ["/health", "/routes", "/config", "/metrics", "/nowhere"])
async def test_head_has_the_get_fields_and_no_body(path: str) -> None:
    view = make_view()
    get = await call(view, PREFIX + path)
    head = await call(view, PREFIX + path, "HEAD")
    assert head.status == get.status
    assert head.headers == get.headers
    assert int(head.header("content-length") or "0") == len(get.body) > 0
    assert head.body == b""


@pytest.mark.parametrize("path", ["/health/", "/routes/", "/routes/api/", "/version/"])
async def test_a_trailing_slash_is_accepted(path: str) -> None:
    view = make_view()
    with_slash = await call(view, PREFIX + path)
    without = await call(view, PREFIX + path.rstrip("/"))
    assert with_slash.status == 200
    assert with_slash.body == without.body


async def test_query_strings_and_absolute_targets() -> None:
    view = make_view()
    assert (await call(view, f"{PREFIX}/version?x=1")).status == 200
    assert (await call(view, f"http://127.0.0.1:9901{PREFIX}/version")).status == 200
    assert (await call(view, f"{PREFIX}/routes/%70inned")).status == 200  # %70 = p


async def test_a_custom_prefix() -> None:
    view = make_view()
    request = ApiRequest("GET", "/admin/version", LOCAL)
    response = await handle(request, view, prefix="/admin", access=OPEN, clock=CLOCK)
    assert response.status == 200
    default = await call(view, f"{PREFIX}/version")
    assert default.status == 200
    request = ApiRequest("GET", f"{PREFIX}/version", LOCAL)
    assert (await handle(request, view, prefix="/admin", access=OPEN, clock=CLOCK)).status == 404


# ------------------------------------------------------------------------------ access


def bearer(token: str, scheme: str = "Bearer") -> tuple[bytes, ...]:
    return (f"{scheme} {token}".encode(),)


async def test_without_a_token_only_the_ip_is_checked() -> None:
    view = make_view()
    assert (await call(view, f"{PREFIX}/config")).status == 200
    denied = await call(view, f"{PREFIX}/config", client=OUTSIDER)
    assert (denied.status, document(denied)) == (403, {"error": "forbidden"})


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        ((), 401),
        (bearer("wrong-token"), 401),
        (bearer(TOKEN + "x"), 401),
        (bearer(TOKEN[:-1]), 401),
        (bearer(TOKEN, "Basic"), 401),
        (bearer(""), 401),
        (bearer(TOKEN) * 2, 401),
        (bearer(TOKEN), 200),
        (bearer(TOKEN, "bearer"), 200),
        ((f"Bearer   {TOKEN} ".encode(),), 200),
    ],
)
async def test_with_a_token_the_bearer_must_match(
    authorization: tuple[bytes, ...], status: int
) -> None:
    response = await call(
        make_view(), f"{PREFIX}/routes", authorization=authorization, access=GUARDED
    )
    assert response.status == status
    assert TOKEN.encode() not in response.body
    if status == 401:
        assert response.header("www-authenticate") == 'Bearer realm="a3s-gateway-management"'
        assert document(response) == {"error": "unauthorized"}


async def test_a_wrong_ip_is_403_even_with_the_right_token() -> None:
    response = await call(
        make_view(),
        f"{PREFIX}/routes",
        client=OUTSIDER,
        authorization=bearer(TOKEN),
        access=GUARDED,
    )
    assert response.status == 403
    assert response.header("www-authenticate") is None


@pytest.mark.parametrize("path", ["/health", "/live", "/ready", "/ready/"])
@pytest.mark.parametrize("client", [OUTSIDER, None])
async def test_probes_are_open_to_everyone(path: str, client: ipaddress.IPv4Address | None) -> None:
    response = await call(make_view(), PREFIX + path, client=client, access=GUARDED)
    assert response.status == 200


@pytest.mark.parametrize("path", ["/nothing", "/reload", "/metrics", "/"])
async def test_outsiders_learn_nothing_about_other_paths(path: str) -> None:
    view = make_view()
    outsider = await call(view, PREFIX + path, "POST", client=OUTSIDER, access=GUARDED)
    assert outsider.status == 403
    anonymous = await call(view, PREFIX + path, "POST", access=GUARDED)
    assert anonymous.status == 401
    assert view.reloads == 0


async def test_allowed_ips_take_cidrs_and_ipv6() -> None:
    settings = Management(allowed_ips=(IpNetwork("10.1.0.0/16"), IpNetwork("::1")))
    access = AccessPolicy.from_settings(settings, "")
    assert not access.requires_token  # an empty variable means no token (SPEC §3.13)
    view = make_view()
    inside = ipaddress.ip_address("10.1.200.3")
    v6 = ipaddress.ip_address("::1")
    assert (await call(view, f"{PREFIX}/version", client=inside, access=access)).status == 200
    assert (await call(view, f"{PREFIX}/version", client=v6, access=access)).status == 200
    assert (await call(view, f"{PREFIX}/version", access=access)).status == 403  # 127.0.0.1


def test_the_policy_keeps_no_plain_token() -> None:
    assert TOKEN.encode() not in repr(GUARDED).encode()
    assert TOKEN not in str(msgspec.to_builtins(GUARDED.token_digest))


@settings(max_examples=200, deadline=None)
@given(
    target=st.one_of(
        st.text(max_size=60),
        st.builds(lambda rest: PREFIX + rest, st.text(alphabet="/%?#.ab-_é", max_size=30)),
    ),
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "get", "BREW"]),
)
def test_no_target_makes_handle_fail(target: str, method: str) -> None:
    view = SHARED_VIEW

    async def run() -> ApiResponse:
        return await call(view, target, method)

    response = trio.run(run)
    assert response.status in {200, 404, 405, 409}
    if method != "HEAD" and response.header("content-type") == "application/json":
        json.loads(response.body)


# ------------------------------------------------------------------------------ interpolated


INTERPOLATED = """
public_env = ["APP_PORT"]
entrypoints "web" {
  address = "127.0.0.1:${WEB_PORT}"
}
routers "app" {
  rule    = "Host(`${APP_HOST}`)"
  service = "app"
}
services "app" {
  load_balancer {
    servers = [{ url = "http://10.0.0.1:${APP_PORT}/${BACKEND_PATH}" }]
  }
}
"""
INTERPOLATED_ENV = {
    "WEB_PORT": "18081",
    "APP_HOST": "hidden-host.example",
    "APP_PORT": "9077",
    "BACKEND_PATH": "tenant-7f3a9",
}


def interpolated_view() -> FakeView:
    result = load_text(INTERPOLATED, filename="m.hcl", env=INTERPOLATED_ENV)
    assert result.config is not None, [p.format() for p in result.errors]
    return FakeView(result.config, compile_runtime(result.config, 1))


@pytest.mark.parametrize(
    "endpoint", ["/config", "/routes", "/routes/app", "/services", "/backends"]
)
async def test_documents_hide_interpolated_values_but_not_public_ones(endpoint: str) -> None:
    response = await call(interpolated_view(), f"{PREFIX}{endpoint}")
    assert response.status == 200
    for name in ("WEB_PORT", "APP_HOST", "BACKEND_PATH"):
        assert INTERPOLATED_ENV[name].encode() not in response.body
    assert b"<redacted>" in response.body
    if endpoint in ("/config", "/services", "/backends"):
        assert b"http://10.0.0.1:9077/<redacted>" in response.body


async def test_reload_reply_hides_what_the_running_config_interpolated() -> None:
    """The loader redacts a candidate's problems already; the reply is a second guard with
    the running config's values (a value the swap itself quoted)."""
    view = interpolated_view()
    view.outcome = ReloadOutcome.failed("cannot bind 127.0.0.1:18081 for hidden-host.example")
    response = await call(view, f"{PREFIX}/reload", "POST")
    assert response.status == 422
    assert b"18081" not in response.body
    assert b"hidden-host" not in response.body
    (problem,) = as_list(as_dict(document(response))["problems"])
    assert problem["message"] == "cannot bind 127.0.0.1:<redacted> for <redacted>"
