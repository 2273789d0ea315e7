"""The Kubernetes provider against the fake HTTPS API server (tests/support/fake_kube.py; SPEC
§10.6): the initial LIST, ADDED/MODIFIED/DELETED followed, a dropped watch resumed from the last
resource version, 410 (as an ERROR event and as an HTTP status) followed by a new LIST, token,
client-certificate and in-cluster access, and an unauthorized client recorded as an error and
retried with backoff. Real sockets, real clock: every wait is bounded; the retries after a drop
take the first backoff step (1 s)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import msgspec
import pytest
import trio

from a3s_gateway.config.schema import KubernetesProvider
from a3s_gateway.providers.dynamic import Snapshot
from a3s_gateway.providers.kubernetes import KubernetesDiscovery
from tests.support.fake_kube import FakeKube, running_fake_kube

Json = dict[str, Any]
WAIT = 10.0


def an_ingress(name: str, host: str, service: str = "web") -> Json:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "rules": [
                {
                    "host": host,
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": service, "port": {"number": 80}}},
                            }
                        ]
                    },
                }
            ]
        },
    }


WEB: Json = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
}


def web_slice(*addresses: str) -> Json:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "web-1",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "web"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
    }


class Published:
    def __init__(self) -> None:
        self.snapshots: list[Snapshot] = []

    def __call__(self, snapshot: Snapshot) -> None:
        self.snapshots.append(snapshot)

    def rules(self) -> list[str]:
        if not self.snapshots:
            return []
        return sorted(router.rule for router in self.snapshots[-1].routers.values())

    def servers(self) -> list[str]:
        balancer = self.snapshots[-1].services["k8s-default-web-80"].load_balancer
        assert balancer is not None
        return [server.url.text for server in balancer.servers]

    async def until(self, condition: Callable[[], bool]) -> None:
        with trio.fail_after(WAIT):
            while not condition():  # noqa: ASYNC110 -- the provider's output has no event
                await trio.sleep(0.02)


def host_rule(host: str) -> str:
    return f"Host(`{host}`) && PathPrefix(`/`)"


def settings(**fields: object) -> KubernetesProvider:
    return msgspec.convert({"watch_interval_secs": 3600, **fields}, KubernetesProvider)


@asynccontextmanager
async def provider_for(
    kube: FakeKube,
    config: KubernetesProvider,
    **options: Any,
) -> AsyncIterator[tuple[KubernetesDiscovery, Published]]:
    provider = KubernetesDiscovery(config, **options)
    published = Published()
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, published)
        yield provider, published
        nursery.cancel_scope.cancel()


def seed(kube: FakeKube) -> None:
    kube.apply(WEB)
    kube.apply(web_slice("10.0.0.1"))
    kube.apply(an_ingress("a", "a.test"))


def watches(kube: FakeKube, plural: str) -> list[str]:
    """The resourceVersion of every WATCH request on ``plural``, in order."""
    return [
        r.query.get("resourceVersion", "")
        for r in kube.requests
        if r.watch and r.path.endswith(f"/{plural}")
    ]


async def dropped(provider: KubernetesDiscovery, kube: FakeKube) -> None:
    """Drop every watch and wait until the provider saw its Ingress watch break (the fake
    still sends what was queued before it closes a stream)."""
    details = provider.status.details["resources"]
    assert isinstance(details, dict)
    assert kube.drop_watches() >= 1
    with trio.fail_after(WAIT):
        while "last_error" not in details["ingresses"]:  # noqa: ASYNC110 -- status: no event
            await trio.sleep(0.01)


def lists(kube: FakeKube, plural: str) -> int:
    return sum(1 for r in kube.requests if not r.watch and r.path.endswith(f"/{plural}"))


async def test_token_kubeconfig_lists_then_follows_changes(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with running_fake_kube(nursery, tmp_path) as kube:
        seed(kube)
        config = settings(kubeconfig=str(kube.kubeconfig(tmp_path / "k.yaml")))
        async with provider_for(kube, config) as (provider, published):
            await published.until(lambda: published.rules() == [host_rule("a.test")])
            assert published.servers() == ["http://10.0.0.1:8080"]
            assert provider.status.state == "ok"
            api = f"kubeconfig {tmp_path / 'k.yaml'} (context fake): {kube.url}"
            assert provider.status.details["api"] == api
            with trio.fail_after(WAIT):
                await kube.wait_for_watch("ingresses")
                await kube.wait_for_watch("endpointslices")
            kube.apply(an_ingress("b", "b.test"))
            await published.until(lambda: host_rule("b.test") in published.rules())
            kube.apply(an_ingress("b", "c.test"))
            kube.apply(web_slice("10.0.0.1", "10.0.0.2"))
            await published.until(
                lambda: (
                    published.rules() == [host_rule("a.test"), host_rule("c.test")]
                    and published.servers() == ["http://10.0.0.1:8080", "http://10.0.0.2:8080"]
                )
            )
            kube.delete("networking.k8s.io/v1", "Ingress", "default", "a")
            await published.until(lambda: published.rules() == [host_rule("c.test")])
            assert {r.auth for r in kube.requests} == {"token"}
            secrets = [r for r in kube.requests if r.path == "/api/v1/secrets"]
            assert secrets
            assert {r.query["fieldSelector"] for r in secrets} == {"type=kubernetes.io/tls"}


async def test_a_dropped_watch_resumes_from_the_last_version(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with running_fake_kube(nursery, tmp_path) as kube:
        seed(kube)
        config = settings(kubeconfig=str(kube.kubeconfig(tmp_path / "k.yaml")))
        async with provider_for(kube, config) as (provider, published):
            with trio.fail_after(WAIT):
                await kube.wait_for_watch("ingresses")
            kube.apply(an_ingress("b", "b.test"))
            await published.until(lambda: host_rule("b.test") in published.rules())
            seen = kube.resource_version
            await dropped(provider, kube)
            kube.apply(an_ingress("c", "c.test"))  # while nobody watches: replayed on resume
            await published.until(lambda: host_rule("c.test") in published.rules())
            assert watches(kube, "ingresses")[-1] == seen
            assert lists(kube, "ingresses") == 1


@pytest.mark.parametrize("expired_as", ["event", "status"])
async def test_410_lists_again(
    nursery: trio.Nursery, tmp_path: Path, expired_as: Literal["event", "status"]
) -> None:
    async with running_fake_kube(nursery, tmp_path, expired_as=expired_as) as kube:
        seed(kube)
        config = settings(kubeconfig=str(kube.kubeconfig(tmp_path / "k.yaml")))
        async with provider_for(kube, config) as (provider, published):
            await published.until(lambda: published.rules() == [host_rule("a.test")])
            with trio.fail_after(WAIT):
                await kube.wait_for_watch("ingresses")
            await dropped(provider, kube)
            # Within the 1 s backoff: changes the watchers miss, then the log is compacted,
            # so resuming from their version is 410 Gone.
            kube.apply(an_ingress("d", "d.test"))
            kube.compact()
            await published.until(lambda: host_rule("d.test") in published.rules())
            assert lists(kube, "ingresses") == 2
            with trio.fail_after(WAIT):
                await kube.wait_for_watch("ingresses")
            kube.apply(an_ingress("e", "e.test"))
            await published.until(lambda: host_rule("e.test") in published.rules())


async def test_client_certificate_kubeconfig(nursery: trio.Nursery, tmp_path: Path) -> None:
    async with running_fake_kube(nursery, tmp_path) as kube:
        seed(kube)
        config = settings(kubeconfig=str(kube.kubeconfig(tmp_path / "k.yaml", auth="cert")))
        async with provider_for(kube, config) as (_, published):
            await published.until(lambda: published.rules() == [host_rule("a.test")])
        assert {r.auth for r in kube.requests} == {"cert"}


async def test_in_cluster_access(nursery: trio.Nursery, tmp_path: Path) -> None:
    async with running_fake_kube(nursery, tmp_path) as kube:
        seed(kube)
        options = {
            "service_account_dir": kube.service_account_dir,
            "environ": kube.in_cluster_env(),
        }
        async with provider_for(kube, settings(), **options) as (provider, published):
            await published.until(lambda: published.rules() == [host_rule("a.test")])
            assert provider.status.details["api"] == f"in-cluster: {kube.url}"
        assert {r.auth for r in kube.requests} == {"token"}


async def test_namespace_and_label_selector(nursery: trio.Nursery, tmp_path: Path) -> None:
    async with running_fake_kube(nursery, tmp_path) as kube:
        seed(kube)
        labelled = an_ingress("l", "l.test")
        labelled["metadata"]["labels"] = {"app": "shop"}
        kube.apply(labelled)
        elsewhere = an_ingress("o", "o.test")
        elsewhere["metadata"] = {"name": "o", "namespace": "other", "labels": {"app": "shop"}}
        kube.apply(elsewhere)
        config = settings(
            kubeconfig=str(kube.kubeconfig(tmp_path / "k.yaml")),
            namespace="default",
            label_selector="app=shop",
        )
        async with provider_for(kube, config) as (_, published):
            await published.until(lambda: bool(published.snapshots))
            assert published.rules() == [host_rule("l.test")]
            assert published.servers() == ["http://10.0.0.1:8080"]  # Services: not filtered


async def test_unauthorized_is_an_error_retried_with_backoff(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with running_fake_kube(nursery, tmp_path) as kube:
        seed(kube)
        path = kube.kubeconfig(tmp_path / "k.yaml", token="wrong")
        async with provider_for(kube, settings(kubeconfig=str(path))) as (provider, published):
            with trio.fail_after(WAIT):
                await kube.wait_for(lambda: lists(kube, "services") >= 2)
            assert provider.status.state == "error"
            assert provider.status.last_error is not None
            assert "HTTP 401: Unauthorized" in provider.status.last_error
            assert "wrong" not in provider.status.last_error
            assert published.snapshots == []
            assert {r.auth for r in kube.requests} == {"bad-token"}
        assert lists(kube, "services") < 8  # 1 s, 2 s, ... not a tight loop
