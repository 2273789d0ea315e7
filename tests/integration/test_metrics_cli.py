"""The management ``/metrics`` of the real CLI (``python -m a3s_gateway run cfg.hcl``, and with
``--workers 2``), read by prometheus_client's own parser (SPEC §9.1, §13.4, issue #16 item 4).

A request is one curl process, so one connection: with two workers ``SO_REUSEPORT`` spreads
them, and the supervisor's merge has to add both shares up. In both modes the scrape is the
library's text format 0.0.4: each family once, with its HELP and TYPE; no ``_created`` series;
the requests counter, the duration histogram (cumulative buckets, ``le`` written ``1`` as
before) and ``a3s_backend_requests_total`` equal the requests sent; ``a3s_build_info`` is 1;
``a3s_config_warnings`` counts the config's semantic warnings (the credentialed ``*`` CORS
origin, and with two workers the per-worker rate limit too); ``/backends`` reports the requests
sent to the backend as ``requests_total``.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Final

import pytest
import trio
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cli import RunningGateway, cli_env, start_gateway
from tests.support.gateway import CurlResult, config_text, curl, free_port, need_tool, server_entry
from tests.support.origin import Origin

pytestmark = pytest.mark.integration

STARTUP_WAIT: Final = 40.0
STOP_WAIT: Final = 30.0
TOKEN: Final = "scrape-token-5be07c11"
SENT: Final = 12

#: Two semantic warnings: the CORS one always, the rate-limit one with workers (per worker).
WARNED: Final = """middlewares "open-cors" {
  type              = "cors"
  allowed_origins   = ["*"]
  allow_credentials = true
}
middlewares "unused-limit" {
  type = "rate-limit"
  rate = 1000
}
"""


@pytest.fixture(autouse=True)
def need_curl() -> None:
    need_tool("curl", "to drive the gateway and its management API")


@pytest.fixture
async def origin(nursery: trio.Nursery) -> Origin:
    server = Origin("scraped")
    await nursery.start(server.serve)
    return server


def gateway_config(origin: Origin, port: int, admin: int) -> str:
    management = (
        "management {\n"
        f'  address        = "127.0.0.1:{admin}"\n'
        '  auth_token_env = "SCRAPE_ADMIN_TOKEN"\n'
        "}\n"
        "providers {\n  file {\n    watch = false\n  }\n}\n"
    )
    return config_text([server_entry(origin)], port=port, more=WARNED + management)


def by_name(scrape: CurlResult) -> dict[str, Metric]:
    """The families of a scrape, each of which must appear once."""
    assert scrape.response.status == 200, scrape
    found: dict[str, Metric] = {}
    for family in text_string_to_metric_families(scrape.response.body.decode("utf-8")):
        assert family.name not in found, f"{family.name} appears twice"
        found[family.name] = family
    return found


def sample_sum(family: Metric, sample: str, **labels: str) -> float:
    """The sum of ``family``'s samples named ``sample`` whose labels include ``labels``."""
    return sum(
        s.value
        for s in family.samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


def check_scrape(scrape: CurlResult, origin: Origin, *, warnings: int) -> None:
    assert scrape.response.header(b"content-type") == b"text/plain; version=0.0.4; charset=utf-8"
    text = scrape.response.body.decode("utf-8")
    assert "_created" not in text
    families = by_name(scrape)
    assert all(family.documentation for family in families.values())
    for name in ("a3s_http_requests", "a3s_backend_requests", "a3s_config_reloads"):
        assert families[name].type == "counter"
        assert f"# TYPE {name}_total counter" in text

    requests = families["a3s_http_requests"]
    route = {"entrypoint": "web", "router": "main", "service": "main"}
    assert sample_sum(requests, "a3s_http_requests_total", **route, code="200") == SENT

    duration = families["a3s_http_request_duration_seconds"]
    assert duration.type == "histogram"
    ok = {**route, "code_class": "2xx"}
    buckets = [
        (s.labels["le"], s.value)
        for s in duration.samples
        if s.name == "a3s_http_request_duration_seconds_bucket"
        and {k: v for k, v in s.labels.items() if k != "le"} == ok
    ]
    assert [le for le, _ in buckets][9:] == ["1", "2.5", "5", "10", "30", "60", "+Inf"]
    counts = [value for _, value in buckets]
    assert counts == sorted(counts)
    assert counts[-1] == SENT
    assert sample_sum(duration, "a3s_http_request_duration_seconds_count", **ok) == SENT

    backend = {"service": "main", "backend": f"http://127.0.0.1:{origin.port}"}
    attempts = families["a3s_backend_requests"]
    assert sample_sum(attempts, "a3s_backend_requests_total", **backend, code="200") == SENT
    upstream = families["a3s_upstream_response_seconds"]
    assert sample_sum(upstream, "a3s_upstream_response_seconds_count", **backend) == SENT

    assert [s.value for s in families["a3s_config_warnings"].samples] == [warnings]
    assert [s.value for s in families["a3s_build_info"].samples] == [1.0]
    assert [s.value for s in families["a3s_config_generation"].samples] == [1.0]


async def stop(gateway: RunningGateway) -> None:
    gateway.process.send_signal(signal.SIGTERM)
    with trio.fail_after(STOP_WAIT):
        assert await gateway.process.wait() == 0


@pytest.mark.parametrize("workers", [1, 2])
async def test_the_scrape_parses_and_counts_every_request(
    origin: Origin, tmp_path: Path, workers: int
) -> None:
    port, admin = free_port(), free_port()
    path = tmp_path / "scraped.hcl"
    path.write_text(gateway_config(origin, port, admin), encoding="utf-8")
    flags = ("--workers", str(workers))
    gateway = await start_gateway(str(path), *flags, env=cli_env({"SCRAPE_ADMIN_TOKEN": TOKEN}))
    api = f"http://127.0.0.1:{admin}/api/gateway"
    bearer = ("-H", f"authorization: Bearer {TOKEN}")
    try:
        with trio.fail_after(STARTUP_WAIT):
            await gateway.wait_for_line(
                "workers ready: 2" if workers > 1 else "listening entrypoint=web"
            )
        for _ in range(SENT):
            assert (await curl(f"http://127.0.0.1:{port}/hello")).response.status == 200
        with trio.fail_after(STARTUP_WAIT):
            scrape = await curl(f"{api}/metrics", *bearer)
            backends = await curl(f"{api}/backends", *bearer)
        check_scrape(scrape, origin, warnings=workers)
        assert backends.response.status == 200
        listed = json.loads(backends.response.body)
        assert isinstance(listed, list)
        assert [(b["url"], b["requests_total"]) for b in listed] == [
            (f"http://127.0.0.1:{origin.port}", SENT)
        ]
        await stop(gateway)
    finally:
        if gateway.process.returncode is None:
            gateway.process.kill()
        with trio.CancelScope(shield=True):
            await gateway.process.wait()
