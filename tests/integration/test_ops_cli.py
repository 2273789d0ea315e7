"""Operating the gateway through the real CLI (issue #8, SPEC §9): ``/metrics`` scraped with curl
and parsed with ``prometheus_client``'s parser, the JSON access log written to a file (and
reopened on SIGHUP after a logrotate-style rename), request and trace ids on the wire and in the
log, and the management API's token and IP checks."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cli import RunningGateway, cli_env, start_gateway
from tests.support.gateway import config_text, curl, free_port, server_entry
from tests.support.origin import Origin

pytestmark = pytest.mark.integration

STARTUP_WAIT: Final = 40.0
TOKEN: Final = "ops-test-token-0123456789"
TRACE: Final = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
async def origin(nursery: trio.Nursery) -> Origin:
    server = Origin("ops")
    await nursery.start(server.serve)
    return server


def ops_config(origin: Origin, port: int, admin: int, log: Path, *, allowed: str = "") -> str:
    allowed_line = f"  allowed_ips = [{allowed}]\n" if allowed else ""
    more = (
        "management {\n"
        f'  address = "127.0.0.1:{admin}"\n'
        '  auth_token_env = "OPS_ADMIN_TOKEN"\n'
        f"{allowed_line}"
        "}\n"
        "observability {\n"
        f'  access_log_path = "{log}"\n'
        "}\n"
    )
    return config_text([server_entry(origin)], port=port, more=more)


@asynccontextmanager
async def cli(tmp_path: Path, text: str) -> AsyncIterator[RunningGateway]:
    config = tmp_path / "gateway.hcl"
    config.write_text(text, encoding="utf-8")
    gateway = await start_gateway(str(config), env=cli_env({"OPS_ADMIN_TOKEN": TOKEN}))
    try:
        with trio.fail_after(STARTUP_WAIT):
            await gateway.wait_for_line("listening entrypoint=web")
        yield gateway
    finally:
        if gateway.process.returncode is None:
            gateway.process.send_signal(signal.SIGTERM)
            with trio.move_on_after(10):
                await gateway.process.wait()
        if gateway.process.returncode is None:
            gateway.process.kill()
        with trio.CancelScope(shield=True):
            await gateway.process.wait()


async def _log_lines(path: Path, count: int) -> list[dict[str, object]]:
    """The first ``count`` lines of the access log, once the writer has written them (it runs
    off the request path, so a line may land a moment after the response)."""
    log = trio.Path(path)
    with trio.fail_after(10):
        while True:
            if await log.exists():
                lines = (await log.read_text(encoding="utf-8")).splitlines()
                if len(lines) >= count:
                    return [json.loads(line) for line in lines[:count]]
            await trio.sleep(0.05)


async def test_metrics_access_log_and_ids_through_the_cli(origin: Origin, tmp_path: Path) -> None:
    port, admin = free_port(), free_port()
    log = tmp_path / "access.log"
    async with cli(tmp_path, ops_config(origin, port, admin, log)) as gateway:
        base = f"http://127.0.0.1:{port}"
        ok = await curl(
            f"{base}/hello?secret=hidden",
            "-H",
            f"traceparent: 00-{TRACE}-00f067aa0ba902b7-01",
            "-H",
            "user-agent: ops-test/1",
        )
        for _ in range(2):
            await curl(f"{base}/hello")
        lines = await _log_lines(log, 3)
        admin_url = f"http://127.0.0.1:{admin}/api/gateway"
        unauthorised = await curl(f"{admin_url}/metrics")
        scraped = await curl(f"{admin_url}/metrics", "-H", f"authorization: Bearer {TOKEN}")
        health = await curl(f"{admin_url}/health")
        # logrotate: move the file away, SIGHUP, and the next line lands in a new file.
        rotated = tmp_path / "access.log.1"
        log.rename(rotated)
        gateway.process.send_signal(signal.SIGHUP)
        with trio.fail_after(20):
            await gateway.wait_for_line("config reloaded")
        await curl(f"{base}/after-rotate")
        after = await _log_lines(log, 1)
    response = ok.response
    assert response.status == 200
    first = lines[0]
    assert first["router"] == "main"
    assert first["service"] == "main"
    assert first["status"] == 200
    assert first["method"] == "GET"
    assert first["path"] == "/hello"
    assert "query" not in first  # query strings are not logged by default (SPEC §9.2)
    assert "hidden" not in json.dumps(first)
    assert first["user_agent"] == "ops-test/1"
    assert first["trace_id"] == TRACE
    assert first["request_id"] == (response.header(b"x-request-id") or b"").decode()
    assert first["attempts"] == 1
    assert isinstance(first["upstream_ms"], float)
    assert str(first["backend"]).startswith("http://127.0.0.1:")
    assert (
        origin.requests[0].header(
            b"traceparent",
        )
        is not None
    )
    assert (origin.requests[0].header(b"traceparent") or b"").startswith(f"00-{TRACE}-".encode())
    assert unauthorised.response.status == 401
    assert b"Bearer" in (unauthorised.response.header(b"www-authenticate") or b"")
    assert health.response.status == 200
    assert scraped.response.status == 200
    families = {
        family.name: family
        for family in text_string_to_metric_families(scraped.response.body.decode())
    }
    requests = families["a3s_http_requests"]
    served = sum(
        sample.value
        for sample in requests.samples
        if sample.name == "a3s_http_requests_total"
        and sample.labels["router"] == "main"
        and sample.labels["code"] == "200"
    )
    assert served == 3
    assert "a3s_http_request_duration_seconds" in families
    assert "a3s_backend_requests" in families
    assert "process_resident_memory_bytes" in families
    assert TOKEN not in scraped.response.body.decode()
    assert rotated.read_text(encoding="utf-8").count("\n") == 3
    assert after[0]["path"] == "/after-rotate"


async def test_management_refuses_a_client_outside_its_allow_list(
    origin: Origin, tmp_path: Path
) -> None:
    port, admin = free_port(), free_port()
    log = tmp_path / "access.log"
    text = ops_config(origin, port, admin, log, allowed='"10.0.0.0/8"')
    async with cli(tmp_path, text):
        admin_url = f"http://127.0.0.1:{admin}/api/gateway"
        refused = await curl(f"{admin_url}/metrics", "-H", f"authorization: Bearer {TOKEN}")
        probe = await curl(f"{admin_url}/live")
    assert refused.response.status == 403  # the right token does not help from outside
    assert probe.response.status == 200  # probes are open (Kubernetes)
    assert os.environ.get("OPS_ADMIN_TOKEN") is None  # the token only reached the child
