"""The fake Kubernetes API server (``tests/support/fake_kube.py``) over real TLS: discovery,
LIST with label and field selectors, the server-filled metadata, reads and writes at the real
paths, the ``/scale`` subresource, authentication, injected failures, the request log and the
files it writes (kubeconfig, service-account directory).

Real sockets on the real clock (the fake runs in the test's nursery); no test waits on time.
Watches are in ``test_fake_kube_watch.py``, kubectl in ``test_fake_kube_kubectl.py``.
"""

from __future__ import annotations

import base64
import ssl
from pathlib import Path

import pytest
import trio
import trustme
import yaml

from tests.support.fake_kube import FakeKube, JsonObject, KubeError, running_fake_kube
from tests.support.fake_kube_client import KubeClient
from tests.support.fake_kube_match import merge_patch, strategic_merge_patch

ING = "/apis/networking.k8s.io/v1"
APPS = "/apis/apps/v1"


def ingress(name: str, namespace: str = "default", **labels: str) -> JsonObject:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"rules": [{"host": f"{name}.example"}]},
    }


def deployment(name: str, replicas: int = 1) -> JsonObject:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}},
    }


def names(listing: JsonObject) -> list[str]:
    return [item["metadata"]["name"] for item in listing["items"]]


async def test_discovery_documents(nursery: trio.Nursery) -> None:
    async with running_fake_kube(nursery) as kube:
        client = KubeClient(kube)
        status, core = await client.request("GET", "/api")
        assert (status, core["kind"], core["versions"]) == (200, "APIVersions", ["v1"])
        _, groups = await client.request("GET", "/apis")
        served = {g["name"]: g["preferredVersion"]["groupVersion"] for g in groups["groups"]}
        assert served == {
            "networking.k8s.io": "networking.k8s.io/v1",
            "discovery.k8s.io": "discovery.k8s.io/v1",
            "apps": "apps/v1",
            "a3s-gateway.io": "a3s-gateway.io/v1alpha1",
            "apiextensions.k8s.io": "apiextensions.k8s.io/v1",
        }
        _, apps = await client.request("GET", APPS)
        by_name = {r["name"]: r for r in apps["resources"]}
        assert by_name["deployments"]["kind"] == "Deployment"
        assert by_name["deployments"]["namespaced"] is True
        assert "watch" in by_name["deployments"]["verbs"]
        assert by_name["deployments"]["shortNames"] == ["deploy"]
        assert by_name["statefulsets/scale"]["kind"] == "Scale"
        assert by_name["deployments/scale"]["group"] == "autoscaling"
        _, crd = await client.request("GET", "/apis/a3s-gateway.io/v1alpha1")
        (route,) = crd["resources"]
        assert (route["name"], route["kind"], route["shortNames"]) == (
            "ingressroutes",
            "IngressRoute",
            ["ir"],
        )
        _, core_v1 = await client.request("GET", "/api/v1")
        scopes = {r["name"]: r["namespaced"] for r in core_v1["resources"]}
        assert scopes["namespaces"] is False
        assert scopes["secrets"] is True
        _, version = await client.request("GET", "/version")
        assert (version["major"], version["minor"]) == ("1", "32")
        status, missing = await client.request("GET", "/apis/example.com/v1")
        assert (status, missing["kind"], missing["reason"]) == (404, "Status", "NotFound")


async def test_list_all_namespaces_and_one(nursery: trio.Nursery) -> None:
    async with running_fake_kube(nursery) as kube:
        kube.apply(ingress("b", "shop"))
        kube.apply(ingress("a", "shop"))
        kube.apply(ingress("c", "default"))
        client = KubeClient(kube)
        status, everything = await client.request("GET", f"{ING}/ingresses")
        assert status == 200
        assert everything["kind"] == "IngressList"
        assert everything["apiVersion"] == "networking.k8s.io/v1"
        assert everything["metadata"]["resourceVersion"] == kube.resource_version
        assert names(everything) == ["c", "a", "b"]  # by namespace, then name
        # built-in items come without kind/apiVersion, as from the real server
        assert "kind" not in everything["items"][0]
        _, shop = await client.request("GET", f"{ING}/namespaces/shop/ingresses")
        assert names(shop) == ["a", "b"]
        _, nothing = await client.request("GET", f"{ING}/namespaces/empty/ingresses")
        assert nothing["items"] == []


async def test_custom_resource_list_items_keep_their_kind(nursery: trio.Nursery) -> None:
    async with running_fake_kube(nursery) as kube:
        kube.apply({
            "apiVersion": "a3s-gateway.io/v1alpha1",
            "kind": "IngressRoute",
            "metadata": {"name": "r", "namespace": "default"},
            "spec": {"routes": []},
        })  # fmt: skip
        _, listing = await KubeClient(kube).request(
            "GET", "/apis/a3s-gateway.io/v1alpha1/ingressroutes"
        )
        assert listing["kind"] == "IngressRouteList"
        assert listing["items"][0]["kind"] == "IngressRoute"


async def test_apply_fills_the_server_metadata(nursery: trio.Nursery) -> None:
    async with running_fake_kube(nursery) as kube:
        first = kube.apply(ingress("web"))
        meta = first["metadata"]
        assert meta["resourceVersion"] == kube.resource_version
        assert meta["generation"] == 1
        assert len(meta["uid"]) == 36
        assert meta["creationTimestamp"].endswith("Z")
        relabelled = kube.apply(ingress("web", app="x"))
        assert int(relabelled["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
        assert relabelled["metadata"]["uid"] == meta["uid"]
        assert relabelled["metadata"]["generation"] == 1  # metadata only: same generation
        changed = ingress("web", app="x")
        changed["spec"]["rules"] = []
        assert kube.apply(changed)["metadata"]["generation"] == 2
        other = kube.apply(ingress("other"))
        # one counter for every resource and object
        assert int(other["metadata"]["resourceVersion"]) == int(kube.resource_version)
        stored = kube.get("networking.k8s.io/v1", "ingresses", "default", "web")
        assert stored["metadata"]["generation"] == 2
        stored["spec"] = {}  # a copy: the store is not changed behind its back
        assert kube.get("networking.k8s.io/v1", "Ingress", "default", "web")["spec"]["rules"] == []
        with pytest.raises(KubeError) as raised:
            kube.get("networking.k8s.io/v1", "Ingress", "default", "nope")
        assert raised.value.code == 404


LABELLED = {"a": {"app": "web", "tier": "front"}, "b": {"app": "api"}, "c": {}, "d": {"app": "db"}}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", ["a"]),
        ("app==web", ["a"]),
        ("app!=web", ["b", "c", "d"]),
        ("app in (web,api)", ["a", "b"]),
        ("app notin (web,api)", ["c", "d"]),
        ("app", ["a", "b", "d"]),
        ("!app", ["c"]),
        ("app,tier=front", ["a"]),
        ("app in (web, db),!tier", ["d"]),
        ("", ["a", "b", "c", "d"]),
    ],
)
async def test_label_selectors(nursery: trio.Nursery, selector: str, expected: list[str]) -> None:
    async with running_fake_kube(nursery) as kube:
        for name, labels in LABELLED.items():
            kube.apply(ingress(name, **labels))
        _, listing = await KubeClient(kube).request(
            "GET", f"{ING}/ingresses", labelSelector=selector
        )
        assert names(listing) == expected


async def test_selectors_that_do_not_parse_are_400(nursery: trio.Nursery) -> None:
    async with running_fake_kube(nursery) as kube:
        client = KubeClient(kube)
        for selector in ("app in web", "a=b=c", "app in (x"):
            status, body = await client.request("GET", f"{ING}/ingresses", labelSelector=selector)
            assert (status, body["reason"]) == (400, "BadRequest"), selector
        status, body = await client.request("GET", f"{ING}/ingresses", fieldSelector="spec.rules=x")
        assert status == 400
        assert "field label not supported" in body["message"]


async def test_field_selectors(nursery: trio.Nursery) -> None:
    async with running_fake_kube(nursery) as kube:
        for name, kind in (("tls", "kubernetes.io/tls"), ("opaque", "Opaque")):
            kube.apply({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": "default"},
                "type": kind,
            })  # fmt: skip
        kube.apply(ingress("a", "shop"))
        kube.apply(ingress("b", "shop"))
        client = KubeClient(kube)
        _, tls = await client.request(
            "GET", "/api/v1/secrets", fieldSelector="type=kubernetes.io/tls"
        )
        assert names(tls) == ["tls"]
        _, one = await client.request("GET", f"{ING}/ingresses", fieldSelector="metadata.name=b")
        assert names(one) == ["b"]
        _, others = await client.request(
            "GET", f"{ING}/ingresses", fieldSelector="metadata.name!=b,metadata.namespace=shop"
        )
        assert names(others) == ["a"]


async def test_writes_at_the_real_paths(nursery: trio.Nursery) -> None:
    async with running_fake_kube(nursery) as kube:
        client = KubeClient(kube)
        path = f"{ING}/namespaces/shop/ingresses"
        status, created = await client.request("POST", path, ingress("web", "shop"))
        assert status == 201
        assert created["metadata"]["resourceVersion"] == kube.resource_version
        status, again = await client.request("POST", path, ingress("web", "shop"))
        assert (status, again["reason"]) == (409, "AlreadyExists")
        status, _wrong_ns = await client.request("POST", path, ingress("x", "other"))
        assert status == 400
        status, got = await client.request("GET", f"{path}/web")
        assert (status, got) == (200, created)
        stale = created | {"metadata": created["metadata"] | {"resourceVersion": "1"}}
        status, conflict = await client.request("PUT", f"{path}/web", stale)
        assert (status, conflict["reason"]) == (409, "Conflict")
        status, replaced = await client.request("PUT", f"{path}/web", created)
        assert status == 200
        assert replaced["metadata"]["resourceVersion"] == kube.resource_version
        status, patched = await client.request(
            "PATCH",
            f"{path}/web",
            {"metadata": {"labels": {"app": "web"}}},
            content_type="application/merge-patch+json",
        )
        assert (status, patched["metadata"]["labels"]) == (200, {"app": "web"})
        status, refused = await client.request(
            "PATCH", f"{path}/web", {}, content_type="application/json-patch+json"
        )
        assert (status, refused["reason"]) == (415, "UnsupportedMediaType")
        status, gone = await client.request("DELETE", f"{path}/web")
        assert (status, gone["metadata"]["name"]) == (200, "web")
        status, missing = await client.request("GET", f"{path}/web")
        assert (status, missing["reason"]) == (404, "NotFound")
        status, _ = await client.request("DELETE", f"{path}/web")
        assert status == 404


async def test_dry_run_stores_nothing(nursery: trio.Nursery) -> None:
    async with running_fake_kube(nursery) as kube:
        before = kube.resource_version
        status, _ = await KubeClient(kube).request(
            "POST", f"{ING}/namespaces/default/ingresses", ingress("web"), dryRun="All"
        )
        assert status == 201
        assert kube.objects("networking.k8s.io/v1", "ingresses") == []
        assert kube.resource_version == before


async def test_cluster_scoped_resources(nursery: trio.Nursery) -> None:
    async with running_fake_kube(nursery) as kube:
        kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
        client = KubeClient(kube)
        _, listing = await client.request("GET", "/api/v1/namespaces")
        assert names(listing) == ["shop"]
        status, got = await client.request("GET", "/api/v1/namespaces/shop")
        assert (status, got["kind"]) == (200, "Namespace")
        assert "namespace" not in got["metadata"]
        status, _ = await client.request("GET", f"{ING}/namespaces/shop/ingressclasses")
        assert status == 404


async def test_scale_subresource(nursery: trio.Nursery) -> None:
    async with running_fake_kube(nursery) as kube:
        kube.apply(deployment("web", 2))
        client = KubeClient(kube)
        path = f"{APPS}/namespaces/default/deployments/web/scale"
        status, scale = await client.request("GET", path)
        assert status == 200
        assert (scale["apiVersion"], scale["kind"]) == ("autoscaling/v1", "Scale")
        assert scale["spec"] == {"replicas": 2}
        assert scale["status"] == {"replicas": 2, "selector": "app=web"}
        status, scaled = await client.request(
            "PATCH",
            path,
            {"spec": {"replicas": 5}},
            content_type="application/merge-patch+json",
            fieldManager="a3s-gateway",
        )
        assert (status, scaled["spec"]["replicas"], scaled["status"]["replicas"]) == (200, 5, 5)
        stored = kube.get("apps/v1", "Deployment", "default", "web")
        assert stored["spec"]["replicas"] == 5
        assert stored["metadata"]["generation"] == 2
        (managed,) = stored["metadata"]["managedFields"]
        assert (managed["manager"], managed["subresource"]) == ("a3s-gateway", "scale")
        status, put = await client.request("PUT", path, {"spec": {"replicas": 0}})
        assert (status, put["spec"]["replicas"]) == (200, 0)
        status, invalid = await client.request(
            "PATCH",
            path,
            {"spec": {"replicas": -1}},
            content_type="application/merge-patch+json",
        )
        assert (status, invalid["reason"]) == (422, "Invalid")
        status, _ = await client.request("GET", f"{APPS}/namespaces/default/deployments/x/scale")
        assert status == 404


async def test_scale_status_can_lag(nursery: trio.Nursery) -> None:
    """With ``instant_rollout=False`` the status stays what the test wrote: the executor's
    "current" (``status.replicas``) then differs from the desired count."""
    async with running_fake_kube(nursery, instant_rollout=False) as kube:
        kube.apply({
            **deployment("db", 1),
            "kind": "StatefulSet",
            "status": {"replicas": 1},
        })  # fmt: skip
        path = f"{APPS}/namespaces/default/statefulsets/db/scale"
        _, scaled = await KubeClient(kube).request(
            "PATCH", path, {"spec": {"replicas": 3}}, content_type="application/merge-patch+json"
        )
        assert (scaled["spec"]["replicas"], scaled["status"]["replicas"]) == (3, 1)


async def test_authentication(nursery: trio.Nursery, tmp_path: Path) -> None:
    async with running_fake_kube(nursery, tmp_path) as kube:
        for credential in ("token", "cert"):
            status, _ = await KubeClient(kube, credential).request("GET", f"{ING}/ingresses")
            assert status == 200, credential
        status, body = await KubeClient(kube, "none").request("GET", f"{ING}/ingresses")
        assert (status, body["kind"], body["reason"]) == (401, "Status", "Unauthorized")
        status, _ = await KubeClient(kube, "none", token="not-the-token").request("GET", "/api")
        assert status == 401
        log = kube.requests
        assert [r.auth for r in log] == ["token", "cert", "none", "bad-token"]
        assert kube.token not in repr(log) + repr(kube)


async def test_a_client_certificate_from_another_ca_is_refused(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with running_fake_kube(nursery, tmp_path) as kube:
        stranger = trustme.CA().issue_cert("fake-kube-admin")
        context = ssl.create_default_context(cafile=str(kube.ca_file))
        stranger.configure_cert(context)
        tcp = await trio.open_tcp_stream(kube.host, kube.port)
        stream = trio.SSLStream(tcp, context, server_hostname="localhost")

        async def talk() -> None:
            await stream.do_handshake()
            # TLS 1.3: the client's handshake ends first; the server's alert comes next
            await stream.send_all(b"GET /api HTTP/1.1\r\nhost: x\r\n\r\n")
            await stream.receive_some(1024)

        try:
            with pytest.raises(trio.BrokenResourceError), trio.fail_after(10):
                await talk()
        finally:
            await trio.aclose_forcefully(stream)


async def test_fail_next(nursery: trio.Nursery) -> None:
    async with running_fake_kube(nursery) as kube:
        client = KubeClient(kube)
        kube.fail_next(2, 503, path_contains="/ingresses")
        status, _ = await client.request("GET", "/api/v1/services")
        assert status == 200  # another path: not counted
        for _ in range(2):
            status, body = await client.request("GET", f"{ING}/ingresses")
            assert (status, body["kind"], body["code"]) == (503, "Status", 503)
        status, _ = await client.request("GET", f"{ING}/ingresses")
        assert status == 200
        kube.fail_next(1, 410)
        status, body = await client.request("GET", "/api")
        assert (status, body["reason"]) == (410, "Expired")
        kube.fail_next(1, 500, watch=True)
        status, _ = await client.request("GET", f"{ING}/ingresses")
        assert status == 200  # a LIST: not a watch
        async with client.watch(f"{ING}/ingresses") as stream:
            assert stream.status == 500
        status, _ = await KubeClient(kube, "none").request("GET", "/api")
        assert status == 401  # credentials are checked before injected failures


async def test_the_request_log(nursery: trio.Nursery) -> None:
    async with running_fake_kube(nursery) as kube:
        client = KubeClient(kube, "cert")
        await client.request("GET", f"{ING}/ingresses", labelSelector="app=web", limit="10")
        await client.request(
            "PATCH", f"{APPS}/namespaces/default/deployments/x/scale", {},
            content_type="application/merge-patch+json", fieldManager="a3s-gateway",
        )  # fmt: skip
        first, second = kube.requests
        assert (first.method, first.path, first.auth) == ("GET", f"{ING}/ingresses", "cert")
        assert first.query == {"labelSelector": "app=web", "limit": "10"}
        assert not first.watch
        assert second.content_type == "application/merge-patch+json"
        assert second.query["fieldManager"] == "a3s-gateway"


async def test_unknown_paths_and_methods(nursery: trio.Nursery) -> None:
    async with running_fake_kube(nursery) as kube:
        client = KubeClient(kube)
        for path in ("/nope", "/api/v1/widgets", f"{ING}/namespaces/a/ingresses/b/status"):
            status, body = await client.request("GET", path)
            assert (status, body["kind"]) == (404, "Status"), path
        status, _ = await client.request("DELETE", f"{ING}/ingresses")
        assert status == 405
        status, body = await client.request("GET", "/healthz")
        assert (status, body) == (200, {"text": "ok"})


async def test_kubeconfig_and_service_account_files(nursery: trio.Nursery, tmp_path: Path) -> None:
    async with running_fake_kube(nursery, tmp_path / "kube") as kube:
        with_token = yaml.safe_load(kube.kubeconfig(tmp_path / "a", namespace="shop").read_text())
        cluster = with_token["clusters"][0]["cluster"]
        assert cluster["server"] == kube.url == f"https://127.0.0.1:{kube.port}"
        assert base64.b64decode(cluster["certificate-authority-data"]) == kube.ca_pem
        assert with_token["users"][0]["user"] == {"token": kube.token}
        assert with_token["contexts"][0]["context"]["namespace"] == "shop"
        assert with_token["current-context"] == with_token["contexts"][0]["name"]
        with_cert = yaml.safe_load(kube.kubeconfig(tmp_path / "b", auth="cert").read_text())
        user = with_cert["users"][0]["user"]
        assert base64.b64decode(user["client-certificate-data"]) == kube.client_cert_pem
        assert base64.b64decode(user["client-key-data"]) == kube.client_key_pem
        account = kube.service_account_dir
        assert (account / "token").read_text() == kube.token_file.read_text() == kube.token
        assert (account / "ca.crt").read_bytes() == kube.ca_file.read_bytes() == kube.ca_pem
        assert (account / "namespace").read_text() == "default"
        assert kube.in_cluster_env() == {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(kube.port),
        }


def test_merge_patch_follows_rfc_7386() -> None:
    # the examples of RFC 7386 §3
    target = {"a": "b", "c": {"d": "e", "f": "g"}}
    assert merge_patch(target, {"a": "z", "c": {"f": None}}) == {"a": "z", "c": {"d": "e"}}
    assert merge_patch({"a": ["b"]}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": "foo"}, None) is None
    assert merge_patch({"e": None}, {"a": 1}) == {"e": None, "a": 1}
    assert target == {"a": "b", "c": {"d": "e", "f": "g"}}  # not changed in place


def test_strategic_merge_patch_merges_keyed_lists() -> None:
    current = {"ports": [{"name": "http", "port": 80}, {"name": "admin", "port": 9000}]}
    patch = {
        "$setElementOrder/ports": [{"name": "http"}, {"name": "https"}],
        "ports": [{"name": "https", "port": 443}, {"name": "admin", "$patch": "delete"}],
    }
    assert strategic_merge_patch(current, patch) == {
        "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]
    }
    assert strategic_merge_patch({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}
    assert strategic_merge_patch({"f": ["x", "y"]}, {"$deleteFromPrimitiveList/f": ["x"]}) == {
        "f": ["y"]
    }


def test_the_fake_is_not_the_gateway() -> None:
    """A guard for the module docstring's promise: the fake imports nothing from ``src/``."""
    for module in ("fake_kube", "fake_kube_api", "fake_kube_match", "fake_kube_router",
                   "fake_kube_store", "fake_kube_client", "fake_kube_kubectl"):  # fmt: skip
        text = (Path(__file__).parents[1] / "support" / f"{module}.py").read_text()
        assert "a3s_gateway" not in text, module


def test_control_methods_validate_their_arguments(tmp_path: Path) -> None:
    kube = FakeKube(tmp_path)  # not serving: the controls work on the store alone
    with pytest.raises(KubeError):
        kube.apply({"apiVersion": "v1", "kind": "Widget", "metadata": {"name": "x"}})
    with pytest.raises(KubeError):
        kube.apply({"apiVersion": "v1", "kind": "Service", "metadata": {}})
    with pytest.raises(KubeError):
        kube.delete("v1", "services", "default", "missing")
    assert kube.apply(deployment("x"))["status"]["replicas"] == 1
