"""The middleware pipeline (SPEC §8.1): one instance per definition shared by routers, kept
across a reload while the definition is unchanged; every HTTP type has a factory, and one that
cannot be built (no dependency) is refused; short-circuit
answers go back through the response sides entered before, last first."""

from __future__ import annotations

import pytest

from a3s_gateway.config.load import load_config_text
from a3s_gateway.config.schema import Config
from a3s_gateway.errors import StartError
from a3s_gateway.middleware import Middleware, RequestState, compile_chains, through
from a3s_gateway.middleware.outbound import MiddlewareDeps
from a3s_gateway.middleware.phases import _factory
from a3s_gateway.protocols.headers import Headers
from a3s_gateway.protocols.responses import error_response

BASE = """
entrypoints "web" {{
  address = "127.0.0.1:0"
}}
routers "one" {{
  rule        = "PathPrefix(`/one`)"
  service     = "svc"
  middlewares = ["cors", "hdrs"]
}}
routers "two" {{
  rule        = "PathPrefix(`/two`)"
  service     = "svc"
  middlewares = ["hdrs"]
}}
routers "bare" {{
  rule    = "PathPrefix(`/`)"
  service = "svc"
}}
middlewares "cors" {{
  type = "cors"
}}
middlewares "hdrs" {{
  type             = "headers"
  request_headers  = {{ "X-Env" = "{env}" }}
}}
{more}
services "svc" {{
  load_balancer {{
    servers = [{{ url = "http://127.0.0.1:9" }}]
  }}
}}
"""


def config(env: str = "a", more: str = "") -> Config:
    return load_config_text(BASE.format(env=env, more=more))


def test_one_instance_per_definition_in_router_order() -> None:
    instances, chains = compile_chains(config())
    assert [m.name for m in chains["one"]] == ["cors", "hdrs"]
    assert chains["two"][0] is chains["one"][1] is instances["hdrs"]
    assert "bare" not in chains


def test_an_unchanged_definition_keeps_its_instance_on_reload() -> None:
    first = config()
    instances, _ = compile_chains(first)
    changed = config(env="b")
    again, _ = compile_chains(changed, first, instances)
    assert again["cors"] is instances["cors"]
    assert again["hdrs"] is not instances["hdrs"]


def test_a_middleware_without_its_dependency_is_refused() -> None:
    more = 'middlewares "auth" {\n  type = "jwt"\n  value = "0123456789abcdef0123456789abcdef"\n}\n'
    text = BASE.format(env="a", more=more).replace(
        'middlewares = ["hdrs"]', 'middlewares = ["auth"]'
    )
    with pytest.raises(StartError, match=r'"auth" \(jwt\)'):
        compile_chains(load_config_text(text))  # no wall clock given
    compile_chains(load_config_text(text), deps=MiddlewareDeps(clock=lambda: 0.0))
    # Defined but unused: not built.
    compile_chains(config(more=more))


@pytest.mark.parametrize(
    "kind",
    [
        "api-key", "basic-auth", "jwt", "forward-auth", "rate-limit", "rate-limit-redis", "cors",
        "headers", "strip-prefix", "body-limit", "retry", "circuit-breaker", "ip-allow",
        "compress",
    ],
)  # fmt: skip
def test_every_http_type_has_a_factory(kind: str) -> None:
    deps = MiddlewareDeps(clock=lambda: 0.0, http=object(), redis=object())  # type: ignore[arg-type]  # never called
    assert _factory(kind, deps) is not None
    assert _factory("tcp-filter", deps) is None


class Tag(Middleware):
    def response(self, state: RequestState, status: int, headers: Headers) -> None:
        headers.append((b"x-seen", self.name.encode()))


def test_through_runs_the_entered_response_sides_last_first_on_a_copy() -> None:
    state = RequestState(
        method=b"GET", path=b"/", query=b"", headers=[], authority=b"a",
        client_ip="192.0.2.1", peer_ip="192.0.2.1", tls=False,
    )  # fmt: skip
    shared = error_response(401, "nope")
    answer = through([Tag("first"), Tag("second")], state, shared)
    seen = [value for name, value in answer.head.headers if name == b"x-seen"]
    assert seen == [b"second", b"first"]
    assert not any(name == b"x-seen" for name, _ in shared.head.headers)
    assert through([], state, shared) is shared


def test_instances_know_their_config_type() -> None:
    instances, _ = compile_chains(config())
    assert {name: m.kind for name, m in instances.items()} == {"cors": "cors", "hdrs": "headers"}
