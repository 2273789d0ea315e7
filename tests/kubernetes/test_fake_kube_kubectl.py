"""The fake Kubernetes API server against the real ``kubectl`` (v1.32 here): if kubectl's
discovery, listing, selectors, client-side apply, watch, scale and error handling work against
the fake, the fake speaks enough of the real API for the provider's tests to mean something.

kubectl runs as a subprocess (bounded by ``KUBECTL_WAIT``, killed at the end) with a kubeconfig
the fake wrote, with the bearer token or the client certificate; the fake runs in the test's
nursery (or in a thread for the synchronous test). A missing kubectl fails under ``CI=true`` and
skips otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

import pytest
import trio
import yaml

from tests.support.fake_kube import JsonObject, fake_kube_in_thread, running_fake_kube
from tests.support.fake_kube_kubectl import Kubectl, parse_json_stream

FIXTURES: Final = Path(__file__).parents[1] / "fixtures" / "kubernetes"

pytestmark = pytest.mark.integration


def ingress(name: str, namespace: str = "default", **labels: str) -> JsonObject:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"rules": [{"host": f"{name}.example"}]},
    }


def printed_names(output: bytes) -> list[str]:
    """The names in ``kubectl get -o name`` output (``kind.group/name`` lines)."""
    return sorted(line.rsplit("/", 1)[1] for line in output.decode().split())


@pytest.mark.parametrize("auth", ["token", "cert"])
async def test_get_lists_what_the_fake_holds(
    nursery: trio.Nursery, tmp_path: Path, auth: Literal["token", "cert"]
) -> None:
    async with running_fake_kube(nursery, tmp_path / "kube") as kube:
        kube.apply(ingress("web", "shop"))
        kube.apply(ingress("api", "default"))
        kubectl = Kubectl(kube, tmp_path, auth=auth)
        done = await kubectl.run("get", "ingresses", "-A", "-o", "json")
        assert done.returncode == 0, done.stderr
        listing = yaml.safe_load(done.stdout)
        held = {(i["metadata"]["namespace"], i["metadata"]["name"]) for i in listing["items"]}
        assert held == {("shop", "web"), ("default", "api")}
        assert {r.auth for r in kube.requests} == {auth}
        done = await kubectl.run("get", "ingresses", "-o", "name")  # the kubeconfig's namespace
        assert printed_names(done.stdout) == ["api"]


async def test_apply_creates_then_patches(nursery: trio.Nursery, tmp_path: Path) -> None:
    async with running_fake_kube(nursery, tmp_path / "kube") as kube:
        kubectl = Kubectl(kube, tmp_path)
        files = [
            "namespace-shop.yaml",
            "service-web.yaml",
            "ingress-web.yaml",
            "ingressroute-web.yaml",
        ]
        args = [arg for name in files for arg in ("-f", str(FIXTURES / name))]
        done = await kubectl.run("apply", *args)
        assert done.returncode == 0, done.stderr
        assert b"ingressroute.a3s-gateway.io/web created" in done.stdout
        route = kube.get("a3s-gateway.io/v1alpha1", "IngressRoute", "shop", "web")
        sample = yaml.safe_load((FIXTURES / "ingressroute-web.yaml").read_text())
        assert route["spec"] == sample["spec"]
        assert (
            "kubectl.kubernetes.io/last-applied-configuration" in route["metadata"]["annotations"]
        )
        assert kube.get("networking.k8s.io/v1", "Ingress", "shop", "web")["spec"]["tls"]
        # a second apply with changes: PATCHes (strategic for built-ins, merge for the CRD)
        sample["spec"]["routes"][0]["priority"] = 60
        service = yaml.safe_load((FIXTURES / "service-web.yaml").read_text())
        service["spec"]["ports"].append({"name": "https", "port": 443, "targetPort": 8443})
        changed = tmp_path / "changed.yaml"
        changed.write_text(yaml.safe_dump_all([sample, service]))
        done = await kubectl.run("apply", "-f", str(changed))
        assert done.returncode == 0, done.stderr
        route = kube.get("a3s-gateway.io/v1alpha1", "ingressroutes", "shop", "web")
        assert route["spec"]["routes"][0]["priority"] == 60
        assert route["metadata"]["generation"] == 2
        ports = kube.get("v1", "services", "shop", "web")["spec"]["ports"]
        assert [p["name"] for p in ports] == ["http", "admin", "https"]
        patches = {
            r.path.rsplit("/", 2)[1]: r.content_type for r in kube.requests if r.method == "PATCH"
        }
        assert patches == {
            "ingressroutes": "application/merge-patch+json",
            "services": "application/strategic-merge-patch+json",
        }


async def test_watch_sees_the_fakes_events(nursery: trio.Nursery, tmp_path: Path) -> None:
    async with running_fake_kube(nursery, tmp_path / "kube") as kube:
        kube.apply(ingress("a"))
        kubectl = Kubectl(kube, tmp_path)
        watch_args = ("get", "ingresses", "-A", "--watch", "-o", "json", "--output-watch-events")
        async with kubectl.open_watch(*watch_args) as watch:
            assert [e["type"] for e in await watch.documents(1)] == ["ADDED"]
            await kube.wait_for_watch("ingresses")
            kube.apply(ingress("b", "shop"))
            kube.apply(ingress("a", app="x"))
            kube.delete("networking.k8s.io/v1", "ingresses", "shop", "b")
            events = await watch.documents(4)
        seen = [(e["type"], e["object"]["metadata"]["name"]) for e in events]
        assert seen == [("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
        assert events[2]["object"]["metadata"]["labels"] == {"app": "x"}


async def test_scale_patches_the_scale_subresource(nursery: trio.Nursery, tmp_path: Path) -> None:
    async with running_fake_kube(nursery, tmp_path / "kube") as kube:
        kube.apply(yaml.safe_load((FIXTURES / "deployment-web.yaml").read_text()))
        kubectl = Kubectl(kube, tmp_path, namespace="shop")
        done = await kubectl.run("scale", "deployment/web", "--replicas=3")
        assert done.returncode == 0, done.stderr
        assert kube.get("apps/v1", "Deployment", "shop", "web")["spec"]["replicas"] == 3
        (patch,) = [r for r in kube.requests if r.method == "PATCH"]
        assert patch.path == "/apis/apps/v1/namespaces/shop/deployments/web/scale"
        assert patch.content_type == "application/merge-patch+json"
        done = await kubectl.run("get", "deployment", "web", "-o", "jsonpath={.status.replicas}")
        assert done.stdout == b"3"


SELECTED: Final = {"a": {"app": "web", "tier": "front"}, "b": {"app": "api"}, "c": {}}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", ["a"]),
        ("app!=web", ["b", "c"]),
        ("app in (web,api)", ["a", "b"]),
        ("app notin (web)", ["b", "c"]),
        ("app", ["a", "b"]),
        ("!app", ["c"]),
        ("app,tier=front", ["a"]),
    ],
)
async def test_label_selectors_match_the_fakes_filtering(
    nursery: trio.Nursery, tmp_path: Path, selector: str, expected: list[str]
) -> None:
    async with running_fake_kube(nursery, tmp_path / "kube") as kube:
        for name, labels in SELECTED.items():
            kube.apply(ingress(name, **labels))
        done = await Kubectl(kube, tmp_path).run("get", "ingresses", "-l", selector, "-o", "name")
        assert done.returncode == 0, done.stderr
        assert printed_names(done.stdout) == expected
        (listing,) = [r for r in kube.requests if r.path.endswith("/ingresses")]
        assert listing.query["labelSelector"] == selector


async def test_short_names_and_delete(nursery: trio.Nursery, tmp_path: Path) -> None:
    async with running_fake_kube(nursery, tmp_path / "kube") as kube:
        kube.apply(yaml.safe_load((FIXTURES / "ingressroute-minimal.yaml").read_text()))
        kubectl = Kubectl(kube, tmp_path)
        done = await kubectl.run("get", "ir", "-o", "name")
        assert done.stdout.decode().split() == ["ingressroute.a3s-gateway.io/minimal"]
        done = await kubectl.run("delete", "ingressroute", "minimal", "--wait=false")
        assert done.returncode == 0, done.stderr
        assert kube.objects("a3s-gateway.io/v1alpha1", "IngressRoute") == []


async def test_a_wrong_token_is_unauthorized(nursery: trio.Nursery, tmp_path: Path) -> None:
    async with running_fake_kube(nursery, tmp_path / "kube") as kube:
        done = await Kubectl(kube, tmp_path, token="wrong-token").run("get", "ingresses")
        assert done.returncode == 1
        # "(the server has asked for the client to provide credentials)" when the 401 comes
        # during discovery, "(Unauthorized)" when kubectl had discovery cached
        assert b"error: You must be logged in to the server (" in done.stderr
        assert {r.auth for r in kube.requests} == {"bad-token"}


def test_kubectl_against_the_server_in_a_thread(tmp_path: Path) -> None:
    with fake_kube_in_thread(tmp_path / "kube") as kube:
        kube.apply(ingress("web"))
        done = Kubectl(kube, tmp_path, auth="cert").run_blocking("get", "ingresses", "-o", "json")
        assert done.returncode == 0, done.stderr
        (listing,) = parse_json_stream(done.stdout.decode())
        assert [i["metadata"]["name"] for i in listing["items"]] == ["web"]
