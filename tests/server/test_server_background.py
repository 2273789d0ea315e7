"""``ServerContext.background`` (DESIGN.md §3.3, issue #16): the nursery for fire-and-forget work
is given when the context is built and never replaced; a context built without one (a test's)
refuses work as a closed nursery does, and a mirror copy then counts as an error."""

from __future__ import annotations

import pytest
import trio

from a3s_gateway.config.load import load_config_text
from a3s_gateway.protocols.events import RequestHead
from a3s_gateway.runtime.compile import compile_runtime
from a3s_gateway.server.exchange.mirror import MirrorCopy
from a3s_gateway.server.server_context import NOT_SERVING, ServerContext
from a3s_gateway.services.mirror_sampling import MirrorSettings, MirrorState
from a3s_gateway.upstream.pool import UpstreamPool

CONFIG = """
entrypoints "web" { address = "127.0.0.1:0" }
routers "r" {
  rule    = "PathPrefix(`/`)"
  service = "svc"
}
services "svc" {
  load_balancer { servers = [{ url = "http://127.0.0.1:9" }] }
}
"""
SETTINGS = MirrorSettings(
    service="absent",
    percentage=100.0,
    mirror_body=False,
    max_body_bytes=0,
    max_concurrency=4,
    timeout=1.0,
)
HEAD = RequestHead(
    method=b"GET", target=b"/", authority=b"x", headers=[], http_version=b"1.1", has_body=False
)


def context(background: trio.Nursery | None = None) -> ServerContext:
    runtime = compile_runtime(load_config_text(CONFIG), 1)
    if background is None:
        return ServerContext(runtime, UpstreamPool())
    return ServerContext(runtime, UpstreamPool(), background)


def copy_for(ctx: ServerContext, state: MirrorState) -> MirrorCopy:
    return MirrorCopy(ctx, state, HEAD, b"/", [], "192.0.2.1")


async def test_a_bare_context_refuses_background_work() -> None:
    ctx = context()
    assert ctx.background is NOT_SERVING
    with pytest.raises(RuntimeError, match="no gateway serves this context"):
        ctx.background.start_soon(trio.lowlevel.checkpoint)
    state = MirrorState(SETTINGS)
    copy_for(ctx, state).start()
    assert state.outcomes["error"] == 1
    assert state.in_flight == 0


async def test_a_served_context_runs_the_copy_in_the_nursery_it_was_given() -> None:
    state = MirrorState(SETTINGS)
    async with trio.open_nursery() as nursery:
        ctx = context(background=nursery)
        assert ctx.background is nursery
        copy_for(ctx, state).start()
        assert state.in_flight == 1  # started, not yet run
    assert state.in_flight == 0
    assert state.outcomes["unresolved"] == 1  # the mirror names no service of the runtime
