"""Listeners across a reload (SPEC §10.2): an unchanged entrypoint keeps its very socket, an
added one is bound before the swap, a bind failure aborts the whole reload, and a removed one
stops accepting after the swap while a request in flight on it completes.

An in-process ``Gateway`` on real sockets in front of the test origin; real clock, every wait
bounded.
"""

from __future__ import annotations

import socket

import pytest
import trio

from a3s_gateway.app import Gateway
from a3s_gateway.errors import ReloadError
from a3s_gateway.server.listeners import open_http_listeners
from tests.support.gateway import (
    LOCAL,
    RawClient,
    free_port,
    load,
    router_block,
    server_entry,
    service_block,
    wait_refused,
)
from tests.support.origin import Origin, SlowHead

pytestmark = pytest.mark.integration

WAIT = 20.0


def config(origin: Origin, *entrypoints: tuple[str, int], extra_router: str = "") -> str:
    text = "".join(
        f'entrypoints "{name}" {{\n  address = "{LOCAL}:{port}"\n}}\n' for name, port in entrypoints
    )
    text += router_block("main", "PathPrefix(`/`)", "main")
    text += service_block("main", [server_entry(origin)])
    if extra_router:
        text += router_block(extra_router, f"PathPrefix(`/{extra_router}`)", "main")
    return text + "shutdown_timeout_secs = 2\n"


@pytest.fixture
async def origin(nursery: trio.Nursery) -> Origin:
    server = Origin("reload")
    await nursery.start(server.serve)
    return server


async def get(client: RawClient, path: str = "/") -> int:
    assert await client.send(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    response = await client.response()
    assert response is not None
    return response.status


def fds(gateway: Gateway, name: str) -> list[int]:
    return [listener.socket.fileno() for listener in gateway._groups[name].listeners]


async def test_an_unchanged_listener_keeps_its_socket_and_its_connections(
    origin: Origin, nursery: trio.Nursery
) -> None:
    port = free_port()
    gateway = Gateway(load(config(origin, ("web", port))))
    await nursery.start(gateway.serve)
    before = fds(gateway, "web")
    with trio.fail_after(WAIT):
        client = await RawClient.connect(port)
        assert await get(client) == 200
        assert await gateway.reload(load(config(origin, ("web", port), extra_router="x"))) == 2
        assert fds(gateway, "web") == before  # the same socket, never rebound
        assert gateway._groups["web"].accepting
        assert await get(client, "/x") == 200  # the kept-alive connection, new generation
        assert len({seen.connection for seen in origin.requests}) == 1
        await client.aclose()
        await gateway.shutdown()


async def test_an_added_listener_is_bound_before_the_swap(
    origin: Origin, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, extra = free_port(), free_port()
    gateway = Gateway(load(config(origin, ("web", port))))
    await nursery.start(gateway.serve)
    generations_at_bind: list[int] = []

    async def recording_open(*args: object, **kwargs: object) -> object:
        runtime = gateway.runtime
        assert runtime is not None
        generations_at_bind.append(runtime.generation)
        return await open_http_listeners(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("a3s_gateway.app.open_http_listeners", recording_open)
    with trio.fail_after(WAIT):
        await gateway.reload(load(config(origin, ("web", port), ("extra", extra))))
        assert generations_at_bind == [1]  # bound while generation 1 still served
        assert gateway.addresses()["extra"] == ((LOCAL, extra),)
        client = await RawClient.connect(extra)
        assert await get(client) == 200
        await client.aclose()
        await gateway.shutdown()


async def test_a_bind_failure_aborts_the_whole_reload(
    origin: Origin, nursery: trio.Nursery
) -> None:
    port, free, taken = free_port(), free_port(), free_port()
    gateway = Gateway(load(config(origin, ("web", port))))
    await nursery.start(gateway.serve)
    with socket.socket() as squatter:
        squatter.bind((LOCAL, taken))
        squatter.listen()
        newer = config(origin, ("web", port), ("a", free), ("b", taken), extra_router="x")
        with pytest.raises(ReloadError, match=f'"b".*{taken}'):
            await gateway.reload(load(newer))
    status = gateway.health().last_reload
    assert status is not None
    assert not status.ok
    assert gateway.health().config_generation == 1
    assert set(gateway.addresses()) == {"web"}
    assert "x" not in gateway.config().routers
    with socket.socket() as probe:
        probe.bind((LOCAL, free))  # "a" was bound, then closed again: nothing stays bound
    with trio.fail_after(WAIT):
        client = await RawClient.connect(port)
        assert await get(client, "/x") == 200  # the old generation (its catch-all) serves
        await client.aclose()
        await gateway.shutdown()


async def test_a_removed_listener_stops_accepting_and_its_request_in_flight_completes(
    origin: Origin, nursery: trio.Nursery
) -> None:
    release = trio.Event()
    origin.on("/slow", SlowHead(release))
    port, old = free_port(), free_port()
    gateway = Gateway(load(config(origin, ("web", port), ("old", old))))
    await nursery.start(gateway.serve)
    with trio.fail_after(WAIT):
        client = await RawClient.connect(old)
        assert await client.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        await origin.wait_for(lambda: any(r.path == b"/slow" for r in origin.requests))
        await gateway.reload(load(config(origin, ("web", port))))
        assert set(gateway.addresses()) == {"web"}
        await wait_refused(old)  # no longer accepting
        release.set()
        response = await client.response()
        assert response is not None
        assert (response.status, response.complete) == (200, True)
        kept = await RawClient.connect(port)
        assert await get(kept) == 200
        await kept.aclose()
        # The retired connection is cut when the grace (2 s) ends, idle or not.
        assert await client.closed(wait=WAIT)
        await client.aclose()
        await gateway.shutdown()


async def test_a_renamed_entrypoint_on_the_same_address_keeps_the_socket(
    origin: Origin, nursery: trio.Nursery
) -> None:
    port = free_port()
    gateway = Gateway(load(config(origin, ("web", port))))
    await nursery.start(gateway.serve)
    before = fds(gateway, "web")
    renamed = config(origin, ("public", port)).replace(
        'service = "main"', 'service = "main"\n  entrypoints = ["public"]'
    )
    with trio.fail_after(WAIT):
        await gateway.reload(load(renamed))
        assert fds(gateway, "public") == before
        client = await RawClient.connect(port)
        assert await get(client) == 200  # accepted under the new name: its router matches
        await client.aclose()
        await gateway.shutdown()


async def test_a_reload_during_the_drain_is_refused(origin: Origin, nursery: trio.Nursery) -> None:
    port = free_port()
    gateway = Gateway(load(config(origin, ("web", port))))
    await nursery.start(gateway.serve)
    await gateway.shutdown()
    with pytest.raises(ReloadError, match="stopped"):
        await gateway.reload(load(config(origin, ("web", port), extra_router="x")))
