"""The Gateway lifecycle as a library (SPEC §2.2, §2.7): start in a nursery, state, shutdown,
reload, the --listen override. Time is trio's virtual clock."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from a3s_gateway import (
    Config,
    Gateway,
    GatewayError,
    GatewayState,
    ReloadError,
    StartError,
    load_config_text,
)

BASE = """
entrypoints "web" {
  address = "127.0.0.1:0"
}
routers "api" {
  rule    = "PathPrefix(`/api`)"
  service = "backend"
}
services "backend" {
  load_balancer {
    servers = [{ url = "http://127.0.0.1:8001" }]
  }
}
shutdown_timeout_secs = 5
"""


def base_config() -> Config:
    return load_config_text(BASE, filename="base.hcl")


async def test_serve_runs_until_shutdown() -> None:
    gateway = Gateway(base_config())
    assert gateway.state() is GatewayState.CREATED
    async with trio.open_nursery() as nursery:
        await nursery.start(gateway.serve)
        assert gateway.state() is GatewayState.RUNNING
        await gateway.shutdown()
        assert gateway.state() is GatewayState.STOPPED
    assert gateway.health().state is GatewayState.STOPPED


async def test_async_with_shuts_down_on_exit(autojump_clock: trio.testing.MockClock) -> None:
    gateway = Gateway(base_config())
    async with trio.open_nursery() as nursery:
        await nursery.start(gateway.serve)
        async with gateway:
            await trio.sleep(3)
            assert gateway.health().uptime_secs == pytest.approx(3)
    assert gateway.state() is GatewayState.STOPPED


async def test_entering_before_serve_is_an_error() -> None:
    gateway = Gateway(base_config())
    with pytest.raises(GatewayError, match="serve"):
        async with gateway:
            pass


async def test_shutdown_is_idempotent_and_works_before_serve() -> None:
    gateway = Gateway(base_config())
    await gateway.shutdown()
    await gateway.shutdown()
    assert gateway.state() is GatewayState.STOPPED


async def test_serve_twice_is_refused() -> None:
    gateway = Gateway(base_config())
    async with trio.open_nursery() as nursery:
        await nursery.start(gateway.serve)
        with pytest.raises(GatewayError):
            await gateway.serve()
        await gateway.shutdown()


async def test_reload_swaps_config_and_counts_generations() -> None:
    gateway = Gateway(base_config())
    newer = load_config_text(BASE.replace("/api", "/v2"), filename="new.hcl")
    async with trio.open_nursery() as nursery:
        await nursery.start(gateway.serve)
        assert gateway.health().config_generation == 1
        assert await gateway.reload(newer) == 2
        assert gateway.config().routers["api"].rule == "PathPrefix(`/v2`)"
        status = gateway.health().last_reload
        assert status is not None
        assert status.ok
        assert gateway.state() is GatewayState.RUNNING
        await gateway.shutdown()


async def test_listen_override_replaces_web_and_survives_reload() -> None:
    gateway = Gateway(base_config(), listen_override="127.0.0.1:9999")
    assert gateway.config().entrypoints["web"].address.port == 9999
    async with trio.open_nursery() as nursery:
        await nursery.start(gateway.serve)
        await gateway.reload(base_config())
        assert gateway.config().entrypoints["web"].address.port == 9999
        await gateway.shutdown()


def test_listen_override_adds_web_when_missing() -> None:
    config = load_config_text(
        BASE.replace('entrypoints "web"', 'entrypoints "public"'), filename="x.hcl"
    )
    gateway = Gateway(config, listen_override=":7000")
    entrypoints = gateway.config().entrypoints
    assert set(entrypoints) == {"public", "web"}
    assert entrypoints["web"].protocol == "http"
    assert entrypoints["web"].address.text == ":7000"


def test_workers_other_than_one_are_refused_until_implemented() -> None:
    with pytest.raises(StartError, match="workers"):
        Gateway(base_config(), workers=2)


async def test_a_reload_names_the_settings_it_cannot_apply() -> None:
    """Settings read only at start (the access log's file, metrics on/off...) are named in a
    warning when a reload changes them; the reload itself goes through."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("a3s_gateway.app")
    handler = Keep(level=logging.WARNING)
    logger.addHandler(handler)
    gateway = Gateway(base_config())
    changed = load_config_text(
        BASE + "observability {\n  metrics_enabled = false\n  access_log_enabled = false\n}\n",
        filename="new.hcl",
    )
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(gateway.serve)
            assert await gateway.reload(base_config()) == 2  # nothing restart-only changed
            assert records == []
            assert await gateway.reload(changed) == 3
            await gateway.shutdown()
    finally:
        logger.removeHandler(handler)
    [warning] = records
    message = warning.getMessage()
    assert "observability.metrics_enabled" in message
    assert "observability.access_log_enabled" in message
    assert "restart" in message


async def test_a_reload_starts_accept_loops_for_a_new_entrypoint_and_a_stopped_one_refuses() -> (
    None
):
    """The reload reaches the acceptor and handler nurseries through the serving handle: the new
    entrypoint's socket accepts; once the gateway has stopped, there is no handle and a reload
    is refused."""
    gateway = Gateway(base_config())
    wider = load_config_text(
        BASE + 'entrypoints "extra" {\n  address = "127.0.0.1:0"\n}\n', filename="new.hcl"
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(gateway.serve)
        assert await gateway.reload(wider) == 2
        [(host, port)] = gateway.addresses()["extra"]
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream(host, port)
            await stream.send_all(b"GET /api HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            reply = await stream.receive_some()
            await stream.aclose()
        assert reply.startswith(b"HTTP/1.1 ")  # served (502: no backend listens on 8001)
        await gateway.shutdown()
    with pytest.raises(ReloadError, match="stopped"):
        await gateway.reload(base_config())
    assert gateway.health().config_generation == 2
