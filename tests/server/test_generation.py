"""A config generation's background tasks on trio's virtual clock (issue #6): probers probe on
their interval until the generation is cancelled, passive tickers re-admit ejected backends
without traffic, and ``carry_over`` hands health state to the next generation. Probes go to a
scripted h11 origin over memory streams (the injected dialer)."""

from __future__ import annotations

import h11
import trio
import trio.testing

from a3s_gateway.config.load import load_config_text
from a3s_gateway.config.runtime import RuntimeConfig, compile_runtime
from a3s_gateway.server.generation import carry_over, run_generation
from a3s_gateway.services import PassiveState
from a3s_gateway.upstream import Peer

CONFIG = """
entrypoints "web" {{
  address = "127.0.0.1:0"
}}
routers "r" {{
  rule    = "PathPrefix(`/`)"
  service = "svc"
}}
services "svc" {{
  load_balancer {{
    servers = [{{ url = "http://10.9.0.1:80" }}, {{ url = "http://10.9.0.2:80" }}]
    {extra}
  }}
}}
"""

CHECK = """health_check {
      path = "/health"
      interval = "2s"
      timeout = "1s"
      unhealthy_threshold = 1
    }"""


def runtime(extra: str, generation: int = 1) -> RuntimeConfig:
    return compile_runtime(load_config_text(CONFIG.format(extra=extra)), generation)


class Origins:
    """A dialer whose connections reach an h11 server answering ``status`` per host."""

    def __init__(self, nursery: trio.Nursery, status: dict[str, int]) -> None:
        self.nursery = nursery
        self.status = status
        self.probes: list[tuple[str, float]] = []

    async def __call__(self, peer: Peer) -> trio.abc.Stream:
        ours, theirs = trio.testing.memory_stream_pair()
        self.probes.append((peer.host, trio.current_time()))
        self.nursery.start_soon(self._serve, theirs, self.status[peer.host])
        return ours

    async def _serve(self, stream: trio.abc.Stream, status: int) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some()))
            elif isinstance(event, h11.EndOfMessage):
                break
        response = h11.Response(status_code=status, headers=[(b"content-length", b"0")])
        await stream.send_all(conn.send(response) + conn.send(h11.EndOfMessage()))
        await stream.aclose()


async def test_probers_run_on_their_interval_until_the_generation_is_cancelled(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    origins = Origins(nursery, {"10.9.0.1": 200, "10.9.0.2": 503})
    current = runtime(CHECK)
    a, b = current.services["svc"].backends
    generation = trio.CancelScope()
    nursery.start_soon(_run, current, origins, generation)
    await trio.sleep(7)
    assert a.active_healthy
    assert not b.active_healthy
    hosts = ("10.9.0.1", "10.9.0.2")
    per_backend = [sum(probed == host for probed, _ in origins.probes) for host in hosts]
    # One at start, then every 2 s after a random offset below 2 s: 3 or 4 in 7 s.
    assert all(count in (3, 4) for count in per_backend)
    generation.cancel()
    probes = len(origins.probes)
    await trio.sleep(10)
    assert len(origins.probes) == probes  # a cancelled generation probes no more


async def _run(current: RuntimeConfig, origins: Origins, scope: trio.CancelScope) -> None:
    with scope:
        await run_generation(current, dialer=origins)


async def test_the_ticker_readmits_an_ejected_backend_without_traffic(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    current = runtime('passive_health {\n error_threshold = 1\n recovery_time = "3s"\n }')
    service = current.services["svc"]
    outliers = service.outliers
    assert outliers is not None
    backend = service.backends[0]
    outliers.record(backend, error=True, now=trio.current_time())
    assert outliers.state(backend) is PassiveState.EJECTED
    nursery.start_soon(run_generation, current)
    await trio.sleep(3.5)  # no request arrives: only the ticker can end the ejection
    assert backend.available
    assert outliers.state(backend) is PassiveState.PROBATION


def test_carry_over_keeps_health_by_url() -> None:
    old = runtime(CHECK + "\n passive_health {\n error_threshold = 1\n }")
    old.services["svc"].backends[1].active_healthy = False
    old_outliers = old.services["svc"].outliers
    assert old_outliers is not None
    old_outliers.record(old.services["svc"].backends[0], error=True, now=0.0)
    new = runtime(CHECK + "\n passive_health {\n error_threshold = 1\n }", generation=2)
    carry_over(old, new)
    a, b = new.services["svc"].backends
    assert not b.active_healthy
    assert a.passive_ejected
