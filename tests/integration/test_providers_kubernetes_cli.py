"""The Kubernetes provider through the real CLI (SPEC §10.6, §10.1, §9.6 ``/providers``).

``python -m a3s_gateway run`` with ``providers { kubernetes { kubeconfig = ... } }`` pointed at
the fake HTTPS API server of ``tests/support/fake_kube.py``, run in a background thread
(``fake_kube_in_thread``). The test writes Ingresses, IngressRoutes, Services and
EndpointSlices into the fake; the EndpointSlices' addresses are 127.0.0.1 and their ports are
those of real HTTP origins in this test's trio loop, each answering with its own name. Traffic
follows every change within the file provider's debounce (100 ms) plus a reload.

Covered: an Ingress created, changed (a new path, the EndpointSlice moved to another origin)
and deleted; an IngressRoute with two weighted services (the split exact per 100 requests, as
``/services`` shows it), its weights changed, then deleted; a dropped WATCH resumed and an
expired resource version (410) re-LISTed; Ingresses routed while the IngressRoute CRD is
missing (every IngressRoute LIST a 404: an error in ``/providers``, retried); an Ingress naming
a middleware the config lacks,
skipped alone with a warning in ``/providers`` and the log; client-certificate access; and an
API server that refuses (401, then 500) while the last routes keep serving, ``/providers``
shows the error, and the provider recovers. ``test_the_state_is_ok_again_once_the_watches_resume``
is an expected failure (a known bug, named in its mark): ``state`` stays "error" after the
watches are open again until each resource changes. The TLS Secrets are in
``test_providers_kubernetes_tls_cli.py``.

Every wait polls under a bounded deadline; the gateway is terminated (killed when it lingers)
and the fake server stopped and joined at the end of each test.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Final, Literal

import pytest
import trio

from tests.support.fake_kube import fake_kube_in_thread
from tests.support.gateway import LOCAL
from tests.support.origin import Fixed, Origin
from tests.support.scaling import cli_gateway, free_ports, poll_until

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from tests.support.fake_kube import FakeKube, JsonObject
    from tests.support.scaling import CliGateway

pytestmark = pytest.mark.integration

#: A change must be served within this many seconds: the watch event, the 100 ms debounce and
#: a reload, with a wide margin for loaded machines.
WITHIN: Final = 10.0
#: The first snapshot is served within this many seconds of the gateway being ready (every
#: resource LISTed first; the first reload also starts the config build process).
FIRST: Final = 15.0
#: A resumed watch after a drop or a refusal: the provider's backoff is 1 s, doubling.
RECOVERY: Final = 15.0
NAMESPACE: Final = "default"
SERVICE_NAME_LABEL: Final = "kubernetes.io/service-name"
#: The resources the provider watches without ``ingress_route_crd``.
WATCHED: Final = ("ingresses", "services", "endpointslices", "secrets")


# -- Kubernetes objects -----------------------------------------------------------------------


def service(name: str) -> JsonObject:
    """A Service with port 80 (``http``) targeting the pods' port ``http``."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }


def endpoint_slice(service_name: str, origin: Origin, *, ready: bool = True) -> JsonObject:
    """The EndpointSlice of ``service_name``: one endpoint, 127.0.0.1 on ``origin``'s port."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service_name}-slice",
            "namespace": NAMESPACE,
            "labels": {SERVICE_NAME_LABEL: service_name},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": origin.port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [LOCAL], "conditions": {"ready": ready}}],
    }


def ingress(
    name: str,
    paths: Sequence[tuple[str, str]],
    *,
    annotations: dict[str, str] | None = None,
    tls_secret: str | None = None,
    host: str | None = None,
) -> JsonObject:
    """An Ingress with one rule: each ``(path, service)`` a ``Prefix`` path to port 80."""
    rule: JsonObject = {
        "http": {
            "paths": [
                {
                    "path": path,
                    "pathType": "Prefix",
                    "backend": {"service": {"name": target, "port": {"number": 80}}},
                }
                for path, target in paths
            ]
        }
    }
    if host is not None:
        rule["host"] = host
    spec: JsonObject = {"rules": [rule]}
    if tls_secret is not None:
        spec["tls"] = [{"hosts": [host] if host else [], "secretName": tls_secret}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": NAMESPACE, "annotations": annotations or {}},
        "spec": spec,
    }


def ingress_route(name: str, match: str, weights: dict[str, int]) -> JsonObject:
    """An IngressRoute with one route: ``match`` to the Services in ``weights``, port 80."""
    return {
        "apiVersion": "a3s-gateway.io/v1alpha1",
        "kind": "IngressRoute",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "routes": [
                {
                    "match": match,
                    "services": [
                        {"name": target, "port": 80, "weight": weight}
                        for target, weight in weights.items()
                    ],
                }
            ]
        },
    }


def backed_by(kube: FakeKube, service_name: str, origin: Origin) -> None:
    """Service ``service_name`` and its EndpointSlice on ``origin``."""
    kube.apply(service(service_name))
    kube.apply(endpoint_slice(service_name, origin))


# -- the gateway ------------------------------------------------------------------------------


def config(
    port: int,
    admin: int,
    kubeconfig: Path,
    *,
    crd: bool = False,
    extra: str = "",
    entrypoints: str = "",
) -> str:
    """An http entrypoint ``web`` (plus ``entrypoints``), the management API, and the
    Kubernetes provider reading ``kubeconfig``; ``extra`` adds blocks (middlewares)."""
    return (
        f'entrypoints "web" {{\n  address = "{LOCAL}:{port}"\n}}\n'
        f"{entrypoints}"
        f'management {{\n  address = "{LOCAL}:{admin}"\n}}\n'
        f"{extra}"
        "providers {\n"
        '  file {\n    watch    = false\n    debounce = "100ms"\n  }\n'
        "  kubernetes {\n"
        f"    kubeconfig        = {json.dumps(str(kubeconfig))}\n"
        f"    ingress_route_crd = {'true' if crd else 'false'}\n"
        "  }\n"
        "}\n"
        "shutdown_timeout_secs = 2\n"
    )


async def start_origins(nursery: trio.Nursery, *names: str) -> list[Origin]:
    """Origins on 127.0.0.1, each answering every path with ``from-<name>``."""
    origins = []
    for name in names:
        origin = Origin(name)
        origin.default = Fixed(200, f"from-{name}".encode())
        await nursery.start(origin.serve)
        origins.append(origin)
    return origins


async def answer(gateway: CliGateway, target: str) -> str:
    """The body of one request for ``target`` when 200, else its status."""
    response = await gateway.get(target)
    if response.status == 200:
        return response.body.decode(errors="replace")
    return str(response.status)


async def bodies(gateway: CliGateway, target: str, count: int = 6) -> set[str]:
    """The distinct answers (``answer``) to ``count`` requests for ``target``."""
    return {await answer(gateway, target) for _ in range(count)}


async def tally(gateway: CliGateway, target: str, count: int) -> Counter[str]:
    """How often each answer came in ``count`` requests for ``target``."""
    return Counter([await answer(gateway, target) for _ in range(count)])


async def documents(gateway: CliGateway, path: str) -> list[dict[str, object]]:
    """A management API list (``/routes``, ``/services``, ``/providers``)."""
    response = await gateway.api(path)
    assert response.status == 200, response
    found = json.loads(response.body)
    assert isinstance(found, list), found
    return found


async def kube_status(gateway: CliGateway) -> dict[str, object]:
    """The ``kubernetes`` document of ``/providers``."""
    for document in await documents(gateway, "/providers"):
        if document.get("name") == "kubernetes":
            return document
    raise AssertionError("no kubernetes provider in /providers")


async def route_names(gateway: CliGateway) -> set[str]:
    return {str(route["name"]) for route in await documents(gateway, "/routes")}


def serves(expected: str) -> Callable[[set[str]], bool]:
    """An ``accept`` for ``bodies``: every answer is ``expected``."""
    return {expected}.__eq__


# -- Ingress ----------------------------------------------------------------------------------


async def test_an_ingress_serves_follows_its_changes_and_goes_away(tmp_path: Path) -> None:
    port, admin = free_ports(2)
    with fake_kube_in_thread(tmp_path / "kube") as kube:
        kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig")
        async with trio.open_nursery() as nursery:
            a, b = await start_origins(nursery, "a", "b")
            text = config(port, admin, kubeconfig)
            async with cli_gateway(tmp_path, text, port=port, admin=admin) as gateway:
                # Created: the router and the service appear, traffic reaches origin a.
                backed_by(kube, "shop", a)
                kube.apply(ingress("shop", [("/shop", "shop")]))
                await poll_until(
                    "the Ingress",
                    lambda: bodies(gateway, "/shop/cart"),
                    serves("from-a"),
                    within=FIRST,
                )
                assert await bodies(gateway, "/shopping") == {"404"}  # whole path elements
                assert "k8s-default-shop-0-0" in await route_names(gateway)
                services = {str(s["name"]): s for s in await documents(gateway, "/services")}
                backends = services["k8s-default-shop-80"]["backends"]
                assert isinstance(backends, list)
                assert [b["url"] for b in backends] == [f"http://{LOCAL}:{a.port}"]

                # A new path: served, the old one still is.
                kube.apply(ingress("shop", [("/shop", "shop"), ("/cart", "shop")]))
                await poll_until(
                    "the new path",
                    lambda: bodies(gateway, "/cart/1"),
                    serves("from-a"),
                    within=WITHIN,
                )
                assert await bodies(gateway, "/shop") == {"from-a"}

                # The EndpointSlice moves to origin b: traffic follows.
                kube.apply(endpoint_slice("shop", b))
                await poll_until(
                    "the moved endpoint",
                    lambda: bodies(gateway, "/shop"),
                    serves("from-b"),
                    within=WITHIN,
                )

                # The endpoint is not ready: no backend left, the route answers 503.
                kube.apply(endpoint_slice("shop", b, ready=False))
                await poll_until(
                    "the not ready endpoint",
                    lambda: bodies(gateway, "/shop"),
                    serves("503"),
                    within=WITHIN,
                )
                kube.apply(endpoint_slice("shop", b))
                await poll_until(
                    "the ready endpoint",
                    lambda: bodies(gateway, "/shop"),
                    serves("from-b"),
                    within=WITHIN,
                )

                # Deleted: both paths are 404, the router is gone.
                kube.delete("networking.k8s.io/v1", "Ingress", NAMESPACE, "shop")
                await poll_until(
                    "the deleted Ingress",
                    lambda: bodies(gateway, "/cart"),
                    serves("404"),
                    within=WITHIN,
                )
                assert await bodies(gateway, "/shop") == {"404"}
                assert not {n for n in await route_names(gateway) if n.startswith("k8s-")}
                status = await kube_status(gateway)
                assert status["state"] == "ok", status
                assert {request.auth for request in kube.requests} == {"token"}
                changes = status["changes"]
                assert isinstance(changes, int)
                assert changes >= 5
            nursery.cancel_scope.cancel()


# -- IngressRoute -----------------------------------------------------------------------------


def revision_percents(config_document: dict[str, object], name: str) -> dict[str, object]:
    """``{revision: traffic_percent}`` of service ``name`` in a ``/config`` document."""
    services = config_document["services"]
    assert isinstance(services, dict), services
    revisions = services[name]["revisions"]
    return {str(r["name"]): r["traffic_percent"] for r in revisions}


async def test_an_ingress_route_splits_traffic_by_weight_and_follows_new_weights(
    tmp_path: Path,
) -> None:
    port, admin = free_ports(2)
    with fake_kube_in_thread(tmp_path / "kube") as kube:
        kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig")
        async with trio.open_nursery() as nursery:
            a, b = await start_origins(nursery, "a", "b")
            text = config(port, admin, kubeconfig, crd=True)
            async with cli_gateway(tmp_path, text, port=port, admin=admin) as gateway:
                backed_by(kube, "v1", a)
                backed_by(kube, "v2", b)
                kube.apply(ingress_route("split", "PathPrefix(`/split`)", {"v1": 3, "v2": 1}))
                # 3:1 is 75/25, exact over any 100 requests in a row.
                await poll_until(
                    "the 75/25 split",
                    lambda: tally(gateway, "/split", 100),
                    {"from-a": 75, "from-b": 25}.__eq__,
                    within=FIRST,
                )
                assert "k8s-default-split-0" in await route_names(gateway)
                services = {str(s["name"]): s for s in await documents(gateway, "/services")}
                backends = services["k8s-default-split-0"]["backends"]
                assert isinstance(backends, list)
                assert {(x["revision"], x["url"]) for x in backends} == {
                    ("v1", f"http://{LOCAL}:{a.port}"),
                    ("v2", f"http://{LOCAL}:{b.port}"),
                }
                shown = json.loads((await gateway.api("/config")).body)
                assert revision_percents(shown, "k8s-default-split-0") == {"v1": 75, "v2": 25}

                # New weights, 1:3: the split follows.
                kube.apply(ingress_route("split", "PathPrefix(`/split`)", {"v1": 1, "v2": 3}))
                await poll_until(
                    "the 25/75 split",
                    lambda: tally(gateway, "/split", 100),
                    {"from-a": 25, "from-b": 75}.__eq__,
                    within=WITHIN,
                )
                shown = json.loads((await gateway.api("/config")).body)
                assert revision_percents(shown, "k8s-default-split-0") == {"v1": 25, "v2": 75}

                # Deleted: the route and its service are gone.
                kube.delete("a3s-gateway.io/v1alpha1", "IngressRoute", NAMESPACE, "split")
                await poll_until(
                    "the deleted IngressRoute",
                    lambda: bodies(gateway, "/split"),
                    serves("404"),
                    within=WITHIN,
                )
                assert "k8s-default-split-0" not in await route_names(gateway)
                names = {str(s["name"]) for s in await documents(gateway, "/services")}
                assert "k8s-default-split-0" not in names
            nursery.cancel_scope.cancel()


async def test_ingresses_are_routed_while_the_ingress_route_crd_is_missing(
    tmp_path: Path,
) -> None:
    port, admin = free_ports(2)
    with fake_kube_in_thread(tmp_path / "kube") as kube:
        kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig")
        # ingress_route_crd = true, but every LIST of IngressRoutes is a 404 (no CRD).
        kube.fail_next(10**6, 404, path_contains="/ingressroutes", watch=False)
        async with trio.open_nursery() as nursery:
            (a,) = await start_origins(nursery, "a")
            backed_by(kube, "shop", a)
            kube.apply(ingress("shop", [("/shop", "shop")]))
            text = config(port, admin, kubeconfig, crd=True)
            async with cli_gateway(tmp_path, text, port=port, admin=admin) as gateway:
                await poll_until(
                    "the Ingress, without IngressRoutes",
                    lambda: bodies(gateway, "/shop"),
                    serves("from-a"),
                    within=FIRST,
                )

                async def route_lists() -> int:
                    await trio.lowlevel.checkpoint()
                    return lists_of(kube, "ingressroutes")

                await poll_until(
                    "the IngressRoute LIST retried",
                    route_lists,
                    lambda count: count >= 2,
                    within=RECOVERY,
                )
                status = await kube_status(gateway)
                assert status["state"] == "error", status
                detail = resource_detail(status, "ingress_routes")
                assert "HTTP 404" in str(detail["last_error"]), detail
                assert "is the IngressRoute CRD installed?" in str(detail["last_error"]), detail
                assert "IngressRoute: " in str(status["last_error"]), status
            nursery.cancel_scope.cancel()


# -- watches: dropped, expired ----------------------------------------------------------------


def lists_of(kube: FakeKube, plural: str) -> int:
    """How many LISTs (GETs of the collection that are not watches) ``plural`` got so far."""
    return sum(
        1
        for request in kube.requests
        if request.method == "GET" and request.path.endswith(f"/{plural}") and not request.watch
    )


def resource_detail(status: dict[str, object], key: str) -> dict[str, object]:
    """``details.resources.<key>`` of the provider's ``/providers`` document."""
    details = status["details"]
    assert isinstance(details, dict), details
    detail = details["resources"][key]
    assert isinstance(detail, dict), detail
    return detail


async def resource_errors(gateway: CliGateway) -> dict[str, int]:
    """Each watched resource's ``errors`` count in ``/providers``."""
    details = (await kube_status(gateway))["details"]
    assert isinstance(details, dict), details
    return {key: int(detail["errors"]) for key, detail in details["resources"].items()}


async def drop_watches(gateway: CliGateway, kube: FakeKube) -> None:
    """Cut every watch stream and wait until the provider saw each cut (an error per resource,
    then a 1 s backoff before it resumes), so a write made next is not delivered on a stream
    the fake is still closing."""
    before = await resource_errors(gateway)
    assert kube.drop_watches() >= len(before)
    await poll_until(
        "every watch cut",
        lambda: resource_errors(gateway),
        lambda errors: all(errors[key] > count for key, count in before.items()),
        within=WITHIN,
    )


async def test_a_dropped_watch_resumes_and_an_expired_version_lists_again(
    tmp_path: Path,
) -> None:
    port, admin = free_ports(2)
    with fake_kube_in_thread(tmp_path / "kube") as kube:
        kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig")
        async with trio.open_nursery() as nursery:
            a, b = await start_origins(nursery, "a", "b")
            backed_by(kube, "shop", a)
            kube.apply(ingress("shop", [("/shop", "shop")]))
            text = config(port, admin, kubeconfig)
            async with cli_gateway(tmp_path, text, port=port, admin=admin) as gateway:
                await poll_until(
                    "the Ingress",
                    lambda: bodies(gateway, "/shop"),
                    serves("from-a"),
                    within=FIRST,
                )
                await kube.wait_for(lambda: kube.watch_count() >= len(WATCHED))
                listed = lists_of(kube, "endpointslices")

                # Dropped mid-stream, then a change: the watch resumes from its last version
                # (no new LIST) and the change is served.
                await drop_watches(gateway, kube)
                kube.apply(endpoint_slice("shop", b))
                await poll_until(
                    "the change after the drop",
                    lambda: bodies(gateway, "/shop"),
                    serves("from-b"),
                    within=RECOVERY,
                )
                assert lists_of(kube, "endpointslices") == listed
                resumed = [
                    r for r in kube.requests if r.watch and r.path.endswith("/endpointslices")
                ]
                assert resumed[-1].query["resourceVersion"] not in ("", "0")

                # Dropped, a write while no watch is open, the log compacted: the resumed
                # watches are expired (410), the provider LISTs again and sees both changes.
                await kube.wait_for(lambda: kube.watch_count() >= len(WATCHED))
                await drop_watches(gateway, kube)
                kube.apply(endpoint_slice("shop", a))
                kube.compact()
                kube.apply(ingress("shop", [("/shop", "shop"), ("/more", "shop")]))
                await poll_until(
                    "the changes after the 410",
                    lambda: bodies(gateway, "/more"),
                    serves("from-a"),
                    within=RECOVERY,
                )
                assert await bodies(gateway, "/shop") == {"from-a"}
                assert lists_of(kube, "endpointslices") > listed
                status = await kube_status(gateway)
                relists = resource_detail(status, "endpoint_slices").get("relists")
                assert isinstance(relists, int)
                assert relists >= 1, status
            nursery.cancel_scope.cancel()


# -- invalid objects --------------------------------------------------------------------------


TAGGED: Final = (
    'middlewares "tagged" {\n  type = "headers"\n'
    '  response_headers = {\n    "X-Tagged" = "yes"\n  }\n}\n'
)


async def test_an_invalid_ingress_is_skipped_while_the_others_apply(tmp_path: Path) -> None:
    port, admin = free_ports(2)
    with fake_kube_in_thread(tmp_path / "kube") as kube:
        kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig")
        async with trio.open_nursery() as nursery:
            (a,) = await start_origins(nursery, "a")
            backed_by(kube, "shop", a)
            middlewares = "a3s-gateway.io/middlewares"
            kube.apply(ingress("good", [("/good", "shop")], annotations={middlewares: "tagged"}))
            kube.apply(ingress("bad", [("/bad", "shop")], annotations={middlewares: "missing"}))
            text = config(port, admin, kubeconfig, extra=TAGGED)
            async with cli_gateway(tmp_path, text, port=port, admin=admin) as gateway:
                await poll_until(
                    "the good Ingress",
                    lambda: bodies(gateway, "/good"),
                    serves("from-a"),
                    within=FIRST,
                )
                response = await gateway.get("/good")
                assert response.header(b"x-tagged") == b"yes"
                assert await bodies(gateway, "/bad") == {"404"}
                names = await route_names(gateway)
                assert "k8s-default-good-0-0" in names
                assert "k8s-default-bad-0-0" not in names
                status = await kube_status(gateway)
                warnings = status["warnings"]
                assert isinstance(warnings, list), status
                (warning,) = warnings
                assert isinstance(warning, str)
                for part in ("k8s-default-bad-0-0", "Ingress default/bad", '"missing"'):
                    assert part in warning, warning
                logged = [line for line in gateway.log().splitlines() if "WARNING" in line]
                assert any(warning in line for line in logged), logged

                # Fixed: the router joins the others.
                kube.apply(ingress("bad", [("/bad", "shop")], annotations={middlewares: "tagged"}))
                await poll_until(
                    "the fixed Ingress",
                    lambda: bodies(gateway, "/bad"),
                    serves("from-a"),
                    within=WITHIN,
                )
                await poll_until(
                    "no warning",
                    lambda: kube_status(gateway),
                    lambda status: status["warnings"] == [],
                    within=WITHIN,
                )
            nursery.cancel_scope.cancel()


# -- access to the API server -----------------------------------------------------------------


async def test_client_certificate_access(tmp_path: Path) -> None:
    port, admin = free_ports(2)
    with fake_kube_in_thread(tmp_path / "kube") as kube:
        kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig", auth="cert")
        async with trio.open_nursery() as nursery:
            (a,) = await start_origins(nursery, "a")
            backed_by(kube, "shop", a)
            kube.apply(ingress("shop", [("/shop", "shop")]))
            text = config(port, admin, kubeconfig)
            async with cli_gateway(tmp_path, text, port=port, admin=admin) as gateway:
                await poll_until(
                    "the Ingress",
                    lambda: bodies(gateway, "/shop"),
                    serves("from-a"),
                    within=FIRST,
                )
                assert {request.auth for request in kube.requests} == {"cert"}
                status = await kube_status(gateway)
                assert status["state"] == "ok", status
            nursery.cancel_scope.cancel()


async def refused_until_recovered(
    gateway: CliGateway, kube: FakeKube, code: Literal[401, 500], new: Origin, old: Origin
) -> None:
    """Every watch cut and the next WATCH of each resource refused with ``code``: the
    last routes keep serving while ``/providers`` shows the error, then the provider watches
    again and follows a change to ``new`` (``state`` stays "error" until each resource sees
    a change: see ``test_the_state_is_ok_again_once_the_watches_resume``)."""
    await kube.wait_for(lambda: kube.watch_count() >= len(WATCHED))
    errors_before = (await kube_status(gateway))["errors"]
    assert isinstance(errors_before, int)
    for plural in WATCHED:
        kube.fail_next(1, code, path_contains=f"/{plural}", watch=True)
    kube.drop_watches()
    status = await poll_until(
        f"the {code} in /providers",
        lambda: kube_status(gateway),
        lambda status: f"HTTP {code}" in str(status["last_error"]),
        within=RECOVERY,
    )
    assert status["state"] == "error", status
    errors = status["errors"]
    assert isinstance(errors, int)
    assert errors > errors_before
    assert kube.token not in json.dumps(status)
    assert await bodies(gateway, "/shop") == {f"from-{old.name}"}
    # The refusals run out: the watches resume and a change is followed.
    kube.apply(endpoint_slice("shop", new))
    await poll_until(
        f"the change after the {code}",
        lambda: bodies(gateway, "/shop"),
        serves(f"from-{new.name}"),
        within=RECOVERY,
    )


async def test_a_refusing_api_server_leaves_the_last_routes_serving(tmp_path: Path) -> None:
    port, admin = free_ports(2)
    with fake_kube_in_thread(tmp_path / "kube") as kube:
        kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig")
        async with trio.open_nursery() as nursery:
            a, b = await start_origins(nursery, "a", "b")
            backed_by(kube, "shop", a)
            kube.apply(ingress("shop", [("/shop", "shop")]))
            text = config(port, admin, kubeconfig)
            async with cli_gateway(tmp_path, text, port=port, admin=admin) as gateway:
                await poll_until(
                    "the Ingress",
                    lambda: bodies(gateway, "/shop"),
                    serves("from-a"),
                    within=FIRST,
                )
                await refused_until_recovered(gateway, kube, 401, b, a)
                await refused_until_recovered(gateway, kube, 500, a, b)
                assert {request.auth for request in kube.requests} == {"token"}
                assert kube.token not in gateway.log()
            nursery.cancel_scope.cancel()


async def test_the_state_is_ok_again_once_the_watches_resume(tmp_path: Path) -> None:
    port, admin = free_ports(2)
    with fake_kube_in_thread(tmp_path / "kube") as kube:
        kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig")
        async with trio.open_nursery() as nursery:
            (a,) = await start_origins(nursery, "a")
            backed_by(kube, "shop", a)
            kube.apply(ingress("shop", [("/shop", "shop")]))
            text = config(port, admin, kubeconfig)
            async with cli_gateway(tmp_path, text, port=port, admin=admin) as gateway:
                await poll_until(
                    "the Ingress",
                    lambda: bodies(gateway, "/shop"),
                    serves("from-a"),
                    within=FIRST,
                )
                await kube.wait_for(lambda: kube.watch_count() >= len(WATCHED))
                await drop_watches(gateway, kube)
                assert (await kube_status(gateway))["state"] == "error"
                # Resumed after the 1 s backoff, with nothing changed meanwhile; a BOOKMARK
                # on each stream too (a real API server sends them about once a minute).
                await kube.wait_for(lambda: kube.watch_count() >= len(WATCHED))
                kube.send_bookmarks()
                await poll_until(
                    "ok once the watches are open again",
                    lambda: kube_status(gateway),
                    lambda status: status["state"] == "ok",
                    within=3.0,
                )
            nursery.cancel_scope.cancel()
