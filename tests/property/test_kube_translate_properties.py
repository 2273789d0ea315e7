"""Properties of the Kubernetes translation (SPEC §10.6; providers/kube_ingress.py).

Ingress paths: the rule ``ingress_rule`` writes, compiled by the gateway's own rule compiler,
matches a request exactly when Kubernetes' semantics say the Ingress path does: ``Exact`` is
equality, ``Prefix`` matches whole path elements (``/foo`` matches ``/foo`` and ``/foo/x``,
never ``/foobar``; a trailing ``/`` in the Ingress path changes nothing), ``*.suffix`` hosts
match exactly one more label, host names case-insensitively. The reference below is written
from the Kubernetes documentation, not from the code under test.

Weights: ``traffic_percents`` always sums to exactly 100, gives each entry its exact share
rounded down or up (never further), keeps the weights' order, gives a zero weight nothing
(unless every weight is zero, then the split is equal within one point), and is deterministic.

Names: with namespaces, Service and object names full of dashes (so that the names made from
them collide across namespaces), every router's service has exactly the servers of the Service
port its own object names, in its own namespace (never another namespace's pods), and no object
that was skipped for a collision keeps a router.

(The strategies are local: they serve this file only.)
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Final

import msgspec
from hypothesis import example, given, settings
from hypothesis import strategies as st

from a3s_gateway.config.schema import KubernetesProvider
from a3s_gateway.providers.kube_ingress import ingress_rule, traffic_percents
from a3s_gateway.providers.kube_objects import KubeObjects, ObjectKey
from a3s_gateway.providers.kube_translate import translate
from a3s_gateway.routing import HttpRequestInfo, compile_rule

Json = dict[str, Any]

# Few, overlapping pieces, so generated requests often sit right at a prefix's edge.
SEGMENTS = st.sampled_from(["a", "b", "ab", "foo", "foobar"])
LABELS = st.sampled_from(["a", "b", "x", "example", "com"])
PATH_TYPES = st.sampled_from(["Exact", "Prefix", "ImplementationSpecific"])


@st.composite
def paths(draw: st.DrawFn) -> str:
    """``/``-separated segments, maybe with a trailing ``/``."""
    segments = draw(st.lists(SEGMENTS, max_size=4))
    text = "/" + "/".join(segments)
    trailing = draw(st.booleans())
    if segments and trailing:
        text += "/"
    return text


@st.composite
def ingress_hosts(draw: st.DrawFn) -> str | None:
    """No host, an exact host or a one-label wildcard, in mixed case."""
    kind = draw(st.sampled_from(["none", "exact", "wildcard"]))
    if kind == "none":
        return None
    labels = draw(st.lists(LABELS, min_size=1, max_size=3))
    host = ".".join(labels)
    if draw(st.booleans()):
        host = host.upper()
    return f"*.{host}" if kind == "wildcard" else host


@st.composite
def request_hosts(draw: st.DrawFn) -> str:
    labels = draw(st.lists(LABELS, min_size=1, max_size=4))
    host = ".".join(labels)
    return host.upper() if draw(st.booleans()) else host


def host_matches(wanted: str | None, host: str) -> bool:
    if wanted is None:
        return True
    wanted, host = wanted.lower(), host.lower()
    if wanted.startswith("*."):
        suffix = wanted[1:]
        label = host[: -len(suffix)] if host.endswith(suffix) else ""
        return label != "" and "." not in label
    return host == wanted


def path_matches(path_type: str, wanted: str, path: str) -> bool:
    if path_type == "Exact":
        return path == wanted
    if path_type == "Prefix":
        elements = [part for part in wanted.split("/") if part]
        return path.split("/")[1 : 1 + len(elements)] == elements
    return path.startswith(wanted)  # ImplementationSpecific: a plain prefix here


@given(
    host=ingress_hosts(),
    path_type=PATH_TYPES,
    wanted=paths(),
    requests=st.lists(st.tuples(request_hosts(), paths()), min_size=1, max_size=8),
)
@example(host=None, path_type="Prefix", wanted="/foo", requests=[("a", "/foobar")])
@example(host=None, path_type="Prefix", wanted="/foo/", requests=[("a", "/foo")])
@example(host="*.example.com", path_type="Exact", wanted="/", requests=[("example.com", "/")])
@example(host="*.b.com", path_type="Exact", wanted="/", requests=[("a.a.b.com", "/")])
def test_ingress_rules_match_like_kubernetes(
    host: str | None, path_type: str, wanted: str, requests: list[tuple[str, str]]
) -> None:
    compiled = compile_rule(ingress_rule(host, wanted, path_type))
    for request_host, request_path in requests:
        info = HttpRequestInfo(method="GET", host=request_host, path=request_path)
        expected = host_matches(host, request_host) and path_matches(
            path_type, wanted, request_path
        )
        assert compiled.matches(info) == expected, (request_host, request_path)


@given(
    path_type=PATH_TYPES,
    wanted=paths(),
    extra=st.lists(SEGMENTS, max_size=3),
)
def test_a_path_always_matches_itself_and_prefixes_their_children(
    path_type: str, wanted: str, extra: list[str]
) -> None:
    compiled = compile_rule(ingress_rule("host.example", wanted, path_type))
    assert compiled.matches(HttpRequestInfo(method="GET", host="host.example", path=wanted))
    if path_type != "Exact":
        child = wanted.rstrip("/") + "/" + "/".join(extra)
        assert compiled.matches(HttpRequestInfo(method="GET", host="HOST.example", path=child))


WEIGHTS = st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=12)


@given(WEIGHTS)
@example([0])
@example([0, 0, 0])
@example([1, 1, 1])
@example([1000, 1, 1])
def test_percents_sum_to_100_and_stay_within_one_point_of_the_share(weights: list[int]) -> None:
    percents = traffic_percents(weights)
    assert sum(percents) == 100
    assert len(percents) == len(weights)
    assert percents == traffic_percents(list(weights))
    total = sum(weights)
    shares = [Fraction(100 * w, total) for w in weights] if total else None
    for index, percent in enumerate(percents):
        if shares is None:
            assert max(percents) - min(percents) <= 1
            continue
        assert shares[index] - 1 < percent < shares[index] + 1
        if weights[index] == 0:
            assert percent == 0


@given(WEIGHTS)
def test_a_heavier_weight_never_gets_fewer_points(weights: list[int]) -> None:
    percents = traffic_percents(weights)
    for i, weight in enumerate(weights):
        for j, other in enumerate(weights):
            if weight > other:
                assert percents[i] >= percents[j]
            if weight == other and i < j:
                # (ties: the earlier entry gets a left-over point first)
                assert percents[i] in (percents[j], percents[j] + 1)


# -- names that collide ------------------------------------------------------------------------

# Namespaces and names with dashes, so that ``k8s-<ns>-<service>-<port>`` and the router names
# collide often across namespaces ("a" + "b-web" and "a-b" + "web").
NAMESPACES: Final = ("a", "b", "a-b", "b-a", "a-b-web")
SERVICES: Final = ("web", "b-web", "a-web", "b", "web-80")
OBJECT_NAMES: Final = ("x", "b-x", "x-0", "0", "b")
#: A Service port as an object names it → the pod port of its EndpointSlice.
PORTS: Final = {80: 8080, "http": 8080, 81: 8081, "web-80": 8081}
PORT_CHOICES = st.sampled_from(list(PORTS))


def address_of(namespace: str, service: str) -> str:
    """The one endpoint address of a Service: unique per (namespace, Service)."""
    return f"10.{NAMESPACES.index(namespace)}.{SERVICES.index(service)}.1"


def cluster() -> tuple[dict[ObjectKey, Json], dict[ObjectKey, Json]]:
    """Every Service in every namespace (ports 80 ``http`` and 81 ``web-80``), each with an
    EndpointSlice of its own address."""
    services: dict[ObjectKey, Json] = {}
    slices: dict[ObjectKey, Json] = {}
    for namespace in NAMESPACES:
        for name in SERVICES:
            services[namespace, name] = {
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"ports": [{"name": "http", "port": 80}, {"name": "web-80", "port": 81}]},
            }
            slices[namespace, f"{name}-slice"] = {
                "metadata": {
                    "name": f"{name}-slice",
                    "namespace": namespace,
                    "labels": {"kubernetes.io/service-name": name},
                },
                "ports": [{"name": "http", "port": 8080}, {"name": "web-80", "port": 8081}],
                "endpoints": [{"addresses": [address_of(namespace, name)]}],
            }
    return services, slices


Backends = list[tuple[str, int | str]]


@st.composite
def kube_objects(draw: st.DrawFn) -> tuple[dict[ObjectKey, Json], dict[ObjectKey, Json]]:
    """Ingresses (one path each) and IngressRoutes (one route of one or two Services)."""
    ingresses: dict[ObjectKey, Json] = {}
    routes: dict[ObjectKey, Json] = {}
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        key = (draw(st.sampled_from(NAMESPACES)), draw(st.sampled_from(OBJECT_NAMES)))
        service, port = draw(st.sampled_from(SERVICES)), draw(PORT_CHOICES)
        number_or_name = {"number": port} if isinstance(port, int) else {"name": port}
        path = {
            "path": "/",
            "pathType": "Prefix",
            "backend": {"service": {"name": service, "port": number_or_name}},
        }
        ingresses[key] = {
            "metadata": {"namespace": key[0], "name": key[1]},
            "spec": {"rules": [{"http": {"paths": [path]}}]},
        }
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        key = (draw(st.sampled_from(NAMESPACES)), draw(st.sampled_from(OBJECT_NAMES)))
        count = draw(st.integers(min_value=1, max_value=2))
        entries = [
            {"name": draw(st.sampled_from(SERVICES)), "port": draw(PORT_CHOICES), "weight": 1}
            for _ in range(count)
        ]
        routes[key] = {
            "metadata": {"namespace": key[0], "name": key[1]},
            "spec": {"routes": [{"match": "PathPrefix(`/`)", "services": entries}]},
        }
    return ingresses, routes


def backends_of(kind: str, obj: Json) -> Backends:
    """The Service ports an object's one path or route names."""
    if kind == "Ingress":
        backend = obj["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
        port = backend["port"]
        return [(backend["name"], port.get("number", port.get("name")))]
    return [(entry["name"], entry["port"]) for entry in obj["spec"]["routes"][0]["services"]]


def expected_urls(namespace: str, service: str, port: int | str) -> list[str]:
    return [f"http://{address_of(namespace, service)}:{PORTS[port]}"]


@settings(max_examples=300, deadline=None)
@given(kube_objects())
def test_every_router_reaches_only_the_service_its_own_object_names(
    objects: tuple[dict[ObjectKey, Json], dict[ObjectKey, Json]],
) -> None:
    ingresses, routes = objects
    services, slices = cluster()
    snapshot = translate(
        KubeObjects(
            ingresses=ingresses,
            services=services,
            endpoint_slices=slices,
            ingress_routes=routes,
        ),
        msgspec.convert({"ingress_route_crd": True}, KubernetesProvider),
    )
    by_origin = {
        **{f"Ingress {ns}/{name}": ("Ingress", ns, o) for (ns, name), o in ingresses.items()},
        **{
            f"IngressRoute {ns}/{name}": ("IngressRoute", ns, o) for (ns, name), o in routes.items()
        },
    }
    skipped = {note.split(": skipped: ")[0] for note in snapshot.skipped if ": skipped: " in note}
    for name, router in snapshot.routers.items():
        origin = snapshot.origins["routers", name]
        assert origin not in skipped, (origin, snapshot.skipped)
        kind, namespace, obj = by_origin[origin]
        wanted = backends_of(kind, obj)
        service = snapshot.services[router.service]
        assert snapshot.origins["services", router.service] == origin or len(wanted) == 1
        if len(wanted) == 1:
            balancer = service.load_balancer
            assert balancer is not None
            found = [server.url.text for server in balancer.servers]
            assert found == expected_urls(namespace, *wanted[0]), (name, origin)
        else:
            found_revisions = [[s.url.text for s in r.servers] for r in service.revisions]
            assert found_revisions == [expected_urls(namespace, *w) for w in wanted], origin
