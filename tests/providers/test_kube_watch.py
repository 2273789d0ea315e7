"""The Kubernetes provider's watch loops (providers/kubernetes.py, SPEC §10.6) against an
injected in-memory API client, in virtual time (``autojump_clock``): the first publish waits for
every LIST, events change the snapshot, bookmarks move the resource version, 410 re-LISTs,
failures back off 1 s doubling to 30 s and reset after a healthy stream, a WATCH that ends at
once without events backs off too (no hot loop), the full re-LIST every
``watch_interval_secs``, IngressRoutes and Secrets refused (404, 403) counting as empty while
Ingresses are published, and TLS Secrets keeping their data only while named (a newly named
one LISTed again, publishing waiting for it). The same loops against a real HTTPS fake API
server: ``test_kube_fake_server.py``."""

from __future__ import annotations

import base64
import itertools
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
import trustme

from a3s_gateway.config.schema import KubernetesProvider
from a3s_gateway.providers.dynamic import DynamicProvider, Snapshot
from a3s_gateway.providers.kube_api import KubeApiError, KubeList, WatchEvent
from a3s_gateway.providers.kube_backends import DATA_NOT_KEPT
from a3s_gateway.providers.kubernetes import QUICK_END, KubernetesDiscovery, watched_resources

Json = dict[str, Any]

INGRESSES = "/apis/networking.k8s.io/v1/ingresses"
SERVICES = "/api/v1/services"
SLICES = "/apis/discovery.k8s.io/v1/endpointslices"
SECRETS = "/api/v1/secrets"
ROUTES = "/apis/a3s-gateway.io/v1alpha1/ingressroutes"

_End = object()


class FakeApi:
    """An API client whose LISTs answer from ``objects`` and whose WATCH streams the test feeds
    (``send``, ``end``, ``break_stream``); it records every call with its virtual time."""

    def __init__(self) -> None:
        self.objects: dict[str, list[Json]] = {}
        self.version = 10
        self.calls: list[tuple[float, str, str, dict[str, str]]] = []
        self.list_failures: dict[str, deque[KubeApiError]] = {}
        self.watch_failures: dict[str, deque[KubeApiError]] = {}
        #: Paths whose WATCH the server accepts and ends cleanly at once, without an event.
        self.quick_ends: set[str] = set()
        self._streams: dict[str, trio.MemorySendChannel[WatchEvent | KubeApiError | object]] = {}

    def bump(self) -> str:
        self.version += 1
        return str(self.version)

    async def list_objects(
        self,
        path: str,
        query: Mapping[str, str],
        *,
        page_size: int = 500,
        shape: Callable[[Json], Json] | None = None,
    ) -> KubeList:
        await trio.lowlevel.checkpoint()
        self.calls.append((trio.current_time(), "LIST", path, {**query, "limit": str(page_size)}))
        failures = self.list_failures.get(path)
        if failures:
            raise failures.popleft()
        items = self.objects.get(path, [])
        return KubeList(tuple(items if shape is None else map(shape, items)), str(self.version))

    async def watch(
        self,
        path: str,
        query: Mapping[str, str],
        on_event: Callable[[WatchEvent], None],
        *,
        on_open: Callable[[], None] | None = None,
    ) -> None:
        self.calls.append((trio.current_time(), "WATCH", path, dict(query)))
        failures = self.watch_failures.get(path)
        if failures:
            await trio.lowlevel.checkpoint()
            raise failures.popleft()
        if on_open is not None:
            on_open()
        if path in self.quick_ends:
            now = trio.current_time()
            if sum(1 for at, *_ in self.calls if at == now) > 50:
                raise AssertionError("a hot loop: WATCH again and again at one instant")
            await trio.lowlevel.checkpoint()
            return
        send, receive = trio.open_memory_channel[WatchEvent | KubeApiError | object](100)
        self._streams[path] = send
        async with receive:
            async for item in receive:
                if isinstance(item, KubeApiError):
                    raise item
                if isinstance(item, WatchEvent):
                    on_event(item)
                else:
                    return

    def watching(self, path: str) -> bool:
        return path in self._streams

    def send(self, path: str, kind: str, obj: Json) -> None:
        self._streams[path].send_nowait(WatchEvent(type=kind, obj=obj))

    def end(self, path: str) -> None:
        self._streams.pop(path).send_nowait(_End)

    def break_stream(self, path: str, error: KubeApiError) -> None:
        self._streams.pop(path).send_nowait(error)

    def requests(self, method: str, path: str) -> list[tuple[float, dict[str, str]]]:
        return [
            (at, query) for at, kind, where, query in self.calls if (kind, where) == (method, path)
        ]


def meta(name: str, version: str, namespace: str = "default", **more: object) -> Json:
    return {"name": name, "namespace": namespace, "resourceVersion": version, **more}


def an_ingress(name: str, host: str, version: str = "1") -> Json:
    return {
        "metadata": meta(name, version),
        "spec": {
            "rules": [
                {
                    "host": host,
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": "web", "port": {"number": 80}}},
                            }
                        ]
                    },
                }
            ]
        },
    }


WEB = {"metadata": meta("web", "2"), "spec": {"ports": [{"port": 80, "targetPort": 8080}]}}


def web_slice(*addresses: str, version: str = "3") -> Json:
    return {
        "metadata": meta("web-1", version, labels={"kubernetes.io/service-name": "web"}),
        "ports": [{"port": 8080}],
        "endpoints": [{"addresses": [a]} for a in addresses],
    }


def settings(**fields: object) -> KubernetesProvider:
    return msgspec.convert(fields, KubernetesProvider)


class Published:
    def __init__(self) -> None:
        self.snapshots: list[Snapshot] = []

    def __call__(self, snapshot: Snapshot) -> None:
        self.snapshots.append(snapshot)

    @property
    def last(self) -> Snapshot:
        return self.snapshots[-1]

    def hosts(self) -> list[str]:
        return sorted(router.rule for router in self.last.routers.values())


def servers(snapshot: Snapshot, name: str = "k8s-default-web-80") -> list[str]:
    balancer = snapshot.services[name].load_balancer
    assert balancer is not None
    return [server.url.text for server in balancer.servers]


def state_of(provider: KubernetesDiscovery) -> str:
    return provider.status.state


async def started(
    nursery: trio.Nursery, api: FakeApi, config: KubernetesProvider | None = None
) -> tuple[KubernetesDiscovery, Published]:
    provider = KubernetesDiscovery(config or settings(), client=api)
    published = Published()
    await nursery.start(provider.run, published)
    await trio.testing.wait_all_tasks_blocked()
    return provider, published


def test_it_is_a_dynamic_provider() -> None:
    provider: DynamicProvider = KubernetesDiscovery(settings(), client=FakeApi())
    assert provider.status.name == "kubernetes"
    assert provider.status.state == "starting"


async def test_unusable_access_is_an_error(nursery: trio.Nursery, tmp_path: Path) -> None:
    provider = KubernetesDiscovery(settings(), service_account_dir=tmp_path, environ={})
    published = Published()
    await nursery.start(provider.run, published)
    # (real clock: the access is loaded in a worker thread)
    with trio.fail_after(10):
        while provider.status.errors < 1:  # noqa: ASYNC110 -- a thread's result: no event
            await trio.sleep(0.01)
    assert state_of(provider) == "error"
    assert provider.status.last_error == (
        "API access: no API server: KUBERNETES_SERVICE_HOST is unset (not in a pod); set "
        "providers.kubernetes.kubeconfig or api_server"
    )
    assert published.snapshots == []


def test_the_watched_resources_follow_the_settings() -> None:
    every = watched_resources(settings(ingress_route_crd=True))
    assert [r.kind for r in every] == [
        "Ingress",
        "Service",
        "EndpointSlice",
        "Secret",
        "IngressRoute",
    ]
    fewest = watched_resources(settings(ingress=False, use_endpoints=False))
    assert [r.kind for r in fewest] == ["Service", "Secret"]
    ingress = every[0]
    assert ingress.path("") == INGRESSES
    assert ingress.path("team a") == "/apis/networking.k8s.io/v1/namespaces/team%20a/ingresses"
    assert ingress.query("app=web") == {"labelSelector": "app=web"}
    assert every[1].query("app=web") == {}
    assert every[3].query("app=web") == {"fieldSelector": "type=kubernetes.io/tls"}
    assert every[4].query("app=web") == {"labelSelector": "app=web"}


async def test_first_publish_waits_for_every_list_then_follows_events(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    api = FakeApi()
    api.objects = {
        INGRESSES: [an_ingress("a", "a.test")],
        SERVICES: [WEB],
        SLICES: [web_slice("10.0.0.1")],
    }
    api.list_failures[SECRETS] = deque([KubeApiError("LIST secrets: HTTP 500: etcd", status=500)])
    provider, published = await started(nursery, api)
    assert published.snapshots == []
    assert state_of(provider) == "error"
    assert provider.status.last_error == "Secret: LIST secrets: HTTP 500: etcd"
    await trio.sleep(1.5)  # the secrets LIST is retried after 1 s
    assert [at for at, _ in api.requests("LIST", SECRETS)] == [0.0, 1.0]
    assert len(published.snapshots) == 1
    assert state_of(provider) == "ok"
    assert published.hosts() == ["Host(`a.test`) && PathPrefix(`/`)"]
    assert servers(published.last) == ["http://10.0.0.1:8080"]

    api.send(INGRESSES, "ADDED", an_ingress("b", "b.test", api.bump()))
    await trio.testing.wait_all_tasks_blocked()
    assert published.hosts() == [
        "Host(`a.test`) && PathPrefix(`/`)",
        "Host(`b.test`) && PathPrefix(`/`)",
    ]
    api.send(INGRESSES, "MODIFIED", an_ingress("b", "c.test", api.bump()))
    api.send(SLICES, "MODIFIED", web_slice("10.0.0.1", "10.0.0.2", version=api.bump()))
    await trio.testing.wait_all_tasks_blocked()
    assert published.hosts() == [
        "Host(`a.test`) && PathPrefix(`/`)",
        "Host(`c.test`) && PathPrefix(`/`)",
    ]
    assert servers(published.last) == ["http://10.0.0.1:8080", "http://10.0.0.2:8080"]
    count = len(published.snapshots)
    assert count == 3  # (the two events that came together made one snapshot)
    api.send(INGRESSES, "DELETED", an_ingress("a", "a.test", api.bump()))
    await trio.testing.wait_all_tasks_blocked()
    assert published.hosts() == ["Host(`c.test`) && PathPrefix(`/`)"]
    api.send(SERVICES, "MODIFIED", {**WEB, "metadata": meta("web", api.bump())})
    await trio.testing.wait_all_tasks_blocked()
    assert len(published.snapshots) == count + 1  # an unchanged snapshot is not published
    details = provider.status.details["resources"]
    assert isinstance(details, dict)
    assert details["ingresses"]["objects"] == 1
    assert details["ingresses"]["resource_version"] == str(api.version - 1)


async def test_watches_resume_from_the_last_version_and_bookmarks(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    api = FakeApi()
    await started(nursery, api)
    first = api.requests("WATCH", INGRESSES)
    assert first[0][1] == {
        "watch": "1",
        "resourceVersion": "10",
        "allowWatchBookmarks": "true",
        "timeoutSeconds": "300",
    }
    api.send(INGRESSES, "BOOKMARK", {"metadata": {"resourceVersion": "25"}})
    api.end(INGRESSES)  # the server's timeoutSeconds: WATCH again at once
    await trio.testing.wait_all_tasks_blocked()
    watches = api.requests("WATCH", INGRESSES)
    assert [(at, query["resourceVersion"]) for at, query in watches] == [(0.0, "10"), (0.0, "25")]
    api.send(INGRESSES, "ADDED", an_ingress("x", "x.test", "31"))
    api.break_stream(INGRESSES, KubeApiError("WATCH ingresses: connection reset"))
    await trio.sleep(0.5)
    assert len(api.requests("WATCH", INGRESSES)) == 2
    await trio.sleep(1)
    watches = api.requests("WATCH", INGRESSES)
    assert [(at, query["resourceVersion"]) for at, query in watches][2:] == [(1.0, "31")]
    assert len(api.requests("LIST", INGRESSES)) == 1


async def test_410_lists_again(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    api = FakeApi()
    published = (await started(nursery, api))[1]
    api.objects[INGRESSES] = [an_ingress("late", "late.test")]
    api.send(INGRESSES, "BOOKMARK", {"metadata": {"resourceVersion": "11"}})
    api.break_stream(INGRESSES, KubeApiError("ERROR event 410: too old", status=410))
    await trio.testing.wait_all_tasks_blocked()
    lists = api.requests("LIST", INGRESSES)
    assert [at for at, _ in lists] == [0.0, 0.0]  # at once: the stream had delivered events
    assert published.hosts() == ["Host(`late.test`) && PathPrefix(`/`)"]
    # A 410 on the first WATCH after a LIST (nothing delivered) waits one backoff step.
    api.watch_failures[INGRESSES] = deque([KubeApiError("HTTP 410", status=410)] * 2)
    api.send(INGRESSES, "BOOKMARK", {"metadata": {"resourceVersion": "12"}})
    api.end(INGRESSES)
    await trio.testing.wait_all_tasks_blocked()
    assert [at for at, _ in api.requests("LIST", INGRESSES)] == [0.0, 0.0, 0.0]
    await trio.sleep(0.5)
    assert len(api.requests("LIST", INGRESSES)) == 3
    await trio.sleep(1)
    assert [at for at, _ in api.requests("LIST", INGRESSES)][3:] == [1.0]


@pytest.mark.time_limit(400)  # virtual seconds
async def test_backoff_doubles_to_30_s_and_resets_after_a_healthy_stream(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    api = FakeApi()
    provider, _ = await started(nursery, api, settings(watch_interval_secs=3600))
    error = KubeApiError("WATCH services: HTTP 500: boom", status=500)
    api.watch_failures[SERVICES] = deque([error] * 8)
    api.send(SERVICES, "BOOKMARK", {"metadata": {"resourceVersion": "11"}})
    api.end(SERVICES)
    await trio.sleep(200)
    times = [at for at, _ in api.requests("WATCH", SERVICES)]
    assert [round(b - a) for a, b in itertools.pairwise(times[1:])] == [
        1, 2, 4, 8, 16, 30, 30, 30,
    ]  # fmt: skip
    assert provider.status.errors == 8
    assert provider.status.last_error == "Service: WATCH services: HTTP 500: boom"
    # A stream that delivered something resets the backoff.
    api.send(SERVICES, "BOOKMARK", {"metadata": {"resourceVersion": "99"}})
    api.break_stream(SERVICES, error)
    await trio.testing.wait_all_tasks_blocked()
    before = len(api.requests("WATCH", SERVICES))
    await trio.sleep(1.5)
    assert len(api.requests("WATCH", SERVICES)) == before + 1
    assert api.requests("WATCH", SERVICES)[-1][1]["resourceVersion"] == "99"


async def test_a_full_list_every_watch_interval_repairs_missed_events(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    api = FakeApi()
    api.objects = {
        INGRESSES: [an_ingress("a", "a.test"), an_ingress("b", "b.test")],
        SERVICES: [WEB],
    }
    published = (await started(nursery, api, settings(watch_interval_secs=20)))[1]
    assert len(published.hosts()) == 2
    api.objects[INGRESSES] = [an_ingress("a", "a.test")]  # "b" was deleted; the event was lost
    await trio.sleep(19)
    assert len(published.hosts()) == 2
    await trio.sleep(2)
    assert [at for at, _ in api.requests("LIST", INGRESSES)] == [0.0, 20.0]
    assert published.hosts() == ["Host(`a.test`) && PathPrefix(`/`)"]
    assert [at for at, _ in api.requests("WATCH", INGRESSES)] == [0.0, 20.0]


async def test_selectors_and_namespace(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    api = FakeApi()
    config = settings(namespace="shop", label_selector="app=web", ingress_route_crd=True)
    await started(nursery, api, config)
    lists = {path: query for _, kind, path, query in api.calls if kind == "LIST"}
    labelled = {"labelSelector": "app=web", "limit": "500"}
    assert lists == {
        "/apis/networking.k8s.io/v1/namespaces/shop/ingresses": labelled,
        "/api/v1/namespaces/shop/services": {"limit": "500"},
        "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices": {"limit": "500"},
        "/api/v1/namespaces/shop/secrets": {
            "fieldSelector": "type=kubernetes.io/tls",
            "limit": "50",
        },
        "/apis/a3s-gateway.io/v1alpha1/namespaces/shop/ingressroutes": labelled,
    }


async def test_secrets_are_kept_pruned(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    api = FakeApi()
    secret = {
        "metadata": meta("tls", "4", managedFields=[{"manager": "kubectl"}]),
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": "Y3J0", "tls.key": "a2V5", "extra": "c2VjcmV0"},
    }
    named = an_ingress("a", "a.test")
    named["spec"]["tls"] = [{"secretName": "tls"}]
    api.objects[SECRETS] = [secret]
    api.objects[INGRESSES] = [named]
    provider, _ = await started(nursery, api)
    kept = provider._caches["secrets"][("default", "tls")]
    assert kept == {
        "metadata": meta("tls", "4"),
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": "Y3J0", "tls.key": "a2V5"},
    }


@pytest.mark.parametrize("kind", ["ADDED", "MODIFIED", "DELETED"])
async def test_events_without_a_name_are_ignored(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, kind: str
) -> None:
    api = FakeApi()
    provider, published = await started(nursery, api)
    api.send(INGRESSES, kind, {"metadata": {"resourceVersion": "12"}})
    await trio.testing.wait_all_tasks_blocked()
    assert provider._caches["ingresses"] == {}
    assert len(published.snapshots) == 1


# -- a WATCH that ends at once -------------------------------------------------------------------


@pytest.mark.time_limit(200)  # virtual seconds
async def test_a_watch_that_ends_at_once_without_events_backs_off(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    api = FakeApi()
    api.quick_ends.add(SERVICES)
    await started(nursery, api, settings(ingress=False, watch_interval_secs=3600))
    await trio.sleep(100)
    times = [at for at, _ in api.requests("WATCH", SERVICES)]
    assert times == [0.0, 1.0, 3.0, 7.0, 15.0, 31.0, 61.0, 91.0]  # not a hot loop
    # A stream that stays open past QUICK_END and then ends cleanly (the server's
    # timeoutSeconds) is opened again at once, even without an event.
    api.quick_ends.clear()
    await trio.sleep(21 + QUICK_END + 1)  # (opened at 121, after the 30 s step)
    assert api.watching(SERVICES)
    api.end(SERVICES)
    await trio.testing.wait_all_tasks_blocked()
    assert [at for at, _ in api.requests("WATCH", SERVICES)][-2:] == [121.0, 127.0]


# -- resources that cannot be listed -----------------------------------------------------------


def an_ingress_route(name: str, host: str) -> Json:
    return {
        "metadata": meta(name, "5"),
        "spec": {
            "routes": [{"match": f"Host(`{host}`)", "services": [{"name": "web", "port": 80}]}]
        },
    }


async def test_a_missing_crd_or_forbidden_secrets_do_not_block_the_ingresses(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    api = FakeApi()
    api.objects = {INGRESSES: [an_ingress("a", "a.test")], SERVICES: [WEB]}
    not_found = KubeApiError("LIST ingressroutes: HTTP 404: the server could not find", status=404)
    forbidden = KubeApiError("LIST secrets: HTTP 403: forbidden", status=403)
    api.list_failures = {ROUTES: deque([not_found] * 3), SECRETS: deque([forbidden])}
    config = settings(ingress_route_crd=True, use_endpoints=False)
    provider, published = await started(nursery, api, config)
    assert published.hosts() == ["Host(`a.test`) && PathPrefix(`/`)"]
    assert state_of(provider) == "error"
    details = provider.status.details["resources"]
    assert isinstance(details, dict)
    assert details["ingress_routes"]["last_error"] == (
        "LIST ingressroutes: HTTP 404: the server could not find (is the IngressRoute CRD "
        "installed? deploy/crds/ingressroutes.a3s-gateway.io.yaml defines it); counted as no "
        "IngressRoutes until a LIST succeeds"
    )
    assert details["secrets"]["last_error"] == (
        "LIST secrets: HTTP 403: forbidden (RBAC: may the gateway's account list and watch "
        "secrets?); counted as no Secrets until a LIST succeeds"
    )
    # Retried with backoff; the CRD installed meanwhile, its objects are routed.
    api.objects[ROUTES] = [an_ingress_route("r", "r.test")]
    await trio.sleep(8)
    assert [at for at, _ in api.requests("LIST", ROUTES)] == [0.0, 1.0, 3.0, 7.0]
    assert [at for at, _ in api.requests("LIST", SECRETS)] == [0.0, 1.0]
    assert published.hosts() == ["Host(`a.test`) && PathPrefix(`/`)", "Host(`r.test`)"]
    assert state_of(provider) == "ok"


async def test_an_ingress_list_refused_still_holds_publishing(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    api = FakeApi()
    api.objects = {INGRESSES: [an_ingress("a", "a.test")], SERVICES: [WEB]}
    forbidden = KubeApiError("LIST ingresses: HTTP 403: forbidden", status=403)
    api.list_failures = {INGRESSES: deque([forbidden] * 2)}
    provider, published = await started(nursery, api)
    await trio.sleep(2.5)
    assert published.snapshots == []
    assert provider.status.last_error == "Ingress: LIST ingresses: HTTP 403: forbidden"
    await trio.sleep(1)
    assert published.hosts() == ["Host(`a.test`) && PathPrefix(`/`)"]


# -- TLS Secrets: the data of named ones only ----------------------------------------------------


def tls_secret(name: str, leaf: trustme.LeafCert, version: str = "6") -> Json:
    return {
        "metadata": meta(name, version),
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(leaf.cert_chain_pems[0].bytes()).decode(),
            "tls.key": base64.b64encode(leaf.private_key_pem.bytes()).decode(),
        },
    }


def naming(name: str, host: str, secret: str, version: str = "1") -> Json:
    ingress = an_ingress(name, host, version)
    ingress["spec"]["tls"] = [{"secretName": secret}]
    return ingress


def certificates(snapshot: Snapshot) -> list[str]:
    return sorted(pair.origin for pair in snapshot.certificates)


def kept(provider: KubernetesDiscovery) -> dict[str, bool]:
    """Which cached Secrets hold their data."""
    return {
        name: DATA_NOT_KEPT not in value and "data" in value
        for (_, name), value in provider._caches["secrets"].items()
    }


async def test_only_named_secrets_keep_their_data_and_a_newly_named_one_is_listed_again(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    ca = trustme.CA()
    api = FakeApi()
    api.objects = {
        INGRESSES: [naming("a", "a.test", "a-tls")],
        SERVICES: [WEB],
        SECRETS: [
            tls_secret("a-tls", ca.issue_cert("a.test")),
            tls_secret("b-tls", ca.issue_cert("b.test")),
        ],
    }
    provider, published = await started(nursery, api, settings(use_endpoints=False))
    lists = [(kind, where) for _, kind, where, _ in api.calls if kind == "LIST"]
    assert lists.index(("LIST", SECRETS)) > lists.index(("LIST", INGRESSES))
    assert kept(provider) == {"a-tls": True, "b-tls": False}
    assert certificates(published.last) == ["Secret default/a-tls"]
    secret_lists = len(api.requests("LIST", SECRETS))

    # An Ingress names b-tls, whose data was not kept: the Secrets are listed again, and the
    # snapshot waits for it (no snapshot with b.test but without its certificate).
    count = len(published.snapshots)
    api.send(INGRESSES, "ADDED", naming("b", "b.test", "b-tls", api.bump()))
    await trio.testing.wait_all_tasks_blocked()
    assert len(api.requests("LIST", SECRETS)) == secret_lists + 1
    assert api.watching(SECRETS)
    assert kept(provider) == {"a-tls": True, "b-tls": True}
    assert len(published.snapshots) == count + 1
    assert certificates(published.last) == ["Secret default/a-tls", "Secret default/b-tls"]

    # No longer named: the data goes from the cache.
    api.send(INGRESSES, "DELETED", naming("a", "a.test", "a-tls", api.bump()))
    await trio.testing.wait_all_tasks_blocked()
    assert kept(provider) == {"a-tls": False, "b-tls": True}
    assert certificates(published.last) == ["Secret default/b-tls"]

    # Named again while the Secrets cannot be listed: published with the certificate marked as
    # being loaded, then loaded when the LIST succeeds (after the 1 s backoff).
    api.list_failures[SECRETS] = deque([KubeApiError("LIST secrets: HTTP 500: etcd", status=500)])
    api.send(INGRESSES, "ADDED", naming("a", "a.test", "a-tls", api.bump()))
    await trio.testing.wait_all_tasks_blocked()
    assert published.hosts() == [
        "Host(`a.test`) && PathPrefix(`/`)",
        "Host(`b.test`) && PathPrefix(`/`)",
    ]
    assert certificates(published.last) == ["Secret default/b-tls"]
    assert published.last.skipped == (
        "Ingress default/a: Secret default/a-tls: its certificate is being loaded (Secrets "
        "listed again)",
    )
    await trio.sleep(1.5)
    loaded = published.last
    assert certificates(loaded) == ["Secret default/a-tls", "Secret default/b-tls"]
    assert loaded.skipped == ()
    assert state_of(provider) == "ok"


async def test_a_secret_added_after_the_ingress_that_names_it_keeps_its_data(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    ca = trustme.CA()
    api = FakeApi()
    api.objects = {INGRESSES: [naming("a", "a.test", "a-tls")], SERVICES: [WEB]}
    provider, published = await started(nursery, api, settings(use_endpoints=False))
    api.send(SECRETS, "ADDED", tls_secret("a-tls", ca.issue_cert("a.test"), api.bump()))
    api.send(SECRETS, "ADDED", tls_secret("other", ca.issue_cert("o.test"), api.bump()))
    await trio.testing.wait_all_tasks_blocked()
    assert kept(provider) == {"a-tls": True, "other": False}
    assert certificates(published.last) == ["Secret default/a-tls"]
    assert len(api.requests("LIST", SECRETS)) == 1  # (no re-LIST needed)
