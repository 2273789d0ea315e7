"""TLS termination's shell parts on trio's virtual clock (server/tls.py, issue #17).

The handshake deadline with a client that never speaks, and the hot-reload poller: a
renewed pair is picked up within one poll, a broken one keeps the old certificate and is
counted. Certificates come from ``trustme``; the clock is a ``MockClock`` that jumps only
after 50 ms of real idleness, so the poller's worker-thread loads finish before time moves.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
import trio.testing

from a3s_gateway.observability.gateway_metrics import GatewayMetrics
from a3s_gateway.runtime.compile import EntrypointRuntime, compile_runtime
from a3s_gateway.server.downstream import ConnInfo
from a3s_gateway.server.tls import POLL_INTERVAL, TlsStore, build_terminator, handshake
from tests.support.gateway import config_text, load
from tests.support.tls import Authority


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.05)


def entrypoint(pairs: list[tuple[Path, Path]], handshake_secs: int = 10) -> EntrypointRuntime:
    (cert, key), *others = pairs
    listed = ", ".join(f'{{ cert_file = "{c}", key_file = "{k}" }}' for c, k in others)
    lines = (
        f'  tls {{\n    cert_file = "{cert}"\n    key_file = "{key}"\n'
        f"    certificates = [{listed}]\n  }}\n"
        f'  timeouts {{\n    handshake = "{handshake_secs}s"\n  }}\n'
    )
    runtime = compile_runtime(
        load(config_text(['{ url = "http://127.0.0.1:9" }'], entrypoint=lines)), 1
    )
    return runtime.entrypoints["web"]


def counter(metrics: GatewayMetrics, family: str) -> dict[str, float]:
    text = metrics.render().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(family + "{"):
            labels, value = line.rsplit(" ", 1)
            out[labels[len(family) :]] = float(value)
    return out


async def test_a_silent_client_is_closed_at_the_handshake_timeout(
    tmp_path: Path, clock: trio.testing.MockClock
) -> None:
    authority = Authority(tmp_path)
    entry = entrypoint([authority.server_pair("site", "site.test")], handshake_secs=7)
    assert entry.tls_settings is not None
    terminator = build_terminator("web", entry.tls_settings)
    metrics = GatewayMetrics(True)
    client, server = trio.testing.memory_stream_pair()
    started = trio.current_time()
    result = await handshake(
        server, terminator, ConnInfo("web", "10.0.0.1", 1, True), entry, metrics
    )
    assert result is None
    assert trio.current_time() - started == pytest.approx(7.0, abs=0.2)
    assert counter(metrics, "a3s_tls_handshake_errors_total") == {
        '{entrypoint="web",reason="timeout"}': 1.0
    }
    # The gateway closed its side: the client reads the end of the stream.
    with trio.fail_after(1):
        assert await client.receive_some() == b""


async def test_the_poller_picks_up_a_renewal_and_keeps_a_broken_pair(
    tmp_path: Path, clock: trio.testing.MockClock
) -> None:
    authority = Authority(tmp_path)
    pair = authority.server_pair("site", "site.test", "v1.site.test")
    entry = entrypoint([pair])
    metrics = GatewayMetrics(True)
    store = TlsStore(metrics)
    store.install(await store.prepare({"web": entry}))
    assert [c.names for c in store.certificates("web")] == [("site.test", "v1.site.test")]
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        renewed = authority.server_pair("renewed", "site.test", "v2.site.test")
        os.replace(renewed[0], pair[0])
        os.replace(renewed[1], pair[1])
        await trio.sleep(POLL_INTERVAL * 1.5)
        assert [c.names for c in store.certificates("web")] == [("site.test", "v2.site.test")]
        # A broken replacement: the file is garbage. The old certificate stays, counted once.
        pair[0].write_bytes(b"not a certificate\n")
        await trio.sleep(POLL_INTERVAL * 2.5)
        assert [c.names for c in store.certificates("web")] == [("site.test", "v2.site.test")]
        assert counter(metrics, "a3s_tls_reload_errors_total") == {'{entrypoint="web"}': 1.0}
        nursery.cancel_scope.cancel()
    not_after = counter(metrics, "a3s_tls_certificate_not_after_seconds")
    assert list(not_after) == ['{entrypoint="web",name="site.test"}']


async def test_a_broken_certificate_at_start_is_an_error_naming_it(tmp_path: Path) -> None:
    authority = Authority(tmp_path)
    cert, _ = authority.server_pair("site", "site.test")
    _, other_key = authority.server_pair("other", "other.test")
    store = TlsStore(GatewayMetrics(True))
    with pytest.raises(Exception, match="does not fit") as caught:
        await store.prepare({"web": entrypoint([(cert, other_key)])})
    assert 'entrypoint "web"' in str(caught.value)
