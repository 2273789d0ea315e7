"""Kubernetes objects → Snapshot (providers/kube_translate.py with kube_objects.py,
kube_backends.py and kube_ingress.py, SPEC §10.6): Ingress rules, path types, wildcard hosts,
default backends, named ports, EndpointSlices, ExternalName Services (never routed), TLS
Secrets (and the bounded memo of their check, a Secret whose data was not kept), annotations,
IngressRoutes with weighted services, malformed objects, and name collisions: a later object
whose router or service name is taken by another identity is skipped whole, so no router
reaches another namespace's pods (the property version is in
tests/property/test_kube_translate_properties.py)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest
import trustme

from a3s_gateway.config.schema import KubernetesProvider
from a3s_gateway.providers import kube_backends
from a3s_gateway.providers.dynamic import Snapshot
from a3s_gateway.providers.kube_backends import pem_pair
from a3s_gateway.providers.kube_ingress import ingress_rule, traffic_percents
from a3s_gateway.providers.kube_objects import KubeObjects, ObjectKey, UnusableError, object_name
from a3s_gateway.providers.kube_translate import translate
from a3s_gateway.routing import HttpRequestInfo, compile_rule

Json = dict[str, Any]


def ingress(
    name: str,
    *,
    namespace: str = "default",
    rules: list[Json] | None = None,
    annotations: dict[str, str] | None = None,
    default_backend: Json | None = None,
    tls: list[Json] | None = None,
    class_name: str | None = None,
) -> Json:
    spec: Json = {"rules": rules or []}
    if default_backend is not None:
        spec["defaultBackend"] = default_backend
    if tls is not None:
        spec["tls"] = tls
    if class_name is not None:
        spec["ingressClassName"] = class_name
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "spec": spec,
    }


def backend(service: str, port: int | str) -> Json:
    key = "number" if isinstance(port, int) else "name"
    return {"service": {"name": service, "port": {key: port}}}


def path(text: str | None, path_type: str, service: str = "web", port: int | str = 80) -> Json:
    entry: Json = {"pathType": path_type, "backend": backend(service, port)}
    if text is not None:
        entry["path"] = text
    return entry


def rule(host: str | None, *paths: Json) -> Json:
    entry: Json = {"http": {"paths": list(paths)}}
    if host is not None:
        entry["host"] = host
    return entry


def service(
    name: str,
    ports: list[Json],
    *,
    namespace: str = "default",
    type_: str | None = None,
    external_name: str | None = None,
) -> Json:
    spec: Json = {"ports": ports}
    if type_ is not None:
        spec["type"] = type_
    if external_name is not None:
        spec["externalName"] = external_name
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


def endpoint_slice(
    name: str,
    owner: str,
    ports: list[Json],
    endpoints: list[Json],
    *,
    namespace: str = "default",
    address_type: str = "IPv4",
) -> Json:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": owner},
        },
        "addressType": address_type,
        "ports": ports,
        "endpoints": endpoints,
    }


def ready(*addresses: str, is_ready: bool | None = True) -> Json:
    entry: Json = {"addresses": list(addresses)}
    if is_ready is not None:
        entry["conditions"] = {"ready": is_ready}
    return entry


def keyed(*objects: Json) -> dict[ObjectKey, Json]:
    return {(o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objects}


def settings(**fields: object) -> KubernetesProvider:
    return msgspec.convert(fields, KubernetesProvider)


def run(
    *,
    ingresses: Sequence[Json] = (),
    services: Sequence[Json] = (),
    slices: Sequence[Json] = (),
    secrets: Sequence[Json] = (),
    routes: Sequence[Json] = (),
    config: KubernetesProvider | None = None,
) -> Snapshot:
    objects = KubeObjects(
        ingresses=keyed(*ingresses),
        services=keyed(*services),
        endpoint_slices=keyed(*slices),
        secrets=keyed(*secrets),
        ingress_routes=keyed(*routes),
    )
    return translate(objects, config or settings(ingress_route_crd=True))


def urls(snapshot: Snapshot, name: str) -> list[str]:
    balancer = snapshot.services[name].load_balancer
    assert balancer is not None
    return [server.url.text for server in balancer.servers]


WEB = service("web", [{"name": "http", "port": 80, "targetPort": 8080}])
WEB_SLICE = endpoint_slice(
    "web-abc",
    "web",
    [{"name": "http", "port": 8080}],
    [ready("10.0.0.2"), ready("10.0.0.1", is_ready=None), ready("10.0.0.9", is_ready=False)],
)


# -- Ingress rules -----------------------------------------------------------------------------


def test_paths_of_each_type_become_routers_with_kubernetes_semantics() -> None:
    snapshot = run(
        ingresses=[
            ingress(
                "shop",
                rules=[
                    rule(
                        "shop.example.com",
                        path("/cart", "Exact"),
                        path("/api/", "Prefix"),
                        path("/", "Prefix"),
                        path("/legacy", "ImplementationSpecific"),
                    )
                ],
            )
        ],
        services=[WEB],
        slices=[WEB_SLICE],
    )
    rules = {name: router.rule for name, router in snapshot.routers.items()}
    assert rules == {
        "k8s-default-shop-0-0": "Host(`shop.example.com`) && Path(`/cart`)",
        "k8s-default-shop-0-1": (
            "Host(`shop.example.com`) && (Path(`/api`) || PathPrefix(`/api/`))"
        ),
        "k8s-default-shop-0-2": "Host(`shop.example.com`) && PathPrefix(`/`)",
        "k8s-default-shop-0-3": "Host(`shop.example.com`) && PathPrefix(`/legacy`)",
    }
    for name in rules:
        assert snapshot.routers[name].service == "k8s-default-web-80"
        assert snapshot.origins["routers", name] == "Ingress default/shop"
    assert snapshot.skipped == ()


def test_prefix_paths_match_whole_elements() -> None:
    compiled = compile_rule(ingress_rule("a.example.com", "/foo/", "Prefix"))

    def matches(host: str, target: str) -> bool:
        return compiled.matches(HttpRequestInfo(method="GET", host=host, path=target))

    assert matches("a.example.com", "/foo")
    assert matches("a.example.com", "/foo/")
    assert matches("a.example.com", "/foo/bar")
    assert not matches("a.example.com", "/foobar")
    assert not matches("b.example.com", "/foo")


def test_a_wildcard_host_matches_exactly_one_label() -> None:
    compiled = compile_rule(ingress_rule("*.Example.com", "/", "Prefix"))

    def matches(host: str) -> bool:
        return compiled.matches(HttpRequestInfo(method="GET", host=host, path="/x"))

    assert matches("a.example.com")
    assert matches("A.EXAMPLE.COM:8443")
    assert not matches("a.b.example.com")
    assert not matches("example.com")


def test_hostless_rules_and_missing_paths() -> None:
    assert ingress_rule(None, None, "Prefix") == "PathPrefix(`/`)"
    assert ingress_rule("", "/x", "Exact") == "Path(`/x`)"
    assert ingress_rule(None, "/a//", "Prefix") == "(Path(`/a`) || PathPrefix(`/a/`))"


def test_a_backtick_in_a_path_is_quoted_and_still_matches() -> None:
    text = ingress_rule(None, '/a`b"c\\d', "Exact")
    assert text == 'Path("/a`b\\"c\\\\d")'
    compiled = compile_rule(text)
    assert compiled.matches(HttpRequestInfo(method="GET", host="x", path='/a`b"c\\d'))


@pytest.mark.parametrize(
    ("host", "text", "path_type", "reason"),
    [
        (None, "no-slash", "Exact", "does not start with /"),
        (None, "/a\nb", "Prefix", "control character"),
        (None, "/a", "Regex", "unknown pathType"),
        ("bad host", "/", "Prefix", "not a DNS name"),
        ("a.*.example.com", "/", "Prefix", "not a DNS name"),
        ("ex`ample.com", "/", "Prefix", "not a DNS name"),
    ],
)
def test_what_the_rule_language_cannot_carry_is_refused(
    host: str | None, text: str, path_type: str, reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        ingress_rule(host, text, path_type)


def test_unusable_paths_are_skipped_and_the_others_kept() -> None:
    snapshot = run(
        ingresses=[
            ingress(
                "mixed",
                rules=[
                    rule(
                        "ok.example.com",
                        path("/good", "Prefix"),
                        path("/x", "Regex"),
                        {"path": "/r", "pathType": "Exact", "backend": {"resource": {"kind": "B"}}},
                    ),
                    rule("bad_host!", path("/", "Prefix")),
                ],
            )
        ],
        services=[WEB],
    )
    assert list(snapshot.routers) == ["k8s-default-mixed-0-0"]
    assert snapshot.skipped == (
        "Ingress default/mixed: spec.rules[0].http.paths[1] skipped: unknown pathType 'Regex'",
        "Ingress default/mixed: spec.rules[0].http.paths[2] skipped: resource backends are "
        "not supported",
        "Ingress default/mixed: spec.rules[1].http.paths[0] skipped: host 'bad_host!' is not "
        "a DNS name",
    )


def test_default_backend_is_a_catch_all_with_priority_minus_one() -> None:
    snapshot = run(
        ingresses=[ingress("fallback", default_backend=backend("web", "http"))],
        services=[WEB],
        slices=[WEB_SLICE],
    )
    router = snapshot.routers["k8s-default-fallback-default"]
    assert router.rule == "PathPrefix(`/`)"
    assert router.priority == -1
    assert router.service == "k8s-default-web-http"
    assert urls(snapshot, "k8s-default-web-http") == [
        "http://10.0.0.1:8080",
        "http://10.0.0.2:8080",
    ]


def test_ingress_class_filter() -> None:
    objects = [
        ingress("mine", class_name="a3s", rules=[rule("a.test", path("/", "Prefix"))]),
        ingress(
            "legacy",
            annotations={"kubernetes.io/ingress.class": "a3s"},
            rules=[rule("b.test", path("/", "Prefix"))],
        ),
        ingress("nginx", class_name="nginx", rules=[rule("c.test", path("/", "Prefix"))]),
        ingress("none", rules=[rule("d.test", path("/", "Prefix"))]),
    ]
    only = run(ingresses=objects, services=[WEB], config=settings(ingress_class="a3s"))
    assert sorted(only.routers) == ["k8s-default-legacy-0-0", "k8s-default-mine-0-0"]
    every = run(ingresses=objects, services=[WEB], config=settings())
    assert len(every.routers) == 4


def test_ingress_off_ignores_ingresses() -> None:
    snapshot = run(
        ingresses=[ingress("x", rules=[rule("a.test", path("/", "Prefix"))])],
        config=settings(ingress=False),
    )
    assert snapshot == Snapshot()


# -- backends ----------------------------------------------------------------------------------


def test_one_service_port_is_shared_by_every_router() -> None:
    snapshot = run(
        ingresses=[
            ingress("one", rules=[rule("a.test", path("/", "Prefix"), path("/b", "Exact"))]),
            ingress("two", rules=[rule("b.test", path("/", "Prefix"))]),
        ],
        services=[WEB],
        slices=[WEB_SLICE],
    )
    assert {router.service for router in snapshot.routers.values()} == {"k8s-default-web-80"}
    assert list(snapshot.services) == ["k8s-default-web-80"]
    assert snapshot.origins["services", "k8s-default-web-80"] == "Ingress default/one"


def test_only_ready_endpoints_on_the_named_slice_port() -> None:
    api = service(
        "api",
        [
            {"name": "http", "port": 80, "targetPort": "web"},
            {"name": "metrics", "port": 9090, "targetPort": 9090},
        ],
    )
    slices = [
        endpoint_slice(
            "api-1",
            "api",
            [{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090}],
            [ready("10.1.0.1"), ready("10.1.0.2", is_ready=False)],
        ),
        endpoint_slice(
            "api-2",
            "api",
            [{"name": "http", "port": 8081}, {"name": "metrics", "port": 9090}],
            [ready("fd00::1")],
            address_type="IPv6",
        ),
        endpoint_slice("other", "other", [{"name": "http", "port": 1}], [ready("10.9.9.9")]),
    ]
    snapshot = run(
        ingresses=[
            ingress(
                "api",
                rules=[
                    rule(
                        "api.test",
                        path("/", "Prefix", "api", "http"),
                        path("/metrics", "Exact", "api", 9090),
                    )
                ],
            )
        ],
        services=[api],
        slices=slices,
    )
    assert urls(snapshot, "k8s-default-api-http") == [
        "http://10.1.0.1:8080",
        "http://[fd00::1]:8081",
    ]
    assert urls(snapshot, "k8s-default-api-9090") == [
        "http://10.1.0.1:9090",
        "http://[fd00::1]:9090",
    ]


def test_unnamed_service_ports_and_numeric_target_fallback() -> None:
    plain = service("plain", [{"port": 80, "targetPort": 3000}])
    slices = [
        endpoint_slice("plain-1", "plain", [{"port": 3000}], [ready("10.2.0.1")]),
        endpoint_slice("plain-2", "plain", [], [ready("10.2.0.2")]),
    ]
    snapshot = run(
        ingresses=[ingress("p", rules=[rule(None, path("/", "Prefix", "plain", 80))])],
        services=[plain],
        slices=slices,
    )
    assert urls(snapshot, "k8s-default-plain-80") == [
        "http://10.2.0.1:3000",
        "http://10.2.0.2:3000",
    ]


def test_without_endpoints_the_cluster_dns_name_is_used() -> None:
    snapshot = run(
        ingresses=[ingress("web", rules=[rule("a.test", path("/", "Prefix", "web", "http"))])],
        services=[WEB],
        slices=[WEB_SLICE],
        config=settings(use_endpoints=False),
    )
    assert urls(snapshot, "k8s-default-web-http") == ["http://web.default.svc.cluster.local:80"]


@pytest.mark.parametrize(
    ("external_name", "port"),
    [("api.ext.io", 443), ("localhost", 9901), ("127.0.0.1", 9901), (None, 80)],
)
def test_external_name_services_are_not_routed(external_name: str | None, port: int) -> None:
    # (any tenant could otherwise point a route at any host: the management API on loopback)
    external = service(
        "ext", [{"port": port, "name": "p"}], type_="ExternalName", external_name=external_name
    )
    ingresses = [ingress("e", rules=[rule(None, path("/", "Prefix", "ext", port))])]
    route = ingress_route(
        "r",
        {
            "routes": [
                {
                    "match": "PathPrefix(`/r`)",
                    "services": [
                        {"name": "ext", "port": port, "weight": 1},
                        {"name": "web", "port": 80, "weight": 1},
                    ],
                }
            ]
        },
    )
    snapshot = run(ingresses=ingresses, services=[external, WEB], routes=[route])
    assert urls(snapshot, f"k8s-default-ext-{port}") == []
    revisions = snapshot.services["k8s-default-r-0"].revisions
    assert [[s.url.text for s in r.servers] for r in revisions] == [[], []]
    reason = (
        "ExternalName Services are not routed (whoever may create a Service could point a "
        "route at any host, the gateway's own management API included)"
    )
    assert sorted(snapshot.skipped) == [
        f"Ingress default/e: Service default/ext port {port}: {reason}",
        f"IngressRoute default/r: Service default/ext port {port}: {reason}",
    ]


def test_a_missing_service_or_port_gives_a_service_without_servers() -> None:
    snapshot = run(
        ingresses=[
            ingress(
                "gone",
                rules=[
                    rule(
                        "a.test",
                        path("/", "Prefix", "missing", 80),
                        path("/p", "Prefix", "web", 81),
                    )
                ],
            )
        ],
        services=[WEB],
    )
    assert urls(snapshot, "k8s-default-missing-80") == []
    assert urls(snapshot, "k8s-default-web-81") == []
    assert snapshot.skipped == (
        "Ingress default/gone: Service default/missing port 80: the Service does not exist",
        "Ingress default/gone: Service default/web port 81: the Service has no such port",
    )


# -- annotations -------------------------------------------------------------------------------


def test_annotations_set_entrypoints_middlewares_strategy_and_priority() -> None:
    annotated = ingress(
        "tuned",
        annotations={
            "a3s-gateway.io/entrypoints": "web, websecure",
            "a3s-gateway.io/middlewares": "auth,ratelimit",
            "a3s-gateway.io/strategy": "least-connections",
            "a3s-gateway.io/priority": "42",
        },
        rules=[rule("a.test", path("/", "Prefix"))],
    )
    plain = ingress("plain", rules=[rule("b.test", path("/", "Prefix", "api", 80))])
    snapshot = run(
        ingresses=[annotated, plain],
        services=[WEB, service("api", [{"port": 80}])],
        config=settings(entrypoints=["internal"]),
    )
    tuned = snapshot.routers["k8s-default-tuned-0-0"]
    assert tuned.entrypoints == ("web", "websecure")
    assert tuned.middlewares == ("auth", "ratelimit")
    assert tuned.priority == 42
    balancer = snapshot.services["k8s-default-web-80"].load_balancer
    assert balancer is not None
    assert balancer.strategy == "least-connections"
    other = snapshot.routers["k8s-default-plain-0-0"]
    assert other.entrypoints == ("internal",)
    assert other.priority == 0
    api_balancer = snapshot.services["k8s-default-api-80"].load_balancer
    assert api_balancer is not None
    assert api_balancer.strategy == "round-robin"


def test_conflicting_strategies_keep_the_first_ingress() -> None:
    first = ingress(
        "a",
        annotations={"a3s-gateway.io/strategy": "p2c"},
        rules=[rule("a.test", path("/", "Prefix"))],
    )
    second = ingress(
        "b",
        annotations={"a3s-gateway.io/strategy": "random"},
        rules=[rule("b.test", path("/", "Prefix"))],
    )
    snapshot = run(ingresses=[second, first], services=[WEB])
    balancer = snapshot.services["k8s-default-web-80"].load_balancer
    assert balancer is not None
    assert balancer.strategy == "p2c"
    assert snapshot.skipped == (
        "Ingress default/b: strategy random of service k8s-default-web-80 ignored: "
        "Ingress default/a set p2c",
    )


@pytest.mark.parametrize(
    ("annotation", "value", "message"),
    [
        ("a3s-gateway.io/strategy", "fastest", "'fastest' is not one of"),
        ("a3s-gateway.io/priority", "high", "'high' is not an integer"),
    ],
)
def test_invalid_annotations_skip_the_ingress(annotation: str, value: str, message: str) -> None:
    bad = ingress(
        "bad", annotations={annotation: value}, rules=[rule("a.test", path("/", "Prefix"))]
    )
    good = ingress("good", rules=[rule("b.test", path("/", "Prefix"))])
    snapshot = run(ingresses=[bad, good], services=[WEB])
    assert list(snapshot.routers) == ["k8s-default-good-0-0"]
    assert len(snapshot.skipped) == 1
    assert snapshot.skipped[0].startswith("Ingress default/bad: skipped: annotation")
    assert message in snapshot.skipped[0]


def test_an_out_of_range_priority_drops_the_router_with_a_message() -> None:
    bad = ingress(
        "huge",
        annotations={"a3s-gateway.io/priority": "99999999999"},
        rules=[rule("a.test", path("/", "Prefix"))],
    )
    snapshot = run(ingresses=[bad], services=[WEB])
    assert snapshot.routers == {}
    assert snapshot.skipped[0].startswith("Ingress default/huge: router k8s-default-huge-0-0:")


# -- malformed objects and names ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"rules": "nope"}, "spec.rules: expected a list"),
        ({"rules": [{"http": {"paths": [{"backend": backend("web", 80)}]}}]}, "pathType: missing"),
        ({"rules": [rule("a.test", {"pathType": "Prefix", "backend": {}})]}, "name: missing"),
        ({"rules": [{"host": 7, "http": {"paths": []}}]}, "spec.rules[0].host: expected a string"),
        ({"defaultBackend": backend("web", 80) | {"service": "x"}}, "expected an object"),
        ({"tls": [{"secretName": ["x"]}]}, "spec.tls[0].secretName: expected a string"),
    ],
)
def test_malformed_ingresses_are_skipped_whole(spec: Json, message: str) -> None:
    broken = ingress("broken", rules=[rule("z.test", path("/", "Prefix"))])
    broken["spec"] = {**broken["spec"], **spec}
    good = ingress("good", rules=[rule("b.test", path("/", "Prefix"))])
    snapshot = run(ingresses=[broken, good], services=[WEB])
    assert list(snapshot.routers) == ["k8s-default-good-0-0"]
    assert len(snapshot.skipped) == 1
    assert snapshot.skipped[0].startswith("Ingress default/broken: skipped: ")
    assert message in snapshot.skipped[0]


def test_a_malformed_service_is_reported_not_raised() -> None:
    broken = {"metadata": {"name": "web", "namespace": "default"}, "spec": {"ports": [7]}}
    snapshot = run(
        ingresses=[ingress("i", rules=[rule("a.test", path("/", "Prefix"))])], services=[broken]
    )
    assert urls(snapshot, "k8s-default-web-80") == []
    assert "malformed Service or EndpointSlice" in snapshot.skipped[0]


def test_colliding_router_names_keep_the_first_object_whole() -> None:
    first = ingress("b-c", namespace="a", rules=[rule("one.test", path("/", "Prefix"))])
    second = ingress(
        "c",
        namespace="a-b",
        rules=[rule("two.test", path("/", "Prefix")), rule("three.test", path("/", "Prefix"))],
        tls=[{"secretName": "two-tls"}],
    )
    web_a = service("web", [{"port": 80}], namespace="a")
    web_ab = service("web", [{"port": 80}], namespace="a-b")
    snapshot = run(ingresses=[second, first], services=[web_a, web_ab])
    assert list(snapshot.routers) == ["k8s-a-b-c-0-0"]
    assert snapshot.routers["k8s-a-b-c-0-0"].rule.startswith("Host(`one.test`)")
    # Nothing of the later object: not its other router, its service or its Secret.
    assert list(snapshot.services) == ["k8s-a-web-80"]
    assert snapshot.skipped == (
        "Ingress a-b/c: skipped: router k8s-a-b-c-0-0 is already made from Ingress a/b-c",
    )


def victim_and_attacker(attacker_first: bool) -> Snapshot:
    """Namespace ``victim`` with Service ``a-web`` and namespace ``victim-a`` with Service
    ``web``: both ports 80 are named ``k8s-victim-a-web-80``."""
    victim = ingress(
        "shop", namespace="victim", rules=[rule("shop.test", path("/", "Prefix", "a-web"))]
    )
    attacker = ingress(
        "aaa" if attacker_first else "zzz",
        namespace="victim-a",
        rules=[rule("evil.test", path("/", "Prefix", "web"))],
    )
    slices = [
        endpoint_slice("s1", "a-web", [{"port": 80}], [ready("10.1.0.1")], namespace="victim"),
        endpoint_slice("s2", "web", [{"port": 80}], [ready("10.2.0.1")], namespace="victim-a"),
    ]
    return run(
        ingresses=[victim, attacker],
        services=[
            service("a-web", [{"port": 80}], namespace="victim"),
            service("web", [{"port": 80}], namespace="victim-a"),
        ],
        slices=slices,
    )


def test_a_service_name_collision_never_routes_to_another_namespace() -> None:
    # "victim" sorts before "victim-a": the victim's Ingress keeps the name, and the
    # attacker's whole Ingress is skipped (its router would reach the victim's pods).
    snapshot = victim_and_attacker(attacker_first=False)
    assert list(snapshot.routers) == ["k8s-victim-shop-0-0"]
    assert urls(snapshot, "k8s-victim-a-web-80") == ["http://10.1.0.1:80"]
    assert snapshot.skipped == (
        "Ingress victim-a/zzz: skipped: service k8s-victim-a-web-80 (Service victim-a/web "
        "port 80) is already made from Ingress victim/shop (Service victim/a-web port 80)",
    )
    assert snapshot.origins["services", "k8s-victim-a-web-80"] == "Ingress victim/shop"
    # The same with the names the other way round: the first in sorted order wins, and no
    # router points at the other namespace's pods.
    same = victim_and_attacker(attacker_first=True)
    assert list(same.routers) == ["k8s-victim-shop-0-0"]
    assert urls(same, "k8s-victim-a-web-80") == ["http://10.1.0.1:80"]


def test_a_service_name_collision_inside_one_object_skips_it() -> None:
    # Service "a-web" port 80 and Service "a" port "web-80" are both k8s-ns-a-web-80.
    both = ingress(
        "both",
        namespace="ns",
        rules=[
            rule("x.test", path("/1", "Prefix", "a-web", 80), path("/2", "Prefix", "a", "web-80"))
        ],
    )
    snapshot = run(ingresses=[both])
    assert snapshot.routers == {}
    assert snapshot.services == {}
    assert snapshot.skipped == (
        "Ingress ns/both: skipped: service k8s-ns-a-web-80 would stand for both Service "
        "ns/a-web port 80 and Service ns/a port web-80",
    )


def test_an_ingress_route_revisions_name_taken_by_a_service_port_skips_the_route() -> None:
    # IngressRoute default/api makes k8s-default-api-0 for its route 0's revisions, the name
    # of Service default/api port 0 too.
    taken = ingress("a", rules=[rule("a.test", path("/", "Prefix", "api", 0))])
    route = ingress_route(
        "api",
        {
            "routes": [
                {
                    "match": "PathPrefix(`/r`)",
                    "services": [
                        {"name": "web", "port": 80, "weight": 1},
                        {"name": "other", "port": 80, "weight": 1},
                    ],
                }
            ]
        },
    )
    snapshot = run(ingresses=[taken], routes=[route])
    assert list(snapshot.routers) == ["k8s-default-a-0-0"]
    assert (
        "IngressRoute default/api: skipped: service k8s-default-api-0 (the revisions of "
        "IngressRoute default/api) is already made from Ingress default/a (Service "
        "default/api port 0)"
    ) in snapshot.skipped


def test_a_router_whose_service_is_left_out_is_left_out_too() -> None:
    # An EndpointSlice address the config refuses: the service is not built, and the router
    # must not be left pointing at whatever else might carry that name.
    bad = endpoint_slice("w", "web", [{"name": "http", "port": 8080}], [ready("not an ip!")])
    snapshot = run(
        ingresses=[ingress("i", rules=[rule("a.test", path("/", "Prefix"))])],
        services=[WEB],
        slices=[bad],
    )
    assert snapshot.services == {}
    assert snapshot.routers == {}
    assert snapshot.skipped[-1] == (
        "Ingress default/i: router k8s-default-i-0-0 skipped: its service was left out"
    )


def test_long_names_are_cut_with_a_stable_hash() -> None:
    name = object_name("k8s", "n" * 63, "s" * 63, "port-name-here")
    assert len(name) == 128
    assert name == object_name("k8s", "n" * 63, "s" * 63, "port-name-here")
    assert name != object_name("k8s", "n" * 63, "s" * 63, "port-name-herf")
    assert object_name("k8s", "a", "b") == "k8s-a-b"


def test_equal_caches_give_equal_snapshots() -> None:
    objects = {
        "ingresses": [
            ingress("z", rules=[rule("z.test", path("/", "Prefix"))]),
            ingress("a", rules=[rule("a.test", path("/", "Prefix"), path("/x", "Prefix", "m"))]),
        ],
        "services": [WEB],
        "slices": [WEB_SLICE],
    }
    one = run(
        ingresses=objects["ingresses"], services=objects["services"], slices=objects["slices"]
    )
    two = run(
        ingresses=objects["ingresses"][::-1],
        services=objects["services"][::-1],
        slices=objects["slices"][::-1],
    )
    assert one == two
    assert list(one.routers) == list(two.routers)
    assert one.skipped == two.skipped


# -- TLS ---------------------------------------------------------------------------------------


def tls_secret(name: str, cert: bytes, key: bytes, *, type_: str = "kubernetes.io/tls") -> Json:
    return {
        "metadata": {"name": name, "namespace": "default"},
        "type": type_,
        "data": {
            "tls.crt": base64.b64encode(cert).decode(),
            "tls.key": base64.b64encode(key).decode(),
        },
    }


def test_tls_secrets_become_certificates_once_and_bad_ones_are_skipped() -> None:
    ca = trustme.CA()
    good = ca.issue_cert("shop.example.com")
    other = ca.issue_cert("other.example.com")
    chain = b"".join(blob.bytes() for blob in good.cert_chain_pems)
    key = good.private_key_pem.bytes()
    secrets = [
        tls_secret("shop-tls", chain, key),
        tls_secret("mismatch", chain, other.private_key_pem.bytes()),
        tls_secret("garbage", b"not a certificate", key),
        tls_secret("opaque", chain, key, type_="Opaque"),
        {
            "metadata": {"name": "badb64", "namespace": "default"},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": "***", "tls.key": "x"},
        },
    ]
    names = ["shop-tls", "mismatch", "garbage", "opaque", "badb64", "absent", "shop-tls"]
    ingresses = [
        ingress(
            "shop",
            rules=[rule("shop.example.com", path("/", "Prefix"))],
            tls=[{"hosts": ["shop.example.com"], "secretName": n} for n in names],
        ),
        ingress("again", rules=[], tls=[{"secretName": "shop-tls"}]),
    ]
    snapshot = run(
        ingresses=ingresses,
        services=[WEB],
        secrets=secrets,
        config=settings(tls_entrypoints=["websecure"]),
    )
    assert len(snapshot.certificates) == 1
    pair = snapshot.certificates[0]
    assert pair.origin == "Secret default/shop-tls"
    assert pair.cert_pem == chain
    assert pair.key_pem == key
    assert pair.entrypoints == ("websecure",)
    assert sorted(snapshot.skipped) == [
        "Ingress default/shop: Secret default/badb64: data.tls.crt is not valid base64",
        "Ingress default/shop: Secret default/garbage: tls.crt holds no valid PEM certificate",
        "Ingress default/shop: Secret default/mismatch: tls.key does not belong to the "
        "certificate in tls.crt",
        "Ingress default/shop: Secret default/opaque: not of type kubernetes.io/tls",
        "Ingress default/shop: TLS Secret default/absent does not exist",
    ]
    for message in snapshot.skipped:
        assert key.decode()[40:80] not in message


def test_the_pair_check_memo_keeps_digests_only_and_stays_small() -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("memo.example.com")
    chain = leaf.cert_chain_pems[0].bytes()
    key = leaf.private_key_pem.bytes()
    kube_backends._checked.clear()
    good = tls_secret("good", chain, key)
    assert pem_pair(good, "Secret default/good", ()).key_pem == key
    assert list(kube_backends._checked.values()) == [None]
    # More distinct pairs than the memo holds (garbage: cheap to check).
    for index in range(kube_backends.CHECKED_PAIRS + 50):
        junk = tls_secret(f"junk{index}", b"junk %d" % index, key)
        with pytest.raises(UnusableError, match="no valid PEM certificate"):
            pem_pair(junk, f"Secret default/junk{index}", ())
    memo = kube_backends._checked
    assert len(memo) == kube_backends.CHECKED_PAIRS
    assert all(len(digest) == 32 for digest in memo)  # SHA-256 digests, no key
    assert all(value in (None, "tls.crt holds no valid PEM certificate") for value in memo.values())
    # The oldest pair went first; checking it again puts it back (most recent).
    assert pem_pair(good, "Secret default/good", ()).cert_pem == chain
    assert list(memo.values())[-1] is None


def test_a_secret_whose_data_was_not_kept_is_being_loaded() -> None:
    secret = {
        "metadata": {"name": "tls", "namespace": "default"},
        "type": "kubernetes.io/tls",
        kube_backends.DATA_NOT_KEPT: True,
    }
    snapshot = run(
        ingresses=[ingress("i", rules=[], tls=[{"secretName": "tls"}])], secrets=[secret]
    )
    assert snapshot.certificates == ()
    assert snapshot.skipped == (
        "Ingress default/i: Secret default/tls: its certificate is being loaded (Secrets "
        "listed again)",
    )


# -- IngressRoute ------------------------------------------------------------------------------


def ingress_route(name: str, spec: Json, namespace: str = "default") -> Json:
    return {
        "apiVersion": "a3s-gateway.io/v1alpha1",
        "kind": "IngressRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def test_ingress_routes_with_one_and_several_services() -> None:
    api = service("api", [{"name": "http", "port": 80}])
    canary = service("api-canary", [{"name": "http", "port": 80}])
    slices = [
        endpoint_slice("api-1", "api", [{"name": "http", "port": 8080}], [ready("10.3.0.1")]),
        endpoint_slice(
            "canary-1", "api-canary", [{"name": "http", "port": 8080}], [ready("10.3.1.1")]
        ),
    ]
    route = ingress_route(
        "api",
        {
            "entrypoints": ["websecure"],
            "routes": [
                {
                    "match": "Host(`api.test`) && PathPrefix(`/v2`)",
                    "priority": 10,
                    "middlewares": [{"name": "auth"}],
                    "services": [{"name": "api", "port": 80, "strategy": "p2c"}],
                },
                {
                    "match": "Host(`api.test`)",
                    "services": [
                        {"name": "api", "port": "http", "weight": 2},
                        {"name": "api-canary", "port": 80, "weight": 1, "strategy": "random"},
                    ],
                },
            ],
            "tls": {"secretName": "missing-tls"},
        },
    )
    snapshot = run(routes=[route], services=[api, canary], slices=slices)
    first = snapshot.routers["k8s-default-api-0"]
    assert first.rule == "Host(`api.test`) && PathPrefix(`/v2`)"
    assert first.priority == 10
    assert first.middlewares == ("auth",)
    assert first.entrypoints == ("websecure",)
    assert first.service == "k8s-default-api-80"
    balancer = snapshot.services["k8s-default-api-80"].load_balancer
    assert balancer is not None
    assert balancer.strategy == "p2c"
    second = snapshot.routers["k8s-default-api-1"]
    assert second.service == "k8s-default-api-1"
    split = snapshot.services["k8s-default-api-1"]
    assert [(r.name, r.traffic_percent, r.strategy) for r in split.revisions] == [
        ("api", 67, None),
        ("api-canary", 33, "random"),
    ]
    assert [s.url.text for s in split.revisions[0].servers] == ["http://10.3.0.1:8080"]
    assert [s.url.text for s in split.revisions[1].servers] == ["http://10.3.1.1:8080"]
    assert snapshot.origins["services", "k8s-default-api-1"] == "IngressRoute default/api"
    assert snapshot.skipped == (
        "IngressRoute default/api: TLS Secret default/missing-tls does not exist",
    )


def test_ingress_route_problems() -> None:
    zeros = [{"name": "a", "port": 80, "weight": 0}, {"name": "b", "port": 80, "weight": 0}]
    zero = {"match": "Host(`z.test`)", "services": zeros}
    twice = {"match": "Host(`t.test`)", "services": [
        {"name": "a", "port": 80}, {"name": "a", "port": 81}]}  # fmt: skip
    empty = {"match": "Host(`e.test`)", "services": []}
    fine = {"match": "Host(`f.test`)", "services": [{"name": "a", "port": 80}]}
    snapshot = run(
        routes=[ingress_route("r", {"routes": [zero, twice, empty, fine]})],
        services=[service("a", [{"port": 80}]), service("b", [{"port": 80}])],
    )
    assert list(snapshot.routers) == ["k8s-default-r-3"]
    assert snapshot.skipped == (
        "IngressRoute default/r: spec.routes[0] skipped: every service has weight 0",
        "IngressRoute default/r: spec.routes[1] skipped: a Service appears twice (revisions "
        "are named after Services)",
        "IngressRoute default/r: spec.routes[2] skipped: no services",
    )


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ({"services": [{"name": "a", "port": 80}]}, "spec.routes[0].match: missing"),
        (
            {"match": "Host(`x`)", "services": [{"name": "a", "port": 80, "weight": -1}]},
            "weight: must not be negative",
        ),
        (
            {"match": "Host(`x`)", "services": [{"name": "a", "port": True}]},
            "port: expected a port number or name",
        ),
        (
            {"match": "Host(`x`)", "services": [{"name": "a", "port": 80, "strategy": "best"}]},
            "'best' is not a strategy",
        ),
    ],
)
def test_malformed_ingress_routes_are_skipped(route: Json, message: str) -> None:
    snapshot = run(routes=[ingress_route("bad", {"routes": [route]})])
    assert snapshot.routers == {}
    assert len(snapshot.skipped) == 1
    assert snapshot.skipped[0].startswith("IngressRoute default/bad: skipped: ")
    assert message in snapshot.skipped[0]


def test_ingress_routes_need_the_crd_setting() -> None:
    route = ingress_route("r", {"routes": [{"match": "Host(`x`)", "services": [
        {"name": "a", "port": 80}]}]})  # fmt: skip
    assert run(routes=[route], config=settings()).routers == {}


# -- traffic split -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "percents"),
    [
        ([1], (100,)),
        ([2, 1], (67, 33)),
        ([1, 1, 1], (34, 33, 33)),
        ([0, 0, 0], (34, 33, 33)),
        ([0, 5], (0, 100)),
        ([1, 1, 1, 1, 1, 1], (17, 17, 17, 17, 16, 16)),
        ([3, 3, 1], (43, 43, 14)),
    ],
)
def test_traffic_percents(weights: list[int], percents: tuple[int, ...]) -> None:
    assert traffic_percents(weights) == percents


def test_traffic_percents_rejects_nothing_and_negatives() -> None:
    with pytest.raises(ValueError, match="no weights"):
        traffic_percents([])
    with pytest.raises(ValueError, match="negative"):
        traffic_percents([1, -1])
