"""WATCH on the fake Kubernetes API server: the initial ADDED events, replay after a
resourceVersion, live events, selectors and namespaces, expiry (the 410 ERROR event and the
HTTP 410 option), bookmarks, dropped streams, ``timeoutSeconds``, the watch count, and the
server in a background thread driven from another thread or another trio loop.

Real sockets on the real clock; tests wait for conditions (``wait_for_watch``, the next event),
never for time, except ``timeoutSeconds=1``, which is the thing under test.
"""

from __future__ import annotations

import http.client
import json
import ssl
from pathlib import Path

import trio

from tests.support.fake_kube import FakeKube, JsonObject, fake_kube_in_thread, running_fake_kube
from tests.support.fake_kube_client import KubeClient, WatchCutError

INGRESSES = "/apis/networking.k8s.io/v1/ingresses"
SHOP = "/apis/networking.k8s.io/v1/namespaces/shop/ingresses"


def ingress(name: str, namespace: str = "default", **labels: str) -> JsonObject:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {},
    }


def summary(events: list[JsonObject]) -> list[tuple[str, str]]:
    return [(e["type"], e["object"]["metadata"].get("name", "")) for e in events]


async def test_watch_from_nothing_sends_the_current_objects_then_changes(
    nursery: trio.Nursery,
) -> None:
    async with running_fake_kube(nursery) as kube:
        kube.apply(ingress("a"))
        async with KubeClient(kube).watch(INGRESSES) as stream:
            assert stream.status == 200
            first = await stream.next_event()
            assert first is not None
            assert summary([first]) == [("ADDED", "a")]
            assert first["object"]["kind"] == "Ingress"  # watch objects carry their kind
            kube.apply(ingress("b"))
            kube.apply(ingress("a", app="x"))
            kube.delete("networking.k8s.io/v1", "Ingress", "default", "b")
            events = await stream.events(3)
        assert summary(events) == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
        versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
        assert versions == sorted(versions)
        assert versions[-1] == int(kube.resource_version)


async def test_watch_replays_the_events_after_its_resource_version(nursery: trio.Nursery) -> None:
    async with running_fake_kube(nursery) as kube:
        seen = kube.apply(ingress("a"))["metadata"]["resourceVersion"]
        kube.apply(ingress("b"))
        kube.apply(ingress("a", app="x"))
        kube.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}})
        async with KubeClient(kube).watch(INGRESSES, resourceVersion=seen) as stream:
            replayed = await stream.events(2)
            kube.delete("networking.k8s.io/v1", "ingresses", "default", "a")
            live = await stream.events(1)
        assert summary(replayed + live) == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "a")]


async def test_watch_filters_by_namespace_and_labels(nursery: trio.Nursery) -> None:
    async with running_fake_kube(nursery) as kube:
        rv = kube.resource_version
        async with KubeClient(kube).watch(SHOP, resourceVersion=rv, labelSelector="app=web") as s:
            kube.apply(ingress("other-namespace", "default", app="web"))
            kube.apply(ingress("unlabelled", "shop"))
            kube.apply(ingress("web", "shop", app="web"))
            kube.apply(ingress("web", "shop", app="web", v="2"))
            kube.apply(ingress("web", "shop", app="api"))  # stops matching
            kube.apply(ingress("unlabelled", "shop", app="web"))  # starts matching
            kube.apply(ingress("web", "shop", app="api", v="3"))  # still not matching
            kube.delete("networking.k8s.io/v1", "Ingress", "shop", "unlabelled")
            events = await s.events(5)
        assert summary(events) == [
            ("ADDED", "web"),
            ("MODIFIED", "web"),
            ("DELETED", "web"),
            ("ADDED", "unlabelled"),
            ("DELETED", "unlabelled"),
        ]
        assert events[2]["object"]["metadata"]["labels"] == {"app": "api"}


async def test_an_expired_resource_version_gets_an_error_event(nursery: trio.Nursery) -> None:
    async with running_fake_kube(nursery) as kube:
        old = kube.apply(ingress("a"))["metadata"]["resourceVersion"]
        kube.apply(ingress("b"))
        kube.compact()
        async with KubeClient(kube).watch(INGRESSES, resourceVersion=old) as stream:
            assert stream.status == 200  # as the real server: the error is in the stream
            (error,) = await stream.events(1)
            assert await stream.next_event() is None  # and the response ends
        assert error["type"] == "ERROR"
        assert error["object"]["kind"] == "Status"
        assert (error["object"]["code"], error["object"]["reason"]) == (410, "Expired")
        assert kube.watch_count() == 0
        # from the current resourceVersion (after the compaction) all is well
        current = kube.resource_version
        async with KubeClient(kube).watch(INGRESSES, resourceVersion=current) as stream:
            kube.apply(ingress("c"))
            assert summary(await stream.events(1)) == [("ADDED", "c")]


async def test_expiry_as_an_http_410(nursery: trio.Nursery) -> None:
    async with running_fake_kube(nursery, expired_as="status") as kube:
        old = kube.apply(ingress("a"))["metadata"]["resourceVersion"]
        kube.apply(ingress("b"))
        kube.compact()
        client = KubeClient(kube)
        status, body = await client.request("GET", INGRESSES, watch="1", resourceVersion=old)
        assert (status, body["reason"], body["code"]) == (410, "Expired", 410)
        # a LIST at an exact old resourceVersion is 410 too; a plain LIST is not
        status, body = await client.request(
            "GET", INGRESSES, resourceVersion=old, resourceVersionMatch="Exact"
        )
        assert status == 410
        status, _ = await client.request("GET", INGRESSES, resourceVersion=old)
        assert status == 200
        kube.expired_as = "event"
        async with client.watch(INGRESSES, resourceVersion=old) as stream:
            assert summary(await stream.events(1))[0][0] == "ERROR"


async def test_bookmarks_only_for_watches_that_allow_them(nursery: trio.Nursery) -> None:
    async with running_fake_kube(nursery) as kube:
        client = KubeClient(kube)
        rv = kube.resource_version
        async with (
            client.watch(INGRESSES, resourceVersion=rv, allowWatchBookmarks="true") as marked,
            client.watch(INGRESSES, resourceVersion=rv) as plain,
        ):
            await kube.wait_for_watch("ingresses", 2)
            assert kube.send_bookmarks() == 1
            kube.apply(ingress("a"))
            (bookmark, added) = await marked.events(2)
            assert summary(await plain.events(1)) == [("ADDED", "a")]
        assert bookmark["type"] == "BOOKMARK"
        assert bookmark["object"] == {
            "kind": "Ingress",
            "apiVersion": "networking.k8s.io/v1",
            "metadata": {"resourceVersion": rv},
        }
        assert added["type"] == "ADDED"


async def test_send_initial_events_ends_with_a_bookmark(nursery: trio.Nursery) -> None:
    async with running_fake_kube(nursery) as kube:
        kube.apply(ingress("a"))
        kube.apply(ingress("b"))
        query = {
            "sendInitialEvents": "true",
            "allowWatchBookmarks": "true",
            "resourceVersionMatch": "NotOlderThan",
        }
        async with KubeClient(kube).watch(INGRESSES, **query) as stream:
            events = await stream.events(3)
        assert summary(events)[:2] == [("ADDED", "a"), ("ADDED", "b")]
        end = events[2]["object"]["metadata"]
        assert events[2]["type"] == "BOOKMARK"
        assert end["annotations"] == {"k8s.io/initial-events-end": "true"}
        assert end["resourceVersion"] == kube.resource_version


async def test_dropped_watches_are_cut_mid_stream(nursery: trio.Nursery) -> None:
    async with running_fake_kube(nursery) as kube:
        client = KubeClient(kube)
        rv = kube.resource_version
        async with client.watch(INGRESSES, resourceVersion=rv) as stream:
            kube.apply(ingress("a"))
            await stream.events(1)
            assert kube.drop_watches() == 1
            try:
                await stream.next_event()
            except WatchCutError:
                pass
            else:
                raise AssertionError("the dropped watch ended cleanly")
        await kube.wait_for(lambda: kube.watch_count() == 0)
        # the server goes on: a new watch resumes from the last resourceVersion seen
        async with client.watch(INGRESSES, resourceVersion=rv) as stream:
            assert summary(await stream.events(1)) == [("ADDED", "a")]


async def test_timeout_seconds_ends_the_stream_cleanly(nursery: trio.Nursery) -> None:
    async with running_fake_kube(nursery) as kube:
        rv = kube.resource_version
        async with KubeClient(kube).watch(INGRESSES, resourceVersion=rv, timeoutSeconds="1") as s:
            with trio.fail_after(10):
                assert await s.next_event() is None


async def test_watch_count_follows_clients(nursery: trio.Nursery) -> None:
    async with running_fake_kube(nursery) as kube:
        client = KubeClient(kube)
        assert kube.watch_count() == 0
        async with client.watch(INGRESSES, resourceVersion=kube.resource_version):
            await kube.wait_for_watch("ingresses")
            assert kube.watch_count("ingresses") == 1
            assert kube.watch_count("services") == 0
            assert [r.watch for r in kube.requests] == [True]
        # the client closed its connection: the server notices and forgets the watch
        await kube.wait_for(lambda: kube.watch_count() == 0)


def _blocking_watch(kube: FakeKube) -> http.client.HTTPResponse:
    context = ssl.create_default_context(cafile=str(kube.ca_file))
    connection = http.client.HTTPSConnection(kube.host, kube.port, context=context, timeout=10)
    headers = {"Authorization": f"Bearer {kube.token}"}
    connection.request("GET", f"{INGRESSES}?watch=true&resourceVersion=1", headers=headers)
    return connection.getresponse()


def test_in_a_thread_driven_from_a_plain_thread(tmp_path: Path) -> None:
    with fake_kube_in_thread(tmp_path) as kube:
        response = _blocking_watch(kube)
        try:
            assert response.status == 200
            kube.wait_for_watch_blocking("ingresses")
            kube.apply(ingress("a"))
            kube.apply(ingress("a", app="x"))
            events = [json.loads(response.readline()) for _ in range(2)]
            assert summary(events) == [("ADDED", "a"), ("MODIFIED", "a")]
            kube.drop_watches()
            kube.wait_for_blocking(lambda: kube.watch_count() == 0)
        finally:
            response.close()
    # stopped: the port is closed
    try:
        _blocking_watch(kube)
    except OSError:
        pass
    else:
        raise AssertionError("the server still answers after the context exited")


async def test_in_a_thread_driven_from_another_trio_loop(tmp_path: Path) -> None:
    with fake_kube_in_thread(tmp_path) as kube:
        async with KubeClient(kube).watch(INGRESSES, resourceVersion="1") as stream:
            await kube.wait_for_watch("ingresses")  # waits in a worker thread
            kube.apply(ingress("a"))
            assert summary(await stream.events(1)) == [("ADDED", "a")]
